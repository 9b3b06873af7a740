/* limiter.c - three exact rate-limit algorithms on one 64-bit word per bucket,
 * and a flat open-addressing table of 16-byte (key, word) slots.
 * Invariants: a word changes only by a CAS from the value the decision was
 * made on (in the table: a 16-byte CAS of key and word together), so N
 * threads admit what one would; 0 is a full bucket; a key occupies at most
 * one slot, within PROBE_MAX of its home; a slot never becomes EMPTY again. */
#include "limiter.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xxhash.h>

__extension__ typedef unsigned __int128 u128;

/* For the few helpers of a take that gcc kept out of line: on the request
 * path a call with its register spills cost about as much as the helper's
 * own dozen or two instructions. */
#define HOT_INLINE inline __attribute__((always_inline))

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
/* Never live words (sliding words with counts above 2^20 - 2 > 1e6):
 * STATE_DEAD is what a take sees when its slot no longer holds its key (or
 * may not be written by it, see word_cas): look the key up again.
 * STATE_FROZEN is stored while an insert lock holder publishes a slot's
 * sliding-window unit; only that holder writes a frozen slot. */
#define STATE_DEAD UINT64_MAX
#define STATE_FROZEN (UINT64_MAX - 1)

#define DEFAULT_MAX_BUCKETS ((size_t)1 << 20)
#define DEFAULT_IDLE_TTL_NS (600ull * 1000000000ull)

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

/* ---- where a word lives ---- */

/* A table slot: a bucket key and its word, only ever written together by
 * one 16-byte CAS (lock cmpxchg16b; -march=x86-64-v2 has it), read as two
 * 8-byte loads that the CAS then validates. Owned by struct limiter's slot
 * array; lives until limiter_free(). */
union limiter_slot {
	u128 pair; /* key in the low half, state in the high half (little-endian) */
	struct {
		uint64_t key;    /* SLOT_EMPTY, SLOT_TOMBSTONE or a stored key */
		uint64_t state;  /* the bucket word; 0 in a free slot */
	};
};
_Static_assert(sizeof(union limiter_slot) == 16 && _Alignof(union limiter_slot) == 16,
	       "a slot is one cmpxchg16b operand");
#ifndef __GCC_HAVE_SYNC_COMPARE_AND_SWAP_16
#error "the bucket table needs an inline 16-byte CAS: build with -march=x86-64-v2 or -mcx16"
#endif

static u128 slot_pair(uint64_t key, uint64_t state)
{
	return (u128)state << 64 | key;
}

/* Where one take finds its word: a bare bucket, or a slot that must still
 * hold `key`. Lives on the stack for one call. */
struct word_ref {
	uint64_t *bare;            /* non-NULL: a struct limiter_bucket's word */
	union limiter_slot *slot;  /* else this slot ... */
	uint64_t key;              /* ... while it holds this stored key */
	const uint64_t *unit_ns;   /* non-NULL: write only while *unit_ns == unit_ns_want */
	uint64_t unit_ns_want;
};

static HOT_INLINE uint64_t word_load(const struct word_ref *w)
{
	uint64_t s, key;

	if (w->bare)
		return __atomic_load_n(w->bare, __ATOMIC_RELAXED);
	/* A torn pair is fine: a decision to write is validated by the CAS,
	 * and a refusal read here was the key's word when it was loaded
	 * unless the slot changed owners twice since, which needs a sweep of
	 * a bucket inserted during this call. Acquire: word_cas reads the
	 * unit after the word (see sweep_slot). */
	s = __atomic_load_n(&w->slot->state, __ATOMIC_ACQUIRE);
	key = __atomic_load_n(&w->slot->key, __ATOMIC_RELAXED);
	return key == w->key && s != STATE_FROZEN ? s : STATE_DEAD;
}

/* Replaces *s by desired if the word still is *s, like
 * __atomic_compare_exchange_n; on failure *s is the word now, or
 * STATE_DEAD when the slot lost the key, is frozen, or carries another
 * sliding-window unit than this take's (only an insert lock holder may
 * change the unit, see rekey_locked). */
static HOT_INLINE bool word_cas(const struct word_ref *w, uint64_t *s, uint64_t desired)
{
	u128 want, seen;

	/* Relaxed is enough for a bare word: it is the whole state and
	 * publishes nothing else; the CAS alone makes decisions
	 * linearizable. */
	if (w->bare)
		return __atomic_compare_exchange_n(w->bare, s, desired, true, __ATOMIC_RELAXED,
						   __ATOMIC_RELAXED);
	if (w->unit_ns && __atomic_load_n(w->unit_ns, __ATOMIC_ACQUIRE) != w->unit_ns_want) {
		*s = STATE_DEAD;
		return false;
	}
	want = slot_pair(w->key, *s);
	seen = __sync_val_compare_and_swap(&w->slot->pair, want, slot_pair(w->key, desired));
	if (seen == want)
		return true;
	*s = (uint64_t)seen == w->key && (uint64_t)(seen >> 64) != STATE_FROZEN ?
		     (uint64_t)(seen >> 64) : STATE_DEAD;
	return false;
}

/* ---- GCRA (token and leaky bucket) ---- */

/* GCRA in "units" of 1/units_per_ns ns: the grid every TAT of this limit
 * lies on (see above). The limit's part lives in struct limiter_plan;
 * now_u is per call. */
static void gcra_plan(const struct limiter_params *p, struct limiter_plan *pl)
{
	uint64_t rate = p->rate ? p->rate : 1;
	uint64_t unit_ns = p->unit_ns ? p->unit_ns : 1;
	uint64_t burst = p->burst ? p->burst : 1;
	uint64_t rem = unit_ns % rate, depth_max;

	if (rem == 0) {
		pl->units_per_ns = 1;
		pl->interval_u = unit_ns / rate;
	} else {
		uint64_t common = gcd_u64(rate, rem);
		uint64_t r_reduced = rate / common;

		if (r_reduced <= FRAC_ONE) {
			/* T = unit/rate = (unit/common) / r_reduced ns. */
			pl->units_per_ns = r_reduced;
			pl->interval_u = unit_ns / common;
		} else {
			/* Rounded up: late by < 1/32 ns per request, never early. */
			pl->units_per_ns = FRAC_ONE;
			pl->interval_u = mul_div_ceil(unit_ns, FRAC_ONE, rate);
		}
	}
	depth_max = LIMITER_DEPTH_MAX_NS * pl->units_per_ns;
	if (pl->interval_u > depth_max)
		pl->interval_u = depth_max;
	if (__builtin_mul_overflow(burst, pl->interval_u, &pl->depth_u) || pl->depth_u > depth_max)
		pl->depth_u = depth_max;
	pl->limit = pl->depth_u / pl->interval_u;
}

void limiter_plan_init(const struct limiter_params *p, struct limiter_plan *out)
{
	out->params = *p;
	if (p->algorithm == POLICY_ALG_SLIDING_WINDOW) {
		out->units_per_ns = 1;
		out->interval_u = 1;
		out->depth_u = 0;
		out->limit = 0;
		return;
	}
	gcra_plan(p, out);
}

/* x / units_per_ns rounded up; rates that divide their unit (the common
 * case) have one unit per ns and need no division. */
static uint64_t units_to_ns_ceil(uint64_t x, uint64_t units_per_ns)
{
	return units_per_ns == 1 ? x : div_ceil(x, units_per_ns);
}

/* The stored 1/32 ns value back on the grid: the smallest grid point not
 * below it, which is exactly the TAT that was stored when units_per_ns <= 32
 * (grid points are at least 1/32 ns apart, the stored value is less than
 * 1/32 ns below its point). Split so no product exceeds 64 bits. */
static uint64_t tat_decode(uint64_t s, uint64_t units_per_ns)
{
	if (units_per_ns == 1)
		return (s + FRAC_ONE - 1) >> FRAC_SHIFT;
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
static uint64_t tat_from_sliding(uint64_t s, const struct limiter_plan *pl, uint64_t now_u)
{
	uint64_t unit_ns = pl->params.unit_ns ? pl->params.unit_ns : 1;
	uint64_t win, elapsed, prev, cur, used, debt;
	uint64_t now_ns = now_u / pl->units_per_ns;

	sliding_load(s, unit_ns, now_ns, &win, &elapsed, &prev, &cur);
	used = cur + mul_div_ceil(prev, unit_ns - elapsed, unit_ns);
	if (__builtin_mul_overflow(used, pl->interval_u, &debt) || debt > pl->depth_u)
		debt = pl->depth_u;
	return now_u + debt;
}

/* One GCRA step on the word. Returns false (and leaves *out alone) when the
 * word is STATE_DEAD. */
static HOT_INLINE bool gcra_take(const struct word_ref *w, const struct limiter_plan *pl,
				  uint64_t now_ns, struct limiter_result *out)
{
	const uint64_t units = pl->units_per_ns, interval_u = pl->interval_u;
	const uint64_t depth_u = pl->depth_u;
	uint64_t now_u = (now_ns < LIMITER_NOW_MAX_NS ? now_ns : LIMITER_NOW_MAX_NS) * units;
	uint64_t s, tat, base, next, after;
	bool allowed;

	s = word_load(w);
	for (;;) {
		if (s == STATE_DEAD)
			return false;
		if (s & SLIDING_TAG)
			tat = tat_from_sliding(s, pl, now_u);
		else
			tat = tat_decode(s, units);
		base = tat > now_u ? tat : now_u;
		next = base + interval_u;
		allowed = next - now_u <= depth_u;
		if (!allowed) {
			after = base;
			break;
		}
		if (word_cas(w, &s, tat_encode(next, units))) {
			after = next;
			break;
		}
	}

	uint64_t headroom_u = now_u + depth_u;

	out->allowed = allowed;
	out->limit = pl->limit;
	out->remaining = headroom_u >= after ? (headroom_u - after) / interval_u : 0;
	out->reset_ns = after > now_u ? units_to_ns_ceil(after - now_u, units) : 0;
	/* Refused means tat > now. A request at t passes once
	 * tat + T - tau <= t: the first whole ns is exact on the grid. */
	out->retry_after_ns = 0;
	if (!allowed)
		out->retry_after_ns = units_to_ns_ceil(base + interval_u - depth_u, units) -
				      now_u / units;
	/* The leaky bucket's request leaves when those queued before it have
	 * (at the old TAT); the token bucket never paces. */
	out->delay_ns = 0;
	if (allowed && pl->params.algorithm == POLICY_ALG_LEAKY_BUCKET && base > now_u)
		out->delay_ns = units_to_ns_ceil(base - now_u, units);
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

static bool sliding_take(const struct word_ref *w, const struct limiter_params *p, uint64_t now_ns,
			 struct limiter_result *out)
{
	uint64_t rate = sliding_rate(p);
	uint64_t unit_ns = p->unit_ns ? p->unit_ns : 1;
	uint64_t s, win, elapsed, prev, cur;
	u128 limit_scaled = (u128)rate * unit_ns;
	bool allowed;

	s = word_load(w);
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
		if (word_cas(w, &s, sliding_encode(win, prev, cur + 1))) {
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

static bool bucket_take(const struct word_ref *w, const struct limiter_plan *pl,
			uint64_t now_ns, struct limiter_result *out)
{
	if (pl->params.algorithm == POLICY_ALG_SLIDING_WINDOW)
		return sliding_take(w, &pl->params, now_ns, out);
	return gcra_take(w, pl, now_ns, out);
}

/* A take on a word nobody else sees: never STATE_DEAD. */
static void word_take_local(uint64_t *word, const struct limiter_plan *pl, uint64_t now_ns,
			    struct limiter_result *out)
{
	const struct word_ref w = { .bare = word };
	bool live = bucket_take(&w, pl, now_ns, out);

	assert(live); /* only table slots report STATE_DEAD */
	(void)live;
}

void limiter_bucket_take(struct limiter_bucket *b, const struct limiter_params *p,
			 uint64_t now_ns, struct limiter_result *out)
{
	struct limiter_plan pl;

	limiter_plan_init(p, &pl);
	word_take_local(&b->state, &pl, now_ns, out);
}

/* ---- the table ---- */

/*
 * Slots live in one array allocated up front for max_buckets: a ring of
 * `capacity` slots (a power of two, at least twice max_buckets, so probe
 * runs stay short) plus two slots past it for the raw keys 0 and 1, which
 * as stored keys would read as EMPTY and TOMBSTONE; there they are stored
 * as 2 and 3. Any other key is stored as itself and lives within
 * PROBE_MAX slots of its home (key & (capacity - 1)), wrapping.
 *
 * Lookups scan from home and stop at an EMPTY slot: an insert takes the
 * first free slot of the run and slots never turn EMPTY again, so every
 * slot between a key's home and its slot is non-EMPTY. A sweep turns a
 * slot into a TOMBSTONE, reused by a later insert of any key whose run
 * covers it.
 *
 * Existing buckets never lock. The first request of a bucket takes one of
 * INSERT_LOCKS mutexes, chosen by the key, so that two threads never add
 * the same key twice: with slots turning free concurrently (sweeps) two
 * unlocked inserters could pick different slots and both admit.
 *
 * The sliding window's idle test needs the window length the word was
 * written with, which does not fit in the slot: it lives in a parallel
 * array, unit_ns[i], read by sweeps and by sliding-window takes about to
 * write. It is written only under the key's insert lock while the slot is
 * frozen (STATE_FROZEN), and is published together with a changed word;
 * a sliding take whose unit differs writes through rekey_locked. So a
 * sweep that reads the word, then the unit, either judges the word by its
 * own unit or fails its CAS (unless that very word recurs after a unit
 * change within the sweep's few loads: the word would have to count the
 * same requests in the same window number under both units).
 */
#define SLOT_EMPTY 0ull
#define SLOT_TOMBSTONE 1ull
#define PROBE_MAX LIMITER_PROBE_MAX
#define INSERT_LOCK_BITS 8
#define INSERT_LOCKS (1u << INSERT_LOCK_BITS)

/* A mutex on a cache line of its own. Owned by struct limiter; lives until
 * limiter_free(). */
struct insert_lock {
	pthread_mutex_t mutex;
} __attribute__((aligned(64)));

/* Owned by the creator (limiter_new/limiter_free); lives until
 * limiter_free(). */
struct limiter {
	union limiter_slot *slots;  /* capacity + 2 slots, mmap()ed */
	uint64_t *unit_ns;          /* capacity + 2: sliding unit per slot, see above */
	size_t capacity;            /* of the ring; a power of two */
	size_t probe_len;           /* min(PROBE_MAX, capacity) */
	size_t map_bytes;           /* of the one mapping holding both arrays */
	size_t max_buckets;
	uint64_t idle_ttl_ns;
	/* Written on insert and sweep only, so kept off the line every check
	 * reads. Counts live buckets plus inserts in flight. */
	size_t count __attribute__((aligned(64)));
	size_t sweep_next;          /* limiter_sweep_step's cursor */
	struct insert_lock locks[INSERT_LOCKS];
};

/* The slots `key` may live in, and the key as stored there. Lives on the
 * stack for one call. */
struct probe {
	size_t home;
	size_t len;
	size_t mask;    /* of the ring; SIZE_MAX past it (len is 1 there) */
	uint64_t skey;  /* stored key: never SLOT_EMPTY or SLOT_TOMBSTONE */
};

static void probe_init(const struct limiter *l, uint64_t key, struct probe *pr)
{
	if (key <= SLOT_TOMBSTONE) {
		pr->home = l->capacity + key;
		pr->len = 1;
		pr->mask = SIZE_MAX;
		pr->skey = key + 2;
		return;
	}
	pr->home = key & (l->capacity - 1);
	pr->len = l->probe_len;
	pr->mask = l->capacity - 1;
	pr->skey = key;
}

static bool slot_free(uint64_t key)
{
	return key == SLOT_EMPTY || key == SLOT_TOMBSTONE;
}

/* Finds the slot holding pr->skey; false when absent. */
static bool slot_find(const struct limiter *l, const struct probe *pr, size_t *idx)
{
	size_t i = pr->home;

	for (size_t n = 0; n < pr->len; n++, i = (i + 1) & pr->mask) {
		uint64_t key = __atomic_load_n(&l->slots[i].key, __ATOMIC_RELAXED);

		if (key == pr->skey) {
			*idx = i;
			return true;
		}
		if (key == SLOT_EMPTY)
			break;
	}
	return false;
}

static uint64_t unit_of(const struct limiter_params *p)
{
	return p->unit_ns ? p->unit_ns : 1;
}

static size_t lock_index(uint64_t skey)
{
	/* The top bits of a multiplicative hash: the ring uses the low bits
	 * of the key, and test keys are small integers. */
	return (size_t)((skey * 0x9e3779b97f4a7c15ull) >> (64 - INSERT_LOCK_BITS));
}

/* Turns a free slot (seen holding free_key) into (skey, word), publishing
 * `unit_ns` first when non-zero (a sliding-window bucket). False when
 * another insert took the slot first. Caller holds skey's insert lock. */
static bool slot_claim(struct limiter *l, size_t i, uint64_t free_key, uint64_t skey,
		       uint64_t word, uint64_t unit_ns)
{
	union limiter_slot *slot = &l->slots[i];
	bool published;

	if (!unit_ns)
		return __sync_bool_compare_and_swap(&slot->pair, slot_pair(free_key, 0),
						    slot_pair(skey, word));
	/* Frozen, nobody else writes the slot or judges its word. */
	if (!__sync_bool_compare_and_swap(&slot->pair, slot_pair(free_key, 0),
					  slot_pair(skey, STATE_FROZEN)))
		return false;
	__atomic_store_n(&l->unit_ns[i], unit_ns, __ATOMIC_RELEASE);
	published = __sync_bool_compare_and_swap(&slot->pair, slot_pair(skey, STATE_FROZEN),
						 slot_pair(skey, word));
	assert(published);
	(void)published;
	return true;
}

/* Adds a bucket for pr->skey holding this request. Caller holds the key's
 * insert lock and saw the key absent. Returns 0 (out filled) or -ENOSPC. */
static int insert_locked(struct limiter *l, const struct probe *pr,
			 const struct limiter_plan *pl, uint64_t now_ns, struct limiter_result *out)
{
	const struct limiter_params *p = &pl->params;
	uint64_t word = 0, unit_ns = 0;
	struct limiter_result res;
	size_t i = pr->home;

	if (__atomic_add_fetch(&l->count, 1, __ATOMIC_RELAXED) > l->max_buckets)
		goto out_uncount;
	/* Take before publishing: a sweep never sees the bucket unused. */
	word_take_local(&word, pl, now_ns, &res);
	if (p->algorithm == POLICY_ALG_SLIDING_WINDOW)
		unit_ns = unit_of(p);
	for (size_t n = 0; n < pr->len; n++, i = (i + 1) & pr->mask) {
		uint64_t key = __atomic_load_n(&l->slots[i].key, __ATOMIC_RELAXED);

		/* A failed claim means another key took the slot: move on. */
		if (slot_free(key) && slot_claim(l, i, key, pr->skey, word, unit_ns)) {
			*out = res;
			return 0;
		}
	}
out_uncount:
	__atomic_sub_fetch(&l->count, 1, __ATOMIC_RELAXED);
	return -ENOSPC;
}

/* A sliding-window take on slot i whose unit differs from p's: decides on
 * the word as it is and, if admitted, freezes the slot, publishes the new
 * unit and then the new word. A refusal writes nothing. Caller holds the
 * key's insert lock. Returns 0 or -EAGAIN (the key was swept meanwhile). */
static int rekey_locked(struct limiter *l, size_t i, uint64_t skey,
			const struct limiter_plan *pl, uint64_t now_ns, struct limiter_result *out)
{
	const struct limiter_params *p = &pl->params;
	union limiter_slot *slot = &l->slots[i];
	struct limiter_result res;
	uint64_t s, word, key;
	u128 seen;
	bool published;

	s = __atomic_load_n(&slot->state, __ATOMIC_RELAXED);
	key = __atomic_load_n(&slot->key, __ATOMIC_RELAXED);
	for (;;) {
		/* Never frozen here: only a holder of this key's lock
		 * freezes its slot, and unfreezes it before unlocking. */
		if (key != skey)
			return -EAGAIN;
		word = s;
		word_take_local(&word, pl, now_ns, &res);
		if (!res.allowed)
			break;
		seen = __sync_val_compare_and_swap(&slot->pair, slot_pair(skey, s),
						   slot_pair(skey, STATE_FROZEN));
		if (seen == slot_pair(skey, s)) {
			__atomic_store_n(&l->unit_ns[i], unit_of(p), __ATOMIC_RELEASE);
			published = __sync_bool_compare_and_swap(
				&slot->pair, slot_pair(skey, STATE_FROZEN), slot_pair(skey, word));
			assert(published);
			(void)published;
			break;
		}
		key = (uint64_t)seen;
		s = (uint64_t)(seen >> 64);
	}
	*out = res;
	return 0;
}

/* The slow path under the key's insert lock: inserts an absent key,
 * changes a sliding bucket's unit. Returns 0, -ENOSPC, or -EAGAIN when the
 * lock-free path should simply be tried again. */
static int take_locked(struct limiter *l, const struct probe *pr, const struct limiter_plan *pl,
		       uint64_t now_ns, struct limiter_result *out)
{
	const struct limiter_params *p = &pl->params;
	pthread_mutex_t *mutex = &l->locks[lock_index(pr->skey)].mutex;
	size_t i;
	int r;

	pthread_mutex_lock(mutex);
	/* Only this lock's holders add pr->skey and sweeps only remove it:
	 * absent now stays absent until we add it. */
	if (!slot_find(l, pr, &i))
		r = insert_locked(l, pr, pl, now_ns, out);
	else if (p->algorithm == POLICY_ALG_SLIDING_WINDOW &&
		 __atomic_load_n(&l->unit_ns[i], __ATOMIC_RELAXED) != unit_of(p))
		r = rekey_locked(l, i, pr->skey, pl, now_ns, out);
	else
		r = -EAGAIN; /* the bucket was swept and re-added, or unfrozen */
	pthread_mutex_unlock(mutex);
	return r;
}

/* Commits every page of map now. A first touch costs a page fault that
 * zeroes the page, 2 MiB at once under MADV_HUGEPAGE; on a fresh virtual
 * machine the host may first have to back that memory as well. Measured
 * here, a node's first requests, each on a new client, waited tens of
 * milliseconds for the faults of the default table: that cost belongs at
 * start-up. MADV_POPULATE_WRITE (Linux 5.14) faults it in as a write would,
 * keeping the huge pages; older kernels get the same by a store per page. */
static void prefault(void *map, size_t bytes)
{
#ifdef MADV_POPULATE_WRITE
	if (madvise(map, bytes, MADV_POPULATE_WRITE) == 0)
		return;
#endif
	for (size_t off = 0; off < bytes; off += 4096)
		((volatile char *)map)[off] = 0;
}

int limiter_new(const struct limiter_config *cfg, struct limiter **ret)
{
	size_t max_buckets = cfg && cfg->max_buckets ? cfg->max_buckets : DEFAULT_MAX_BUCKETS;
	size_t capacity = 2, slots_bytes;
	struct limiter *l;
	void *map;
	int r = -ENOMEM;

	/* Past this the arrays could not be mapped anyway. */
	if (max_buckets > SIZE_MAX / 4 / (sizeof(union limiter_slot) + sizeof(uint64_t)))
		return -ENOMEM;
	while (capacity < 2 * max_buckets)
		capacity <<= 1;
	l = aligned_alloc(_Alignof(struct limiter), sizeof(*l));
	if (!l)
		return -ENOMEM;
	memset(l, 0, sizeof(*l));
	l->capacity = capacity;
	l->probe_len = capacity < PROBE_MAX ? capacity : PROBE_MAX;
	l->max_buckets = max_buckets;
	l->idle_ttl_ns = cfg && cfg->idle_ttl_ns ? cfg->idle_ttl_ns : DEFAULT_IDLE_TTL_NS;
	slots_bytes = (capacity + 2) * sizeof(union limiter_slot);
	l->map_bytes = slots_bytes + (capacity + 2) * sizeof(uint64_t);
	/* Anonymous memory is zero (all slots EMPTY) and, unless prefault asks
	 * for it all now, costs nothing until touched: a large max_buckets is
	 * then cheap while the table is small. */
	map = mmap(NULL, l->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		goto out_free;
	/* Buckets are read at random: with 4 KiB pages a busy node's check
	 * also walks the page table (the default table spans 12,288 pages,
	 * far more than the TLB holds). Transparent huge pages cover it with
	 * 24 entries. Only a hint (ignored where THP is off); the price is
	 * that the first bucket in each 2 MiB commits all of it, and that its
	 * first touch may wait for the kernel to find a huge page. */
	(void)madvise(map, l->map_bytes, MADV_HUGEPAGE);
	if (cfg && cfg->prefault)
		prefault(map, l->map_bytes);
	l->slots = map;
	l->unit_ns = (uint64_t *)((char *)map + slots_bytes);
	for (unsigned i = 0; i < INSERT_LOCKS; i++) {
		r = -pthread_mutex_init(&l->locks[i].mutex, NULL);
		if (r < 0) {
			while (i--)
				pthread_mutex_destroy(&l->locks[i].mutex);
			goto out_unmap;
		}
	}
	*ret = l;
	return 0;

out_unmap:
	munmap(map, l->map_bytes);
out_free:
	free(l);
	return r;
}

size_t limiter_map_bytes(const struct limiter *l)
{
	return l->map_bytes;
}

void limiter_free(struct limiter *l)
{
	if (!l)
		return;
	for (unsigned i = 0; i < INSERT_LOCKS; i++)
		pthread_mutex_destroy(&l->locks[i].mutex);
	munmap(l->slots, l->map_bytes);
	free(l);
}

/* limiter_check_plan(); *found is the index of the slot that took the
 * request, or SIZE_MAX when it is not known (a new bucket). */
static int check_plan_at(struct limiter *l, uint64_t key, const struct limiter_plan *pl,
			 uint64_t now_ns, struct limiter_result *out, size_t *found)
{
	const struct limiter_params *p = &pl->params;
	struct word_ref w = { 0 };
	struct probe pr;
	size_t i;
	int r;

	probe_init(l, key, &pr);
	w.key = pr.skey;
	if (p->algorithm == POLICY_ALG_SLIDING_WINDOW) {
		/* Its own cache line, fetched while the slot's is. */
		__builtin_prefetch(&l->unit_ns[pr.home]);
		w.unit_ns_want = unit_of(p);
	}
	for (;;) {
		if (slot_find(l, &pr, &i)) {
			w.slot = &l->slots[i];
			if (p->algorithm == POLICY_ALG_SLIDING_WINDOW)
				w.unit_ns = &l->unit_ns[i];
			if (bucket_take(&w, pl, now_ns, out)) {
				*found = i;
				return 0;
			}
			/* Swept, frozen, or another unit: see take_locked. */
		}
		r = take_locked(l, &pr, pl, now_ns, out);
		if (r != -EAGAIN) {
			*found = SIZE_MAX;
			return r;
		}
	}
}

int limiter_check_plan(struct limiter *l, uint64_t key, const struct limiter_plan *pl,
		       uint64_t now_ns, struct limiter_result *out)
{
	size_t found;

	return check_plan_at(l, key, pl, now_ns, out, &found);
}

int limiter_check_hint(struct limiter *l, uint64_t key, const struct limiter_plan *pl,
		       uint64_t now_ns, uint32_t *slot_hint, struct limiter_result *out)
{
	/* 0 (no hint) wraps to SIZE_MAX, out of range like a hint from a
	 * larger table. */
	size_t i = (size_t)*slot_hint - 1, found;
	int r;

	if (i < l->capacity + 2) {
		/* The slot is trusted only while it holds the key: word_load
		 * and word_cas check that, so a stale hint (the bucket swept,
		 * its slot reused) reads as STATE_DEAD and falls through. A
		 * key occupies one slot at most, so a slot holding it is its
		 * bucket. */
		struct word_ref w = { .slot = &l->slots[i] };

		w.key = key > SLOT_TOMBSTONE ? key : key + 2; /* as probe_init stores it */

		if (pl->params.algorithm != POLICY_ALG_SLIDING_WINDOW) {
			/* gcra_take inlined here: this is the request path. */
			if (gcra_take(&w, pl, now_ns, out))
				return 0;
		} else {
			w.unit_ns = &l->unit_ns[i];
			w.unit_ns_want = unit_of(&pl->params);
			if (sliding_take(&w, &pl->params, now_ns, out))
				return 0;
		}
	}
	r = check_plan_at(l, key, pl, now_ns, out, &found);
	/* Slot indexes fit 32 bits up to 2^32 - 2 slots; past that, no hint. */
	*slot_hint = found < UINT32_MAX ? (uint32_t)(found + 1) : 0;
	return r;
}

void limiter_prefetch(const struct limiter *l, uint64_t key)
{
	struct probe pr;

	probe_init(l, key, &pr);
	__builtin_prefetch(&l->slots[pr.home], 1);
}

int limiter_check(struct limiter *l, uint64_t key, const struct limiter_params *p,
		  uint64_t now_ns, struct limiter_result *out)
{
	struct limiter_plan pl;

	limiter_plan_init(p, &pl);
	return limiter_check_plan(l, key, &pl, now_ns, out);
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

/* Reclaims slot i if its bucket is idle: only the exact (key, word) judged
 * may go, so a check that changed the word in between wins, and one that
 * comes after finds the key gone and adds it afresh (the bucket was full:
 * the same). */
static bool sweep_slot(struct limiter *l, size_t i, uint64_t now_ns)
{
	union limiter_slot *slot = &l->slots[i];
	uint64_t key, s, unit_ns = 1;

	key = __atomic_load_n(&slot->key, __ATOMIC_ACQUIRE);
	if (slot_free(key))
		return false;
	s = __atomic_load_n(&slot->state, __ATOMIC_ACQUIRE);
	if (s == STATE_FROZEN)
		return false;
	/* The unit after the word: a unit published since is followed by a
	 * new word, so judging the old word by it fails the CAS below. */
	if (s & SLIDING_TAG) {
		unit_ns = __atomic_load_n(&l->unit_ns[i], __ATOMIC_ACQUIRE);
		if (!unit_ns)
			return false; /* torn read of a slot being claimed */
	}
	if (!bucket_idle(s, unit_ns, now_ns, l->idle_ttl_ns))
		return false;
	if (!__sync_bool_compare_and_swap(&slot->pair, slot_pair(key, s),
					  slot_pair(SLOT_TOMBSTONE, 0)))
		return false;
	__atomic_sub_fetch(&l->count, 1, __ATOMIC_RELAXED);
	return true;
}

size_t limiter_sweep(struct limiter *l, uint64_t now_ns)
{
	size_t reclaimed = 0;

	for (size_t i = 0; i < l->capacity + 2; i++)
		reclaimed += sweep_slot(l, i, now_ns);
	return reclaimed;
}

size_t limiter_sweep_step(struct limiter *l, uint64_t now_ns, size_t max_slots)
{
	size_t slots = l->capacity + 2, i = l->sweep_next, reclaimed = 0;

	if (max_slots > slots)
		max_slots = slots;
	for (size_t k = 0; k < max_slots; k++) {
		reclaimed += sweep_slot(l, i, now_ns);
		if (++i == slots)
			i = 0;
	}
	l->sweep_next = i;
	return reclaimed;
}

size_t limiter_slots(const struct limiter *l)
{
	return l->capacity + 2;
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
