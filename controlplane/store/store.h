/* store.h - versioned rulesets in etcd: apply, read at a version, history,
 * diff, rollback. What the admin API handlers call.
 *
 * Invariants: every change to a ruleset is one etcd transaction guarded by a
 * compare on the head key's mod_revision, so concurrent writers (any number
 * of control-plane replicas) never interleave; a ruleset's version is the
 * etcd revision of that transaction (strictly increasing, not consecutive).
 *
 * Key layout under the prefix (default "/sluice/v1/"), rs = ruleset name:
 *   rulesets/<rs>/res/<kind>/<id>  the resource's canonical protobuf bytes
 *                                  (policy_res.canon), kind by
 *                                  policy_kind_name();
 *   rulesets/<rs>/head             packed sluice.v1.VersionInfo of the head
 *                                  (no touched keys);
 *   rulesets/<rs>/log/<seq>        packed VersionInfo with the touched keys,
 *                                  never deleted (audit after compaction).
 * The version is not known until the transaction commits, so it is never
 * stored: head and log are written with version 0 in the same transaction
 * as the resources, and a reader takes the version from the key's
 * mod_revision (head's = log entry's = the transaction's revision). Log
 * keys are named by a per-ruleset sequence number instead: <seq> is the
 * head key's etcd `version` after the change (1 for the change that created
 * the ruleset, +1 per change), zero-padded to 20 digits so keys sort. The
 * transaction also requires the log key to be absent. Sequence numbers are
 * dense, so history pages are found by a binary search over them.
 *
 * Threads: a struct store is immutable after store_new and every call may
 * run on any thread at the same time. Calls block on etcd (up to the etcd
 * client's deadline per request): never call them from gRPC threads.
 */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "snapshot.h"

struct etcd;
struct Sluice__V1__VersionInfo;

#define STORE_DEFAULT_PREFIX "/sluice/v1/"
/* etcd's --max-txn-ops default. A change needs one op per upsert and
 * remove that actually changes something, plus head and log. */
#define STORE_DEFAULT_MAX_TXN_OPS 128
/* Attempts of an apply/rollback with expected_version 0 that keeps losing
 * the race to other writers (the caller said it does not care about the
 * base version, so the store re-reads and re-validates each time). */
#define STORE_APPLY_ATTEMPTS 5
#define STORE_MAX_AUTHOR_LEN 256     /* bytes */
#define STORE_MAX_MESSAGE_LEN 4096   /* bytes */
/* GetHistory's default page. */
#define STORE_DEFAULT_HISTORY_LIMIT 50

/* Borrowed by store_new, which copies the prefix. */
struct store_config {
	struct etcd *etcd;          /* borrowed: must outlive the store */
	const char *prefix;         /* NULL = STORE_DEFAULT_PREFIX */
	size_t max_txn_ops;         /* 0 = STORE_DEFAULT_MAX_TXN_OPS */
	/* Tests only (NULL otherwise): called after an apply/rollback has read
	 * and validated, just before its commit transaction, to let a test
	 * commit a competing change in that window. */
	void (*before_commit)(void *arg);
	void *before_commit_arg;
};

/* Metadata of one version, mirrors sluice.v1.VersionInfo. Owned by whoever
 * received it; release with store_version_done (or store_versions_free for
 * arrays). */
struct store_version {
	char ruleset[POLICY_RULESET_NAME_MAX_LEN + 1];
	uint64_t version;
	char *author;               /* malloc'ed, never NULL once filled */
	char *message;              /* malloc'ed, never NULL once filled */
	int64_t time_unix_ms;       /* wall clock of the control plane that committed */
	uint32_t resources;         /* in the ruleset at this version */
	uint32_t upserts;           /* resources added or changed */
	uint32_t removes;
	uint64_t rollback_of;       /* the version restored; 0 = not a rollback */
	struct policy_key *touched; /* upserted then removed keys; history only */
	size_t n_touched;
};

void store_version_done(struct store_version *v);   /* accepts NULL */
void store_versions_free(struct store_version *v, size_t n); /* accepts NULL */

/* One admin change. Borrowed by store_apply for the duration of the call. */
struct store_change {
	const char *ruleset;
	struct policy_res *const *upserts;  /* validated resources */
	size_t n_upserts;
	const struct policy_key *removes;
	size_t n_removes;
	uint64_t expected_version;  /* 0 = don't care */
	const char *author;         /* NULL = "" */
	const char *message;        /* NULL = "" */
	bool dry_run;               /* validate against the head, write nothing */
};

/* Owned by the creator; lives until store_free. */
struct store;

/* -EINVAL without an etcd client; -ENOMEM. */
int store_new(const struct store_config *cfg, struct store **ret);
void store_free(struct store *s); /* accepts NULL */

/* Errors common to the calls below: any etcd_* error (-ETIMEDOUT,
 * -ECONNREFUSED, -ECONNRESET = outcome of a write unknown, -EIO, ...);
 * -EBADMSG when what etcd holds under the prefix does not decode;
 * -EINVAL for an invalid ruleset name; -ENOMEM. */

/* Applies upserts and removes to the head of the ruleset (created by its
 * first change) as one new version. The change is validated against the
 * whole resulting ruleset (snapshot_apply): -EINVAL with every problem in
 * errs (may be NULL) and nothing written; -E2BIG for a cap, or when the
 * effective change needs more than max_txn_ops etcd operations. Upserts
 * equal to the stored resource are not rewritten (and not counted), but a
 * change that ends up changing nothing still commits a version: the audit
 * record of who tried what.
 * -ESTALE: expected_version != 0 and the head is not at it, or another
 * writer committed between this call's read and its commit (a lost race:
 * FAILED_PRECONDITION). With expected_version 0 a lost race is retried, up
 * to STORE_APPLY_ATTEMPTS reads in all, then -ESTALE.
 * out (may be NULL): the new version, its counts and time; the touched
 * keys too. dry_run: nothing is written and out->version is 0 (the counts
 * are what the change would do). out is written only on success. */
int store_apply(struct store *s, const struct store_change *ch, struct policy_errs *errs,
		struct store_version *out);

/* The ruleset at `version` (0 = head) in *ret (a new reference; its
 * snapshot_version is the version). -ENOENT: unknown ruleset, or `version`
 * is not a version of this ruleset (no change to it committed at that
 * revision); -ESTALE: it was, but etcd has compacted that revision. */
int store_get(struct store *s, const char *ruleset, uint64_t version, struct snapshot **ret);

/* The head of every ruleset, sorted by name, read at one revision.
 * *out (free with store_versions_free) and *n written on success; no
 * ruleset gives *out = NULL, *n = 0. */
int store_list(struct store *s, struct store_version **out, size_t *n);

/* Change records of the ruleset, newest first: at most `limit` (0 =
 * STORE_DEFAULT_HISTORY_LIMIT) versions below `before_version` (0 = from
 * the head), with touched keys. Survives etcd compaction. -ENOENT: unknown
 * ruleset. */
int store_history(struct store *s, const char *ruleset, uint32_t limit,
		  uint64_t before_version, struct store_version **out, size_t *n);

/* snapshot_diff(get(from), get(to)): from 0 = the empty ruleset, to 0 =
 * the head. Returns as store_get. */
int store_diff(struct store *s, const char *ruleset, uint64_t from, uint64_t to,
	       struct policy_delta **ret);

/* Writes the content of `to_version` as a new version (upserts and removes
 * that turn the head into it), recorded with rollback_of = to_version.
 * Returns as store_get for to_version and as store_apply for the write. */
int store_rollback(struct store *s, const char *ruleset, uint64_t to_version,
		   uint64_t expected_version, const char *author, const char *message,
		   struct store_version *out);

/* The wire form for the admin API: a new message (free with
 * sluice__v1__version_info__free_unpacked(m, NULL)); NULL + errno. */
struct Sluice__V1__VersionInfo *store_version_to_pb(const struct store_version *v);

#endif
