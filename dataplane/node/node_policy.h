/* node_policy.h - standalone mode: a whole ruleset from a proto3 JSON file
 * (the sluice.v1.Ruleset grpcurl sends), decoded and validated by lib/.
 *
 * The same steps as sluice-policy's loader (controlplane/policytool.c); kept
 * here because lib/ has no file loader yet and the node needs its errors in
 * a buffer for the log, not on stderr.
 */
#ifndef SLUICE_NODE_POLICY_H
#define SLUICE_NODE_POLICY_H

#include <stddef.h>

#include "snapshot.h"

#define NODE_POLICY_ERR_LEN 1024

/* Reads, decodes and validates `path`. When want_ruleset is not NULL the
 * file's name must equal it. Returns 0 and a new snapshot (one reference) in
 * *ret; -errno with err = "'PATH': why", every validation error naming its
 * field ("'p.json': route/api.path_prefix: must start with '/'"), joined
 * with "; ". */
int node_policy_load(const char *path, const char *want_ruleset,
		     char err[NODE_POLICY_ERR_LEN], struct snapshot **ret);

#endif
