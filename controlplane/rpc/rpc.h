/* rpc.h - the control plane's one adapter over the gRPC C core.
 *
 * Services register handlers by full method path ("/sluice.v1.PolicyAdmin/
 * ListRulesets"); handlers see only encoded protobuf bytes and plain structs,
 * never grpc_* types. Unary handlers run on a worker pool, never on the
 * completion-queue thread, so a slow etcd call cannot stall other calls.
 */
#ifndef SLUICE_RPC_H
#define SLUICE_RPC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* gRPC status codes, same numbers as grpc_status_code. */
enum rpc_status {
	RPC_OK = 0,
	RPC_CANCELLED = 1,
	RPC_UNKNOWN = 2,
	RPC_INVALID_ARGUMENT = 3,
	RPC_DEADLINE_EXCEEDED = 4,
	RPC_NOT_FOUND = 5,
	RPC_ALREADY_EXISTS = 6,
	RPC_PERMISSION_DENIED = 7,
	RPC_RESOURCE_EXHAUSTED = 8,
	RPC_FAILED_PRECONDITION = 9,
	RPC_ABORTED = 10,
	RPC_OUT_OF_RANGE = 11,
	RPC_UNIMPLEMENTED = 12,
	RPC_INTERNAL = 13,
	RPC_UNAVAILABLE = 14,
	RPC_DATA_LOSS = 15,
	RPC_UNAUTHENTICATED = 16,
};

/* Who is calling. Owned by the adapter; valid during the handler call. */
struct rpc_peer {
	const char *identity;  /* verified client-certificate CN (or SAN),
				* NULL without one */
	bool admin;            /* admin bearer token or admin certificate */
	bool node;             /* a node certificate */
	const char *address;   /* "ipv4:127.0.0.1:5555" style, may be NULL */
};

/* A unary handler's answer. The handler fills it; the adapter frees data
 * and message with free() after sending. data is the encoded response
 * message when status == RPC_OK (NULL with len 0 encodes an empty message);
 * message is the status details (NULL for none). */
struct rpc_reply {
	enum rpc_status status;
	char *message;
	uint8_t *data;
	size_t len;
};

/* A unary method: decode req[0..len), do the work, fill reply. Runs on one
 * of the adapter's worker threads; may block up to its own deadline. */
typedef void (*rpc_unary_fn)(void *ctx, const struct rpc_peer *peer,
			     const uint8_t *req, size_t len, struct rpc_reply *reply);

/* Sets reply to an error with a printf-formatted message (dropped if it
 * cannot be allocated). Inline so that services can be tested without the
 * transport. */
static inline __attribute__((format(printf, 3, 4)))
void rpc_reply_error(struct rpc_reply *reply, enum rpc_status status, const char *fmt, ...)
{
	va_list ap;

	free(reply->data);
	reply->data = NULL;
	reply->len = 0;
	free(reply->message);
	reply->message = NULL;
	reply->status = status;
	va_start(ap, fmt);
	if (vasprintf(&reply->message, fmt, ap) < 0)
		reply->message = NULL;
	va_end(ap);
}

/* ==== the server ==========================================================
 *
 * Life cycle: rpc_server_new (binds the port) -> rpc_server_add_* and
 * rpc_server_enable_* -> rpc_server_start -> ... -> rpc_server_shutdown ->
 * rpc_server_free. Registration is only allowed before start.
 *
 * Threads: one completion-queue thread moves bytes and never runs service
 * code; every callback (unary handlers, stream open/recv/close) runs on one
 * of cfg.n_workers worker threads. Callbacks of one stream never run at the
 * same time and arrive in order (open, recv..., close).
 *
 * Authentication (checked before any service code runs):
 *  - bearer token: metadata `authorization: Bearer <token>` equal to one of
 *    the lines of cfg.admin_token_file -> peer.admin. Any other
 *    `authorization` value is a wrong credential.
 *  - client certificate (TLS with cfg.tls_ca_file): verified by the TLS
 *    layer against that CA; identity = its subject CN (else its first SAN).
 *    A certificate whose subject has an OU equal to "admin" (any of its
 *    OUs) is an admin certificate -> peer.admin; every other verified
 *    certificate is a node certificate -> peer.node.
 * Roles of a method: RPC_ROLE_NONE (anyone, e.g. health and reflection),
 * RPC_ROLE_ADMIN (peer.admin), RPC_ROLE_NODE (peer.node). A caller of an
 * ADMIN or NODE method with no credential, or with a wrong token, gets
 * UNAUTHENTICATED; with valid credentials of the other role,
 * PERMISSION_DENIED.
 */

enum rpc_role {
	RPC_ROLE_NONE = 0,
	RPC_ROLE_ADMIN,
	RPC_ROLE_NODE,
};

#define RPC_DEFAULT_WORKERS 4
#define RPC_DEFAULT_STREAM_QUEUE 64             /* messages */
#define RPC_DEFAULT_MAX_MESSAGE_BYTES (16u << 20)
#define RPC_MAX_TOKENS 64
#define RPC_MAX_TOKEN_LEN 512                    /* bytes */

/* Borrowed by rpc_server_new, which reads every file and copies what it
 * keeps. */
struct rpc_server_config {
	/* "host:port"; port 0 picks a free one (see rpc_server_port). NULL =
	 * "127.0.0.1:7070". */
	const char *listen;
	/* PEM files. Both NULL = plaintext (development only). */
	const char *tls_cert_file;
	const char *tls_key_file;
	/* PEM CA bundle for client certificates: set = mTLS. Clients are asked
	 * for a certificate and a presented one must verify; one without a
	 * certificate can still call RPC_ROLE_NONE methods and use a token,
	 * unless require_client_cert. */
	const char *tls_ca_file;
	bool require_client_cert;
	/* Admin bearer tokens, one per line ('#' comments and blank lines
	 * ignored). NULL = no token is accepted. */
	const char *admin_token_file;
	unsigned n_workers;          /* 0 = RPC_DEFAULT_WORKERS */
	size_t stream_queue_max;     /* 0 = RPC_DEFAULT_STREAM_QUEUE */
	size_t max_message_bytes;    /* received, 0 = RPC_DEFAULT_MAX_MESSAGE_BYTES */
};

/* Owned by its creator; lives until rpc_server_free. */
struct rpc_server;

/* Initializes gRPC, reads the credentials and binds the listen address.
 * -EINVAL: bad config or unreadable/invalid PEM or token file (nothing
 * half-made is left); -EADDRINUSE: the address cannot be bound; -ENOMEM.
 * *ret written only on success. */
int rpc_server_new(const struct rpc_server_config *cfg, struct rpc_server **ret);

/* The bound TCP port (the real one when cfg.listen asked for port 0). */
int rpc_server_port(const struct rpc_server *s);

/* Registers a unary method. path = "/package.Service/Method"; ctx is passed
 * to fn. -EEXIST: path already registered; -EBUSY: already started;
 * -EINVAL: path not of that form; -ENOMEM. */
int rpc_server_add_unary(struct rpc_server *s, const char *path, enum rpc_role role,
			 rpc_unary_fn fn, void *ctx);

/* ---- streams --------------------------------------------------------------
 *
 * A stream call (server-streaming or bidirectional) is a struct rpc_stream.
 * The adapter calls, on worker threads and one at a time per stream:
 *
 *   open(ctx, st, peer, req, len)  once, after authentication. Server
 *       streams: req[0..len) is the single request message; bidi streams:
 *       req = NULL, len = 0. The service keeps its per-stream state with
 *       rpc_stream_set_data, may send at once, and may end the call with
 *       rpc_stream_finish (e.g. INVALID_ARGUMENT).
 *   recv(ctx, st, msg, len)  bidi only: each message from the client, in
 *       order; the next one is read only after this returns (flow control).
 *       msg = NULL, len = 0 once when the client half-closes (it will send
 *       nothing more; the server may go on sending).
 *   close(ctx, st, status)  exactly once, last: the call is over. status =
 *       the status the server sent (after rpc_stream_finish), or
 *       RPC_CANCELLED when the client went away, its deadline passed or the
 *       server shut down. After close returns the adapter drops its
 *       reference: a service that keeps `st` beyond that (e.g. in a
 *       watcher list read by another thread) holds its own rpc_stream_ref.
 *
 * Sending is thread-safe and never blocks: any thread holding a reference
 * may call rpc_stream_send*. Messages go out in the order the calls were
 * made, one write in flight at a time. The queue is bounded
 * (cfg.stream_queue_max messages): a full queue returns -EAGAIN and
 * nothing is queued (a slow reader: the service coalesces or gives up).
 */

enum rpc_stream_kind {
	RPC_STREAM_SERVER = 1,  /* one request, a stream of responses */
	RPC_STREAM_BIDI,        /* streams both ways */
};

/* Owned by the adapter, refcounted; lives until the last rpc_stream_unref
 * (the adapter holds one until close has returned). */
struct rpc_stream;

struct rpc_stream_ops {
	void (*open)(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
		     const uint8_t *req, size_t len);
	void (*recv)(void *ctx, struct rpc_stream *st, const uint8_t *msg, size_t len);
	void (*close)(void *ctx, struct rpc_stream *st, enum rpc_status status);
};

/* Registers a stream method; ops is copied, every member may be NULL (no
 * open: the stream just waits; no recv: client messages are read and
 * dropped). Errors as rpc_server_add_unary. */
int rpc_server_add_stream(struct rpc_server *s, const char *path, enum rpc_role role,
			  enum rpc_stream_kind kind, const struct rpc_stream_ops *ops,
			  void *ctx);

void rpc_stream_ref(struct rpc_stream *st);
void rpc_stream_unref(struct rpc_stream *st);    /* accepts NULL */

/* Per-stream service state; the adapter never touches it (free it in
 * close). Any thread, but the service orders set and get itself. */
void rpc_stream_set_data(struct rpc_stream *st, void *data);
void *rpc_stream_data(const struct rpc_stream *st);

/* The authenticated caller, valid as long as the reference is held. */
const struct rpc_peer *rpc_stream_peer(const struct rpc_stream *st);

/* Immutable, refcounted bytes that several sends share without copying:
 * one encoding of a delta sent to every node that needs it. Freed by the
 * last unref (the adapter holds references while messages are queued or
 * in flight). */
struct rpc_buf;

/* Copies data. NULL + errno (ENOMEM). len 0 is fine. */
struct rpc_buf *rpc_buf_new(const void *data, size_t len);
/* Takes ownership of data (malloc'ed), freed with free(). NULL + errno;
 * on failure data is still the caller's. */
struct rpc_buf *rpc_buf_take(void *data, size_t len);
void rpc_buf_ref(struct rpc_buf *b);
void rpc_buf_unref(struct rpc_buf *b);            /* accepts NULL */
const uint8_t *rpc_buf_data(const struct rpc_buf *b);
size_t rpc_buf_len(const struct rpc_buf *b);

/* Queues one message, a copy of data[0..len). 0; -EAGAIN: queue full;
 * -EPIPE: finished or closed (nothing more can be sent); -ENOMEM. */
int rpc_stream_send(struct rpc_stream *st, const void *data, size_t len);
/* Queues one message made of the concatenation of parts (protobuf
 * messages concatenate: a per-stream envelope prefix + a shared body).
 * Each part gains a reference; the caller keeps its own. Same returns,
 * -EINVAL for n == 0 or n > 8. */
int rpc_stream_sendv(struct rpc_stream *st, struct rpc_buf *const *parts, size_t n);
/* Messages queued and not yet written (including the one in flight). */
size_t rpc_stream_queued(struct rpc_stream *st);

/* Ends the call: the queued messages are written, then the status (message
 * may be NULL; copied). Later sends fail with -EPIPE; the first finish
 * wins (-EALREADY after). -EPIPE when the call is already closed. */
int rpc_stream_finish(struct rpc_stream *st, enum rpc_status status, const char *message);

/* The deadline of the unary call being handled on this thread, as a
 * CLOCK_MONOTONIC time in ms; UINT64_MAX without a deadline or outside a
 * handler. Handlers pass what is left on to etcd. */
uint64_t rpc_call_deadline_ms(void);

/* ---- built-in services ----------------------------------------------------- */

/* grpc.health.v1.Health: Check (unary) and Watch (server stream). Every
 * service with a registered method, and "" (the whole server), start
 * SERVING; Check of another name is NOT_FOUND, Watch of it reports
 * SERVICE_UNKNOWN until it is set. Call before start. */
int rpc_server_enable_health(struct rpc_server *s);

enum rpc_health_status {
	RPC_HEALTH_SERVING = 1,
	RPC_HEALTH_NOT_SERVING = 2,
};

/* Sets one service's status (NULL or "" = the whole server; an unknown
 * name is added) and pushes it to its watchers. Any thread, any time after
 * enable_health. -ENOMEM; -ENOENT when health is not enabled. */
int rpc_server_set_health(struct rpc_server *s, const char *service, enum rpc_health_status status);
/* Sets every known service, "" included. */
int rpc_server_set_health_all(struct rpc_server *s, enum rpc_health_status status);

/* grpc.reflection.v1 and v1alpha ServerReflection from a serialized
 * google.protobuf.FileDescriptorSet (borrowed: must outlive the server,
 * e.g. sluice_descriptor_set): list_services (the services of the set that
 * have a registered method), file_by_filename, file_containing_symbol
 * (messages, nested messages, enums, services, methods) and both
 * extension queries; files come with every transitive import.
 * -EBADMSG: the set does not parse. Call before start. */
int rpc_server_enable_reflection(struct rpc_server *s, const uint8_t *set, size_t len);

/* ---- run and stop -------------------------------------------------------------- */

/* Starts the workers, the completion-queue thread and the listener.
 * -EBUSY: already started; -errno from pthread_create. */
int rpc_server_start(struct rpc_server *s);

/* Graceful stop: no new calls; open streams are finished with UNAVAILABLE
 * ("server shutting down", after their queued messages); unary calls in
 * progress get up to grace_ms to answer, then everything left is
 * cancelled. Returns when every call is over and every close callback has
 * run. Idempotent; a server never started just returns. */
void rpc_server_shutdown(struct rpc_server *s, uint64_t grace_ms);

/* Shuts down (grace 0) if needed and frees. NULL is fine. */
void rpc_server_free(struct rpc_server *s);

/* Human-readable name of a status ("UNAVAILABLE"); never NULL. */
const char *rpc_status_name(enum rpc_status status);

#endif
