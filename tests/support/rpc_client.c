/* rpc_client.c - the gRPC C-core client of rpc_client.h, for tests and
 * benchmarks. Every wait is bounded by the call's own deadline; a pluck
 * queue per channel keeps the steps of one test in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "fileio.h"
#include "rpc_client.h"

/* PEM files are small; anything larger is not one. */
#define PEM_MAX_BYTES (1u << 20)

static char *slurp(const char *path)
{
	char *buf = NULL;

	return fileio_read(path, PEM_MAX_BYTES, &buf, NULL) == 0 ? buf : NULL;
}

struct tc *tc_new(int port, const char *ca_file, const char *cert_file, const char *key_file)
{
	struct tc *c = calloc(1, sizeof(*c));
	grpc_channel_credentials *creds;
	char target[64];
	grpc_arg arg;
	grpc_channel_args args = { .num_args = 0, .args = &arg };

	if (!c)
		return NULL;
	grpc_init();
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	if (ca_file) {
		char *ca = slurp(ca_file), *cert = NULL, *key = NULL;
		grpc_ssl_pem_key_cert_pair pair;

		if (cert_file) {
			cert = slurp(cert_file);
			key = slurp(key_file);
			pair.cert_chain = cert;
			pair.private_key = key;
		}
		creds = grpc_ssl_credentials_create(ca, cert_file ? &pair : NULL, NULL, NULL);
		free(ca);
		free(cert);
		free(key);
		arg.type = GRPC_ARG_STRING;
		arg.key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		arg.value.string = (char *)"localhost";
		args.num_args = 1;
	} else {
		creds = grpc_insecure_credentials_create();
	}
	c->ch = grpc_channel_create(target, creds, &args);
	grpc_channel_credentials_release(creds);
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	return c;
}

void tc_free(struct tc *c)
{
	if (!c)
		return;
	grpc_channel_destroy(c->ch);
	grpc_completion_queue_shutdown(c->cq);
	while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME),
					   NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(c->cq);
	free(c);
	grpc_shutdown();
}

void tc_result_done(struct tc_result *r)
{
	free(r->details);
	free(r->data);
	memset(r, 0, sizeof(*r));
}

static gpr_timespec deadline_of(uint64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
			    gpr_time_from_millis((int64_t)(ms ? ms : 10000), GPR_TIMESPAN));
}

static uint8_t *bb_bytes(grpc_byte_buffer *bb, size_t *len)
{
	grpc_byte_buffer_reader r;
	grpc_slice s;
	uint8_t *out;

	grpc_byte_buffer_reader_init(&r, bb);
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	*len = GRPC_SLICE_LENGTH(s);
	out = malloc(*len + 1);
	memcpy(out, GRPC_SLICE_START_PTR(s), *len);
	out[*len] = 0;
	grpc_slice_unref(s);
	return out;
}

static char *slice_str(grpc_slice s)
{
	char *out = malloc(GRPC_SLICE_LENGTH(s) + 1);

	memcpy(out, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
	out[GRPC_SLICE_LENGTH(s)] = 0;
	return out;
}

static void wait_tag(struct tc *c, void *tag)
{
	grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
}

static grpc_call *new_call(struct tc *c, const char *path, uint64_t deadline_ms)
{
	grpc_slice method = grpc_slice_from_copied_string(path);
	grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
						   method, NULL, deadline_of(deadline_ms), NULL);

	grpc_slice_unref(method);
	return call;
}

static size_t token_md(grpc_metadata *md, const char *token, char *buf, size_t cap)
{
	if (!token)
		return 0;
	snprintf(buf, cap, "Bearer %s", token);
	memset(md, 0, sizeof(*md));
	md->key = grpc_slice_from_static_string("authorization");
	md->value = grpc_slice_from_copied_string(buf);
	return 1;
}

void tc_unary(struct tc *c, const char *path, const void *req, size_t len,
	      const char *token, uint64_t deadline_ms, struct tc_result *out)
{
	grpc_call *call = new_call(c, path, deadline_ms);
	grpc_slice sl = grpc_slice_from_copied_buffer(req, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_byte_buffer *resp = NULL;
	grpc_metadata_array init_md, trail_md;
	grpc_metadata md;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_slice_from_static_string("the call did not start");
	char tokbuf[600];
	grpc_op ops[6];
	size_t nmd = token_md(&md, token, tokbuf, sizeof(tokbuf));

	memset(out, 0, sizeof(*out));
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trail_md);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = nmd;
	ops[0].data.send_initial_metadata.metadata = nmd ? &md : NULL;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = bb;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &resp;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(call, ops, 6, call, NULL) == GRPC_CALL_OK)
		wait_tag(c, call);
	out->status = (int)status;
	out->details = slice_str(details);
	if (resp) {
		out->data = bb_bytes(resp, &out->len);
		grpc_byte_buffer_destroy(resp);
	}
	grpc_slice_unref(details);
	grpc_slice_unref(sl);
	if (nmd)
		grpc_slice_unref(md.value);
	grpc_byte_buffer_destroy(bb);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trail_md);
	grpc_call_unref(call);
}

struct tc_stream *tc_stream_start(struct tc *c, const char *path, const void *req,
				  size_t len, const char *token, uint64_t deadline_ms)
{
	struct tc_stream *s = calloc(1, sizeof(*s));
	char tokbuf[600];
	size_t nmd = token_md(&s->md, token, tokbuf, sizeof(tokbuf));
	grpc_op ops[3];
	size_t n = 0;
	grpc_slice sl;
	grpc_byte_buffer *bb = NULL;

	s->c = c;
	s->call = new_call(c, path, deadline_ms);
	grpc_metadata_array_init(&s->init_md);
	memset(ops, 0, sizeof(ops));
	ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].data.send_initial_metadata.count = nmd;
	ops[n++].data.send_initial_metadata.metadata = nmd ? &s->md : NULL;
	if (req) {
		sl = grpc_slice_from_copied_buffer(req, len);
		bb = grpc_raw_byte_buffer_create(&sl, 1);
		grpc_slice_unref(sl);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = bb;
		ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	}
	grpc_call_start_batch(s->call, ops, n, s, NULL);
	wait_tag(c, s);
	if (bb)
		grpc_byte_buffer_destroy(bb);
	if (nmd)
		grpc_slice_unref(s->md.value);
	return s;
}

int tc_stream_send(struct tc_stream *s, const void *msg, size_t len)
{
	grpc_slice sl = grpc_slice_from_copied_buffer(msg, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_op op;
	grpc_event ev;

	grpc_slice_unref(sl);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	grpc_call_start_batch(s->call, &op, 1, s, NULL);
	ev = grpc_completion_queue_pluck(s->c->cq, s, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	grpc_byte_buffer_destroy(bb);
	return ev.success ? 0 : -1;
}

int tc_stream_half_close(struct tc_stream *s)
{
	grpc_op op;
	grpc_event ev;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	grpc_call_start_batch(s->call, &op, 1, s, NULL);
	ev = grpc_completion_queue_pluck(s->c->cq, s, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ev.success ? 0 : -1;
}

/* The stream's initial metadata comes once, with whichever receive is
 * first: puts that op in ops[0] when still due. Returns the ops used. */
static size_t recv_initial_md_once(struct tc_stream *s, grpc_op *ops)
{
	if (s->md_recv)
		return 0;
	ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
	s->md_recv = true;
	return 1;
}

int tc_stream_recv(struct tc_stream *s, uint8_t **out, size_t *len)
{
	grpc_byte_buffer *bb = NULL;
	grpc_op ops[2];
	size_t n;

	memset(ops, 0, sizeof(ops));
	n = recv_initial_md_once(s, ops);
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n++].data.recv_message.recv_message = &bb;
	grpc_call_start_batch(s->call, ops, n, s, NULL);
	wait_tag(s->c, s);
	if (!bb)
		return 0;
	*out = bb_bytes(bb, len);
	grpc_byte_buffer_destroy(bb);
	return 1;
}

void tc_stream_status(struct tc_stream *s, struct tc_result *out)
{
	grpc_metadata_array trail_md;
	grpc_status_code status;
	grpc_slice details;
	grpc_op ops[2];
	size_t n;

	memset(out, 0, sizeof(*out));
	grpc_metadata_array_init(&trail_md);
	memset(ops, 0, sizeof(ops));
	n = recv_initial_md_once(s, ops);
	ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[n].data.recv_status_on_client.trailing_metadata = &trail_md;
	ops[n].data.recv_status_on_client.status = &status;
	ops[n++].data.recv_status_on_client.status_details = &details;
	grpc_call_start_batch(s->call, ops, n, s, NULL);
	wait_tag(s->c, s);
	out->status = (int)status;
	out->details = slice_str(details);
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&trail_md);
}

void tc_stream_cancel(struct tc_stream *s)
{
	grpc_call_cancel(s->call, NULL);
}

void tc_stream_free(struct tc_stream *s)
{
	if (!s)
		return;
	grpc_metadata_array_destroy(&s->init_md);
	grpc_call_unref(s->call);
	free(s);
}
