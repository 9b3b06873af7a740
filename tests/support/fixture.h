/* fixture.h - resources for tests and benchmarks, written as proto3 JSON
 * (the same JSON grpcurl and policy files use), so a case reads like the
 * policy it describes:
 *     fixture_res("{\"client\": {\"id\": \"c%d\", \"rateLimit\": \"gold\"}}", i)
 * Any decode or validation failure aborts with the reason: fixtures are
 * meant to be valid. Use fixture_res_try() to test refusals.
 */
#ifndef SLUICE_FIXTURE_H
#define SLUICE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* A new reference to a validated resource from printf-formatted JSON. */
struct policy_res *fixture_res(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Same, but returns the error: 0 and *ret, or -EBADMSG (JSON; errs gets the
 * pbjson message) / -EINVAL (validation; errs filled). */
int fixture_res_try(struct policy_errs *errs, struct policy_res **ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A validated snapshot (version 1 of `ruleset`) of the n resources given as
 * JSON strings (see fixture_res); aborts with the first error otherwise.
 * The caller owns the reference. */
struct snapshot;
struct snapshot *fixture_snapshot(const char *ruleset, const char *const *json, size_t n);

/* The tests' one pseudo-random generator (xorshift64*): a fixed seed gives
 * the same cases on every run and machine. Not for anything but tests. */
void fixture_seed(uint64_t seed);
uint64_t fixture_rand(void);

#endif
