/* pbjson_fuzz.c - libFuzzer target for the proto3 JSON converter.
 *
 * Any input either fails to decode with a non-empty message, or decodes to a
 * Ruleset whose JSON (compact and pretty/proto-names) decodes again to the
 * same packed bytes and re-encodes to the same text. Anything else aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson.h"
#include "sluice/v1/policy.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	uint8_t *buf;

	*len = protobuf_c_message_get_packed_size(m);
	buf = malloc(*len ? *len : 1);
	if (!buf)
		abort();
	if (protobuf_c_message_pack(m, buf) != *len)
		abort();
	return buf;
}

static void check_round_trip(const ProtobufCMessage *m, unsigned flags)
{
	const ProtobufCMessageDescriptor *desc = m->descriptor;
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *back = NULL;
	size_t a_len, b_len;
	uint8_t *a, *b;
	char *json, *again;

	json = pbjson_encode(m, flags);
	if (!json) {
		fprintf(stderr, "encode of a decoded message failed\n");
		abort();
	}
	if (pbjson_decode(desc, json, strlen(json), err, &back) < 0) {
		fprintf(stderr, "own output does not decode: %s\n%s\n", err, json);
		abort();
	}
	a = pack(m, &a_len);
	b = pack(back, &b_len);
	if (a_len != b_len || memcmp(a, b, a_len) != 0) {
		fprintf(stderr, "round trip changed the message:\n%s\n", json);
		abort();
	}
	again = pbjson_encode(back, flags);
	if (!again || strcmp(json, again) != 0) {
		fprintf(stderr, "encoding is not stable:\n%s\n%s\n", json, again ? again : "(null)");
		abort();
	}
	free(again);
	free(a);
	free(b);
	free(json);
	protobuf_c_message_free_unpacked(back, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;
	int r;

	memset(err, 'x', sizeof(err));
	r = pbjson_decode(&sluice__v1__ruleset__descriptor, (const char *)data, size, err, &m);
	if (r < 0) {
		/* Every failure explains itself in a terminated string. */
		if (m || err[0] == '\0' || !memchr(err, '\0', sizeof(err)))
			abort();
		return 0;
	}
	check_round_trip(m, 0);
	check_round_trip(m, PBJSON_PRETTY | PBJSON_PROTO_NAMES);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}
