/* bench_record.h - how a C benchmark records its figures: one dated row in
 * its suite's table of bench/RESULTS.md, through bench/record.py (the one
 * implementation the Python benchmarks use too).
 *
 * Only when SLUICE_BENCH_RECORD is set; the file is SLUICE_BENCH_RESULTS
 * (meson sets it), else bench/RESULTS.md, and record.py is taken from the
 * same folder. Failures are printed and never fail the benchmark.
 */
#ifndef SLUICE_BENCH_RECORD_H
#define SLUICE_BENCH_RECORD_H

/* cols: "suite | v1 | v2 ..." (the date column is added). */
void bench_record(const char *prog, const char *section, const char *cols);

#endif
