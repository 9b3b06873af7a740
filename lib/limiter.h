/* limiter.h - rate limiter state shared by every worker, and the three
 * algorithms (token bucket, leaky bucket, sliding window).
 *
 * State lives here, outside policy snapshots, keyed by a 64-bit bucket key
 * (rate limit x client or source): a policy change keeps every bucket. Each
 * bucket is one 64-bit word updated with compare-and-swap, so a limit is
 * exact across threads: N threads admit exactly what one thread would.
 * Time is passed in (nanoseconds, any monotonic origin), so tests drive a
 * synthetic clock. All arithmetic is integer fixed-point.
 */
#ifndef SLUICE_LIMITER_H
#define SLUICE_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* A limit's parameters; derived from a policy_rate_limit (see
 * limiter_params_from_policy) or written by hand in tests. */
struct limiter_params {
	enum policy_algorithm algorithm;
	uint64_t rate;     /* requests per unit, >= 1 */
	uint64_t unit_ns;  /* length of the unit, e.g. 1e9 */
	uint64_t burst;    /* >= 1: bucket depth, or the window limit's slack */
};

void limiter_params_from_policy(const struct policy_rate_limit *rl, struct limiter_params *out);

/* How each algorithm reads the parameters (details in limiter.c):
 * - TOKEN_BUCKET: GCRA; `burst` requests at once, one more every
 *   unit_ns / rate (exact, no rounding to whole ns).
 * - LEAKY_BUCKET: the same admission bound; an admitted request that finds
 *   the bucket non-empty gets delay_ns, its place in a queue draining at
 *   `rate`. limit = burst for both.
 * - SLIDING_WINDOW: admits while prev * (unit_ns - elapsed) / unit_ns + cur
 *   + 1 <= rate; `burst` is ignored, limit = rate; rate is capped at
 *   POLICY_MAX_SLIDING_RATE.
 * Changing a bucket's parameters (or algorithm) keeps what it has used (as
 * time for the buckets, as counts for the window): no fresh burst is
 * granted. Limits of the representation: now_ns is held at
 * LIMITER_NOW_MAX_NS (~6.8 years of CLOCK_MONOTONIC) and a bucket's depth
 * (burst * unit_ns / rate) is capped at LIMITER_DEPTH_MAX_NS (~2.3 years). */
#define LIMITER_NOW_MAX_NS (3ull << 56)
#define LIMITER_DEPTH_MAX_NS ((1ull << 56) - 1)

/* Everything a 429 (or the RateLimit headers of a 200) needs. */
struct limiter_result {
	bool allowed;
	uint64_t limit;           /* requests allowed in a burst (quota) */
	uint64_t remaining;       /* requests that would still be admitted now */
	uint64_t reset_ns;        /* until the bucket is full / the window resets */
	uint64_t retry_after_ns;  /* refused: until one request would pass; else 0 */
	uint64_t delay_ns;        /* LEAKY_BUCKET admitted: pace it by this much */
};

/* One bucket: a single atomic word. Zero-initialised means full/fresh. */
struct limiter_bucket {
	uint64_t state;
};

/* Takes one request from one bucket at time now_ns. Lock-free (CAS loop). */
void limiter_bucket_take(struct limiter_bucket *b, const struct limiter_params *p,
			 uint64_t now_ns, struct limiter_result *out);

/* The table of buckets: a flat open-addressing array of 16-byte slots
 * (key, bucket word), sized for max_buckets when created, so a check on an
 * existing bucket costs one cache miss. No RCU: slots are never freed
 * before limiter_free() (threads registered for RCU are fine too). */
struct limiter;

struct limiter_config {
	size_t max_buckets;    /* cap on live buckets; 0: 1 << 20 */
	uint64_t idle_ttl_ns;  /* a bucket idle (full again) this long may be
				* reclaimed by limiter_sweep(); 0: 10 minutes */
	bool prefault;         /* commit the whole table in limiter_new (see
				* limiter_map_bytes), so no check waits for
				* the first touch of a page; else pages are
				* committed as buckets land on them */
};

/* A key lives within this many slots of its home slot. A new key whose
 * run is all live buckets is refused with -ENOSPC even below max_buckets;
 * with at least twice max_buckets slots that needs a very unlucky run. */
#define LIMITER_PROBE_MAX 32

/* Reserves address space for the next power of two >= 2 * max_buckets
 * slots (24 bytes each: 48 MiB for the default), touched only as buckets
 * are used, in transparent huge pages where the kernel allows (2 MiB at a
 * time). Returns 0, or -ENOMEM (also when max_buckets cannot be mapped). */
int limiter_new(const struct limiter_config *cfg, struct limiter **ret);
void limiter_free(struct limiter *l); /* accepts NULL; no thread may be inside */

/* Bytes the table maps: 24 per slot (the 16-byte slot and its 8-byte unit
 * word), for twice max_buckets slots rounded up to a power of two: 48 MiB
 * by default. With prefault it is all resident from limiter_new on. */
size_t limiter_map_bytes(const struct limiter *l);

/* Takes one request from the bucket `key` (created full on first use).
 * Returns 0; -ENOSPC when the table is at max_buckets, or the new key's
 * LIMITER_PROBE_MAX slots are all taken, and `key` is new (the caller
 * decides: the proxy fails open and counts it). *out is written only on
 * success. Any thread. Lock-free for existing buckets; the first request of
 * a new bucket, and a sliding-window request that changes a bucket's
 * unit_ns and is admitted, take one of 256 mutexes chosen by the key. */
int limiter_check(struct limiter *l, uint64_t key, const struct limiter_params *p,
		  uint64_t now_ns, struct limiter_result *out);

/* A limit's parameters with what every check derives from them (the
 * GCRA grid, interval and depth) computed once: the request path keeps one
 * per rate limit (see snapshot_limit) instead of dividing per request.
 * Plain data, owned by whoever embeds it; valid while `params` are. */
struct limiter_plan {
	struct limiter_params params;
	uint64_t units_per_ns;  /* GCRA grid: TATs are multiples of 1/units_per_ns ns */
	uint64_t interval_u;    /* emission interval, in grid units */
	uint64_t depth_u;       /* bucket depth (burst * interval), in grid units */
	uint64_t limit;         /* limiter_result.limit of a GCRA limit */
};

void limiter_plan_init(const struct limiter_params *p, struct limiter_plan *out);

/* limiter_check() with a prepared plan: same results, same contract. */
int limiter_check_plan(struct limiter *l, uint64_t key, const struct limiter_plan *plan,
		       uint64_t now_ns, struct limiter_result *out);

/* limiter_check_plan() for a caller that remembers where a bucket lives
 * (the decision's per-thread client memo): *slot_hint is 0 or a value this
 * function stored for the same key on an earlier call, on this limiter or
 * another. A hint is tried first and trusted only if that slot holds `key`,
 * so a stale or foreign hint costs just the normal lookup; *slot_hint is
 * then updated (0 when unknown, e.g. for a bucket this call created). Same
 * results and contract as limiter_check_plan(). */
int limiter_check_hint(struct limiter *l, uint64_t key, const struct limiter_plan *plan,
		       uint64_t now_ns, uint32_t *slot_hint, struct limiter_result *out);

/* Starts loading the slot where bucket `key` would be, so that a caller
 * with other work to do before its limiter_check() does not wait for it.
 * A hint: no effect on results. Any thread. */
void limiter_prefetch(const struct limiter *l, uint64_t key);

/* Reclaims buckets idle for idle_ttl_ns (any thread, concurrently with
 * limiter_check, never losing an update). Returns how many. Walks every
 * slot: O(capacity) whatever the count (a few ms for the default size),
 * meant for a background thread. */
size_t limiter_sweep(struct limiter *l, uint64_t now_ns);
/* limiter_sweep in steps: sweeps the next min(max_slots, limiter_slots())
 * slots after where the previous step stopped, wrapping around; returns
 * how many buckets it reclaimed. limiter_slots() / k slots per step make a
 * full pass every k steps, with no stall of milliseconds (and no walk of
 * the whole table through the cache) on a CPU that also serves requests.
 * One stepping thread at a time (the cursor is its own); concurrent with
 * checks and limiter_sweep. */
size_t limiter_sweep_step(struct limiter *l, uint64_t now_ns, size_t max_slots);
/* Slots a full pass visits: the table's capacity plus the two reserved. */
size_t limiter_slots(const struct limiter *l);
/* Live buckets, plus inserts in flight. */
size_t limiter_count(const struct limiter *l);

/* Bucket key of (rate limit, subject): XXH3 of both hashes. */
uint64_t limiter_key(uint64_t rate_limit_key_hash, uint64_t subject_hash);

#endif
