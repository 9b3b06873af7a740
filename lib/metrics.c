/* metrics.c - Prometheus text format 0.0.4: family headers, samples and
 * histograms appended to a growable buffer.
 *
 * Invariants: the buffer's data is NUL-terminated whenever it is non-NULL;
 * after one failed growth err stays -ENOMEM and every later append is a
 * no-op, so callers check once at the end. Histogram slots are updated with
 * relaxed atomics only; render derives _count from the same slot reads as
 * the buckets, so le="+Inf" always equals _count in one rendering.
 */
#include "metrics.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shortest text that round-trips a double, plus sign and exponent. */
#define VALUE_TEXT_MAX 32

void metrics_buf_init(struct metrics_buf *b)
{
	*b = (struct metrics_buf){ 0 };
}

void metrics_buf_done(struct metrics_buf *b)
{
	free(b->data);
	*b = (struct metrics_buf){ 0 };
}

/* Makes room for n more bytes plus the NUL; false (and err set) when the
 * buffer cannot grow. */
static bool reserve(struct metrics_buf *b, size_t n)
{
	size_t want, cap;
	char *p;

	if (b->err)
		return false;
	if (n > SIZE_MAX - b->len - 1) {
		b->err = -ENOMEM;
		return false;
	}
	want = b->len + n + 1;
	if (want <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	p = realloc(b->data, cap);
	if (!p) {
		b->err = -ENOMEM;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

static void put(struct metrics_buf *b, const char *s, size_t n)
{
	if (!reserve(b, n))
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void puts_(struct metrics_buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Appends s with '\\' and '\n' escaped, plus '"' when quote_too (label
 * values; HELP text leaves quotes alone). */
static void put_escaped(struct metrics_buf *b, const char *s, bool quote_too)
{
	const char *run = s;

	for (; *s; s++) {
		const char *esc = NULL;

		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (*s == '"' && quote_too)
			esc = "\\\"";
		if (!esc)
			continue;
		put(b, run, (size_t)(s - run));
		put(b, esc, 2);
		run = s + 1;
	}
	put(b, run, (size_t)(s - run));
}

/* Writes v as Prometheus expects: NaN, +Inf, -Inf; integral values without
 * exponent or fraction; anything else in the fewest digits that parse back
 * to the same double. */
static void format_value(double v, char out[VALUE_TEXT_MAX])
{
	if (isnan(v)) {
		strcpy(out, "NaN");
		return;
	}
	if (isinf(v)) {
		strcpy(out, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* Below 1e15 every integral double prints exactly with %.0f in at
	 * most 16 digits; larger ones read better with an exponent. */
	if (v == trunc(v) && fabs(v) < 1e15) {
		snprintf(out, VALUE_TEXT_MAX, "%.0f", v);
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, VALUE_TEXT_MAX, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

/* {n1="v1",n2="v2",extra="value"}; nothing when there are no labels. */
static void put_labels(struct metrics_buf *b, const char *const *labels, const char *extra_name,
		       const char *extra_value)
{
	bool any = false;

	if (labels) {
		for (size_t i = 0; labels[i]; i += 2) {
			assert(labels[i + 1] && "labels must come in name/value pairs");
			puts_(b, any ? "," : "{");
			puts_(b, labels[i]);
			puts_(b, "=\"");
			put_escaped(b, labels[i + 1], true);
			puts_(b, "\"");
			any = true;
		}
	}
	if (extra_name) {
		puts_(b, any ? "," : "{");
		puts_(b, extra_name);
		puts_(b, "=\"");
		put_escaped(b, extra_value, true);
		puts_(b, "\"");
		any = true;
	}
	if (any)
		puts_(b, "}");
}

/* name+suffix{labels,extra} value\n */
static void put_line(struct metrics_buf *b, const char *name, const char *suffix,
		     const char *const *labels, const char *extra_name, const char *extra_value,
		     const char *value)
{
	puts_(b, name);
	puts_(b, suffix);
	put_labels(b, labels, extra_name, extra_value);
	puts_(b, " ");
	puts_(b, value);
	puts_(b, "\n");
}

void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help)
{
	assert(name && type);
	if (help) {
		puts_(b, "# HELP ");
		puts_(b, name);
		puts_(b, " ");
		put_escaped(b, help, false);
		puts_(b, "\n");
	}
	puts_(b, "# TYPE ");
	puts_(b, name);
	puts_(b, " ");
	puts_(b, type);
	puts_(b, "\n");
}

void metrics_sample(struct metrics_buf *b, const char *name, const char *const *labels, double value)
{
	char text[VALUE_TEXT_MAX];

	format_value(value, text);
	put_line(b, name, "", labels, NULL, NULL, text);
}

void metrics_sample_u64(struct metrics_buf *b, const char *name, const char *const *labels,
			uint64_t value)
{
	char text[VALUE_TEXT_MAX];

	snprintf(text, sizeof(text), "%" PRIu64, value);
	put_line(b, name, "", labels, NULL, NULL, text);
}

void metrics_scalar(struct metrics_buf *b, const char *name, const char *type, const char *help,
		    double value)
{
	metrics_family(b, name, type, help);
	metrics_sample(b, name, NULL, value);
}

void metrics_scalar_u64(struct metrics_buf *b, const char *name, const char *type,
			const char *help, uint64_t value)
{
	metrics_family(b, name, type, help);
	metrics_sample_u64(b, name, NULL, value);
}

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, unsigned n)
{
	/* An explicit +Inf bound would duplicate the implicit last bucket. */
	if (n && isinf(bounds[n - 1]) && bounds[n - 1] > 0)
		n--;
	assert(n <= METRICS_MAX_BOUNDS);
	assert(n == 0 || bounds);
	for (unsigned i = 0; i < n; i++) {
		assert(!isnan(bounds[i]));
		assert(i == 0 || bounds[i - 1] < bounds[i]);
	}
	memset(h, 0, sizeof(*h));
	h->bounds = bounds;
	h->n_bounds = n;
	h->sum_bits = 0; /* the bits of +0.0 */
}

void metrics_histogram_observe(struct metrics_histogram *h, double v)
{
	unsigned lo = 0, hi = h->n_bounds;
	uint64_t old_bits, new_bits;

	/* First bound >= v; NaN compares false everywhere and lands in +Inf,
	 * as in the Prometheus client libraries. */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (v <= h->bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	__atomic_fetch_add(&h->counts[lo], 1, __ATOMIC_RELAXED);

	/* No atomic add for doubles: retry a CAS on the bit pattern. */
	old_bits = __atomic_load_n(&h->sum_bits, __ATOMIC_RELAXED);
	do {
		double sum;

		memcpy(&sum, &old_bits, sizeof(sum));
		sum += v;
		memcpy(&new_bits, &sum, sizeof(new_bits));
	} while (!__atomic_compare_exchange_n(&h->sum_bits, &old_bits, new_bits, true,
					      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

double metrics_histogram_sum(const struct metrics_histogram *h)
{
	uint64_t bits = __atomic_load_n(&h->sum_bits, __ATOMIC_RELAXED);
	double sum;

	memcpy(&sum, &bits, sizeof(sum));
	return sum;
}

uint64_t metrics_histogram_count(const struct metrics_histogram *h)
{
	uint64_t total = 0;

	for (unsigned i = 0; i <= h->n_bounds; i++)
		total += __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
	return total;
}

void metrics_histogram_render(struct metrics_buf *b, const char *name, const char *const *labels,
			      const struct metrics_histogram *h)
{
	char le[VALUE_TEXT_MAX], text[VALUE_TEXT_MAX];
	uint64_t cumulative = 0;

	for (unsigned i = 0; i <= h->n_bounds; i++) {
		cumulative += __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
		if (i < h->n_bounds)
			format_value(h->bounds[i], le);
		else
			strcpy(le, "+Inf");
		snprintf(text, sizeof(text), "%" PRIu64, cumulative);
		put_line(b, name, "_bucket", labels, "le", le, text);
	}
	format_value(metrics_histogram_sum(h), text);
	put_line(b, name, "_sum", labels, NULL, NULL, text);
	snprintf(text, sizeof(text), "%" PRIu64, cumulative);
	put_line(b, name, "_count", labels, NULL, NULL, text);
}
