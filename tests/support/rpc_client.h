/* rpc_client.h - a small client on the gRPC C core for tests and
 * benchmarks (the same library family as the server, but only its client
 * half): unary calls and step-by-step streams, with a bearer token and
 * TLS/mTLS credentials.
 */
#ifndef SLUICE_TESTS_SUPPORT_RPC_CLIENT_H
#define SLUICE_TESTS_SUPPORT_RPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

/* Owned by the test; lives until tc_free. */
struct tc {
	grpc_channel *ch;
	grpc_completion_queue *cq;
};

/* Plaintext when ca_file is NULL; client certificate when cert/key set.
 * NULL only when out of memory. */
struct tc *tc_new(int port, const char *ca_file, const char *cert_file, const char *key_file);
void tc_free(struct tc *c);

/* One finished call's outcome. Owned by the test: tc_result_done. */
struct tc_result {
	int status;
	char *details;
	uint8_t *data;          /* first response message, NULL without one */
	size_t len;
};
void tc_result_done(struct tc_result *r);

/* token NULL = no authorization metadata. deadline_ms 0 = 10 s. */
void tc_unary(struct tc *c, const char *path, const void *req, size_t len,
	      const char *token, uint64_t deadline_ms, struct tc_result *out);

/* A stream call. Owned by the test; lives until tc_stream_free. */
struct tc_stream {
	struct tc *c;
	grpc_call *call;
	grpc_metadata md;
	grpc_metadata_array init_md;
	bool md_recv;
};

/* Starts the call and sends the initial metadata (and req, if non-NULL,
 * followed by a half-close: a server stream's request). */
struct tc_stream *tc_stream_start(struct tc *c, const char *path, const void *req,
				  size_t len, const char *token, uint64_t deadline_ms);
int tc_stream_send(struct tc_stream *s, const void *msg, size_t len);
int tc_stream_half_close(struct tc_stream *s);
/* Next message: 1 = got one (*out malloc'ed), 0 = end of stream. */
int tc_stream_recv(struct tc_stream *s, uint8_t **out, size_t *len);
/* Final status (waits for it). */
void tc_stream_status(struct tc_stream *s, struct tc_result *out);
void tc_stream_cancel(struct tc_stream *s);
void tc_stream_free(struct tc_stream *s);

#endif
