/* policy_load.h - a whole ruleset from a proto3 JSON file (the
 * sluice.v1.Ruleset grpcurl sends), decoded and validated by the shared
 * code: the one loader of sluice-node's standalone mode and sluice-policy.
 *
 * Nothing is published: the caller decides what to do with the snapshot,
 * so a bad file can never replace a good policy.
 */
#ifndef SLUICE_POLICY_LOAD_H
#define SLUICE_POLICY_LOAD_H

#include "policy.h"
#include "snapshot.h"

#define POLICY_LOAD_ERR_LEN 1024

/* Reads, decodes and validates `path`. When want_ruleset is not NULL the
 * file's name must equal it. Returns 0 and a new snapshot (one reference)
 * in *ret. On failure returns -errno, `err` holds one line naming the file
 * ("'p.json': route/api.path_prefix: must start with '/'; ..."), and
 * `errs` (may be NULL) holds the validation messages one by one, without
 * the file name (empty for I/O and JSON errors, which only `err` has).
 * Thread-safe. */
int policy_load_file(const char *path, const char *want_ruleset, char err[POLICY_LOAD_ERR_LEN],
		     struct policy_errs *errs, struct snapshot **ret);

#endif
