/* node_admin.h - the node's admin HTTP listener: /metrics (Prometheus text),
 * /healthz, /readyz, on its own thread.
 *
 * HTTP/1.1 with Connection: close, GET and HEAD only; bounded: at most
 * max_connections at once, requests up to 8 KiB, each connection closed
 * after request_timeout_ms whatever its state. Not for the request path:
 * one poll(2) loop, one thread.
 */
#ifndef SLUICE_NODE_ADMIN_H
#define SLUICE_NODE_ADMIN_H

#include <stdint.h>

#include "metrics.h"

/* Owned by the caller; read during node_admin_new; the callbacks and arg
 * must stay valid until node_admin_free. */
struct node_admin_config {
	const char *listen;            /* "host:port", "[v6]:port"; port 0 picks one */
	unsigned max_connections;      /* 0: 32 */
	uint32_t request_timeout_ms;   /* 0: 5000 */
	/* Called on the admin thread for each /metrics: append the families. */
	void (*metrics)(void *arg, struct metrics_buf *b);
	/* Called on the admin thread for each /readyz: NULL when ready, else a
	 * short static reason sent with the 503 ("draining"). */
	const char *(*not_ready)(void *arg);
	void *arg;
};

/* Owned by the node's main; lives until node_admin_free. */
struct node_admin;

/* Binds and listens (the port is known at return) but starts no thread.
 * -EINVAL bad address, -errno from socket/bind/listen, -ENOMEM. */
int node_admin_new(const struct node_admin_config *cfg, struct node_admin **ret);
/* Starts the thread. It registers itself as an RCU reader
 * (snapshot_thread_online), so the callbacks may read snapshot cells. */
int node_admin_start(struct node_admin *a);
uint16_t node_admin_port(const struct node_admin *a);
/* Stops the thread (open connections are closed) and frees. Accepts NULL. */
void node_admin_free(struct node_admin *a);

#endif
