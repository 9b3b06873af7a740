/* rpc_reflection.c - server reflection (grpc.reflection.v1 and v1alpha,
 * wire-identical, so both paths share the v1 protobuf-c code) answered
 * from the embedded FileDescriptorSet.
 *
 * Invariant: every FileDescriptorResponse carries the asked file and all
 * its transitive imports, so a client can build its pool from one answer.
 */
#include <errno.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "log.h"
#include "rpc_internal.h"

#define REFLECTION_MAX_EXTENSIONS 1024

/* Owned by the server; lives until rpc_server_free. */
struct rpc_reflection {
	struct rpc_server *srv;
	struct rpc_descset *set;
};

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_resp;

/* Collects the served services that the set describes. */
struct list_ctx {
	const struct rpc_descset *set;
	Grpc__Reflection__V1__ServiceResponse *items;
	Grpc__Reflection__V1__ServiceResponse **ptrs;
	size_t n;
	size_t cap;
};

static void list_one(void *arg, const char *service)
{
	struct list_ctx *lc = arg;
	Grpc__Reflection__V1__ServiceResponse init = GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;

	if (lc->n == lc->cap || !rpc_descset_is_service(lc->set, service))
		return;
	lc->items[lc->n] = init;
	lc->items[lc->n].name = (char *)service;
	lc->ptrs[lc->n] = &lc->items[lc->n];
	lc->n++;
}

static void set_error(refl_resp *resp, Grpc__Reflection__V1__ErrorResponse *er,
		      enum rpc_status code, char *msg)
{
	er->error_code = (int32_t)code;
	er->error_message = msg;
	resp->message_response_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
	resp->error_response = er;
}

/* Builds and sends the answer to one request. */
static void answer(struct rpc_reflection *r, struct rpc_stream *st, refl_req *req)
{
	Grpc__Reflection__V1__ServerReflectionResponse resp =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
	Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
	Grpc__Reflection__V1__FileDescriptorResponse fdr =
		GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
	Grpc__Reflection__V1__ListServiceResponse lsr =
		GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
	Grpc__Reflection__V1__ExtensionNumberResponse enr =
		GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
	size_t n_files = rpc_descset_n_files(r->set);
	ProtobufCBinaryData *blobs = NULL;
	struct list_ctx lc = { .set = r->set };
	int32_t *numbers = NULL;
	char msg[320];
	long file = -1;
	uint8_t *out = NULL;
	size_t len;
	int err;

	resp.valid_host = req->host;
	resp.original_request = req;
	switch (req->message_request_case) {
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
		lc.cap = rpc_descset_n_services(r->set);
		lc.items = calloc(lc.cap ? lc.cap : 1, sizeof(*lc.items));
		lc.ptrs = calloc(lc.cap ? lc.cap : 1, sizeof(*lc.ptrs));
		if (!lc.items || !lc.ptrs)
			goto out_nomem;
		rpc_server_each_service(r->srv, list_one, &lc);
		lsr.n_service = lc.n;
		lsr.service = lc.ptrs;
		resp.message_response_case =
			GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
		resp.list_services_response = &lsr;
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
		file = rpc_descset_find_file(r->set, req->file_by_filename);
		if (file < 0) {
			snprintf(msg, sizeof(msg), "file not found: %.256s", req->file_by_filename);
			set_error(&resp, &er, RPC_NOT_FOUND, msg);
		}
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
		file = rpc_descset_find_symbol(r->set, req->file_containing_symbol);
		if (file < 0) {
			snprintf(msg, sizeof(msg), "symbol not found: %.256s",
				 req->file_containing_symbol);
			set_error(&resp, &er, RPC_NOT_FOUND, msg);
		}
		break;
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
		Grpc__Reflection__V1__ExtensionRequest *x = req->file_containing_extension;

		if (x)
			file = rpc_descset_find_extension(r->set, x->containing_type,
							  x->extension_number);
		if (file < 0) {
			snprintf(msg, sizeof(msg), "extension not found: %.256s(%d)",
				 x ? x->containing_type : "", x ? x->extension_number : 0);
			set_error(&resp, &er, RPC_NOT_FOUND, msg);
		}
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
		const char *type = req->all_extension_numbers_of_type;

		if (rpc_descset_find_symbol(r->set, type) < 0) {
			snprintf(msg, sizeof(msg), "type not found: %.256s", type);
			set_error(&resp, &er, RPC_NOT_FOUND, msg);
			break;
		}
		numbers = calloc(REFLECTION_MAX_EXTENSIONS, sizeof(*numbers));
		if (!numbers)
			goto out_nomem;
		enr.base_type_name = (char *)(type[0] == '.' ? type + 1 : type);
		enr.n_extension_number = rpc_descset_extension_numbers(r->set, type, numbers,
								       REFLECTION_MAX_EXTENSIONS);
		enr.extension_number = numbers;
		resp.message_response_case =
			GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
		resp.all_extension_numbers_response = &enr;
		break;
	}
	default:
		set_error(&resp, &er, RPC_INVALID_ARGUMENT, (char *)"no request in the message");
		break;
	}
	if (file >= 0) {
		size_t *closure = calloc(n_files, sizeof(*closure));
		size_t n;

		blobs = calloc(n_files, sizeof(*blobs));
		if (!closure || !blobs) {
			free(closure);
			goto out_nomem;
		}
		n = rpc_descset_closure(r->set, (size_t)file, closure);
		for (size_t i = 0; i < n; i++) {
			const struct rpc_descfile *df = rpc_descset_file(r->set, closure[i]);

			blobs[i].data = (uint8_t *)df->raw;
			blobs[i].len = df->raw_len;
		}
		free(closure);
		fdr.n_file_descriptor_proto = n;
		fdr.file_descriptor_proto = blobs;
		resp.message_response_case =
			GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
		resp.file_descriptor_response = &fdr;
	}
	len = grpc__reflection__v1__server_reflection_response__get_packed_size(&resp);
	out = malloc(len ? len : 1);
	if (!out)
		goto out_nomem;
	grpc__reflection__v1__server_reflection_response__pack(&resp, out);
	err = rpc_stream_send(st, out, len);
	if (err == -EAGAIN)
		rpc_stream_finish(st, RPC_RESOURCE_EXHAUSTED, "reflection client not reading");
	goto out;
out_nomem:
	rpc_stream_finish(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
out:
	free(out);
	free(blobs);
	free(numbers);
	free(lc.items);
	free(lc.ptrs);
}

static void refl_recv(void *ctx, struct rpc_stream *st, const uint8_t *msg, size_t len)
{
	struct rpc_reflection *r = ctx;
	refl_req *req;

	if (!msg) {
		/* the client is done asking: done answering */
		rpc_stream_finish(st, RPC_OK, NULL);
		return;
	}
	req = grpc__reflection__v1__server_reflection_request__unpack(NULL, len, msg);
	if (!req) {
		rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "bad ServerReflectionRequest");
		return;
	}
	answer(r, st, req);
	grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
}

int rpc_reflection_new(struct rpc_server *s, const uint8_t *set, size_t len,
		       struct rpc_reflection **ret)
{
	struct rpc_reflection *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	r->srv = s;
	err = rpc_descset_new(set, len, &r->set);
	if (err) {
		free(r);
		return err;
	}
	*ret = r;
	return 0;
}

void rpc_reflection_free(struct rpc_reflection *r)
{
	if (!r)
		return;
	rpc_descset_free(r->set);
	free(r);
}

int rpc_server_enable_reflection(struct rpc_server *s, const uint8_t *set, size_t len)
{
	static const struct rpc_stream_ops ops = { .recv = refl_recv };
	struct rpc_reflection *r;
	int err;

	if (rpc_server_reflection(s))
		return -EEXIST;
	err = rpc_reflection_new(s, set, len, &r);
	if (err)
		return err;
	/* handed over first: the methods below point at it */
	rpc_server_set_builtin(s, NULL, r);
	err = rpc_server_add_stream(s, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
				    RPC_ROLE_NONE, RPC_STREAM_BIDI, &ops, r);
	if (!err)
		err = rpc_server_add_stream(s,
			"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
			RPC_ROLE_NONE, RPC_STREAM_BIDI, &ops, r);
	return err;
}
