/* fleet_internal.h - what the files of controlplane/fleet share: the state
 * behind struct fleet and the functions one file calls in another. Not for
 * use outside the module (fleet.h is the contract).
 *
 * Files: fleet.c (rulesets, window, encoded bodies, pushing, the Sync
 * stream, life cycle), fleet_etcd.c (loading, the watch, the registry
 * thread), fleet_api.c (Fleet service, watchers, metrics, HTTP).
 * Locking: f->mu guards everything below unless a comment says otherwise;
 * the shared functions expect it held, except the thread entry points.
 */
#ifndef SLUICE_FLEET_INTERNAL_H
#define SLUICE_FLEET_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "sluice/v1/fleet.pb-c.h"

#include "fleet.h"
#include "metrics.h"
#include "policy.h"
#include "rpc.h"
#include "snapshot.h"

struct etcd_watch;

#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000
#define TICK_MS 200                  /* registry thread: retries, keep-alive checks */
#define VLOG_LEN 4096                /* (version, seq, time) kept for lag and convergence */
#define NONCE_LEN 24

/* ---- small helpers ---------------------------------------------------------- */

static inline int64_t now_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(c, m, &ts);
}

static inline void count(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline uint64_t load(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* ---- state ------------------------------------------------------------------- */

/* One version in a ruleset's window. Owned by the ruleset. */
struct version_rec {
	uint64_t version;
	struct snapshot *snap;       /* one reference */
};

/* Version -> change counter and commit time, kept longer than snapshots:
 * lag in versions and the commit->ack histogram need only these. */
struct vlog_rec {
	uint64_t version;
	int64_t seq;
	int64_t commit_unix_ms;
};

/* One encoded ControlMessage body (Delta or Snapshot, without nonce),
 * shared by every stream it is sent to. Owned by the ruleset's cache. */
struct body_ent {
	uint64_t from, to;           /* snapshot: from = UINT64_MAX */
	struct rpc_buf *buf;
	uint64_t used;               /* LRU clock */
};

struct conn;

/* One ruleset as this replica knows it. Owned by the fleet; lives until
 * fleet_free (rulesets are never deleted by the store). */
struct ruleset {
	char name[POLICY_RULESET_NAME_MAX_LEN + 1];
	struct snapshot *head;       /* NULL until the ruleset exists */
	struct version_rec *win;     /* ring, win_len used, newest at win_pos-1 */
	unsigned win_len, win_pos;
	struct vlog_rec vlog[VLOG_LEN];
	unsigned vlog_len, vlog_pos;
	struct body_ent cache[FLEET_DELTA_CACHE];
	uint64_t cache_clock;
	struct conn *conns;          /* nodes enforcing it, linked by rs_next */
	struct ruleset *next;
};

/* What this replica owes etcd for one node id. Owned by the fleet (tree
 * f->regs); lives until its last write is done and no connection uses it. */
struct reg {
	char *node_id;
	struct conn *conn;           /* NULL once disconnected */
	uint8_t *val;                /* latest packed NodeStatus */
	size_t len;
	bool dirty;
	bool writing;
	bool gone;                   /* disconnected: write connected=false, then drop */
	bool superseded;             /* the key now belongs to another replica */
	int64_t mod_rev;             /* of our last write, 0 = none */
	/* With mod_rev 0: the node just connected here and takes its key
	 * over whoever had it; else (our lease was lost) the key is written
	 * only if absent, never over another replica's. */
	bool takeover;
	uint64_t written_ms;         /* monotonic, of the last successful write */
	struct reg *dirty_next;
	bool on_dirty;
};

/* One Sync stream. Owned by the stream (rpc_stream_data); freed in close. */
struct conn {
	struct fleet *f;
	struct rpc_stream *st;
	bool hello;
	bool closed;
	char node_id[FLEET_MAX_NODE_ID_LEN + 1];
	char *software_version;
	char **label_keys, **label_vals;
	size_t n_labels;
	struct ruleset *rs;
	struct conn *rs_next;
	struct reg *reg;
	uint64_t connected_ms;       /* monotonic */
	int64_t connected_unix_ms;
	uint64_t acked;
	bool pending;
	char nonce[NONCE_LEN];
	uint64_t pending_to;
	bool want_push;              /* a push found the stream's queue full */
	uint64_t nack_version;       /* the version refused, 0 = none */
	char *nack_error;
	int64_t nack_unix_ms;
	int health;
	char *health_detail;
	int64_t last_seen_unix_ms;
};

/* A node key of etcd (any replica's), mirrored by the watch. Owned by the
 * tree f->view. */
struct view_ent {
	char *node_id;
	uint8_t *val;
	size_t len;
	int64_t mod_rev;
};

/* A WatchNodes or WatchStats subscriber. Owned by the fleet's list; holds a
 * stream reference. */
struct watcher {
	struct rpc_stream *st;
	char *filter;                /* ruleset (nodes) or node id (stats); "" = all */
	/* WatchNodes only: statuses the stream's queue had no room for, the
	 * latest per node (tsearch tree of struct pend), flushed by the
	 * registry thread's tick; at most FLEET_WATCH_PENDING entries */
	void *pend;
	size_t n_pend;
	struct watcher *next;
};

/* A status waiting for room in a watcher's stream. Owned by the tree. */
struct pend {
	char *node_id;
	struct rpc_buf *b;
	uint64_t seq;                /* order of arrival, kept on flush */
};

/* Per revision of the watch: what one transaction did to one ruleset. */
struct pending_rs {
	char name[POLICY_RULESET_NAME_MAX_LEN + 1];
	struct policy_delta *delta;  /* from/to filled when applied */
	bool head;
	int64_t seq;
	int64_t commit_unix_ms;
	struct pending_rs *next;
};

struct counters {
	uint64_t pushes_delta, pushes_snapshot, pushes_deferred;
	uint64_t acks, acks_ignored, nacks, reports;
	uint64_t hello_refused;
	uint64_t versions_applied, reloads;
	uint64_t reg_writes, reg_write_errors, reg_superseded;
	uint64_t watch_nodes_dropped, watch_stats_dropped;
	uint64_t bodies_built;
};

struct fleet {
	struct etcd *etcd;
	struct etcd *store_etcd;        /* /metrics only; may be NULL */
	char **endpoints;
	size_t n_endpoints;
	uint64_t etcd_timeout_ms;
	char *prefix;
	char *replica_id;
	unsigned window, lease_ttl_s, gone_ttl_s;
	bool any_node;

	pthread_mutex_t mu;
	pthread_cond_t cond;         /* registry thread wake-up */
	bool started, stopping;
	bool loaded;                 /* first load done: heads are known */
	struct ruleset *rulesets;
	void *regs;                  /* tsearch tree of struct reg by node id */
	struct reg *dirty;           /* registry write queue */
	void *view;                  /* tsearch tree of struct view_ent */
	struct watcher *node_watchers, *stat_watchers;
	uint64_t connected;
	uint64_t nonce_seq;
	int64_t lease;
	uint64_t lease_renewed_ms;
	int64_t gone_lease;
	uint64_t gone_lease_ms;

	pthread_t loader_thr, reg_thr;
	struct etcd_watch *watch;
	struct pending_rs *rev_pending;   /* watch thread only */

	int http_fd;
	pthread_t http_thr;
	bool http_running;

	struct counters c;
	struct metrics_histogram convergence;   /* seconds */
	struct metrics_histogram etcd_latency;  /* seconds, registry calls */
};

/* ---- shared functions (f->mu held unless said otherwise) -------------------- */

/* fleet.c */
int fleet_reg_cmp(const void *a, const void *b);
int fleet_view_cmp(const void *a, const void *b);
struct reg *fleet_reg_find(struct fleet *f, const char *id);
struct view_ent *fleet_view_find(struct fleet *f, const char *id);
void fleet_view_ent_free(void *p);
struct ruleset *fleet_ruleset_find(struct fleet *f, const char *name);
/* Finds or creates (empty, no head) the ruleset; NULL on ENOMEM. */
struct ruleset *fleet_ruleset_get(struct fleet *f, const char *name);
uint64_t fleet_head_version(const struct ruleset *r);
const struct vlog_rec *fleet_vlog_find(const struct ruleset *r, uint64_t version);
const struct version_rec *fleet_window_find(const struct fleet *f, const struct ruleset *r,
					    uint64_t version);
uint64_t fleet_lag_versions(const struct ruleset *r, uint64_t acked);
void fleet_ruleset_set_head(struct fleet *f, struct ruleset *r, struct snapshot *snap,
			    int64_t seq, int64_t commit_unix_ms);
void fleet_ruleset_push_all(struct fleet *f, struct ruleset *r);
struct rpc_buf *fleet_pack_buf(const ProtobufCMessage *m);
struct rpc_buf *fleet_conn_status_buf(const struct conn *c, bool connected);
void fleet_conn_push(struct conn *c);
void fleet_conn_changed(struct conn *c, bool connected, bool persist);
void fleet_reg_queue(struct fleet *f, struct reg *g);
void fleet_sync_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
		     const uint8_t *req, size_t len);
void fleet_sync_recv(void *ctx, struct rpc_stream *st, const uint8_t *msg, size_t len);
void fleet_sync_close(void *ctx, struct rpc_stream *st, enum rpc_status status);

/* fleet_etcd.c (thread entry points run without f->mu) */
void *fleet_loader_main(void *arg);
void *fleet_reg_main(void *arg);
void fleet_reg_drop(struct fleet *f, struct reg *g);

/* fleet_api.c */
void fleet_nodes_send(struct fleet *f, struct rpc_buf *b, const char *node_id,
		      const char *ruleset);
void fleet_stats_send(struct fleet *f, struct rpc_buf *b, const char *node_id);
void fleet_watcher_flush(struct watcher *w);
void fleet_watcher_remove(struct watcher **list, struct rpc_stream *st);

#endif
