/* limiter_test.c - the three algorithms on a synthetic clock (exact counts,
 * retry_after, remaining/reset, delays, clock going backwards, parameter
 * changes), the bucket table (identity, cap, probe runs, tombstones,
 * sweeping) and exactness under threads, both on a frozen synthetic clock
 * and on CLOCK_MONOTONIC. No thread registers for RCU: the table needs none.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "limiter.h"

#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define NS_PER_MIN (60 * NS_PER_S)
#define NS_PER_H (3600 * NS_PER_S)
/* Synthetic origin, 1000 s; T_MIN is also the start of a minute window. */
#define T0 (1000 * NS_PER_S)
#define T_MIN (1000 * NS_PER_MIN)

#define TB POLICY_ALG_TOKEN_BUCKET
#define LB POLICY_ALG_LEAKY_BUCKET
#define SW POLICY_ALG_SLIDING_WINDOW

TestSuite(limiter);
TestSuite(limiter_table);

static struct limiter_params mkp(enum policy_algorithm alg, uint64_t rate, uint64_t unit_ns,
				 uint64_t burst)
{
	struct limiter_params p = { .algorithm = alg, .rate = rate, .unit_ns = unit_ns, .burst = burst };

	return p;
}

static bool take(struct limiter_bucket *b, const struct limiter_params *p, uint64_t now,
		 struct limiter_result *r)
{
	struct limiter_result scratch;

	if (!r)
		r = &scratch;
	limiter_bucket_take(b, p, now, r);
	return r->allowed;
}

/* Takes until the first refusal (at most `cap` admissions); returns how many
 * were admitted. */
static uint64_t drain(struct limiter_bucket *b, const struct limiter_params *p, uint64_t now,
		      uint64_t cap)
{
	uint64_t n = 0;

	while (n < cap && take(b, p, now, NULL))
		n++;
	return n;
}

/* ---- each algorithm ----
 * Table rows (struct *_case) are static arrays; Criterion copies the row a
 * test runs into that test's process, where it lives until the test ends. */

/* One row: a fresh bucket and how many back-to-back requests it admits. */
struct fresh_case {
	char name[64]; /* an array: Criterion copies parameters into another address space */
	struct limiter_params p;
	uint64_t now;
	uint64_t admitted;
};

ParameterizedTestParameters(limiter, fresh_bucket_admits_exactly_its_limit_then_refuses)
{
	static struct fresh_case cases[] = {
		{ "token 10/s burst 5", { TB, 10, NS_PER_S, 5 }, T0, 5 },
		{ "token 3/s burst 1", { TB, 3, NS_PER_S, 1 }, T0, 1 },
		{ "token 1/h burst 100", { TB, 1, NS_PER_H, 100 }, T0, 100 },
		{ "token at clock 0", { TB, 10, NS_PER_S, 7 }, 0, 7 },
		{ "token 999/s burst 10 (inexact grid)", { TB, 999, NS_PER_S, 10 }, T0, 10 },
		{ "leaky 1/s burst 5", { LB, 1, NS_PER_S, 5 }, T0, 5 },
		{ "leaky at clock 0", { LB, 7, NS_PER_MIN, 3 }, 0, 3 },
		{ "sliding 10/min (burst ignored)", { SW, 10, NS_PER_MIN, 3 }, T_MIN, 10 },
		{ "sliding mid-window", { SW, 10, NS_PER_MIN, 50 }, T_MIN + 17 * NS_PER_S, 10 },
		{ "sliding at clock 0", { SW, 4, NS_PER_S, 1 }, 0, 4 },
	};
	return cr_make_param_array(struct fresh_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct fresh_case *c, limiter, fresh_bucket_admits_exactly_its_limit_then_refuses)
{
	struct limiter_bucket b = { 0 };
	struct limiter_result r;
	uint64_t n = drain(&b, &c->p, c->now, 1000);

	cr_assert_eq(n, c->admitted, "%s: admitted %llu, want %llu", c->name,
		     (unsigned long long)n, (unsigned long long)c->admitted);
	cr_assert_not(take(&b, &c->p, c->now, &r), "%s: still refused", c->name);
	cr_assert_eq(r.remaining, 0, "%s", c->name);
	cr_assert_gt(r.retry_after_ns, 0, "%s", c->name);
}

/* One row: steps of (advance clock, then take until refused). */
struct refill_case {
	char name[64];
	struct limiter_params p;
	uint64_t start;
	struct {
		uint64_t advance_ns;
		uint64_t admitted;
	} steps[4];
};

ParameterizedTestParameters(limiter, refill_admits_exactly_what_time_refilled)
{
	static struct refill_case cases[] = {
		{ "token 10/s: 3.5 then 1 token", { TB, 10, NS_PER_S, 5 }, T0,
		  { { 0, 5 }, { 350 * NS_PER_MS, 3 }, { 50 * NS_PER_MS, 1 }, { 10 * NS_PER_S, 5 } } },
		{ "token 3/s: a third of a second each", { TB, 3, NS_PER_S, 2 }, T0,
		  { { 0, 2 }, { 333333333, 0 }, { 1, 1 }, { NS_PER_S, 2 } } },
		{ "leaky 1/s burst 5", { LB, 1, NS_PER_S, 5 }, T0,
		  { { 0, 5 }, { 999999999, 0 }, { 1, 1 }, { 2 * NS_PER_S, 2 } } },
		/* 10 at window start; next window start weighs them fully;
		 * half-way 5 remain counted; two windows later all free. */
		{ "sliding 10/s", { SW, 10, NS_PER_S, 1 }, T0,
		  { { 0, 10 }, { NS_PER_S, 0 }, { NS_PER_S / 2, 5 }, { 2 * NS_PER_S, 10 } } },
		/* The example: 10 at the end of window 1, at 25% into
		 * window 2 the estimate is 7.5 so two pass; at 50% 5 + 2 are
		 * counted so three more pass. */
		{ "sliding 10/min weighted", { SW, 10, NS_PER_MIN, 10 }, T_MIN + 59 * NS_PER_S,
		  { { 0, 10 }, { 16 * NS_PER_S, 2 }, { 15 * NS_PER_S, 3 }, { 0, 0 } } },
	};
	return cr_make_param_array(struct refill_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct refill_case *c, limiter, refill_admits_exactly_what_time_refilled)
{
	struct limiter_bucket b = { 0 };
	uint64_t now = c->start;

	for (size_t i = 0; i < 4; i++) {
		now += c->steps[i].advance_ns;
		uint64_t n = drain(&b, &c->p, now, 1000);

		cr_assert_eq(n, c->steps[i].admitted, "%s step %zu: admitted %llu, want %llu",
			     c->name, i, (unsigned long long)n,
			     (unsigned long long)c->steps[i].admitted);
	}
}

/* Saturates a bucket for `duration_ns` sampled at `samples` uneven points
 * (t0 + duration * i / samples) and counts admissions. The samples are
 * closer than (burst - 1) intervals, so the bucket never fills up between
 * them and every refilled request is taken. */
static uint64_t long_run(const struct limiter_params *p, uint64_t t0, uint64_t duration_ns,
			 uint64_t samples)
{
	struct limiter_bucket b = { 0 };
	uint64_t total = 0;

	for (uint64_t i = 0; i <= samples; i++) {
		uint64_t now = t0 + (uint64_t)((unsigned __int128)duration_ns * i / samples);

		total += drain(&b, p, now, UINT64_MAX);
	}
	return total;
}

/* One row: a limit saturated over a long synthetic run. */
struct long_case {
	char name[64];
	struct limiter_params p;
	uint64_t t0;
	uint64_t duration_ns;
	uint64_t samples;
	uint64_t expected;   /* burst + duration * rate / unit */
	uint64_t slack_below; /* 0: exact */
};

ParameterizedTestParameters(limiter, long_run_admits_exactly_rate_times_time_plus_burst)
{
	static struct long_case cases[] = {
		{ "token 3/s for 1e6 s", { TB, 3, NS_PER_S, 5 }, T0, 1000000 * NS_PER_S, 1000003,
		  3000000 + 5, 0 },
		{ "token 3/s for 1e6 s from 0, every second", { TB, 3, NS_PER_S, 4 }, 0,
		  1000000 * NS_PER_S, 1000000, 3000000 + 4, 0 },
		{ "token 7/min for 1e6 min", { TB, 7, NS_PER_MIN, 100 }, T0, 1000000 * NS_PER_MIN,
		  99991, 7000000 + 100, 0 },
		{ "token 1/h for 50000 h", { TB, 1, NS_PER_H, 3 }, 0, 50000 * NS_PER_H, 49999,
		  50000 + 3, 0 },
		{ "token 13/s for 1e5 s", { TB, 13, NS_PER_S, 40 }, T0, 100000 * NS_PER_S, 77777,
		  1300000 + 40, 0 },
		{ "leaky 3/s for 1e6 s", { LB, 3, NS_PER_S, 5 }, T0, 1000000 * NS_PER_S, 1000003,
		  3000000 + 5, 0 },
		/* 999/s is not on the 1/32 ns grid: the interval is rounded up,
		 * so the bucket may only fall behind, by less than one here. */
		{ "token 999/s for 1e4 s (rounded up)", { TB, 999, NS_PER_S, 2000 }, T0,
		  10000 * NS_PER_S, 10007, 9990000 + 2000, 1 },
	};
	return cr_make_param_array(struct long_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct long_case *c, limiter, long_run_admits_exactly_rate_times_time_plus_burst)
{
	uint64_t n = long_run(&c->p, c->t0, c->duration_ns, c->samples);

	cr_assert(n <= c->expected && n + c->slack_below >= c->expected,
		  "%s: admitted %llu, want %llu (-%llu)", c->name, (unsigned long long)n,
		  (unsigned long long)c->expected, (unsigned long long)c->slack_below);
}

/* One row: refused at t; a copy of the bucket at t + retry_after - 1 is
 * still refused, another at t + retry_after is admitted. */
struct retry_case {
	char name[64];
	struct limiter_params p;
	uint64_t start;           /* take until refused here ... */
	uint64_t refused_at_ns;   /* ... and again this much later: examined */
	uint64_t retry_after_ns;  /* expected; 0: just check consistency */
};

ParameterizedTestParameters(limiter, retry_after_is_exact)
{
	static struct retry_case cases[] = {
		{ "token 10/s", { TB, 10, NS_PER_S, 5 }, T0, 0, 100 * NS_PER_MS },
		{ "token 10/s, part refilled", { TB, 10, NS_PER_S, 5 }, T0, 123 * NS_PER_MS,
		  77 * NS_PER_MS },
		{ "token 3/s", { TB, 3, NS_PER_S, 2 }, T0, 0, 333333334 },
		{ "token 3/s, odd phase", { TB, 3, NS_PER_S, 2 }, T0 + 17, 1, 333333333 },
		{ "token 7/min", { TB, 7, NS_PER_MIN, 1 }, T0, 5 * NS_PER_S, 3571428572 },
		{ "token 1/h", { TB, 1, NS_PER_H, 1 }, 0, 0, NS_PER_H },
		{ "token 999/s (rounded grid)", { TB, 999, NS_PER_S, 10 }, T0, 0, 0 },
		{ "leaky 1/s", { LB, 1, NS_PER_S, 5 }, T0, 400 * NS_PER_MS, 600 * NS_PER_MS },
		/* Full window, nothing before: the next window counts all 10
		 * at weight 1 - e/60 s, so 6 s into it one more fits. */
		{ "sliding 10/min, next window", { SW, 10, NS_PER_MIN, 1 }, T_MIN + 10 * NS_PER_S,
		  0, 56 * NS_PER_S },
		/* 10 at the end of a window, 2 more at 15 s into the next:
		 * 10 * (60 - e) / 60 + 3 <= 10 first at e = 18 s. */
		{ "sliding 10/min, same window", { SW, 10, NS_PER_MIN, 1 }, T_MIN + 59 * NS_PER_S,
		  16 * NS_PER_S, 3 * NS_PER_S },
		{ "sliding 1/s", { SW, 1, NS_PER_S, 1 }, T0, 250 * NS_PER_MS,
		  NS_PER_S + 750 * NS_PER_MS },
		{ "sliding 7/min, odd split", { SW, 7, NS_PER_MIN, 1 }, T_MIN + 13,
		  NS_PER_MIN + 1234567, 0 },
	};
	return cr_make_param_array(struct retry_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct retry_case *c, limiter, retry_after_is_exact)
{
	struct limiter_bucket b = { 0 }, before, at;
	struct limiter_result r;
	uint64_t t = c->start + c->refused_at_ns;

	cr_assert_gt(drain(&b, &c->p, c->start, 1000), 0, "%s", c->name);
	drain(&b, &c->p, t, 1000);
	cr_assert_not(take(&b, &c->p, t, &r), "%s: refused at t", c->name);
	cr_assert_gt(r.retry_after_ns, 0, "%s", c->name);
	if (c->retry_after_ns)
		cr_assert_eq(r.retry_after_ns, c->retry_after_ns, "%s: retry %llu, want %llu",
			     c->name, (unsigned long long)r.retry_after_ns,
			     (unsigned long long)c->retry_after_ns);
	before = b;
	at = b;
	cr_assert_not(take(&before, &c->p, t + r.retry_after_ns - 1, NULL),
		      "%s: admitted 1 ns before retry_after", c->name);
	cr_assert(take(&at, &c->p, t + r.retry_after_ns, NULL),
		  "%s: refused at retry_after", c->name);
}

Test(limiter, retry_after_is_exact_at_every_phase_of_an_odd_rate)
{
	/* 7/min and 3/s from many start phases and refusal points. */
	const struct limiter_params ps[] = { { TB, 7, NS_PER_MIN, 2 }, { TB, 3, NS_PER_S, 1 },
					     { LB, 3, NS_PER_S, 4 }, { SW, 7, NS_PER_MIN, 1 },
					     { SW, 3, NS_PER_S, 1 } };

	for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		for (uint64_t i = 0; i < 200; i++) {
			struct limiter_bucket b = { 0 }, before, at;
			struct limiter_result r;
			uint64_t t = T0 + i * 7919 * 104729;

			drain(&b, &ps[k], t, 1000);
			t += i * 1234567;
			drain(&b, &ps[k], t, 1000);
			cr_assert_not(take(&b, &ps[k], t, &r));
			before = b;
			at = b;
			cr_assert_not(take(&before, &ps[k], t + r.retry_after_ns - 1, NULL),
				      "params %zu phase %llu", k, (unsigned long long)i);
			cr_assert(take(&at, &ps[k], t + r.retry_after_ns, NULL), "params %zu phase %llu",
				  k, (unsigned long long)i);
		}
	}
}

/* One row: the result fields after a sequence of takes. */
struct result_case {
	char name[64];
	struct limiter_params p;
	uint64_t start;
	uint64_t first_takes;   /* at start */
	uint64_t advance_ns;
	uint64_t then_takes;    /* at start + advance; the last one is examined */
	struct limiter_result want;
};

ParameterizedTestParameters(limiter, result_fields_describe_the_bucket)
{
	static struct result_case cases[] = {
		{ "token fresh, one taken", { TB, 10, NS_PER_S, 5 }, T0, 0, 0, 1,
		  { true, 5, 4, 100 * NS_PER_MS, 0, 0 } },
		{ "token emptied", { TB, 10, NS_PER_S, 5 }, T0, 0, 0, 5,
		  { true, 5, 0, 500 * NS_PER_MS, 0, 0 } },
		{ "token refused", { TB, 10, NS_PER_S, 5 }, T0, 0, 0, 6,
		  { false, 5, 0, 500 * NS_PER_MS, 100 * NS_PER_MS, 0 } },
		{ "token 2.5 refilled, one taken", { TB, 10, NS_PER_S, 5 }, T0, 5, 250 * NS_PER_MS, 1,
		  { true, 5, 1, 350 * NS_PER_MS, 0, 0 } },
		{ "token 3/s, reset rounds up", { TB, 3, NS_PER_S, 3 }, T0, 0, 0, 1,
		  { true, 3, 2, 333333334, 0, 0 } },
		{ "leaky second request paced", { LB, 1, NS_PER_S, 5 }, T0, 0, 0, 2,
		  { true, 5, 3, 2 * NS_PER_S, 0, NS_PER_S } },
		{ "leaky 3/s third request paced", { LB, 3, NS_PER_S, 5 }, T0, 0, 0, 3,
		  { true, 5, 2, NS_PER_S, 0, 666666667 } },
		{ "leaky refused", { LB, 1, NS_PER_S, 2 }, T0, 0, 0, 3,
		  { false, 2, 0, 2 * NS_PER_S, NS_PER_S, 0 } },
		{ "sliding one taken", { SW, 10, NS_PER_MIN, 99 }, T_MIN, 0, 0, 1,
		  { true, 10, 9, NS_PER_MIN, 0, 0 } },
		{ "sliding refused", { SW, 10, NS_PER_MIN, 1 }, T_MIN, 0, 10 * NS_PER_S, 11,
		  { false, 10, 0, 50 * NS_PER_S, 56 * NS_PER_S, 0 } },
		/* 7.5 of the previous window still counted, 2 in this one. */
		{ "sliding weighted", { SW, 10, NS_PER_MIN, 1 }, T_MIN + 59 * NS_PER_S, 10,
		  16 * NS_PER_S, 2, { true, 10, 0, 45 * NS_PER_S, 0, 0 } },
		{ "sliding weighted, one left", { SW, 10, NS_PER_MIN, 1 }, T_MIN + 59 * NS_PER_S, 10,
		  31 * NS_PER_S, 1, { true, 10, 4, 30 * NS_PER_S, 0, 0 } },
	};
	return cr_make_param_array(struct result_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct result_case *c, limiter, result_fields_describe_the_bucket)
{
	struct limiter_bucket b = { 0 };
	struct limiter_result r = { 0 };

	for (uint64_t i = 0; i < c->first_takes; i++)
		cr_assert(take(&b, &c->p, c->start, NULL), "%s: setup take %llu", c->name,
			  (unsigned long long)i);
	for (uint64_t i = 0; i < c->then_takes; i++)
		take(&b, &c->p, c->start + c->advance_ns, &r);
	cr_assert_eq(r.allowed, c->want.allowed, "%s: allowed", c->name);
	cr_assert_eq(r.limit, c->want.limit, "%s: limit %llu", c->name, (unsigned long long)r.limit);
	cr_assert_eq(r.remaining, c->want.remaining, "%s: remaining %llu", c->name,
		     (unsigned long long)r.remaining);
	cr_assert_eq(r.reset_ns, c->want.reset_ns, "%s: reset %llu", c->name,
		     (unsigned long long)r.reset_ns);
	cr_assert_eq(r.retry_after_ns, c->want.retry_after_ns, "%s: retry %llu", c->name,
		     (unsigned long long)r.retry_after_ns);
	cr_assert_eq(r.delay_ns, c->want.delay_ns, "%s: delay %llu", c->name,
		     (unsigned long long)r.delay_ns);
}

Test(limiter, leaky_bucket_paces_back_to_back_requests_one_interval_apart)
{
	struct limiter_params p = mkp(LB, 1, NS_PER_S, 5);
	struct limiter_bucket b = { 0 };
	struct limiter_result r;

	for (uint64_t i = 0; i < 5; i++) {
		cr_assert(take(&b, &p, T0, &r), "request %llu", (unsigned long long)i);
		cr_assert_eq(r.delay_ns, i * NS_PER_S, "request %llu delay %llu", (unsigned long long)i,
			     (unsigned long long)r.delay_ns);
	}
	cr_assert_not(take(&b, &p, T0, &r));
	cr_assert_eq(r.delay_ns, 0);
	cr_assert_eq(r.retry_after_ns, NS_PER_S);
	/* One second on, one slot has drained: the newcomer queues behind
	 * the four still waiting. */
	cr_assert(take(&b, &p, T0 + NS_PER_S, &r));
	cr_assert_eq(r.delay_ns, 4 * NS_PER_S);
	/* A long pause empties the queue: no delay again. */
	cr_assert(take(&b, &p, T0 + 100 * NS_PER_S, &r));
	cr_assert_eq(r.delay_ns, 0);
}

Test(limiter, token_bucket_never_delays)
{
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 5);
	struct limiter_bucket b = { 0 };
	struct limiter_result r;

	for (int i = 0; i < 5; i++) {
		cr_assert(take(&b, &p, T0, &r));
		cr_assert_eq(r.delay_ns, 0);
	}
}

/* One row: a drained bucket, then calls at earlier times. */
struct backwards_case {
	char name[64];
	struct limiter_params p;
	uint64_t drained_at;
	uint64_t back_to[3];
};

ParameterizedTestParameters(limiter, clock_going_backwards_admits_nothing_extra)
{
	static struct backwards_case cases[] = {
		{ "token", { TB, 10, NS_PER_S, 5 }, T0 + 10 * NS_PER_S,
		  { T0 + 10 * NS_PER_S - 1, T0, 0 } },
		{ "leaky", { LB, 10, NS_PER_S, 5 }, T0 + 10 * NS_PER_S, { T0 + 9 * NS_PER_S, 1, 0 } },
		{ "sliding, same window", { SW, 10, NS_PER_S, 1 }, T0 + NS_PER_S / 2,
		  { T0 + NS_PER_S / 4, T0, T0 + 1 } },
		{ "sliding, windows back", { SW, 10, NS_PER_S, 1 }, T0 + 5 * NS_PER_S,
		  { T0 + 4 * NS_PER_S, T0, 0 } },
	};
	return cr_make_param_array(struct backwards_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct backwards_case *c, limiter, clock_going_backwards_admits_nothing_extra)
{
	struct limiter_bucket b = { 0 };
	struct limiter_result r;
	uint64_t n = drain(&b, &c->p, c->drained_at, 1000);

	cr_assert_gt(n, 0);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_not(take(&b, &c->p, c->back_to[i], &r), "%s: admitted going back to %llu",
			      c->name, (unsigned long long)c->back_to[i]);
		/* Nothing wrapped around below zero. */
		cr_assert_lt(r.retry_after_ns, 100 * NS_PER_S + T0, "%s", c->name);
		cr_assert_lt(r.reset_ns, 100 * NS_PER_S + T0, "%s", c->name);
		cr_assert_eq(r.remaining, 0, "%s", c->name);
	}
	/* And back at the drained time it is still empty. */
	cr_assert_not(take(&b, &c->p, c->drained_at, NULL), "%s", c->name);
}

Test(limiter, far_future_clock_is_held_not_wrapped)
{
	struct limiter_params p = mkp(TB, 10, NS_PER_S, 5);
	struct limiter_bucket b = { 0 };
	struct limiter_result r;

	cr_assert_eq(drain(&b, &p, UINT64_MAX, 100), 5);
	cr_assert_not(take(&b, &p, UINT64_MAX, &r));
	cr_assert_eq(r.retry_after_ns, 100 * NS_PER_MS);
	/* Past LIMITER_NOW_MAX_NS time stands still: no refill. */
	cr_assert_not(take(&b, &p, LIMITER_NOW_MAX_NS + NS_PER_H, NULL));
}

Test(limiter, huge_burst_is_capped_not_overflowed)
{
	struct limiter_params p = mkp(TB, 1, NS_PER_H, POLICY_MAX_RATE);
	struct limiter_bucket b = { 0 };
	struct limiter_result r;

	take(&b, &p, T0, &r);
	cr_assert(r.allowed);
	cr_assert_eq(r.limit, LIMITER_DEPTH_MAX_NS / NS_PER_H);
	cr_assert_eq(r.remaining, r.limit - 1);
}

/* One row: a bucket drained under `before`, then used under `after`. */
struct change_case {
	char name[64];
	struct limiter_params before;
	struct limiter_params after;
	uint64_t admitted_at_change; /* right after the change, then ... */
	uint64_t wait_ns;            /* ... this much later ... */
	uint64_t admitted_then;      /* ... this many pass */
};

ParameterizedTestParameters(limiter, parameter_change_keeps_the_bucket)
{
	static struct change_case cases[] = {
		/* Debt is kept as time (1 s here), which is 20 requests at
		 * 20/s: still empty. */
		{ "token rate doubled", { TB, 10, NS_PER_S, 10 }, { TB, 20, NS_PER_S, 20 }, 0,
		  50 * NS_PER_MS, 1 },
		/* 5 used of a deeper bucket: 45 left, not 50. */
		{ "token burst raised", { TB, 10, NS_PER_S, 5 }, { TB, 10, NS_PER_S, 50 }, 45,
		  100 * NS_PER_MS, 1 },
		{ "token to leaky", { TB, 10, NS_PER_S, 5 }, { LB, 10, NS_PER_S, 5 }, 0,
		  100 * NS_PER_MS, 1 },
		/* 0.5 s of debt at 7/min is part of one request: 4 of 5. */
		{ "token slowed to 7/min", { TB, 10, NS_PER_S, 5 }, { TB, 7, NS_PER_MIN, 5 }, 4,
		  NS_PER_MIN / 7, 1 },
		/* 0.9 s of debt left is 9 requests counted in the window. */
		{ "token to sliding", { TB, 10, NS_PER_S, 10 }, { SW, 10, NS_PER_S, 10 }, 0,
		  100 * NS_PER_MS, 1 },
		/* The window's estimate becomes debt: 10 until the window
		 * ends, weighted 5 half-way through the next one. */
		{ "sliding to token", { SW, 10, NS_PER_S, 10 }, { TB, 10, NS_PER_S, 10 }, 0,
		  1500 * NS_PER_MS, 5 },
		/* Estimate 2 at 80% of the next window: 0.2 s of a 0.3 s deep
		 * bucket. */
		{ "sliding to leaky", { SW, 10, NS_PER_S, 10 }, { LB, 10, NS_PER_S, 3 }, 0,
		  1800 * NS_PER_MS, 1 },
		{ "sliding unit doubled", { SW, 10, NS_PER_S, 1 }, { SW, 10, 2 * NS_PER_S, 1 }, 0,
		  0, 0 },
	};
	return cr_make_param_array(struct change_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct change_case *c, limiter, parameter_change_keeps_the_bucket)
{
	struct limiter_bucket b = { 0 };
	uint64_t start = 10 * T_MIN; /* a window start for any unit used here */

	cr_assert_gt(drain(&b, &c->before, start, 1000), 0);
	cr_assert_eq(drain(&b, &c->after, start, 1000), c->admitted_at_change,
		     "%s: right after the change", c->name);
	cr_assert_eq(drain(&b, &c->after, start + c->wait_ns, 1000), c->admitted_then,
		     "%s: later", c->name);
}

Test(limiter, params_from_policy_copies_the_limit)
{
	struct policy_rate_limit rl;
	struct limiter_params p;

	memset(&rl, 0, sizeof(rl));
	rl.algorithm = POLICY_ALG_LEAKY_BUCKET;
	rl.rate = 42;
	rl.unit = POLICY_UNIT_MINUTE;
	rl.unit_ns = NS_PER_MIN;
	rl.burst = 7;
	limiter_params_from_policy(&rl, &p);
	cr_assert_eq(p.algorithm, POLICY_ALG_LEAKY_BUCKET);
	cr_assert_eq(p.rate, 42);
	cr_assert_eq(p.unit_ns, NS_PER_MIN);
	cr_assert_eq(p.burst, 7);
}

Test(limiter, key_is_xxh3_of_both_hashes_in_order)
{
	const uint64_t words[2] = { 0x1234, 0xabcd };

	cr_assert_eq(limiter_key(0x1234, 0xabcd), XXH3_64bits(words, sizeof(words)));
	cr_assert_eq(limiter_key(1, 2), limiter_key(1, 2));
	cr_assert_neq(limiter_key(1, 2), limiter_key(2, 1));
	cr_assert_neq(limiter_key(1, 2), limiter_key(1, 3));
}

/* ---- the table ---- */

static struct limiter *new_table(size_t max_buckets, uint64_t idle_ttl_ns)
{
	struct limiter_config cfg = { .max_buckets = max_buckets, .idle_ttl_ns = idle_ttl_ns };
	struct limiter *l = NULL;

	cr_assert_eq(limiter_new(&cfg, &l), 0);
	cr_assert_not_null(l);
	return l;
}

static bool check(struct limiter *l, uint64_t key, const struct limiter_params *p, uint64_t now)
{
	struct limiter_result r;

	cr_assert_eq(limiter_check(l, key, p, now, &r), 0);
	return r.allowed;
}

Test(limiter_table, same_key_is_the_same_bucket)
{
	struct limiter *l = new_table(0, 0);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 5);

	for (int i = 0; i < 5; i++)
		cr_assert(check(l, 7, &p, T0));
	cr_assert_not(check(l, 7, &p, T0));
	cr_assert_eq(limiter_count(l), 1);
	cr_assert(check(l, 7, &p, T0 + NS_PER_S));
	cr_assert_not(check(l, 7, &p, T0 + NS_PER_S));
	limiter_free(l);
}

Test(limiter_table, different_keys_are_independent)
{
	struct limiter *l = new_table(0, 0);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 2);

	cr_assert(check(l, 1, &p, T0));
	cr_assert(check(l, 1, &p, T0));
	cr_assert_not(check(l, 1, &p, T0));
	cr_assert(check(l, 2, &p, T0));
	cr_assert(check(l, 2, &p, T0));
	cr_assert_not(check(l, 2, &p, T0));
	cr_assert(check(l, limiter_key(1, 2), &p, T0));
	cr_assert_eq(limiter_count(l), 3);
	limiter_free(l);
}

Test(limiter_table, defaults_apply_and_free_accepts_null)
{
	struct limiter *l = NULL;
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 1);

	cr_assert_eq(limiter_new(NULL, &l), 0);
	cr_assert_eq(limiter_count(l), 0);
	cr_assert(check(l, 1, &p, 0));
	/* Default idle_ttl is 10 minutes. */
	cr_assert_eq(limiter_sweep(l, 10 * NS_PER_MIN), 0);
	cr_assert_eq(limiter_sweep(l, 10 * NS_PER_MIN + NS_PER_S), 1);
	limiter_free(l);
	limiter_free(NULL);
}

Test(limiter_table, cap_refuses_new_keys_but_serves_existing_ones)
{
	struct limiter *l = new_table(4, NS_PER_S);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 3);
	struct limiter_result r = { .allowed = true, .limit = 99 };

	for (uint64_t k = 1; k <= 4; k++)
		cr_assert(check(l, k, &p, T0));
	cr_assert_eq(limiter_check(l, 5, &p, T0, &r), -ENOSPC);
	cr_assert_eq(r.limit, 99, "result untouched on error");
	cr_assert_eq(limiter_count(l), 4);
	for (uint64_t k = 1; k <= 4; k++)
		cr_assert(check(l, k, &p, T0));
	cr_assert_eq(limiter_check(l, 6, &p, T0, &r), -ENOSPC);
	/* Once idle buckets are swept there is room again. */
	cr_assert_eq(limiter_sweep(l, T0 + 10 * NS_PER_S), 4);
	cr_assert_eq(limiter_count(l), 0);
	cr_assert(check(l, 5, &p, T0 + 10 * NS_PER_S));
	limiter_free(l);
}

/* Steps of a third of the table make a pass in three (four with the
 * remainder) calls: each idle bucket is reclaimed exactly once, whichever
 * step meets it, the cursor wraps, and a step never walks more than one
 * pass however large max_slots is. */
Test(limiter_table, sweep_in_steps_reclaims_each_idle_bucket_once)
{
	struct limiter *l = new_table(64, NS_PER_S);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 1);
	size_t slots = limiter_slots(l), step = slots / 3, got = 0;

	cr_assert_geq(slots, 130, "capacity is a power of two >= 2 x max, plus 2: %zu", slots);
	for (uint64_t k = 1; k <= 40; k++)
		cr_assert(check(l, k * 0x9E3779B97F4A7C15ull, &p, T0));
	cr_assert_eq(limiter_count(l), 40);
	/* Not idle yet: a whole pass in steps reclaims nothing. */
	for (size_t done = 0; done < slots; done += step)
		got += limiter_sweep_step(l, T0, step);
	cr_assert_eq(got, 0);
	/* Idle now: a pass in steps (starting where the last one stopped,
	 * slots / 3 not dividing the table) takes each exactly once. */
	for (size_t done = 0; done < slots; done += step)
		got += limiter_sweep_step(l, T0 + 10 * NS_PER_S, step);
	cr_assert_eq(got, 40);
	cr_assert_eq(limiter_count(l), 0);
	for (size_t done = 0; done < slots; done += step)
		cr_assert_eq(limiter_sweep_step(l, T0 + 10 * NS_PER_S, step), 0);
	/* One call with a huge max_slots: one pass, no more. */
	for (uint64_t k = 1; k <= 5; k++)
		cr_assert(check(l, k * 0x9E3779B97F4A7C15ull, &p, T0 + 20 * NS_PER_S));
	cr_assert_eq(limiter_sweep_step(l, T0 + 40 * NS_PER_S, SIZE_MAX), 5);
	cr_assert_eq(limiter_sweep_step(l, T0 + 40 * NS_PER_S, SIZE_MAX), 0);
	limiter_free(l);
}

Test(limiter_table, sweep_reclaims_only_buckets_idle_and_full_for_the_ttl)
{
	struct limiter *l = new_table(0, 10 * NS_PER_S);
	struct limiter_params fast = mkp(TB, 10, NS_PER_S, 5);
	struct limiter_params slow = mkp(TB, 1, NS_PER_H, 2);
	struct limiter_params win = mkp(SW, 3, NS_PER_S, 1);
	const uint64_t start = T0; /* a whole second: window boundary */

	cr_assert(check(l, 1, &fast, start));                 /* full at +0.1 s */
	for (int i = 0; i < 5; i++)
		cr_assert(check(l, 2, &fast, start + 5 * NS_PER_S)); /* full at +5.5 s */
	cr_assert(check(l, 3, &slow, start));
	cr_assert(check(l, 3, &slow, start));                 /* full at +2 h */
	cr_assert(check(l, 4, &win, start + NS_PER_S / 2));   /* full from +2 s */
	cr_assert_eq(limiter_count(l), 4);

	cr_assert_eq(limiter_sweep(l, start + 10 * NS_PER_S), 0);
	cr_assert_eq(limiter_sweep(l, start + 10 * NS_PER_S + 100 * NS_PER_MS - 1), 0);
	cr_assert_eq(limiter_sweep(l, start + 10 * NS_PER_S + 100 * NS_PER_MS), 1);
	cr_assert_eq(limiter_count(l), 3);
	cr_assert_eq(limiter_sweep(l, start + 12 * NS_PER_S - 1), 0);
	cr_assert_eq(limiter_sweep(l, start + 12 * NS_PER_S), 1);
	cr_assert_eq(limiter_sweep(l, start + 15 * NS_PER_S + 500 * NS_PER_MS), 1);
	cr_assert_eq(limiter_count(l), 1);
	/* The slow bucket is still empty an hour later: kept, and still
	 * refusing. */
	cr_assert_eq(limiter_sweep(l, start + NS_PER_H), 0);
	cr_assert_not(check(l, 3, &slow, start + NS_PER_H / 2));
	cr_assert_eq(limiter_sweep(l, start + 2 * NS_PER_H + 10 * NS_PER_S), 1);
	cr_assert_eq(limiter_count(l), 0);
	/* A reclaimed key starts again full. */
	for (int i = 0; i < 5; i++)
		cr_assert(check(l, 2, &fast, start + 3 * NS_PER_H));
	cr_assert_not(check(l, 2, &fast, start + 3 * NS_PER_H));
	limiter_free(l);
}

Test(limiter_table, keys_zero_to_three_are_four_buckets)
{
	/* 0 and 1 are stored apart from the ring (as stored keys they would
	 * mean EMPTY and TOMBSTONE): still four independent buckets. */
	struct limiter *l = new_table(0, NS_PER_S);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 2);

	for (uint64_t k = 0; k < 4; k++) {
		cr_assert(check(l, k, &p, T0), "key %llu", (unsigned long long)k);
		cr_assert(check(l, k, &p, T0), "key %llu", (unsigned long long)k);
		cr_assert_not(check(l, k, &p, T0), "key %llu", (unsigned long long)k);
	}
	cr_assert_eq(limiter_count(l), 4);
	cr_assert_eq(limiter_sweep(l, T0 + 10 * NS_PER_S), 4);
	cr_assert_eq(limiter_count(l), 0);
	cr_assert(check(l, 0, &p, T0 + 10 * NS_PER_S));
	cr_assert(check(l, 1, &p, T0 + 10 * NS_PER_S));
	cr_assert_eq(limiter_count(l), 2);
	limiter_free(l);
}

/* Keys whose low 32 bits are equal share a home slot in any table of at
 * most 2^32 slots. */
static uint64_t same_home_key(uint64_t i)
{
	return i << 32 | 0x1234;
}

Test(limiter_table, full_probe_run_refuses_a_new_key_below_the_cap)
{
	struct limiter *l = new_table(1000, NS_PER_S);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 3);
	struct limiter_result r = { .allowed = true, .limit = 99 };

	for (uint64_t i = 0; i < LIMITER_PROBE_MAX; i++)
		cr_assert(check(l, same_home_key(i), &p, T0), "key %llu", (unsigned long long)i);
	cr_assert_eq(limiter_count(l), LIMITER_PROBE_MAX);
	cr_assert_eq(limiter_check(l, same_home_key(LIMITER_PROBE_MAX), &p, T0, &r), -ENOSPC);
	cr_assert_eq(r.limit, 99, "result untouched on error");
	cr_assert_eq(limiter_count(l), LIMITER_PROBE_MAX);
	/* The run's buckets are still served, each its own. */
	for (uint64_t i = 0; i < LIMITER_PROBE_MAX; i++) {
		cr_assert(check(l, same_home_key(i), &p, T0));
		cr_assert(check(l, same_home_key(i), &p, T0));
		cr_assert_not(check(l, same_home_key(i), &p, T0));
	}
	/* A key homed elsewhere is unaffected. */
	cr_assert(check(l, same_home_key(0) + 0x100, &p, T0));
	cr_assert_eq(limiter_count(l), LIMITER_PROBE_MAX + 1);
	limiter_free(l);
}

Test(limiter_table, swept_slots_are_reused_by_other_keys_of_the_run)
{
	struct limiter *l = new_table(1000, NS_PER_S);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 1);
	const uint64_t later = T0 + 6 * NS_PER_S + NS_PER_S / 2;

	for (uint64_t i = 0; i < LIMITER_PROBE_MAX; i++)
		cr_assert(check(l, same_home_key(i), &p, T0));
	/* Odd keys used again: full from T0 + 6 s, not idle for 1 s at
	 * `later`; even keys full since T0 + 1 s. */
	for (uint64_t i = 1; i < LIMITER_PROBE_MAX; i += 2)
		cr_assert(check(l, same_home_key(i), &p, T0 + 5 * NS_PER_S));
	cr_assert_eq(limiter_sweep(l, later), LIMITER_PROBE_MAX / 2);
	cr_assert_eq(limiter_count(l), LIMITER_PROBE_MAX / 2);

	/* New keys of the same run take the freed slots ... */
	for (uint64_t i = LIMITER_PROBE_MAX; i < LIMITER_PROBE_MAX * 3 / 2; i++) {
		cr_assert(check(l, same_home_key(i), &p, later), "new key %llu",
			  (unsigned long long)i);
		cr_assert_not(check(l, same_home_key(i), &p, later), "new key %llu",
			      (unsigned long long)i);
	}
	cr_assert_eq(limiter_count(l), LIMITER_PROBE_MAX);
	/* ... until the run is full again. */
	cr_assert_eq(limiter_check(l, same_home_key(99), &p, later, &(struct limiter_result){ 0 }),
		     -ENOSPC);
	/* The survivors are their old buckets: one refilled token each. */
	for (uint64_t i = 1; i < LIMITER_PROBE_MAX; i += 2) {
		cr_assert(check(l, same_home_key(i), &p, later));
		cr_assert_not(check(l, same_home_key(i), &p, later));
	}
	/* A swept key has no slot and the run has no room for it. */
	cr_assert_eq(limiter_check(l, same_home_key(0), &p, later, &(struct limiter_result){ 0 }),
		     -ENOSPC);
	cr_assert_eq(limiter_count(l), LIMITER_PROBE_MAX);
	limiter_free(l);
}

Test(limiter_table, sliding_unit_change_keeps_counts_and_sweeps_by_the_new_unit)
{
	struct limiter *l = new_table(0, NS_PER_S);
	struct limiter_params per_s = mkp(SW, 3, NS_PER_S, 1);
	struct limiter_params per_2s = mkp(SW, 3, 2 * NS_PER_S, 1);
	const uint64_t t = 10 * T_MIN; /* a window start for both units */

	cr_assert(check(l, 9, &per_s, t));
	cr_assert(check(l, 9, &per_s, t));
	/* Two counted, whatever the unit: one more. */
	cr_assert(check(l, 9, &per_2s, t));
	cr_assert_not(check(l, 9, &per_2s, t));
	/* Counted in window t / 2 s: full from t + 4 s, idle 1 s later. A
	 * sweep still judging by 1 s windows would see other windows. */
	cr_assert_eq(limiter_sweep(l, t + 5 * NS_PER_S - 1), 0);
	cr_assert_eq(limiter_sweep(l, t + 5 * NS_PER_S), 1);
	cr_assert_eq(limiter_count(l), 0);
	limiter_free(l);
}

Test(limiter_table, impossible_size_is_refused)
{
	struct limiter_config cfg = { .max_buckets = SIZE_MAX };
	struct limiter *l = (struct limiter *)&cfg;

	cr_assert_eq(limiter_new(&cfg, &l), -ENOMEM);
	cr_assert_eq(l, (struct limiter *)&cfg, "ret untouched on error");
}

/* ---- threads ---- */

#define N_THREADS 8

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

#define MT_RATE 1000
#define MT_BURST 250

/* Shared by the hammering threads of one test; lives on the test's stack
 * until every thread is joined. */
struct hammer {
	struct limiter *table;         /* NULL: use bucket */
	struct limiter_bucket bucket;
	struct limiter_params p;
	uint64_t key;
	uint64_t frozen_now;           /* 0: CLOCK_MONOTONIC */
	uint64_t deadline_ns;          /* real clock */
	uint64_t attempts;             /* frozen clock: per thread */
	pthread_barrier_t ready, start; /* N_THREADS + 1: the main thread too */
	uint64_t admitted;             /* atomic */
	uint64_t max_now;              /* atomic max */
	uint64_t first_ns;
};

static bool hammer_one(struct hammer *h, uint64_t now)
{
	struct limiter_result r;

	if (h->table) {
		if (limiter_check(h->table, h->key, &h->p, now, &r) != 0)
			return false;
	} else {
		limiter_bucket_take(&h->bucket, &h->p, now, &r);
	}
	return r.allowed;
}

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	uint64_t admitted = 0, max_now = 0;

	pthread_barrier_wait(&h->ready);
	pthread_barrier_wait(&h->start);
	if (h->frozen_now) {
		for (uint64_t i = 0; i < h->attempts; i++)
			admitted += hammer_one(h, h->frozen_now);
	} else {
		for (;;) {
			uint64_t now = mono_ns();

			if (now >= h->deadline_ns)
				break;
			admitted += hammer_one(h, now);
			max_now = now;
		}
	}
	__atomic_add_fetch(&h->admitted, admitted, __ATOMIC_RELAXED);
	uint64_t seen = __atomic_load_n(&h->max_now, __ATOMIC_RELAXED);

	while (max_now > seen &&
	       !__atomic_compare_exchange_n(&h->max_now, &seen, max_now, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
	return NULL;
}

/* Runs the threads; `first` (may be NULL) runs once all of them are
 * created and waiting, just before they are released. */
static void run_hammer(struct hammer *h, void (*first)(struct hammer *h))
{
	pthread_t th[N_THREADS];

	cr_assert_eq(pthread_barrier_init(&h->ready, NULL, N_THREADS + 1), 0);
	cr_assert_eq(pthread_barrier_init(&h->start, NULL, N_THREADS + 1), 0);
	for (int i = 0; i < N_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, hammer_thread, h), 0);
	pthread_barrier_wait(&h->ready);
	if (first)
		first(h);
	pthread_barrier_wait(&h->start);
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&h->ready);
	pthread_barrier_destroy(&h->start);
}

/* The first call fixes the bucket's origin. Taking the whole burst at once
 * leaves the threads a burst's worth of time (250 ms) to get going before
 * the bucket could fill up and rightly drop what overflows. */
static void first_call(struct hammer *h)
{
	uint64_t now = mono_ns();

	while (hammer_one(h, now))
		h->admitted++;
	cr_assert_eq(h->admitted, MT_BURST);
	h->max_now = now;
	h->first_ns = now;
	h->deadline_ns = now + 2 * NS_PER_S;
}

/* R = 1000/s, B = 250, 8 threads on one bucket for 2 s of real time: the
 * admitted total is B + R * (last timestamp used - first), within one. The
 * burst covers 250 ms in which no thread runs at all (a loaded CI machine):
 * a bucket that fills up to its burst rightly drops the excess. */
static void real_clock_exactness(bool through_table)
{
	struct hammer h;
	uint64_t first_ns, elapsed_ns, expected;

	memset(&h, 0, sizeof(h));
	h.p = mkp(TB, MT_RATE, NS_PER_S, MT_BURST);
	h.key = 0x5eed;
	if (through_table)
		h.table = new_table(0, 0);
	run_hammer(&h, first_call);
	first_ns = h.first_ns;
	/* Take what the threads left at the last timestamp any of them used:
	 * with 8 threads on few cores, all of them may be descheduled for a
	 * while near the end, and unclaimed tokens are not over-admission. */
	while (hammer_one(&h, h.max_now))
		h.admitted++;

	elapsed_ns = h.max_now - first_ns;
	expected = MT_BURST + elapsed_ns * MT_RATE / NS_PER_S;
	cr_log_info("admitted %llu, expected %llu over %llu ns", (unsigned long long)h.admitted,
		    (unsigned long long)expected, (unsigned long long)elapsed_ns);
	cr_assert(h.admitted + 1 >= expected && h.admitted <= expected + 1,
		  "admitted %llu, want %llu +-1 over %llu ns", (unsigned long long)h.admitted,
		  (unsigned long long)expected, (unsigned long long)elapsed_ns);
	if (through_table) {
		cr_assert_eq(limiter_count(h.table), 1);
		limiter_free(h.table);
	}
}

Test(limiter_table, threads_on_one_key_admit_exactly_burst_plus_rate_times_time)
{
	real_clock_exactness(true);
}

Test(limiter_table, threads_on_one_bare_bucket_admit_exactly_burst_plus_rate_times_time)
{
	real_clock_exactness(false);
}

/* One row: threads on one bucket while the clock stands still. */
struct frozen_case {
	char name[64];
	struct limiter_params p;
	bool through_table;
	uint64_t admitted;
};

ParameterizedTestParameters(limiter_table, threads_on_a_frozen_clock_admit_exactly_the_limit)
{
	static struct frozen_case cases[] = {
		{ "token, bare", { TB, 1000, NS_PER_S, 50 }, false, 50 },
		{ "token, table", { TB, 1000, NS_PER_S, 50 }, true, 50 },
		{ "leaky, table", { LB, 3, NS_PER_S, 77 }, true, 77 },
		{ "sliding, bare", { SW, 500, NS_PER_MIN, 1 }, false, 500 },
		{ "sliding, table", { SW, 1000, NS_PER_S, 1 }, true, 1000 },
	};
	return cr_make_param_array(struct frozen_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct frozen_case *c, limiter_table,
		  threads_on_a_frozen_clock_admit_exactly_the_limit)
{
	struct hammer h;

	memset(&h, 0, sizeof(h));
	h.p = c->p;
	h.key = 42;
	h.frozen_now = 10 * T_MIN + 123;
	h.attempts = 2000;
	if (c->through_table)
		h.table = new_table(0, 0);
	run_hammer(&h, NULL);
	cr_assert_eq(h.admitted, c->admitted, "%s: admitted %llu", c->name,
		     (unsigned long long)h.admitted);
	if (c->through_table) {
		cr_assert_eq(limiter_count(h.table), 1);
		limiter_free(h.table);
	}
}

/* Threads meet on keys nobody has used yet: half walk the keys forwards,
 * half backwards, all from the same barrier, so most keys get their first
 * requests from several threads at once. On a frozen clock every key must
 * admit exactly its limit in total: a key added twice would admit twice. */
#define NEW_KEYS 20000
#define NEW_KEY_ATTEMPTS 2
#define NEW_KEY_LIMIT 3

/* Shared by the threads of one test; static in the test, lives until every
 * thread is joined. */
struct new_keys {
	struct limiter *l;
	pthread_barrier_t start;
	int next_thread;               /* atomic */
	uint32_t admitted[NEW_KEYS];   /* atomic */
	uint32_t errors;               /* atomic: checks that did not return 0 */
};

static uint64_t new_key(uint64_t i)
{
	return limiter_key(0xfeed, i);
}

static void *new_keys_thread(void *arg)
{
	struct new_keys *s = arg;
	int me = __atomic_fetch_add(&s->next_thread, 1, __ATOMIC_RELAXED);
	/* Even keys token buckets, odd ones sliding windows (whose insert
	 * also publishes the unit). */
	const struct limiter_params ps[2] = { mkp(TB, 1, NS_PER_H, NEW_KEY_LIMIT),
					      mkp(SW, NEW_KEY_LIMIT, NS_PER_H, 1) };

	pthread_barrier_wait(&s->start);
	for (uint64_t n = 0; n < NEW_KEYS; n++) {
		uint64_t i = me % 2 ? NEW_KEYS - 1 - n : n;

		for (int j = 0; j < NEW_KEY_ATTEMPTS; j++) {
			struct limiter_result r;

			if (limiter_check(s->l, new_key(i), &ps[i % 2], 10 * T_MIN, &r) != 0)
				__atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
			else if (r.allowed)
				__atomic_add_fetch(&s->admitted[i], 1, __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

Test(limiter_table, threads_adding_the_same_new_keys_add_each_once)
{
	static struct new_keys s;
	pthread_t th[N_THREADS];

	/* Room to spare, so no probe run can fill up. */
	s.l = new_table(4 * NEW_KEYS, 0);
	cr_assert_eq(pthread_barrier_init(&s.start, NULL, N_THREADS), 0);
	for (int i = 0; i < N_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, new_keys_thread, &s), 0);
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(th[i], NULL);

	cr_assert_eq(s.errors, 0);
	for (uint64_t i = 0; i < NEW_KEYS; i++)
		cr_assert_eq(s.admitted[i], NEW_KEY_LIMIT, "key %llu admitted %u",
			     (unsigned long long)i, s.admitted[i]);
	cr_assert_eq(limiter_count(s.l), NEW_KEYS);
	pthread_barrier_destroy(&s.start);
	limiter_free(s.l);
}

/* Many keys, all full and long idle (sweepable) at the start of each phase;
 * the odd ones are taken from by two checker threads while a sweeper thread
 * sweeps at the same clock. Per phase every odd key must admit exactly its
 * burst of the 8 attempts, whether its old node or a fresh one served them:
 * a lost update would show as a second burst. Each phase moves the clock
 * 10 h on, so every bucket is full and sweepable again. */
#define SWEEP_KEYS 4000
#define SWEEP_BURST 3
#define SWEEP_PHASES 5
#define SWEEP_PHASE_NS (10 * NS_PER_H)

/* Shared by the checker and sweeper threads; static in the test, lives
 * until every thread is joined. */
struct sweep_race {
	struct limiter *l;
	struct limiter_params p;
	uint64_t now;                   /* atomic; advanced between phases */
	pthread_barrier_t phase;        /* all 3 threads, twice per phase */
	uint32_t admitted[SWEEP_KEYS];  /* atomic */
	int checked;                    /* atomic: checker-phases finished */
	int next_checker;               /* atomic */
	uint64_t swept;
};

static void *sweep_checker(void *arg)
{
	struct sweep_race *s = arg;
	int me = __atomic_fetch_add(&s->next_checker, 1, __ATOMIC_RELAXED);

	for (int phase = 0; phase < SWEEP_PHASES; phase++) {
		uint64_t now;

		pthread_barrier_wait(&s->phase); /* after the previous phase's store */
		now = __atomic_load_n(&s->now, __ATOMIC_ACQUIRE);

		/* Opposite orders, so the threads meet in the middle. */
		for (int round = 0; round < 2; round++) {
			for (uint64_t i = 1; i < SWEEP_KEYS; i += 2) {
				uint64_t k = me ? SWEEP_KEYS - i : i;

				/* Two cores, three threads: let the sweeper run. */
				if (i % 64 == 1)
					sched_yield();

				for (int j = 0; j < 2; j++) {
					struct limiter_result r;

					cr_assert_eq(limiter_check(s->l, k, &s->p, now, &r), 0);
					if (r.allowed)
						__atomic_add_fetch(&s->admitted[k], 1,
								   __ATOMIC_RELAXED);
				}
			}
		}
		__atomic_add_fetch(&s->checked, 1, __ATOMIC_RELEASE);
		if (pthread_barrier_wait(&s->phase) == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_store_n(&s->now, now + SWEEP_PHASE_NS, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void *sweeper(void *arg)
{
	struct sweep_race *s = arg;

	for (int phase = 0; phase < SWEEP_PHASES; phase++) {
		uint64_t now;

		pthread_barrier_wait(&s->phase); /* after the previous phase's store */
		now = __atomic_load_n(&s->now, __ATOMIC_ACQUIRE);
		while (__atomic_load_n(&s->checked, __ATOMIC_ACQUIRE) < 2 * (phase + 1))
			s->swept += limiter_sweep(s->l, now);
		if (pthread_barrier_wait(&s->phase) == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_store_n(&s->now, now + SWEEP_PHASE_NS, __ATOMIC_RELEASE);
	}
	return NULL;
}

Test(limiter_table, sweep_concurrent_with_checks_loses_no_update)
{
	static struct sweep_race s;
	pthread_t th[3];
	uint64_t cold_at = T0, end;

	s.l = new_table(0, NS_PER_S);
	s.p = mkp(TB, 1, NS_PER_H, SWEEP_BURST);
	s.now = cold_at + SWEEP_PHASE_NS;
	/* Every key used once long ago: full since cold_at + 1 h. */
	for (uint64_t k = 0; k < SWEEP_KEYS; k++)
		cr_assert(check(s.l, k, &s.p, cold_at));
	cr_assert_eq(pthread_barrier_init(&s.phase, NULL, 3), 0);
	cr_assert_eq(pthread_create(&th[0], NULL, sweep_checker, &s), 0);
	cr_assert_eq(pthread_create(&th[1], NULL, sweep_checker, &s), 0);
	cr_assert_eq(pthread_create(&th[2], NULL, sweeper, &s), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);

	for (uint64_t k = 1; k < SWEEP_KEYS; k += 2)
		cr_assert_eq(s.admitted[k], SWEEP_BURST * SWEEP_PHASES, "key %llu admitted %u",
			     (unsigned long long)k, s.admitted[k]);
	cr_log_info("swept %llu buckets while the checkers ran", (unsigned long long)s.swept);
	cr_assert_gt(s.swept, 0);
	/* At the last phase's clock the odd keys are empty and stay; a last
	 * sweep takes whatever even keys the race left. */
	end = s.now - SWEEP_PHASE_NS;
	limiter_sweep(s.l, end);
	cr_assert_eq(limiter_count(s.l), SWEEP_KEYS / 2);
	for (uint64_t k = 1; k < SWEEP_KEYS; k += 2)
		cr_assert_not(check(s.l, k, &s.p, end));
	pthread_barrier_destroy(&s.phase);
	limiter_free(s.l);
}

/* ---- prepared plans ---- */

/* limiter_check_plan with a plan made once must answer exactly what
 * limiter_check answers, for every algorithm and for grids that are exact
 * (7/min: sevenths of a ns) or rounded (1e9 / 3 per s). */
Test(limiter_table, a_prepared_plan_answers_exactly_like_the_params)
{
	const struct limiter_params ps[] = {
		mkp(TB, 7, NS_PER_MIN, 2), mkp(LB, 3, NS_PER_S, 4), mkp(TB, 1000000, NS_PER_S, 1000),
		mkp(LB, 333333333, NS_PER_S, 5), mkp(SW, 10, NS_PER_S, 1), mkp(TB, 1, NS_PER_H, 1),
	};
	struct limiter *a, *b;

	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 64 }, &a), 0);
	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 64 }, &b), 0);
	for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		struct limiter_plan plan;
		uint64_t now = T0;

		limiter_plan_init(&ps[k], &plan);
		for (int i = 0; i < 200; i++) {
			struct limiter_result ra, rb;

			now += (uint64_t)(i * 7919 % 97) * NS_PER_MS;
			limiter_prefetch(a, 100 + k);
			cr_assert_eq(limiter_check(a, 100 + k, &ps[k], now, &ra), 0);
			cr_assert_eq(limiter_check_plan(b, 100 + k, &plan, now, &rb), 0);
			cr_assert_eq(ra.allowed, rb.allowed, "params %zu, request %d", k, i);
			cr_assert_eq(ra.limit, rb.limit);
			cr_assert_eq(ra.remaining, rb.remaining);
			cr_assert_eq(ra.reset_ns, rb.reset_ns);
			cr_assert_eq(ra.retry_after_ns, rb.retry_after_ns);
			cr_assert_eq(ra.delay_ns, rb.delay_ns);
		}
	}
	limiter_free(a);
	limiter_free(b);
}

/* ---- slot hints ---- */

/* How a test treats the hint between two checks of the same key. */
enum hint_use {
	HINT_NONE,       /* always 0 */
	HINT_KEPT,       /* what the last call stored */
	HINT_OTHER_KEY,  /* the slot of another live key */
	HINT_PAST_TABLE, /* an index beyond this table */
	HINT_FOREIGN,    /* stored by another limiter for the same key */
};

struct hint_case {
	char name[48];
	enum hint_use use;
	struct limiter_params p;
};

ParameterizedTestParameters(limiter_table, a_hint_is_only_a_shortcut)
{
	static struct hint_case cases[] = {
		{ "no hint, token bucket", HINT_NONE, { TB, 3, NS_PER_S, 4 } },
		{ "kept hint, token bucket", HINT_KEPT, { TB, 3, NS_PER_S, 4 } },
		{ "kept hint, leaky bucket", HINT_KEPT, { LB, 7, NS_PER_MIN, 2 } },
		{ "kept hint, sliding window", HINT_KEPT, { SW, 10, NS_PER_S, 1 } },
		{ "another key's slot", HINT_OTHER_KEY, { TB, 3, NS_PER_S, 4 } },
		{ "another key's slot, sliding", HINT_OTHER_KEY, { SW, 10, NS_PER_S, 1 } },
		{ "past the table", HINT_PAST_TABLE, { TB, 3, NS_PER_S, 4 } },
		{ "from another limiter", HINT_FOREIGN, { LB, 3, NS_PER_S, 4 } },
	};
	return cr_make_param_array(struct hint_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* limiter_check_hint under every kind of hint answers exactly what
 * limiter_check_plan answers on a twin table, and never touches another
 * key's bucket. */
ParameterizedTest(struct hint_case *c, limiter_table, a_hint_is_only_a_shortcut)
{
	const uint64_t key = same_home_key(1), other = same_home_key(2);
	struct limiter *a, *b, *big;
	struct limiter_plan plan;
	uint32_t hint = 0, other_hint = 0, foreign_hint = 0;
	uint64_t now = T0;

	cr_log_info("case: %s", c->name);
	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 64 }, &a), 0);
	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 64 }, &b), 0);
	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 4096 }, &big), 0);
	limiter_plan_init(&c->p, &plan);
	for (int i = 0; i < 300; i++) {
		struct limiter_result ra, rb, ro;

		now += (uint64_t)(i * 7919 % 131) * NS_PER_MS;
		/* The other key lives in the same probe run, next to ours. */
		cr_assert_eq(limiter_check_plan(a, other, &plan, now, &ro), 0);
		cr_assert_eq(limiter_check_hint(b, other, &plan, now, &other_hint, &rb), 0);
		cr_assert_eq(ro.allowed, rb.allowed, "other key, request %d", i);
		cr_assert_eq(ro.remaining, rb.remaining, "other key, request %d", i);
		cr_assert_eq(limiter_check_hint(big, key, &plan, now, &foreign_hint, &ro), 0);
		switch (c->use) {
		case HINT_NONE:
			hint = 0;
			break;
		case HINT_KEPT:
			break;
		case HINT_OTHER_KEY:
			hint = other_hint;
			break;
		case HINT_PAST_TABLE:
			hint = UINT32_MAX;
			break;
		case HINT_FOREIGN:
			hint = foreign_hint;
			break;
		}
		cr_assert_eq(limiter_check_plan(a, key, &plan, now, &ra), 0);
		cr_assert_eq(limiter_check_hint(b, key, &plan, now, &hint, &rb), 0);
		cr_assert_eq(ra.allowed, rb.allowed, "request %d", i);
		cr_assert_eq(ra.limit, rb.limit);
		cr_assert_eq(ra.remaining, rb.remaining, "request %d", i);
		cr_assert_eq(ra.reset_ns, rb.reset_ns);
		cr_assert_eq(ra.retry_after_ns, rb.retry_after_ns);
		cr_assert_eq(ra.delay_ns, rb.delay_ns);
		if (i > 0)
			cr_assert_neq(hint, 0, "an existing bucket's slot is handed back");
	}
	cr_assert_eq(limiter_count(b), 2, "no bucket added twice");
	limiter_free(a);
	limiter_free(b);
	limiter_free(big);
}

/* A key swept while a caller still holds its hint, its slot then taken by
 * another key: the hint must neither charge nor read that key's bucket. */
Test(limiter_table, a_stale_hint_after_a_sweep_does_not_touch_the_new_owner)
{
	struct limiter *l = new_table(1000, NS_PER_S);
	struct limiter_params p = mkp(TB, 1, NS_PER_S, 1);
	struct limiter_plan plan;
	struct limiter_result r;
	uint32_t hint = 0, stale;
	const uint64_t later = T0 + 10 * NS_PER_S;

	limiter_plan_init(&p, &plan);
	cr_assert_eq(limiter_check_hint(l, same_home_key(0), &plan, T0, &hint, &r), 0);
	cr_assert(r.allowed);
	cr_assert_eq(limiter_check_hint(l, same_home_key(0), &plan, T0, &hint, &r), 0);
	cr_assert_not(r.allowed);
	cr_assert_neq(hint, 0);
	stale = hint;
	cr_assert_eq(limiter_sweep(l, later), 1);
	/* The new key takes the freed slot (the first of the run) and its
	 * only token. */
	cr_assert(check(l, same_home_key(5), &p, later));
	hint = stale;
	cr_assert_eq(limiter_check_hint(l, same_home_key(0), &plan, later, &hint, &r), 0);
	cr_assert(r.allowed, "the swept key starts again full");
	cr_assert_neq(hint, stale, "the hint follows the key to its new slot, or is dropped");
	cr_assert_not(check(l, same_home_key(5), &p, later), "the new owner was not refilled");
	cr_assert_eq(limiter_count(l), 2);
	limiter_free(l);
}

/* Resident set of this process in bytes, from /proc/self/statm. */
static size_t resident_bytes(void)
{
	unsigned long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");

	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%lu %lu", &size, &resident), 2);
	fclose(f);
	return resident * 4096ul;
}

/* prefault commits the whole table in limiter_new; without it, a new
 * table costs (next to) nothing until buckets land on its pages. */
Test(limiter_table, prefault_commits_the_table_at_creation)
{
	struct limiter_params p = mkp(TB, 10, NS_PER_S, 5);
	struct limiter_result r;
	struct limiter *lazy, *eager;
	size_t before, after_lazy, after_eager, map;

	before = resident_bytes();
	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 1 << 18 }, &lazy), 0);
	after_lazy = resident_bytes();
	map = limiter_map_bytes(lazy);
	cr_assert_geq(map, (size_t)(1 << 19) * 24, "two slots and two words per bucket");
	cr_assert_lt(after_lazy - before, map / 8, "lazy table resident: %zu of %zu bytes",
		     after_lazy - before, map);

	cr_assert_eq(limiter_new(&(struct limiter_config){ .max_buckets = 1 << 18, .prefault = true },
				 &eager), 0);
	after_eager = resident_bytes();
	cr_assert_geq(after_eager - after_lazy, map - map / 64,
		      "prefaulted table resident: %zu of %zu bytes", after_eager - after_lazy, map);
	cr_assert_eq(limiter_map_bytes(eager), map);

	/* A prefaulted table is an ordinary empty table. */
	cr_assert_eq(limiter_check(eager, 42, &p, T0, &r), 0);
	cr_assert(r.allowed);
	cr_assert_eq(r.remaining, 4);
	limiter_free(lazy);
	limiter_free(eager);
}
