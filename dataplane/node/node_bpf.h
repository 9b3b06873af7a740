/* node_bpf.h - everything sluice-node needs from the kernel enforcer
 * (bpf/ + dataplane/bpfload), behind one small API: start (load, sync the
 * latest policy, attach), follow each published snapshot, consume the event
 * ring on its own thread, escalate sources the proxy keeps rejecting to the
 * kernel deny list, counters for /metrics and NodeReport, stop.
 * The kernel layer is optional: when it cannot start (not root, no BPF, no
 * such interface) node_bpf_start() says why once and every other call keeps
 * working as a cheap no-op, so the proxy serves without it.
 */
#ifndef SLUICE_NODE_BPF_H
#define SLUICE_NODE_BPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "metrics.h"
#include "snapshot.h"

#define NODE_BPF_MAX_HTTP_PORTS 8 /* = BPFLOAD_MAX_HTTP_PORTS */
#define NODE_BPF_REASONS 32       /* >= CLIENT_COUNTERS */

/* From the node's config file (section `bpf:`). Read by node_bpf_new() only;
 * strings are copied. Owned by the caller. */
struct node_bpf_config {
	bool enabled;             /* false: start does nothing, returns 0 */
	const char *ifname;       /* interface to attach to (required when enabled) */
	/* Plaintext HTTP ports whose requests the kernel inspects (normally the
	 * proxy's plaintext listen port); 0 = unused. */
	uint16_t http_ports[NODE_BPF_MAX_HTTP_PORTS];
	const char *pin_path;     /* bpffs directory; NULL: no pinning */
	uint8_t log_level;        /* which events the program emits: 0 drops,
				   * 1 + errors, 2 + every parsed client id */
	size_t escalation_capacity; /* sources tracked; 0: 65,536 */
	uint32_t poll_interval_ms;  /* longest wait of the ring consumer; 0: 500 */
};

/* Owned by main; lives until node_bpf_free(). */
struct node_bpf;

/* Allocates (the escalation table included); loads nothing yet. 0, -EINVAL
 * (enabled without an interface, bad log level), -ENOMEM. */
int node_bpf_new(const struct node_bpf_config *cfg, struct node_bpf **ret);

/* Loads the program, syncs the latest snapshot given to
 * node_bpf_on_snapshot() (if any) into its maps (and again, once attached,
 * if a newer one arrived meanwhile), attaches it at clsact ingress and
 * starts the ring consumer thread. 0 (also when disabled), or
 * -errno with a one-line reason in err ("loading the TC program needs root
 * (...): Operation not permitted"); the caller logs it with ", ignoring"
 * and carries on: the node then runs without the kernel layer. Main thread;
 * once. */
int node_bpf_start(struct node_bpf *nb, char *err, size_t err_len);

/* Follows a newly published snapshot: writes only the map entries that
 * changed (bpfload_sync) and takes the escalation thresholds from its
 * Settings. Before start (or when the kernel layer is off) it only keeps a
 * reference for start and sets the thresholds. 0 or the sync's -errno (the
 * next call reconciles everything). Call it from whichever thread publishes
 * (main in standalone mode, the sync agent's on_applied), in publish order;
 * calls are serialized inside. Not from a proxy worker: a sync makes one
 * bpf() syscall per changed entry. */
int node_bpf_on_snapshot(struct node_bpf *nb, const struct snapshot *s);

/* The proxy's rejection hook: pass node_bpf_on_reject as
 * proxy_config.on_reject and the node_bpf as on_reject_arg. Counts 403 and
 * 429 answers per source address; a source that crosses Settings'
 * escalation_rejects within escalation_window_ms is queued for the consumer
 * thread, which denies it in the kernel for escalation_ttl_s (IPv4 /32,
 * IPv6 /64) and logs it once with the client id last seen. Other statuses
 * are ignored. Any worker thread; no I/O and no allocation: one striped
 * mutex per call (uncontended unless two workers reject sources of the same
 * stripe at once), plus a queue mutex and an eventfd write when a source
 * crosses (once per source and TTL). A no-op when the kernel layer is not
 * running. client_id (client_len bytes, not NUL-ended) may be NULL. */
void node_bpf_on_reject(void *arg, const struct sockaddr *peer, socklen_t peer_len,
			const char *client_id, size_t client_len, int http_status);

/* Everything counted, for /metrics and NodeReport.bpf (BpfCounters: attached,
 * passed, dropped_deny, dropped_rate, events_lost). */
struct node_bpf_counters {
	bool enabled;            /* configured on */
	bool attached;           /* program loaded and attached now */
	uint64_t passed;         /* packets passed, all reasons */
	uint64_t dropped_deny;   /* packets dropped: source denied */
	uint64_t dropped_rate;   /* packets dropped: client over its limit */
	uint64_t events_lost;    /* ring buffer full */
	uint64_t packets[NODE_BPF_REASONS]; /* by enum client_reason */
	uint64_t events;         /* ring events consumed */
	uint64_t events_by_reason[NODE_BPF_REASONS];
	uint64_t syncs, sync_errors;
	uint64_t map_updates, map_deletes; /* written by syncs */
	uint64_t kernel_clients; /* clients in client_config after the last sync */
	uint64_t rejects;        /* 403/429 reported by the proxy (while running) */
	uint64_t escalations;    /* sources written to the kernel deny list */
	uint64_t escalation_failures; /* queue full, or the kernel refused */
	uint64_t escalation_evictions; /* tracked sources evicted (table full) */
	uint64_t tracked_sources;
	uint64_t deny_expired;   /* expired escalations deleted from the tries */
};

/* Any thread (reads the kernel's per-CPU counters: a few syscalls). */
void node_bpf_counters(struct node_bpf *nb, struct node_bpf_counters *out);

/* Appends the sluice_bpf_* and sluice_escalation_* families. Any thread. */
void node_bpf_metrics(struct node_bpf *nb, struct metrics_buf *b);

/* For tools and tests: the fd of one of the program's maps (see
 * bpfload_map_fd()), valid until node_bpf_stop(); -1 when not running or
 * for an unknown name. */
int node_bpf_map_fd(struct node_bpf *nb, const char *name);

/* "deny", "rate", "not_tcp"...: the metric label of an enum client_reason;
 * NULL past the last reason. */
const char *node_bpf_reason_name(unsigned reason);

/* "drops" / "errors" / "debug" -> 0 / 1 / 2. 0 or -EINVAL. */
int node_bpf_log_level_parse(const char *name, uint8_t *out);

/* Stops the consumer thread and detaches (the clsact qdisc only if we made
 * it; pinned maps stay pinned); escalations still queued are dropped. A
 * node_bpf_on_reject() during or after stop is harmless (it finds the layer
 * not running); none may come after node_bpf_free(). Main thread;
 * idempotent. */
void node_bpf_stop(struct node_bpf *nb);

/* Stops if running, then frees. Accepts NULL. */
void node_bpf_free(struct node_bpf *nb);

#endif
