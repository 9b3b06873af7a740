/* ratelimit.h - per-client limit in the kernel: GCRA over one u64 per client
 * (the theoretical arrival time, TAT), updated with compare-and-swap so that
 * CPUs racing on one client admit exactly what one CPU would, without a lock.
 * Token and leaky buckets admit the same requests (as in lib/limiter.c).
 */
#ifndef SLUICE_BPF_RATELIMIT_H
#define SLUICE_BPF_RATELIMIT_H

#include "common.h"

/* A failed CAS means another CPU admitted a request of this client
 * meanwhile; after this many the packet passes (the proxy still counts it). */
#define RATELIMIT_CAS_TRIES 4

static __always_inline struct client_bucket *ratelimit_bucket(__u64 client_id)
{
	struct client_bucket *b = bpf_map_lookup_elem(&rate_buckets, &client_id);
	struct client_bucket fresh = { .tat_ns = 0 };

	if (b)
		return b;
	/* Two CPUs may both miss: NOEXIST lets only one insert, both then use
	 * the same entry. */
	bpf_map_update_elem(&rate_buckets, &client_id, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&rate_buckets, &client_id);
}

/* min(interval_ns * burst, CLIENT_DEPTH_MAX_NS) without a division (the
 * one per packet left is the interval's): the product in two 32-bit halves
 * of the interval, each of which fits in 64 bits. burst < 2^32. */
static __always_inline __u64 ratelimit_depth(__u64 interval_ns, __u64 burst)
{
	__u64 hi = (interval_ns >> 32) * burst;
	__u64 lo = (interval_ns & 0xffffffffull) * burst;
	__u64 depth_ns;

	if (hi >= (CLIENT_DEPTH_MAX_NS + 1) >> 32 || lo > CLIENT_DEPTH_MAX_NS)
		return CLIENT_DEPTH_MAX_NS;
	depth_ns = (hi << 32) + lo; /* both < 2^56: no overflow */
	return depth_ns > CLIENT_DEPTH_MAX_NS ? CLIENT_DEPTH_MAX_NS : depth_ns;
}

/* Takes one request at now_ns: -CLIENT_REASON_ALLOWED, _RATE, _CLIENT_OFF
 * or _CONTENDED. */
static __always_inline int ratelimit_take(__u64 client_id, const struct client_config *cc,
					  const struct client_global_config *g, __u64 now_ns)
{
	__u64 rate = cc->rate_per_sec_fp32;
	__u64 burst = cc->burst;
	__u64 interval_ns, depth_ns;
	struct client_bucket *b;

	if (!cc->enabled)
		return -CLIENT_REASON_CLIENT_OFF;
	if (cc->algorithm != CLIENT_ALG_TOKEN_BUCKET && cc->algorithm != CLIENT_ALG_LEAKY_BUCKET)
		return -CLIENT_REASON_CLIENT_OFF;
	if (rate == 0) {
		rate = g->default_rate_per_sec_fp32;
		burst = g->default_burst;
	}
	if (rate == 0)
		return -CLIENT_REASON_CLIENT_OFF;
	if (burst == 0)
		burst = 1;
	interval_ns = CLIENT_NS_PER_SEC_FP32 / rate;
	if (interval_ns == 0)
		interval_ns = 1;
	depth_ns = ratelimit_depth(interval_ns, burst);

	b = ratelimit_bucket(client_id);
	if (!b)
		return -CLIENT_REASON_CONTENDED;
	for (int i = 0; i < RATELIMIT_CAS_TRIES; i++) {
		__u64 tat_ns = READ_ONCE(b->tat_ns);
		__u64 next_ns = (tat_ns > now_ns ? tat_ns : now_ns) + interval_ns;

		/* Admitting would put the bucket more than burst intervals
		 * ahead of now. A refusal leaves the TAT alone. */
		if (next_ns - now_ns > depth_ns)
			return -CLIENT_REASON_RATE;
		if (__sync_val_compare_and_swap(&b->tat_ns, tat_ns, next_ns) == tat_ns)
			return -CLIENT_REASON_ALLOWED;
	}
	return -CLIENT_REASON_CONTENDED;
}

#endif
