/* fleet.h - the control plane's side of the fleet: sluice.v1.PolicySync/Sync
 * (pushes versions to nodes), the node registry in etcd, sluice.v1.Fleet
 * (ListNodes, GetNode, WatchNodes, WatchStats) and the Prometheus counters.
 *
 * Invariants:
 *  - one etcd watch on the whole key prefix feeds an in-memory head snapshot
 *    per ruleset plus a window of recent versions (path-copied snapshots
 *    sharing structure); a reconnect storm reads nothing from etcd per node;
 *  - at most one unacknowledged push per node: changes committed meanwhile
 *    are coalesced into one delta from the node's acked version to the head
 *    when it acks, so memory per slow node is bounded;
 *  - the encoded body of a (from, to) delta and of a head snapshot is built
 *    once (struct rpc_buf) and shared by every stream that needs it; only
 *    the per-push nonce envelope is per node;
 *  - a node that NACKs keeps its version and is not pushed the refused
 *    version again, only a newer head;
 *  - every node connected here has a key <prefix>nodes/<node_id> (packed
 *    sluice.v1.NodeStatus) under this replica's lease; writes after the
 *    first compare the key's mod_revision, so a node that moved to another
 *    replica is never overwritten by the one it left (which then ends its
 *    stale stream with ABORTED).
 *
 * Threads: rpc callbacks run on the adapter's workers; the etcd watch
 * thread applies commits and pushes; one registry thread writes to etcd
 * (and keeps the lease alive, retries pushes refused by a full stream
 * queue); an optional metrics thread serves HTTP. One mutex guards the
 * shared state; nothing holding it waits on etcd or on the network.
 */
#ifndef SLUICE_FLEET_H
#define SLUICE_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

struct etcd;
struct rpc_server;

#define FLEET_DEFAULT_WINDOW 64          /* versions kept per ruleset */
#define FLEET_MAX_WINDOW 4096
#define FLEET_DEFAULT_LEASE_TTL_S 10     /* registry lease of a replica */
#define FLEET_DEFAULT_GONE_TTL_S 300     /* disconnected nodes stay listed */
#define FLEET_DELTA_CACHE 32             /* encoded deltas kept per ruleset */
#define FLEET_MAX_NODE_ID_LEN 253        /* bytes, like a DNS name */
#define FLEET_MAX_LABELS 64
/* A node's last_seen is rewritten to etcd at most this often when nothing
 * else about it changed (reports alone do not cost an etcd write each). */
#define FLEET_SEEN_REFRESH_MS 30000
/* Statuses a WatchNodes subscriber's stream had no room for, kept (the
 * latest per node) until it has; beyond that they are dropped, counted. */
#define FLEET_WATCH_PENDING 4096
/* Node keys written per etcd transaction (etcd's --max-txn-ops is 128). */
#define FLEET_REG_BATCH 64

/* Borrowed by fleet_new, which copies the strings. */
struct fleet_config {
	/* Used by the registry thread and for (re)loading at start and after a
	 * compaction; borrowed, outlives the fleet. Calls block: give the fleet
	 * its own client so an etcd outage does not hold up admin calls. */
	struct etcd *etcd;
	/* The admin store's client, optional and borrowed: only its latency
	 * is read, for /metrics (op="store"). */
	struct etcd *store_etcd;
	/* For the watch, which opens its own connection. */
	const char *const *etcd_endpoints;
	size_t n_etcd_endpoints;
	uint64_t etcd_timeout_ms;       /* 0 = ETCD_DEFAULT_TIMEOUT_MS */
	const char *prefix;             /* NULL = STORE_DEFAULT_PREFIX */
	/* This replica's name in NodeStatus.control_plane; must differ between
	 * replicas (main uses the bound gRPC address). */
	const char *replica_id;
	unsigned window;                /* 0 = FLEET_DEFAULT_WINDOW */
	unsigned lease_ttl_s;           /* 0 = FLEET_DEFAULT_LEASE_TTL_S */
	unsigned gone_ttl_s;            /* 0 = FLEET_DEFAULT_GONE_TTL_S */
	/* Plaintext development mode: without certificates nobody has the
	 * node role, so Sync is registered open to any caller and a Hello's
	 * node_id is taken as given. Never set with TLS. */
	bool any_node;
};

/* Owned by its creator; lives until fleet_free, which must come after the
 * rpc server it registered with has shut down. */
struct fleet;

/* -EINVAL: no etcd, no endpoint, no replica id, window too big; -ENOMEM.
 * *ret written only on success. */
int fleet_new(const struct fleet_config *cfg, struct fleet **ret);

/* Registers PolicySync/Sync (role node; none with cfg.any_node) and the four Fleet methods (role
 * admin) on s, before rpc_server_start. Errors of rpc_server_add_*. */
int fleet_register(struct fleet *f, struct rpc_server *s);

/* Starts the loader/watch and registry threads. Nodes may connect before
 * the first load finishes (etcd down at start): they are served once it
 * does. -EBUSY if started; -errno of pthread_create. */
int fleet_start(struct fleet *f);

/* Serves GET /metrics (Prometheus text) on "host:port" (port 0 = any) from
 * its own thread; *port (may be NULL) = the bound port. -EINVAL (bad
 * address), -errno of socket/bind/listen, -EBUSY if already listening. */
int fleet_metrics_listen(struct fleet *f, const char *addr, int *port);

/* Appends every fleet family to b (also what /metrics serves). Any thread. */
void fleet_metrics_render(struct fleet *f, struct metrics_buf *b);

/* Stops the threads and revokes the replica's lease (its node keys go at
 * once rather than at lease expiry). Call after rpc_server_shutdown.
 * Idempotent. */
void fleet_stop(struct fleet *f);

/* Stops if needed and frees. NULL is fine. */
void fleet_free(struct fleet *f);

#endif
