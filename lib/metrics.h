/* metrics.h - Prometheus text exposition (format 0.0.4) helpers.
 *
 * Counters and histograms are plain structs updated with relaxed atomic
 * adds from any thread; rendering appends to a growable buffer. Label
 * values are escaped as the format requires (\\, \", \n).
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* A growable output buffer. Owned by the caller; metrics_buf_done frees.
 * data is NUL-terminated once anything was appended (len excludes the NUL);
 * after a failed growth err is -ENOMEM and later appends do nothing. */
struct metrics_buf {
	char *data;
	size_t len;
	size_t cap;
	int err; /* sticky: -ENOMEM after a failed growth */
};

void metrics_buf_init(struct metrics_buf *b);
void metrics_buf_done(struct metrics_buf *b);

/* "# HELP name help\n# TYPE name type\n"; type is "counter", "gauge",
 * "histogram". help may be NULL (no HELP line); \\ and newlines in it are
 * escaped. */
void metrics_family(struct metrics_buf *b, const char *name, const char *type,
		    const char *help);
/* One sample line: name{l1="v1",l2="v2"} value. `labels` is a NULL-terminated
 * list of alternating names and values (may be NULL). Values print as NaN,
 * +Inf, -Inf, integers without exponent, else the shortest round-trip. */
void metrics_sample(struct metrics_buf *b, const char *name, const char *const *labels,
		    double value);
void metrics_sample_u64(struct metrics_buf *b, const char *name, const char *const *labels,
			uint64_t value);
/* A family with one unlabelled sample: metrics_family, then the sample. */
void metrics_scalar(struct metrics_buf *b, const char *name, const char *type, const char *help,
		    double value);
void metrics_scalar_u64(struct metrics_buf *b, const char *name, const char *type,
			const char *help, uint64_t value);

/* A histogram with fixed upper bounds (ascending, in the unit of the
 * observations); counts has n_bounds + 1 slots (the last is +Inf), not
 * cumulative. Owned by its embedder; `bounds` must outlive it. */
#define METRICS_MAX_BOUNDS 32
struct metrics_histogram {
	const double *bounds;
	unsigned n_bounds;
	uint64_t counts[METRICS_MAX_BOUNDS + 1];
	uint64_t sum_bits; /* private: the sum's double bits, updated by CAS */
};

/* Asserts n <= METRICS_MAX_BOUNDS and strictly ascending bounds; a last
 * bound of +Inf is dropped (the +Inf bucket is always there). */
void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, unsigned n);
/* Thread-safe. v <= bound counts in that bucket; NaN goes to +Inf. */
void metrics_histogram_observe(struct metrics_histogram *h, double v);
/* Thread-safe reads (relaxed: a concurrent observe may or may not show). */
double metrics_histogram_sum(const struct metrics_histogram *h);
uint64_t metrics_histogram_count(const struct metrics_histogram *h);
/* name_bucket{...,le="b"} cumulative, name_sum, name_count. */
void metrics_histogram_render(struct metrics_buf *b, const char *name,
			      const char *const *labels, const struct metrics_histogram *h);

#endif
