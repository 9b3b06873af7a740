/* cidr_test.c - prefix parsing, formatting, matching and the LPM table.
 *
 * Parser inputs sit at the very end of a page followed by a PROT_NONE page,
 * so reading one byte past the terminating NUL crashes the test. The table
 * is checked against a brute-force reference on random nested prefix sets
 * (fixed seed, so a failure reproduces).
 */
#include <criterion/criterion.h>

#include "fixture.h"
#include <criterion/parameterized.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "cidr.h"

__extension__ typedef unsigned __int128 u128;

/* ---- guard page --------------------------------------------------------- */

/* Copies s so that its NUL is the last readable byte before a PROT_NONE
 * page. One mapping per test process, reused by every call, so the result
 * is valid until the next call. */
static const char *guarded(const char *s)
{
	static char *mem;
	static long page;
	size_t len = strlen(s) + 1;

	if (!mem) {
		page = sysconf(_SC_PAGESIZE);
		mem = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert_neq(mem, MAP_FAILED);
		cr_assert_eq(mprotect(mem + page, (size_t)page, PROT_NONE), 0);
	}
	cr_assert((long)len <= page);
	memcpy(mem + page - len, s, len);
	return mem + page - len;
}

/* ---- cidr_parse table --------------------------------------------------- */

/* Params are copied by value (fixed arrays, no pointers) so they survive
 * Criterion's per-test process. */
struct parse_case {
	char name[48];
	char input[80];
	int ok;
	int family;
	int prefix_len;
	char canonical[64]; /* cidr_format output when ok */
	char why[48];       /* expected reason when !ok */
};

#define OK(n, in, fam, len, canon) { n, in, 1, fam, len, canon, "" }
#define BAD(n, in, reason) { n, in, 0, 0, 0, "", reason }

/* 56 and 57 ones after "1.2.3.4/" make inputs of exactly 64 and 65 chars. */
#define ONES56 "11111111111111111111111111111111111111111111111111111111"

static struct parse_case parse_cases[] = {
	OK("v4 /8", "10.0.0.0/8", AF_INET, 8, "10.0.0.0/8"),
	OK("v4 bare is /32", "10.1.2.3", AF_INET, 32, "10.1.2.3/32"),
	OK("v4 /0", "0.0.0.0/0", AF_INET, 0, "0.0.0.0/0"),
	OK("v4 explicit /32", "255.255.255.255/32", AF_INET, 32, "255.255.255.255/32"),
	OK("v4 /31", "192.168.1.2/31", AF_INET, 31, "192.168.1.2/31"),
	OK("v6 /32", "2001:db8::/32", AF_INET6, 32, "2001:db8::/32"),
	OK("v6 bare is /128", "::1", AF_INET6, 128, "::1/128"),
	OK("v6 /0", "::/0", AF_INET6, 0, "::/0"),
	OK("v6 upper case is canonicalised", "2001:DB8:0:0::/64", AF_INET6, 64, "2001:db8::/64"),
	OK("v6 all ones /128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", AF_INET6, 128,
	   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
	OK("v6 v4-mapped prefix stays v6", "::ffff:10.0.0.0/104", AF_INET6, 104, "::ffff:10.0.0.0/104"),
	OK("v6 odd prefix length", "2001:db8:8000::/33", AF_INET6, 33, "2001:db8:8000::/33"),

	BAD("empty", "", "empty input"),
	BAD("v4 host bits", "10.0.0.1/8", "host bits set beyond /8"),
	BAD("v4 host bits /0", "10.0.0.0/0", "host bits set beyond /0"),
	BAD("v4 host bits /31", "192.168.1.3/31", "host bits set beyond /31"),
	BAD("v6 host bits", "2001:db8::1/32", "host bits set beyond /32"),
	BAD("v6 host bits /127", "::1/127", "host bits set beyond /127"),
	BAD("v4 prefix 33", "10.0.0.0/33", "prefix length out of range"),
	BAD("v6 prefix 129", "::/129", "prefix length out of range"),
	BAD("v4 prefix 1000", "10.0.0.0/1000", "prefix length out of range"),
	BAD("huge prefix does not overflow", "0.0.0.0/99999999999999999999", "prefix length out of range"),
	BAD("leading zero", "10.0.0.0/08", "bad prefix length"),
	BAD("double zero", "0.0.0.0/00", "bad prefix length"),
	BAD("plus sign", "10.0.0.0/+8", "bad prefix length"),
	BAD("minus sign", "10.0.0.0/-8", "bad prefix length"),
	BAD("space before length", "10.0.0.0/ 8", "bad prefix length"),
	BAD("space after length", "10.0.0.0/8 ", "bad prefix length"),
	BAD("empty length", "10.0.0.0/", "bad prefix length"),
	BAD("two slashes", "10.0.0.0/8/8", "bad prefix length"),
	BAD("hex length", "10.0.0.0/0x8", "bad prefix length"),
	BAD("leading space", " 10.0.0.0/8", "not an IPv4 or IPv6 address"),
	BAD("space before slash", "10.0.0.0 /8", "not an IPv4 or IPv6 address"),
	BAD("three octets", "10.0.0/8", "not an IPv4 or IPv6 address"),
	BAD("octet leading zero", "010.0.0.0/8", "not an IPv4 or IPv6 address"),
	BAD("octet 256", "1.2.3.256", "not an IPv4 or IPv6 address"),
	BAD("word", "localhost", "not an IPv4 or IPv6 address"),
	BAD("slash only", "/8", "not an IPv4 or IPv6 address"),
	BAD("v6 two double colons", "1::2::3", "not an IPv4 or IPv6 address"),
	BAD("v6 bad group", "2001:db8:12345::/48", "not an IPv4 or IPv6 address"),
	BAD("v6 zone id", "fe80::1%eth0", "IPv6 zone ids are not allowed"),
	BAD("v6 zone id with prefix", "fe80::%eth0/64", "IPv6 zone ids are not allowed"),
	BAD("64 chars is read", "1.2.3.4/" ONES56, "prefix length out of range"),
	BAD("65 chars is too long", "1.2.3.4/1" ONES56, "longer than 64 characters"),
};

ParameterizedTestParameters(cidr_parse, table)
{
	return cr_make_param_array(struct parse_case, parse_cases,
				   sizeof(parse_cases) / sizeof(parse_cases[0]));
}

ParameterizedTest(struct parse_case *tc, cidr_parse, table)
{
	struct cidr c, sentinel;
	const char *why = "untouched";
	char text[64];
	int r;

	memset(&c, 0xab, sizeof(c));
	sentinel = c;
	r = cidr_parse(guarded(tc->input), &c, &why);
	if (!tc->ok) {
		cr_assert_eq(r, -EINVAL, "%s: r=%d", tc->name, r);
		cr_assert_str_eq(why, tc->why, "%s", tc->name);
		cr_assert_eq(memcmp(&c, &sentinel, sizeof(c)), 0, "%s: *out written on failure", tc->name);
		return;
	}
	cr_assert_eq(r, 0, "%s: r=%d why=%s", tc->name, r, why);
	cr_assert_str_eq(why, "untouched", "%s: why written on success", tc->name);
	cr_assert_eq(c.family, tc->family, "%s", tc->name);
	cr_assert_eq(c.prefix_len, tc->prefix_len, "%s", tc->name);
	cr_assert_eq(cidr_format(&c, text, sizeof(text)), (int)strlen(tc->canonical), "%s", tc->name);
	cr_assert_str_eq(text, tc->canonical, "%s", tc->name);
}

Test(cidr_parse, accepts_null_why)
{
	struct cidr c;

	cr_assert_eq(cidr_parse(guarded("10.0.0.1/8"), &c, NULL), -EINVAL);
	cr_assert_eq(cidr_parse(guarded("10.0.0.0/8"), &c, NULL), 0);
	cr_assert_eq(c.prefix_len, 8);
}

Test(cidr_parse, zeroes_unused_v4_bytes)
{
	struct cidr c;
	static const uint8_t want[16] = { 192, 168, 0, 0 };

	memset(&c, 0xff, sizeof(c));
	cr_assert_eq(cidr_parse(guarded("192.168.0.0/16"), &c, NULL), 0);
	cr_assert_eq(memcmp(c.addr, want, 16), 0);
}

/* ---- cidr_addr_parse ---------------------------------------------------- */

/* One table row; static, copied by value into each test process. */
struct addr_case {
	char name[40];
	char input[80];
	int ret;
	int family;
	char bytes_hex[40]; /* expected addr[0..15] as hex when ret == 0 */
};

static struct addr_case addr_cases[] = {
	{ "v4", "10.1.2.3", 0, AF_INET, "0a010203000000000000000000000000" },
	{ "v6", "2001:db8::1", 0, AF_INET6, "20010db8000000000000000000000001" },
	{ "v4-mapped becomes v4", "::ffff:192.0.2.1", 0, AF_INET, "c0000201000000000000000000000000" },
	{ "v4-compatible stays v6", "::192.0.2.1", 0, AF_INET6, "000000000000000000000000c0000201" },
	{ "prefix refused", "10.0.0.0/8", -EINVAL, 0, "" },
	{ "prefix /32 refused", "10.0.0.1/32", -EINVAL, 0, "" },
	{ "empty refused", "", -EINVAL, 0, "" },
	{ "garbage refused", "10.0.0.x", -EINVAL, 0, "" },
	{ "zone refused", "fe80::1%lo", -EINVAL, 0, "" },
};

ParameterizedTestParameters(cidr_addr_parse, table)
{
	return cr_make_param_array(struct addr_case, addr_cases,
				   sizeof(addr_cases) / sizeof(addr_cases[0]));
}

ParameterizedTest(struct addr_case *tc, cidr_addr_parse, table)
{
	struct cidr_addr a, sentinel;
	char hex[33];

	memset(&a, 0xab, sizeof(a));
	sentinel = a;
	cr_assert_eq(cidr_addr_parse(guarded(tc->input), &a), tc->ret, "%s", tc->name);
	if (tc->ret) {
		cr_assert_eq(memcmp(&a, &sentinel, sizeof(a)), 0, "%s: *out written", tc->name);
		return;
	}
	cr_assert_eq(a.family, tc->family, "%s", tc->name);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", a.addr[i]);
	cr_assert_str_eq(hex, tc->bytes_hex, "%s", tc->name);
}

/* ---- cidr_addr_from_sockaddr -------------------------------------------- */

Test(cidr_sockaddr, converts_ipv4)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(80) };
	struct cidr_addr a;

	inet_pton(AF_INET, "198.51.100.7", &sin.sin_addr);
	cr_assert_eq(cidr_addr_from_sockaddr((struct sockaddr *)&sin, &a), 0);
	cr_assert_eq(a.family, AF_INET);
	cr_assert_eq(memcmp(a.addr, (uint8_t[]){ 198, 51, 100, 7 }, 4), 0);
}

Test(cidr_sockaddr, converts_ipv6)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct cidr_addr a;

	inet_pton(AF_INET6, "2001:db8::42", &sin6.sin6_addr);
	cr_assert_eq(cidr_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
	cr_assert_eq(a.family, AF_INET6);
	cr_assert_eq(memcmp(a.addr, &sin6.sin6_addr, 16), 0);
}

Test(cidr_sockaddr, v4_mapped_becomes_ipv4)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct cidr_addr a;
	struct cidr net;

	inet_pton(AF_INET6, "::ffff:10.9.8.7", &sin6.sin6_addr);
	cr_assert_eq(cidr_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
	cr_assert_eq(a.family, AF_INET);
	cr_assert_eq(memcmp(a.addr, (uint8_t[]){ 10, 9, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 16), 0);
	cr_assert_eq(cidr_parse("10.0.0.0/8", &net, NULL), 0);
	cr_assert(cidr_contains(&net, &a));
}

Test(cidr_sockaddr, refuses_other_families)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct cidr_addr a, sentinel;

	memset(&a, 0xab, sizeof(a));
	sentinel = a;
	cr_assert_eq(cidr_addr_from_sockaddr((struct sockaddr *)&sun, &a), -EAFNOSUPPORT);
	cr_assert_eq(memcmp(&a, &sentinel, sizeof(a)), 0);
}

/* ---- cidr_format -------------------------------------------------------- */

Test(cidr_format, reports_full_length_when_truncated)
{
	struct cidr c;
	char small[6];

	cr_assert_eq(cidr_parse("192.168.100.0/24", &c, NULL), 0);
	cr_assert_eq(cidr_format(&c, small, sizeof(small)), 16);
	cr_assert_str_eq(small, "192.1");
	cr_assert_eq(cidr_format(&c, NULL, 0), 16);
}

Test(cidr_format, refuses_bad_family)
{
	struct cidr c = { .family = AF_UNIX };
	char buf[64];

	cr_assert_eq(cidr_format(&c, buf, sizeof(buf)), -EINVAL);
}

/* ---- cidr_contains ------------------------------------------------------ */

/* One table row; static, copied by value into each test process. */
struct contains_case {
	char prefix[48];
	char addr[48];
	int want;
};

static struct contains_case contains_cases[] = {
	{ "10.0.0.0/8", "10.0.0.0", 1 },
	{ "10.0.0.0/8", "10.255.255.255", 1 },
	{ "10.0.0.0/8", "11.0.0.0", 0 },
	{ "10.0.0.0/8", "9.255.255.255", 0 },
	{ "10.128.0.0/9", "10.127.255.255", 0 },
	{ "10.128.0.0/9", "10.128.0.0", 1 },
	{ "0.0.0.0/0", "255.255.255.255", 1 },
	{ "10.1.2.3", "10.1.2.3", 1 },
	{ "10.1.2.3", "10.1.2.4", 0 },
	{ "0.0.0.0/0", "::1", 0 },
	{ "::/0", "1.2.3.4", 0 },
	{ "::/0", "::1", 1 },
	{ "2001:db8::/32", "2001:db8:ffff:ffff::1", 1 },
	{ "2001:db8::/32", "2001:db9::", 0 },
	{ "2001:db8:8000::/33", "2001:db8:7fff::", 0 },
	{ "2001:db8:8000::/33", "2001:db8:8000::", 1 },
	{ "::1", "::1", 1 },
	{ "::1", "::2", 0 },
	{ "10.0.0.0/8", "::ffff:10.1.1.1", 1 },
	{ "::ffff:10.0.0.0/104", "10.2.3.4", 1 },
	{ "::ffff:10.0.0.0/104", "11.0.0.0", 0 },
	{ "::ffff:0.0.0.0/96", "203.0.113.9", 1 },
};

ParameterizedTestParameters(cidr_contains, table)
{
	return cr_make_param_array(struct contains_case, contains_cases,
				   sizeof(contains_cases) / sizeof(contains_cases[0]));
}

ParameterizedTest(struct contains_case *tc, cidr_contains, table)
{
	struct cidr c;
	struct cidr_addr a;

	cr_assert_eq(cidr_parse(tc->prefix, &c, NULL), 0, "%s", tc->prefix);
	cr_assert_eq(cidr_addr_parse(tc->addr, &a), 0, "%s", tc->addr);
	cr_assert_eq(cidr_contains(&c, &a), (bool)tc->want, "%s in %s", tc->addr, tc->prefix);
}

Test(cidr_contains, raw_v4_mapped_address_matches_ipv4_prefix)
{
	struct cidr c;
	struct cidr_addr a = { .family = AF_INET6 };

	inet_pton(AF_INET6, "::ffff:10.1.2.3", a.addr);
	cr_assert_eq(cidr_parse("10.0.0.0/8", &c, NULL), 0);
	cr_assert(cidr_contains(&c, &a));
	cr_assert_eq(cidr_parse("::/0", &c, NULL), 0);
	cr_assert_not(cidr_contains(&c, &a));
}

/* ---- table: fixed cases ------------------------------------------------- */

static struct cidr P(const char *s)
{
	struct cidr c;
	const char *why = NULL;

	cr_assert_eq(cidr_parse(s, &c, &why), 0, "%s: %s", s, why);
	return c;
}

static struct cidr_addr A(const char *s)
{
	struct cidr_addr a;

	cr_assert_eq(cidr_addr_parse(s, &a), 0, "%s", s);
	return a;
}

static int lookup(const struct cidr_table *t, const char *addr, uint32_t *value)
{
	struct cidr_addr a = A(addr);

	return cidr_table_lookup(t, &a, value);
}

Test(cidr_table, empty_table_matches_nothing)
{
	struct cidr_table *t = NULL;
	uint32_t v = 99;

	cr_assert_eq(cidr_table_new(NULL, NULL, 0, &t), 0);
	cr_assert_eq(cidr_table_size(t), 0);
	cr_assert_eq(lookup(t, "0.0.0.0", &v), -ENOENT);
	cr_assert_eq(lookup(t, "255.255.255.255", &v), -ENOENT);
	cr_assert_eq(lookup(t, "::", &v), -ENOENT);
	cr_assert_eq(lookup(t, "2001:db8::1", &v), -ENOENT);
	cr_assert_eq(v, 99);
	cidr_table_free(t);
}

Test(cidr_table, free_accepts_null)
{
	cidr_table_free(NULL);
}

Test(cidr_table, refuses_more_than_a_million_prefixes)
{
	struct cidr dummy = { .family = AF_INET };
	struct cidr_table *t = (struct cidr_table *)0x1;

	/* The count is checked before the array is read. */
	cr_assert_eq(cidr_table_new(&dummy, NULL, ((size_t)1 << 20) + 1, &t), -E2BIG);
	cr_assert_eq(t, (struct cidr_table *)0x1);
}

Test(cidr_table, holds_exactly_a_million_prefixes)
{
	size_t n = (size_t)1 << 20;
	struct cidr *p = calloc(n, sizeof(*p));
	uint32_t *v = calloc(n, sizeof(*v));
	struct cidr_table *t;
	struct cidr_addr a = { .family = AF_INET };
	uint32_t got;

	cr_assert(p && v);
	for (size_t i = 0; i < n; i++) {
		/* 10.0.0.0/12 split into /32s, every other one present. */
		uint32_t ip = 0x0a000000u + 2 * (uint32_t)i;

		p[i].family = AF_INET;
		p[i].prefix_len = 32;
		p[i].addr[0] = (uint8_t)(ip >> 24);
		p[i].addr[1] = (uint8_t)(ip >> 16);
		p[i].addr[2] = (uint8_t)(ip >> 8);
		p[i].addr[3] = (uint8_t)ip;
		v[i] = (uint32_t)i;
	}
	cr_assert_eq(cidr_table_new(p, v, n, &t), 0);
	free(p);
	free(v);
	cr_assert_eq(cidr_table_size(t), n);
	memcpy(a.addr, (uint8_t[]){ 10, 0, 0x30, 0x3a }, 4);
	cr_assert_eq(cidr_table_lookup(t, &a, &got), 32);
	cr_assert_eq(got, 0x303a / 2);
	a.addr[3] = 0x3b;
	cr_assert_eq(cidr_table_lookup(t, &a, &got), -ENOENT);
	cidr_table_free(t);
}

Test(cidr_table, refuses_invalid_prefixes)
{
	struct cidr bad[3] = { P("10.0.0.0/8"), P("10.0.0.0/8"), P("10.0.0.0/8") };
	struct cidr_table *t = (struct cidr_table *)0x1;

	bad[1].addr[3] = 1; /* host bits */
	cr_assert_eq(cidr_table_new(bad, NULL, 3, &t), -EINVAL);
	bad[1] = P("10.0.0.0/8");
	bad[2].prefix_len = 33;
	cr_assert_eq(cidr_table_new(bad, NULL, 3, &t), -EINVAL);
	bad[2] = P("10.0.0.0/8");
	bad[0].family = AF_UNIX;
	cr_assert_eq(cidr_table_new(bad, NULL, 3, &t), -EINVAL);
	cr_assert_eq(t, (struct cidr_table *)0x1);
}

Test(cidr_table, longest_nested_prefix_wins)
{
	struct cidr p[] = { P("10.1.2.0/24"), P("10.0.0.0/8"), P("10.1.0.0/16"), P("10.1.2.3") };
	uint32_t v[] = { 24, 8, 16, 32 };
	struct cidr_table *t;
	uint32_t got;

	cr_assert_eq(cidr_table_new(p, v, 4, &t), 0);
	cr_assert_eq(cidr_table_size(t), 4);
	cr_assert_eq(lookup(t, "10.1.2.3", &got), 32);
	cr_assert_eq(got, 32);
	cr_assert_eq(lookup(t, "10.1.2.4", &got), 24);
	cr_assert_eq(got, 24);
	cr_assert_eq(lookup(t, "10.1.2.2", &got), 24);
	cr_assert_eq(lookup(t, "10.1.3.0", &got), 16);
	cr_assert_eq(got, 16);
	cr_assert_eq(lookup(t, "10.1.1.255", &got), 16);
	cr_assert_eq(lookup(t, "10.2.0.0", &got), 8);
	cr_assert_eq(got, 8);
	cr_assert_eq(lookup(t, "10.0.255.255", &got), 8);
	cr_assert_eq(lookup(t, "9.255.255.255", &got), -ENOENT);
	cr_assert_eq(lookup(t, "11.0.0.0", &got), -ENOENT);
	cr_assert_eq(lookup(t, "10.1.2.3", NULL), 32);
	cidr_table_free(t);
}

Test(cidr_table, duplicates_last_value_wins)
{
	struct cidr p[] = { P("192.168.0.0/16"), P("2001:db8::/32"), P("192.168.0.0/16"),
			    P("2001:db8::/32"), P("192.168.0.0/16") };
	uint32_t v[] = { 1, 2, 3, 4, 5 };
	struct cidr_table *t;
	uint32_t got;

	cr_assert_eq(cidr_table_new(p, v, 5, &t), 0);
	cr_assert_eq(cidr_table_size(t), 2);
	cr_assert_eq(lookup(t, "192.168.7.7", &got), 16);
	cr_assert_eq(got, 5);
	cr_assert_eq(lookup(t, "2001:db8::7", &got), 32);
	cr_assert_eq(got, 4);
	cidr_table_free(t);
}

Test(cidr_table, null_values_mean_zero)
{
	struct cidr p[] = { P("10.0.0.0/8") };
	struct cidr_table *t;
	uint32_t got = 77;

	cr_assert_eq(cidr_table_new(p, NULL, 1, &t), 0);
	cr_assert_eq(lookup(t, "10.0.0.1", &got), 8);
	cr_assert_eq(got, 0);
	cidr_table_free(t);
}

Test(cidr_table, v4_edges_of_the_space)
{
	struct cidr p[] = { P("0.0.0.0/0"), P("0.0.0.0/32"), P("255.255.255.255/32"),
			    P("128.0.0.0/1") };
	uint32_t v[] = { 100, 101, 102, 103 };
	struct cidr_table *t;
	uint32_t got;

	cr_assert_eq(cidr_table_new(p, v, 4, &t), 0);
	cr_assert_eq(lookup(t, "0.0.0.0", &got), 32);
	cr_assert_eq(got, 101);
	cr_assert_eq(lookup(t, "0.0.0.1", &got), 0);
	cr_assert_eq(got, 100);
	cr_assert_eq(lookup(t, "127.255.255.255", &got), 0);
	cr_assert_eq(lookup(t, "128.0.0.0", &got), 1);
	cr_assert_eq(got, 103);
	cr_assert_eq(lookup(t, "255.255.255.254", &got), 1);
	cr_assert_eq(lookup(t, "255.255.255.255", &got), 32);
	cr_assert_eq(got, 102);
	/* IPv4 /0 says nothing about IPv6. */
	cr_assert_eq(lookup(t, "::", &got), -ENOENT);
	cidr_table_free(t);
}

Test(cidr_table, v6_edges_of_the_space)
{
	struct cidr p[] = { P("::/0"), P("::/128"), P("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
			    P("8000::/1"), P("2001:db8::/64") };
	uint32_t v[] = { 200, 201, 202, 203, 204 };
	struct cidr_table *t;
	uint32_t got;

	cr_assert_eq(cidr_table_new(p, v, 5, &t), 0);
	cr_assert_eq(lookup(t, "::", &got), 128);
	cr_assert_eq(got, 201);
	cr_assert_eq(lookup(t, "::2", &got), 0);
	cr_assert_eq(got, 200);
	cr_assert_eq(lookup(t, "2001:db8::ffff", &got), 64);
	cr_assert_eq(got, 204);
	cr_assert_eq(lookup(t, "2001:db8:0:1::", &got), 0);
	cr_assert_eq(lookup(t, "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &got), 0);
	cr_assert_eq(lookup(t, "8000::", &got), 1);
	cr_assert_eq(got, 203);
	cr_assert_eq(lookup(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", &got), 1);
	cr_assert_eq(lookup(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &got), 128);
	cr_assert_eq(got, 202);
	/* ::/0 does not cover IPv4, mapped or not. */
	cr_assert_eq(lookup(t, "10.0.0.1", &got), -ENOENT);
	cr_assert_eq(lookup(t, "::ffff:10.0.0.1", &got), -ENOENT);
	cidr_table_free(t);
}

Test(cidr_table, raw_v4_mapped_address_is_looked_up_as_ipv4)
{
	struct cidr p[] = { P("10.0.0.0/8"), P("::/0") };
	uint32_t v[] = { 4, 6 };
	struct cidr_table *t;
	struct cidr_addr a = { .family = AF_INET6 };
	uint32_t got;

	cr_assert_eq(cidr_table_new(p, v, 2, &t), 0);
	/* Built from raw bytes, so not normalised by cidr_addr_parse. */
	inet_pton(AF_INET6, "::ffff:10.1.2.3", a.addr);
	cr_assert_eq(cidr_table_lookup(t, &a, &got), 8);
	cr_assert_eq(got, 4);
	inet_pton(AF_INET6, "::ffff:11.1.2.3", a.addr);
	cr_assert_eq(cidr_table_lookup(t, &a, &got), -ENOENT);
	cidr_table_free(t);
}

Test(cidr_table, v4_mapped_prefix_is_stored_as_ipv4)
{
	struct cidr p[] = { P("::ffff:192.168.0.0/112"), P("192.168.0.0/16") };
	uint32_t v[] = { 1, 2 };
	struct cidr_table *t;
	uint32_t got;

	cr_assert_eq(cidr_table_new(p, v, 2, &t), 0);
	/* Same prefix spelled twice: one entry, the later value. */
	cr_assert_eq(cidr_table_size(t), 1);
	cr_assert_eq(lookup(t, "192.168.3.4", &got), 16);
	cr_assert_eq(got, 2);
	cidr_table_free(t);
}

Test(cidr_table, unknown_family_matches_nothing)
{
	struct cidr p[] = { P("0.0.0.0/0"), P("::/0") };
	struct cidr_table *t;
	struct cidr_addr a = { .family = AF_UNIX };

	cr_assert_eq(cidr_table_new(p, NULL, 2, &t), 0);
	cr_assert_eq(cidr_table_lookup(t, &a, NULL), -ENOENT);
	cidr_table_free(t);
}

/* ---- table: random sets against a brute-force reference ----------------- */

static uint64_t rnd(void)
{
	return fixture_rand();
}

static u128 rnd128(void)
{
	return (u128)rnd() << 64 | rnd();
}

static u128 mask_of(unsigned bits, unsigned len)
{
	u128 all = bits == 128 ? ~(u128)0 : (((u128)1 << bits) - 1);

	if (len == 0)
		return 0;
	return all & ~((((u128)1) << (bits - len)) - 1) & all;
}

static void to_bytes(u128 v, unsigned bits, uint8_t *out)
{
	memset(out, 0, 16);
	for (unsigned i = 0; i < bits / 8; i++)
		out[i] = (uint8_t)(v >> (bits - 8 * (i + 1)));
}

/* A reference prefix in integer form; lives for one random round. */
struct ref_prefix {
	u128 net;
	unsigned len;
	uint32_t value;
};

static int ref_lookup(const struct ref_prefix *r, size_t n, unsigned bits, u128 addr, uint32_t *value)
{
	int best = -ENOENT;

	for (size_t i = 0; i < n; i++) {
		u128 m = mask_of(bits, r[i].len);

		/* >= so that the later of two equal prefixes wins. */
		if ((addr & m) == r[i].net && (int)r[i].len >= best) {
			best = (int)r[i].len;
			*value = r[i].value;
		}
	}
	return best;
}

/* Fills n random prefixes of one family, clustered around a few anchors so
 * that nesting, adjacency and duplicates are common. */
static void random_prefixes(unsigned bits, size_t n, const u128 *anchors, size_t n_anchors,
			    struct ref_prefix *ref, struct cidr *p, uint32_t *v)
{
	for (size_t i = 0; i < n; i++) {
		u128 base = anchors[rnd() % n_anchors];
		unsigned len;

		switch (rnd() % 8) {
		case 0: len = 0; break;
		case 1: len = bits; break;
		default: len = (unsigned)(rnd() % (bits + 1)); break;
		}
		/* Flip a few low bits so siblings appear next to each other. */
		if (rnd() % 2)
			base ^= (u128)(rnd() % 16) << (rnd() % bits);
		if (bits == 32)
			base &= 0xffffffffu;
		ref[i].net = base & mask_of(bits, len);
		ref[i].len = len;
		ref[i].value = (uint32_t)rnd();
		p[i].family = bits == 32 ? AF_INET : AF_INET6;
		p[i].prefix_len = (uint8_t)len;
		to_bytes(ref[i].net, bits, p[i].addr);
		v[i] = ref[i].value;
	}
}

static u128 probe_address(unsigned bits, const struct ref_prefix *ref, size_t n,
			  const u128 *anchors, size_t n_anchors)
{
	u128 all = bits == 128 ? ~(u128)0 : (((u128)1 << bits) - 1);
	u128 a;

	switch (rnd() % 6) {
	case 0: /* anywhere */
		a = rnd128();
		break;
	case 1: /* near an anchor */
		a = anchors[rnd() % n_anchors] ^ ((u128)rnd() >> (rnd() % 64));
		break;
	case 2: /* the first address of a prefix, or just before it */
		a = n ? ref[rnd() % n].net - (rnd() % 2) : 0;
		break;
	case 3: /* the last address of a prefix, or just after it */
		if (n) {
			const struct ref_prefix *r = &ref[rnd() % n];
			a = (r->net | (all & ~mask_of(bits, r->len))) + (rnd() % 2);
		} else {
			a = all;
		}
		break;
	case 4:
		a = 0;
		break;
	default:
		a = all;
		break;
	}
	return a & all;
}

static void check_random_family(unsigned bits, size_t rounds, size_t max_prefixes, size_t probes)
{
	struct ref_prefix *ref = calloc(max_prefixes, sizeof(*ref));
	struct cidr *p = calloc(max_prefixes, sizeof(*p));
	uint32_t *v = calloc(max_prefixes, sizeof(*v));

	cr_assert(ref && p && v);
	for (size_t round = 0; round < rounds; round++) {
		u128 anchors[4];
		size_t n = (size_t)(rnd() % (max_prefixes + 1));
		struct cidr_table *t;

		for (size_t i = 0; i < 4; i++)
			anchors[i] = rnd128();
		random_prefixes(bits, n, anchors, 4, ref, p, v);
		cr_assert_eq(cidr_table_new(p, v, n, &t), 0);

		for (size_t k = 0; k < probes; k++) {
			u128 x = probe_address(bits, ref, n, anchors, 4);
			struct cidr_addr a = { .family = bits == 32 ? AF_INET : AF_INET6 };
			uint32_t want_v = 0, got_v = 0;
			int want, got;

			to_bytes(x, bits, a.addr);
			want = ref_lookup(ref, n, bits, x, &want_v);
			got = cidr_table_lookup(t, &a, &got_v);
			cr_assert_eq(got, want, "round %zu probe %zu: len %d want %d", round, k, got, want);
			if (want >= 0)
				cr_assert_eq(got_v, want_v, "round %zu probe %zu: value", round, k);
		}
		cidr_table_free(t);
	}
	free(ref);
	free(p);
	free(v);
}

Test(cidr_table, matches_reference_on_random_ipv4_sets)
{
	fixture_seed(0x5eed0004u);
	check_random_family(32, 3000, 64, 200);
}

Test(cidr_table, matches_reference_on_random_ipv6_sets)
{
	fixture_seed(0x5eed0006u);
	check_random_family(128, 3000, 64, 200);
}

Test(cidr_table, matches_reference_on_large_random_sets)
{
	fixture_seed(0x5eed1000u);
	check_random_family(32, 3, 10000, 3000);
	check_random_family(128, 3, 10000, 3000);
}

Test(cidr_table, mixed_families_keep_separate_answers)
{
	fixture_seed(0x5eed0046u);
	for (int round = 0; round < 500; round++) {
		struct ref_prefix r4[32], r6[32];
		struct cidr p[64];
		uint32_t v[64];
		u128 a4[2] = { rnd128() & 0xffffffffu, rnd128() & 0xffffffffu };
		u128 a6[2] = { rnd128(), rnd128() };
		struct cidr_table *t;

		random_prefixes(32, 32, a4, 2, r4, p, v);
		random_prefixes(128, 32, a6, 2, r6, p + 32, v + 32);
		cr_assert_eq(cidr_table_new(p, v, 64, &t), 0);
		for (int k = 0; k < 100; k++) {
			bool v4 = rnd() % 2;
			unsigned bits = v4 ? 32 : 128;
			u128 x = probe_address(bits, v4 ? r4 : r6, 32, v4 ? a4 : a6, 2);
			struct cidr_addr a = { .family = v4 ? AF_INET : AF_INET6 };
			uint32_t want_v = 0, got_v = 0;
			int want;

			to_bytes(x, bits, a.addr);
			want = ref_lookup(v4 ? r4 : r6, 32, bits, x, &want_v);
			cr_assert_eq(cidr_table_lookup(t, &a, &got_v), want);
			if (want >= 0)
				cr_assert_eq(got_v, want_v);
		}
		cidr_table_free(t);
	}
}

Test(cidr_format, round_trips_random_prefixes)
{
	fixture_seed(0x5eedf00du);
	for (int i = 0; i < 20000; i++) {
		unsigned bits = rnd() % 2 ? 32 : 128;
		unsigned len = (unsigned)(rnd() % (bits + 1));
		struct cidr c = { .family = bits == 32 ? AF_INET : AF_INET6, .prefix_len = (uint8_t)len };
		struct cidr back;
		char text[64];
		const char *why = NULL;
		u128 x = rnd128() & mask_of(bits, len);

		/* Runs of zero groups exercise the "::" compression. */
		if (bits == 128 && rnd() % 2)
			x &= ~((u128)0xffffffffffffffffULL << (16 * (rnd() % 5)));
		to_bytes(x, bits, c.addr);
		cr_assert_gt(cidr_format(&c, text, sizeof(text)), 0);
		cr_assert_eq(cidr_parse(guarded(text), &back, &why), 0, "%s: %s", text, why);
		cr_assert_eq(memcmp(&back, &c, sizeof(c)), 0, "%s", text);
	}
}

/* Lookups start from the ranges of the address's first octet (by_octet in
 * cidr.c): prefixes that start, end or span octet boundaries must resolve
 * as a plain scan of every prefix says. */
Test(cidr_table, first_octet_shortcut_agrees_with_a_scan_at_boundaries)
{
	const char *pfx[] = { "0.0.0.0/1", "9.255.255.255/32", "10.0.0.0/8", "11.0.0.0/32",
			      "12.0.0.0/7", "100.64.0.0/10", "100.64.1.0/24", "128.0.0.0/2",
			      "255.255.255.255/32", "254.0.0.0/8" };
	enum { NP = sizeof(pfx) / sizeof(pfx[0]) };
	struct cidr c[NP];
	uint32_t vals[NP];
	struct cidr_table *t;

	for (size_t i = 0; i < NP; i++) {
		c[i] = P(pfx[i]);
		vals[i] = (uint32_t)i;
	}
	cr_assert_eq(cidr_table_new(c, vals, NP, &t), 0);
	for (uint32_t octet = 0; octet < 256; octet++) {
		const uint32_t probes[] = { 0, 1, 0x00ff00, 0x400100, 0x4001ff, 0xfffffe, 0xffffff };

		for (size_t p = 0; p < sizeof(probes) / sizeof(probes[0]); p++) {
			uint32_t ip = octet << 24 | probes[p], got_val = 0, want_val = 0;
			struct cidr_addr a = { .family = AF_INET };
			int want = -ENOENT, got;

			a.addr[0] = (uint8_t)(ip >> 24);
			a.addr[1] = (uint8_t)(ip >> 16);
			a.addr[2] = (uint8_t)(ip >> 8);
			a.addr[3] = (uint8_t)ip;
			for (size_t i = 0; i < NP; i++)
				if (cidr_contains(&c[i], &a) && c[i].prefix_len > want) {
					want = c[i].prefix_len;
					want_val = vals[i];
				}
			got = cidr_table_lookup(t, &a, &got_val);
			cr_assert_eq(got, want, "%u.%u.%u.%u", a.addr[0], a.addr[1], a.addr[2],
				     a.addr[3]);
			if (want >= 0)
				cr_assert_eq(got_val, want_val);
		}
	}
	cidr_table_free(t);
}

/* cidr_table_surely_misses() (inline, cidr.h) may only say "no prefix holds
 * this address" when that is true, and must say it for an IPv4 address
 * whose first octet no prefix reaches: checked against the full lookup on
 * every first octet, for /0, /7, /8, /16 and /32 prefixes at the ends of
 * the space and next to octet boundaries, a v4-mapped IPv6 prefix (stored
 * as IPv4) and IPv6 ones (which cover no IPv4 address). IPv6 addresses,
 * v4-mapped ones included, are never answered by it. */
Test(cidr_table, surely_misses_agrees_with_the_lookup)
{
	static const struct {
		const char *pfx[5];
		const char *reached; /* first octets some prefix reaches: "a,b-c," */
	} sets[] = {
		{ { "0.0.0.0/0" }, "0-255," },
		{ { "10.0.0.0/8", "100.64.0.0/16", "12.0.0.0/7" }, "10,12-13,100," },
		{ { "9.255.255.255/32", "11.0.0.0/32", "255.255.255.255/32", "0.0.0.0/32" },
		  "0,9,11,255," },
		{ { "2001:db8::/32", "::ffff:192.168.0.0/112" }, "192," },
		{ { "::/0" }, "" },
		{ { NULL }, "" },
	};

	for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++) {
		bool reached[256] = { false };
		struct cidr c[5];
		struct cidr_table *t;
		struct cidr_addr a6;
		size_t n = 0;

		for (const char *r = sets[k].reached; *r; r++) {
			char *end;
			unsigned long lo = strtoul(r, &end, 10), hi = lo;

			if (*end == '-')
				hi = strtoul(end + 1, &end, 10);
			cr_assert(*end == ',' && hi < 256, "%s", sets[k].reached);
			for (unsigned long o = lo; o <= hi; o++)
				reached[o] = true;
			r = end;
		}
		while (n < 5 && sets[k].pfx[n]) {
			c[n] = P(sets[k].pfx[n]);
			n++;
		}
		cr_assert_eq(cidr_table_new(c, NULL, n, &t), 0);
		for (uint32_t octet = 0; octet < 256; octet++) {
			const uint32_t probes[] = { 0, 0xffff, 0x10000, 0xffffff };

			for (size_t q = 0; q < sizeof(probes) / sizeof(probes[0]); q++) {
				uint32_t ip = octet << 24 | probes[q];
				struct cidr_addr a = { .family = AF_INET,
						       .addr = { (uint8_t)(ip >> 24), (uint8_t)(ip >> 16),
								 (uint8_t)(ip >> 8), (uint8_t)ip } };
				bool sure = cidr_table_surely_misses(t, &a);

				cr_assert_eq(sure, !reached[octet], "set %zu, first octet %u", k, octet);
				if (sure)
					cr_assert_eq(cidr_table_lookup(t, &a, NULL), -ENOENT,
						     "set %zu: %u.%u.%u.%u", k, a.addr[0], a.addr[1],
						     a.addr[2], a.addr[3]);
			}
		}
		/* IPv6, and IPv4 spelled as v4-mapped IPv6, go to the lookup. */
		a6 = (struct cidr_addr){ .family = AF_INET6 };
		cr_assert_not(cidr_table_surely_misses(t, &a6));
		a6.addr[10] = a6.addr[11] = 0xff;
		cr_assert_not(cidr_table_surely_misses(t, &a6));
		cidr_table_free(t);
	}
}
