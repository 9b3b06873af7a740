/* bpfload_test.c - the loader (dataplane/bpfload) against the real kernel:
 * map sync compared entry by entry with what the latest snapshot asks for,
 * attach/detach on a veth pair in private network namespaces, and real TCP
 * traffic throttled and denied by the attached program. Needs root: exits
 * 77 (skip) with the reason otherwise. Uses only 10.200.0.0/24 inside the
 * namespaces it creates, and deletes them at the end even on failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <criterion/criterion.h>

#include "bpfload.h"
#include "client_abi.h"
#include "fixture.h"
#include "policy.h"
#include "snapshot.h"

#define RS "edge"
#define HTTP_PORT 8080
#define CLIENT_ADDR "10.200.0.1"
#define SERVER_ADDR "10.200.0.2"

/* ---- snapshots -------------------------------------------------------- */

static struct snapshot *build(const char *const *json)
{
	size_t n = 0;

	while (json[n])
		n++;
	return fixture_snapshot(RS, json, n);
}

/* base + upserts (JSON, NULL-ended) - removes ("kind/id", NULL-ended). */
static struct snapshot *apply(const struct snapshot *base, const char *const *up,
			      const char *const *rm)
{
	uint64_t v = snapshot_version(base);
	struct policy_delta *d;
	struct policy_errs errs;
	struct snapshot *s;
	int r;

	cr_assert_eq(policy_delta_new(RS, v, v + 1, &d), 0);
	for (size_t i = 0; up && up[i]; i++) {
		struct policy_res *res = fixture_res("%s", up[i]);

		cr_assert_eq(policy_delta_add_upsert(d, res), 0);
		policy_res_unref(res);
	}
	for (size_t i = 0; rm && rm[i]; i++) {
		char kind[32];
		const char *slash = strchr(rm[i], '/');

		snprintf(kind, sizeof(kind), "%.*s", (int)(slash - rm[i]), rm[i]);
		cr_assert_eq(policy_delta_add_remove(d, policy_kind_from_name(kind), slash + 1), 0);
	}
	policy_errs_init(&errs);
	r = snapshot_apply(base, d, &errs, &s);
	cr_assert_eq(r, 0, "apply: %s", errs.n ? errs.msg[0] : strerror(-r));
	policy_delta_free(d);
	return s;
}

/* ---- reading the maps back -------------------------------------------- */

static uint64_t cid(const char *id)
{
	return policy_key_hash(POLICY_KIND_CLIENT, id, strlen(id));
}

static uint64_t kh(const char *key)
{
	return policy_client_key_hash(key, strlen(key));
}

/* Number of keys in a map; each key must be found by `want`. */
static size_t count_keys(int fd, size_t key_size)
{
	uint8_t key[64], next[64];
	void *prev = NULL;
	size_t n = 0;

	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		memcpy(key, next, key_size);
		prev = key;
		n++;
		cr_assert_lt(n, 100000u, "map iteration does not end");
	}
	return n;
}

/* An expected client: its id, its keys (NULL-ended) and config. */
struct want_client {
	const char *id;
	const char *keys[4];
	uint64_t rate_fp32;
	uint32_t burst;
	uint8_t priority, enabled, algorithm;
};

static void expect_clients(struct bpfload *l, const struct want_client *w, size_t n)
{
	int cfg_fd = bpfload_map_fd(l, "client_config");
	int lk_fd = bpfload_map_fd(l, "client_lookup");
	size_t n_keys = 0;

	cr_assert_geq(cfg_fd, 0);
	cr_assert_geq(lk_fd, 0);
	for (size_t i = 0; i < n; i++) {
		struct client_config cc;
		uint64_t id = cid(w[i].id);

		cr_assert_eq(bpf_map_lookup_elem(cfg_fd, &id, &cc), 0, "client %s missing", w[i].id);
		cr_assert_eq(cc.rate_per_sec_fp32, w[i].rate_fp32, "client %s rate", w[i].id);
		cr_assert_eq(cc.burst, w[i].burst, "client %s burst", w[i].id);
		cr_assert_eq(cc.priority, w[i].priority, "client %s priority", w[i].id);
		cr_assert_eq(cc.enabled, w[i].enabled, "client %s enabled", w[i].id);
		cr_assert_eq(cc.algorithm, w[i].algorithm, "client %s algorithm", w[i].id);
		for (size_t k = 0; w[i].keys[k]; k++) {
			uint64_t h = kh(w[i].keys[k]), got = 0;

			cr_assert_eq(bpf_map_lookup_elem(lk_fd, &h, &got), 0, "key %s missing",
				     w[i].keys[k]);
			cr_assert_eq(got, id, "key %s maps to the wrong client", w[i].keys[k]);
			n_keys++;
		}
	}
	/* Exactly these: nothing else in either map. */
	cr_assert_eq(count_keys(cfg_fd, 8), n, "client_config has extra entries");
	cr_assert_eq(count_keys(lk_fd, 8), n_keys, "client_lookup has extra entries");
}

/* deny_filter must be exactly what the tries hold: a bit set for each
 * 16-bit slot some entry covers (every slot under a prefix shorter than 16
 * bits), and no other. Computed here from the tries' keys, independently of
 * the loader's counts. */
static void expect_filter(struct bpfload *l)
{
	static uint64_t want[CLIENT_DENY_FILTER_WORDS];
	int ffd = bpfload_map_fd(l, "deny_filter");

	cr_assert_geq(ffd, 0);
	memset(want, 0, sizeof(want));
	for (int fam = 0; fam < 2; fam++) {
		int fd = bpfload_map_fd(l, fam == 0 ? "deny_v4" : "deny_v6");
		size_t key_size = fam == 0 ? sizeof(struct client_deny_v4_key)
					   : sizeof(struct client_deny_v6_key);
		uint32_t base = fam == 0 ? CLIENT_DENY_FILTER_V4_BASE : CLIENT_DENY_FILTER_V6_BASE;
		uint8_t key[32], next[32];
		void *prev = NULL;

		while (bpf_map_get_next_key(fd, prev, next) == 0) {
			uint32_t plen, slot;

			memcpy(key, next, key_size);
			prev = key;
			memcpy(&plen, key, 4);
			slot = (uint32_t)key[4] << 8 | key[5];
			for (uint32_t s = 0; s < CLIENT_DENY_FILTER_SLOTS; s++)
				if (plen >= 16 ? s == slot : (s >> (16 - plen)) == (slot >> (16 - plen)))
					want[base + s / 64] |= 1ull << (s % 64);
		}
	}
	for (uint32_t i = 0; i < CLIENT_DENY_FILTER_WORDS; i++) {
		uint64_t got = ~0ull;

		cr_assert_eq(bpf_map_lookup_elem(ffd, &i, &got), 0);
		cr_assert_eq(got, want[i], "deny_filter word %u: %#llx, want %#llx", i,
			     (unsigned long long)got, (unsigned long long)want[i]);
	}
}

/* Whether the filter bit of the 16-bit slot a.b (IPv4) or of an IPv6
 * address's first 16 bits is set. */
static bool filter_bit(struct bpfload *l, bool v6, uint32_t slot)
{
	uint32_t idx = (v6 ? CLIENT_DENY_FILTER_V6_BASE : CLIENT_DENY_FILTER_V4_BASE) + slot / 64;
	uint64_t w = 0;

	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_filter"), &idx, &w), 0);
	return (w >> (slot % 64)) & 1;
}

#define SLOT4(a, b) ((uint32_t)(a) << 8 | (b))

/* Deny prefixes as "a.b.c.d/n" or IPv6 text; exactly these in the tries,
 * and the filter exactly right for them. */
static void expect_deny(struct bpfload *l, const char *const *cidrs)
{
	int fd4 = bpfload_map_fd(l, "deny_v4"), fd6 = bpfload_map_fd(l, "deny_v6");
	size_t n4 = 0, n6 = 0;

	for (size_t i = 0; cidrs[i]; i++) {
		struct client_deny_value v;
		struct cidr c;
		const char *why;

		cr_assert_eq(cidr_parse(cidrs[i], &c, &why), 0);
		if (c.family == AF_INET) {
			struct client_deny_v4_key k = {.prefixlen = c.prefix_len};

			memcpy(k.addr, c.addr, 4);
			cr_assert_eq(bpf_map_lookup_elem(fd4, &k, &v), 0, "deny %s missing", cidrs[i]);
			n4++;
		} else {
			struct client_deny_v6_key k = {.prefixlen = c.prefix_len};

			memcpy(k.addr, c.addr, 16);
			cr_assert_eq(bpf_map_lookup_elem(fd6, &k, &v), 0, "deny %s missing", cidrs[i]);
			n6++;
		}
		cr_assert_eq(v.expires_ns, 0);
	}
	cr_assert_eq(count_keys(fd4, sizeof(struct client_deny_v4_key)), n4, "extra v4 entries");
	cr_assert_eq(count_keys(fd6, sizeof(struct client_deny_v6_key)), n6, "extra v6 entries");
	expect_filter(l);
}

static struct client_global_config read_global(struct bpfload *l)
{
	struct client_global_config g;
	uint32_t zero = 0;

	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "global_config"), &zero, &g), 0);
	return g;
}

static struct bpfload *new_loader(const char *ifname, const char *pin)
{
	char msg[256] = "";
	struct bpfload_config cfg = {
		.ifname = ifname, .http_ports = {HTTP_PORT}, .pin_path = pin,
		.errmsg = msg, .errmsg_len = sizeof(msg),
	};
	struct bpfload *l = NULL;
	int r = bpfload_new(&cfg, &l);

	cr_assert_eq(r, 0, "bpfload_new: %s (%s)", strerror(-r), msg);
	return l;
}

#define FP(rate_per_sec) ((uint64_t)(rate_per_sec) << 32)

/* ---- map sync ---------------------------------------------------------- */

static const char *const base_json[] = {
	"{\"settings\": {\"id\": \"global\", \"accessLists\": [\"blk\", \"blk2\"]}}",
	"{\"accessList\": {\"id\": \"blk\", \"deny\": [\"192.0.2.0/24\", \"2001:db8::/32\"],"
	" \"allow\": [\"10.0.0.0/8\"]}}",
	"{\"accessList\": {\"id\": \"blk2\", \"deny\": [\"192.0.2.0/24\", \"198.51.100.7\"]}}",
	"{\"accessList\": {\"id\": \"routeonly\", \"deny\": [\"203.0.113.0/24\"]}}",
	"{\"rateLimit\": {\"id\": \"k\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"10\","
	" \"unit\": \"SECOND\", \"burst\": \"5\", \"enforce\": \"KERNEL\"}}",
	"{\"rateLimit\": {\"id\": \"m\", \"algorithm\": \"LEAKY_BUCKET\", \"rate\": \"120\","
	" \"unit\": \"MINUTE\", \"burst\": \"7\", \"enforce\": \"BOTH\"}}",
	"{\"rateLimit\": {\"id\": \"p\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"10\","
	" \"unit\": \"SECOND\", \"enforce\": \"PROXY\"}}",
	/* Shadow limits only count, so the kernel (which can only drop) skips them. */
	"{\"rateLimit\": {\"id\": \"sw\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"10\","
	" \"unit\": \"SECOND\", \"enforce\": \"KERNEL\", \"action\": \"SHADOW\"}}",
	"{\"client\": {\"id\": \"a\", \"keys\": [\"ka1\", \"ka2\"], \"rateLimit\": \"k\","
	" \"priority\": 3}}",
	"{\"client\": {\"id\": \"b\", \"rateLimit\": \"m\", \"disabled\": true}}",
	"{\"client\": {\"id\": \"c\", \"keys\": [\"kc\"], \"rateLimit\": \"p\"}}",
	"{\"client\": {\"id\": \"d\", \"keys\": [\"kd\"], \"rateLimit\": \"sw\"}}",
	"{\"client\": {\"id\": \"e\", \"keys\": [\"ke\"]}}",
	NULL,
};

static char long_key[CLIENT_KEY_MAX_BYTES + 2];

static struct snapshot *base_snapshot(void)
{
	const char *json[32];
	char f_json[512];
	size_t i;

	memset(long_key, 'x', CLIENT_KEY_MAX_BYTES + 1);
	long_key[CLIENT_KEY_MAX_BYTES + 1] = '\0';
	for (i = 0; base_json[i]; i++)
		json[i] = base_json[i];
	json[i] = NULL;
	/* Client f carries a key one byte over the kernel's limit. */
	snprintf(f_json, sizeof(f_json),
		 "{\"client\": {\"id\": \"f\", \"keys\": [\"kf\", \"%s\"], \"rateLimit\": \"m\"}}",
		 long_key);
	json[i++] = f_json;
	json[i] = NULL;
	return build(json);
}

Test(bpf, sync_leaves_maps_equal_to_each_snapshot)
{
	struct bpfload *l = new_loader("lo", NULL);
	struct bpfload_sync_stats st;
	struct snapshot *s1 = base_snapshot(), *s2, *s3, *s4;

	/* 1: from empty maps, everything is written. */
	cr_assert_eq(bpfload_sync(l, s1, &st), 0);
	{
		const struct want_client w[] = {
			{"a", {"ka1", "ka2"}, FP(10), 5, 3, 1, CLIENT_ALG_TOKEN_BUCKET},
			{"b", {"b"}, FP(2), 7, 0, 0, CLIENT_ALG_LEAKY_BUCKET},
			{"f", {"kf"}, FP(2), 7, 0, 1, CLIENT_ALG_LEAKY_BUCKET},
		};
		const char *deny[] = {"192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32", NULL};

		expect_clients(l, w, 3);
		expect_deny(l, deny);
	}
	cr_assert_eq(st.kernel_clients, 3);
	cr_assert_eq(st.skipped_keys, 1, "the over-long key of f is proxy-only");
	/* 3 configs + 4 lookups + 3 deny + global. */
	cr_assert_eq(st.updates, 11);
	cr_assert_eq(st.deletes, 0);
	{
		struct client_global_config g = read_global(l);

		cr_assert_eq(g.enabled, 1);
		cr_assert_eq(g.default_rate_per_sec_fp32, 0);
		cr_assert_eq(g.client_id_header_len, strlen("Client-ID"));
		cr_assert_eq(memcmp(g.client_id_header, "Client-ID", 9), 0);
		cr_assert_eq(g.http_ports[0], HTTP_PORT);
	}

	/* 2: a kernel default limit picks up e; m gets faster (b and f follow);
	 * a moves to the proxy; blk loses its v6 deny; c becomes kernel. */
	{
		const char *up[] = {
			"{\"settings\": {\"id\": \"global\", \"accessLists\": [\"blk\", \"blk2\"],"
			" \"defaultRateLimit\": \"dflt\", \"clientIdHeader\": \"X-Api-Key\"}}",
			"{\"rateLimit\": {\"id\": \"dflt\", \"algorithm\": \"TOKEN_BUCKET\","
			" \"rate\": \"3600\", \"unit\": \"HOUR\", \"burst\": \"2\", \"enforce\": \"KERNEL\"}}",
			"{\"rateLimit\": {\"id\": \"m\", \"algorithm\": \"LEAKY_BUCKET\", \"rate\": \"240\","
			" \"unit\": \"MINUTE\", \"burst\": \"7\", \"enforce\": \"BOTH\"}}",
			"{\"client\": {\"id\": \"a\", \"keys\": [\"ka1\", \"ka2\"], \"rateLimit\": \"p\"}}",
			"{\"client\": {\"id\": \"c\", \"keys\": [\"kc\", \"kc2\"], \"rateLimit\": \"k\"}}",
			"{\"accessList\": {\"id\": \"blk\", \"deny\": [\"192.0.2.0/24\"]}}",
			NULL,
		};
		s2 = apply(s1, up, NULL);
	}
	cr_assert_eq(bpfload_sync(l, s2, &st), 0);
	{
		const struct want_client w[] = {
			{"b", {"b"}, FP(4), 7, 0, 0, CLIENT_ALG_LEAKY_BUCKET},
			{"c", {"kc", "kc2"}, FP(10), 5, 0, 1, CLIENT_ALG_TOKEN_BUCKET},
			{"e", {"ke"}, 0, 0, 0, 1, CLIENT_ALG_TOKEN_BUCKET},
			{"f", {"kf"}, FP(4), 7, 0, 1, CLIENT_ALG_LEAKY_BUCKET},
		};
		const char *deny[] = {"192.0.2.0/24", "198.51.100.7/32", NULL};
		struct client_global_config g = read_global(l);

		expect_clients(l, w, 4);
		expect_deny(l, deny);
		cr_assert_eq(g.default_rate_per_sec_fp32, FP(1));
		cr_assert_eq(g.default_burst, 2);
		cr_assert_eq(g.client_id_header_len, strlen("X-Api-Key"));
	}
	cr_assert_eq(st.kernel_clients, 4);
	/* deletes: a's config + 2 lookups, the v6 deny; updates: b, f configs,
	 * c config + 2 lookups, e config + lookup, global. */
	cr_assert_eq(st.deletes, 4);
	cr_assert_eq(st.updates, 8);

	/* 3: one client changes one key: only that lookup moves. */
	{
		const char *up[] = {
			"{\"client\": {\"id\": \"c\", \"keys\": [\"kc\", \"kc3\"], \"rateLimit\": \"k\"}}",
			NULL,
		};
		s3 = apply(s2, up, NULL);
	}
	cr_assert_eq(bpfload_sync(l, s3, &st), 0);
	cr_assert_eq(st.updates, 1);
	cr_assert_eq(st.deletes, 1);

	/* 4: removals, and the global switch off. */
	{
		const char *up[] = {
			"{\"settings\": {\"id\": \"global\", \"disabled\": true}}",
			NULL,
		};
		const char *rm[] = {"client/b", "client/f", "access_list/blk", NULL};

		s4 = apply(s3, up, rm);
	}
	cr_assert_eq(bpfload_sync(l, s4, &st), 0);
	{
		const struct want_client w[] = {
			{"c", {"kc", "kc3"}, FP(10), 5, 0, 1, CLIENT_ALG_TOKEN_BUCKET},
		};
		const char *deny[] = {NULL};

		expect_clients(l, w, 1);
		expect_deny(l, deny);
		cr_assert_eq(read_global(l).enabled, 0);
	}
	cr_assert_eq(st.skipped_keys, 0);

	/* 5: syncing the same snapshot again writes nothing. */
	cr_assert_eq(bpfload_sync(l, s4, &st), 0);
	cr_assert_eq(st.updates + st.deletes, 0);

	/* 6: back to s1 in one step (a full diff the other way). */
	cr_assert_eq(bpfload_sync(l, s1, &st), 0);
	{
		const struct want_client w[] = {
			{"a", {"ka1", "ka2"}, FP(10), 5, 3, 1, CLIENT_ALG_TOKEN_BUCKET},
			{"b", {"b"}, FP(2), 7, 0, 0, CLIENT_ALG_LEAKY_BUCKET},
			{"f", {"kf"}, FP(2), 7, 0, 1, CLIENT_ALG_LEAKY_BUCKET},
		};
		const char *deny[] = {"192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32", NULL};

		expect_clients(l, w, 3);
		expect_deny(l, deny);
	}
	bpfload_free(l);
	snapshot_unref(s1);
	snapshot_unref(s2);
	snapshot_unref(s3);
	snapshot_unref(s4);
}

Test(bpf, deny_add_expires_and_survives_sync)
{
	struct bpfload *l = new_loader("lo", NULL);
	struct snapshot *s = base_snapshot();
	struct client_deny_v4_key k = {.prefixlen = 32, .addr = {10, 200, 9, 9}};
	struct client_deny_value v;
	struct timespec now;
	struct cidr c;
	const char *why;

	cr_assert_eq(cidr_parse("10.200.9.9", &c, &why), 0);
	cr_assert_eq(bpfload_deny_add(l, &c, 0), -EINVAL, "a ttl is required");
	cr_assert_eq(bpfload_deny_add(l, &c, 5000000000ull), 0);
	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_v4"), &k, &v), 0);
	clock_gettime(CLOCK_MONOTONIC, &now);
	cr_assert_gt(v.expires_ns, (uint64_t)now.tv_sec * 1000000000u);
	cr_assert_leq(v.expires_ns, (uint64_t)now.tv_sec * 1000000000u + 6000000000ull);
	/* A full reconcile keeps the escalation, as later syncs do, and the
	 * filter covers both it and the policy's entries. */
	cr_assert_eq(bpfload_sync(l, s, NULL), 0);
	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "deny_v4"), &k, &v), 0);
	expect_filter(l);
	cr_assert(filter_bit(l, false, SLOT4(10, 200)) && filter_bit(l, false, SLOT4(192, 0)));
	bpfload_free(l);
	snapshot_unref(s);
}

static struct snapshot *deny_snapshot(const char *deny_json)
{
	char al[512];
	const char *json[] = {
		"{\"settings\": {\"id\": \"global\", \"accessLists\": [\"blk\"]}}", al, NULL,
	};

	snprintf(al, sizeof(al), "{\"accessList\": {\"id\": \"blk\", \"deny\": [%s]}}",
		 deny_json);
	return build(json);
}

/* The pre-filter over a sequence of syncs, escalations and sweeps: exact
 * after each step (expect_deny), for prefixes shorter than, equal to and
 * longer than its 16 bits; a bit is cleared only when nothing covers its
 * slot any more. */
Test(bpf, deny_filter_follows_syncs_escalations_and_sweeps)
{
	struct bpfload *l = new_loader("lo", NULL);
	struct snapshot *s1, *s2, *s3, *s4;
	struct cidr c;
	const char *why;
	size_t swept;

	s1 = deny_snapshot("\"10.0.0.0/8\", \"172.16.0.0/16\", \"192.168.7.0/24\","
			   " \"192.168.9.9\", \"2001:db8::/32\", \"2a00::/12\"");
	cr_assert_eq(bpfload_sync(l, s1, NULL), 0);
	{
		const char *deny[] = {"10.0.0.0/8", "172.16.0.0/16", "192.168.7.0/24",
				      "192.168.9.9/32", "2001:db8::/32", "2a00::/12", NULL};

		expect_deny(l, deny);
	}
	cr_assert(filter_bit(l, false, SLOT4(10, 0)) && filter_bit(l, false, SLOT4(10, 255)));
	cr_assert(!filter_bit(l, false, SLOT4(11, 0)) && !filter_bit(l, false, SLOT4(9, 255)));
	cr_assert(filter_bit(l, false, SLOT4(172, 16)) && !filter_bit(l, false, SLOT4(172, 17)));
	cr_assert(filter_bit(l, false, SLOT4(192, 168)));
	cr_assert(filter_bit(l, true, 0x2001) && filter_bit(l, true, 0x2a0f));
	cr_assert(!filter_bit(l, true, 0x2a10) && !filter_bit(l, false, 0x2001));

	/* The /24 goes, the /32 still covers 192.168: set. 10/8 becomes 10.1/16:
	 * only that slot of 10.x stays. */
	s2 = deny_snapshot("\"10.1.0.0/16\", \"172.16.0.0/16\", \"192.168.9.9\","
			   " \"2001:db8::/32\", \"2a00::/12\"");
	cr_assert_eq(bpfload_sync(l, s2, NULL), 0);
	{
		const char *deny[] = {"10.1.0.0/16", "172.16.0.0/16", "192.168.9.9/32",
				      "2001:db8::/32", "2a00::/12", NULL};

		expect_deny(l, deny);
	}
	cr_assert(filter_bit(l, false, SLOT4(192, 168)));
	cr_assert(filter_bit(l, false, SLOT4(10, 1)) && !filter_bit(l, false, SLOT4(10, 0)));

	/* Last entry of 192.168 and the short IPv6 prefix gone: cleared. */
	s3 = deny_snapshot("\"10.1.0.0/16\", \"172.16.0.0/16\", \"2001:db8::/32\"");
	cr_assert_eq(bpfload_sync(l, s3, NULL), 0);
	{
		const char *deny[] = {"10.1.0.0/16", "172.16.0.0/16", "2001:db8::/32", NULL};

		expect_deny(l, deny);
	}
	cr_assert(!filter_bit(l, false, SLOT4(192, 168)) && !filter_bit(l, true, 0x2a0f));

	/* Escalations set their slot before they are in the trie; one inside
	 * a policy /16 gets its own entry; one of the policy's own prefix is
	 * refused. */
	cr_assert_eq(cidr_parse("198.18.5.5", &c, &why), 0);
	cr_assert_eq(bpfload_deny_add(l, &c, 1000000ull), 0);
	cr_assert(filter_bit(l, false, SLOT4(198, 18)));
	cr_assert_eq(cidr_parse("172.16.3.3", &c, &why), 0);
	cr_assert_eq(bpfload_deny_add(l, &c, 1000000ull), 0);
	cr_assert_eq(cidr_parse("2001:db9:1:2::/64", &c, &why), 0);
	cr_assert_eq(bpfload_deny_add(l, &c, 1000000ull), 0);
	cr_assert(filter_bit(l, true, 0x2001));
	cr_assert_eq(cidr_parse("172.16.0.0/16", &c, &why), 0);
	cr_assert_eq(bpfload_deny_add(l, &c, 1000000ull), -EEXIST);
	cr_assert_eq(count_keys(bpfload_map_fd(l, "deny_v4"), sizeof(struct client_deny_v4_key)), 4);
	expect_filter(l);

	/* Expired (1 ms TTL) and swept: 198.18 clears, 172.16 stays (policy),
	 * 2001 stays (2001:db8::/32). */
	usleep(5000);
	cr_assert_eq(bpfload_deny_sweep(l, &swept), 0);
	cr_assert_eq(swept, 3);
	{
		const char *deny[] = {"10.1.0.0/16", "172.16.0.0/16", "2001:db8::/32", NULL};

		expect_deny(l, deny);
	}
	cr_assert(!filter_bit(l, false, SLOT4(198, 18)));
	cr_assert(filter_bit(l, false, SLOT4(172, 16)) && filter_bit(l, true, 0x2001));

	/* Nothing left: every bit clear. */
	s4 = deny_snapshot("");
	cr_assert_eq(bpfload_sync(l, s4, NULL), 0);
	{
		const char *deny[] = {NULL};

		expect_deny(l, deny);
	}
	bpfload_free(l);
	snapshot_unref(s1);
	snapshot_unref(s2);
	snapshot_unref(s3);
	snapshot_unref(s4);
}

Test(bpf, new_refuses_bad_interface_and_config)
{
	char msg[128] = "";
	struct bpfload_config cfg = {.ifname = "no-such-if0", .errmsg = msg,
				     .errmsg_len = sizeof(msg)};
	struct bpfload *l = NULL;

	cr_assert_eq(bpfload_new(&cfg, &l), -ENODEV);
	cr_assert_null(l);
	cr_assert_not_null(strstr(msg, "no-such-if0"), "message: %s", msg);
	cfg.ifname = NULL;
	cfg.ifindex = 0;
	cr_assert_eq(bpfload_new(&cfg, &l), -ENODEV);
	cfg.ifname = "lo";
	cfg.log_level = 7;
	cr_assert_eq(bpfload_new(&cfg, &l), -EINVAL);
	cr_assert_null(l);
}

Test(bpf, new_says_eperm_without_privileges)
{
	char msg[256] = "";
	struct bpfload_config cfg = {.ifname = "lo", .errmsg = msg, .errmsg_len = sizeof(msg)};
	struct bpfload *l = NULL;

	/* Criterion runs each test in its own process: dropping root here
	 * drops every capability for this case only. */
	cr_assert_eq(setresgid(65534, 65534, 65534), 0);
	cr_assert_eq(setresuid(65534, 65534, 65534), 0);
	cr_assert_eq(bpfload_new(&cfg, &l), -EPERM);
	cr_assert_null(l);
	cr_assert_not_null(strstr(msg, "root"), "message: %s", msg);
}

/* ---- namespaces -------------------------------------------------------- */

static char ns_a[64], ns_b[64]; /* client side, server side */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* Output of a shell command (first 4 KiB). */
static void sh_out(char *buf, size_t len, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p);
	n = fread(buf, 1, len - 1, p);
	buf[n] = '\0';
	pclose(p);
}

static void enter_ns(const char *name)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(setns(fd, CLONE_NEWNET), 0, "setns %s: %s", name, strerror(errno));
	close(fd);
}

/* Per case (cases run in parallel): sbpfl-<runner pid>-<case pid>-a/b. */
static void ns_names(void)
{
	const char *tag = getenv("BPFLOAD_TEST_TAG");

	snprintf(ns_a, sizeof(ns_a), "sbpfl-%s-%d-a", tag ? tag : "0", (int)getpid());
	snprintf(ns_b, sizeof(ns_b), "sbpfl-%s-%d-b", tag ? tag : "0", (int)getpid());
}

static void ns_teardown(void)
{
	ns_names();
	sh("ip netns del %s 2>/dev/null", ns_a);
	sh("ip netns del %s 2>/dev/null", ns_b);
}

/* veth0 (10.200.0.1) in ns_a, veth1 (10.200.0.2) in ns_b. `ip netns exec`
 * is used for setup commands only: the test itself enters with setns(). */
static void ns_setup(void)
{
	ns_teardown();
	cr_assert_eq(sh("ip netns add %s && ip netns add %s", ns_a, ns_b), 0);
	cr_assert_eq(sh("ip -n %s link add veth0 type veth peer name veth1 netns %s", ns_a, ns_b),
		     0);
	cr_assert_eq(sh("ip -n %s addr add " CLIENT_ADDR "/24 dev veth0 && "
			"ip -n %s link set veth0 up && ip -n %s link set lo up",
			ns_a, ns_a, ns_a), 0);
	cr_assert_eq(sh("ip -n %s addr add " SERVER_ADDR "/24 dev veth1 && "
			"ip -n %s link set veth1 up && ip -n %s link set lo up",
			ns_b, ns_b, ns_b), 0);
}

TestSuite(bpfns, .init = ns_setup, .fini = ns_teardown);

static void check_detached(bool qdisc_expected)
{
	char out[4096];

	sh_out(out, sizeof(out), "tc filter show dev veth1 ingress 2>&1");
	cr_assert_str_eq(out, "", "filters left: %s", out);
	sh_out(out, sizeof(out), "tc qdisc show dev veth1 2>&1");
	if (qdisc_expected)
		cr_assert_not_null(strstr(out, "clsact"), "qdisc: %s", out);
	else
		cr_assert_null(strstr(out, "clsact"), "qdisc: %s", out);
}

Test(bpfns, attach_then_detach_leaves_interface_clean)
{
	struct bpfload *l;
	char out[4096];

	enter_ns(ns_b);
	l = new_loader("veth1", NULL);
	cr_assert_eq(bpfload_attach(l), 0);
	cr_assert_eq(bpfload_attach(l), -EALREADY);
	sh_out(out, sizeof(out), "tc filter show dev veth1 ingress 2>&1");
	cr_assert_not_null(strstr(out, "bpf"), "filter: %s", out);
	sh_out(out, sizeof(out), "tc qdisc show dev veth1 2>&1");
	cr_assert_not_null(strstr(out, "clsact"), "qdisc: %s", out);
	cr_assert_eq(bpfload_detach(l), 0);
	check_detached(false);
	cr_assert_eq(bpfload_detach(l), 0, "detach twice is harmless");
	/* Attach again, and let free detach. */
	cr_assert_eq(bpfload_attach(l), 0);
	bpfload_free(l);
	check_detached(false);
}

Test(bpfns, detach_keeps_a_clsact_qdisc_that_existed_before)
{
	struct bpfload *l;
	char out[4096];

	enter_ns(ns_b);
	cr_assert_eq(sh("tc qdisc add dev veth1 clsact"), 0);
	/* A u32 filter with no action (this kernel has no act_gact). */
	cr_assert_eq(sh("tc filter add dev veth1 ingress prio 7 u32 match u32 0 0 classid 1:1"), 0);
	l = new_loader("veth1", NULL);
	cr_assert_eq(bpfload_attach(l), 0);
	cr_assert_eq(bpfload_detach(l), 0);
	sh_out(out, sizeof(out), "tc filter show dev veth1 ingress 2>&1");
	cr_assert_not_null(strstr(out, "u32"), "someone else's filter stays: %s", out);
	cr_assert_null(strstr(out, "bpf"), "ours is gone: %s", out);
	cr_assert_eq(sh("tc filter del dev veth1 ingress prio 7"), 0);
	check_detached(true);
	bpfload_free(l);
}

/* ---- real traffic ------------------------------------------------------ */

/* A tiny HTTP server on SERVER_ADDR:HTTP_PORT, one request per connection.
 * Lives until stop is set; bounded by a deadline anyway. */
struct server {
	int fd;
	volatile bool stop;
	int served;
};

static void *serve(void *arg)
{
	struct server *sv = arg;
	time_t deadline = time(NULL) + 60;

	while (!sv->stop && time(NULL) < deadline) {
		struct pollfd p = {.fd = sv->fd, .events = POLLIN};
		char buf[2048];
		int c;

		if (poll(&p, 1, 100) <= 0)
			continue;
		c = accept(sv->fd, NULL, NULL);
		if (c < 0)
			continue;
		struct timeval tv = {.tv_sec = 2};

		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (recv(c, buf, sizeof(buf), 0) > 0) {
			const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
					   "Connection: close\r\n\r\n";

			send(c, resp, strlen(resp), MSG_NOSIGNAL);
			sv->served++;
		}
		close(c);
	}
	return NULL;
}

/* One request from the client namespace; true when a response came back
 * within wait_ms (connect and response each). */
static bool request(const char *client_key, int wait_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(HTTP_PORT)};
	char req[256], buf[256];
	struct pollfd p;
	bool ok = false;
	int fd, n;

	inet_pton(AF_INET, SERVER_ADDR, &sa.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
		goto out_close;
	p = (struct pollfd){.fd = fd, .events = POLLOUT};
	if (poll(&p, 1, wait_ms) != 1 || (p.revents & (POLLERR | POLLHUP)))
		goto out_close;
	n = snprintf(req, sizeof(req),
		     "GET / HTTP/1.1\r\nHost: test\r\nClient-ID: %s\r\nAccept: */*\r\n\r\n",
		     client_key);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		goto out_close;
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	if (poll(&p, 1, wait_ms) == 1 && recv(fd, buf, sizeof(buf), 0) > 0)
		ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
out_close:
	close(fd);
	return ok;
}

/* Event callback: counts RATE drops of the expected client. */
struct seen {
	uint64_t client_id;
	int rate_drops, other;
};

static void on_event(void *arg, const void *ev)
{
	struct seen *s = arg;
	const struct client_event *e = ev;

	if (e->reason == CLIENT_REASON_RATE && e->client_id == s->client_id && e->family == 4 &&
	    memcmp(e->src_addr, "\x0a\xc8\x00\x01", 4) == 0)
		s->rate_drops++;
	else
		s->other++;
}

Test(bpfns, real_traffic_is_throttled_and_denied, .timeout = 90)
{
	const char *json[] = {
		"{\"settings\": {\"id\": \"global\"}}",
		"{\"rateLimit\": {\"id\": \"tight\", \"algorithm\": \"TOKEN_BUCKET\", \"rate\": \"1\","
		" \"unit\": \"HOUR\", \"burst\": \"3\", \"enforce\": \"KERNEL\"}}",
		"{\"client\": {\"id\": \"alpha\", \"keys\": [\"alpha-key\"], \"rateLimit\": \"tight\"}}",
		NULL,
	};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(HTTP_PORT)};
	uint64_t counters[CLIENT_COUNTERS];
	struct bpfload_event_counts ev;
	struct server sv = {0};
	struct client_stats cs;
	struct snapshot *s1 = build(json), *s2;
	struct bpfload *l;
	pthread_t th;
	uint64_t id = cid("alpha");
	struct seen seen = {.client_id = id};
	int one = 1;

	/* Loader, server socket and server thread live in ns_b. */
	enter_ns(ns_b);
	l = new_loader("veth1", NULL);
	cr_assert_eq(bpfload_sync(l, s1, NULL), 0);
	cr_assert_eq(bpfload_attach(l), 0);
	bpfload_set_event_cb(l, on_event, &seen);
	inet_pton(AF_INET, SERVER_ADDR, &sa.sin_addr);
	sv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(sv.fd, 0);
	setsockopt(sv.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(sv.fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(sv.fd, 16), 0);
	cr_assert_eq(pthread_create(&th, NULL, serve, &sv), 0);

	/* This thread becomes the client. */
	enter_ns(ns_a);
	for (int i = 0; i < 3; i++)
		cr_assert(request("alpha-key", 2000), "request %d within the burst", i + 1);
	cr_assert_not(request("alpha-key", 700), "4th request is throttled");
	cr_assert(request("unknown-key", 2000), "an unknown client passes");

	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "client_stats"), &id, &cs), 0);
	cr_assert_geq(cs.requests, 4);
	cr_assert_geq(cs.drops, 1);
	cr_assert_eq(bpfload_counters(l, counters, CLIENT_COUNTERS), 0);
	cr_assert_geq(counters[CLIENT_REASON_RATE], 1);
	cr_assert_eq(counters[CLIENT_REASON_ALLOWED], 3);
	cr_assert_geq(counters[CLIENT_REASON_UNKNOWN_CLIENT], 1);
	cr_assert_geq(bpfload_poll(l, 100), 1);
	bpfload_event_counts(l, &ev);
	cr_assert_geq(ev.by_reason[CLIENT_REASON_RATE], 1);
	cr_assert_eq(ev.events, ev.by_reason[CLIENT_REASON_RATE], "only drops are logged");
	cr_assert_eq((uint64_t)seen.rate_drops, ev.events, "the callback saw each event");
	cr_assert_eq(seen.other, 0);

	/* Deny the client's address: not even the handshake completes. */
	{
		const char *up[] = {
			"{\"settings\": {\"id\": \"global\", \"accessLists\": [\"no\"]}}",
			"{\"accessList\": {\"id\": \"no\", \"deny\": [\"" CLIENT_ADDR "/32\"]}}",
			NULL,
		};
		s2 = apply(s1, up, NULL);
	}
	cr_assert_eq(bpfload_sync(l, s2, NULL), 0);
	cr_assert_not(request("unknown-key", 700), "denied source");
	cr_assert_eq(bpfload_counters(l, counters, CLIENT_COUNTERS), 0);
	cr_assert_geq(counters[CLIENT_REASON_DENY], 1);

	sv.stop = true;
	pthread_join(th, NULL);
	close(sv.fd);
	bpfload_free(l);
	snapshot_unref(s1);
	snapshot_unref(s2);
}

/* ---- pinning ----------------------------------------------------------- */

Test(bpf, pinned_maps_survive_a_new_loader)
{
	char dir[128];
	struct bpfload *l;
	struct snapshot *s = base_snapshot();
	struct client_config cc;
	uint64_t id = cid("a");
	struct bpfload_sync_stats st;

	snprintf(dir, sizeof(dir), "/sys/fs/bpf/sluice-bpfload-test-%d", (int)getpid());
	l = new_loader("lo", dir);
	cr_assert_eq(bpfload_sync(l, s, NULL), 0);
	bpfload_free(l);

	/* A restarted node: the limits are there before its first sync, and
	 * the deny filter is rebuilt from the pinned tries (an escalation the
	 * snapshot does not hold included). */
	l = new_loader("lo", dir);
	{
		struct cidr c;
		const char *why;

		cr_assert_eq(cidr_parse("198.18.7.7", &c, &why), 0);
		cr_assert_eq(bpfload_deny_add(l, &c, 60000000000ull), 0);
	}
	bpfload_free(l);
	{
		/* Stale bits in the pinned filter must not survive either. */
		uint32_t idx = CLIENT_DENY_FILTER_V4_BASE + SLOT4(1, 2) / 64;
		uint64_t junk = ~0ull;
		char path[256];
		int fd;

		snprintf(path, sizeof(path), "%s/deny_filter", dir);
		fd = bpf_obj_get(path);
		cr_assert_geq(fd, 0, "deny_filter is pinned");
		cr_assert_eq(bpf_map_update_elem(fd, &idx, &junk, BPF_ANY), 0);
		close(fd);
	}
	l = new_loader("lo", dir);
	expect_filter(l);
	cr_assert(filter_bit(l, false, SLOT4(198, 18)) && filter_bit(l, false, SLOT4(192, 0)));
	cr_assert_eq(bpf_map_lookup_elem(bpfload_map_fd(l, "client_config"), &id, &cc), 0);
	cr_assert_eq(cc.burst, 5);
	cr_assert_eq(read_global(l).enabled, 1);
	/* Its first sync is a reconcile that finds nothing to write but the
	 * global entry. */
	cr_assert_eq(bpfload_sync(l, s, &st), 0);
	cr_assert_eq(st.deletes, 0);
	bpfload_free(l);
	sh("rm -rf %s", dir);
	snapshot_unref(s);
}

int main(int argc, char **argv)
{
	struct criterion_test_set *tests;
	char tag[32];
	int result = 0;

	if (geteuid() != 0) {
		printf("bpfload_test: skipped: needs root (CAP_BPF, CAP_NET_ADMIN, netns)\n");
		return 77;
	}
	snprintf(tag, sizeof(tag), "%d", (int)getpid());
	setenv("BPFLOAD_TEST_TAG", tag, 1);
	tests = criterion_initialize();
	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);
	/* Even a crashed case leaves no namespace behind. */
	sh("for ns in $(ip netns list | grep -o '^sbpfl-%s-[0-9]*-[ab]'); do "
	   "ip netns del $ns; done", tag);
	return result;
}
