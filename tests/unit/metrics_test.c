/* metrics_test.c - exact Prometheus text for families, samples, escaping
 * and histograms, and exact totals from concurrent observations.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* ---- buffer ------------------------------------------------------------- */

Test(metrics_buf, starts_empty_and_done_resets)
{
	struct metrics_buf b;

	memset(&b, 0x5a, sizeof(b));
	metrics_buf_init(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.err, 0);
	metrics_sample_u64(&b, "x", NULL, 1);
	cr_assert_not_null(b.data);
	metrics_buf_done(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.cap, 0);
	metrics_buf_done(&b); /* twice is harmless */
}

Test(metrics_buf, grows_across_many_appends)
{
	struct metrics_buf b;
	char name[32], want[64];
	size_t off = 0;

	metrics_buf_init(&b);
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		metrics_sample_u64(&b, name, NULL, (uint64_t)i * 3);
	}
	cr_assert_eq(b.err, 0);
	cr_assert_eq(strlen(b.data), b.len);
	for (int i = 0; i < 5000; i++) {
		int n = snprintf(want, sizeof(want), "m%d %d\n", i, i * 3);

		cr_assert_eq(strncmp(b.data + off, want, (size_t)n), 0, "line %d", i);
		off += (size_t)n;
	}
	cr_assert_eq(off, b.len);
	metrics_buf_done(&b);
}

Test(metrics_buf, error_is_sticky)
{
	struct metrics_buf b;
	char *before;

	metrics_buf_init(&b);
	metrics_sample_u64(&b, "a", NULL, 1);
	before = strdup(b.data);
	b.err = -ENOMEM; /* as a failed realloc leaves it */
	metrics_sample_u64(&b, "b", NULL, 2);
	metrics_family(&b, "c", "gauge", "help");
	cr_assert_eq(b.err, -ENOMEM);
	cr_assert_str_eq(b.data, before);
	cr_assert_eq(b.len, strlen(before));
	free(before);
	metrics_buf_done(&b);
}

/* ---- families ----------------------------------------------------------- */

/* One table row; static, copied by value into each test process. */
struct family_case {
	char name[40];
	char type[16];
	char help[64];
	int null_help;
	char want[160];
};

static struct family_case family_cases[] = {
	{ "sluice_requests_total", "counter", "Requests seen.", 0,
	  "# HELP sluice_requests_total Requests seen.\n# TYPE sluice_requests_total counter\n" },
	{ "sluice_up", "gauge", "", 1, "# TYPE sluice_up gauge\n" },
	{ "h", "histogram", "", 0, "# HELP h \n# TYPE h histogram\n" },
	{ "e", "counter", "C:\\path and \"quotes\"", 0,
	  "# HELP e C:\\\\path and \"quotes\"\n# TYPE e counter\n" },
	{ "n", "gauge", "two\nlines", 0, "# HELP n two\\nlines\n# TYPE n gauge\n" },
};

ParameterizedTestParameters(metrics_family, exact_text)
{
	return cr_make_param_array(struct family_case, family_cases,
				   sizeof(family_cases) / sizeof(family_cases[0]));
}

ParameterizedTest(struct family_case *tc, metrics_family, exact_text)
{
	struct metrics_buf b;

	metrics_buf_init(&b);
	metrics_family(&b, tc->name, tc->type, tc->null_help ? NULL : tc->help);
	cr_assert_eq(b.err, 0);
	cr_assert_str_eq(b.data, tc->want);
	cr_assert_eq(b.len, strlen(tc->want));
	metrics_buf_done(&b);
}

/* ---- samples ------------------------------------------------------------ */

Test(metrics_sample, without_labels)
{
	struct metrics_buf b;
	const char *const none[] = { NULL };

	metrics_buf_init(&b);
	metrics_sample(&b, "sluice_up", NULL, 1);
	metrics_sample(&b, "sluice_ratio", none, 0.25);
	metrics_sample_u64(&b, "sluice_bytes_total", NULL, 1234567890123ULL);
	cr_assert_str_eq(b.data, "sluice_up 1\nsluice_ratio 0.25\nsluice_bytes_total 1234567890123\n");
	metrics_buf_done(&b);
}

Test(metrics_sample, scalar_is_a_family_with_one_sample)
{
	struct metrics_buf b;

	metrics_buf_init(&b);
	metrics_scalar_u64(&b, "sluice_reloads_total", "counter", "Reloads", 7);
	metrics_scalar(&b, "sluice_last_seconds", "gauge", NULL, 1.5);
	cr_assert_str_eq(b.data, "# HELP sluice_reloads_total Reloads\n"
				 "# TYPE sluice_reloads_total counter\n"
				 "sluice_reloads_total 7\n"
				 "# TYPE sluice_last_seconds gauge\n"
				 "sluice_last_seconds 1.5\n");
	metrics_buf_done(&b);
}

Test(metrics_sample, with_labels_in_order)
{
	struct metrics_buf b;
	const char *const one[] = { "node", "edge-1", NULL };
	const char *const two[] = { "method", "GET", "code", "200", NULL };

	metrics_buf_init(&b);
	metrics_sample_u64(&b, "http_requests_total", two, 1027);
	metrics_sample(&b, "sluice_snapshot_age_seconds", one, 2.5);
	cr_assert_str_eq(b.data, "http_requests_total{method=\"GET\",code=\"200\"} 1027\n"
				 "sluice_snapshot_age_seconds{node=\"edge-1\"} 2.5\n");
	metrics_buf_done(&b);
}

Test(metrics_sample, u64_extremes)
{
	struct metrics_buf b;

	metrics_buf_init(&b);
	metrics_sample_u64(&b, "a", NULL, 0);
	metrics_sample_u64(&b, "b", NULL, UINT64_MAX);
	cr_assert_str_eq(b.data, "a 0\nb 18446744073709551615\n");
	metrics_buf_done(&b);
}

/* One table row; static, copied by value into each test process. */
struct label_case {
	char name[32];
	char value[32];
	char want[64];
};

static struct label_case label_cases[] = {
	{ "plain", "abc", "m{v=\"abc\"} 1\n" },
	{ "empty", "", "m{v=\"\"} 1\n" },
	{ "quote", "a\"b", "m{v=\"a\\\"b\"} 1\n" },
	{ "backslash", "a\\b", "m{v=\"a\\\\b\"} 1\n" },
	{ "newline", "a\nb", "m{v=\"a\\nb\"} 1\n" },
	{ "all three", "\\\"\n", "m{v=\"\\\\\\\"\\n\"} 1\n" },
	{ "tab and utf-8 stay raw", "\tcaf\xc3\xa9", "m{v=\"\tcaf\xc3\xa9\"} 1\n" },
	{ "braces and commas stay", "{a,b}=c", "m{v=\"{a,b}=c\"} 1\n" },
};

ParameterizedTestParameters(metrics_sample, label_escaping)
{
	return cr_make_param_array(struct label_case, label_cases,
				   sizeof(label_cases) / sizeof(label_cases[0]));
}

ParameterizedTest(struct label_case *tc, metrics_sample, label_escaping)
{
	struct metrics_buf b;
	const char *const labels[] = { "v", tc->value, NULL };

	metrics_buf_init(&b);
	metrics_sample(&b, "m", labels, 1);
	cr_assert_str_eq(b.data, tc->want, "%s", tc->name);
	metrics_buf_done(&b);
}

/* One table row; static, copied by value into each test process. */
struct value_case {
	char name[32];
	double value;
	char want[40];
};

static struct value_case value_cases[] = {
	{ "zero", 0.0, "0" },
	{ "negative zero", -0.0, "-0" },
	{ "one", 1.0, "1" },
	{ "negative integer", -17.0, "-17" },
	{ "large integer", 123456789012345.0, "123456789012345" },
	{ "2^53 in 16 digits", 9007199254740992.0, "9007199254740992" },
	{ "1e15", 1e15, "1e+15" },
	{ "1e20", 1e20, "1e+20" },
	{ "tenth", 0.1, "0.1" },
	{ "sum not exact", 0.1 + 0.2, "0.30000000000000004" },
	{ "third", 1.0 / 3.0, "0.3333333333333333" },
	{ "small", 1e-9, "1e-09" },
	{ "half", -0.5, "-0.5" },
	{ "max", DBL_MAX, "1.7976931348623157e+308" },
	{ "min normal", DBL_MIN, "2.2250738585072014e-308" },
	{ "nan", NAN, "NaN" },
	{ "plus infinity", INFINITY, "+Inf" },
	{ "minus infinity", -INFINITY, "-Inf" },
};

ParameterizedTestParameters(metrics_sample, value_format)
{
	return cr_make_param_array(struct value_case, value_cases,
				   sizeof(value_cases) / sizeof(value_cases[0]));
}

ParameterizedTest(struct value_case *tc, metrics_sample, value_format)
{
	struct metrics_buf b;
	char want[64];

	metrics_buf_init(&b);
	metrics_sample(&b, "v", NULL, tc->value);
	snprintf(want, sizeof(want), "v %s\n", tc->want);
	cr_assert_str_eq(b.data, want, "%s", tc->name);
	metrics_buf_done(&b);
}

Test(metrics_sample, values_round_trip)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	for (int i = 0; i < 20000; i++) {
		struct metrics_buf b;
		double v, back;
		uint64_t bits;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		bits = x;
		memcpy(&v, &bits, sizeof(v));
		if (!isfinite(v))
			continue;
		metrics_buf_init(&b);
		metrics_sample(&b, "v", NULL, v);
		cr_assert(strchr(b.data, '\n'));
		back = strtod(b.data + 2, NULL);
		cr_assert(back == v || (v == 0 && back == 0), "%s", b.data);
		metrics_buf_done(&b);
	}
}

/* ---- histograms --------------------------------------------------------- */

static const double latency_bounds[] = { 0.005, 0.5, 1, 2.5 };

Test(metrics_histogram, renders_cumulative_buckets_sum_and_count)
{
	struct metrics_histogram h;
	struct metrics_buf b;
	const char *const labels[] = { "route", "api", "node", "e\"1", NULL };

	metrics_histogram_init(&h, latency_bounds, 4);
	metrics_histogram_observe(&h, 0.001);
	metrics_histogram_observe(&h, 0.5); /* on a bound: counts in it */
	metrics_histogram_observe(&h, 0.75);
	metrics_histogram_observe(&h, 3);
	metrics_histogram_observe(&h, 100);
	metrics_buf_init(&b);
	metrics_family(&b, "sluice_latency_seconds", "histogram", "Request latency.");
	metrics_histogram_render(&b, "sluice_latency_seconds", labels, &h);
	cr_assert_eq(b.err, 0);
	cr_assert_str_eq(b.data,
		"# HELP sluice_latency_seconds Request latency.\n"
		"# TYPE sluice_latency_seconds histogram\n"
		"sluice_latency_seconds_bucket{route=\"api\",node=\"e\\\"1\",le=\"0.005\"} 1\n"
		"sluice_latency_seconds_bucket{route=\"api\",node=\"e\\\"1\",le=\"0.5\"} 2\n"
		"sluice_latency_seconds_bucket{route=\"api\",node=\"e\\\"1\",le=\"1\"} 3\n"
		"sluice_latency_seconds_bucket{route=\"api\",node=\"e\\\"1\",le=\"2.5\"} 3\n"
		"sluice_latency_seconds_bucket{route=\"api\",node=\"e\\\"1\",le=\"+Inf\"} 5\n"
		"sluice_latency_seconds_sum{route=\"api\",node=\"e\\\"1\"} 104.251\n"
		"sluice_latency_seconds_count{route=\"api\",node=\"e\\\"1\"} 5\n");
	cr_assert_eq(metrics_histogram_count(&h), 5);
	cr_assert_float_eq(metrics_histogram_sum(&h), 104.251, 1e-9);
	metrics_buf_done(&b);
}

Test(metrics_histogram, empty_histogram_without_labels)
{
	struct metrics_histogram h;
	struct metrics_buf b;
	static const double bounds[] = { 10, 100 };

	metrics_histogram_init(&h, bounds, 2);
	metrics_buf_init(&b);
	metrics_histogram_render(&b, "q", NULL, &h);
	cr_assert_str_eq(b.data, "q_bucket{le=\"10\"} 0\nq_bucket{le=\"100\"} 0\n"
				 "q_bucket{le=\"+Inf\"} 0\nq_sum 0\nq_count 0\n");
	metrics_buf_done(&b);
}

Test(metrics_histogram, no_bounds_has_only_inf_bucket)
{
	struct metrics_histogram h;
	struct metrics_buf b;

	metrics_histogram_init(&h, NULL, 0);
	metrics_histogram_observe(&h, -4);
	metrics_histogram_observe(&h, 6.5);
	metrics_buf_init(&b);
	metrics_histogram_render(&b, "z", NULL, &h);
	cr_assert_str_eq(b.data, "z_bucket{le=\"+Inf\"} 2\nz_sum 2.5\nz_count 2\n");
	metrics_buf_done(&b);
}

Test(metrics_histogram, explicit_inf_bound_is_not_doubled)
{
	struct metrics_histogram h;
	struct metrics_buf b;
	static const double bounds[] = { 1, INFINITY };

	metrics_histogram_init(&h, bounds, 2);
	cr_assert_eq(h.n_bounds, 1);
	metrics_histogram_observe(&h, 5);
	metrics_buf_init(&b);
	metrics_histogram_render(&b, "y", NULL, &h);
	cr_assert_str_eq(b.data, "y_bucket{le=\"1\"} 0\ny_bucket{le=\"+Inf\"} 1\ny_sum 5\ny_count 1\n");
	metrics_buf_done(&b);
}

Test(metrics_histogram, nan_and_infinities_land_where_prometheus_puts_them)
{
	struct metrics_histogram h;
	struct metrics_buf b;
	static const double bounds[] = { 0 };

	metrics_histogram_init(&h, bounds, 1);
	metrics_histogram_observe(&h, -INFINITY);
	metrics_histogram_observe(&h, INFINITY);
	metrics_buf_init(&b);
	metrics_histogram_render(&b, "w", NULL, &h);
	/* -Inf + +Inf is NaN, as in the client libraries. */
	cr_assert_str_eq(b.data, "w_bucket{le=\"0\"} 1\nw_bucket{le=\"+Inf\"} 2\nw_sum NaN\nw_count 2\n");
	metrics_histogram_init(&h, bounds, 1);
	metrics_histogram_observe(&h, NAN);
	cr_assert_eq(h.counts[1], 1);
	metrics_buf_done(&b);
}

Test(metrics_histogram, bucket_choice_at_every_boundary)
{
	struct metrics_histogram h;
	double bounds[METRICS_MAX_BOUNDS];

	for (unsigned i = 0; i < METRICS_MAX_BOUNDS; i++)
		bounds[i] = (double)(i + 1);
	metrics_histogram_init(&h, bounds, METRICS_MAX_BOUNDS);
	for (unsigned i = 0; i < METRICS_MAX_BOUNDS; i++) {
		metrics_histogram_observe(&h, bounds[i]);          /* bucket i */
		metrics_histogram_observe(&h, bounds[i] + 0.5);    /* bucket i + 1 */
	}
	cr_assert_eq(h.counts[0], 1);
	for (unsigned i = 1; i < METRICS_MAX_BOUNDS; i++)
		cr_assert_eq(h.counts[i], 2, "slot %u", i);
	cr_assert_eq(h.counts[METRICS_MAX_BOUNDS], 1);
}

#ifndef NDEBUG
Test(metrics_histogram, init_asserts_ascending_bounds, .signal = SIGABRT)
{
	struct metrics_histogram h;
	static const double bounds[] = { 1, 5, 2 };

	metrics_histogram_init(&h, bounds, 3);
}

Test(metrics_histogram, init_asserts_bound_count, .signal = SIGABRT)
{
	struct metrics_histogram h;
	static double bounds[METRICS_MAX_BOUNDS + 1];

	for (unsigned i = 0; i <= METRICS_MAX_BOUNDS; i++)
		bounds[i] = i;
	metrics_histogram_init(&h, bounds, METRICS_MAX_BOUNDS + 1);
}
#endif

#define OBSERVERS 8
#define OBSERVATIONS 200000

static struct metrics_histogram shared;
static const double shared_bounds[] = { 1, 2, 3 };

static void *observer(void *arg)
{
	(void)arg;
	for (int i = 0; i < OBSERVATIONS; i++)
		metrics_histogram_observe(&shared, (double)(i % 5)); /* 0,1,2,3,4 */
	return NULL;
}

Test(metrics_histogram, concurrent_observe_counts_and_sums_exactly)
{
	pthread_t t[OBSERVERS];
	struct metrics_buf b;
	const uint64_t per_value = (uint64_t)OBSERVERS * OBSERVATIONS / 5;
	char want[512];

	metrics_histogram_init(&shared, shared_bounds, 3);
	for (int i = 0; i < OBSERVERS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, observer, NULL), 0);
	for (int i = 0; i < OBSERVERS; i++)
		pthread_join(t[i], NULL);

	/* Integers are exact in a double, so every lost CAS would show. */
	cr_assert_eq(metrics_histogram_count(&shared), (uint64_t)OBSERVERS * OBSERVATIONS);
	cr_assert(metrics_histogram_sum(&shared) == (double)(per_value * 10));
	metrics_buf_init(&b);
	metrics_histogram_render(&b, "c", NULL, &shared);
	snprintf(want, sizeof(want),
		 "c_bucket{le=\"1\"} %llu\nc_bucket{le=\"2\"} %llu\nc_bucket{le=\"3\"} %llu\n"
		 "c_bucket{le=\"+Inf\"} %llu\nc_sum %llu\nc_count %llu\n",
		 (unsigned long long)(2 * per_value), (unsigned long long)(3 * per_value),
		 (unsigned long long)(4 * per_value), (unsigned long long)(5 * per_value),
		 (unsigned long long)(10 * per_value), (unsigned long long)(5 * per_value));
	cr_assert_str_eq(b.data, want);
	metrics_buf_done(&b);
}
