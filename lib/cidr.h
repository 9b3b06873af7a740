/* cidr.h - IPv4/IPv6 prefixes and an immutable longest-prefix-match table.
 *
 * A cidr_table is built once from a list of prefixes and never changes; a
 * lookup is a binary search over disjoint address ranges, each labelled with
 * the longest prefix covering it, so it costs O(log n) with no allocation
 * and no locks. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are looked up as
 * IPv4.
 */
#ifndef SLUICE_CIDR_H
#define SLUICE_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An address: family AF_INET (addr[0..3], network order) or AF_INET6. */
struct cidr_addr {
	uint8_t family;
	uint8_t addr[16];
};

/* A prefix; host bits beyond prefix_len are always zero. */
struct cidr {
	uint8_t family;
	uint8_t prefix_len; /* 0..32 or 0..128 */
	uint8_t addr[16];
};

/* Parses "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128).
 * Strict: host bits set, a prefix length out of range or leading zeros in it,
 * and anything inet_pton refuses are -EINVAL with a short reason in *why
 * (static string; e.g. "host bits set beyond /8"). */
int cidr_parse(const char *s, struct cidr *out, const char **why);
/* Parses an address without prefix. -EINVAL. A v4-mapped IPv6 address
 * (::ffff:a.b.c.d) comes back as AF_INET. */
int cidr_addr_parse(const char *s, struct cidr_addr *out);
/* From a sockaddr_in / sockaddr_in6; v4-mapped v6 becomes AF_INET. */
int cidr_addr_from_sockaddr(const struct sockaddr *sa, struct cidr_addr *out);
/* "10.0.0.0/8"; returns what snprintf returns (-EINVAL for a bad family). */
int cidr_format(const struct cidr *c, char *buf, size_t len);
/* Families must match after v4-mapped addresses become IPv4; a prefix
 * inside ::ffff:0:0/96 matches as the IPv4 prefix it maps (so ::/0 does not
 * contain IPv4 addresses). */
bool cidr_contains(const struct cidr *c, const struct cidr_addr *a);

/* Immutable LPM table. */
struct cidr_table;

/* Builds a table from n prefixes with a caller value each (duplicates: the
 * last value wins). Returns 0, -ENOMEM, -E2BIG (n > 1 << 20). Also -EINVAL
 * for a prefix with a bad family, length or host bits set. `values` may be
 * NULL (every value 0). Prefixes inside ::ffff:0:0/96 are stored as the
 * IPv4 prefixes they map, so lookups report their IPv4 length. */
int cidr_table_new(const struct cidr *prefixes, const uint32_t *values, size_t n,
		   struct cidr_table **ret);
void cidr_table_free(struct cidr_table *t); /* accepts NULL */
/* Longest prefix containing `a`: returns its length (>= 0) and its value in
 * *value (may be NULL), or -ENOENT. */
int cidr_table_lookup(const struct cidr_table *t, const struct cidr_addr *a, uint32_t *value);
size_t cidr_table_size(const struct cidr_table *t); /* distinct prefixes it holds */

/* The first field of every cidr_table, read by cidr_table_surely_misses():
 * bit b of v4_octet_clear set when no prefix covers any IPv4 address with
 * first octet b. Set when the table is built; read it through that
 * function only. */
struct cidr_table_head {
	uint64_t v4_octet_clear[4];
};

/* True when no prefix of t contains `a`, known from a's first octet alone
 * (an IPv4 address, not a v4-mapped IPv6 one); false says nothing:
 * cidr_table_lookup() then decides. Inline for the request path, where
 * most addresses are in no list: no call, one cache line of the table. */
static inline bool cidr_table_surely_misses(const struct cidr_table *t, const struct cidr_addr *a)
{
	const struct cidr_table_head *h = (const struct cidr_table_head *)(const void *)t;

	return a->family == AF_INET && (h->v4_octet_clear[a->addr[0] / 64] >> (a->addr[0] % 64) & 1);
}

#endif
