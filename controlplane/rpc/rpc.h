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

#endif
