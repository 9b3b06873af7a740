/* bpfload.h - the node's loader of the TC ingress enforcer (bpf/): loads the
 * skeleton, attaches it at clsact ingress of one interface, keeps its maps in
 * step with each policy snapshot and drains its event ring into counters.
 * Invariant: after bpfload_sync(s) returns 0 the maps hold exactly what `s`
 * asks of the kernel, and only entries that changed since the last sync were
 * written. Every failure is a return code: the node keeps serving without
 * the kernel layer. Threads: one thread owns a loader (new, attach, sync,
 * poll, free); bpfload_deny_add(), bpfload_deny_sweep(), bpfload_counters()
 * and bpfload_map_fd() only make bpf() syscalls on map fds (deny trie writes
 * under the loader's deny lock, shared with sync), so any thread may call
 * them while the loader lives.
 * The deny tries have a pre-filter map, deny_filter (bpf/include/
 * client_abi.h): the loader alone keeps it, exactly "some entry covers this
 * 16-bit slot", so every deny entry must be written through this API.
 */
#ifndef SLUICE_BPFLOAD_H
#define SLUICE_BPFLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "snapshot.h"

struct bpfload;

#define BPFLOAD_MAX_HTTP_PORTS 8 /* = CLIENT_HTTP_PORTS_MAX */

/* Loader settings; read during bpfload_new() only (strings are copied).
 * Owned by the caller. */
struct bpfload_config {
	const char *ifname;        /* interface to attach to; or */
	int ifindex;               /* used when ifname is NULL or "" */
	uint16_t http_ports[BPFLOAD_MAX_HTTP_PORTS]; /* plaintext HTTP ports; 0 = unused */
	/* Client-id header name until the first sync (NULL: "Client-ID"); a
	 * synced snapshot's Settings.client_id_header replaces it. Longer than
	 * 22 bytes: the kernel looks for no header (the proxy still does). */
	const char *client_id_header;
	/* bpffs directory to pin the maps in (created; bpffs is mounted at
	 * /sys/fs/bpf when nothing is mounted there). A loader given the same
	 * directory later reuses the pinned maps, so limits, buckets and deny
	 * entries survive a restart. NULL: no pinning. */
	const char *pin_path;
	uint8_t log_level;         /* enum client_log_level */
	/* Optional: a one-line reason for a failure of bpfload_new(), e.g.
	 * "loading the TC program needs root (CAP_BPF and CAP_NET_ADMIN)". */
	char *errmsg;
	size_t errmsg_len;
};

/* Opens, configures (global config map) and loads the program; does not
 * attach. Returns 0 and *ret, or -EPERM (not root / no CAP_BPF), -ENODEV (no
 * such interface), -EINVAL (bad config, or pin_path not on bpffs), the
 * mount/mkdir -errno for pinning, -ENOMEM, or libbpf's -errno for a load
 * failure; cfg->errmsg says which. */
int bpfload_new(const struct bpfload_config *cfg, struct bpfload **ret);
/* Detaches if attached, then frees. Pinned maps stay pinned. Accepts NULL. */
void bpfload_free(struct bpfload *l);

/* Attaches at TC ingress: creates the clsact qdisc unless it exists (then
 * it is not ours and detach keeps it) and adds our filter. 0 or -errno;
 * -EALREADY when attached. */
int bpfload_attach(struct bpfload *l);
/* Removes our filter only, and the clsact qdisc only if attach created it.
 * 0 (also when not attached) or -errno. */
int bpfload_detach(struct bpfload *l);

/* What a sync wrote; for tests and metrics. */
struct bpfload_sync_stats {
	size_t updates;       /* map entries written (config, lookup, deny, global) */
	size_t deletes;       /* map entries deleted */
	size_t skipped_keys;  /* client keys longer than CLIENT_KEY_MAX_BYTES: proxy-only */
	size_t kernel_clients; /* clients in client_config after the sync */
};

/* Makes the maps equal to what `s` asks of the kernel:
 * - client_config, for each client whose effective rate limit (its own,
 *   else Settings.default_rate_limit) is enforced KERNEL or BOTH, with action
 *   REJECT, token or leaky bucket, and a selector with no source, host, path
 *   or method (the kernel applies a limit to every request of the client);
 *   key = the client resource's key_hash. A client using the default limit
 *   gets rate 0 (the kernel applies the global default).
 * - client_lookup: policy_client_key_hash() of each key of those clients;
 *   keys longer than CLIENT_KEY_MAX_BYTES are skipped and counted.
 * - deny_v4/deny_v6: the deny CIDRs of the global access lists (Settings
 *   access_lists), never expiring; deny_filter follows the tries. Allow lists are not enforced in the
 *   kernel: "not allowed" is the proxy's decision (an allow list is a
 *   whitelist, and the kernel must never drop when unsure).
 * - global_config: enabled = !Settings.disabled, the default limit when it
 *   is kernel-installable, header name, ports, log level.
 * Only entries that changed since the previous sync are written (the first
 * sync writes everything and deletes whatever else a pinned map held).
 * Keeps a reference to `s`. stats may be NULL. 0 or -errno; on failure the
 * next sync starts over with a full reconcile. */
int bpfload_sync(struct bpfload *l, const struct snapshot *s, struct bpfload_sync_stats *stats);

/* Escalation: denies `prefix` in the kernel for ttl_ns nanoseconds (> 0);
 * the program ignores the entry once it expires (TTL checked in the kernel
 * on every packet), and bpfload_deny_sweep() deletes it later. An existing
 * escalation of the same prefix gets the new expiry; a policy deny of the
 * same prefix (never expiring) is left alone: -EEXIST. A policy deny of the
 * same prefix added by a later sync replaces this entry (never expires),
 * and one removed by a sync removes it too. A prefix inside a policy deny
 * (not the same prefix) gets its own entry. 0, -EINVAL (ttl 0, bad prefix),
 * -EEXIST, -E2BIG/-ENOMEM (trie full), or another -errno of the bpf()
 * syscall. (-EAGAIN, once returned for a race with a sync, no longer
 * happens: the deny lock orders the two.) Thread-safe against everything
 * but bpfload_free(): it takes the deny lock and touches only the trie and
 * the pre-filter (a few syscalls). */
int bpfload_deny_add(struct bpfload *l, const struct cidr *prefix, uint64_t ttl_ns);

/* Deletes expired deny entries (escalations past their TTL) from both tries,
 * so the tries do not fill up with dead entries; *deleted (may be NULL) gets
 * how many. Thread-safe like bpfload_deny_add(). 0 or -errno. */
int bpfload_deny_sweep(struct bpfload *l, size_t *deleted);

/* Events consumed by bpfload_poll(), by reason. Owned by the caller. */
struct bpfload_event_counts {
	uint64_t events;
	uint64_t by_reason[32]; /* index: enum client_reason */
};

/* Called for each event consumed (e.g. to log it); `ev` points to a
 * struct client_event valid during the call. */
typedef void (*bpfload_event_cb)(void *arg, const void *ev);
void bpfload_set_event_cb(struct bpfload *l, bpfload_event_cb cb, void *arg);

/* An fd that polls readable when events are waiting (the ring buffer's
 * epoll fd), for an owner that waits on several things at once. */
int bpfload_event_fd(const struct bpfload *l);

/* Consumes ring buffer events for up to timeout_ms (0: what is there).
 * Returns the number consumed, or -errno. */
int bpfload_poll(struct bpfload *l, int timeout_ms);
/* Events consumed so far, by reason. */
void bpfload_event_counts(const struct bpfload *l, struct bpfload_event_counts *out);

/* The kernel's per-reason packet counters summed over CPUs, into
 * out[0..n) (index: enum client_reason; CLIENT_COUNTER_EVENTS_LOST counts
 * events lost to a full ring). n at most CLIENT_COUNTERS. 0 or -errno. */
int bpfload_counters(const struct bpfload *l, uint64_t *out, size_t n);

/* Map fds for tests and tools (client_config, client_lookup, deny_v4,
 * deny_v6, deny_filter, global_config, client_stats); -1 for an unknown
 * name. Read them only: a deny entry written past the loader would miss
 * the pre-filter. */
int bpfload_map_fd(const struct bpfload *l, const char *name);

#endif
