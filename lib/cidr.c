/* cidr.c - strict prefix parsing and an immutable longest-prefix-match table.
 *
 * Invariants: a struct cidr never has host bits set; IPv4-mapped IPv6
 * (::ffff:0:0/96) is treated as IPv4 everywhere an address or prefix is
 * matched. A table covers each family's whole address space with sorted
 * boundaries, so a lookup is one branch-light search and never allocates.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CIDR_MAX_TEXT 64
#define CIDR_MAX_PREFIXES ((size_t)1 << 20)

__extension__ typedef unsigned __int128 u128;

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* One static reason per prefix length, so callers get "host bits set beyond
 * /8" without any buffer of their own. */
#define HB(n) "host bits set beyond /" #n
#define HB8(a, b, c, d, e, f, g, h) HB(a), HB(b), HB(c), HB(d), HB(e), HB(f), HB(g), HB(h)
static const char *const host_bits_why[129] = {
	HB8(0, 1, 2, 3, 4, 5, 6, 7),
	HB8(8, 9, 10, 11, 12, 13, 14, 15),
	HB8(16, 17, 18, 19, 20, 21, 22, 23),
	HB8(24, 25, 26, 27, 28, 29, 30, 31),
	HB8(32, 33, 34, 35, 36, 37, 38, 39),
	HB8(40, 41, 42, 43, 44, 45, 46, 47),
	HB8(48, 49, 50, 51, 52, 53, 54, 55),
	HB8(56, 57, 58, 59, 60, 61, 62, 63),
	HB8(64, 65, 66, 67, 68, 69, 70, 71),
	HB8(72, 73, 74, 75, 76, 77, 78, 79),
	HB8(80, 81, 82, 83, 84, 85, 86, 87),
	HB8(88, 89, 90, 91, 92, 93, 94, 95),
	HB8(96, 97, 98, 99, 100, 101, 102, 103),
	HB8(104, 105, 106, 107, 108, 109, 110, 111),
	HB8(112, 113, 114, 115, 116, 117, 118, 119),
	HB8(120, 121, 122, 123, 124, 125, 126, 127),
	HB(128),
};
#undef HB8
#undef HB

static int fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -EINVAL;
}

static unsigned family_bits(uint8_t family)
{
	return family == AF_INET ? 32 : 128;
}

static bool is_v4_mapped(const uint8_t addr[16])
{
	return memcmp(addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

/* True when any bit at position >= prefix_len (counted from the most
 * significant bit of addr[0]) is set. */
static bool has_host_bits(const uint8_t *addr, unsigned addr_bits, unsigned prefix_len)
{
	unsigned byte = prefix_len / 8;
	unsigned rem = prefix_len % 8;

	if (rem) {
		if (addr[byte] & (uint8_t)(0xffu >> rem))
			return true;
		byte++;
	}
	for (; byte < addr_bits / 8; byte++)
		if (addr[byte])
			return true;
	return false;
}

/* True when the first `bits` bits of a and b are equal. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8;
	unsigned rem = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rem) {
		uint8_t mask = (uint8_t)(0xffu << (8 - rem));
		if ((a[whole] ^ b[whole]) & mask)
			return false;
	}
	return true;
}

/* Parses the text after '/': decimal, no sign, spaces or leading zeros. */
static int parse_prefix_len(const char *p, unsigned max_len, unsigned *out, const char **why)
{
	unsigned v = 0;
	size_t n = 0;

	if (*p == '\0')
		return fail(why, "bad prefix length");
	if (p[0] == '0' && p[1] != '\0')
		return fail(why, "bad prefix length");
	for (; p[n]; n++) {
		if (p[n] < '0' || p[n] > '9')
			return fail(why, "bad prefix length");
		/* Four digits without a leading zero already exceed 128; stop
		 * accumulating so a long digit run cannot overflow. */
		if (n < 4)
			v = v * 10 + (unsigned)(p[n] - '0');
	}
	if (n >= 4 || v > max_len)
		return fail(why, "prefix length out of range");
	*out = v;
	return 0;
}

int cidr_parse(const char *s, struct cidr *out, const char **why)
{
	char text[CIDR_MAX_TEXT + 1];
	struct cidr c = { 0 };
	const char *slash;
	size_t len, addr_len;
	unsigned prefix_len;
	int family;

	assert(out);
	if (!s || *s == '\0')
		return fail(why, "empty input");
	len = strnlen(s, CIDR_MAX_TEXT + 1);
	if (len > CIDR_MAX_TEXT)
		return fail(why, "longer than 64 characters");
	if (memchr(s, '%', len))
		return fail(why, "IPv6 zone ids are not allowed");

	slash = memchr(s, '/', len);
	addr_len = slash ? (size_t)(slash - s) : len;
	memcpy(text, s, addr_len);
	text[addr_len] = '\0';

	family = memchr(text, ':', addr_len) ? AF_INET6 : AF_INET;
	if (inet_pton(family, text, c.addr) != 1)
		return fail(why, "not an IPv4 or IPv6 address");
	c.family = (uint8_t)family;

	prefix_len = family_bits(c.family);
	if (slash) {
		int r = parse_prefix_len(slash + 1, family_bits(c.family), &prefix_len, why);
		if (r < 0)
			return r;
	}
	if (has_host_bits(c.addr, family_bits(c.family), prefix_len))
		return fail(why, host_bits_why[prefix_len]);
	c.prefix_len = (uint8_t)prefix_len;
	*out = c;
	return 0;
}

/* Rewrites a v4-mapped IPv6 address as IPv4 in place. */
static void normalize_addr(struct cidr_addr *a)
{
	if (a->family == AF_INET6 && is_v4_mapped(a->addr)) {
		uint8_t v4[4];

		memcpy(v4, a->addr + 12, 4);
		memset(a->addr, 0, sizeof(a->addr));
		memcpy(a->addr, v4, 4);
		a->family = AF_INET;
	}
}

/* A prefix inside ::ffff:0:0/96 matches exactly the IPv4 addresses under
 * the IPv4 prefix of length prefix_len - 96. */
static void normalize_prefix(struct cidr *c)
{
	if (c->family == AF_INET6 && c->prefix_len >= 96 && is_v4_mapped(c->addr)) {
		uint8_t v4[4];

		memcpy(v4, c->addr + 12, 4);
		memset(c->addr, 0, sizeof(c->addr));
		memcpy(c->addr, v4, 4);
		c->family = AF_INET;
		c->prefix_len = (uint8_t)(c->prefix_len - 96);
	}
}

int cidr_addr_parse(const char *s, struct cidr_addr *out)
{
	struct cidr c;
	struct cidr_addr a = { 0 };

	assert(out);
	if (!s || strnlen(s, CIDR_MAX_TEXT + 1) > CIDR_MAX_TEXT || strchr(s, '/'))
		return -EINVAL;
	if (cidr_parse(s, &c, NULL) < 0)
		return -EINVAL;
	a.family = c.family;
	memcpy(a.addr, c.addr, sizeof(a.addr));
	normalize_addr(&a);
	*out = a;
	return 0;
}

int cidr_addr_from_sockaddr(const struct sockaddr *sa, struct cidr_addr *out)
{
	struct cidr_addr a = { 0 };

	assert(out);
	if (!sa)
		return -EINVAL;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

		a.family = AF_INET;
		memcpy(a.addr, &sin->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;

		a.family = AF_INET6;
		memcpy(a.addr, &sin6->sin6_addr, 16);
		normalize_addr(&a);
	} else {
		return -EAFNOSUPPORT;
	}
	*out = a;
	return 0;
}

int cidr_format(const struct cidr *c, char *buf, size_t len)
{
	char text[INET6_ADDRSTRLEN];

	assert(c);
	if (c->family != AF_INET && c->family != AF_INET6)
		return -EINVAL;
	if (!inet_ntop(c->family, c->addr, text, sizeof(text)))
		return -errno;
	return snprintf(buf, len, "%s/%u", text, (unsigned)c->prefix_len);
}

bool cidr_contains(const struct cidr *c, const struct cidr_addr *a)
{
	struct cidr p = *c;
	struct cidr_addr x = *a;

	normalize_prefix(&p);
	normalize_addr(&x);
	if (p.family != x.family || (p.family != AF_INET && p.family != AF_INET6))
		return false;
	if (p.prefix_len > family_bits(p.family))
		return false;
	return prefix_equal(p.addr, x.addr, p.prefix_len);
}

/* ---- LPM table ---------------------------------------------------------- */

/* What a range of addresses resolves to; len < 0 means no prefix covers it.
 * Owned by its cidr_table (an array per family), lives until the free. */
struct cidr_label {
	uint32_t value;
	int32_t len;
};

/* Sorted range starts; range i is [starts[i], starts[i+1] - 1] and the
 * first start is always 0, so every address falls in exactly one range.
 * Owned by its cidr_table, lives until cidr_table_free. */
struct cidr_index_v4 {
	uint32_t *starts;
	struct cidr_label *labels;
	size_t n;
	/* by_octet[b]: the range holding b.0.0.0 (by_octet[256]: the last),
	 * so an address's range lies in [by_octet[b], by_octet[b + 1]]: a
	 * lookup searches only the ranges of its first octet. */
	uint32_t by_octet[257];
};

/* As cidr_index_v4, with 128-bit starts. Owned by its cidr_table. */
struct cidr_index_v6 {
	u128 *starts;
	struct cidr_label *labels;
	size_t n;
};

/* Built whole by cidr_table_new, read-only afterwards; owned by the caller
 * of cidr_table_new, lives until cidr_table_free. */
struct cidr_table {
	/* head.v4_octet_clear bit b set: no prefix covers any address with
	 * first octet b, so a lookup there is answered from this line of the
	 * table alone (inline, in cidr.h). First: cidr.h reads it there. */
	struct cidr_table_head head;
	struct cidr_index_v4 v4;
	struct cidr_index_v6 v6;
	size_t n_prefixes; /* distinct prefixes after duplicate removal */
};

_Static_assert(offsetof(struct cidr_table, head) == 0, "cidr.h reads the head at offset 0");

/* A prefix as an address interval during the build; freed before return. */
struct build_item {
	u128 start;
	u128 end;
	uint32_t value;
	uint8_t len;
	size_t order; /* input position: the last duplicate wins */
};

/* Range boundaries collected during the sweep; freed before return. */
struct build_out {
	u128 *starts;
	struct cidr_label *labels;
	size_t n;
};

static u128 bytes_to_u128(const uint8_t *p, unsigned nbytes)
{
	u128 v = 0;

	for (unsigned i = 0; i < nbytes; i++)
		v = (v << 8) | p[i];
	return v;
}

static int build_item_cmp(const void *pa, const void *pb)
{
	const struct build_item *a = pa, *b = pb;

	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return a->order < b->order ? -1 : (a->order > b->order);
}

/* Records that from `start` on, addresses resolve to `label`. A later
 * boundary at the same start supersedes the earlier one: it reflects the
 * state after every prefix beginning there has been opened. */
static void emit(struct build_out *o, u128 start, struct cidr_label label)
{
	if (o->n && o->starts[o->n - 1] == start) {
		o->labels[o->n - 1] = label;
		return;
	}
	o->starts[o->n] = start;
	o->labels[o->n] = label;
	o->n++;
}

static struct cidr_label label_of(const struct build_item *it)
{
	return (struct cidr_label){ .value = it->value, .len = it->len };
}

static const struct cidr_label no_label = { .value = 0, .len = -1 };

/* Sweeps sorted, duplicate-free prefixes (outer before inner at equal
 * start) into boundaries. Prefixes either nest or are disjoint, so an open
 * prefix stack holds the chain of prefixes containing the current point. */
static void sweep(const struct build_item *items, size_t n, u128 max_addr,
		  const struct build_item **stack, struct build_out *o)
{
	size_t depth = 0;

	emit(o, 0, no_label);
	for (size_t i = 0; i < n; i++) {
		while (depth && stack[depth - 1]->end < items[i].start) {
			const struct build_item *closed = stack[--depth];

			emit(o, closed->end + 1, depth ? label_of(stack[depth - 1]) : no_label);
		}
		emit(o, items[i].start, label_of(&items[i]));
		stack[depth++] = &items[i];
	}
	while (depth) {
		const struct build_item *closed = stack[--depth];

		/* Nested prefixes end no later than their parents, so once one
		 * reaches the top of the space, all the rest do too. */
		if (closed->end == max_addr)
			break;
		emit(o, closed->end + 1, depth ? label_of(stack[depth - 1]) : no_label);
	}

	/* Merge neighbours that resolve identically (including a boundary
	 * superseded into a copy of its predecessor). */
	size_t w = 1;
	for (size_t r = 1; r < o->n; r++) {
		if (o->labels[r].len == o->labels[w - 1].len &&
		    o->labels[r].value == o->labels[w - 1].value)
			continue;
		o->starts[w] = o->starts[r];
		o->labels[w] = o->labels[r];
		w++;
	}
	o->n = w;
}

/* Builds one family's boundaries from its items (sorted and deduplicated
 * here). Returns the number of distinct prefixes or -ENOMEM. */
static long build_family(struct build_item *items, size_t n, u128 max_addr, struct build_out *o)
{
	const struct build_item **stack = NULL;
	size_t distinct = 0;

	qsort(items, n, sizeof(*items), build_item_cmp);
	for (size_t i = 0; i < n; i++) {
		if (distinct && items[distinct - 1].start == items[i].start &&
		    items[distinct - 1].len == items[i].len)
			items[distinct - 1] = items[i];
		else
			items[distinct++] = items[i];
	}

	/* Each prefix adds at most two boundaries, plus the one at 0. */
	o->starts = malloc((2 * distinct + 1) * sizeof(*o->starts));
	o->labels = malloc((2 * distinct + 1) * sizeof(*o->labels));
	stack = malloc((distinct ? distinct : 1) * sizeof(*stack));
	if (!o->starts || !o->labels || !stack) {
		free(stack);
		return -ENOMEM;
	}
	o->n = 0;
	sweep(items, distinct, max_addr, stack, o);
	free(stack);
	return (long)distinct;
}

static int validate_prefix(const struct cidr *c)
{
	if (c->family != AF_INET && c->family != AF_INET6)
		return -EINVAL;
	if (c->prefix_len > family_bits(c->family))
		return -EINVAL;
	if (has_host_bits(c->addr, family_bits(c->family), c->prefix_len))
		return -EINVAL;
	return 0;
}

static size_t search_v4(const uint32_t *starts, size_t n, uint32_t key)
{
	const uint32_t *base = starts;

	while (n > 1) {
		size_t half = n / 2;

		base = base[half] <= key ? base + half : base;
		n -= half;
	}
	return (size_t)(base - starts);
}

int cidr_table_new(const struct cidr *prefixes, const uint32_t *values, size_t n,
		   struct cidr_table **ret)
{
	struct build_item *items4 = NULL, *items6 = NULL;
	struct build_out out4 = { 0 }, out6 = { 0 };
	struct cidr_table *t = NULL;
	size_t n4 = 0, n6 = 0;
	long d4, d6;
	int r;

	assert(ret);
	if (n > CIDR_MAX_PREFIXES)
		return -E2BIG;
	if (n && !prefixes)
		return -EINVAL;

	items4 = malloc((n ? n : 1) * sizeof(*items4));
	items6 = malloc((n ? n : 1) * sizeof(*items6));
	t = calloc(1, sizeof(*t));
	if (!items4 || !items6 || !t) {
		r = -ENOMEM;
		goto out_free;
	}

	for (size_t i = 0; i < n; i++) {
		struct cidr c = prefixes[i];
		struct build_item *it;
		unsigned bits;

		r = validate_prefix(&c);
		if (r < 0)
			goto out_free;
		normalize_prefix(&c);
		bits = family_bits(c.family);
		it = c.family == AF_INET ? &items4[n4++] : &items6[n6++];
		it->start = bytes_to_u128(c.addr, bits / 8);
		/* Host span of the prefix; shifting a u128 by 128 is undefined,
		 * so /0 is spelled out. */
		u128 span = c.prefix_len == 0 ? (bits == 128 ? ~(u128)0 : ((u128)1 << 32) - 1)
					      : (((u128)1 << (bits - c.prefix_len)) - 1);
		it->end = it->start + span;
		it->len = c.prefix_len;
		it->value = values ? values[i] : 0;
		it->order = i;
	}

	d4 = build_family(items4, n4, 0xffffffffu, &out4);
	if (d4 < 0) {
		r = (int)d4;
		goto out_free;
	}
	d6 = build_family(items6, n6, ~(u128)0, &out6);
	if (d6 < 0) {
		r = (int)d6;
		goto out_free;
	}

	/* IPv4 starts are narrowed to u32 so the hot search array stays
	 * compact; the labels are moved over as they are. */
	t->v4.starts = malloc(out4.n * sizeof(*t->v4.starts));
	if (!t->v4.starts) {
		r = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < out4.n; i++)
		t->v4.starts[i] = (uint32_t)out4.starts[i];
	t->v4.labels = out4.labels;
	t->v4.n = out4.n;
	for (uint32_t b = 0; b < 256; b++)
		t->v4.by_octet[b] = (uint32_t)search_v4(t->v4.starts, t->v4.n, b << 24);
	t->v4.by_octet[256] = (uint32_t)(t->v4.n - 1);
	for (uint32_t b = 0; b < 256; b++) {
		/* The octet's first and last ranges: clear when they are one
		 * unlabelled range (neighbours never share a label). Not
		 * by_octet[b + 1], which may start right at the next octet. */
		uint32_t lo = t->v4.by_octet[b];
		size_t last = search_v4(t->v4.starts, t->v4.n, b << 24 | 0xffffffu);

		if (lo == last && t->v4.labels[lo].len < 0)
			t->head.v4_octet_clear[b / 64] |= 1ull << (b % 64);
	}
	out4.labels = NULL;
	t->v6.starts = out6.starts;
	t->v6.labels = out6.labels;
	t->v6.n = out6.n;
	out6.starts = NULL;
	out6.labels = NULL;
	t->n_prefixes = (size_t)d4 + (size_t)d6;

	*ret = t;
	t = NULL;
	r = 0;
out_free:
	free(out4.starts);
	free(out4.labels);
	free(out6.starts);
	free(out6.labels);
	cidr_table_free(t);
	free(items4);
	free(items6);
	return r;
}

void cidr_table_free(struct cidr_table *t)
{
	if (!t)
		return;
	free(t->v4.starts);
	free(t->v4.labels);
	free(t->v6.starts);
	free(t->v6.labels);
	free(t);
}

size_t cidr_table_size(const struct cidr_table *t)
{
	assert(t);
	return t->n_prefixes;
}

/* Index of the last start <= key. starts[0] is 0, so it always exists. The
 * loop halves the window without a data-dependent branch (a cmov), which
 * keeps the pipeline full on unpredictable keys. */
static size_t search_v6(const u128 *starts, size_t n, u128 key)
{
	const u128 *base = starts;

	while (n > 1) {
		size_t half = n / 2;

		base = base[half] <= key ? base + half : base;
		n -= half;
	}
	return (size_t)(base - starts);
}

int cidr_table_lookup(const struct cidr_table *t, const struct cidr_addr *a, uint32_t *value)
{
	const struct cidr_label *label;

	assert(t && a);
	if (a->family == AF_INET || (a->family == AF_INET6 && is_v4_mapped(a->addr))) {
		const uint8_t *p = a->family == AF_INET ? a->addr : a->addr + 12;
		uint32_t key = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
			       (uint32_t)p[2] << 8 | p[3];

		const struct cidr_index_v4 *x = &t->v4;
		uint32_t octet = key >> 24, lo, hi;

		if (t->head.v4_octet_clear[octet / 64] >> (octet % 64) & 1)
			return -ENOENT;
		lo = x->by_octet[octet];
		hi = x->by_octet[octet + 1];

		/* Most first octets hold one range (no boundary inside): no
		 * search, and the starts array is not even read. */
		label = &x->labels[lo == hi ? lo : lo + search_v4(x->starts + lo, hi - lo + 1, key)];
	} else if (a->family == AF_INET6) {
		label = &t->v6.labels[search_v6(t->v6.starts, t->v6.n, bytes_to_u128(a->addr, 16))];
	} else {
		return -ENOENT;
	}
	if (label->len < 0)
		return -ENOENT;
	if (value)
		*value = label->value;
	return label->len;
}
