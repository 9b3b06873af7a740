/* sync.h - the node's sync agent: the data plane's only adapter over the
 * gRPC C core. One thread, one completion queue, one PolicySync/Sync stream
 * at a time to one of several control-plane endpoints; and the fail-static
 * state file that holds the last good snapshot across restarts.
 *
 * Invariants: a Delta or Snapshot is validated and built by lib/ before
 * anything is published; one that fails (or whose from_version is not the
 * node's version) is NACKed and the current snapshot stays. An Ack is sent
 * only after the version is published (and persisted, when the disk allows).
 * The agent is the only writer of its snapshot cell once started.
 */
#ifndef SLUICE_SYNC_H
#define SLUICE_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "snapshot.h"

/* ---- the state file (fail-static) ----------------------------------------
 *
 * STATE_DIR/<ruleset>.snapshot, written to a temporary file, fsynced,
 * renamed over the old one, then the directory fsynced. Layout, all
 * integers little-endian:
 *
 *   0  magic "SLCSNAP\0"        24 payload length (bytes)
 *   8  format (1)               32 written at, Unix ms
 *  12  header length (48)       40 XXH3-64 of bytes 0..39 then the payload
 *  16  ruleset version          48 payload: a packed sluice.v1.Snapshot,
 *                                  resources sorted by (kind, id)
 */
#define SYNC_STATE_MAGIC "SLCSNAP"      /* 8 bytes with its NUL */
#define SYNC_STATE_FORMAT 1u
#define SYNC_STATE_HEADER_LEN 48u
#define SYNC_STATE_MAX_BYTES (256u << 20)
#define SYNC_STATE_ERR_LEN 512

/* The encoded file for snapshot s: a malloc'ed buffer in *buf (caller
 * frees), its length in *len. 0, -ENOMEM. */
int sync_state_encode(const struct snapshot *s, uint64_t now_unix_ms, uint8_t **buf, size_t *len);

/* Checks and decodes a whole file image. want_ruleset (may be NULL) must
 * equal the snapshot's name. Returns 0 and a validated snapshot (one
 * reference); -EBADMSG (bad magic, format, length, checksum or payload),
 * -EINVAL (the snapshot fails validation or names another ruleset), with
 * err saying why. Never returns part of a file. */
int sync_state_decode(const uint8_t *buf, size_t len, const char *want_ruleset,
		      char err[SYNC_STATE_ERR_LEN], struct snapshot **ret);

/* "DIR/RULESET.snapshot" into path. -ENAMETOOLONG, -EINVAL (bad name). */
int sync_state_path(const char *dir, const char *ruleset, char *path, size_t len);

/* Writes s atomically as DIR/<ruleset>.snapshot (tmp, fsync, rename, fsync
 * of the directory). 0 or -errno (err says which step); on failure the
 * previous file is intact. Any thread; one writer per file. */
int sync_state_save(const char *dir, const struct snapshot *s, char err[SYNC_STATE_ERR_LEN]);

/* Reads DIR/<ruleset>.snapshot. 0 and a snapshot; -ENOENT when there is no
 * file; else as sync_state_decode or -errno from reading, err says why. */
int sync_state_load(const char *dir, const char *ruleset, char err[SYNC_STATE_ERR_LEN],
		    struct snapshot **ret);

/* ---- the agent ------------------------------------------------------------ */

/* One Hello label. Strings borrowed from the caller. */
struct sync_label {
	const char *name;
	const char *value;
};

/* Owned by the caller; strings, arrays, the cell and the callbacks must
 * outlive the agent. Numbers at 0 mean the documented default. */
struct sync_config {
	const char *node_id;
	const char *ruleset;
	const struct sync_label *labels;
	unsigned n_labels;
	const char *const *endpoints;   /* "host:port", tried in turn */
	unsigned n_endpoints;
	bool plaintext;                 /* no TLS: development only */
	const char *ca_file;            /* PEM roots that sign the control plane */
	const char *cert_file;          /* this node's certificate (mTLS) */
	const char *key_file;
	const char *server_name;        /* NULL: the endpoint's host */
	const char *state_dir;          /* NULL: nothing persisted */
	uint32_t connect_timeout_ms;    /* 0: 5000 */
	uint32_t backoff_min_ms;        /* 0: 200 */
	uint32_t backoff_max_ms;        /* 0: 30000 */
	uint32_t report_interval_ms;    /* 0: 10000 */
	uint32_t keepalive_ms;          /* 0: 30000 (HTTP/2 ping interval) */
	/* The cell the proxy reads; holds the start-up snapshot (empty or the
	 * persisted one). The agent publishes into it from its thread. */
	struct snapshot_cell *cell;
	/* Sync thread, after each publish. May be NULL. */
	void (*on_applied)(void *arg, const struct snapshot *s);
	/* Sync thread, for each NodeReport: the node's Prometheus families
	 * (the counters a report carries are read from them). May be NULL. */
	void (*metrics)(void *arg, struct metrics_buf *b);
	/* Sync thread: NULL when healthy, else a short static reason. May be NULL. */
	const char *(*not_ready)(void *arg);
	void *arg;
};

/* Owned by the node's main; lives until sync_free. */
struct sync;

/* Reads the TLS files (so a missing key fails start-up, not the first
 * connection) and creates state_dir (0700) when absent. Starts nothing.
 * -EINVAL (config), -errno from reading files or mkdir, -ENOMEM. */
int sync_new(const struct sync_config *cfg, struct sync **ret);
/* Starts the agent's thread. 0 or -errno. */
int sync_start(struct sync *s);
/* Stops the thread (cancels the stream) and frees. Accepts NULL. */
void sync_free(struct sync *s);

/* Appends the sluice_sync_* families: connected, acked version, acks,
 * nacks, reconnects, applies, persist failures. Any thread. */
void sync_metrics(const struct sync *s, struct metrics_buf *b);

/* The last version this agent published (0: none yet). Any thread. */
uint64_t sync_version(const struct sync *s);

#endif
