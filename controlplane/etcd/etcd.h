/* etcd.h - etcd v3 client over the JSON gateway (libcurl + json-c).
 *
 * Keys and values are binary-safe byte strings (pointer + length). Every
 * call has a deadline (etcd_config.timeout_ms) covering all endpoints it
 * tries. The watch runs its own thread and delivers each revision exactly
 * once, in order, across reconnects.
 */
#ifndef SLUICE_ETCD_H
#define SLUICE_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Borrowed by etcd_new / etcd_watch_start, which copy what they keep. */
struct etcd_config {
	/* "http://host:port" each; tried in order starting at the last one that
	 * answered. */
	const char *const *endpoints;
	size_t n_endpoints;
	/* Deadline of one call, all endpoint attempts included; 0 = 5000. For a
	 * watch: the connect deadline and the time allowed until etcd confirms
	 * the watch, per attempt. */
	uint64_t timeout_ms;
};

#define ETCD_DEFAULT_TIMEOUT_MS 5000

/* One key as stored in etcd. Owned by the result that holds it; key and
 * value are malloc'ed and each has an extra NUL byte after its length (not
 * counted) so that text keys can be used as C strings. */
struct etcd_kv {
	char *key;
	size_t key_len;
	uint8_t *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

/* Filled by etcd_range (and range ops of a txn); owned by the caller,
 * released with etcd_range_result_done. */
struct etcd_range_result {
	struct etcd_kv *kvs;
	size_t n_kvs;
	/* Number of keys in the range (not limited by `limit`). */
	int64_t count;
	/* Store revision the read was served at (header.revision). */
	int64_t revision;
	/* More keys exist in the range than were returned (limit). */
	bool more;
};

/* Opaque client: one keep-alive curl handle. Calls are serialized by an
 * internal mutex, so a struct etcd may be shared between threads, but a
 * call blocks up to timeout_ms: never call it from gRPC threads. */
struct etcd;

/* -EINVAL when there is no endpoint or an endpoint is empty; -ENOMEM. */
int etcd_new(const struct etcd_config *cfg, struct etcd **ret);
void etcd_free(struct etcd *e);

/* Latency of every unary call of this client (range, txn, put, delete,
 * compact, leases), from taking the client to the answer or the error,
 * failovers included; watches are not calls. Lives as long as e; read it
 * from any thread (lib/metrics.h histograms are thread-safe). */
struct metrics_histogram;
const struct metrics_histogram *etcd_latency(const struct etcd *e);

/* Errors common to every call below (besides the ones each lists):
 *   -ETIMEDOUT     the deadline passed before an endpoint answered;
 *   -ECONNREFUSED  every endpoint refused the connection (or last error was
 *                  a refusal), -EHOSTUNREACH when a name did not resolve;
 *   -ECONNRESET    the connection broke after the request was sent: for a
 *                  write (put, delete, txn, lease grant/revoke, compact) the
 *                  outcome is unknown, so it is not retried elsewhere;
 *   -EIO           etcd answered 5xx on every endpoint tried;
 *   -EBADMSG       the answer was not the JSON expected;
 *   -EINVAL        etcd refused the request (INVALID_ARGUMENT);
 *   -ENOMEM.
 * Reads (range, keepalive, timetolive) move on to the next endpoint on any
 * connection failure or 5xx; writes only when the request surely was not
 * sent (connect failed or timed out). After a 5xx on a write the call
 * fails (-EIO, outcome unknown) and the next call starts at the next
 * endpoint. */

/* Exclusive end of the range of every key starting with `prefix`: the
 * prefix with its last byte below 0xff incremented and the 0xff bytes after
 * it dropped; "\0" (length 1) for an empty or all-0xff prefix, which etcd
 * reads as "to the end of the key space". `out` must hold max(len, 1)
 * bytes. Returns the length written. */
size_t etcd_prefix_end(const char *prefix, size_t len, char *out);

/* Keys in [key, range_end), or just `key` when range_end is NULL.
 * `revision` 0 = latest, else the store as it was at that revision.
 * `limit` 0 = no limit. No key is not an error: n_kvs = 0.
 * -ESTALE: `revision` has been compacted (the gateway does not say to
 * which revision); -ERANGE: `revision` is in the future.
 * *out is zeroed first, and filled only on success. */
int etcd_range(struct etcd *e, const char *key, size_t key_len,
	       const char *range_end, size_t range_end_len, int64_t revision,
	       size_t limit, struct etcd_range_result *out);
void etcd_range_result_done(struct etcd_range_result *r);

/* Single put; `lease` 0 = none. *revision (may be NULL) = the revision of
 * the change. -ENOENT: the lease does not exist. */
int etcd_put(struct etcd *e, const char *key, size_t key_len,
	     const void *value, size_t value_len, int64_t lease, int64_t *revision);

/* Deletes `key` or [key, range_end). *deleted and *revision may be NULL. */
int etcd_delete(struct etcd *e, const char *key, size_t key_len,
		const char *range_end, size_t range_end_len,
		int64_t *deleted, int64_t *revision);

/* Compacts history before `revision` (kept: revision itself). `physical`
 * waits until the compaction is applied. -ESTALE: already compacted there;
 * -ERANGE: future revision. */
int etcd_compact(struct etcd *e, int64_t revision, bool physical);

/* ---- transactions ------------------------------------------------------- */

enum etcd_compare_target {
	ETCD_CMP_VERSION,	/* number: the key's version, 0 = absent */
	ETCD_CMP_CREATE,	/* number: create_revision, 0 = absent */
	ETCD_CMP_MOD,		/* number: mod_revision, 0 = absent */
	ETCD_CMP_VALUE,		/* value/value_len */
};

enum etcd_compare_result {
	ETCD_CMP_EQUAL,
	ETCD_CMP_GREATER,
	ETCD_CMP_LESS,
	ETCD_CMP_NOT_EQUAL,
};

/* Borrowed by etcd_txn for the duration of the call. */
struct etcd_compare {
	const char *key;
	size_t key_len;
	enum etcd_compare_target target;
	enum etcd_compare_result result;
	int64_t number;
	const void *value;
	size_t value_len;
};

enum etcd_op_type {
	ETCD_OP_PUT,
	ETCD_OP_DELETE,
	ETCD_OP_RANGE,
};

/* Borrowed by etcd_txn for the duration of the call. range_end NULL = the
 * single key. value/lease: PUT only; limit: RANGE only (0 = none). */
struct etcd_op {
	enum etcd_op_type type;
	const char *key;
	size_t key_len;
	const char *range_end;
	size_t range_end_len;
	const void *value;
	size_t value_len;
	int64_t lease;
	size_t limit;
};

/* Borrowed by etcd_txn for the duration of the call. */
struct etcd_txn {
	const struct etcd_compare *compares;
	size_t n_compares;
	const struct etcd_op *success;
	size_t n_success;
	const struct etcd_op *failure;
	size_t n_failure;
};

/* One per op of the branch that ran, in order. Owned by etcd_txn_result. */
struct etcd_op_result {
	enum etcd_op_type type;
	struct etcd_range_result range;	/* RANGE */
	int64_t deleted;		/* DELETE */
};

/* Filled by etcd_txn; owned by the caller, released with
 * etcd_txn_result_done. */
struct etcd_txn_result {
	bool succeeded;
	/* Header revision: when the success branch wrote something, the
	 * revision of that change (the new version); else the store revision. */
	int64_t revision;
	struct etcd_op_result *responses;
	size_t n_responses;
};

/* All compares true -> success ops, else failure ops, atomically. A false
 * compare is not an error: out->succeeded = false. *out is zeroed first and
 * filled only on success. -ENOENT: a put names a lease that does not
 * exist. Never retried on another endpoint once sent (see above). */
int etcd_txn(struct etcd *e, const struct etcd_txn *t, struct etcd_txn_result *out);
void etcd_txn_result_done(struct etcd_txn_result *r);

/* ---- leases --------------------------------------------------------------- */

/* Grants a lease of ttl_s seconds (etcd may raise a tiny TTL to its
 * minimum); *id = the lease id. */
int etcd_lease_grant(struct etcd *e, int64_t ttl_s, int64_t *id);
/* One keep-alive; *ttl_s (may be NULL) = the TTL the lease now has.
 * -ENOENT: the lease expired or was revoked. */
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_s);
/* Remaining seconds (*ttl_s) and granted TTL (*granted_ttl_s), either may
 * be NULL. -ENOENT: the lease expired or was revoked. */
int etcd_lease_timetolive(struct etcd *e, int64_t id, int64_t *ttl_s,
			  int64_t *granted_ttl_s);
/* Revokes the lease and deletes its keys. -ENOENT: no such lease. */
int etcd_lease_revoke(struct etcd *e, int64_t id);

/* ---- watch ---------------------------------------------------------------- */

enum etcd_watch_event_type {
	ETCD_WATCH_PUT,
	ETCD_WATCH_DELETE,
	/* The revision to resume from has been compacted: events were lost.
	 * See etcd_watch_cb for what the owner does. */
	ETCD_WATCH_COMPACTED,
};

/* Lives only during the callback; everything it points to is freed after.
 * kv: PUT: the new kv; DELETE: key and mod_revision only. prev_kv: the kv
 * before the change, when asked for and the key existed (else NULL).
 * COMPACTED: kv = prev_kv = NULL, compact_revision = revision = the oldest
 * revision etcd still has. */
struct etcd_watch_event {
	enum etcd_watch_event_type type;
	int64_t revision;
	const struct etcd_kv *kv;
	const struct etcd_kv *prev_kv;
	int64_t compact_revision;
	/* Last event of its revision: one transaction's events arrive together
	 * and this marks the end, so the owner can apply a revision whole. */
	bool last_in_revision;
};

/* Called on the watch thread, one event at a time, revisions strictly
 * increasing across calls (never a revision twice, none skipped, even
 * across reconnects). Must not call etcd_watch_stop on its own watch.
 * The return value matters only for ETCD_WATCH_COMPACTED: the owner
 * re-reads its keys (etcd_range at a revision >= compact_revision, e.g.
 * latest) before returning, and returns the revision it read at; watching
 * resumes just after it. A return below compact_revision means "I read at
 * compact_revision". Other events: return 0. */
typedef int64_t (*etcd_watch_cb)(void *arg, const struct etcd_watch_event *ev);

/* Owned by whoever started it; lives until etcd_watch_stop. */
struct etcd_watch;

/* Watches `key` or [key, range_end) from start_revision (0 = from the
 * next change). Starts a thread with its own curl handle. On stream loss
 * it reconnects (next endpoint, jittered backoff from 50 ms up to 1 s)
 * from the revision after the last one delivered. Connection failures are
 * never reported: the watch keeps trying until stopped.
 * -EINVAL (bad config), -ENOMEM, or a pthread_create error. */
int etcd_watch_start(const struct etcd_config *cfg, const char *key, size_t key_len,
		     const char *range_end, size_t range_end_len,
		     int64_t start_revision, bool prev_kv, etcd_watch_cb cb,
		     void *arg, struct etcd_watch **ret);
/* Aborts the stream, joins the thread (promptly: the poll is woken up) and
 * frees the watch. NULL is fine. */
void etcd_watch_stop(struct etcd_watch *w);

#endif
