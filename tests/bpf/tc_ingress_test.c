/* tc_ingress_test.c - the TC ingress program (bpf/tc_ingress.bpf.c) run with
 * BPF_PROG_RUN on crafted frames, one named case each, every case on a fresh
 * skeleton. Each case checks the verdict and the side effects: per-reason
 * counters, client statistics and ring buffer events; every run also checks
 * that the frame comes out unmodified. Needs root: exits 77 (skip) with the
 * reason otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "client_abi.h"
#include "frames.h"
#include "policy.h"
#include "tc_ingress.skel.h"

#define HTTP_PORT 80
#define ALT_HTTP_PORT 8080
#define MAX_EVENTS 256

/* One case's loaded program and what it has emitted; lives for one case. */
struct fx {
	struct tc_ingress *skel;
	int prog_fd;
	struct ring_buffer *rb;
	struct client_event ev[MAX_EVENTS];
	int n_ev;
};

#define CHECK(cond)                                                                \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "    %s:%d: check failed: %s\n", __FILE__,   \
				__LINE__, #cond);                                  \
			return -1;                                                 \
		}                                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                             \
	do {                                                                       \
		unsigned long long a_ = (unsigned long long)(a);                   \
		unsigned long long b_ = (unsigned long long)(b);                   \
		if (a_ != b_) {                                                    \
			fprintf(stderr, "    %s:%d: %s == %s: %llu != %llu\n",       \
				__FILE__, __LINE__, #a, #b, a_, b_);               \
			return -1;                                                 \
		}                                                                  \
	} while (0)

#define TRY(expr)                                                                  \
	do {                                                                       \
		if ((expr) < 0)                                                    \
			return -1;                                                 \
	} while (0)

/* ---- frames ---------------------------------------------------------- */

/* ---- fixture --------------------------------------------------------- */

static int on_event(void *ctx, void *data, size_t size)
{
	struct fx *f = ctx;

	if (size != sizeof(struct client_event) || f->n_ev >= MAX_EVENTS)
		return 0;
	memcpy(&f->ev[f->n_ev++], data, sizeof(struct client_event));
	return 0;
}

__attribute__((format(printf, 2, 0)))
static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level != LIBBPF_WARN)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static int set_global(struct fx *f, uint8_t enabled, uint8_t log_level, const char *header)
{
	struct client_global_config g = { 0 };
	uint32_t zero = 0;

	g.enabled = enabled;
	g.log_level = log_level;
	g.max_clients = CLIENT_MAX_CLIENTS;
	g.http_ports[0] = HTTP_PORT;
	g.http_ports[3] = ALT_HTTP_PORT;
	g.client_id_header_len = (uint8_t)strlen(header);
	memcpy(g.client_id_header, header,
	       strlen(header) < sizeof(g.client_id_header) ? strlen(header)
							   : sizeof(g.client_id_header));
	return bpf_map_update_elem(bpf_map__fd(f->skel->maps.global_config), &zero, &g, BPF_ANY);
}

static int set_default_limit(struct fx *f, uint64_t rate_fp32, uint32_t burst)
{
	struct client_global_config g;
	uint32_t zero = 0;
	int fd = bpf_map__fd(f->skel->maps.global_config);

	if (bpf_map_lookup_elem(fd, &zero, &g) < 0)
		return -1;
	g.default_rate_per_sec_fp32 = rate_fp32;
	g.default_burst = burst;
	return bpf_map_update_elem(fd, &zero, &g, BPF_ANY);
}

static int fx_open(struct fx *f)
{
	int err;

	memset(f, 0, sizeof(*f));
	f->skel = tc_ingress__open_and_load();
	if (!f->skel) {
		err = -errno;
		fprintf(stderr, "    loading tc_ingress failed: %s\n", strerror(-err));
		return err;
	}
	f->prog_fd = bpf_program__fd(f->skel->progs.tc_ingress);
	f->rb = ring_buffer__new(bpf_map__fd(f->skel->maps.events), on_event, f, NULL);
	if (!f->rb) {
		err = -errno;
		tc_ingress__destroy(f->skel);
		return err;
	}
	/* The usual node: enabled, drop events only, the default header. */
	if (set_global(f, 1, CLIENT_LOG_DROPS, "client-id") < 0) {
		err = -errno;
		ring_buffer__free(f->rb);
		tc_ingress__destroy(f->skel);
		return err;
	}
	return 0;
}

static void fx_close(struct fx *f)
{
	ring_buffer__free(f->rb);
	tc_ingress__destroy(f->skel);
}

/* Runs the program `repeat` times on one frame; returns its verdict, or -1
 * when the run failed or the frame came out changed. */
static int run_frame(struct fx *f, const uint8_t *frame, size_t len, unsigned repeat)
{
	static uint8_t out[FRAME_MAX];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = (uint32_t)len,
		    .data_out = out, .data_size_out = sizeof(out), .repeat = repeat);
	int err = bpf_prog_test_run_opts(f->prog_fd, &opts);

	if (err < 0) {
		fprintf(stderr, "    BPF_PROG_RUN failed: %s\n", strerror(errno));
		return -1;
	}
	if (opts.data_size_out != len || memcmp(out, frame, len) != 0) {
		fprintf(stderr, "    the program modified the frame\n");
		return -1;
	}
	return (int)opts.retval;
}

static int run(struct fx *f, const struct frame_spec *s)
{
	uint8_t frame[FRAME_MAX];

	return run_frame(f, frame, frame_build(s, frame), 1);
}

static uint64_t counter(struct fx *f, uint32_t slot)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t vals[ncpu > 0 ? ncpu : 1], sum = 0;

	if (ncpu <= 0 ||
	    bpf_map_lookup_elem(bpf_map__fd(f->skel->maps.reason_counters), &slot, vals) < 0)
		return UINT64_MAX;
	for (int i = 0; i < ncpu; i++)
		sum += vals[i];
	return sum;
}

/* Total of every reason counter: how many packets the program decided. */
static uint64_t counted_packets(struct fx *f)
{
	uint64_t sum = 0;

	for (uint32_t r = CLIENT_REASON_NONE; r < CLIENT_REASON_MAX; r++)
		sum += counter(f, r);
	return sum;
}

static int poll_events(struct fx *f)
{
	f->n_ev = 0;
	return ring_buffer__consume(f->rb) < 0 ? -1 : 0;
}

static int get_stats(struct fx *f, uint64_t client_id, struct client_stats *st)
{
	return bpf_map_lookup_elem(bpf_map__fd(f->skel->maps.client_stats), &client_id, st);
}

static uint64_t rate_per_sec(double per_sec)
{
	return (uint64_t)(per_sec * (double)(1ull << CLIENT_RATE_FP_SHIFT));
}

/* Installs a client with one key. */
static int add_client(struct fx *f, uint64_t id, const char *key, uint64_t rate_fp32,
		      uint32_t burst, uint8_t algorithm, uint8_t enabled)
{
	struct client_config cc = {
		.rate_per_sec_fp32 = rate_fp32,
		.burst = burst,
		.priority = 1,
		.enabled = enabled,
		.algorithm = algorithm,
	};
	uint64_t h = policy_client_key_hash(key, strlen(key));

	if (bpf_map_update_elem(bpf_map__fd(f->skel->maps.client_lookup), &h, &id, BPF_ANY) < 0)
		return -1;
	return bpf_map_update_elem(bpf_map__fd(f->skel->maps.client_config), &id, &cc, BPF_ANY);
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sets (on) or clears the deny_filter bits of the slots a prefix covers
 * (its first 16 bits; every slot under a shorter prefix), as the loader
 * does; base is CLIENT_DENY_FILTER_V4_BASE or _V6_BASE. */
static int filter_bits(struct fx *f, uint32_t base, const uint8_t *addr, uint32_t prefixlen,
		       int on)
{
	int fd = bpf_map__fd(f->skel->maps.deny_filter);
	uint32_t slot = (uint32_t)addr[0] << 8 | addr[1], n = 1;

	if (prefixlen < CLIENT_DENY_FILTER_BITS) {
		n = 1u << (CLIENT_DENY_FILTER_BITS - prefixlen);
		slot &= ~(n - 1);
	}
	for (uint32_t s = slot; s < slot + n; s++) {
		uint32_t idx = base + s / 64;
		uint64_t w;

		if (bpf_map_lookup_elem(fd, &idx, &w) < 0)
			return -1;
		w = on ? w | 1ull << (s % 64) : w & ~(1ull << (s % 64));
		if (bpf_map_update_elem(fd, &idx, &w, BPF_ANY) < 0)
			return -1;
	}
	return 0;
}

/* A deny entry without its filter bits: only the gating case wants that. */
static int deny_v4_raw(struct fx *f, const char *addr, uint32_t prefixlen, uint64_t expires_ns)
{
	struct client_deny_v4_key k = { .prefixlen = prefixlen };
	struct client_deny_value v = { .expires_ns = expires_ns };

	if (inet_pton(AF_INET, addr, k.addr) != 1)
		return -1;
	return bpf_map_update_elem(bpf_map__fd(f->skel->maps.deny_v4), &k, &v, BPF_ANY);
}

/* A deny entry the way the loader writes one: filter bits first. */
static int deny_v4(struct fx *f, const char *addr, uint32_t prefixlen, uint64_t expires_ns)
{
	uint8_t a[4];

	if (inet_pton(AF_INET, addr, a) != 1 ||
	    filter_bits(f, CLIENT_DENY_FILTER_V4_BASE, a, prefixlen, 1) < 0)
		return -1;
	return deny_v4_raw(f, addr, prefixlen, expires_ns);
}

static int deny_v6(struct fx *f, const char *addr, uint32_t prefixlen)
{
	struct client_deny_v6_key k = { .prefixlen = prefixlen };
	struct client_deny_value v = { 0 };

	if (inet_pton(AF_INET6, addr, k.addr) != 1 ||
	    filter_bits(f, CLIENT_DENY_FILTER_V6_BASE, k.addr, prefixlen, 1) < 0)
		return -1;
	return bpf_map_update_elem(bpf_map__fd(f->skel->maps.deny_v6), &k, &v, BPF_ANY);
}

#define REQ(hdrs) "GET /api HTTP/1.1\r\nHost: example.test\r\n" hdrs "Accept: */*\r\n\r\n"
#define ONE_PER_HOUR (rate_per_sec(1.0 / 3600.0))
#define CLIENT_A 0x1111000000000001ull
#define CLIENT_B 0x2222000000000002ull

/* ---- cases: deny lists ------------------------------------------------ */

static int denied_ipv4_source_drops(struct fx *f)
{
	struct frame_spec s = { .src = "10.1.2.3" };
	uint8_t want[4] = { 10, 1, 2, 3 };

	TRY(deny_v4(f, "10.1.0.0", 16, 0));
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 1);
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 1);
	CHECK_EQ(f->ev[0].type, CLIENT_EVENT_DROP);
	CHECK_EQ(f->ev[0].reason, CLIENT_REASON_DENY);
	CHECK_EQ(f->ev[0].family, 4);
	CHECK_EQ(f->ev[0].client_id, 0);
	CHECK(memcmp(f->ev[0].src_addr, want, 4) == 0);
	CHECK(f->ev[0].ts_ns != 0);
	return 0;
}

static int denied_ipv6_source_drops(struct fx *f)
{
	struct frame_spec s = { .family = 6, .src = "2001:db8:aa::7", .l4 = IPPROTO_UDP };
	struct in6_addr want;

	inet_pton(AF_INET6, "2001:db8:aa::7", &want);
	TRY(deny_v6(f, "2001:db8:aa::", 48));
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 1);
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 1);
	CHECK_EQ(f->ev[0].reason, CLIENT_REASON_DENY);
	CHECK_EQ(f->ev[0].family, 6);
	CHECK(memcmp(f->ev[0].src_addr, &want, 16) == 0);
	return 0;
}

static int allowed_source_passes(struct fx *f)
{
	struct frame_spec v4 = { .src = "10.2.0.1" };
	struct frame_spec v6 = { .family = 6, .src = "2001:db8:ab::7" };

	TRY(deny_v4(f, "10.1.0.0", 16, 0));
	TRY(deny_v6(f, "2001:db8:aa::", 48));
	CHECK_EQ(run(f, &v4), TC_ACT_OK);
	CHECK_EQ(run(f, &v6), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 0);
	CHECK_EQ(counter(f, CLIENT_REASON_NO_PAYLOAD), 2);
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 0);
	return 0;
}

static int deny_entry_expires_by_itself(struct fx *f)
{
	struct frame_spec gone = { .src = "10.3.0.1" };
	struct frame_spec live = { .src = "10.4.0.1" };
	uint64_t now = monotonic_ns();

	TRY(deny_v4(f, "10.3.0.0", 16, now - 1));
	TRY(deny_v4(f, "10.4.0.0", 16, now + 3600ull * 1000000000ull));
	CHECK_EQ(run(f, &gone), TC_ACT_OK);
	CHECK_EQ(run(f, &live), TC_ACT_SHOT);
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 1);
	return 0;
}

static int deny_applies_to_later_fragments(struct fx *f)
{
	struct frame_spec denied = { .src = "10.1.9.9", .frag_off = 185 };
	struct frame_spec other = { .src = "10.9.9.9", .frag_off = 185,
				    .payload = "Client-ID: x\r\n" };

	TRY(deny_v4(f, "10.1.0.0", 16, 0));
	CHECK_EQ(run(f, &denied), TC_ACT_SHOT);
	CHECK_EQ(run(f, &other), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_FRAGMENT), 1);
	return 0;
}

/* The program asks the trie only when the source's filter bit is set: an
 * entry without its bit is not seen (which is why only the loader may write
 * entries), a bit without an entry denies nothing. */
static int deny_filter_gates_the_trie(struct fx *f)
{
	struct frame_spec s = { .src = "10.1.2.3", .l4 = IPPROTO_UDP };
	struct frame_spec empty_slot = { .src = "10.7.0.1", .l4 = IPPROTO_UDP };
	uint8_t a[4] = { 10, 1, 0, 0 }, b[4] = { 10, 7, 0, 0 };

	TRY(deny_v4_raw(f, "10.1.0.0", 16, 0));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NOT_TCP), 1);
	TRY(filter_bits(f, CLIENT_DENY_FILTER_V4_BASE, a, 16, 1));
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	TRY(filter_bits(f, CLIENT_DENY_FILTER_V4_BASE, b, 16, 1));
	CHECK_EQ(run(f, &empty_slot), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 1);
	CHECK_EQ(counter(f, CLIENT_REASON_NOT_TCP), 2);
	return 0;
}

/* Prefixes shorter than, equal to and longer than the filter's 16 bits,
 * both families: the slot is the address's first 16 bits, per family. */
static int deny_filter_slots_by_prefix_length(struct fx *f)
{
	static const struct {
		int family;
		const char *src;
		int want;
	} probes[] = {
		{ 4, "10.200.1.1", TC_ACT_SHOT },   /* 10.0.0.0/8: every 10.x slot */
		{ 4, "11.0.0.1", TC_ACT_OK },
		{ 4, "172.16.255.1", TC_ACT_SHOT }, /* 172.16.0.0/16 */
		{ 4, "172.17.0.1", TC_ACT_OK },
		{ 4, "192.168.7.9", TC_ACT_SHOT },  /* 192.168.7.0/24 */
		{ 4, "192.168.8.9", TC_ACT_OK },    /* bit set, trie says no */
		{ 6, "2001:db8:aa::7", TC_ACT_SHOT }, /* 2001:db8:aa::/48 */
		{ 6, "2001:db8:ab::7", TC_ACT_OK },
		{ 6, "2a0f:1::1", TC_ACT_SHOT },    /* 2a00::/12: 16 slots */
		{ 6, "2a10::1", TC_ACT_OK },
		{ 4, "42.15.0.1", TC_ACT_OK },      /* 0x2a0f as IPv4: other family */
	};

	TRY(deny_v4(f, "10.0.0.0", 8, 0));
	TRY(deny_v4(f, "172.16.0.0", 16, 0));
	TRY(deny_v4(f, "192.168.7.0", 24, 0));
	TRY(deny_v6(f, "2001:db8:aa::", 48));
	TRY(deny_v6(f, "2a00::", 12));
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		struct frame_spec s = { .family = probes[i].family, .src = probes[i].src,
					.l4 = IPPROTO_UDP };
		int got = run(f, &s);

		if (got != probes[i].want)
			fprintf(stderr, "    %s: verdict %d\n", probes[i].src, got);
		CHECK_EQ(got, probes[i].want);
	}
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 5);
	return 0;
}

/* ---- cases: client limits -------------------------------------------- */

static int client_under_limit_passes(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: alpha\r\n") };
	struct client_stats st;

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 5, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 3; i++)
		CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_ALLOWED), 3);
	TRY(get_stats(f, CLIENT_A, &st));
	CHECK_EQ(st.requests, 3);
	CHECK_EQ(st.drops, 0);
	CHECK_EQ(st.consecutive_drops, 0);
	CHECK_EQ(st.status, CLIENT_STATUS_NORMAL);
	CHECK_EQ(st.last_key_hash, policy_client_key_hash("alpha", 5));
	CHECK(st.last_seen_ns != 0 && st.last_seen_ns <= monotonic_ns());
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 0);
	return 0;
}

static int client_over_limit_drops_after_burst(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: alpha\r\n") };
	struct frame_spec other = { .payload = REQ("Client-ID: beta\r\n") };
	struct client_stats st;

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 3, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(add_client(f, CLIENT_B, "beta", ONE_PER_HOUR, 3, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 3; i++)
		CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	/* Buckets are per client: beta still has its whole burst. */
	CHECK_EQ(run(f, &other), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_ALLOWED), 4);
	CHECK_EQ(counter(f, CLIENT_REASON_RATE), 2);
	TRY(get_stats(f, CLIENT_A, &st));
	CHECK_EQ(st.requests, 5);
	CHECK_EQ(st.drops, 2);
	CHECK_EQ(st.consecutive_drops, 2);
	CHECK_EQ(st.status, CLIENT_STATUS_LIMITED);
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 2);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(f->ev[i].type, CLIENT_EVENT_DROP);
		CHECK_EQ(f->ev[i].reason, CLIENT_REASON_RATE);
		CHECK_EQ(f->ev[i].client_id, CLIENT_A);
		CHECK_EQ(f->ev[i].key_hash, policy_client_key_hash("alpha", 5));
	}
	return 0;
}

static int client_refills_after_time(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: alpha\r\n") };
	struct timespec nap = { .tv_nsec = 120 * 1000000 };
	struct client_stats st;

	/* One request per 50 ms, burst 1: the nap refills exactly one. */
	TRY(add_client(f, CLIENT_A, "alpha", rate_per_sec(20), 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	nanosleep(&nap, NULL);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	TRY(get_stats(f, CLIENT_A, &st));
	CHECK_EQ(st.requests, 4);
	CHECK_EQ(st.drops, 2);
	CHECK_EQ(st.consecutive_drops, 1);
	return 0;
}

static int client_blocked_after_many_drops(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: alpha\r\n") };
	uint8_t frame[FRAME_MAX];
	size_t len = frame_build(&s, frame);
	struct client_stats st;

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run_frame(f, frame, len, 1), TC_ACT_OK);
	CHECK_EQ(run_frame(f, frame, len, CLIENT_BLOCKED_AFTER_DROPS - 1), TC_ACT_SHOT);
	TRY(get_stats(f, CLIENT_A, &st));
	CHECK_EQ(st.consecutive_drops, CLIENT_BLOCKED_AFTER_DROPS - 1);
	CHECK_EQ(st.status, CLIENT_STATUS_LIMITED);
	CHECK_EQ(run_frame(f, frame, len, 1), TC_ACT_SHOT);
	TRY(get_stats(f, CLIENT_A, &st));
	CHECK_EQ(st.consecutive_drops, CLIENT_BLOCKED_AFTER_DROPS);
	CHECK_EQ(st.status, CLIENT_STATUS_BLOCKED);
	CHECK_EQ(st.drops, CLIENT_BLOCKED_AFTER_DROPS);
	return 0;
}

static int leaky_bucket_admits_its_burst(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: alpha\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 2, CLIENT_ALG_LEAKY_BUCKET, 1));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	return 0;
}

static int default_limit_applies_to_client_without_rate(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: alpha\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", 0, 0, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(set_default_limit(f, ONE_PER_HOUR, 2));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	return 0;
}

static int client_without_kernel_limit_passes(struct fx *f)
{
	struct frame_spec off = { .payload = REQ("Client-ID: alpha\r\n") };
	struct frame_spec norate = { .payload = REQ("Client-ID: beta\r\n") };
	struct client_stats st;

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 0));
	TRY(add_client(f, CLIENT_B, "beta", 0, 0, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(run(f, &off), TC_ACT_OK);
		CHECK_EQ(run(f, &norate), TC_ACT_OK);
	}
	CHECK_EQ(counter(f, CLIENT_REASON_CLIENT_OFF), 6);
	TRY(get_stats(f, CLIENT_A, &st));
	CHECK_EQ(st.requests, 3);
	CHECK_EQ(st.drops, 0);
	return 0;
}

static int ipv6_client_is_limited(struct fx *f)
{
	struct frame_spec s = { .family = 6, .payload = REQ("Client-ID: alpha\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	return 0;
}

static int second_http_port_is_inspected(struct fx *f)
{
	struct frame_spec s = { .dport = ALT_HTTP_PORT, .payload = REQ("Client-ID: alpha\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	return 0;
}

/* ---- cases: finding the header ---------------------------------------- */

static int missing_header_passes(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("User-Agent: t\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 3; i++)
		CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NO_HEADER), 3);
	return 0;
}

static int unknown_client_passes(struct fx *f)
{
	struct frame_spec s = { .payload = REQ("Client-ID: nobody\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 3; i++)
		CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_UNKNOWN_CLIENT), 3);
	return 0;
}

/* The second request of a burst-1 client drops only if the header matched. */
static int matches_second(struct fx *f, const char *payload)
{
	struct frame_spec s = { .payload = payload };

	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);
	return 0;
}

static int header_name_case_and_value_blanks(struct fx *f)
{
	TRY(add_client(f, CLIENT_A, "alpha key", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(add_client(f, CLIENT_B, "beta", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(matches_second(f, REQ("cLiEnT-iD: \t alpha key \t \r\n")));
	/* No blank at all, bare LF line ends. */
	TRY(matches_second(f, "GET / HTTP/1.1\nHost: x\nCLIENT-ID:beta\n\n"));
	return 0;
}

static int configured_header_name_is_used(struct fx *f)
{
	struct frame_spec old = { .payload = REQ("Client-ID: alpha\r\n") };

	TRY(set_global(f, 1, CLIENT_LOG_DROPS, "X-Api-Key"));
	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &old), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NO_HEADER), 1);
	TRY(matches_second(f, REQ("x-api-key: alpha\r\n")));

	/* The longest name the kernel matches, and one byte more (left to
	 * the proxy). */
	TRY(set_global(f, 1, CLIENT_LOG_DROPS, "X-Twenty-Two-Byte-Name"));
	TRY(add_client(f, CLIENT_B, "beta", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(matches_second(f, REQ("x-twenty-two-byte-name: beta\r\n")));
	TRY(set_global(f, 1, CLIENT_LOG_DROPS, "X-Twenty-Three-Byte-Nam"));
	CHECK_EQ(strlen("X-Twenty-Three-Byte-Nam"), CLIENT_HEADER_NAME_MAX_LEN + 1);
	CHECK_EQ(run(f, &old), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NO_HEADER), 2);
	return 0;
}

static int first_of_two_headers_wins(struct fx *f)
{
	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(matches_second(f, REQ("Client-ID: alpha\r\nClient-ID: other\r\n")));
	return 0;
}

/* Lookalikes that must not be read as the client-id field. */
static int lookalike_headers_pass(struct fx *f)
{
	static const struct {
		const char *name;
		const char *payload;
		uint32_t reason;
	} cases[] = {
		{ "suffix of another name", REQ("X-Client-ID: alpha\r\n"), CLIENT_REASON_NO_HEADER },
		{ "prefix of another name", REQ("Client-IDs: alpha\r\n"), CLIENT_REASON_NO_HEADER },
		{ "blank before colon", REQ("Client-ID : alpha\r\n"), CLIENT_REASON_NO_HEADER },
		{ "folded continuation line", REQ("X-A: b\r\n Client-ID: alpha\r\n"),
		  CLIENT_REASON_NO_HEADER },
		{ "in the body", REQ("") "Client-ID: alpha\r\n", CLIENT_REASON_NO_HEADER },
		{ "after bare-LF blank line", "GET / HTTP/1.1\nHost: x\n\nClient-ID: alpha\n",
		  CLIENT_REASON_NO_HEADER },
		{ "in the request line", "GET /?Client-ID:alpha HTTP/1.1\r\n\r\n",
		  CLIENT_REASON_NO_HEADER },
		{ "empty value", REQ("Client-ID: \t \r\n"), CLIENT_REASON_NO_HEADER },
		{ "not a request (later segment)", "ha\r\nClient-ID: alpha\r\n\r\n",
		  CLIENT_REASON_NOT_REQUEST },
		{ "lower-case method", "get / HTTP/1.1\r\nClient-ID: alpha\r\n\r\n",
		  CLIENT_REASON_NOT_REQUEST },
		{ "response", "HTTP/1.1 200 OK\r\nClient-ID: alpha\r\n\r\n",
		  CLIENT_REASON_NOT_REQUEST },
		{ "value cut by segment end", "GET / HTTP/1.1\r\nClient-ID: alp",
		  CLIENT_REASON_HEADER_TRUNCATED },
		{ "name cut by segment end", "GET / HTTP/1.1\r\nClient-I",
		  CLIENT_REASON_NO_HEADER },
	};

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct frame_spec s = { .payload = cases[i].payload };
		uint64_t before = counter(f, cases[i].reason);

		for (int n = 0; n < 2; n++) {
			if (run(f, &s) != TC_ACT_OK) {
				fprintf(stderr, "    lookalike '%s' dropped\n", cases[i].name);
				return -1;
			}
		}
		if (counter(f, cases[i].reason) != before + 2) {
			fprintf(stderr, "    lookalike '%s': wrong reason\n", cases[i].name);
			return -1;
		}
	}
	CHECK_EQ(counter(f, CLIENT_REASON_ALLOWED), 0);
	return 0;
}

static int overlong_value_passes(struct fx *f)
{
	char payload[600];
	struct frame_spec s = { .payload = payload };

	snprintf(payload, sizeof(payload), "GET / HTTP/1.1\r\nClient-ID: %0*d\r\n\r\n",
		 CLIENT_FIELD_SCAN_BYTES, 7);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_KEY_TOO_LONG), 1);
	return 0;
}

/* A request whose client-id field's CR lands at payload offset cr_at, with
 * more headers after it so that the segment is longer than the window. */
static void request_with_cr_at(char *buf, size_t cap, size_t cr_at, const char *field)
{
	const char *head = "GET / HTTP/1.1\r\nX-Pad: ";
	size_t pad = cr_at - strlen(head) - strlen("\r\n") - strlen(field);
	size_t n;

	n = (size_t)snprintf(buf, cap, "%s", head);
	memset(buf + n, 'p', pad);
	n += pad;
	n += (size_t)snprintf(buf + n, cap - n, "\r\n%s\r\nX-Fill: %0200d\r\n\r\n", field, 0);
}

static int header_at_window_edge(struct fx *f)
{
	char payload[1024];
	struct frame_spec s = { .payload = payload };

	TRY(add_client(f, CLIENT_A, "edge", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));

	/* CR is the window's last byte: the field is whole, it counts. */
	request_with_cr_at(payload, sizeof(payload), CLIENT_HTTP_WINDOW_BYTES - 1,
			   "Client-ID: edge");
	CHECK(payload[CLIENT_HTTP_WINDOW_BYTES - 1] == '\r');
	CHECK(strlen(payload) > CLIENT_HTTP_WINDOW_BYTES + 100);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_SHOT);

	/* One byte later the value's end is outside: not hashed (a prefix
	 * "edg" must never be taken for a key), passes. */
	TRY(add_client(f, CLIENT_B, "edg", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	request_with_cr_at(payload, sizeof(payload), CLIENT_HTTP_WINDOW_BYTES, "Client-ID: edg");
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_HEADER_TRUNCATED), 2);

	/* The colon is the window's last byte: the value starts outside. */
	request_with_cr_at(payload, sizeof(payload),
			   CLIENT_HTTP_WINDOW_BYTES + strlen(" edg"), "Client-ID: edg");
	CHECK(payload[CLIENT_HTTP_WINDOW_BYTES - 1] == ':');
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_HEADER_TRUNCATED), 3);

	/* The name crosses the edge: no field found. */
	request_with_cr_at(payload, sizeof(payload), CLIENT_HTTP_WINDOW_BYTES + 8,
			   "Client-ID: edg");
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NO_HEADER), 1);
	CHECK_EQ(counter(f, CLIENT_REASON_ALLOWED), 1);
	CHECK_EQ(counter(f, CLIENT_REASON_RATE), 1);
	return 0;
}

static int frame_padding_is_not_payload(struct fx *f)
{
	struct frame_spec s = { .pad_bytes = 32 };

	TRY(add_client(f, CLIENT_A, "pad", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NO_PAYLOAD), 2);
	return 0;
}

/* ---- cases: what is not inspected -------------------------------------- */

static int non_http_port_passes_untouched(struct fx *f)
{
	struct frame_spec s = { .dport = 22, .payload = REQ("Client-ID: alpha\r\n") };
	struct client_stats st;

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 3; i++)
		CHECK_EQ(run(f, &s), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NOT_HTTP), 3);
	CHECK(get_stats(f, CLIENT_A, &st) < 0);
	return 0;
}

static int non_tcp_passes(struct fx *f)
{
	struct frame_spec udp = { .l4 = IPPROTO_UDP, .payload = REQ("Client-ID: alpha\r\n") };
	struct frame_spec icmp = { .l4 = IPPROTO_ICMP };
	struct frame_spec icmp6 = { .family = 6, .l4 = IPPROTO_ICMPV6 };
	/* IPv6 with an extension header first: not walked, passes. */
	struct frame_spec ext6 = { .family = 6, .l4 = IPPROTO_ROUTING };
	uint8_t arp[60] = { 0 };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	for (int i = 0; i < 2; i++)
		CHECK_EQ(run(f, &udp), TC_ACT_OK);
	CHECK_EQ(run(f, &icmp), TC_ACT_OK);
	CHECK_EQ(run(f, &icmp6), TC_ACT_OK);
	CHECK_EQ(run(f, &ext6), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NOT_TCP), 5);
	frame_put16(arp + 12, ETH_P_ARP);
	CHECK_EQ(run_frame(f, arp, sizeof(arp), 1), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NOT_IP), 1);
	return 0;
}

static int vlan_tagged_packets_are_parsed(struct fx *f)
{
	struct frame_spec q = { .vlan_tpid = { ETH_P_8021Q }, .src = "10.1.0.5" };
	struct frame_spec qinq = { .vlan_tpid = { ETH_P_8021AD, ETH_P_8021Q }, .family = 6,
				   .src = "2001:db8:aa::5" };
	struct frame_spec client = { .vlan_tpid = { ETH_P_8021AD, ETH_P_8021Q },
				     .payload = REQ("Client-ID: alpha\r\n") };
	/* Three tags: the third is left unparsed, as "not IP". */
	struct frame_spec three = { .vlan_tpid = { ETH_P_8021Q, ETH_P_8021Q } };
	uint8_t frame[FRAME_MAX];
	size_t len;

	TRY(deny_v4(f, "10.1.0.0", 16, 0));
	TRY(deny_v6(f, "2001:db8:aa::", 48));
	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &q), TC_ACT_SHOT);
	CHECK_EQ(run(f, &qinq), TC_ACT_SHOT);
	CHECK_EQ(run(f, &client), TC_ACT_OK);
	CHECK_EQ(run(f, &client), TC_ACT_SHOT);
	len = frame_build(&three, frame);
	memmove(frame + 20, frame + 16, len - 16);
	frame_put16(frame + 16, ETH_P_8021Q);
	frame_put16(frame + 18, 7);
	CHECK_EQ(run_frame(f, frame, len + 4, 1), TC_ACT_OK);
	CHECK_EQ(counter(f, CLIENT_REASON_NOT_IP), 1);
	CHECK_EQ(counter(f, CLIENT_REASON_DENY), 2);
	return 0;
}

/* Headers cut short or inconsistent: every one passes, with its reason,
 * even from a source that would be denied or a client over its limit. */
static int truncated_and_malformed_headers_pass(struct fx *f)
{
	static const char req[] = REQ("Client-ID: alpha\r\n");
	const struct {
		const char *name;
		struct frame_spec s;
		uint32_t reason;
	} cases[] = {
		/* BPF_PROG_RUN refuses an IP ethertype frame shorter than its
		 * IP header, so short IP headers go behind a VLAN tag. */
		{ "ethernet and tag only", { .vlan_tpid = { ETH_P_8021Q }, .cut_to = 18 },
		  CLIENT_REASON_TRUNCATED },
		{ "vlan tag cut", { .vlan_tpid = { ETH_P_8021Q }, .cut_to = 16 },
		  CLIENT_REASON_TRUNCATED },
		{ "second vlan tag cut", { .vlan_tpid = { ETH_P_8021AD, ETH_P_8021Q }, .cut_to = 20 },
		  CLIENT_REASON_TRUNCATED },
		{ "ipv4 header cut", { .vlan_tpid = { ETH_P_8021Q }, .cut_to = 18 + 19 },
		  CLIENT_REASON_TRUNCATED },
		{ "ipv6 header cut", { .family = 6, .vlan_tpid = { ETH_P_8021Q }, .cut_to = 18 + 39 },
		  CLIENT_REASON_TRUNCATED },
		{ "ipv4 options cut", { .ihl = 15, .cut_to = 14 + 40 }, CLIENT_REASON_TRUNCATED },
		{ "tcp header cut", { .cut_to = 14 + 20 + 10 }, CLIENT_REASON_TRUNCATED },
		{ "ipv6 tcp header cut", { .family = 6, .cut_to = 14 + 40 + 10 },
		  CLIENT_REASON_TRUNCATED },
		{ "payload cut (tot_len beyond frame)", { .payload = req, .cut_to = 14 + 40 + 30 },
		  CLIENT_REASON_TRUNCATED },
		{ "ipv4 version 5", { .version = 5 }, CLIENT_REASON_MALFORMED },
		{ "ipv6 version 4", { .family = 6, .version = 4 }, CLIENT_REASON_MALFORMED },
		{ "ihl 4", { .ihl = 4, .payload = req }, CLIENT_REASON_MALFORMED },
		{ "ihl 0 words", { .ihl = 0x10, .payload = req }, CLIENT_REASON_MALFORMED },
		{ "tot_len shorter than ihl", { .ihl = 15, .ip_len_delta = -(60 + 20) + 40 },
		  CLIENT_REASON_MALFORMED },
		{ "tot_len ends inside tcp header", { .ip_len_delta = -10, .pad_bytes = 20 },
		  CLIENT_REASON_MALFORMED },
		{ "doff 4", { .doff = 4, .payload = req }, CLIENT_REASON_MALFORMED },
		{ "doff beyond datagram", { .doff = 15, .ip_len_delta = -40, .pad_bytes = 60 },
		  CLIENT_REASON_MALFORMED },
		{ "ipv6 doff beyond datagram", { .family = 6, .doff = 15, .ip_len_delta = -40,
						 .pad_bytes = 60 },
		  CLIENT_REASON_MALFORMED },
	};

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(set_global(f, 1, CLIENT_LOG_ERRORS, "client-id"));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t before = counter(f, cases[i].reason);
		int verdict;

		for (int n = 0; n < 2; n++) {
			verdict = run(f, &cases[i].s);
			if (verdict != TC_ACT_OK) {
				fprintf(stderr, "    '%s': verdict %d\n", cases[i].name, verdict);
				return -1;
			}
		}
		if (counter(f, cases[i].reason) != before + 2) {
			fprintf(stderr, "    '%s': reason counter %llu, want %llu\n", cases[i].name,
				(unsigned long long)counter(f, cases[i].reason),
				(unsigned long long)before + 2);
			return -1;
		}
	}
	/* At log level "errors" each one is reported. */
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 2 * (int)(sizeof(cases) / sizeof(cases[0])));
	for (int i = 0; i < f->n_ev; i++)
		CHECK_EQ(f->ev[i].type, CLIENT_EVENT_ERROR);
	return 0;
}

static int ip_and_tcp_options_are_skipped(struct fx *f)
{
	struct frame_spec v4 = { .ihl = 15, .doff = 15, .payload = REQ("Client-ID: alpha\r\n") };
	struct frame_spec v6 = { .family = 6, .doff = 11, .payload = REQ("Client-ID: beta\r\n") };

	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(add_client(f, CLIENT_B, "beta", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	CHECK_EQ(run(f, &v4), TC_ACT_OK);
	CHECK_EQ(run(f, &v4), TC_ACT_SHOT);
	CHECK_EQ(run(f, &v6), TC_ACT_OK);
	CHECK_EQ(run(f, &v6), TC_ACT_SHOT);
	return 0;
}

static int global_switch_off_passes_everything(struct fx *f)
{
	struct frame_spec denied = { .src = "10.1.0.5" };
	struct frame_spec client = { .payload = REQ("Client-ID: alpha\r\n") };
	struct client_stats st;

	TRY(deny_v4(f, "10.1.0.0", 16, 0));
	TRY(add_client(f, CLIENT_A, "alpha", ONE_PER_HOUR, 1, CLIENT_ALG_TOKEN_BUCKET, 1));
	TRY(set_global(f, 0, CLIENT_LOG_DEBUG, "client-id"));
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(run(f, &denied), TC_ACT_OK);
		CHECK_EQ(run(f, &client), TC_ACT_OK);
	}
	CHECK_EQ(counter(f, CLIENT_REASON_DISABLED), 6);
	CHECK_EQ(counted_packets(f), 6);
	CHECK(get_stats(f, CLIENT_A, &st) < 0);
	TRY(poll_events(f));
	CHECK_EQ(f->n_ev, 0);
	/* Switched back on, enforcement resumes. */
	TRY(set_global(f, 1, CLIENT_LOG_DROPS, "client-id"));
	CHECK_EQ(run(f, &denied), TC_ACT_SHOT);
	return 0;
}

/* ---- case: the hash both sides compute --------------------------------- */

static int kernel_hash_equals_policy_client_key_hash(struct fx *f)
{
#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	static const char *keys[] = {
		"a", "Alpha-Key/42", "tenant:7f3a9c\x01\xff", "with inner  blanks",
		HEX64 HEX64, /* 128 bytes: the longest key the kernel hashes */
	};
#undef HEX64
	char payload[512];
	struct frame_spec s = { .payload = payload };

	TRY(set_global(f, 1, CLIENT_LOG_DEBUG, "client-id"));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(payload, sizeof(payload), REQ("Client-ID:  \t%s\t \r\n"), keys[i]);
		CHECK_EQ(run(f, &s), TC_ACT_OK);
		TRY(poll_events(f));
		CHECK_EQ(f->n_ev, 1);
		CHECK_EQ(f->ev[0].type, CLIENT_EVENT_DEBUG);
		CHECK_EQ(f->ev[0].reason, CLIENT_REASON_UNKNOWN_CLIENT);
		CHECK_EQ(f->ev[0].key_hash, policy_client_key_hash(keys[i], strlen(keys[i])));
	}
	CHECK_EQ(strlen(keys[4]), CLIENT_KEY_MAX_BYTES);
	return 0;
}

/* ---- driver ---------------------------------------------------------- */

static const struct {
	const char *name;
	int (*fn)(struct fx *f);
} cases[] = {
#define CASE(fn) { #fn, fn }
	CASE(denied_ipv4_source_drops),
	CASE(denied_ipv6_source_drops),
	CASE(allowed_source_passes),
	CASE(deny_entry_expires_by_itself),
	CASE(deny_applies_to_later_fragments),
	CASE(deny_filter_gates_the_trie),
	CASE(deny_filter_slots_by_prefix_length),
	CASE(client_under_limit_passes),
	CASE(client_over_limit_drops_after_burst),
	CASE(client_refills_after_time),
	CASE(client_blocked_after_many_drops),
	CASE(leaky_bucket_admits_its_burst),
	CASE(default_limit_applies_to_client_without_rate),
	CASE(client_without_kernel_limit_passes),
	CASE(ipv6_client_is_limited),
	CASE(second_http_port_is_inspected),
	CASE(missing_header_passes),
	CASE(unknown_client_passes),
	CASE(header_name_case_and_value_blanks),
	CASE(configured_header_name_is_used),
	CASE(first_of_two_headers_wins),
	CASE(lookalike_headers_pass),
	CASE(overlong_value_passes),
	CASE(header_at_window_edge),
	CASE(frame_padding_is_not_payload),
	CASE(non_http_port_passes_untouched),
	CASE(non_tcp_passes),
	CASE(vlan_tagged_packets_are_parsed),
	CASE(truncated_and_malformed_headers_pass),
	CASE(ip_and_tcp_options_are_skipped),
	CASE(global_switch_off_passes_everything),
	CASE(kernel_hash_equals_policy_client_key_hash),
#undef CASE
};

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	int failed = 0, ran = 0;
	struct fx f;
	int err;

	if (geteuid() != 0) {
		printf("SKIP: BPF_PROG_RUN needs root (CAP_BPF and CAP_NET_ADMIN)\n");
		return 77;
	}
	libbpf_set_print(libbpf_quiet);
	err = fx_open(&f);
	if (err == -EPERM) {
		printf("SKIP: loading BPF programs is not permitted here\n");
		return 77;
	}
	if (err < 0) {
		fprintf(stderr, "FAIL: cannot load tc_ingress: %s\n", strerror(-err));
		return 1;
	}
	fx_close(&f);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (only && strcmp(only, cases[i].name) != 0)
			continue;
		ran++;
		if (fx_open(&f) < 0) {
			printf("FAIL %s (setup)\n", cases[i].name);
			failed++;
			continue;
		}
		if (cases[i].fn(&f) < 0) {
			printf("FAIL %s\n", cases[i].name);
			failed++;
		} else {
			printf("ok   %s\n", cases[i].name);
		}
		fx_close(&f);
	}
	printf("%d of %d cases passed\n", ran - failed, ran);
	return failed || ran == 0 ? 1 : 0;
}
