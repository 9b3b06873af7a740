/* store.c - versioned rulesets in etcd (see store.h for the key layout and
 * why versions are mod_revisions and log keys sequence numbers).
 * Invariant: every write is one etcd_txn that compares the head's
 * mod_revision (or its absence) with what this call read and validated
 * against; nothing is written outside such a transaction.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/v1/admin.pb-c.h"

#include "etcd.h"
#include "policy.h"
#include "snapshot.h"
#include "store.h"

/* Owned by the creator of store_new; lives until store_free. Immutable. */
struct store {
	struct etcd *etcd;
	char *prefix;
	size_t max_txn_ops;
	void (*before_commit)(void *arg);
	void *before_commit_arg;
};

/* What one read of a ruleset's current state found. Lives on the caller's
 * stack; released with head_done. */
struct head {
	uint64_t version;       /* head mod_revision; 0 = no such ruleset */
	int64_t seq;            /* head key's etcd version = log entries so far */
	struct snapshot *snap;  /* the resources at `version` (empty when new) */
};

static void head_done(struct head *h)
{
	snapshot_unref(h->snap);
	h->snap = NULL;
}

static char *dup_str(const char *s)
{
	return strdup(s ? s : "");
}

/* prefix + "rulesets/" + formatted suffix, malloc'ed; NULL on ENOMEM. */
static char *key_printf(const struct store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static char *key_printf(const struct store *s, const char *fmt, ...)
{
	char *suffix, *key;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&suffix, fmt, ap);
	va_end(ap);
	if (r < 0)
		return NULL;
	r = asprintf(&key, "%srulesets/%s", s->prefix, suffix);
	free(suffix);
	return r < 0 ? NULL : key;
}

static char *head_key(const struct store *s, const char *rs)
{
	return key_printf(s, "%s/head", rs);
}

static char *log_key(const struct store *s, const char *rs, int64_t seq)
{
	return key_printf(s, "%s/log/%020" PRId64, rs, seq);
}

static int64_t now_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- VersionInfo <-> struct store_version ---------------------------------- */

void store_version_done(struct store_version *v)
{
	if (!v)
		return;
	free(v->author);
	free(v->message);
	free(v->touched);
	memset(v, 0, sizeof(*v));
}

void store_versions_free(struct store_version *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		store_version_done(&v[i]);
	free(v);
}

/* Packs v (version left 0: it is the key's mod_revision) into a malloc'ed
 * buffer; touched keys only when with_touched. */
static int version_pack(const struct store_version *v, bool with_touched, uint8_t **buf,
			size_t *len)
{
	Sluice__V1__VersionInfo m = SLUICE__V1__VERSION_INFO__INIT;
	Sluice__V1__ResourceKey *keys = NULL, **ptrs = NULL;
	size_t n = with_touched ? v->n_touched : 0;
	int r = 0;

	m.ruleset = (char *)v->ruleset;
	m.version = v->version;
	m.author = v->author ? v->author : (char *)"";
	m.message = v->message ? v->message : (char *)"";
	m.time_unix_ms = v->time_unix_ms;
	m.resources = v->resources;
	m.upserts = v->upserts;
	m.removes = v->removes;
	m.rollback_of = v->rollback_of;
	if (n) {
		keys = calloc(n, sizeof(*keys));
		ptrs = calloc(n, sizeof(*ptrs));
		if (!keys || !ptrs) {
			r = -ENOMEM;
			goto out_free;
		}
		for (size_t i = 0; i < n; i++) {
			Sluice__V1__ResourceKey init = SLUICE__V1__RESOURCE_KEY__INIT;

			keys[i] = init;
			keys[i].kind = (Sluice__V1__Kind)v->touched[i].kind;
			keys[i].id = (char *)v->touched[i].id;
			ptrs[i] = &keys[i];
		}
		m.n_touched = n;
		m.touched = ptrs;
	}
	*len = sluice__v1__version_info__get_packed_size(&m);
	/* +1: a zero-length message still gets a non-NULL buffer. */
	*buf = malloc(*len + 1);
	if (!*buf) {
		r = -ENOMEM;
		goto out_free;
	}
	sluice__v1__version_info__pack(&m, *buf);
out_free:
	free(ptrs);
	free(keys);
	return r;
}

/* Decodes a stored VersionInfo into *v (zeroed first, filled on success),
 * taking the version from the key's mod_revision. */
static int version_unpack(const struct etcd_kv *kv, struct store_version *v)
{
	Sluice__V1__VersionInfo *m;
	struct store_version tmp = { 0 };
	int r = 0;

	memset(v, 0, sizeof(*v));
	m = sluice__v1__version_info__unpack(NULL, kv->value_len, kv->value);
	if (!m)
		return -EBADMSG;
	if (strlen(m->ruleset) > POLICY_RULESET_NAME_MAX_LEN) {
		r = -EBADMSG;
		goto out_free;
	}
	strcpy(tmp.ruleset, m->ruleset);
	tmp.version = (uint64_t)kv->mod_revision;
	tmp.time_unix_ms = m->time_unix_ms;
	tmp.resources = m->resources;
	tmp.upserts = m->upserts;
	tmp.removes = m->removes;
	tmp.rollback_of = m->rollback_of;
	tmp.author = strdup(m->author);
	tmp.message = strdup(m->message);
	if (!tmp.author || !tmp.message) {
		r = -ENOMEM;
		goto out_done;
	}
	if (m->n_touched) {
		tmp.touched = calloc(m->n_touched, sizeof(*tmp.touched));
		if (!tmp.touched) {
			r = -ENOMEM;
			goto out_done;
		}
		for (size_t i = 0; i < m->n_touched; i++) {
			const Sluice__V1__ResourceKey *k = m->touched[i];

			if (strlen(k->id) > POLICY_ID_MAX_LEN) {
				r = -EBADMSG;
				goto out_done;
			}
			tmp.touched[i].kind = (enum policy_kind)k->kind;
			strcpy(tmp.touched[i].id, k->id);
		}
		tmp.n_touched = m->n_touched;
	}
	*v = tmp;
	goto out_free;
out_done:
	store_version_done(&tmp);
out_free:
	sluice__v1__version_info__free_unpacked(m, NULL);
	return r;
}

struct Sluice__V1__VersionInfo *store_version_to_pb(const struct store_version *v)
{
	Sluice__V1__VersionInfo *m;
	uint8_t *buf;
	size_t len;
	int r;

	r = version_pack(v, true, &buf, &len);
	if (r < 0) {
		errno = -r;
		return NULL;
	}
	m = sluice__v1__version_info__unpack(NULL, len, buf);
	free(buf);
	if (!m)
		errno = ENOMEM;
	return m;
}

/* ---- reading ----------------------------------------------------------------- */

/* Decodes the res/ keys of one ruleset into a snapshot at `version`. A key
 * must name the kind and id of the resource stored under it. */
static int build_from_kvs(const struct store *s, const char *rs, uint64_t version,
			  const struct etcd_range_result *rr, struct snapshot **ret)
{
	struct policy_res **res;
	size_t n = 0, res_prefix_len;
	char *res_prefix;
	int r = 0;

	res_prefix = key_printf(s, "%s/res/", rs);
	res = calloc(rr->n_kvs ? rr->n_kvs : 1, sizeof(*res));
	if (!res_prefix || !res) {
		r = -ENOMEM;
		goto out_free;
	}
	res_prefix_len = strlen(res_prefix);
	for (size_t i = 0; i < rr->n_kvs; i++) {
		const struct etcd_kv *kv = &rr->kvs[i];
		const char *rest, *kname;
		size_t klen;

		r = policy_res_decode(kv->value, kv->value_len, NULL, &res[n]);
		if (r < 0) {
			r = r == -ENOMEM ? r : -EBADMSG;
			goto out_free;
		}
		n++;
		kname = policy_kind_name(res[n - 1]->kind);
		klen = strlen(kname);
		rest = kv->key + res_prefix_len;
		if (kv->key_len != res_prefix_len + klen + 1 + res[n - 1]->id_len ||
		    memcmp(kv->key, res_prefix, res_prefix_len) != 0 ||
		    memcmp(rest, kname, klen) != 0 || rest[klen] != '/' ||
		    memcmp(rest + klen + 1, res[n - 1]->id, res[n - 1]->id_len) != 0) {
			r = -EBADMSG;
			goto out_free;
		}
	}
	r = snapshot_build(rs, version, res, n, NULL, ret);
out_free:
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	free(res);
	free(res_prefix);
	return r;
}

/* The head and the resources of a ruleset as they are now, read
 * atomically (one read-only transaction). */
static int read_head(const struct store *s, const char *rs, struct head *h)
{
	struct etcd_txn_result tr;
	struct etcd_op ops[2];
	char *hk, *rk = NULL, *rend = NULL;
	size_t rend_len;
	int r;

	memset(h, 0, sizeof(*h));
	hk = head_key(s, rs);
	rk = key_printf(s, "%s/res/", rs);
	if (!hk || !rk) {
		r = -ENOMEM;
		goto out_free;
	}
	rend = malloc(strlen(rk));
	if (!rend) {
		r = -ENOMEM;
		goto out_free;
	}
	rend_len = etcd_prefix_end(rk, strlen(rk), rend);
	memset(ops, 0, sizeof(ops));
	ops[0].type = ETCD_OP_RANGE;
	ops[0].key = hk;
	ops[0].key_len = strlen(hk);
	ops[1].type = ETCD_OP_RANGE;
	ops[1].key = rk;
	ops[1].key_len = strlen(rk);
	ops[1].range_end = rend;
	ops[1].range_end_len = rend_len;
	r = etcd_txn(s->etcd, &(struct etcd_txn){ .success = ops, .n_success = 2 }, &tr);
	if (r < 0)
		goto out_free;
	if (!tr.succeeded || tr.n_responses != 2) {
		r = -EBADMSG;
		goto out_result;
	}
	if (tr.responses[0].range.n_kvs) {
		const struct etcd_kv *kv = &tr.responses[0].range.kvs[0];

		h->version = (uint64_t)kv->mod_revision;
		h->seq = kv->version;
	}
	r = build_from_kvs(s, rs, h->version, &tr.responses[1].range, &h->snap);
out_result:
	etcd_txn_result_done(&tr);
out_free:
	free(rend);
	free(rk);
	free(hk);
	return r;
}

/* mod_revision of log entry `seq`, 0 when it does not exist. */
static int log_mod_revision(const struct store *s, const char *rs, int64_t seq, int64_t *mod)
{
	struct etcd_range_result rr;
	char *k = log_key(s, rs, seq);
	int r;

	if (!k)
		return -ENOMEM;
	r = etcd_range(s->etcd, k, strlen(k), NULL, 0, 0, 0, &rr);
	free(k);
	if (r < 0)
		return r;
	*mod = rr.n_kvs ? rr.kvs[0].mod_revision : 0;
	etcd_range_result_done(&rr);
	return 0;
}

/* The newest log sequence number <= seq_max whose version is below
 * `before` (0 when none). Versions grow with sequence numbers, so this is a
 * binary search; a missing entry counts as older than every version (only
 * the oldest entries could ever be pruned). */
static int log_seq_before(const struct store *s, const char *rs, int64_t seq_max,
			  uint64_t before, int64_t *seq)
{
	int64_t lo = 1, hi = seq_max, found = 0;

	while (lo <= hi) {
		int64_t mid = lo + (hi - lo) / 2, mod;
		int r = log_mod_revision(s, rs, mid, &mod);

		if (r < 0)
			return r;
		if ((uint64_t)mod < before) {
			found = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	*seq = found;
	return 0;
}

/* The head key's etcd version (its sequence number) now; 0 = no ruleset. */
static int head_seq(const struct store *s, const char *rs, int64_t *seq)
{
	struct etcd_range_result rr;
	char *k = head_key(s, rs);
	int r;

	if (!k)
		return -ENOMEM;
	r = etcd_range(s->etcd, k, strlen(k), NULL, 0, 0, 0, &rr);
	free(k);
	if (r < 0)
		return r;
	*seq = rr.n_kvs ? rr.kvs[0].version : 0;
	etcd_range_result_done(&rr);
	return 0;
}

/* Whether a change of the ruleset committed at exactly `version`, from
 * the log (which survives compaction). */
static int is_logged_version(const struct store *s, const char *rs, uint64_t version,
			     bool *yes)
{
	int64_t seq_max, seq, mod = 0;
	int r;

	*yes = false;
	r = head_seq(s, rs, &seq_max);
	if (r < 0 || seq_max == 0)
		return r;
	r = log_seq_before(s, rs, seq_max, version + 1, &seq);
	if (r < 0 || seq == 0)
		return r;
	r = log_mod_revision(s, rs, seq, &mod);
	*yes = r == 0 && (uint64_t)mod == version;
	return r;
}

static int get_at(const struct store *s, const char *rs, uint64_t version,
		  struct snapshot **ret)
{
	struct etcd_range_result rr;
	char *hk = NULL, *rk = NULL, *rend = NULL;
	size_t rend_len;
	bool logged;
	int r;

	if (version == 0) {
		struct head h;

		r = read_head(s, rs, &h);
		if (r < 0)
			return r;
		if (h.version == 0) {
			head_done(&h);
			return -ENOENT;
		}
		*ret = h.snap;
		return 0;
	}
	if (version > INT64_MAX)
		return -ENOENT;
	hk = head_key(s, rs);
	rk = key_printf(s, "%s/res/", rs);
	if (!hk || !rk) {
		r = -ENOMEM;
		goto out_free;
	}
	/* At revision V the head's mod_revision is V exactly when a change of
	 * this ruleset committed at V. */
	r = etcd_range(s->etcd, hk, strlen(hk), NULL, 0, (int64_t)version, 0, &rr);
	if (r == -ERANGE) {
		r = -ENOENT;
		goto out_free;
	}
	if (r == -ESTALE) {
		/* Compacted: tell a lost version from one that never was. */
		r = is_logged_version(s, rs, version, &logged);
		if (r == 0)
			r = logged ? -ESTALE : -ENOENT;
		goto out_free;
	}
	if (r < 0)
		goto out_free;
	logged = rr.n_kvs && (uint64_t)rr.kvs[0].mod_revision == version;
	etcd_range_result_done(&rr);
	if (!logged) {
		r = -ENOENT;
		goto out_free;
	}
	rend = malloc(strlen(rk));
	if (!rend) {
		r = -ENOMEM;
		goto out_free;
	}
	rend_len = etcd_prefix_end(rk, strlen(rk), rend);
	r = etcd_range(s->etcd, rk, strlen(rk), rend, rend_len, (int64_t)version, 0, &rr);
	if (r < 0)
		goto out_free;
	r = build_from_kvs(s, rs, version, &rr, ret);
	etcd_range_result_done(&rr);
out_free:
	free(rend);
	free(rk);
	free(hk);
	return r;
}

/* ---- writing ----------------------------------------------------------------- */

/* Metadata of a change being committed. Borrowed from the caller. */
struct change_meta {
	const char *author;
	const char *message;
	uint64_t rollback_of;
};

static int check_meta(const struct change_meta *m, struct policy_errs *errs)
{
	int r = 0;

	if (m->author && strlen(m->author) > STORE_MAX_AUTHOR_LEN) {
		if (errs)
			policy_errs_add(errs, "author: longer than %d bytes", STORE_MAX_AUTHOR_LEN);
		r = -EINVAL;
	}
	if (m->message && strlen(m->message) > STORE_MAX_MESSAGE_LEN) {
		if (errs)
			policy_errs_add(errs, "message: longer than %d bytes",
					STORE_MAX_MESSAGE_LEN);
		r = -EINVAL;
	}
	return r;
}

/* Fills *v (counts, touched keys, metadata; version 0) for the change `eff`
 * that turns the head into a ruleset of `resources` resources. */
static int describe(const char *rs, const struct policy_delta *eff, size_t resources,
		    const struct change_meta *m, struct store_version *v)
{
	struct store_version tmp = { 0 };
	size_t n = eff->n_upserts + eff->n_removes;

	snprintf(tmp.ruleset, sizeof(tmp.ruleset), "%s", rs);
	tmp.author = dup_str(m->author);
	tmp.message = dup_str(m->message);
	tmp.touched = calloc(n ? n : 1, sizeof(*tmp.touched));
	if (!tmp.author || !tmp.message || !tmp.touched) {
		store_version_done(&tmp);
		return -ENOMEM;
	}
	for (size_t i = 0; i < eff->n_upserts; i++) {
		tmp.touched[i].kind = eff->upserts[i]->kind;
		snprintf(tmp.touched[i].id, sizeof(tmp.touched[i].id), "%s",
			 eff->upserts[i]->id);
	}
	for (size_t i = 0; i < eff->n_removes; i++)
		tmp.touched[eff->n_upserts + i] = eff->removes[i];
	tmp.n_touched = n;
	tmp.time_unix_ms = now_unix_ms();
	tmp.resources = (uint32_t)resources;
	tmp.upserts = (uint32_t)eff->n_upserts;
	tmp.removes = (uint32_t)eff->n_removes;
	tmp.rollback_of = m->rollback_of;
	*v = tmp;
	return 0;
}

/* The one transaction of a change: if the head is still at h->version,
 * write the effective delta plus head and log. -ESTALE when it is not. On
 * success v->version is the new version. */
static int commit(const struct store *s, const char *rs, const struct head *h,
		  const struct policy_delta *eff, struct store_version *v)
{
	size_t n_ops = eff->n_upserts + eff->n_removes + 2, n_keys = 0;
	struct etcd_compare cmp[2];
	struct etcd_txn_result tr;
	struct etcd_op *ops;
	uint8_t *head_val = NULL, *log_val = NULL;
	size_t head_len, log_len;
	char **keys;
	int r;

	if (n_ops > s->max_txn_ops)
		return -E2BIG;
	ops = calloc(n_ops, sizeof(*ops));
	keys = calloc(n_ops, sizeof(*keys));
	if (!ops || !keys) {
		r = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < eff->n_upserts; i++) {
		const struct policy_res *res = eff->upserts[i];

		keys[n_keys] = key_printf(s, "%s/res/%s/%s", rs, policy_kind_name(res->kind),
					  res->id);
		if (!keys[n_keys]) {
			r = -ENOMEM;
			goto out_free;
		}
		ops[n_keys].type = ETCD_OP_PUT;
		ops[n_keys].value = res->canon;
		ops[n_keys].value_len = res->canon_len;
		n_keys++;
	}
	for (size_t i = 0; i < eff->n_removes; i++) {
		const struct policy_key *k = &eff->removes[i];

		keys[n_keys] = key_printf(s, "%s/res/%s/%s", rs, policy_kind_name(k->kind), k->id);
		if (!keys[n_keys]) {
			r = -ENOMEM;
			goto out_free;
		}
		ops[n_keys].type = ETCD_OP_DELETE;
		n_keys++;
	}
	keys[n_keys] = head_key(s, rs);
	keys[n_keys + 1] = log_key(s, rs, h->seq + 1);
	if (!keys[n_keys] || !keys[n_keys + 1]) {
		n_keys += 2;
		r = -ENOMEM;
		goto out_free;
	}
	n_keys += 2;
	v->version = 0;
	r = version_pack(v, false, &head_val, &head_len);
	if (r < 0)
		goto out_free;
	r = version_pack(v, true, &log_val, &log_len);
	if (r < 0)
		goto out_free;
	ops[n_ops - 2].type = ETCD_OP_PUT;
	ops[n_ops - 2].value = head_val;
	ops[n_ops - 2].value_len = head_len;
	ops[n_ops - 1].type = ETCD_OP_PUT;
	ops[n_ops - 1].value = log_val;
	ops[n_ops - 1].value_len = log_len;
	for (size_t i = 0; i < n_ops; i++) {
		ops[i].key = keys[i];
		ops[i].key_len = strlen(keys[i]);
	}

	memset(cmp, 0, sizeof(cmp));
	cmp[0].key = keys[n_ops - 2];
	cmp[0].key_len = strlen(keys[n_ops - 2]);
	/* A new ruleset: the head must still be absent. */
	cmp[0].target = h->version ? ETCD_CMP_MOD : ETCD_CMP_CREATE;
	cmp[0].result = ETCD_CMP_EQUAL;
	cmp[0].number = (int64_t)h->version;
	cmp[1].key = keys[n_ops - 1];
	cmp[1].key_len = strlen(keys[n_ops - 1]);
	cmp[1].target = ETCD_CMP_CREATE;
	cmp[1].result = ETCD_CMP_EQUAL;
	cmp[1].number = 0;

	r = etcd_txn(s->etcd,
		     &(struct etcd_txn){ .compares = cmp, .n_compares = 2, .success = ops,
					 .n_success = n_ops },
		     &tr);
	if (r < 0)
		goto out_free;
	if (tr.succeeded)
		v->version = (uint64_t)tr.revision;
	else
		r = -ESTALE;
	etcd_txn_result_done(&tr);
out_free:
	free(log_val);
	free(head_val);
	for (size_t i = 0; keys && i < n_keys; i++)
		free(keys[i]);
	free(keys);
	free(ops);
	return r;
}

/* How an attempt turns the head into the next content. */
struct change_plan {
	const struct store_change *ch;  /* apply: the caller's change */
	const struct snapshot *target;  /* rollback: the content to restore */
};

/* Computes, from the head h, the effective delta and the resulting
 * resource count. */
static int plan_next(const struct change_plan *p, const char *rs, const struct head *h,
		     struct policy_errs *errs, struct policy_delta **eff, size_t *resources)
{
	struct policy_delta *d = NULL;
	struct snapshot *next = NULL;
	uint64_t from = h->version;
	int r;

	if (p->target) {
		r = snapshot_diff(h->snap, p->target, eff);
		if (r == 0)
			*resources = snapshot_count(p->target, 0);
		return r;
	}
	/* The delta's to_version only has to be above from_version: the real
	 * version is known after the commit. */
	r = policy_delta_new(rs, from, from + 1, &d);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->ch->n_upserts && r == 0; i++)
		r = policy_delta_add_upsert(d, p->ch->upserts[i]);
	for (size_t i = 0; i < p->ch->n_removes && r == 0; i++) {
		r = policy_delta_add_remove(d, p->ch->removes[i].kind, p->ch->removes[i].id);
		if (r == -EINVAL && errs)
			policy_errs_add(errs, "removes[%zu]: invalid kind or id", i);
	}
	if (r < 0)
		goto out_free;
	r = snapshot_apply(h->snap, d, errs, &next);
	if (r < 0)
		goto out_free;
	r = snapshot_diff(h->snap, next, eff);
	if (r == 0)
		*resources = snapshot_count(next, 0);
out_free:
	snapshot_unref(next);
	policy_delta_free(d);
	return r;
}

/* Read, check expected_version, plan, commit; retried on a lost race when
 * the caller does not care about the base version. */
static int change(struct store *s, const char *rs, const struct change_plan *p,
		  uint64_t expected_version, bool dry_run, const struct change_meta *m,
		  struct policy_errs *errs, struct store_version *out)
{
	int r = -ESTALE;

	if (!policy_ruleset_name_valid(rs)) {
		if (errs)
			policy_errs_add(errs, "ruleset: %s", policy_ruleset_name_problem(rs));
		return -EINVAL;
	}
	r = check_meta(m, errs);
	if (r < 0)
		return r;
	for (int attempt = 0; attempt < STORE_APPLY_ATTEMPTS; attempt++) {
		struct policy_delta *eff = NULL;
		struct store_version v;
		size_t resources = 0;
		struct head h;

		r = read_head(s, rs, &h);
		if (r < 0)
			return r;
		if (expected_version && expected_version != h.version) {
			head_done(&h);
			return -ESTALE;
		}
		r = plan_next(p, rs, &h, errs, &eff, &resources);
		if (r == 0)
			r = describe(rs, eff, resources, m, &v);
		if (r < 0) {
			policy_delta_free(eff);
			head_done(&h);
			return r;
		}
		if (dry_run) {
			r = 0;
		} else {
			if (s->before_commit)
				s->before_commit(s->before_commit_arg);
			r = commit(s, rs, &h, eff, &v);
		}
		policy_delta_free(eff);
		head_done(&h);
		if (r == 0) {
			if (out)
				*out = v;
			else
				store_version_done(&v);
			return 0;
		}
		store_version_done(&v);
		if (r != -ESTALE || expected_version)
			return r;
	}
	return r;
}

/* ---- public ------------------------------------------------------------------ */

int store_new(const struct store_config *cfg, struct store **ret)
{
	struct store *s;

	if (!cfg || !cfg->etcd)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->prefix = strdup(cfg->prefix ? cfg->prefix : STORE_DEFAULT_PREFIX);
	if (!s->prefix) {
		free(s);
		return -ENOMEM;
	}
	s->etcd = cfg->etcd;
	s->max_txn_ops = cfg->max_txn_ops ? cfg->max_txn_ops : STORE_DEFAULT_MAX_TXN_OPS;
	s->before_commit = cfg->before_commit;
	s->before_commit_arg = cfg->before_commit_arg;
	*ret = s;
	return 0;
}

void store_free(struct store *s)
{
	if (!s)
		return;
	free(s->prefix);
	free(s);
}

int store_apply(struct store *s, const struct store_change *ch, struct policy_errs *errs,
		struct store_version *out)
{
	struct change_meta m = { .author = ch->author, .message = ch->message };
	struct change_plan p = { .ch = ch };

	return change(s, ch->ruleset ? ch->ruleset : "", &p, ch->expected_version, ch->dry_run,
		      &m, errs, out);
}

int store_get(struct store *s, const char *ruleset, uint64_t version, struct snapshot **ret)
{
	if (!ruleset || !policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	return get_at(s, ruleset, version, ret);
}

int store_rollback(struct store *s, const char *ruleset, uint64_t to_version,
		   uint64_t expected_version, const char *author, const char *message,
		   struct store_version *out)
{
	struct change_meta m = { .author = author, .message = message,
				 .rollback_of = to_version };
	struct change_plan p = { 0 };
	struct snapshot *old;
	int r;

	if (!ruleset || !policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	if (to_version == 0)
		return -ENOENT;
	r = get_at(s, ruleset, to_version, &old);
	if (r < 0)
		return r;
	p.target = old;
	r = change(s, ruleset, &p, expected_version, false, &m, NULL, out);
	snapshot_unref(old);
	return r;
}

int store_diff(struct store *s, const char *ruleset, uint64_t from, uint64_t to,
	       struct policy_delta **ret)
{
	struct snapshot *a = NULL, *b = NULL;
	int r;

	if (!ruleset || !policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	r = get_at(s, ruleset, to, &b);
	if (r < 0)
		return r;
	if (from)
		r = get_at(s, ruleset, from, &a);
	else
		r = snapshot_new_empty(ruleset, &a);
	if (r == 0)
		r = snapshot_diff(a, b, ret);
	snapshot_unref(a);
	snapshot_unref(b);
	return r;
}

int store_history(struct store *s, const char *ruleset, uint32_t limit,
		  uint64_t before_version, struct store_version **out, size_t *n)
{
	struct etcd_range_result rr;
	struct store_version *v = NULL;
	int64_t seq_max, hi, lo;
	char *from = NULL, *to = NULL;
	size_t got = 0;
	int r;

	if (!ruleset || !policy_ruleset_name_valid(ruleset))
		return -EINVAL;
	if (limit == 0)
		limit = STORE_DEFAULT_HISTORY_LIMIT;
	r = head_seq(s, ruleset, &seq_max);
	if (r < 0)
		return r;
	if (seq_max == 0)
		return -ENOENT;
	hi = seq_max;
	if (before_version) {
		r = log_seq_before(s, ruleset, seq_max, before_version, &hi);
		if (r < 0)
			return r;
	}
	if (hi == 0) {
		*out = NULL;
		*n = 0;
		return 0;
	}
	lo = hi - (int64_t)limit + 1;
	if (lo < 1)
		lo = 1;
	from = log_key(s, ruleset, lo);
	to = log_key(s, ruleset, hi + 1);
	if (!from || !to) {
		r = -ENOMEM;
		goto out_free;
	}
	r = etcd_range(s->etcd, from, strlen(from), to, strlen(to), 0, 0, &rr);
	if (r < 0)
		goto out_free;
	v = calloc(rr.n_kvs ? rr.n_kvs : 1, sizeof(*v));
	if (!v) {
		r = -ENOMEM;
		goto out_range;
	}
	for (size_t i = rr.n_kvs; i-- > 0;) {
		r = version_unpack(&rr.kvs[i], &v[got]);
		if (r < 0)
			goto out_range;
		got++;
	}
	if (got == 0) {
		free(v);
		v = NULL;
	}
	*out = v;
	*n = got;
	v = NULL;
out_range:
	store_versions_free(v, got);
	etcd_range_result_done(&rr);
out_free:
	free(to);
	free(from);
	return r;
}

static int cmp_ruleset(const void *a, const void *b)
{
	return strcmp(((const struct store_version *)a)->ruleset,
		      ((const struct store_version *)b)->ruleset);
}

int store_list(struct store *s, struct store_version **out, size_t *n)
{
	struct store_version *v = NULL;
	size_t got = 0, cap = 0, base_len, end_len;
	int64_t at = 0;
	char *base, *cursor = NULL, *end = NULL;
	size_t cursor_len;
	int r = 0;

	base = key_printf(s, "%s", "");
	if (!base)
		return -ENOMEM;
	base_len = strlen(base);
	cursor = strdup(base);
	cursor_len = base_len;
	end = malloc(base_len);
	if (!cursor || !end) {
		r = -ENOMEM;
		goto out_free;
	}
	end_len = etcd_prefix_end(base, base_len, end);
	/* Skip scan: the first key at or after the cursor names a ruleset; read
	 * its head, then continue after all of that ruleset's keys. Every read
	 * is at the revision of the first, so the list is one point in time. */
	for (;;) {
		struct etcd_range_result rr, hr;
		char rs[POLICY_RULESET_NAME_MAX_LEN + 1], *hk, *next;
		const char *name, *slash;

		r = etcd_range(s->etcd, cursor, cursor_len, end, end_len, at, 1, &rr);
		if (r < 0)
			goto out_free;
		if (at == 0)
			at = rr.revision;
		if (rr.n_kvs == 0) {
			etcd_range_result_done(&rr);
			break;
		}
		name = rr.kvs[0].key + base_len;
		slash = strchr(name, '/');
		if (!slash || (size_t)(slash - name) > POLICY_RULESET_NAME_MAX_LEN) {
			/* Not ours: skip just this key. key + "\0" is the
			 * smallest key after it (keys are byte strings). */
			cursor_len = rr.kvs[0].key_len + 1;
			next = calloc(1, cursor_len);
			if (next)
				memcpy(next, rr.kvs[0].key, rr.kvs[0].key_len);
			etcd_range_result_done(&rr);
			free(cursor);
			cursor = next;
			if (!cursor) {
				r = -ENOMEM;
				goto out_free;
			}
			continue;
		}
		memcpy(rs, name, (size_t)(slash - name));
		rs[slash - name] = '\0';
		etcd_range_result_done(&rr);

		hk = head_key(s, rs);
		if (!hk) {
			r = -ENOMEM;
			goto out_free;
		}
		r = etcd_range(s->etcd, hk, strlen(hk), NULL, 0, at, 0, &hr);
		free(hk);
		if (r < 0)
			goto out_free;
		if (hr.n_kvs) {
			if (got == cap) {
				size_t ncap = cap ? cap * 2 : 8;
				struct store_version *nv = realloc(v, ncap * sizeof(*v));

				if (!nv) {
					etcd_range_result_done(&hr);
					r = -ENOMEM;
					goto out_free;
				}
				v = nv;
				cap = ncap;
			}
			r = version_unpack(&hr.kvs[0], &v[got]);
			if (r < 0) {
				etcd_range_result_done(&hr);
				goto out_free;
			}
			got++;
		}
		etcd_range_result_done(&hr);
		/* "rulesets/<rs>0" ('0' = '/' + 1) follows every "rulesets/<rs>/..." key. */
		next = key_printf(s, "%s0", rs);
		if (!next) {
			r = -ENOMEM;
			goto out_free;
		}
		free(cursor);
		cursor = next;
		cursor_len = strlen(next);
	}
	if (got == 0) {
		free(v);
		v = NULL;
	}
	/* Key order is not name order ("b.c/" sorts before "b/"). */
	if (got > 1)
		qsort(v, got, sizeof(*v), cmp_ruleset);
	*out = v;
	*n = got;
	v = NULL;
	got = 0;
out_free:
	store_versions_free(v, got);
	free(end);
	free(cursor);
	free(base);
	return r;
}
