/* fleet_sim.h - N fake nodes on sluice.v1.PolicySync/Sync, for benchmarks.
 *
 * Each node has its own channel (its own TCP connection, as real nodes do)
 * and one bidirectional Sync stream: Hello{node_id, ruleset, have_version 0},
 * then an Ack{ruleset, version, nonce} for every Delta or Snapshot pushed.
 * All streams share ONE completion queue served by ONE thread: event
 * driven, no thread per node. Every push's receive time (CLOCK_MONOTONIC,
 * taken as the completion is dequeued) is kept, so convergence is measured
 * at the nodes, not at the caller that waits.
 */
#ifndef SLUICE_BENCH_FLEET_SIM_H
#define SLUICE_BENCH_FLEET_SIM_H

#include <stddef.h>
#include <stdint.h>

#define FLEET_SIM_MAX_NODES 100000
#define FLEET_SIM_SYNC_PATH "/sluice.v1.PolicySync/Sync"

/* Borrowed by fleet_sim_new, which copies the strings. */
struct fleet_sim_config {
	const char *target;          /* "127.0.0.1:7070" */
	const char *ruleset;         /* named in Hello and every Ack */
	const char *node_prefix;     /* node ids are "<prefix>-<index>" */
	unsigned n_nodes;            /* 1..FLEET_SIM_MAX_NODES */
	/* Lifetime of each Sync call (gRPC deadline); 0 = 1 hour. */
	uint64_t stream_deadline_ms;
	/* Optional metadata `authorization: Bearer <token>` on each stream;
	 * NULL = none. */
	const char *bearer_token;
	/* mTLS: CA of the server (PEM file) and a directory holding
	 * "<node id>.pem" and "<node id>.key" for every node (as
	 * scripts/gen-certs.sh makes them). NULL = plaintext. */
	const char *tls_ca_file;
	const char *tls_cert_dir;
};

/* Owned by its creator; lives until fleet_sim_free. */
struct fleet_sim;

/* Initializes gRPC, opens every channel, starts every stream (Hello sent)
 * and the completion-queue thread. Connecting goes on in the background:
 * fleet_sim_wait_version(s, 1, ...) waits for it. -EINVAL (bad config),
 * -ENOENT (a PEM file missing), -ENOMEM, -errno of pthread_create. *ret written only on success. */
int fleet_sim_new(const struct fleet_sim_config *cfg, struct fleet_sim **ret);

/* Waits until every node has received a push of a version >= `version`
 * and its Ack for it has been sent, or until deadline_ns (CLOCK_MONOTONIC).
 * On 0, *last_recv_ns and *first_recv_ns (either may be NULL) = the latest
 * and the earliest, over the nodes, of the time each node first received a
 * version >= `version`.
 * -ETIMEDOUT: deadline passed (fleet_sim_error says how many nodes got
 * there); -EPROTO: a stream ended or sent something undecodable
 * (fleet_sim_error names the node and the gRPC status). Main thread only:
 * one waiter at a time. */
int fleet_sim_wait_version(struct fleet_sim *s, uint64_t version, uint64_t deadline_ns,
			   uint64_t *last_recv_ns, uint64_t *first_recv_ns);

/* The first failure, as one line ("node 'sim-3': Sync ended: status 12
 * (UNIMPLEMENTED) 'no such method'"); "" when none. Valid until the next
 * fleet_sim_* call. */
const char *fleet_sim_error(struct fleet_sim *s);

/* Pushes received by all nodes so far (Snapshots + Deltas). */
uint64_t fleet_sim_pushes(struct fleet_sim *s);

/* Cancels every stream, waits for their completions (bounded: gRPC
 * completes a cancelled call's batches promptly), closes the channels and
 * shuts gRPC down. NULL is fine. */
void fleet_sim_free(struct fleet_sim *s);

/* CLOCK_MONOTONIC in ns, the clock of every time above. */
uint64_t fleet_sim_now_ns(void);

#endif
