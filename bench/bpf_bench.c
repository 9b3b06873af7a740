/* bpf_bench.c - benchmark suite 'bpf': the TC ingress program under
 * BPF_PROG_RUN with 100,000 clients installed, ns per packet for a non-TCP
 * packet, TCP to a port that is not inspected, and an HTTP request carrying
 * a known client's id; then, not targets, the floor (global switch off) and
 * a UDP packet from a /16 that holds deny entries (the pre-filter sends it
 * to the trie). The deny entries set their pre-filter bits as the loader
 * does. The kernel reports the mean time of `repeat` runs;
 * the median of several such means is printed. Needs root (exit 77).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bench_record.h"
#include "client_abi.h"
#include "frames.h"
#include "policy.h"
#include "tc_ingress.skel.h"

#define N_CLIENTS 100000
#define N_DENY 1000
#define REPEAT 1000000
#define ROUNDS 5

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int fill_maps(struct tc_ingress *skel)
{
	struct client_global_config g = { .enabled = 1, .log_level = CLIENT_LOG_DROPS,
					  .max_clients = CLIENT_MAX_CLIENTS };
	uint32_t zero = 0;
	/* Never over the limit: the benchmark measures the admit path. */
	struct client_config cc = { .rate_per_sec_fp32 = 1000000000ull << CLIENT_RATE_FP_SHIFT,
				    .burst = 1000000, .enabled = 1,
				    .algorithm = CLIENT_ALG_TOKEN_BUCKET };
	char key[32];

	g.http_ports[0] = 80;
	g.client_id_header_len = 9;
	memcpy(g.client_id_header, "client-id", 9);
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.global_config), &zero, &g, BPF_ANY) < 0)
		return -errno;
	for (uint64_t id = 1; id <= N_CLIENTS; id++) {
		uint64_t h;

		snprintf(key, sizeof(key), "key-%06lu", (unsigned long)id);
		h = policy_client_key_hash(key, strlen(key));
		if (bpf_map_update_elem(bpf_map__fd(skel->maps.client_lookup), &h, &id, BPF_ANY) < 0 ||
		    bpf_map_update_elem(bpf_map__fd(skel->maps.client_config), &id, &cc, BPF_ANY) < 0)
			return -errno;
	}
	for (uint32_t i = 0; i < N_DENY; i++) {
		struct client_deny_v4_key k = { .prefixlen = 24,
						.addr = { 100, (uint8_t)(64 + i / 256), (uint8_t)i, 0 } };
		struct client_deny_value v = { 0 };
		/* The pre-filter bit of the entry's /16, as the loader sets it. */
		uint32_t slot = (uint32_t)k.addr[0] << 8 | k.addr[1];
		uint32_t word = CLIENT_DENY_FILTER_V4_BASE + slot / 64;
		uint64_t bits = 0;

		if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.deny_filter), &word, &bits) < 0)
			return -errno;
		bits |= 1ull << (slot % 64);
		if (bpf_map_update_elem(bpf_map__fd(skel->maps.deny_filter), &word, &bits,
					BPF_ANY) < 0 ||
		    bpf_map_update_elem(bpf_map__fd(skel->maps.deny_v4), &k, &v, BPF_ANY) < 0)
			return -errno;
	}
	return 0;
}

/* Median over ROUNDS of the kernel's mean ns per run; expects `want`. */
static long bench_frame(int prog_fd, const struct frame_spec *s, int want)
{
	uint8_t frame[FRAME_MAX];
	size_t len = frame_build(s, frame);
	uint32_t ns[ROUNDS];

	for (int r = 0; r < ROUNDS; r++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame,
			    .data_size_in = (uint32_t)len, .repeat = REPEAT);

		if (bpf_prog_test_run_opts(prog_fd, &opts) < 0) {
			fprintf(stderr, "bpf_bench: BPF_PROG_RUN failed: %s\n", strerror(errno));
			return -1;
		}
		if ((int)opts.retval != want) {
			fprintf(stderr, "bpf_bench: verdict %d, want %d\n", (int)opts.retval, want);
			return -1;
		}
		ns[r] = opts.duration;
	}
	qsort(ns, ROUNDS, sizeof(ns[0]), cmp_u32);
	return ns[ROUNDS / 2];
}

static void record(long non_tcp, long tcp_other, long http)
{
	char cols[128];

	snprintf(cols, sizeof(cols), "bpf | %ld | %ld | %ld", non_tcp, tcp_other, http);
	bench_record("bpf_bench", "bpf", cols);
}

int main(void)
{
	struct tc_ingress *skel;
	long non_tcp, tcp_other, http, floor_ns, filter_hit;
	struct client_global_config g;
	uint32_t zero = 0;
	int err, fd;

	if (geteuid() != 0) {
		printf("bpf_bench: skipped: loading BPF programs needs root\n");
		return 77;
	}
	skel = tc_ingress__open_and_load();
	if (!skel) {
		printf("bpf_bench: skipped: cannot load tc_ingress: %s\n", strerror(errno));
		return 77;
	}
	err = fill_maps(skel);
	if (err < 0) {
		fprintf(stderr, "bpf_bench: filling maps failed: %s\n", strerror(-err));
		tc_ingress__destroy(skel);
		return 1;
	}
	fd = bpf_program__fd(skel->progs.tc_ingress);
	non_tcp = bench_frame(fd, &(struct frame_spec){ .l4 = IPPROTO_UDP, .dport = 53 },
			      0 /* TC_ACT_OK */);
	tcp_other = bench_frame(fd, &(struct frame_spec){ .dport = 22, .payload = "SSH-2.0-x\r\n" },
				0);
	/* Not a target: a source whose /16 holds deny entries (its filter bit
	 * is set) but which none of them covers, so the trie is walked. */
	filter_hit = bench_frame(fd, &(struct frame_spec){ .l4 = IPPROTO_UDP, .dport = 53,
							    .src = "100.67.240.1" }, 0);
	http = bench_frame(fd, &(struct frame_spec){
		.payload = "GET /api/v1/items HTTP/1.1\r\nHost: api.example.test\r\n"
			   "User-Agent: bench\r\nclient-id: key-042424\r\nAccept: */*\r\n\r\n" }, 0);
	/* The floor, for reading the figures above on a given machine: the
	 * same program with its global switch off does one map lookup and one
	 * counter and returns, so this is BPF_PROG_RUN's own cost per packet
	 * plus that. Not a target; the others minus it is our parsing. */
	floor_ns = -1;
	if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.global_config), &zero, &g) == 0) {
		g.enabled = 0;
		if (bpf_map_update_elem(bpf_map__fd(skel->maps.global_config), &zero, &g,
					BPF_ANY) == 0)
			floor_ns = bench_frame(fd, &(struct frame_spec){ .l4 = IPPROTO_UDP,
									 .dport = 53 }, 0);
	}
	tc_ingress__destroy(skel);
	if (non_tcp < 0 || tcp_other < 0 || http < 0 || floor_ns < 0 || filter_hit < 0)
		return 1;
	printf("bpf_clients: %d\n", N_CLIENTS);
	printf("bpf_ns_non_tcp: %ld\n", non_tcp);
	printf("bpf_ns_tcp_other: %ld\n", tcp_other);
	printf("bpf_ns_http_client: %ld\n", http);
	printf("bpf_ns_floor_disabled: %ld\n", floor_ns);
	printf("bpf_ns_non_tcp_deny_slot: %ld\n", filter_hit);
	record(non_tcp, tcp_other, http);
	return 0;
}
