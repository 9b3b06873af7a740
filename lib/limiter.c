/* limiter.c - three exact rate-limit algorithms on one 64-bit word per bucket,
 * and a lock-free table of buckets (liburcu cds_lfht, memb flavour).
 * Invariants: a word changes only by a CAS from the value the decision was
 * made on, so N threads admit what one would; 0 is a full bucket; STATE_DEAD
 * is final, so a key never has two live nodes; all arithmetic is integer. */
#include "limiter.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>
#include <xxhash.h>

__extension__ typedef unsigned __int128 u128;

/*
 * Bucket word encodings.
 *
 * Token and leaky bucket (bit 63 clear): GCRA. The word is the theoretical
 * arrival time (TAT: when the bucket is full again, which is also when the
 * next request would leave a paced queue) in 1/32 ns, rounded down: 63 bits
 * of 1/32 ns hold TAT < 2^58 ns. The stored
 * value does not depend on the limit's parameters, so a changed rate keeps
 * the bucket's debt. Exactness: every TAT is a request time (whole ns) plus
 * whole emission intervals T = unit_ns / rate, so it is a multiple of
 * 1 / R' ns with R' = rate / gcd(rate, unit_ns). When R' <= 32 (3/s, 7/min,
 * 1/h, any rate dividing unit_ns, ...) floor(TAT * 32) determines TAT
 * exactly, so the arithmetic below is exact rational GCRA with no drift.
 * For R' > 32 the interval is rounded up to 1/32 ns: the bucket can only be
 * late, by at most 1/32 ns per request while it stays non-full.
 *
 * Range: now_ns is clamped to LIMITER_NOW_MAX_NS (3 * 2^56 ns, about 6.8
 * years of CLOCK_MONOTONIC; beyond it time stands still for the limiter) and
 * a bucket's depth in time (burst * T) to LIMITER_DEPTH_MAX_NS (2^56 ns,
 * about 2.3 years of refill), so TAT always fits the 63 bits.
 *
 * Sliding window (bit 63 set): [62:40] window number (now_ns / unit_ns)
 * modulo 2^23, [39:20] previous window's count, [19:0] current window's
 * count (counts <= POLICY_MAX_SLIDING_RATE < 2^20). A stored window ahead of
 * now (by less than 2^22) means the clock went backwards or unit_ns changed:
 * its counts are kept, never dropped (see sliding_load); anything further
 * back is an old window. So aliasing needs a bucket idle for 2^22 windows
 * (48 days at one second); the table's sweeper reclaims idle buckets long
 * before (idle_ttl_ns), and even then the effect is stale counts for at most
 * two windows. A unit change that makes the stored window look older than
 * the previous one restarts the counts.
 */
#define FRAC_SHIFT 5
#define FRAC_ONE (1ull << FRAC_SHIFT)
#define SLIDING_TAG (1ull << 63)
#define WIN_BITS 23
#define WIN_MASK ((1ull << WIN_BITS) - 1)
#define WIN_AHEAD (1ull << (WIN_BITS - 1))
#define COUNT_BITS 20
#define COUNT_MASK ((1ull << COUNT_BITS) - 1)
/* Never a live word: a sliding word with counts above 2^20 - 1 > 1e6. */
#define STATE_DEAD UINT64_MAX

#define DEFAULT_MAX_BUCKETS ((size_t)1 << 20)
#define DEFAULT_IDLE_TTL_NS (600ull * 1000000000ull)
#define TABLE_INIT_SIZE (1ul << 10)

_Static_assert(POLICY_MAX_SLIDING_RATE < COUNT_MASK, "sliding counts must fit 20 bits");
_Static_assert(LIMITER_NOW_MAX_NS + LIMITER_DEPTH_MAX_NS < (1ull << (63 - FRAC_SHIFT)),
	       "TAT must fit 63 bits of 1/32 ns");

void limiter_params_from_policy(const struct policy_rate_limit *rl, struct limiter_params *out)
{
	out->algorithm = rl->algorithm;
	out->rate = rl->rate;
	out->unit_ns = rl->unit_ns;
	out->burst = rl->burst;
}

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

static uint64_t div_ceil(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* floor(a * b / c) and its ceiling; 64-bit division when the product fits,
 * which is every policy-sized case. The result must fit 64 bits. */
static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t prod;

	if (!__builtin_mul_overflow(a, b, &prod))
		return prod / c;
	return (uint64_t)((u128)a * b / c);
}

static uint64_t mul_div_ceil(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t prod;

	if (!__builtin_mul_overflow(a, b, &prod))
		return div_ceil(prod, c);
	return (uint64_t)(((u128)a * b + c - 1) / c);
}

/* ---- GCRA (token and leaky bucket) ---- */

/* A limit in GCRA terms, in "units" of 1/units_per_ns ns: the grid every
 * TAT of this limit lies on (see above). Lives on the stack for one call. */
struct gcra {
	uint64_t units_per_ns;  /* R' when exact, else 32 */
	uint64_t interval_u;    /* emission interval T */
	uint64_t depth_u;       /* bucket depth: burst * T (tau) */
	uint64_t now_u;         /* now_ns, clamped */
};

static void gcra_setup(const struct limiter_params *p, uint64_t now_ns, struct gcra *g)
{
	uint64_t rate = p->rate ? p->rate : 1;
	uint64_t unit_ns = p->unit_ns ? p->unit_ns : 1;
	uint64_t burst = p->burst ? p->burst : 1;
	uint64_t rem = unit_ns % rate, depth_max;

	if (rem == 0) {
		g->units_per_ns = 1;
		g->interval_u = unit_ns / rate;
	} else {
		uint64_t common = gcd_u64(rate, rem);
		uint64_t r_reduced = rate / common;

		if (r_reduced <= FRAC_ONE) {
			/* T = unit/rate = (unit/common) / r_reduced ns. */
			g->units_per_ns = r_reduced;
			g->interval_u = unit_ns / common;
		} else {
			/* Rounded up: late by < 1/32 ns per request, never early. */
			g->units_per_ns = FRAC_ONE;
			g->interval_u = mul_div_ceil(unit_ns, FRAC_ONE, rate);
		}
	}
	depth_max = LIMITER_DEPTH_MAX_NS * g->units_per_ns;
	if (g->interval_u > depth_max)
		g->interval_u = depth_max;
	if (__builtin_mul_overflow(burst, g->interval_u, &g->depth_u) || g->depth_u > depth_max)
		g->depth_u = depth_max;
	g->now_u = (now_ns < LIMITER_NOW_MAX_NS ? now_ns : LIMITER_NOW_MAX_NS) * g->units_per_ns;
}

/* The stored 1/32 ns value back on the grid: the smallest grid point not
 * below it, which is exactly the TAT that was stored when units_per_ns <= 32
 * (grid points are at least 1/32 ns apart, the stored value is less than
 * 1/32 ns below its point). Split so no product exceeds 64 bits. */
static uint64_t tat_decode(uint64_t s, uint64_t units_per_ns)
{
	return (s >> FRAC_SHIFT) * units_per_ns +
	       (((s & (FRAC_ONE - 1)) * units_per_ns + FRAC_ONE - 1) >> FRAC_SHIFT);
}

/* floor(tat_u * 32 / units_per_ns), split likewise. */
static uint64_t tat_encode(uint64_t tat_u, uint64_t units_per_ns)
{
	if (units_per_ns == 1)
		return tat_u << FRAC_SHIFT;
	return (tat_u / units_per_ns) * FRAC_ONE + (tat_u % units_per_ns) * FRAC_ONE / units_per_ns;
}

static void sliding_load(uint64_t s, uint64_t unit_ns, uint64_t now_ns, uint64_t *win,
			 uint64_t *elapsed_ns, uint64_t *prev, uint64_t *cur);

/* TAT (in units) of a word the sliding window wrote: its estimate becomes
 * debt, rounded up, so switching algorithm never grants a fresh burst. */
static uint64_t tat_from_sliding(uint64_t s, const struct limiter_params *p, const struct gcra *g)
{
	uint64_t unit_ns = p->unit_ns ? p->unit_ns : 1;
	uint64_t win, elapsed, prev, cur, used, debt;
	uint64_t now_ns = g->now_u / g->units_per_ns;

	sliding_load(s, unit_ns, now_ns, &win, &elapsed, &prev, &cur);
	used = cur + mul_div_ceil(prev, unit_ns - elapsed, unit_ns);
	if (__builtin_mul_overflow(used, g->interval_u, &debt) || debt > g->depth_u)
		debt = g->depth_u;
	return g->now_u + debt;
}

/* One GCRA step on *word. Returns false (and leaves *out alone) when the
 * word is STATE_DEAD. */
static bool gcra_take(uint64_t *word, const struct limiter_params *p, uint64_t now_ns,
		      struct limiter_result *out)
{
	struct gcra g;
	uint64_t s, tat, base, next, after;
	bool allowed;

	gcra_setup(p, now_ns, &g);
	s = __atomic_load_n(word, __ATOMIC_RELAXED);
	for (;;) {
		if (s == STATE_DEAD)
			return false;
		if (s & SLIDING_TAG)
			tat = tat_from_sliding(s, p, &g);
		else
			tat = tat_decode(s, g.units_per_ns);
		base = tat > g.now_u ? tat : g.now_u;
		next = base + g.interval_u;
		allowed = next - g.now_u <= g.depth_u;
		if (!allowed) {
			after = base;
			break;
		}
		/* Relaxed is enough: the word is the whole state and publishes
		 * nothing else; the CAS alone makes decisions linearizable. */
		if (__atomic_compare_exchange_n(word, &s, tat_encode(next, g.units_per_ns), true,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
			after = next;
			break;
		}
	}

	uint64_t headroom_u = g.now_u + g.depth_u;

	out->allowed = allowed;
	out->limit = g.depth_u / g.interval_u;
	out->remaining = headroom_u >= after ? (headroom_u - after) / g.interval_u : 0;
	out->reset_ns = after > g.now_u ? div_ceil(after - g.now_u, g.units_per_ns) : 0;
	/* Refused means tat > now. A request at t passes once
	 * tat + T - tau <= t: the first whole ns is exact on the grid. */
	out->retry_after_ns = 0;
	if (!allowed)
		out->retry_after_ns = div_ceil(base + g.interval_u - g.depth_u, g.units_per_ns) -
				      g.now_u / g.units_per_ns;
	/* The leaky bucket's request leaves when those queued before it have
	 * (at the old TAT); the token bucket never paces. */
	out->delay_ns = 0;
	if (allowed && p->algorithm == POLICY_ALG_LEAKY_BUCKET && base > g.now_u)
		out->delay_ns = div_ceil(base - g.now_u, g.units_per_ns);
	return true;
}

/* ---- sliding window ---- */

static uint64_t sliding_rate(const struct limiter_params *p)
{
	if (p->rate == 0)
		return 1;
	return p->rate < POLICY_MAX_SLIDING_RATE ? p->rate : POLICY_MAX_SLIDING_RATE;
}

/* Decodes a word as of now: the window to judge in (modulo 2^23), how far
 * into it, and the two counts rolled forward to it. */
static void sliding_load(uint64_t s, uint64_t unit_ns, uint64_t now_ns, uint64_t *win,
			 uint64_t *elapsed_ns, uint64_t *prev, uint64_t *cur)
{
	uint64_t now_win = (now_ns / unit_ns) & WIN_MASK, ahead;

	*win = now_win;
	*elapsed_ns = now_ns % unit_ns;
	*prev = 0;
	*cur = 0;
	if (s == 0 || !(s & SLIDING_TAG))
		return;
	uint64_t s_win = (s >> (2 * COUNT_BITS)) & WIN_MASK;
	uint64_t s_prev = (s >> COUNT_BITS) & COUNT_MASK, s_cur = s & COUNT_MASK;

	ahead = (s_win - now_win) & WIN_MASK;
	if (ahead == 0) {
		*prev = s_prev;
		*cur = s_cur;
	} else if (ahead == 1) {
		/* Another thread's clock already crossed into the next window:
		 * judge at the start of that window, its strictest point, and
		 * never move the word back (its count belongs there). */
		*win = s_win;
		*elapsed_ns = 0;
		*prev = s_prev;
		*cur = s_cur;
	} else if (ahead < WIN_AHEAD) {
		/* Further ahead: the clock went far back, or unit_ns changed.
		 * Keep both counts in the current window, so nothing is
		 * forgotten and nothing stays stuck in a window far ahead. */
		*prev = s_prev;
		*cur = s_cur;
	} else if (ahead == WIN_MASK) {
		*prev = s_cur; /* stored window is the previous one */
	}
}

static uint64_t sliding_encode(uint64_t win, uint64_t prev, uint64_t cur)
{
	return SLIDING_TAG | win << (2 * COUNT_BITS) | prev << COUNT_BITS | cur;
}

/* Debt of a GCRA word as a count in the current window, rounded up (see
 * tat_from_sliding for why). */
static uint64_t sliding_from_gcra(uint64_t s, uint64_t rate, uint64_t unit_ns, uint64_t now_ns)
{
	uint64_t now_frac, used;

	if (now_ns > LIMITER_NOW_MAX_NS)
		now_ns = LIMITER_NOW_MAX_NS;
	now_frac = now_ns << FRAC_SHIFT;
	if (s <= now_frac)
		return 0;
	/* (tat - now) / (unit / rate), the gap in 1/32 ns. */
	used = (uint64_t)(((u128)(s - now_frac) * rate + (u128)unit_ns * FRAC_ONE - 1) /
			  ((u128)unit_ns * FRAC_ONE));
	return used < rate ? used : rate;
}

static bool sliding_take(uint64_t *word, const struct limiter_params *p, uint64_t now_ns,
			 struct limiter_result *out)
{
	uint64_t rate = sliding_rate(p);
	uint64_t unit_ns = p->unit_ns ? p->unit_ns : 1;
	uint64_t s, win, elapsed, prev, cur;
	u128 limit_scaled = (u128)rate * unit_ns;
	bool allowed;

	s = __atomic_load_n(word, __ATOMIC_RELAXED);
	for (;;) {
		if (s == STATE_DEAD)
			return false;
		sliding_load(s, unit_ns, now_ns, &win, &elapsed, &prev, &cur);
		if (s && !(s & SLIDING_TAG))
			cur = sliding_from_gcra(s, rate, unit_ns, now_ns);
		/* estimate + 1 <= rate, scaled by unit_ns to stay exact:
		 * prev * (unit - elapsed) + (cur + 1) * unit <= rate * unit. */
		allowed = (u128)prev * (unit_ns - elapsed) + (u128)(cur + 1) * unit_ns <= limit_scaled;
		if (!allowed)
			break;
		/* Relaxed: see gcra_take. */
		if (__atomic_compare_exchange_n(word, &s, sliding_encode(win, prev, cur + 1), true,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
			cur++;
			break;
		}
	}

	uint64_t prev_weight = mul_div_ceil(prev, unit_ns - elapsed, unit_ns);

	out->allowed = allowed;
	out->limit = rate;
	out->remaining = rate >= cur + prev_weight ? rate - cur - prev_weight : 0;
	out->reset_ns = unit_ns - elapsed;
	out->delay_ns = 0;
	if (allowed) {
		out->retry_after_ns = 0;
	} else if (cur < rate) {
		/* Later in this window the previous count weighs less: the
		 * first elapsed' with prev * (unit - elapsed') <=
		 * (rate - 1 - cur) * unit. prev > 0 here, or it would pass. */
		uint64_t at = unit_ns - mul_div(rate - 1 - cur, unit_ns, prev);

		out->retry_after_ns = at - elapsed;
	} else {
		/* Not before the next window, where this count is the previous
		 * one: cur * (unit - elapsed'') <= (rate - 1) * unit. */
		uint64_t at = unit_ns - mul_div(rate - 1, unit_ns, cur);

		out->retry_after_ns = unit_ns - elapsed + at;
	}
	return true;
}

static bool bucket_take(uint64_t *word, const struct limiter_params *p, uint64_t now_ns,
			struct limiter_result *out)
{
	if (p->algorithm == POLICY_ALG_SLIDING_WINDOW)
		return sliding_take(word, p, now_ns, out);
	return gcra_take(word, p, now_ns, out);
}

void limiter_bucket_take(struct limiter_bucket *b, const struct limiter_params *p,
			 uint64_t now_ns, struct limiter_result *out)
{
	bool live = bucket_take(&b->state, p, now_ns, out);

	assert(live); /* only table nodes are ever marked dead */
	(void)live;
}

/* ---- the table ---- */

/* One bucket in the table, a cache line of its own so that hot keys do not
 * share lines. Owned by the table; lives until a sweep marks it dead and an
 * RCU grace period has passed, or until limiter_free(). */
struct limiter_node {
	struct cds_lfht_node lfht;
	uint64_t key;
	uint64_t state;           /* the bucket word; atomic */
	uint64_t unit_ns;         /* last sliding-window unit seen, for sweeps; relaxed */
	struct limiter_node *free_next; /* limiter_free's list */
	struct rcu_head rcu;
} __attribute__((aligned(64)));

/* Owned by the creator (limiter_new/limiter_free); lives until
 * limiter_free(). */
struct limiter {
	struct cds_lfht *ht;
	size_t max_buckets;
	uint64_t idle_ttl_ns;
	/* Written on insert and sweep only, so kept off the line every check
	 * reads. Counts live nodes plus inserts in flight. */
	size_t count __attribute__((aligned(64)));
	uint64_t swept_total;     /* nodes handed to call_rcu; atomic */
};

static int node_match(struct cds_lfht_node *ht_node, const void *key)
{
	const struct limiter_node *n = caa_container_of(ht_node, struct limiter_node, lfht);

	/* A dead node is invisible: a new live node may take its key. */
	return n->key == *(const uint64_t *)key &&
	       __atomic_load_n(&n->state, __ATOMIC_RELAXED) != STATE_DEAD;
}

int limiter_new(const struct limiter_config *cfg, struct limiter **ret)
{
	struct limiter *l;

	l = aligned_alloc(64, sizeof(*l));
	if (!l)
		return -ENOMEM;
	memset(l, 0, sizeof(*l));
	l->max_buckets = cfg && cfg->max_buckets ? cfg->max_buckets : DEFAULT_MAX_BUCKETS;
	l->idle_ttl_ns = cfg && cfg->idle_ttl_ns ? cfg->idle_ttl_ns : DEFAULT_IDLE_TTL_NS;
	l->ht = cds_lfht_new_flavor(TABLE_INIT_SIZE, TABLE_INIT_SIZE, 0,
				    CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
				    &urcu_memb_flavor, NULL);
	if (!l->ht) {
		free(l);
		return -ENOMEM;
	}
	*ret = l;
	return 0;
}

void limiter_free(struct limiter *l)
{
	struct cds_lfht_iter iter;
	struct limiter_node *n, *doomed = NULL;
	int r;

	if (!l)
		return;
	/* No thread is inside; the read lock only keeps the walk within the
	 * API's rules. Nodes are freed after the table is gone, so a resize
	 * the deletions started cannot touch freed memory. */
	urcu_memb_read_lock();
	cds_lfht_for_each_entry(l->ht, &iter, n, lfht) {
		if (cds_lfht_del(l->ht, &n->lfht) == 0 &&
		    __atomic_load_n(&n->state, __ATOMIC_RELAXED) != STATE_DEAD) {
			n->free_next = doomed;
			doomed = n;
		}
	}
	urcu_memb_read_unlock();
	r = cds_lfht_destroy(l->ht, NULL);
	assert(r == 0);
	(void)r;
	while (doomed) {
		n = doomed;
		doomed = n->free_next;
		free(n);
	}
	/* Swept nodes still waiting for their grace period are freed by
	 * call_rcu workers; wait so none outlives its table. */
	if (__atomic_load_n(&l->swept_total, __ATOMIC_RELAXED))
		urcu_memb_barrier();
	free(l);
}

/* Inserts a new bucket for `key` holding this request. Returns 0 (out
 * filled), -EAGAIN when another thread's live node won (take from it
 * instead), -ENOSPC, -ENOMEM. */
static int insert_bucket(struct limiter *l, uint64_t key, const struct limiter_params *p,
			 uint64_t now_ns, struct limiter_result *out)
{
	struct limiter_node *n;
	struct cds_lfht_node *got;

	if (__atomic_add_fetch(&l->count, 1, __ATOMIC_RELAXED) > l->max_buckets) {
		__atomic_sub_fetch(&l->count, 1, __ATOMIC_RELAXED);
		return -ENOSPC;
	}
	n = aligned_alloc(64, sizeof(*n));
	if (!n) {
		__atomic_sub_fetch(&l->count, 1, __ATOMIC_RELAXED);
		return -ENOMEM;
	}
	memset(n, 0, sizeof(*n));
	cds_lfht_node_init(&n->lfht);
	n->key = key;
	n->unit_ns = p->unit_ns;
	/* Take before publishing: a sweep never sees the node unused, and a
	 * node that loses the race carries nothing anyone saw. */
	bucket_take(&n->state, p, now_ns, out);
	got = cds_lfht_add_unique(l->ht, key, node_match, &key, &n->lfht);
	if (got == &n->lfht)
		return 0;
	free(n);
	__atomic_sub_fetch(&l->count, 1, __ATOMIC_RELAXED);
	return -EAGAIN;
}

int limiter_check(struct limiter *l, uint64_t key, const struct limiter_params *p,
		  uint64_t now_ns, struct limiter_result *out)
{
	struct cds_lfht_iter iter;
	struct cds_lfht_node *ht_node;
	struct limiter_node *n;
	int r;

	urcu_memb_read_lock();
	for (;;) {
		cds_lfht_lookup(l->ht, key, node_match, &key, &iter);
		ht_node = cds_lfht_iter_get_node(&iter);
		if (ht_node) {
			n = caa_container_of(ht_node, struct limiter_node, lfht);
			if (bucket_take(&n->state, p, now_ns, out)) {
				if (p->algorithm == POLICY_ALG_SLIDING_WINDOW &&
				    __atomic_load_n(&n->unit_ns, __ATOMIC_RELAXED) != p->unit_ns)
					__atomic_store_n(&n->unit_ns, p->unit_ns, __ATOMIC_RELAXED);
				r = 0;
				break;
			}
			continue; /* swept after the lookup: look again */
		}
		r = insert_bucket(l, key, p, now_ns, out);
		if (r != -EAGAIN)
			break;
	}
	urcu_memb_read_unlock();
	return r;
}

static void free_node_rcu(struct rcu_head *head)
{
	free(caa_container_of(head, struct limiter_node, rcu));
}

/* True when the word describes a bucket that has been full for at least
 * ttl_ns at now_ns. */
static bool bucket_idle(uint64_t s, uint64_t unit_ns, uint64_t now_ns, uint64_t ttl_ns)
{
	uint64_t full_since_ns;

	if (!(s & SLIDING_TAG)) {
		full_since_ns = (s + FRAC_ONE - 1) >> FRAC_SHIFT;
	} else {
		uint64_t now_win = now_ns / unit_ns, s_win, ahead, cur, prev, k;

		s_win = (s >> (2 * COUNT_BITS)) & WIN_MASK;
		prev = (s >> COUNT_BITS) & COUNT_MASK;
		cur = s & COUNT_MASK;
		ahead = (s_win - now_win) & WIN_MASK;
		if (ahead != 0 && ahead < WIN_AHEAD)
			return false; /* the clock went backwards: not idle */
		/* The stored window, absolute: this many windows back. */
		ahead = (now_win - s_win) & WIN_MASK;
		if (ahead > now_win)
			return false;
		/* Both counts weigh nothing from the start of window
		 * s_win + 2 (s_win + 1 when the current count is zero). */
		k = cur ? 2 : prev ? 1 : 0;
		if (__builtin_mul_overflow(now_win - ahead + k, unit_ns, &full_since_ns))
			return false;
	}
	return now_ns >= full_since_ns && now_ns - full_since_ns >= ttl_ns;
}

size_t limiter_sweep(struct limiter *l, uint64_t now_ns)
{
	struct cds_lfht_iter iter;
	struct limiter_node *n;
	size_t reclaimed = 0;

	urcu_memb_read_lock();
	cds_lfht_for_each_entry(l->ht, &iter, n, lfht) {
		uint64_t s = __atomic_load_n(&n->state, __ATOMIC_RELAXED);
		uint64_t unit_ns = __atomic_load_n(&n->unit_ns, __ATOMIC_RELAXED);

		if (s == STATE_DEAD || !bucket_idle(s, unit_ns ? unit_ns : 1, now_ns, l->idle_ttl_ns))
			continue;
		/* Only the exact word judged idle may die: a check that
		 * changed it in between wins, and one that comes after sees
		 * STATE_DEAD and starts a fresh node (the bucket was full). */
		if (!__atomic_compare_exchange_n(&n->state, &s, STATE_DEAD, false,
						 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			continue;
		cds_lfht_del(l->ht, &n->lfht);
		__atomic_sub_fetch(&l->count, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&l->swept_total, 1, __ATOMIC_RELAXED);
		urcu_memb_call_rcu(&n->rcu, free_node_rcu);
		reclaimed++;
	}
	urcu_memb_read_unlock();
	return reclaimed;
}

size_t limiter_count(const struct limiter *l)
{
	return __atomic_load_n(&l->count, __ATOMIC_RELAXED);
}

uint64_t limiter_key(uint64_t rate_limit_key_hash, uint64_t subject_hash)
{
	const uint64_t both[2] = { rate_limit_key_hash, subject_hash };

	return XXH3_64bits(both, sizeof(both));
}
