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

/* A growable output buffer. Owned by the caller; metrics_buf_done frees. */
struct metrics_buf {
	char *data;
	size_t len;
	size_t cap;
	int err; /* sticky: -ENOMEM after a failed growth */
};

void metrics_buf_init(struct metrics_buf *b);
void metrics_buf_done(struct metrics_buf *b);

/* "# HELP name help\n# TYPE name type\n"; type is "counter", "gauge",
 * "histogram". */
void metrics_family(struct metrics_buf *b, const char *name, const char *type,
		    const char *help);
/* One sample line: name{l1="v1",l2="v2"} value. `labels` is a NULL-terminated
 * list of alternating names and values (may be NULL). */
void metrics_sample(struct metrics_buf *b, const char *name, const char *const *labels,
		    double value);
void metrics_sample_u64(struct metrics_buf *b, const char *name, const char *const *labels,
			uint64_t value);

/* A histogram with fixed upper bounds (ascending, in the unit of the
 * observations); counts has n_bounds + 1 slots (the last is +Inf). */
#define METRICS_MAX_BOUNDS 32
struct metrics_histogram {
	const double *bounds;
	unsigned n_bounds;
	uint64_t counts[METRICS_MAX_BOUNDS + 1];
	double sum;
	uint64_t sum_bits; /* private: atomic accumulator of sum */
};

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, unsigned n);
/* Thread-safe. */
void metrics_histogram_observe(struct metrics_histogram *h, double v);
/* name_bucket{...,le="b"} cumulative, name_sum, name_count. */
void metrics_histogram_render(struct metrics_buf *b, const char *name,
			      const char *const *labels, const struct metrics_histogram *h);

#endif
