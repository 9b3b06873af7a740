/* fixture.c - proto3 JSON to validated resources for tests and benchmarks. */
#include "fixture.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson.h"
#include "policy_wire.h"
#include "snapshot.h"

__attribute__((format(printf, 3, 0)))
static int res_from_json(struct policy_errs *errs, struct policy_res **ret, const char *fmt,
			 va_list ap)
{
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *msg;
	char *json;
	int r;

	if (vasprintf(&json, fmt, ap) < 0)
		return -ENOMEM;
	r = pbjson_decode(&sluice__v1__resource__descriptor, json, strlen(json), err, &msg);
	free(json);
	if (r < 0) {
		policy_errs_add(errs, "%s", err);
		return r;
	}
	r = policy_res_from_pb((Sluice__V1__Resource *)msg, errs, ret);
	protobuf_c_message_free_unpacked(msg, NULL);
	return r;
}

struct policy_res *fixture_res(const char *fmt, ...)
{
	struct policy_errs errs;
	struct policy_res *r;
	va_list ap;
	int err;

	policy_errs_init(&errs);
	va_start(ap, fmt);
	err = res_from_json(&errs, &r, fmt, ap);
	va_end(ap);
	if (err < 0) {
		fprintf(stderr, "fixture_res: %s: %s\n", strerror(-err),
			errs.n ? errs.msg[0] : "(no detail)");
		abort();
	}
	return r;
}

struct snapshot *fixture_snapshot(const char *ruleset, const char *const *json, size_t n)
{
	struct policy_res **res = calloc(n ? n : 1, sizeof(*res));
	struct policy_errs errs;
	struct snapshot *s;
	int err;

	if (!res)
		abort();
	for (size_t i = 0; i < n; i++)
		res[i] = fixture_res("%s", json[i]);
	policy_errs_init(&errs);
	err = snapshot_build(ruleset, 1, res, n, &errs, &s);
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	free(res);
	if (err < 0) {
		fprintf(stderr, "fixture_snapshot: %s: %s\n", strerror(-err),
			errs.n ? errs.msg[0] : "(no detail)");
		abort();
	}
	return s;
}

int fixture_res_try(struct policy_errs *errs, struct policy_res **ret, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = res_from_json(errs, ret, fmt, ap);
	va_end(ap);
	return err;
}

static uint64_t rand_state = 0x9e3779b97f4a7c15ull;

void fixture_seed(uint64_t seed)
{
	/* xorshift has a fixed point at 0 */
	rand_state = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint64_t fixture_rand(void)
{
	rand_state ^= rand_state >> 12;
	rand_state ^= rand_state << 25;
	rand_state ^= rand_state >> 27;
	return rand_state * 0x2545f4914f6cdd1dull;
}
