/* policy.c - the policy model: names, key hashes, reference counting and
 * deltas. Validation and the wire conversion live in policy_wire.c.
 * Invariant: a policy_res is immutable after construction; only its refcnt
 * changes, atomically, and the last unref frees it together with the
 * compiled tables it owns.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack for long ids */
#include <xxhash.h>

#include "policy.h"
#include "policy_wire.h"

void policy_errs_init(struct policy_errs *e)
{
	e->n = 0;
	e->dropped = 0;
}

void policy_errs_add(struct policy_errs *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	if (e->n >= POLICY_ERRS_MAX) {
		e->dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(e->msg[e->n], POLICY_ERR_LEN, fmt, ap);
	va_end(ap);
	e->n++;
}

static const char *const kind_names[] = {
	[POLICY_KIND_CLIENT] = "client",
	[POLICY_KIND_RATE_LIMIT] = "rate_limit",
	[POLICY_KIND_ACCESS_LIST] = "access_list",
	[POLICY_KIND_ROUTE] = "route",
	[POLICY_KIND_UPSTREAM] = "upstream",
	[POLICY_KIND_SETTINGS] = "settings",
};

const char *policy_kind_name(enum policy_kind kind)
{
	if ((int)kind < POLICY_KIND_MIN || (int)kind > POLICY_KIND_MAX)
		return NULL;
	return kind_names[kind];
}

enum policy_kind policy_kind_from_name(const char *name)
{
	if (!name)
		return 0;
	for (int k = POLICY_KIND_MIN; k <= POLICY_KIND_MAX; k++)
		if (strcmp(kind_names[k], name) == 0)
			return (enum policy_kind)k;
	return 0;
}

uint64_t policy_key_hash(enum policy_kind kind, const char *id, size_t id_len)
{
	uint8_t buf[1 + 2 * POLICY_ID_MAX_LEN];
	uint64_t h;

	/* One contiguous buffer keeps the common case a single XXH3 call;
	 * ids past the cap (only seen while rejecting them) stream instead. */
	if (id_len < sizeof(buf)) {
		buf[0] = (uint8_t)kind;
		if (id_len)
			memcpy(buf + 1, id, id_len);
		h = XXH3_64bits(buf, id_len + 1);
	} else {
		XXH3_state_t st;
		uint8_t k = (uint8_t)kind;

		XXH3_64bits_reset(&st);
		XXH3_64bits_update(&st, &k, 1);
		XXH3_64bits_update(&st, id, id_len);
		h = XXH3_64bits_digest(&st);
	}
	/* 0 marks an empty slot / unset reference for the map users. */
	return h ? h : 1;
}

/* 64-bit FNV-1a. This is an ABI with the TC eBPF program
 * (bpf/include/client_abi.h), which hashes the client-id header value the
 * same way inside the kernel: changing constants or byte order here breaks
 * client lookup in the enforcer. */
uint64_t policy_client_key_hash(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

const char *policy_id_problem(const char *s)
{
	size_t len;

	if (!s || !*s)
		return "must not be empty";
	len = strlen(s);
	if (len > POLICY_ID_MAX_LEN)
		return "must be at most 128 bytes";
	if (!is_alnum((unsigned char)s[0]))
		return "must start with a letter or digit";
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
			return "must contain only [A-Za-z0-9._:-]";
	}
	return NULL;
}

bool policy_id_valid(const char *s)
{
	return policy_id_problem(s) == NULL;
}

const char *policy_ruleset_name_problem(const char *s)
{
	size_t len;

	if (!s || !*s)
		return "must not be empty";
	len = strlen(s);
	if (len > POLICY_RULESET_NAME_MAX_LEN)
		return "must be at most 64 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		bool lower_alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (i == 0 && !lower_alnum)
			return "must start with a lower-case letter or digit";
		if (!lower_alnum && c != '.' && c != '_' && c != '-')
			return "must contain only [a-z0-9._-]";
	}
	return NULL;
}

bool policy_ruleset_name_valid(const char *s)
{
	return policy_ruleset_name_problem(s) == NULL;
}

struct policy_res *policy_res_ref(struct policy_res *r)
{
	if (r)
		__atomic_add_fetch(&r->refcnt, 1, __ATOMIC_RELAXED);
	return r;
}

void policy_res_unref(struct policy_res *r)
{
	if (!r)
		return;
	/* acq_rel: the freeing thread must see every other holder's reads
	 * finished before the memory goes back to malloc. */
	if (__atomic_sub_fetch(&r->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (r->kind == POLICY_KIND_ACCESS_LIST) {
		/* The only parts outside the single allocation. */
		cidr_table_free((struct cidr_table *)r->u.access_list.allow_table);
		cidr_table_free((struct cidr_table *)r->u.access_list.deny_table);
	}
	free(r);
}

bool policy_res_equal(const struct policy_res *a, const struct policy_res *b)
{
	if (a == b)
		return true;
	if (!a || !b)
		return false;
	return a->kind == b->kind && a->id_len == b->id_len &&
	       memcmp(a->id, b->id, a->id_len) == 0 && a->canon_len == b->canon_len &&
	       memcmp(a->canon, b->canon, a->canon_len) == 0;
}

int policy_res_decode(const uint8_t *buf, size_t len, struct policy_errs *errs,
		      struct policy_res **ret)
{
	Sluice__V1__Resource *m;
	int rc;

	if (!buf) {
		if (len)
			return -EINVAL;
		buf = (const uint8_t *)"";
	}
	/* protobuf-c reports allocation failure and bad bytes alike as NULL;
	 * bad bytes are the case worth naming. */
	m = sluice__v1__resource__unpack(NULL, len, buf);
	if (!m)
		return -EBADMSG;
	rc = policy_res_from_pb(m, errs, ret);
	sluice__v1__resource__free_unpacked(m, NULL);
	return rc;
}

int policy_delta_new(const char *ruleset, uint64_t from_version, uint64_t to_version,
		     struct policy_delta **ret)
{
	struct policy_delta *d;

	if (!policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	memcpy(d->ruleset, ruleset, strlen(ruleset) + 1);
	d->from_version = from_version;
	d->to_version = to_version;
	*ret = d;
	return 0;
}

void policy_delta_free(struct policy_delta *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_upserts; i++)
		policy_res_unref(d->upserts[i]);
	free(d->upserts);
	free(d->removes);
	free(d);
}

/* Grows *arr (elements of `size` bytes, capacity *cap) to hold one more. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 8;
	if (ncap > SIZE_MAX / size)
		return -ENOMEM;
	p = realloc(*arr, ncap * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

int policy_delta_add_upsert(struct policy_delta *d, struct policy_res *r)
{
	void *arr = d->upserts;
	int rc;

	if (!r)
		return -EINVAL;
	rc = grow(&arr, &d->cap_upserts, d->n_upserts, sizeof(*d->upserts));
	d->upserts = arr;
	if (rc)
		return rc;
	d->upserts[d->n_upserts++] = policy_res_ref(r);
	return 0;
}

int policy_delta_add_remove(struct policy_delta *d, enum policy_kind kind, const char *id)
{
	void *arr = d->removes;
	struct policy_key *k;
	int rc;

	if (!policy_kind_name(kind) || !policy_id_valid(id))
		return -EINVAL;
	if (kind == POLICY_KIND_SETTINGS && strcmp(id, POLICY_SETTINGS_ID) != 0)
		return -EINVAL;
	rc = grow(&arr, &d->cap_removes, d->n_removes, sizeof(*d->removes));
	d->removes = arr;
	if (rc)
		return rc;
	k = &d->removes[d->n_removes++];
	k->kind = kind;
	memcpy(k->id, id, strlen(id) + 1);
	return 0;
}
