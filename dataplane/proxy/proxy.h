/* proxy.h - the node's io_uring HTTP/1.1 reverse proxy: worker threads, each
 * with its own io_uring and SO_REUSEPORT listener(s), routing and policy
 * enforcement from the current snapshot, upstream keep-alive pools, static
 * files, timeouts and graceful drain.
 *
 * No lock on the request path: workers read the policy through the RCU cell
 * and share only the limiter (atomic) and relaxed-atomic counters.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "limiter.h"
#include "metrics.h"
#include "snapshot.h"

struct tls_ctx;

/* Everything the proxy needs from the node. Owned by the caller; strings and
 * pointers must outlive the proxy. A 0 number means the documented default. */
struct proxy_config {
	unsigned workers;                /* 0: one per online CPU */
	bool pin_cpus;                   /* pin worker i to CPU i % ncpu */
	bool reuseport_steering;         /* classic-BPF steering by client IP;
					  * falls back to the kernel hash */
	const char *listen;              /* "host:port" plaintext, NULL: none;
					  * "[::1]:8080" for IPv6; port 0 picks one */
	const char *tls_listen;          /* "host:port" TLS, NULL: none */
	struct tls_ctx *tls;             /* required with tls_listen */
	unsigned max_connections;        /* global cap on client connections; 0: 10000 */
	/* Limits and timeouts; routes override body size and request timeout. */
	size_t max_head_bytes;           /* 0: 8 KiB */
	uint64_t max_body_bytes;         /* 0: Settings value, else 10 MiB */
	uint32_t header_timeout_ms;      /* 0: 10 s (408 when exceeded) */
	uint32_t body_timeout_ms;        /* 0: 30 s between body reads (408) */
	uint32_t idle_timeout_ms;        /* 0: 60 s keep-alive idle */
	uint32_t upstream_connect_timeout_ms; /* 0: Upstream value, else 2 s (504) */
	uint32_t upstream_read_timeout_ms;    /* 0: route request_timeout, else 30 s (504) */
	unsigned upstream_idle_per_worker;    /* 0: Upstream pool size, else 32 */
	uint32_t upstream_idle_timeout_ms;    /* 0: 60 s */
	uint32_t drain_timeout_ms;       /* 0: 10 s */
	/* Policy: read per request. */
	struct snapshot_cell *policy;
	struct limiter *limiter;
	int access_log_fd;               /* -1: no access log */
	unsigned max_clients;            /* client keys counted per worker (see
					  * proxy_client_counters); 0: 16384,
					  * at most 1048576; ~200 bytes each,
					  * resident only once used */
	/* Escalation: called for every 403 and 429 the proxy answers itself
	 * (access-list denial, rate limit, a refused dot-segment path, a
	 * static file outside its root; never an upstream's status), before
	 * the response is sent. Runs on the worker thread, inside the
	 * request path: it must not block, take a contended lock or do I/O
	 * (queue the event and return). peer: the client's address (len
	 * bytes, valid during the call). client_id: the raw value of the
	 * client-id header (client_len bytes, not NUL-terminated, valid
	 * during the call), NULL when the request had none or was not parsed
	 * that far. NULL hook: none. */
	void (*on_reject)(void *arg, const struct sockaddr *peer, socklen_t len,
			  const char *client_id, size_t client_len, int http_status);
	void *on_reject_arg;
};

/* Owned by the node's main; lives until proxy_free. */
struct proxy;

/* Binds the listeners (so a port 0 is known at return) but starts nothing.
 * Returns 0, -EINVAL on a bad address or missing TLS context, -errno from
 * socket/bind/listen. */
int proxy_new(const struct proxy_config *cfg, struct proxy **ret);

/* Starts the worker threads. Returns 0 once every worker is accepting. */
int proxy_start(struct proxy *p);

/* The bound port of the plaintext (tls = false) or TLS listener; 0 if none. */
uint16_t proxy_port(const struct proxy *p, bool tls);

/* Graceful drain: stop accepting, let in-flight requests finish (keep-alive
 * connections close after their current response), wait at most
 * drain_timeout_ms, then close what is left and join the workers. Returns
 * the number of connections closed forcibly. Any thread; once. */
unsigned proxy_drain(struct proxy *p);

/* Stops (drains if not yet drained) and frees. Accepts NULL. */
void proxy_free(struct proxy *p);

/* Appends the proxy's Prometheus families to b: requests by route and
 * status, decisions by rule and outcome, decisions of the top
 * PROXY_CLIENT_TOP_N clients (proxy_client_counters), latency histogram,
 * connections (open, accepted, refused at the cap), TLS path counts. Any
 * thread. */
void proxy_metrics(const struct proxy *p, struct metrics_buf *b);

/* How many clients /metrics (sluice_proxy_client_decisions_total) and so
 * the NodeReport carry: the busiest ones, a bounded size whatever the
 * number of clients in the policy. */
#define PROXY_CLIENT_TOP_N 100u

/* One client's decision counters since the proxy started, summed over the
 * workers. Only decisions that identified a Client resource (by the
 * client-id header) count. Cumulative: a client removed from the policy
 * keeps its row. */
struct proxy_client_count {
	char client[POLICY_ID_MAX_LEN + 1];  /* the Client resource's id */
	uint64_t allowed;          /* requests the policy let through */
	uint64_t rejected;         /* refused for this client: 429 from a REJECT
				    * limit (access-list 403s are decided on the
				    * source address before the client is
				    * looked up, so they are not per client) */
	uint64_t shadow_rejected;  /* requests (allowed or not) that at least
				    * one SHADOW limit would have refused */
};

struct proxy_client_summary {
	size_t clients;            /* distinct clients counted, before the cut */
	uint64_t overflow;         /* decisions of clients a worker had no room
				    * for (proxy_config.max_clients) */
};

/* The top_n clients by allowed + rejected (ties by id), busiest first, in
 * *ret (malloc'ed, caller frees; NULL when *n_ret is 0). summary may be
 * NULL. Counts a worker is adding while this runs may or may not show.
 * Any thread. 0 or -ENOMEM (nothing written then). */
int proxy_client_counters(const struct proxy *p, size_t top_n, struct proxy_client_count **ret,
			  size_t *n_ret, struct proxy_client_summary *summary);

#endif
