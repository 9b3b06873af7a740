/* pbjson_test.c - proto3 JSON mapping: every scalar type accepted and
 * rejected, names, oneofs, nulls, bytes, exact output, error paths, and a
 * seeded random round trip (decode(encode(m)) packs to the same bytes as m).
 * Scalar coverage uses a hand-written descriptor (AllTypes, below) because
 * the sluice schema has no float, bytes, sint or proto2 fields.
 */
#include <criterion/criterion.h>

#include "fixture.h"
#include <criterion/parameterized.h>

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pbjson.h"
#include "sluice/v1/admin.pb-c.h"
#include "sluice/v1/policy.pb-c.h"
#include "sluice/v1/sync.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

/* ---- AllTypes: one field of every protobuf-c type and label ------------ */

typedef struct AllTypes AllTypes;
typedef struct Req Req;

/* proto2-style message with REQUIRED fields. Owned by its parent AllTypes. */
struct Req {
	ProtobufCMessage base;
	uint32_t q_uint32;
	char *q_string;
};

/* Owned by the test (or parent); freed with protobuf_c_message_free_unpacked. */
struct AllTypes {
	ProtobufCMessage base;
	int32_t f_int32, f_sint32, f_sfixed32;
	int64_t f_int64, f_sint64, f_sfixed64;
	uint32_t f_uint32, f_fixed32;
	uint64_t f_uint64, f_fixed64;
	float f_float;
	double f_double;
	protobuf_c_boolean f_bool;
	int f_enum;
	char *f_string;
	ProtobufCBinaryData f_bytes;
	AllTypes *f_msg;
	size_t n_r_int32;
	int32_t *r_int32;
	size_t n_r_uint64;
	uint64_t *r_uint64;
	size_t n_r_float;
	float *r_float;
	size_t n_r_double;
	double *r_double;
	size_t n_r_bool;
	protobuf_c_boolean *r_bool;
	size_t n_r_enum;
	int *r_enum;
	size_t n_r_string;
	char **r_string;
	size_t n_r_bytes;
	ProtobufCBinaryData *r_bytes;
	size_t n_r_msg;
	AllTypes **r_msg;
	protobuf_c_boolean has_o_int32;
	int32_t o_int32;
	char *o_string;
	AllTypes *o_msg;
	Req *req;
	uint32_t choice_case;
	union {
		int32_t c_int32;
		char *c_string;
		ProtobufCBinaryData c_bytes;
		AllTypes *c_msg;
	};
};

static const ProtobufCMessageDescriptor all_types_descriptor;
static const ProtobufCMessageDescriptor req_descriptor;

#define FLD(name, id, label, type, qoff, off, desc, dflt, flags) \
	{ name, id, PROTOBUF_C_LABEL_##label, PROTOBUF_C_TYPE_##type, qoff, off, desc, dflt, \
	  flags, 0, NULL, NULL }
#define SING(name, id, type, desc, dflt) \
	FLD(#name, id, NONE, type, 0, offsetof(AllTypes, name), desc, dflt, 0)
#define REP(name, id, type, desc) \
	FLD(#name, id, REPEATED, type, offsetof(AllTypes, n_##name), offsetof(AllTypes, name), \
	    desc, NULL, 0)
#define ONEOF(name, id, type, desc, dflt) \
	FLD(#name, id, NONE, type, offsetof(AllTypes, choice_case), offsetof(AllTypes, name), \
	    desc, dflt, PROTOBUF_C_FIELD_FLAG_ONEOF)

static const ProtobufCFieldDescriptor all_types_fields[] = {
	SING(f_int32, 1, INT32, NULL, NULL),
	SING(f_sint32, 2, SINT32, NULL, NULL),
	SING(f_sfixed32, 3, SFIXED32, NULL, NULL),
	SING(f_int64, 4, INT64, NULL, NULL),
	SING(f_sint64, 5, SINT64, NULL, NULL),
	SING(f_sfixed64, 6, SFIXED64, NULL, NULL),
	SING(f_uint32, 7, UINT32, NULL, NULL),
	SING(f_fixed32, 8, FIXED32, NULL, NULL),
	SING(f_uint64, 9, UINT64, NULL, NULL),
	SING(f_fixed64, 10, FIXED64, NULL, NULL),
	SING(f_float, 11, FLOAT, NULL, NULL),
	SING(f_double, 12, DOUBLE, NULL, NULL),
	SING(f_bool, 13, BOOL, NULL, NULL),
	SING(f_enum, 14, ENUM, &sluice__v1__algorithm__descriptor, NULL),
	SING(f_string, 15, STRING, NULL, &protobuf_c_empty_string),
	SING(f_bytes, 16, BYTES, NULL, NULL),
	SING(f_msg, 17, MESSAGE, &all_types_descriptor, NULL),
	REP(r_int32, 18, INT32, NULL),
	REP(r_uint64, 19, UINT64, NULL),
	REP(r_float, 20, FLOAT, NULL),
	REP(r_double, 21, DOUBLE, NULL),
	REP(r_bool, 22, BOOL, NULL),
	REP(r_enum, 23, ENUM, &sluice__v1__algorithm__descriptor),
	REP(r_string, 24, STRING, NULL),
	REP(r_bytes, 25, BYTES, NULL),
	REP(r_msg, 26, MESSAGE, &all_types_descriptor),
	FLD("o_int32", 27, OPTIONAL, INT32, offsetof(AllTypes, has_o_int32),
	    offsetof(AllTypes, o_int32), NULL, NULL, 0),
	FLD("o_string", 28, OPTIONAL, STRING, 0, offsetof(AllTypes, o_string), NULL, NULL, 0),
	FLD("o_msg", 29, OPTIONAL, MESSAGE, 0, offsetof(AllTypes, o_msg), &all_types_descriptor,
	    NULL, 0),
	SING(req, 30, MESSAGE, &req_descriptor, NULL),
	ONEOF(c_int32, 31, INT32, NULL, NULL),
	ONEOF(c_string, 32, STRING, NULL, &protobuf_c_empty_string),
	ONEOF(c_bytes, 33, BYTES, NULL, NULL),
	ONEOF(c_msg, 34, MESSAGE, &all_types_descriptor, NULL),
};
#define N_ALL (sizeof(all_types_fields) / sizeof(all_types_fields[0]))

static const ProtobufCFieldDescriptor req_fields[] = {
	FLD("q_uint32", 1, REQUIRED, UINT32, 0, offsetof(Req, q_uint32), NULL, NULL, 0),
	FLD("q_string", 2, REQUIRED, STRING, 0, offsetof(Req, q_string), NULL, NULL, 0),
};

static unsigned all_types_by_name[N_ALL];
static const unsigned req_by_name[] = { 1, 0 };  /* q_string < q_uint32 */
static const ProtobufCIntRange all_types_ranges[] = { { 1, 0 }, { 0, N_ALL } };
static const ProtobufCIntRange req_ranges[] = { { 1, 0 }, { 0, 2 } };

static void all_types_init(ProtobufCMessage *m)
{
	static const AllTypes init = {
		.base = PROTOBUF_C_MESSAGE_INIT(&all_types_descriptor),
		.f_string = (char *)protobuf_c_empty_string,
	};

	memcpy(m, &init, sizeof(init));
}

static void req_init(ProtobufCMessage *m)
{
	static const Req init = { .base = PROTOBUF_C_MESSAGE_INIT(&req_descriptor) };

	memcpy(m, &init, sizeof(init));
}

static const ProtobufCMessageDescriptor all_types_descriptor = {
	PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "pbjson_test.AllTypes", "AllTypes", "AllTypes",
	"pbjson_test", sizeof(AllTypes), N_ALL, all_types_fields, all_types_by_name,
	1, all_types_ranges, (ProtobufCMessageInit)all_types_init, NULL, NULL, NULL,
};

static const ProtobufCMessageDescriptor req_descriptor = {
	PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "pbjson_test.Req", "Req", "Req", "pbjson_test",
	sizeof(Req), 2, req_fields, req_by_name, 1, req_ranges,
	(ProtobufCMessageInit)req_init, NULL, NULL, NULL,
};

static int by_name_cmp(const void *a, const void *b)
{
	return strcmp(all_types_fields[*(const unsigned *)a].name,
		      all_types_fields[*(const unsigned *)b].name);
}

__attribute__((constructor))
static void all_types_sort_names(void)
{
	for (unsigned i = 0; i < N_ALL; i++)
		all_types_by_name[i] = i;
	qsort(all_types_by_name, N_ALL, sizeof(unsigned), by_name_cmp);
}

/* ---- helpers ------------------------------------------------------------ */

static ProtobufCMessage *decode_ok(const ProtobufCMessageDescriptor *desc, const char *json)
{
	char err[PBJSON_ERR_LEN] = "untouched";
	ProtobufCMessage *m = NULL;
	int r = pbjson_decode(desc, json, strlen(json), err, &m);

	cr_assert_eq(r, 0, "decode of %s failed: %d %s", json, r, err);
	cr_assert_not_null(m);
	cr_assert_eq(m->descriptor, desc);
	return m;
}

static void decode_fails(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
			 const char *want)
{
	char err[PBJSON_ERR_LEN] = "";
	ProtobufCMessage *m = (ProtobufCMessage *)0x1;
	int r;

	if (len == SIZE_MAX)
		len = strlen(json);
	r = pbjson_decode(desc, json, len, err, &m);

	cr_assert_eq(r, -EBADMSG, "decode of %s returned %d (%s), want -EBADMSG", json, r, err);
	cr_assert_eq(m, (ProtobufCMessage *)0x1, "ret written on failure");
	cr_assert_not_null(strstr(err, want), "decode of %s: error '%s' lacks '%s'", json, err, want);
}

static char *encode_ok(const ProtobufCMessage *m, unsigned flags)
{
	char *s = pbjson_encode(m, flags);

	cr_assert_not_null(s, "encode failed: %s", strerror(errno));
	return s;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	uint8_t *buf;

	*len = protobuf_c_message_get_packed_size(m);
	buf = malloc(*len ? *len : 1);
	cr_assert_not_null(buf);
	cr_assert_eq(protobuf_c_message_pack(m, buf), *len);
	return buf;
}

/* decode(encode(m)) packs to the same bytes as m. */
static void assert_round_trip(const ProtobufCMessage *m, unsigned flags)
{
	size_t a_len, b_len;
	uint8_t *a = pack(m, &a_len), *b;
	char *json = encode_ok(m, flags);
	ProtobufCMessage *back = decode_ok(m->descriptor, json);

	b = pack(back, &b_len);
	cr_assert_eq(a_len, b_len, "packed length differs after round trip via %s", json);
	cr_assert_eq(memcmp(a, b, a_len), 0, "packed bytes differ after round trip via %s", json);
	protobuf_c_message_free_unpacked(back, NULL);
	free(json);
	free(a);
	free(b);
}

/* Decode then re-encode compactly: shows exactly what was understood. */
static char *reencode(const ProtobufCMessageDescriptor *desc, const char *json, unsigned flags)
{
	ProtobufCMessage *m = decode_ok(desc, json);
	char *out = encode_ok(m, flags);

	protobuf_c_message_free_unpacked(m, NULL);
	return out;
}

/* ---- scalar inputs ------------------------------------------------------ */

/* Params are copied by value into Criterion's per-test process: arrays, not
 * pointers. */
struct accept_case {
	char in[160];
	char out[160];  /* compact re-encoding */
};

static struct accept_case accept_cases[] = {
	{ "{\"fInt32\": -2147483648}", "{\"fInt32\":-2147483648}" },
	{ "{\"fInt32\": 2147483647}", "{\"fInt32\":2147483647}" },
	{ "{\"fInt32\": \"-17\"}", "{\"fInt32\":-17}" },
	{ "{\"fInt32\": 1.0}", "{\"fInt32\":1}" },
	{ "{\"fInt32\": 1e3}", "{\"fInt32\":1000}" },
	{ "{\"fInt32\": -0}", "{}" },
	{ "{\"fSint32\": -5}", "{\"fSint32\":-5}" },
	{ "{\"fSfixed32\": \"-2147483648\"}", "{\"fSfixed32\":-2147483648}" },
	{ "{\"fInt64\": \"-9223372036854775808\"}", "{\"fInt64\":\"-9223372036854775808\"}" },
	{ "{\"fInt64\": 9223372036854775807}", "{\"fInt64\":\"9223372036854775807\"}" },
	{ "{\"fInt64\": -9007199254740993}", "{\"fInt64\":\"-9007199254740993\"}" },
	{ "{\"fSint64\": \"-1\"}", "{\"fSint64\":\"-1\"}" },
	{ "{\"fSfixed64\": \"42\"}", "{\"fSfixed64\":\"42\"}" },
	{ "{\"fUint32\": 4294967295}", "{\"fUint32\":4294967295}" },
	{ "{\"fUint32\": \"4294967295\"}", "{\"fUint32\":4294967295}" },
	{ "{\"fFixed32\": 7}", "{\"fFixed32\":7}" },
	{ "{\"fUint64\": \"18446744073709551615\"}", "{\"fUint64\":\"18446744073709551615\"}" },
	{ "{\"fUint64\": 18446744073709551615}", "{\"fUint64\":\"18446744073709551615\"}" },
	{ "{\"fUint64\": \"007\"}", "{\"fUint64\":\"7\"}" },
	{ "{\"fFixed64\": 9223372036854775808}", "{\"fFixed64\":\"9223372036854775808\"}" },
	{ "{\"fFloat\": 1.5}", "{\"fFloat\":1.5}" },
	{ "{\"fFloat\": 0.1}", "{\"fFloat\":0.1}" },
	{ "{\"fFloat\": \"-2.5e3\"}", "{\"fFloat\":-2500}" },
	{ "{\"fFloat\": \"NaN\"}", "{\"fFloat\":\"NaN\"}" },
	{ "{\"fFloat\": 3.4028234663852886e38}", "{\"fFloat\":3.4028235e+38}" },
	{ "{\"fFloat\": 1e-50}", "{}" },
	{ "{\"fDouble\": 0.1}", "{\"fDouble\":0.1}" },
	{ "{\"fDouble\": 5}", "{\"fDouble\":5}" },
	{ "{\"fDouble\": \"Infinity\"}", "{\"fDouble\":\"Infinity\"}" },
	{ "{\"fDouble\": \"-Infinity\"}", "{\"fDouble\":\"-Infinity\"}" },
	{ "{\"fDouble\": 1.7976931348623157e308}", "{\"fDouble\":1.7976931348623157e+308}" },
	{ "{\"fDouble\": 100000000000000000000000000000}", "{\"fDouble\":1e+29}" },
	{ "{\"fDouble\": -0.0}", "{}" },
	{ "{\"fDouble\": 0.00000000000000000000000000000000000000000000000000000000000000000000000000125}",
	  "{\"fDouble\":1.25e-75}" },
	{ "{\"fInt32\": -1e3}", "{\"fInt32\":-1000}" },
	{ "{\"fInt64\": -9.2e18}", "{\"fInt64\":\"-9200000000000000000\"}" },
	{ "{\"fBool\": true}", "{\"fBool\":true}" },
	{ "{\"fBool\": false}", "{}" },
	{ "{\"fEnum\": \"SLIDING_WINDOW\"}", "{\"fEnum\":\"SLIDING_WINDOW\"}" },
	{ "{\"fEnum\": 2}", "{\"fEnum\":\"LEAKY_BUCKET\"}" },
	{ "{\"fEnum\": 99}", "{\"fEnum\":99}" },
	{ "{\"fEnum\": -3}", "{\"fEnum\":-3}" },
	{ "{\"fString\": \"a\\\"b\\\\c\\n\\u0001\\u00e9\\ud83d\\ude00/\"}",
	  "{\"fString\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xf0\x9f\x98\x80/\"}" },
	{ "{\"fString\": \"\"}", "{}" },
	/* json-c turns a lone surrogate into U+FFFD. */
	{ "{\"fString\": \"\\ud800\"}", "{\"fString\":\"\xef\xbf\xbd\"}" },
	{ "{\"fBytes\": \"aGVsbG8=\"}", "{\"fBytes\":\"aGVsbG8=\"}" },
	{ "{\"fBytes\": \"aGVsbG8\"}", "{\"fBytes\":\"aGVsbG8=\"}" },
	{ "{\"fBytes\": \"-_8=\"}", "{\"fBytes\":\"+/8=\"}" },
	{ "{\"fBytes\": \"\"}", "{}" },
	{ "{\"fMsg\": {}}", "{\"fMsg\":{}}" },
	{ "{\"fMsg\": {\"fMsg\": {\"fInt32\": 1}}}", "{\"fMsg\":{\"fMsg\":{\"fInt32\":1}}}" },
	{ "{\"oInt32\": 0}", "{\"oInt32\":0}" },
	{ "{\"oString\": \"\"}", "{\"oString\":\"\"}" },
	{ "{\"oMsg\": {}}", "{\"oMsg\":{}}" },
	{ "{\"cInt32\": 0}", "{\"cInt32\":0}" },
	{ "{\"cString\": \"\"}", "{\"cString\":\"\"}" },
	{ "{\"cBytes\": \"\"}", "{\"cBytes\":\"\"}" },
	{ "{\"cMsg\": {}}", "{\"cMsg\":{}}" },
	{ "{\"cInt32\": null, \"cString\": \"x\"}", "{\"cString\":\"x\"}" },
	{ "{\"rInt32\": [1, \"-2\", 3]}", "{\"rInt32\":[1,-2,3]}" },
	{ "{\"rUint64\": [\"1\", 2]}", "{\"rUint64\":[\"1\",\"2\"]}" },
	{ "{\"rFloat\": [0, -0.0, \"Infinity\"]}", "{\"rFloat\":[0,-0,\"Infinity\"]}" },
	{ "{\"rDouble\": [0.5]}", "{\"rDouble\":[0.5]}" },
	{ "{\"rBool\": [false, true]}", "{\"rBool\":[false,true]}" },
	{ "{\"rEnum\": [\"TOKEN_BUCKET\", 0, 7]}", "{\"rEnum\":[\"TOKEN_BUCKET\",\"ALGORITHM_UNSPECIFIED\",7]}" },
	{ "{\"rString\": [\"\", \"x\"]}", "{\"rString\":[\"\",\"x\"]}" },
	{ "{\"rBytes\": [\"\", \"AA==\"]}", "{\"rBytes\":[\"\",\"AA==\"]}" },
	{ "{\"rMsg\": [{}, {\"fBool\": true}]}", "{\"rMsg\":[{},{\"fBool\":true}]}" },
	{ "{\"rMsg\": []}", "{}" },
	{ "{\"rMsg\": null, \"fInt32\": null, \"fMsg\": null, \"fString\": null}", "{}" },
	{ "{\"req\": {\"qUint32\": 0, \"qString\": \"\"}}", "{\"req\":{\"qUint32\":0,\"qString\":\"\"}}" },
	{ " \t\r\n{ \"f_int32\" : 5 } \n", "{\"fInt32\":5}" },
};

ParameterizedTestParameters(pbjson_scalars, accepted)
{
	return cr_make_param_array(struct accept_case, accept_cases,
				   sizeof(accept_cases) / sizeof(accept_cases[0]));
}

ParameterizedTest(struct accept_case *tc, pbjson_scalars, accepted)
{
	char *out = reencode(&all_types_descriptor, tc->in, 0);

	cr_assert_str_eq(out, tc->out, "input %s gave %s", tc->in, out);
	free(out);
}

struct reject_case {
	char in[160];
	char err[160];  /* substring of the error */
};

static struct reject_case reject_cases[] = {
	{ "{\"fInt32\": 2147483648}", "fInt32: 2147483648 is out of range for int32" },
	{ "{\"fInt32\": -2147483649}", "out of range for int32" },
	{ "{\"fInt32\": 1.5}", "fInt32: expected a signed 32-bit integer, got 1.5" },
	{ "{\"fInt32\": \"1.0\"}", "expected a signed 32-bit integer, got \"1.0\"" },
	{ "{\"fInt32\": \" 1\"}", "expected a signed 32-bit integer" },
	{ "{\"fInt32\": \"+1\"}", "expected a signed 32-bit integer" },
	{ "{\"fInt32\": \"\"}", "expected a signed 32-bit integer" },
	{ "{\"fInt32\": true}", "expected a signed 32-bit integer, got true" },
	{ "{\"fInt32\": {}}", "expected a signed 32-bit integer, got an object" },
	{ "{\"fInt32\": [1]}", "expected a signed 32-bit integer, got an array" },
	{ "{\"fSint32\": 1e10}", "out of range for sint32" },
	{ "{\"fSfixed32\": \"2147483648\"}", "out of range for sfixed32" },
	{ "{\"fInt64\": 9223372036854775808}", "9223372036854775808 is out of range for int64" },
	{ "{\"fInt64\": \"-9223372036854775809\"}", "out of range for int64" },
	{ "{\"fInt64\": 1e19}", "out of range for int64" },
	{ "{\"fSint64\": \"abc\"}", "fSint64: expected a signed 64-bit integer, got \"abc\"" },
	{ "{\"fSfixed64\": \"0x10\"}", "expected a signed 64-bit integer" },
	{ "{\"fUint32\": 4294967296}", "4294967296 is out of range for uint32" },
	{ "{\"fUint32\": \"x\"}", "fUint32: expected an unsigned 32-bit integer, got \"x\"" },
	{ "{\"fUint32\": -1e0}", "-1e0 is out of range for uint32" },
	{ "{\"fInt64\": -1e19}", "-1e19 is out of range for int64" },
	{ "{\"fInt64\": 1e400}", "1e400 is out of range for int64" },
	{ "{\"fDouble\": \"1e400\"}", "\"1e400\" is out of range for double" },
	/* Quoted text is cut at 40 bytes, on a character boundary. */
	{ "{\"fBool\": \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}",
	  "got \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9..." },
	{ "{\"fUint32\": -1}", "-1 is out of range for uint32" },
	{ "{\"fUint32\": \"-1\"}", "out of range for uint32" },
	{ "{\"fFixed32\": 4294967296.0}", "out of range for fixed32" },
	{ "{\"fUint64\": 18446744073709551616}", "18446744073709551616 is out of range for uint64" },
	{ "{\"fUint64\": \"18446744073709551616\"}", "out of range for uint64" },
	{ "{\"fUint64\": \"99999999999999999999999\"}", "out of range for uint64" },
	{ "{\"fUint64\": -1}", "out of range for uint64" },
	{ "{\"fUint64\": 1.5e0}", "expected an unsigned 64-bit integer, got 1.5e0" },
	{ "{\"fUint64\": \"abc\"}", "fUint64: expected an unsigned 64-bit integer, got \"abc\"" },
	{ "{\"fFixed64\": 2e19}", "out of range for fixed64" },
	{ "{\"fFloat\": 1e39}", "1e39 is out of range for float" },
	{ "{\"fFloat\": \"nan\"}", "expected a number, got \"nan\"" },
	{ "{\"fFloat\": \"0x1p3\"}", "expected a number" },
	{ "{\"fFloat\": true}", "expected a number, got true" },
	{ "{\"fDouble\": 1e400}", "1e400 is out of range for double" },
	{ "{\"fDouble\": \"inf\"}", "expected a number" },
	{ "{\"fDouble\": \"1.5 \"}", "expected a number" },
	{ "{\"fBool\": \"true\"}", "fBool: expected true or false, got \"true\"" },
	{ "{\"fBool\": 1}", "expected true or false, got 1" },
	{ "{\"fEnum\": \"TOKEN_BUCKT\"}", "fEnum: unknown enum value 'TOKEN_BUCKT' for sluice.v1.Algorithm" },
	{ "{\"fEnum\": \"token_bucket\"}", "unknown enum value 'token_bucket'" },
	{ "{\"fEnum\": 2147483648}", "out of range for enum" },
	{ "{\"fEnum\": 1.5}", "expected an enum name or number" },
	{ "{\"fEnum\": true}", "expected an enum name or number, got true" },
	{ "{\"fString\": 5}", "fString: expected a string, got 5" },
	{ "{\"fString\": \"a\\u0000b\"}", "fString: strings may not contain U+0000" },
	{ "{\"fBytes\": \"a\"}", "fBytes: expected a base64 string, got \"a\"" },
	{ "{\"fBytes\": \"aGVsbG8==\"}", "expected a base64 string" },
	{ "{\"fBytes\": \"aG Vs\"}", "expected a base64 string" },
	{ "{\"fBytes\": \"QQ=\"}", "expected a base64 string" },
	{ "{\"fBytes\": 1}", "expected a base64 string, got 1" },
	{ "{\"fMsg\": 1}", "fMsg: expected a JSON object, got 1" },
	{ "{\"fMsg\": []}", "fMsg: expected a JSON object, got an array" },
	{ "{\"fMsg\": {\"fMsg\": {\"nope\": 1}}}", "fMsg.fMsg.nope: unknown field" },
	{ "{\"rInt32\": 1}", "rInt32: expected a JSON array, got 1" },
	{ "{\"rInt32\": [1, null]}", "rInt32[1]: expected a signed 32-bit integer, got null" },
	{ "{\"rInt32\": [1, 2, 3000000000]}", "rInt32[2]: 3000000000 is out of range for int32" },
	{ "{\"rMsg\": [{}, {\"rMsg\": [{\"fBool\": 0}]}]}", "rMsg[1].rMsg[0].fBool: expected true or false, got 0" },
	{ "{\"rString\": [\"a\", 1]}", "rString[1]: expected a string, got 1" },
	{ "{\"rEnum\": [\"BOGUS\"]}", "rEnum[0]: unknown enum value 'BOGUS'" },
	{ "{\"cInt32\": 1, \"cString\": \"x\"}", "cString: 'cInt32' and 'cString' are members of the same oneof" },
	{ "{\"c_msg\": {}, \"cBytes\": \"\"}", "'c_msg' and 'cBytes' are members of the same oneof" },
	{ "{\"fInt32\": 1, \"f_int32\": 2}", "f_int32: field already given as 'fInt32'" },
	{ "{\"fInt32\": 1, \"fInt32\": 2}", "<root>: duplicate key 'fInt32'" },
	{ "{\"fMsg\": {\"fInt32\": 1, \"f\\u0049nt32\": 2}}", "fMsg: duplicate key 'fInt32'" },
	{ "{\"fInt32\": null, \"f_int32\": 2}", "field already given as 'fInt32'" },
	{ "{\"FInt32\": 1}", "FInt32: unknown field" },
	{ "{\"f_int32\\u0000x\": 1}", "invalid JSON at byte 9: object keys may not contain U+0000" },
	{ "{\"fint32\": 1}", "fint32: unknown field" },
	{ "{\"req\": {\"qUint32\": 1}}", "req: missing required field 'q_string'" },
	{ "{\"req\": {\"qUint32\": 1, \"qString\": null}}", "req: missing required field 'q_string'" },
	{ "[]", "<root>: expected a JSON object, got an array" },
	{ "\"x\"", "<root>: expected a JSON object, got \"x\"" },
	{ "5", "<root>: expected a JSON object, got 5" },
	{ "null", "<root>: expected a JSON object, got null" },
	{ "", "invalid JSON at byte 0: unexpected end of data" },
	{ "{\"fInt32\": 1", "invalid JSON at byte 12" },
	{ "{\"fInt32\": 1} x", "invalid JSON at byte 14" },
	{ "{} {}", "invalid JSON at byte 3" },
	{ "{\"fInt32\": 1,}", "invalid JSON at byte 13" },
	{ "{'fInt32': 1}", "invalid JSON at byte 1: expected a double-quoted key" },
	{ "{\"fString\": 'x'}", "invalid JSON at byte 12: unexpected character" },
	{ "{\"fDouble\": NaN}", "invalid JSON at byte 12: unexpected character" },
	{ "{\"fDouble\": -Infinity}", "invalid JSON at byte 13: bad number" },
	{ "{\"fString\": \"a\tb\"}", "invalid JSON at byte 14: control character" },
	{ "{\"fInt32\": 01}", "invalid JSON at byte" },
	{ "/* c */ {}", "invalid JSON at byte 0" },
	{ "{\"fString\": \"\xff\"}", "invalid JSON at byte" },
	{ "\f{}", "invalid JSON at byte 0: unexpected character" },
};

ParameterizedTestParameters(pbjson_scalars, rejected)
{
	return cr_make_param_array(struct reject_case, reject_cases,
				   sizeof(reject_cases) / sizeof(reject_cases[0]));
}

ParameterizedTest(struct reject_case *tc, pbjson_scalars, rejected)
{
	decode_fails(&all_types_descriptor, tc->in, strlen(tc->in), tc->err);
}

Test(pbjson_scalars, stores_exact_values_in_the_struct)
{
	AllTypes *m = (AllTypes *)decode_ok(&all_types_descriptor,
		"{\"fInt32\":-7,\"fSint32\":\"-8\",\"fSfixed32\":9,\"fInt64\":\"-9223372036854775808\","
		"\"fSint64\":-5,\"fSfixed64\":\"6\",\"fUint32\":4294967295,\"fFixed32\":\"3\","
		"\"fUint64\":\"18446744073709551615\",\"fFixed64\":12,\"fFloat\":0.25,"
		"\"fDouble\":-1e-300,\"fBool\":true,\"fEnum\":\"LEAKY_BUCKET\",\"fString\":\"h\\u00e9\","
		"\"fBytes\":\"AAEC/w==\",\"oInt32\":0,\"cString\":\"\"}");

	cr_assert_eq(m->f_int32, -7);
	cr_assert_eq(m->f_sint32, -8);
	cr_assert_eq(m->f_sfixed32, 9);
	cr_assert_eq(m->f_int64, INT64_MIN);
	cr_assert_eq(m->f_sint64, -5);
	cr_assert_eq(m->f_sfixed64, 6);
	cr_assert_eq(m->f_uint32, UINT32_MAX);
	cr_assert_eq(m->f_fixed32, 3);
	cr_assert_eq(m->f_uint64, UINT64_MAX);
	cr_assert_eq(m->f_fixed64, 12);
	cr_assert_eq(m->f_float, 0.25f);
	cr_assert_eq(m->f_double, -1e-300);
	cr_assert_eq(m->f_bool, 1);
	cr_assert_eq(m->f_enum, SLUICE__V1__ALGORITHM__LEAKY_BUCKET);
	cr_assert_str_eq(m->f_string, "h\xc3\xa9");
	cr_assert_eq(m->f_bytes.len, 4);
	cr_assert_eq(memcmp(m->f_bytes.data, "\x00\x01\x02\xff", 4), 0);
	cr_assert_eq(m->has_o_int32, 1);
	cr_assert_eq(m->o_int32, 0);
	cr_assert_eq(m->choice_case, 32);
	cr_assert_str_eq(m->c_string, "");
	protobuf_c_message_free_unpacked(&m->base, NULL);
}

Test(pbjson_scalars, null_means_default)
{
	AllTypes *m = (AllTypes *)decode_ok(&all_types_descriptor,
		"{\"fInt32\":null,\"fString\":null,\"fMsg\":null,\"rString\":null,"
		"\"oInt32\":null,\"cMsg\":null,\"fEnum\":null}");

	cr_assert_eq(m->f_int32, 0);
	cr_assert_str_eq(m->f_string, "");
	cr_assert_null(m->f_msg);
	cr_assert_eq(m->n_r_string, 0);
	cr_assert_null(m->r_string);
	cr_assert_eq(m->has_o_int32, 0);
	cr_assert_eq(m->choice_case, 0);
	cr_assert_eq(m->f_enum, 0);
	protobuf_c_message_free_unpacked(&m->base, NULL);
}

Test(pbjson_scalars, float_special_values_are_exact)
{
	AllTypes *m = (AllTypes *)decode_ok(&all_types_descriptor,
		"{\"rFloat\":[\"NaN\",\"-Infinity\",1.17549435e-38,1e-45],"
		"\"rDouble\":[\"NaN\",\"Infinity\",4.9e-324,-0.0]}");

	cr_assert_eq(m->n_r_float, 4);
	cr_assert(isnan(m->r_float[0]));
	cr_assert(isinf(m->r_float[1]) && m->r_float[1] < 0);
	cr_assert_eq(m->r_float[2], 1.17549435e-38f);
	cr_assert_eq(m->r_float[3], 1e-45f);
	cr_assert_eq(m->n_r_double, 4);
	cr_assert(isnan(m->r_double[0]));
	cr_assert(isinf(m->r_double[1]) && m->r_double[1] > 0);
	cr_assert_eq(m->r_double[2], 4.9e-324);
	cr_assert(m->r_double[3] == 0 && signbit(m->r_double[3]));
	assert_round_trip(&m->base, 0);
	protobuf_c_message_free_unpacked(&m->base, NULL);
}

/* ---- enums, names, paths on the real schema ----------------------------- */

Test(pbjson_enum, accepts_name_and_number)
{
	Sluice__V1__RateLimit *by_name = (Sluice__V1__RateLimit *)decode_ok(
		&sluice__v1__rate_limit__descriptor,
		"{\"algorithm\":\"SLIDING_WINDOW\",\"unit\":\"MINUTE\",\"enforce\":\"BOTH\"}");
	Sluice__V1__RateLimit *by_num = (Sluice__V1__RateLimit *)decode_ok(
		&sluice__v1__rate_limit__descriptor, "{\"algorithm\":3,\"unit\":2,\"enforce\":3}");

	cr_assert_eq(by_name->algorithm, SLUICE__V1__ALGORITHM__SLIDING_WINDOW);
	cr_assert_eq(by_name->unit, SLUICE__V1__RATE_UNIT__MINUTE);
	cr_assert_eq(by_name->enforce, SLUICE__V1__ENFORCEMENT__BOTH);
	cr_assert_eq(by_num->algorithm, by_name->algorithm);
	cr_assert_eq(by_num->unit, by_name->unit);
	cr_assert_eq(by_num->enforce, by_name->enforce);
	protobuf_c_message_free_unpacked(&by_name->base, NULL);
	protobuf_c_message_free_unpacked(&by_num->base, NULL);
}

Test(pbjson_enum, writes_names_and_unknown_values_as_numbers)
{
	Sluice__V1__RateLimit rl = SLUICE__V1__RATE_LIMIT__INIT;
	char *s;

	rl.algorithm = SLUICE__V1__ALGORITHM__TOKEN_BUCKET;
	rl.action = (Sluice__V1__Action)42;
	s = encode_ok(&rl.base, 0);
	cr_assert_str_eq(s, "{\"algorithm\":\"TOKEN_BUCKET\",\"action\":42}");
	free(s);
}

Test(pbjson_paths, unknown_field_has_full_path)
{
	const char *j = "{\"name\":\"rs\",\"resources\":[{\"client\":{\"id\":\"c\",\"bogus\":1}}]}";
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;

	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, j, strlen(j), err, &m),
		     -EBADMSG);
	cr_assert_str_eq(err, "resources[0].client.bogus: unknown field");
	cr_assert_null(m);
}

Test(pbjson_paths, enum_error_in_repeated_message)
{
	const char *j = "{\"resources\":[{\"rateLimit\":{\"id\":\"a\"}},"
			"{\"rate_limit\":{\"algorithm\":\"TOKEN_BUCKT\"}}]}";
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;

	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, j, strlen(j), err, &m),
		     -EBADMSG);
	cr_assert_str_eq(err, "resources[1].rate_limit.algorithm: unknown enum value "
			      "'TOKEN_BUCKT' for sluice.v1.Algorithm");
}

enum path_msg { RULESET, DELTA, NODE_REPORT, APPLY_CHANGES };

static const ProtobufCMessageDescriptor *const path_descs[] = {
	[RULESET] = &sluice__v1__ruleset__descriptor,
	[DELTA] = &sluice__v1__delta__descriptor,
	[NODE_REPORT] = &sluice__v1__node_report__descriptor,
	[APPLY_CHANGES] = &sluice__v1__apply_changes_request__descriptor,
};

struct path_case {
	enum path_msg msg;
	char in[160];
	char err[160];  /* the whole message */
};

static struct path_case path_cases[] = {
	{ DELTA,
	  "{\"upserts\":[{\"client\":{\"keys\":[\"k\"]}},{\"client\":{\"keys\":[7]}}]}",
	  "upserts[1].client.keys[0]: expected a string, got 7" },
	{ RULESET,
	  "{\"resources\":[{},{},{\"route\":{\"maxBodyBytes\":\"abc\"}}]}",
	  "resources[2].route.maxBodyBytes: expected an unsigned 64-bit integer, got \"abc\"" },
	{ RULESET,
	  "{\"resources\":[{\"route\":{\"max_body_bytes\":-1}}]}",
	  "resources[0].route.max_body_bytes: -1 is out of range for uint64" },
	{ RULESET, "{\"version\":\"1x\"}",
	  "version: expected an unsigned 64-bit integer, got \"1x\"" },
	{ NODE_REPORT,
	  "{\"routes\":[{\"statuses\":[{\"status\":200},{\"status\":4294967296}]}]}",
	  "routes[0].statuses[1].status: 4294967296 is out of range for uint32" },
	{ NODE_REPORT, "{\"timeUnixMs\":\"9223372036854775808\"}",
	  "timeUnixMs: \"9223372036854775808\" is out of range for int64" },
	{ NODE_REPORT, "{\"latency\":{\"boundsUs\":[1,\"x\"]}}",
	  "latency.boundsUs[1]: expected an unsigned 64-bit integer, got \"x\"" },
	{ APPLY_CHANGES, "{\"dryRun\":\"yes\"}",
	  "dryRun: expected true or false, got \"yes\"" },
	{ APPLY_CHANGES,
	  "{\"removes\":[{\"kind\":\"ROUTE\",\"id\":\"a\"},{\"kind\":\"ROUT\"}]}",
	  "removes[1].kind: unknown enum value 'ROUT' for sluice.v1.Kind" },
	{ RULESET,
	  "{\"resources\":[{\"client\":{\"id\":\"a\"},\"route\":{\"id\":\"b\"}}]}",
	  "resources[0].route: 'client' and 'route' are members of the same oneof; set at most one" },
	{ RULESET, "{\"resources\":{}}",
	  "resources: expected a JSON array, got an object" },
	{ RULESET, "{\"resources\":[[]]}",
	  "resources[0]: expected a JSON object, got an array" },
	{ RULESET, "{\"name\":\"a\",\"name\":\"b\"}",
	  "<root>: duplicate key 'name'" },
};

ParameterizedTestParameters(pbjson_paths, table)
{
	return cr_make_param_array(struct path_case, path_cases,
				   sizeof(path_cases) / sizeof(path_cases[0]));
}

ParameterizedTest(struct path_case *tc, pbjson_paths, table)
{
	char err[PBJSON_ERR_LEN] = "";
	ProtobufCMessage *m = NULL;

	cr_assert_eq(pbjson_decode(path_descs[tc->msg], tc->in, strlen(tc->in), err, &m), -EBADMSG,
		     "input %s", tc->in);
	cr_assert_str_eq(err, tc->err, "input %s", tc->in);
	cr_assert_null(m);
}

Test(pbjson_paths, long_paths_are_cut_not_overflowed)
{
	char key[2000];
	char json[2100];
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;

	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	snprintf(json, sizeof(json), "{\"%s\":1}", key);
	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, json, strlen(json), err, &m),
		     -EBADMSG);
	cr_assert_lt(strlen(err), (size_t)PBJSON_ERR_LEN);
	cr_assert_eq(strncmp(err, "kkkk", 4), 0, "%s", err);
}

Test(pbjson_paths, err_may_be_null)
{
	ProtobufCMessage *m = NULL;

	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, "{\"x\":1}", 7, NULL, &m),
		     -EBADMSG);
	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, "{", 1, NULL, &m), -EBADMSG);
	cr_assert_null(m);
}

Test(pbjson_names, writes_camel_case_by_default_and_proto_names_on_request)
{
	Sluice__V1__Settings s = SLUICE__V1__SETTINGS__INIT;
	char *camel, *proto;

	s.client_id_header = "X-Client";
	s.max_body_bytes = 10;
	s.request_timeout_ms = 60000;
	camel = encode_ok(&s.base, 0);
	proto = encode_ok(&s.base, PBJSON_PROTO_NAMES);
	cr_assert_str_eq(camel, "{\"clientIdHeader\":\"X-Client\",\"maxBodyBytes\":\"10\","
				"\"requestTimeoutMs\":60000}");
	cr_assert_str_eq(proto, "{\"client_id_header\":\"X-Client\",\"max_body_bytes\":\"10\","
				"\"request_timeout_ms\":60000}");
	free(camel);
	free(proto);
}

Test(pbjson_names, accepts_both_spellings_on_input)
{
	Sluice__V1__Settings *a = (Sluice__V1__Settings *)decode_ok(
		&sluice__v1__settings__descriptor,
		"{\"clientIdHeader\":\"A\",\"max_body_bytes\":5,\"defaultRateLimit\":\"r\"}");
	Sluice__V1__Settings *b = (Sluice__V1__Settings *)decode_ok(
		&sluice__v1__settings__descriptor,
		"{\"client_id_header\":\"A\",\"maxBodyBytes\":\"5\",\"default_rate_limit\":\"r\"}");

	cr_assert_str_eq(a->client_id_header, "A");
	cr_assert_eq(a->max_body_bytes, 5);
	cr_assert_str_eq(a->default_rate_limit, "r");
	cr_assert_str_eq(b->client_id_header, "A");
	cr_assert_eq(b->max_body_bytes, 5);
	cr_assert_str_eq(b->default_rate_limit, "r");
	protobuf_c_message_free_unpacked(&a->base, NULL);
	protobuf_c_message_free_unpacked(&b->base, NULL);
}

Test(pbjson_names, proto_names_output_decodes_back)
{
	Sluice__V1__NodeReport r = SLUICE__V1__NODE_REPORT__INIT;
	Sluice__V1__TlsCounters tls = SLUICE__V1__TLS_COUNTERS__INIT;

	r.node_id = "n1";
	r.time_unix_ms = -1;
	r.health = SLUICE__V1__HEALTH__DEGRADED;
	tls.handshake_failures = 3;
	r.tls = &tls;
	assert_round_trip(&r.base, PBJSON_PROTO_NAMES);
	assert_round_trip(&r.base, PBJSON_PROTO_NAMES | PBJSON_PRETTY);
}

/* ---- 64-bit ints, oneofs, bytes, exact output --------------------------- */

Test(pbjson_output, writes_64bit_ints_as_strings_and_32bit_as_numbers)
{
	Sluice__V1__VersionInfo v = SLUICE__V1__VERSION_INFO__INIT;
	char *s;

	v.version = UINT64_MAX;
	v.time_unix_ms = INT64_MIN;
	v.resources = UINT32_MAX;
	s = encode_ok(&v.base, 0);
	cr_assert_str_eq(s, "{\"version\":\"18446744073709551615\","
			    "\"timeUnixMs\":\"-9223372036854775808\",\"resources\":4294967295}");
	free(s);
}

Test(pbjson_output, omits_defaults_and_writes_empty_messages)
{
	Sluice__V1__RateLimit rl = SLUICE__V1__RATE_LIMIT__INIT;
	Sluice__V1__Selector sel = SLUICE__V1__SELECTOR__INIT;
	char *s;

	s = encode_ok(&rl.base, 0);
	cr_assert_str_eq(s, "{}");
	free(s);
	s = encode_ok(&rl.base, PBJSON_PRETTY);
	cr_assert_str_eq(s, "{}\n");
	free(s);
	rl.selector = &sel;
	s = encode_ok(&rl.base, 0);
	cr_assert_str_eq(s, "{\"selector\":{}}");
	free(s);
}

Test(pbjson_output, pretty_and_compact_exact)
{
	Sluice__V1__Route r = SLUICE__V1__ROUTE__INIT;
	Sluice__V1__StaticBackend sb = SLUICE__V1__STATIC_BACKEND__INIT;
	char *methods[] = { "GET", "POST" };
	char *s;

	r.id = "api";
	r.path_prefix = "/api/";
	r.backend_case = SLUICE__V1__ROUTE__BACKEND_UPSTREAM;
	r.upstream = "app";
	r.n_methods = 2;
	r.methods = methods;
	r.max_body_bytes = 1048576;
	r.request_timeout_ms = 500;

	s = encode_ok(&r.base, 0);
	cr_assert_str_eq(s, "{\"id\":\"api\",\"pathPrefix\":\"/api/\",\"upstream\":\"app\","
			    "\"methods\":[\"GET\",\"POST\"],\"maxBodyBytes\":\"1048576\","
			    "\"requestTimeoutMs\":500}");
	free(s);

	s = encode_ok(&r.base, PBJSON_PRETTY);
	cr_assert_str_eq(s, "{\n"
			    "  \"id\": \"api\",\n"
			    "  \"pathPrefix\": \"/api/\",\n"
			    "  \"upstream\": \"app\",\n"
			    "  \"methods\": [\n"
			    "    \"GET\",\n"
			    "    \"POST\"\n"
			    "  ],\n"
			    "  \"maxBodyBytes\": \"1048576\",\n"
			    "  \"requestTimeoutMs\": 500\n"
			    "}\n");
	free(s);

	r.backend_case = SLUICE__V1__ROUTE__BACKEND_STATIC_FILES;
	r.static_files = &sb;
	sb.in_memory = 1;
	r.n_methods = 0;
	s = encode_ok(&r.base, PBJSON_PRETTY | PBJSON_PROTO_NAMES);
	cr_assert_str_eq(s, "{\n"
			    "  \"id\": \"api\",\n"
			    "  \"path_prefix\": \"/api/\",\n"
			    "  \"static_files\": {\n"
			    "    \"in_memory\": true\n"
			    "  },\n"
			    "  \"max_body_bytes\": \"1048576\",\n"
			    "  \"request_timeout_ms\": 500\n"
			    "}\n");
	free(s);
}

Test(pbjson_output, escapes_strings)
{
	Sluice__V1__Label l = SLUICE__V1__LABEL__INIT;
	char *s;

	l.key = "q\"b\\s/\x01\x1f\t\r\n\b\f";
	l.value = "\xe2\x82\xac";
	s = encode_ok(&l.base, 0);
	cr_assert_str_eq(s, "{\"key\":\"q\\\"b\\\\s/\\u0001\\u001f\\t\\r\\n\\b\\f\","
			    "\"value\":\"\xe2\x82\xac\"}");
	free(s);
	assert_round_trip(&l.base, 0);
}

Test(pbjson_oneof, resource_kind_set_unset_and_conflict)
{
	Sluice__V1__Resource *r;
	char *s;

	r = (Sluice__V1__Resource *)decode_ok(&sluice__v1__resource__descriptor, "{}");
	cr_assert_eq(r->kind_case, SLUICE__V1__RESOURCE__KIND__NOT_SET);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	r = (Sluice__V1__Resource *)decode_ok(&sluice__v1__resource__descriptor,
					      "{\"client\":null,\"upstream\":{\"id\":\"u\"}}");
	cr_assert_eq(r->kind_case, SLUICE__V1__RESOURCE__KIND_UPSTREAM);
	cr_assert_str_eq(r->upstream->id, "u");
	s = encode_ok(&r->base, 0);
	cr_assert_str_eq(s, "{\"upstream\":{\"id\":\"u\"}}");
	free(s);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	r = (Sluice__V1__Resource *)decode_ok(&sluice__v1__resource__descriptor,
					      "{\"settings\":{}}");
	cr_assert_eq(r->kind_case, SLUICE__V1__RESOURCE__KIND_SETTINGS);
	cr_assert_not_null(r->settings);
	s = encode_ok(&r->base, 0);
	cr_assert_str_eq(s, "{\"settings\":{}}");
	free(s);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	decode_fails(&sluice__v1__resource__descriptor,
		     "{\"rateLimit\":{},\"access_list\":{}}", SIZE_MAX,
		     "'rateLimit' and 'access_list' are members of the same oneof");
}

Test(pbjson_oneof, route_backend_empty_upstream_is_still_set)
{
	Sluice__V1__Route *r = (Sluice__V1__Route *)decode_ok(&sluice__v1__route__descriptor,
							       "{\"upstream\":\"\"}");
	char *s;

	cr_assert_eq(r->backend_case, SLUICE__V1__ROUTE__BACKEND_UPSTREAM);
	cr_assert_str_eq(r->upstream, "");
	s = encode_ok(&r->base, 0);
	cr_assert_str_eq(s, "{\"upstream\":\"\"}");
	free(s);
	assert_round_trip(&r->base, 0);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	decode_fails(&sluice__v1__route__descriptor,
		     "{\"upstream\":\"u\",\"staticFiles\":{\"root\":\"/srv\"}}", SIZE_MAX,
		     "staticFiles: 'upstream' and 'staticFiles' are members of the same oneof");
}

Test(pbjson_oneof, unset_oneof_is_omitted)
{
	Sluice__V1__Route r = SLUICE__V1__ROUTE__INIT;
	char *s;

	r.id = "x";
	s = encode_ok(&r.base, 0);
	cr_assert_str_eq(s, "{\"id\":\"x\"}");
	free(s);
}

Test(pbjson_bytes, reflection_descriptor_bytes_round_trip)
{
	Grpc__Reflection__V1__FileDescriptorResponse *m;
	char *s;

	m = (Grpc__Reflection__V1__FileDescriptorResponse *)decode_ok(
		&grpc__reflection__v1__file_descriptor_response__descriptor,
		"{\"fileDescriptorProto\":[\"AAECAwQF\",\"-_-_\",\"YWI\",\"\",\"/w==\"]}");
	cr_assert_eq(m->n_file_descriptor_proto, 5);
	cr_assert_eq(m->file_descriptor_proto[0].len, 6);
	cr_assert_eq(memcmp(m->file_descriptor_proto[0].data, "\0\1\2\3\4\5", 6), 0);
	cr_assert_eq(m->file_descriptor_proto[1].len, 3);
	cr_assert_eq(memcmp(m->file_descriptor_proto[1].data, "\xfb\xff\xbf", 3), 0);
	cr_assert_eq(m->file_descriptor_proto[2].len, 2);
	cr_assert_eq(memcmp(m->file_descriptor_proto[2].data, "ab", 2), 0);
	cr_assert_eq(m->file_descriptor_proto[3].len, 0);
	cr_assert_eq(m->file_descriptor_proto[4].len, 1);
	s = encode_ok(&m->base, 0);
	cr_assert_str_eq(s, "{\"fileDescriptorProto\":[\"AAECAwQF\",\"+/+/\",\"YWI=\",\"\",\"/w==\"]}");
	free(s);
	assert_round_trip(&m->base, 0);
	protobuf_c_message_free_unpacked(&m->base, NULL);
}

Test(pbjson_bytes, every_length_round_trips)
{
	uint8_t raw[64];
	ProtobufCBinaryData items[sizeof(raw)];
	Grpc__Reflection__V1__FileDescriptorResponse m =
		GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;

	for (size_t i = 0; i < sizeof(raw); i++) {
		raw[i] = (uint8_t)(i * 37 + 11);
		items[i].data = raw;
		items[i].len = i;
	}
	m.n_file_descriptor_proto = sizeof(raw);
	m.file_descriptor_proto = items;
	assert_round_trip(&m.base, 0);
}

/* ---- limits, syntax, files, bad arguments ------------------------------- */

static char *nested_json(int levels)
{
	size_t cap = (size_t)levels * 12 + 16;
	char *s = malloc(cap), *p = s;

	cr_assert_not_null(s);
	*p++ = '{';
	for (int i = 1; i < levels; i++)
		p += sprintf(p, "\"fMsg\":{");
	for (int i = 0; i < levels; i++)
		*p++ = '}';
	*p = '\0';
	return s;
}

Test(pbjson_limits, accepts_64_levels_and_rejects_65)
{
	char *ok = nested_json(64), *deep = nested_json(65);
	ProtobufCMessage *m = decode_ok(&all_types_descriptor, ok);

	assert_round_trip(m, 0);
	protobuf_c_message_free_unpacked(m, NULL);
	decode_fails(&all_types_descriptor, deep, strlen(deep), "nesting deeper than 64 levels");
	free(ok);
	free(deep);
}

Test(pbjson_limits, encode_refuses_what_decode_could_not_read)
{
	AllTypes *m = (AllTypes *)decode_ok(&all_types_descriptor, "{}");
	AllTypes *leaf = m;
	char *ok = nested_json(64);
	ProtobufCMessage *deepest;

	for (int i = 1; i < 65; i++) {
		leaf->f_msg = (AllTypes *)decode_ok(&all_types_descriptor, "{}");
		leaf = leaf->f_msg;
	}
	errno = 0;
	cr_assert_null(pbjson_encode(&m->base, 0));
	cr_assert_eq(errno, EINVAL);
	protobuf_c_message_free_unpacked(&m->base, NULL);

	/* 64 levels encode; with a repeated field at the bottom it is 65. */
	deepest = decode_ok(&all_types_descriptor, ok);
	leaf = (AllTypes *)deepest;
	while (leaf->f_msg)
		leaf = leaf->f_msg;
	leaf->r_int32 = malloc(sizeof(int32_t));
	leaf->r_int32[0] = 1;
	leaf->n_r_int32 = 1;
	cr_assert_null(pbjson_encode(deepest, 0));
	protobuf_c_message_free_unpacked(deepest, NULL);
	free(ok);
}

Test(pbjson_limits, deep_arrays_hit_the_limit_before_the_schema)
{
	char buf[300];
	size_t n = 0;

	buf[n++] = '{';
	n += (size_t)sprintf(buf + n, "\"rInt32\":");
	for (int i = 0; i < 70; i++)
		buf[n++] = '[';
	for (int i = 0; i < 70; i++)
		buf[n++] = ']';
	buf[n++] = '}';
	buf[n] = '\0';
	decode_fails(&all_types_descriptor, buf, n, "nesting deeper than 64 levels");
}

Test(pbjson_limits, text_after_the_object_is_rejected)
{
	static const char j[] = "{\"name\":\"a\"}\0{}";

	decode_fails(&sluice__v1__ruleset__descriptor, j, sizeof(j) - 1,
		     "invalid JSON at byte 12: unexpected data after the JSON value");
	/* Length is honoured: the same text cut before the NUL is fine. */
	ProtobufCMessage *m = NULL;
	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, j, 12, NULL, &m), 0);
	protobuf_c_message_free_unpacked(m, NULL);
	decode_fails(&sluice__v1__ruleset__descriptor, j, 11, "invalid JSON at byte 11");
}

Test(pbjson_limits, input_need_not_be_nul_terminated)
{
	/* Guard page after the text: any read past len faults. */
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	static const char j[] = "{\"version\":12}";
	char *mem = mmap(NULL, page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *text;
	Sluice__V1__Ruleset *m = NULL;

	cr_assert_neq(mem, MAP_FAILED);
	cr_assert_eq(mprotect(mem + page, page, PROT_NONE), 0);
	text = mem + page - (sizeof(j) - 1);
	memcpy(text, j, sizeof(j) - 1);
	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, text, sizeof(j) - 1, NULL,
				   (ProtobufCMessage **)&m), 0);
	cr_assert_eq(m->version, 12);
	protobuf_c_message_free_unpacked(&m->base, NULL);
	munmap(mem, page * 2);
}

Test(pbjson_file, missing_file_names_the_path)
{
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;

	cr_assert_eq(pbjson_decode_file(&sluice__v1__ruleset__descriptor,
					"/nonexistent/pbjson.json", err, &m), -ENOENT);
	cr_assert_str_eq(err, "'/nonexistent/pbjson.json': No such file or directory");
	cr_assert_null(m);
}

Test(pbjson_file, reads_a_file_and_prefixes_decode_errors_with_its_name)
{
	char path[] = "/tmp/pbjson_test_XXXXXX";
	int fd = mkstemp(path);
	static const char good[] = "{\"name\":\"edge\",\"resources\":[{\"client\":{\"id\":\"c\"}}]}";
	static const char bad[] = "{\"name\":1}";
	char err[PBJSON_ERR_LEN], want[PBJSON_ERR_LEN];
	Sluice__V1__Ruleset *rs = NULL;

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, good, sizeof(good) - 1), (ssize_t)sizeof(good) - 1);
	cr_assert_eq(pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, err,
					(ProtobufCMessage **)&rs), 0, "%s", err);
	cr_assert_str_eq(rs->name, "edge");
	cr_assert_eq(rs->n_resources, 1);
	cr_assert_str_eq(rs->resources[0]->client->id, "c");
	protobuf_c_message_free_unpacked(&rs->base, NULL);

	cr_assert_eq(ftruncate(fd, 0), 0);
	cr_assert_eq(pwrite(fd, bad, sizeof(bad) - 1, 0), (ssize_t)sizeof(bad) - 1);
	rs = NULL;
	cr_assert_eq(pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, err,
					(ProtobufCMessage **)&rs), -EBADMSG);
	snprintf(want, sizeof(want), "'%s': name: expected a string, got 1", path);
	cr_assert_str_eq(err, want);
	cr_assert_null(rs);
	close(fd);
	unlink(path);
}

Test(pbjson_file, refuses_files_over_256_mib)
{
	char path[] = "/tmp/pbjson_big_XXXXXX";
	int fd = mkstemp(path);
	char err[PBJSON_ERR_LEN], want[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;

	cr_assert_geq(fd, 0);
	/* Sparse: costs no disk, and the size check comes before any read. */
	cr_assert_eq(ftruncate(fd, (256 << 20) + 1), 0);
	cr_assert_eq(pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, err, &m), -EFBIG);
	snprintf(want, sizeof(want), "'%s': larger than 256 MiB", path);
	cr_assert_str_eq(err, want);
	cr_assert_null(m);
	close(fd);
	unlink(path);
}

Test(pbjson_file, reads_a_pipe_to_eof)
{
	static const char j[] = "{\"name\":\"piped\"}";
	char path[64], err[PBJSON_ERR_LEN];
	Sluice__V1__Ruleset *rs = NULL;
	int p[2];

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(write(p[1], j, sizeof(j) - 1), (ssize_t)sizeof(j) - 1);
	close(p[1]);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", p[0]);
	cr_assert_eq(pbjson_decode_file(&sluice__v1__ruleset__descriptor, path, err,
					(ProtobufCMessage **)&rs), 0, "%s", err);
	cr_assert_str_eq(rs->name, "piped");
	protobuf_c_message_free_unpacked(&rs->base, NULL);
	close(p[0]);
}

Test(pbjson_file, directory_is_an_io_error)
{
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;

	cr_assert_eq(pbjson_decode_file(&sluice__v1__ruleset__descriptor, "/", err, &m), -EISDIR);
	cr_assert_str_eq(err, "'/': Is a directory");
}

Test(pbjson_args, bad_arguments)
{
	char err[PBJSON_ERR_LEN];
	ProtobufCMessage *m = NULL;
	Sluice__V1__Ruleset rs = SLUICE__V1__RULESET__INIT;
	Sluice__V1__Label l = SLUICE__V1__LABEL__INIT;

	cr_assert_eq(pbjson_decode(NULL, "{}", 2, err, &m), -EINVAL);
	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, NULL, 2, err, &m), -EINVAL);
	cr_assert_eq(pbjson_decode(&sluice__v1__ruleset__descriptor, "{}", 2, err, NULL), -EINVAL);
	errno = 0;
	cr_assert_null(pbjson_encode(NULL, 0));
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_null(pbjson_encode(&rs.base, 1u << 7));
	cr_assert_eq(errno, EINVAL);
	l.key = "bad \xff utf-8";
	errno = 0;
	cr_assert_null(pbjson_encode(&l.base, 0));
	cr_assert_eq(errno, EILSEQ);
}

Test(pbjson_args, leaves_the_thread_locale_as_it_found_it)
{
	locale_t before = uselocale((locale_t)0);
	AllTypes *m = (AllTypes *)decode_ok(&all_types_descriptor, "{\"fDouble\":1.5}");
	char *s = encode_ok(&m->base, 0);

	cr_assert_str_eq(s, "{\"fDouble\":1.5}");
	cr_assert_eq(uselocale((locale_t)0), before);
	free(s);
	protobuf_c_message_free_unpacked(&m->base, NULL);
}

/* ---- randomized round trip --------------------------------------------- */

static uint64_t rnd(void)
{
	return fixture_rand();
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* Interesting integers more often than uniform ones. */
static uint64_t rnd_u64(void)
{
	static const uint64_t edges[] = { 0, 1, 127, 128, 0x7fffffff, 0x80000000, 0xffffffff,
					  0x100000000ULL, INT64_MAX, (uint64_t)INT64_MAX + 1,
					  UINT64_MAX, 9007199254740993ULL };

	switch (rnd_below(3)) {
	case 0: return edges[rnd_below(sizeof(edges) / sizeof(edges[0]))];
	case 1: return rnd() >> rnd_below(64);
	default: return rnd();
	}
}

static char *rnd_str(void)
{
	static const char *const pieces[] = {
		"a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f",
		"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "route", "10.0.0.0/8", "_",
	};
	unsigned n = rnd_below(4) == 0 ? 0 : rnd_below(8);
	char *s = malloc(n * 10 + 1);  /* longest piece: 10 bytes */

	cr_assert_not_null(s);
	s[0] = '\0';
	for (unsigned i = 0; i < n; i++)
		strcat(s, pieces[rnd_below(sizeof(pieces) / sizeof(pieces[0]))]);
	return s;
}

static char **rnd_strs(size_t *n)
{
	char **v;

	*n = rnd_below(4);
	if (*n == 0)
		return NULL;
	v = malloc(*n * sizeof(*v));
	cr_assert_not_null(v);
	for (size_t i = 0; i < *n; i++)
		v[i] = rnd_str();
	return v;
}

/* Mostly named values, sometimes unknown ones (written as numbers). */
static int rnd_enum(int named)
{
	if (rnd_below(8) == 0)
		return (int)(int32_t)(uint32_t)rnd();
	return (int)rnd_below((unsigned)named);
}

#define NEW(type, init) ({ type *p_ = malloc(sizeof(type)); cr_assert_not_null(p_); \
			   *p_ = (type)init; p_; })

static Sluice__V1__Resource *rnd_resource(void)
{
	Sluice__V1__Resource *r = NEW(Sluice__V1__Resource, SLUICE__V1__RESOURCE__INIT);

	r->kind_case = (Sluice__V1__Resource__KindCase)rnd_below(7);
	switch (r->kind_case) {
	case SLUICE__V1__RESOURCE__KIND_CLIENT: {
		Sluice__V1__Client *c = NEW(Sluice__V1__Client, SLUICE__V1__CLIENT__INIT);

		c->id = rnd_str();
		c->keys = rnd_strs(&c->n_keys);
		c->rate_limit = rnd_str();
		c->priority = (uint32_t)rnd_u64();
		c->disabled = rnd_below(2);
		r->client = c;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_RATE_LIMIT: {
		Sluice__V1__RateLimit *l = NEW(Sluice__V1__RateLimit, SLUICE__V1__RATE_LIMIT__INIT);

		l->id = rnd_str();
		if (rnd_below(2)) {
			Sluice__V1__Selector *s = NEW(Sluice__V1__Selector, SLUICE__V1__SELECTOR__INIT);

			s->client = rnd_str();
			s->source_cidr = rnd_str();
			s->host = rnd_str();
			s->path_prefix = rnd_str();
			s->method = rnd_str();
			l->selector = s;
		}
		l->algorithm = rnd_enum(4);
		l->rate = rnd_u64();
		l->unit = rnd_enum(4);
		l->burst = rnd_u64();
		l->action = rnd_enum(3);
		l->enforce = rnd_enum(4);
		r->rate_limit = l;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_ACCESS_LIST: {
		Sluice__V1__AccessList *a = NEW(Sluice__V1__AccessList, SLUICE__V1__ACCESS_LIST__INIT);

		a->id = rnd_str();
		a->allow = rnd_strs(&a->n_allow);
		a->deny = rnd_strs(&a->n_deny);
		r->access_list = a;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_ROUTE: {
		Sluice__V1__Route *rt = NEW(Sluice__V1__Route, SLUICE__V1__ROUTE__INIT);

		rt->id = rnd_str();
		rt->host = rnd_str();
		rt->path_prefix = rnd_str();
		rt->backend_case = (Sluice__V1__Route__BackendCase)(rnd_below(3) == 0 ? 0 : 4 + rnd_below(2));
		if (rt->backend_case == SLUICE__V1__ROUTE__BACKEND_UPSTREAM) {
			rt->upstream = rnd_str();
		} else if (rt->backend_case == SLUICE__V1__ROUTE__BACKEND_STATIC_FILES) {
			Sluice__V1__StaticBackend *sb =
				NEW(Sluice__V1__StaticBackend, SLUICE__V1__STATIC_BACKEND__INIT);

			sb->root = rnd_str();
			sb->index = rnd_str();
			sb->in_memory = rnd_below(2);
			rt->static_files = sb;
		}
		rt->rewrite_prefix = rnd_str();
		rt->methods = rnd_strs(&rt->n_methods);
		rt->max_body_bytes = rnd_u64();
		rt->request_timeout_ms = (uint32_t)rnd_u64();
		rt->rate_limits = rnd_strs(&rt->n_rate_limits);
		rt->access_lists = rnd_strs(&rt->n_access_lists);
		r->route = rt;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_UPSTREAM: {
		Sluice__V1__Upstream *u = NEW(Sluice__V1__Upstream, SLUICE__V1__UPSTREAM__INIT);

		u->id = rnd_str();
		u->endpoints = rnd_strs(&u->n_endpoints);
		u->connect_timeout_ms = (uint32_t)rnd_u64();
		u->read_timeout_ms = (uint32_t)rnd_u64();
		u->keepalive_pool_size = (uint32_t)rnd_u64();
		r->upstream = u;
		break;
	}
	case SLUICE__V1__RESOURCE__KIND_SETTINGS: {
		Sluice__V1__Settings *s = NEW(Sluice__V1__Settings, SLUICE__V1__SETTINGS__INIT);

		s->id = rnd_str();
		s->client_id_header = rnd_str();
		s->default_rate_limit = rnd_str();
		s->disabled = rnd_below(2);
		s->access_lists = rnd_strs(&s->n_access_lists);
		s->max_body_bytes = rnd_u64();
		s->request_timeout_ms = (uint32_t)rnd_u64();
		r->settings = s;
		break;
	}
	default:
		r->kind_case = SLUICE__V1__RESOURCE__KIND__NOT_SET;
		break;
	}
	return r;
}

static Sluice__V1__Ruleset *rnd_ruleset(void)
{
	Sluice__V1__Ruleset *rs = NEW(Sluice__V1__Ruleset, SLUICE__V1__RULESET__INIT);

	rs->name = rnd_str();
	rs->version = rnd_u64();
	rs->n_resources = rnd_below(6);
	if (rs->n_resources) {
		rs->resources = malloc(rs->n_resources * sizeof(*rs->resources));
		cr_assert_not_null(rs->resources);
		for (size_t i = 0; i < rs->n_resources; i++)
			rs->resources[i] = rnd_resource();
	}
	return rs;
}

static unsigned rnd_flags(void)
{
	return rnd_below(4);  /* every combination of PRETTY and PROTO_NAMES */
}

Test(pbjson_property, random_rulesets_round_trip)
{
	fixture_seed(0x5eed5eed12345678ULL);
	for (int i = 0; i < 3000; i++) {
		Sluice__V1__Ruleset *rs = rnd_ruleset();

		assert_round_trip(&rs->base, rnd_flags());
		protobuf_c_message_free_unpacked(&rs->base, NULL);
	}
}

static float rnd_float(void)
{
	uint32_t bits = (uint32_t)rnd();
	float f;

	switch (rnd_below(4)) {
	case 0: return (float)(int)rnd_below(100) / 4;
	case 1: return rnd_below(2) ? INFINITY : -INFINITY;
	default:
		memcpy(&f, &bits, sizeof(f));
		return isnan(f) ? NAN : f;  /* one NaN: payloads do not survive JSON */
	}
}

static double rnd_double(void)
{
	uint64_t bits = rnd();
	double d;

	switch (rnd_below(4)) {
	case 0: return (double)(int)rnd_below(1000) / 8 - 50;
	case 1: return rnd_below(2) ? -0.0 : 5e-324;
	default:
		memcpy(&d, &bits, sizeof(d));
		return isnan(d) ? NAN : d;
	}
}

static ProtobufCBinaryData rnd_bytes(void)
{
	ProtobufCBinaryData b = { .len = rnd_below(9) };

	b.data = malloc(b.len ? b.len : 1);
	cr_assert_not_null(b.data);
	for (size_t i = 0; i < b.len; i++)
		b.data[i] = (uint8_t)rnd();
	return b;
}

#define RND_ARRAY(m, field, gen) do { \
		(m)->n_##field = rnd_below(4); \
		(m)->field = (m)->n_##field ? malloc((m)->n_##field * sizeof(*(m)->field)) : NULL; \
		for (size_t i_ = 0; i_ < (m)->n_##field; i_++) \
			(m)->field[i_] = gen; \
	} while (0)

static AllTypes *rnd_all_types(int depth)
{
	AllTypes *m = malloc(sizeof(*m));

	cr_assert_not_null(m);
	protobuf_c_message_init(&all_types_descriptor, m);
	if (rnd_below(2)) {
		m->f_int32 = (int32_t)rnd_u64();
		m->f_sint32 = (int32_t)rnd_u64();
		m->f_sfixed32 = (int32_t)rnd_u64();
		m->f_int64 = (int64_t)rnd_u64();
		m->f_sint64 = (int64_t)rnd_u64();
		m->f_sfixed64 = (int64_t)rnd_u64();
		m->f_uint32 = (uint32_t)rnd_u64();
		m->f_fixed32 = (uint32_t)rnd_u64();
		m->f_uint64 = rnd_u64();
		m->f_fixed64 = rnd_u64();
		m->f_float = rnd_float();
		m->f_double = rnd_double();
		m->f_bool = rnd_below(2);
		m->f_enum = rnd_enum(4);
		m->f_string = rnd_str();
		m->f_bytes = rnd_bytes();
	}
	if (depth < 3 && rnd_below(3) == 0)
		m->f_msg = rnd_all_types(depth + 1);
	RND_ARRAY(m, r_int32, (int32_t)rnd_u64());
	RND_ARRAY(m, r_uint64, rnd_u64());
	RND_ARRAY(m, r_float, rnd_float());
	RND_ARRAY(m, r_double, rnd_double());
	RND_ARRAY(m, r_bool, (protobuf_c_boolean)rnd_below(2));
	RND_ARRAY(m, r_enum, rnd_enum(4));
	RND_ARRAY(m, r_string, rnd_str());
	RND_ARRAY(m, r_bytes, rnd_bytes());
	if (depth < 3)
		RND_ARRAY(m, r_msg, rnd_all_types(depth + 1));
	if (rnd_below(2)) {
		m->has_o_int32 = 1;
		m->o_int32 = (int32_t)rnd_u64();
	}
	if (rnd_below(2))
		m->o_string = rnd_str();
	if (depth < 3 && rnd_below(4) == 0)
		m->o_msg = rnd_all_types(depth + 1);
	if (rnd_below(3) == 0) {
		m->req = malloc(sizeof(*m->req));
		cr_assert_not_null(m->req);
		protobuf_c_message_init(&req_descriptor, m->req);
		m->req->q_uint32 = (uint32_t)rnd_u64();
		m->req->q_string = rnd_str();
	}
	m->choice_case = rnd_below(5) == 0 ? 0 : 31 + rnd_below(4);
	switch (m->choice_case) {
	case 31: m->c_int32 = (int32_t)rnd_u64(); break;
	case 32: m->c_string = rnd_str(); break;
	case 33: m->c_bytes = rnd_bytes(); break;
	case 34:
		if (depth < 3)
			m->c_msg = rnd_all_types(depth + 1);
		else
			m->choice_case = 0;
		break;
	}
	return m;
}

Test(pbjson_property, random_all_types_round_trip)
{
	fixture_seed(0xa11c0ffee0ddf00dULL);
	for (int i = 0; i < 2000; i++) {
		AllTypes *m = rnd_all_types(0);

		assert_round_trip(&m->base, rnd_flags());
		protobuf_c_message_free_unpacked(&m->base, NULL);
	}
}
