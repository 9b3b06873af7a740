/* policy_wire.h - conversion between protobuf-c wire structs and the
 * project's own policy structs. This is where protobuf-c types stop: only
 * conversion code (sync agent, admin API, tools) includes this header.
 */
#ifndef SLUICE_POLICY_WIRE_H
#define SLUICE_POLICY_WIRE_H

#include "sluice/v1/policy.pb-c.h"

#include "policy.h"
#include "snapshot.h"

/* Validates one wire resource. Same returns as policy_res_decode(). */
int policy_res_from_pb(const Sluice__V1__Resource *msg, struct policy_errs *errs,
		       struct policy_res **ret);

/* A freshly allocated wire message equal to the resource's canonical form;
 * free it with sluice__v1__resource__free_unpacked(m, NULL). NULL + errno
 * on failure. */
Sluice__V1__Resource *policy_res_to_pb(const struct policy_res *r);

/* Validates every upsert and remove key of a wire delta; errors name the
 * element ("delta.removes[3].id: ..."). Returns 0, -EINVAL, -ENOMEM. */
int policy_delta_from_pb(const Sluice__V1__Delta *msg, struct policy_errs *errs,
			 struct policy_delta **ret);

/* A wire delta; free with policy_delta_pb_free(). NULL + errno on failure. */
Sluice__V1__Delta *policy_delta_to_pb(const struct policy_delta *d);
void policy_delta_pb_free(Sluice__V1__Delta *m);

/* Builds a snapshot of a whole wire Ruleset (name, version, resources),
 * validating everything. Returns as snapshot_build(). */
int policy_ruleset_from_pb(const Sluice__V1__Ruleset *m, struct policy_errs *errs,
			   struct snapshot **ret);
/* The wire Ruleset of a snapshot, resources sorted by (kind, id); free with
 * policy_ruleset_pb_free(). NULL + errno on failure. */
Sluice__V1__Ruleset *policy_ruleset_to_pb(const struct snapshot *s);
void policy_ruleset_pb_free(Sluice__V1__Ruleset *m);

#endif
