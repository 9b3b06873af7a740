/* policy_test.c - the policy model: validation of every field, compiled
 * values, canonical encoding, hashes, reference counting and deltas.
 *
 * Resources are written as "field=value|field=value" specs and built into
 * wire structs through the protobuf-c descriptors, then packed and decoded,
 * so every case goes through policy_res_decode exactly as a node would.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "policy.h"
#include "policy_wire.h"

/* ---- test-owned allocations ------------------------------------------- */

/* Everything the spec builder allocates; freed by pool_free() at the end
 * of a test so that LeakSanitizer sees only the library's leaks. */
static void **pool;
static size_t pool_n;

static void *track(void *p)
{
	cr_assert(p);
	pool = realloc(pool, (pool_n + 1) * sizeof(*pool));
	cr_assert(pool);
	pool[pool_n++] = p;
	return p;
}

static void pool_free(void)
{
	for (size_t i = 0; i < pool_n; i++)
		free(pool[i]);
	free(pool);
	pool = NULL;
	pool_n = 0;
}

static char *tstrdup(const char *s)
{
	return track(strdup(s));
}

/* ---- spec builder ------------------------------------------------------ */

#define MAX_REPEATED 128

static ProtobufCMessage *new_msg(const ProtobufCMessageDescriptor *d)
{
	ProtobufCMessage *m = track(calloc(1, d->sizeof_message));

	protobuf_c_message_init(d, m);
	return m;
}

/* Sets "field" or "sub.field" of m to the text value; repeated fields
 * append. Enums take a name or a number. */
static void set_field(ProtobufCMessage *m, const char *path, const char *value)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const ProtobufCFieldDescriptor *f;
	const char *dot = strchr(path, '.');
	char name[64];
	char *base = (char *)m;
	size_t n = dot ? (size_t)(dot - path) : strlen(path);

	cr_assert_lt(n, sizeof(name));
	memcpy(name, path, n);
	name[n] = '\0';
	f = protobuf_c_message_descriptor_get_field_by_name(d, name);
	cr_assert(f, "no field '%s' in %s", name, d->name);
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		*(uint32_t *)(base + f->quantifier_offset) = f->id;
	if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
		ProtobufCMessage **sub = (ProtobufCMessage **)(base + f->offset);

		if (!*sub)
			*sub = new_msg(f->descriptor);
		if (dot)
			set_field(*sub, dot + 1, value);
		return;
	}
	cr_assert(!dot, "'%s' is not a message", name);
	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		size_t *cnt = (size_t *)(base + f->quantifier_offset);
		char ***arr = (char ***)(base + f->offset);

		cr_assert_eq(f->type, PROTOBUF_C_TYPE_STRING);
		if (!*arr)
			*arr = track(calloc(MAX_REPEATED, sizeof(char *)));
		cr_assert_lt(*cnt, MAX_REPEATED);
		(*arr)[(*cnt)++] = tstrdup(value);
		return;
	}
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		*(char **)(base + f->offset) = tstrdup(value);
		break;
	case PROTOBUF_C_TYPE_UINT32:
		*(uint32_t *)(base + f->offset) = (uint32_t)strtoul(value, NULL, 10);
		break;
	case PROTOBUF_C_TYPE_UINT64:
		*(uint64_t *)(base + f->offset) = strtoull(value, NULL, 10);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		*(protobuf_c_boolean *)(base + f->offset) = strcmp(value, "true") == 0;
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, value);

		*(int *)(base + f->offset) = ev ? ev->value : (int)strtol(value, NULL, 10);
		break;
	}
	default:
		cr_assert_fail("unsupported field type for '%s'", name);
	}
}

/* Builds a wire Resource of `kind` ("client", ... or "" for none) from a
 * "field=value|..." spec. Owned by the pool. */
static Sluice__V1__Resource *build(const char *kind, const char *spec)
{
	Sluice__V1__Resource *r = (Sluice__V1__Resource *)new_msg(&sluice__v1__resource__descriptor);
	char *copy = tstrdup(spec), *save = NULL;
	char path[128];

	if (!*kind)
		return r;
	set_field(&r->base, kind, ""); /* creates the sub-message, sets the oneof */
	for (char *item = strtok_r(copy, "|", &save); item; item = strtok_r(NULL, "|", &save)) {
		char *eq = strchr(item, '=');

		cr_assert(eq, "spec item '%s' has no '='", item);
		*eq = '\0';
		snprintf(path, sizeof(path), "%s.%s", kind, item);
		set_field(&r->base, path, eq + 1);
	}
	return r;
}

static uint8_t *pack(const Sluice__V1__Resource *m, size_t *len)
{
	*len = sluice__v1__resource__get_packed_size(m);
	uint8_t *buf = track(malloc(*len + 1));

	sluice__v1__resource__pack(m, buf);
	return buf;
}

/* Builds, packs and decodes. */
static int decode_spec(const char *kind, const char *spec, struct policy_errs *errs,
		       struct policy_res **ret)
{
	size_t len;
	uint8_t *buf = pack(build(kind, spec), &len);

	return policy_res_decode(buf, len, errs, ret);
}

/* Decodes a spec that must be valid. */
static struct policy_res *ok_res(const char *kind, const char *spec)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;
	int rc;

	policy_errs_init(&errs);
	rc = decode_spec(kind, spec, &errs, &r);
	cr_assert_eq(rc, 0, "%s '%s': rc %d, first error: %s", kind, spec, rc,
		     errs.n ? errs.msg[0] : "(none)");
	cr_assert_eq(policy_errs_count(&errs), 0);
	cr_assert(r);
	return r;
}

/* ---- invalid resources: one exact error each --------------------------- */

#define A16 "aaaaaaaaaaaaaaaa"
#define A64 A16 A16 A16 A16
#define A256 A64 A64 A64 A64
#define K17 "keys=k1|keys=k2|keys=k3|keys=k4|keys=k5|keys=k6|keys=k7|keys=k8|keys=k9|" \
	    "keys=k10|keys=k11|keys=k12|keys=k13|keys=k14|keys=k15|keys=k16|keys=k17"
#define L17(f) f "=a1|" f "=a2|" f "=a3|" f "=a4|" f "=a5|" f "=a6|" f "=a7|" f "=a8|" \
	f "=a9|" f "=a10|" f "=a11|" f "=a12|" f "=a13|" f "=a14|" f "=a15|" f "=a16|" f "=a17"
#define M17 "methods=A|methods=B|methods=C|methods=D|methods=E|methods=F|methods=G|" \
	    "methods=H|methods=I|methods=J|methods=K|methods=L|methods=M|methods=N|"  \
	    "methods=O|methods=P|methods=Q"

#define RL "id=rl|algorithm=TOKEN_BUCKET|rate=10|unit=SECOND"
#define RT "id=api|path_prefix=/api"
#define RTU RT "|upstream=backend"
#define UP "id=backend"
#define KERNEL_ERR "enforce: KERNEL enforcement supports only token and leaky buckets selected by client"

/* One invalid resource and its only error; static table. Inline arrays, not
 * pointers: Criterion copies parameters into the test process, where the
 * address of a literal may differ. */
struct bad_case {
	char name[48];
	char kind[16];
	char spec[1200];
	char err[POLICY_ERR_LEN];
};

static struct bad_case bad_cases[] = {
	{ "kind_not_set", "", "", "resource.kind: not set" },
	/* ids */
	{ "id_empty", "client", "keys=k", "client/.id: required" },
	{ "id_bad_start", "client", "id=-acme", "client/-acme.id: must start with a letter or digit" },
	{ "id_bad_char", "route", "id=bad id|path_prefix=/|upstream=u",
	  "route/bad id.id: must contain only [A-Za-z0-9._:-]" },
	{ "id_nonprintable_sanitized", "client", "id=a\x01" "b",
	  "client/a?b.id: must contain only [A-Za-z0-9._:-]" },
	{ "id_too_long_truncated", "client", "id=" A64 A64 "a",
	  "client/" A64 "....id: must be at most 128 bytes" },
	{ "settings_id_not_global", "settings", "id=main", "settings/main.id: must be \"global\"" },
	{ "settings_id_empty", "settings", "disabled=true", "settings/.id: required" },
	/* client */
	{ "client_too_many_keys", "client", "id=acme|" K17, "client/acme.keys: at most 16 entries" },
	{ "client_key_empty", "client", "id=acme|keys=a|keys=", "client/acme.keys[1]: must not be empty" },
	{ "client_key_space", "client", "id=acme|keys=a b",
	  "client/acme.keys[0]: must contain only visible ASCII, no spaces" },
	{ "client_key_non_ascii", "client", "id=acme|keys=ok|keys=caf\xc3\xa9",
	  "client/acme.keys[1]: must contain only visible ASCII, no spaces" },
	{ "client_key_too_long", "client", "id=acme|keys=" A256 "a",
	  "client/acme.keys[0]: must be at most 256 bytes" },
	{ "client_key_duplicate", "client", "id=acme|keys=a|keys=b|keys=a",
	  "client/acme.keys[2]: duplicate of keys[0]" },
	{ "client_rate_limit_bad_id", "client", "id=acme|rate_limit=-x",
	  "client/acme.rate_limit: must start with a letter or digit" },
	{ "client_priority_too_big", "client", "id=acme|priority=256",
	  "client/acme.priority: must be at most 255" },
	/* rate limit */
	{ "rl_algorithm_missing", "rate_limit", "id=rl|rate=10|unit=SECOND",
	  "rate_limit/rl.algorithm: required" },
	{ "rl_algorithm_unknown", "rate_limit", "id=rl|algorithm=7|rate=10|unit=SECOND",
	  "rate_limit/rl.algorithm: unknown value 7" },
	{ "rl_algorithm_negative", "rate_limit", "id=rl|algorithm=-1|rate=10|unit=SECOND",
	  "rate_limit/rl.algorithm: unknown value -1" },
	{ "rl_rate_zero", "rate_limit", "id=rl|algorithm=TOKEN_BUCKET|unit=SECOND",
	  "rate_limit/rl.rate: must be at least 1" },
	{ "rl_rate_too_big", "rate_limit", "id=rl|algorithm=TOKEN_BUCKET|rate=1000000001|unit=SECOND",
	  "rate_limit/rl.rate: must be at most 1000000000" },
	{ "rl_sliding_rate_too_big", "rate_limit",
	  "id=rl|algorithm=SLIDING_WINDOW|rate=1000001|unit=SECOND",
	  "rate_limit/rl.rate: must be at most 1000000 for SLIDING_WINDOW" },
	{ "rl_unit_missing", "rate_limit", "id=rl|algorithm=TOKEN_BUCKET|rate=10",
	  "rate_limit/rl.unit: required" },
	{ "rl_unit_unknown", "rate_limit", "id=rl|algorithm=TOKEN_BUCKET|rate=10|unit=9",
	  "rate_limit/rl.unit: unknown value 9" },
	{ "rl_burst_too_big", "rate_limit", RL "|burst=1000000001",
	  "rate_limit/rl.burst: must be at most 1000000000" },
	{ "rl_action_unknown", "rate_limit", RL "|action=3", "rate_limit/rl.action: unknown value 3" },
	{ "rl_enforce_unknown", "rate_limit", RL "|enforce=4", "rate_limit/rl.enforce: unknown value 4" },
	{ "rl_kernel_sliding_window", "rate_limit",
	  "id=rl|algorithm=SLIDING_WINDOW|rate=10|unit=SECOND|enforce=KERNEL", "rate_limit/rl." KERNEL_ERR },
	{ "rl_kernel_host_selector", "rate_limit", RL "|enforce=BOTH|selector.host=example.com",
	  "rate_limit/rl." KERNEL_ERR },
	{ "rl_kernel_cidr_selector", "rate_limit", RL "|enforce=KERNEL|selector.source_cidr=10.0.0.0/8",
	  "rate_limit/rl." KERNEL_ERR },
	{ "rl_kernel_path_selector", "rate_limit", RL "|enforce=KERNEL|selector.path_prefix=/api",
	  "rate_limit/rl." KERNEL_ERR },
	{ "rl_kernel_method_selector", "rate_limit", RL "|enforce=KERNEL|selector.method=GET",
	  "rate_limit/rl." KERNEL_ERR },
	{ "rl_selector_client_bad", "rate_limit", RL "|selector.client=a b",
	  "rate_limit/rl.selector.client: must contain only [A-Za-z0-9._:-]" },
	{ "rl_selector_cidr_host_bits", "rate_limit", RL "|selector.source_cidr=10.0.0.1/8",
	  "rate_limit/rl.selector.source_cidr: host bits set beyond /8" },
	{ "rl_selector_cidr_garbage", "rate_limit", RL "|selector.source_cidr=nowhere",
	  "rate_limit/rl.selector.source_cidr: not an IPv4 or IPv6 address" },
	{ "rl_selector_host_upper", "rate_limit", RL "|selector.host=Example.com",
	  "rate_limit/rl.selector.host: must be lower case" },
	{ "rl_selector_path_relative", "rate_limit", RL "|selector.path_prefix=api",
	  "rate_limit/rl.selector.path_prefix: must start with '/'" },
	{ "rl_selector_method_lower", "rate_limit", RL "|selector.method=post",
	  "rate_limit/rl.selector.method: must be upper case" },
	/* access list */
	{ "al_allow_host_bits", "access_list", "id=office|allow=10.0.0.1/24",
	  "access_list/office.allow[0]: host bits set beyond /24" },
	{ "al_deny_host_bits_index", "access_list",
	  "id=office|deny=10.0.0.0/8|deny=10.1.0.0/16|deny=192.168.0.0/16|deny=192.168.1.1/24",
	  "access_list/office.deny[3]: host bits set beyond /24" },
	{ "al_allow_empty_entry", "access_list", "id=office|allow=10.0.0.0/8|allow=",
	  "access_list/office.allow[1]: must not be empty" },
	{ "al_allow_prefix_out_of_range", "access_list", "id=office|allow=10.0.0.0/33",
	  "access_list/office.allow[0]: prefix length out of range" },
	{ "al_allow_duplicate", "access_list",
	  "id=office|allow=10.0.0.0/8|allow=192.168.0.0/16|allow=10.0.0.0/8",
	  "access_list/office.allow[2]: duplicate of allow[0]" },
	{ "al_deny_duplicate_v6_spelling", "access_list", "id=office|deny=2001:db8::/32|deny=2001:0db8::/32",
	  "access_list/office.deny[1]: duplicate of deny[0]" },
	/* route host */
	{ "route_host_upper", "route", RTU "|host=API.example.com", "route/api.host: must be lower case" },
	{ "route_host_port", "route", RTU "|host=example.com:8080", "route/api.host: must not contain a port" },
	{ "route_host_trailing_dot", "route", RTU "|host=example.com.", "route/api.host: must not end with '.'" },
	{ "route_host_empty_label", "route", RTU "|host=a..example", "route/api.host: must not contain an empty label" },
	{ "route_host_label_dash", "route", RTU "|host=-a.example",
	  "route/api.host: labels must not start or end with '-'" },
	{ "route_host_label_too_long", "route", RTU "|host=" A64 ".example",
	  "route/api.host: labels must be at most 63 bytes" },
	{ "route_host_too_long", "route",
	  RTU "|host=" A16 "." A16 "." A16 "." A16 "." A16 "." A16 "." A16 "." A16 "." A16 "."
	      A16 "." A16 "." A16 "." A16 "." A16 "." A16 "." A16 ".com",
	  "route/api.host: must be at most 253 bytes" },
	{ "route_host_bad_char", "route", RTU "|host=a_b.example", "route/api.host: must contain only [a-z0-9.-]" },
	{ "route_host_bad_ipv4", "route", RTU "|host=10.0.0.256", "route/api.host: invalid IPv4 address" },
	{ "route_host_short_ipv4", "route", RTU "|host=10.1.2", "route/api.host: invalid IPv4 address" },
	{ "route_host_bare_ipv6", "route", RTU "|host=2001:db8::1", "route/api.host: IPv6 literal must be in brackets" },
	{ "route_host_bad_ipv6", "route", RTU "|host=[2001:db8::g]", "route/api.host: invalid IPv6 literal" },
	{ "route_host_ipv6_port", "route", RTU "|host=[::1]:80", "route/api.host: must not contain a port" },
	/* route path */
	{ "route_path_missing", "route", "id=api|upstream=backend", "route/api.path_prefix: required" },
	{ "route_path_relative", "route", "id=api|path_prefix=api|upstream=b",
	  "route/api.path_prefix: must start with '/'" },
	{ "route_path_query", "route", "id=api|path_prefix=/api?x=1|upstream=b",
	  "route/api.path_prefix: must not contain '?'" },
	{ "route_path_fragment", "route", "id=api|path_prefix=/api#x|upstream=b",
	  "route/api.path_prefix: must not contain '#'" },
	{ "route_path_empty_segment", "route", "id=api|path_prefix=/api//v1|upstream=b",
	  "route/api.path_prefix: must not contain empty segments ('//')" },
	{ "route_path_dot_segment", "route", "id=api|path_prefix=/api/./v1|upstream=b",
	  "route/api.path_prefix: must not contain '.' or '..' segments" },
	{ "route_path_dotdot_last", "route", "id=api|path_prefix=/api/..|upstream=b",
	  "route/api.path_prefix: must not contain '.' or '..' segments" },
	{ "route_path_encoded_dotdot", "route", "id=api|path_prefix=/api/%2e%2E/x|upstream=b",
	  "route/api.path_prefix: must not contain '.' or '..' segments" },
	{ "route_path_bad_percent", "route", "id=api|path_prefix=/api/%zz|upstream=b",
	  "route/api.path_prefix: malformed percent-encoding" },
	{ "route_path_truncated_percent", "route", "id=api|path_prefix=/api/%4|upstream=b",
	  "route/api.path_prefix: malformed percent-encoding" },
	{ "route_path_space", "route", "id=api|path_prefix=/a b|upstream=b",
	  "route/api.path_prefix: must contain only URI path characters (RFC 3986)" },
	{ "route_path_too_long", "route", "id=api|upstream=b|path_prefix=/" A256 A256 A256 A256,
	  "route/api.path_prefix: must be at most 1024 bytes" },
	/* route backend */
	{ "route_backend_missing", "route", RT,
	  "route/api.backend: one of upstream or static_files is required" },
	{ "route_upstream_bad_id", "route", RT "|upstream=_b",
	  "route/api.upstream: must start with a letter or digit" },
	{ "route_upstream_empty", "route", RT "|upstream=", "route/api.upstream: must not be empty" },
	{ "route_static_root_missing", "route", RT "|static_files.in_memory=true",
	  "route/api.static_files.root: required" },
	{ "route_static_root_relative", "route", RT "|static_files.root=var/www",
	  "route/api.static_files.root: must be an absolute path" },
	{ "route_static_root_dotdot", "route", RT "|static_files.root=/var/www/../etc",
	  "route/api.static_files.root: must not contain '.' or '..' segments" },
	{ "route_static_root_control", "route", RT "|static_files.root=/var/\x01www",
	  "route/api.static_files.root: must not contain control characters" },
	{ "route_static_index_slash", "route", RT "|static_files.root=/srv|static_files.index=a/b.html",
	  "route/api.static_files.index: must be a file name (no '/', not '.' or '..')" },
	{ "route_static_index_dotdot", "route", RT "|static_files.root=/srv|static_files.index=..",
	  "route/api.static_files.index: must be a file name (no '/', not '.' or '..')" },
	{ "route_rewrite_with_static", "route", RT "|static_files.root=/srv|rewrite_prefix=/x",
	  "route/api.rewrite_prefix: only allowed with an upstream backend" },
	{ "route_rewrite_relative", "route", RTU "|rewrite_prefix=app",
	  "route/api.rewrite_prefix: must start with '/'" },
	{ "route_rewrite_dotdot", "route", RTU "|rewrite_prefix=/app/../x",
	  "route/api.rewrite_prefix: must not contain '.' or '..' segments" },
	/* route methods, limits, references */
	{ "route_methods_too_many", "route", RTU "|" M17, "route/api.methods: at most 16 entries" },
	{ "route_method_lower", "route", RTU "|methods=get", "route/api.methods[0]: must be upper case" },
	{ "route_method_bad_char", "route", RTU "|methods=GET|methods=GE T",
	  "route/api.methods[1]: must contain only [A-Z_-]" },
	{ "route_method_too_long", "route", RTU "|methods=ABCDEFGHIJKLMNOPQ",
	  "route/api.methods[0]: must be at most 16 characters" },
	{ "route_method_empty", "route", RTU "|methods=", "route/api.methods[0]: must not be empty" },
	{ "route_method_duplicate", "route", RTU "|methods=GET|methods=GET",
	  "route/api.methods[1]: duplicate of methods[0]" },
	{ "route_max_body_too_big", "route", RTU "|max_body_bytes=1073741825",
	  "route/api.max_body_bytes: must be at most 1073741824" },
	{ "route_timeout_too_big", "route", RTU "|request_timeout_ms=3600001",
	  "route/api.request_timeout_ms: must be at most 3600000" },
	{ "route_rate_limits_too_many", "route", RTU "|" L17("rate_limits"),
	  "route/api.rate_limits: at most 16 entries" },
	{ "route_rate_limit_bad_id", "route", RTU "|rate_limits=ok|rate_limits=no way",
	  "route/api.rate_limits[1]: must contain only [A-Za-z0-9._:-]" },
	{ "route_rate_limit_duplicate", "route", RTU "|rate_limits=a|rate_limits=b|rate_limits=a",
	  "route/api.rate_limits[2]: duplicate of rate_limits[0]" },
	{ "route_access_lists_too_many", "route", RTU "|" L17("access_lists"),
	  "route/api.access_lists: at most 16 entries" },
	{ "route_access_list_duplicate", "route", RTU "|access_lists=a|access_lists=a",
	  "route/api.access_lists[1]: duplicate of access_lists[0]" },
	/* upstream */
	{ "upstream_no_endpoints", "upstream", UP,
	  "upstream/backend.endpoints: at least one endpoint is required" },
	{ "upstream_endpoint_empty", "upstream", UP "|endpoints=",
	  "upstream/backend.endpoints[0]: must not be empty" },
	{ "upstream_endpoint_no_port", "upstream", UP "|endpoints=10.0.0.1",
	  "upstream/backend.endpoints[0]: must be host:port" },
	{ "upstream_endpoint_port_zero", "upstream", UP "|endpoints=a.internal:0",
	  "upstream/backend.endpoints[0]: port must be 1..65535" },
	{ "upstream_endpoint_port_too_big", "upstream", UP "|endpoints=a.internal:65536",
	  "upstream/backend.endpoints[0]: port must be 1..65535" },
	{ "upstream_endpoint_port_leading_zero", "upstream", UP "|endpoints=a.internal:080",
	  "upstream/backend.endpoints[0]: port must be 1..65535" },
	{ "upstream_endpoint_port_empty", "upstream", UP "|endpoints=a.internal:",
	  "upstream/backend.endpoints[0]: port must be 1..65535" },
	{ "upstream_endpoint_bare_ipv6", "upstream", UP "|endpoints=2001:db8::1:80",
	  "upstream/backend.endpoints[0]: IPv6 literal must be in brackets" },
	{ "upstream_endpoint_ipv6_no_port", "upstream", UP "|endpoints=[2001:db8::1]",
	  "upstream/backend.endpoints[0]: must be host:port" },
	{ "upstream_endpoint_host_upper", "upstream", UP "|endpoints=API.internal:80",
	  "upstream/backend.endpoints[0]: host must be lower case" },
	{ "upstream_endpoint_missing_host", "upstream", UP "|endpoints=:80",
	  "upstream/backend.endpoints[0]: must be host:port" },
	{ "upstream_endpoint_duplicate", "upstream", UP "|endpoints=a.internal:80|endpoints=a.internal:80",
	  "upstream/backend.endpoints[1]: duplicate of endpoints[0]" },
	{ "upstream_connect_timeout_too_big", "upstream", UP "|endpoints=a:1|connect_timeout_ms=3600001",
	  "upstream/backend.connect_timeout_ms: must be at most 3600000" },
	{ "upstream_read_timeout_too_big", "upstream", UP "|endpoints=a:1|read_timeout_ms=3600001",
	  "upstream/backend.read_timeout_ms: must be at most 3600000" },
	{ "upstream_pool_too_big", "upstream", UP "|endpoints=a:1|keepalive_pool_size=1025",
	  "upstream/backend.keepalive_pool_size: must be at most 1024" },
	/* settings */
	{ "settings_header_space", "settings", "id=global|client_id_header=Client ID",
	  "settings/global.client_id_header: must be an HTTP token (RFC 9110 tchar)" },
	{ "settings_header_colon", "settings", "id=global|client_id_header=X-Client:",
	  "settings/global.client_id_header: must be an HTTP token (RFC 9110 tchar)" },
	{ "settings_header_too_long", "settings", "id=global|client_id_header=" A64 "a",
	  "settings/global.client_id_header: must be at most 64 bytes" },
	{ "settings_default_rate_limit_bad", "settings", "id=global|default_rate_limit=.x",
	  "settings/global.default_rate_limit: must start with a letter or digit" },
	{ "settings_access_lists_too_many", "settings", "id=global|" L17("access_lists"),
	  "settings/global.access_lists: at most 16 entries" },
	{ "settings_access_list_duplicate", "settings", "id=global|access_lists=a|access_lists=a",
	  "settings/global.access_lists[1]: duplicate of access_lists[0]" },
	{ "settings_access_list_empty", "settings", "id=global|access_lists=",
	  "settings/global.access_lists[0]: must not be empty" },
	{ "settings_max_body_too_big", "settings", "id=global|max_body_bytes=1073741825",
	  "settings/global.max_body_bytes: must be at most 1073741824" },
	{ "settings_timeout_too_big", "settings", "id=global|request_timeout_ms=3600001",
	  "settings/global.request_timeout_ms: must be at most 3600000" },
};

ParameterizedTestParameters(policy_invalid, reports_exact_error)
{
	return cr_make_param_array(struct bad_case, bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]));
}

ParameterizedTest(struct bad_case *c, policy_invalid, reports_exact_error)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;
	int rc;

	policy_errs_init(&errs);
	rc = decode_spec(c->kind, c->spec, &errs, &r);
	cr_expect_eq(rc, -EINVAL, "[%s] rc %d", c->name, rc);
	cr_expect_null(r, "[%s] ret written on failure", c->name);
	cr_expect_eq(policy_errs_count(&errs), 1, "[%s] %u errors, first: %s", c->name,
		     policy_errs_count(&errs), errs.n ? errs.msg[0] : "(none)");
	if (errs.n)
		cr_expect_str_eq(errs.msg[0], c->err, "[%s] got '%s'", c->name, errs.msg[0]);
	pool_free();
}

Test(policy_invalid, bad_case_table_is_big_enough)
{
	cr_assert_geq(sizeof(bad_cases) / sizeof(bad_cases[0]), 60);
}

Test(policy_invalid, collects_every_error_in_field_order)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;

	policy_errs_init(&errs);
	cr_assert_eq(decode_spec("route", "id=api|host=API|path_prefix=api|methods=get|"
					  "request_timeout_ms=3600001",
				 &errs, &r),
		     -EINVAL);
	cr_assert_eq(errs.n, 5);
	cr_expect_str_eq(errs.msg[0], "route/api.host: must be lower case");
	cr_expect_str_eq(errs.msg[1], "route/api.path_prefix: must start with '/'");
	cr_expect_str_eq(errs.msg[2], "route/api.backend: one of upstream or static_files is required");
	cr_expect_str_eq(errs.msg[3], "route/api.methods[0]: must be upper case");
	cr_expect_str_eq(errs.msg[4], "route/api.request_timeout_ms: must be at most 3600000");
	pool_free();
}

Test(policy_invalid, appends_to_errors_already_collected)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;

	policy_errs_init(&errs);
	policy_errs_add(&errs, "earlier: problem");
	cr_assert_eq(decode_spec("client", "id=acme|priority=300", &errs, &r), -EINVAL);
	cr_assert_eq(errs.n, 2);
	cr_expect_str_eq(errs.msg[0], "earlier: problem");
	cr_expect_str_eq(errs.msg[1], "client/acme.priority: must be at most 255");
	pool_free();
}

Test(policy_invalid, counts_errors_beyond_capacity)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;
	char spec[256] = "id=acme";

	for (int i = 0; i < 20; i++)
		strcat(spec, "|keys=");
	policy_errs_init(&errs);
	cr_assert_eq(decode_spec("client", spec, &errs, &r), -EINVAL);
	/* 1 for the count, 20 for the empty keys */
	cr_expect_eq(errs.n, POLICY_ERRS_MAX);
	cr_expect_eq(errs.dropped, 21 - POLICY_ERRS_MAX);
	cr_expect_eq(policy_errs_count(&errs), 21);
	cr_expect_str_eq(errs.msg[0], "client/acme.keys: at most 16 entries");
	cr_expect_str_eq(errs.msg[1], "client/acme.keys[0]: must not be empty");
	pool_free();
}

Test(policy_invalid, accepts_null_errs)
{
	struct policy_res *r = NULL;

	cr_expect_eq(decode_spec("client", "id=-x", NULL, &r), -EINVAL);
	cr_expect_eq(decode_spec("", "", NULL, &r), -EINVAL);
	cr_expect_null(r);
	pool_free();
}

Test(policy_invalid, rejects_more_endpoints_than_cap)
{
	char spec[4096] = "id=backend";
	struct policy_errs errs;
	struct policy_res *r = NULL;

	for (int i = 1; i <= POLICY_MAX_ENDPOINTS + 1; i++)
		snprintf(spec + strlen(spec), sizeof(spec) - strlen(spec), "|endpoints=h%d:80", i);
	policy_errs_init(&errs);
	cr_assert_eq(decode_spec("upstream", spec, &errs, &r), -EINVAL);
	cr_assert_eq(errs.n, 1);
	cr_expect_str_eq(errs.msg[0], "upstream/backend.endpoints: at most 64 entries");
	pool_free();
}

/* Access lists big enough to hit the cap are built directly as wire structs. */
static Sluice__V1__AccessList *big_list(size_t n, char ***strs)
{
	Sluice__V1__AccessList *al = malloc(sizeof(*al));
	char **v = calloc(n, sizeof(*v));

	cr_assert(al && v);
	sluice__v1__access_list__init(al);
	al->id = "big";
	for (size_t i = 0; i < n; i++) {
		v[i] = malloc(32);
		cr_assert(v[i]);
		snprintf(v[i], 32, "10.%zu.%zu.%zu/32", (i >> 16) & 255, (i >> 8) & 255, i & 255);
	}
	*strs = v;
	return al;
}

static void big_list_free(Sluice__V1__AccessList *al, char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	free(al);
}

Test(policy_invalid, rejects_more_cidrs_than_cap)
{
	size_t n = POLICY_MAX_CIDRS + 1;
	char **v;
	Sluice__V1__AccessList *al = big_list(n, &v);
	Sluice__V1__Resource res = SLUICE__V1__RESOURCE__INIT;
	struct policy_errs errs;
	struct policy_res *r = NULL;

	al->n_deny = n;
	al->deny = v;
	res.kind_case = SLUICE__V1__RESOURCE__KIND_ACCESS_LIST;
	res.access_list = al;
	policy_errs_init(&errs);
	cr_expect_eq(policy_res_from_pb(&res, &errs, &r), -EINVAL);
	cr_expect_eq(errs.n, 1);
	cr_expect_str_eq(errs.msg[0], "access_list/big.deny: at most 65536 entries");
	big_list_free(al, v, n);
}

Test(policy_valid, finds_duplicate_in_a_full_size_list)
{
	size_t n = POLICY_MAX_CIDRS;
	char **v;
	Sluice__V1__AccessList *al = big_list(n, &v);
	Sluice__V1__Resource res = SLUICE__V1__RESOURCE__INIT;
	struct policy_errs errs;
	struct policy_res *r = NULL;

	al->n_allow = n;
	al->allow = v;
	res.kind_case = SLUICE__V1__RESOURCE__KIND_ACCESS_LIST;
	res.access_list = al;
	policy_errs_init(&errs);
	cr_assert_eq(policy_res_from_pb(&res, &errs, &r), 0);
	cr_expect_eq(r->u.access_list.n_allow, n);
	cr_expect_eq(cidr_table_size(r->u.access_list.allow_table), n);
	policy_res_unref(r);

	strcpy(v[n - 1], "10.0.1.7/32"); /* same as entry 263 */
	r = NULL;
	cr_assert_eq(policy_res_from_pb(&res, &errs, &r), -EINVAL);
	cr_assert_eq(errs.n, 1);
	cr_expect_str_eq(errs.msg[0], "access_list/big.allow[65535]: duplicate of allow[263]");
	big_list_free(al, v, n);
}

/* ---- valid resources: compiled values ---------------------------------- */

Test(policy_valid, client_defaults_to_its_id_as_key)
{
	struct policy_res *r = ok_res("client", "id=acme");
	const struct policy_client *c = &r->u.client;

	cr_expect_eq(r->refcnt, 1);
	cr_expect_eq(r->kind, POLICY_KIND_CLIENT);
	cr_expect_str_eq(r->id, "acme");
	cr_expect_eq(r->id_len, 4);
	cr_expect_eq(r->key_hash, policy_key_hash(POLICY_KIND_CLIENT, "acme", 4));
	cr_assert_eq(c->n_keys, 1);
	cr_expect_str_eq(c->keys[0], "acme");
	cr_expect_eq(c->key_hashes[0], policy_client_key_hash("acme", 4));
	cr_expect_null(c->rate_limit.id);
	cr_expect_eq(c->rate_limit.key_hash, 0);
	cr_expect_eq(c->priority, 0);
	cr_expect_not(c->disabled);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, client_with_keys_and_limit)
{
	struct policy_res *r = ok_res("client", "id=acme|keys=k-1|keys=Bearer~xyz|rate_limit=gold|"
						"priority=255|disabled=true");
	const struct policy_client *c = &r->u.client;

	cr_assert_eq(c->n_keys, 2);
	cr_expect_str_eq(c->keys[0], "k-1");
	cr_expect_str_eq(c->keys[1], "Bearer~xyz");
	cr_expect_eq(c->key_hashes[1], policy_client_key_hash("Bearer~xyz", 10));
	cr_expect_str_eq(c->rate_limit.id, "gold");
	cr_expect_eq(c->rate_limit.key_hash, policy_key_hash(POLICY_KIND_RATE_LIMIT, "gold", 4));
	cr_expect_eq(c->rate_limit.id_len, 4);
	cr_expect_eq(c->priority, 255);
	cr_expect(c->disabled);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, rate_limit_normalizes_burst_and_defaults)
{
	struct policy_res *r = ok_res("rate_limit", "id=rl|algorithm=LEAKY_BUCKET|rate=100|unit=MINUTE");
	const struct policy_rate_limit *rl = &r->u.rate_limit;

	cr_expect_eq(rl->algorithm, POLICY_ALG_LEAKY_BUCKET);
	cr_expect_eq(rl->rate, 100);
	cr_expect_eq(rl->burst, 100);
	cr_expect_eq(rl->unit, POLICY_UNIT_MINUTE);
	cr_expect_eq(rl->unit_ns, 60000000000ull);
	cr_expect_eq(rl->action, POLICY_ACTION_REJECT);
	cr_expect_eq(rl->enforce, POLICY_ENFORCE_PROXY);
	cr_expect_null(rl->sel.client.id);
	cr_expect_not(rl->sel.has_source);
	cr_expect_null(rl->sel.host);
	cr_expect_null(rl->sel.path_prefix);
	cr_expect_null(rl->sel.method);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, rate_limit_with_full_selector)
{
	struct policy_res *r = ok_res("rate_limit",
				      "id=rl|algorithm=SLIDING_WINDOW|rate=1000000|unit=HOUR|burst=5|"
				      "action=SHADOW|selector.client=acme|selector.source_cidr=10.1.0.0/16|"
				      "selector.host=api.example.com|selector.path_prefix=/v1/users/|"
				      "selector.method=POST");
	const struct policy_rate_limit *rl = &r->u.rate_limit;
	struct cidr_addr in, out;

	cr_expect_eq(rl->burst, 5);
	cr_expect_eq(rl->unit_ns, 3600000000000ull);
	cr_expect_eq(rl->action, POLICY_ACTION_SHADOW);
	cr_expect_str_eq(rl->sel.client.id, "acme");
	cr_expect_eq(rl->sel.client.key_hash, policy_key_hash(POLICY_KIND_CLIENT, "acme", 4));
	cr_assert(rl->sel.has_source);
	cr_assert_eq(cidr_addr_parse("10.1.2.3", &in), 0);
	cr_assert_eq(cidr_addr_parse("10.2.0.1", &out), 0);
	cr_expect(cidr_contains(&rl->sel.source, &in));
	cr_expect_not(cidr_contains(&rl->sel.source, &out));
	cr_expect_str_eq(rl->sel.host, "api.example.com");
	cr_expect_str_eq(rl->sel.path_prefix, "/v1/users");
	cr_expect_str_eq(rl->sel.method, "POST");
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, kernel_enforcement_with_client_selector)
{
	struct policy_res *r = ok_res("rate_limit", RL "|enforce=KERNEL|selector.client=acme");

	cr_expect_eq(r->u.rate_limit.enforce, POLICY_ENFORCE_KERNEL);
	policy_res_unref(r);
	r = ok_res("rate_limit", "id=rl|algorithm=LEAKY_BUCKET|rate=1|unit=SECOND|enforce=BOTH");
	cr_expect_eq(r->u.rate_limit.enforce, POLICY_ENFORCE_BOTH);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, access_list_tables_answer_lookups)
{
	struct policy_res *r = ok_res("access_list", "id=office|allow=10.0.0.0/8|allow=10.1.0.0/16|"
						     "allow=2001:db8::/32|deny=10.1.2.0/24");
	const struct policy_access_list *al = &r->u.access_list;
	struct cidr_addr a;
	uint32_t value = 99;

	cr_assert_eq(al->n_allow, 3);
	cr_assert_eq(al->n_deny, 1);
	cr_expect_eq(al->allow[1].prefix_len, 16);
	cr_assert_not_null(al->allow_table);
	cr_assert_not_null(al->deny_table);
	cr_assert_eq(cidr_addr_parse("10.1.9.9", &a), 0);
	cr_expect_eq(cidr_table_lookup(al->allow_table, &a, &value), 16);
	cr_expect_eq(value, 1, "value is the index in the list");
	cr_expect_eq(cidr_table_lookup(al->deny_table, &a, NULL), -ENOENT);
	cr_assert_eq(cidr_addr_parse("10.1.2.3", &a), 0);
	cr_expect_eq(cidr_table_lookup(al->deny_table, &a, &value), 24);
	cr_expect_eq(value, 0);
	cr_assert_eq(cidr_addr_parse("2001:db8::5", &a), 0);
	cr_expect_eq(cidr_table_lookup(al->allow_table, &a, &value), 32);
	cr_expect_eq(value, 2);
	cr_assert_eq(cidr_addr_parse("192.0.2.1", &a), 0);
	cr_expect_eq(cidr_table_lookup(al->allow_table, &a, NULL), -ENOENT);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, access_list_empty_lists_have_no_table)
{
	struct policy_res *r = ok_res("access_list", "id=open|deny=192.0.2.0/24");

	cr_expect_eq(r->u.access_list.n_allow, 0);
	cr_expect_null(r->u.access_list.allow_table);
	cr_expect_not_null(r->u.access_list.deny_table);
	policy_res_unref(r);
	r = ok_res("access_list", "id=none");
	cr_expect_null(r->u.access_list.allow_table);
	cr_expect_null(r->u.access_list.deny_table);
	policy_res_unref(r);
	pool_free();
}

/* A route path and its compiled form; static table. */
struct path_case {
	char path[64];
	char match[64];
	unsigned depth;
};

static struct path_case path_cases[] = {
	{ "/", "/", 0 },
	{ "/api", "/api", 1 },
	{ "/api/", "/api", 1 },
	{ "/api/v1/", "/api/v1", 2 },
	{ "/a/b/c", "/a/b/c", 3 },
	{ "/%7Euser/x:y@z", "/%7Euser/x:y@z", 2 },
	{ "/a.b/..c/...", "/a.b/..c/...", 3 },
	{ "/-._~!$&'()*+,;=:@", "/-._~!$&'()*+,;=:@", 1 },
};

ParameterizedTestParameters(policy_valid, route_match_prefix)
{
	return cr_make_param_array(struct path_case, path_cases, sizeof(path_cases) / sizeof(path_cases[0]));
}

ParameterizedTest(struct path_case *c, policy_valid, route_match_prefix)
{
	char spec[256];
	struct policy_res *r;

	snprintf(spec, sizeof(spec), "id=r|upstream=u|path_prefix=%s", c->path);
	r = ok_res("route", spec);
	cr_expect_str_eq(r->u.route.path_prefix, c->path);
	cr_expect_str_eq(r->u.route.match_prefix, c->match);
	cr_expect_eq(r->u.route.match_prefix_len, strlen(c->match));
	cr_expect_eq(r->u.route.match_depth, c->depth, "%s: depth %u", c->path, r->u.route.match_depth);
	policy_res_unref(r);
	pool_free();
}

/* A host every route must accept; static table. */
struct host_case {
	char host[128];
};

static struct host_case good_hosts[] = {
	{ "" }, { "example.com" }, { "a-b.example" }, { "localhost" }, { "10.0.0.1" },
	{ "[2001:db8::1]" }, { "[::ffff:10.0.0.1]" }, { "xn--bcher-kva.example" },
	{ "123.example" }, { "a." A16 A16 A16 "aaaaaaaaaaaaaaa" },
};

ParameterizedTestParameters(policy_valid, route_host_forms)
{
	return cr_make_param_array(struct host_case, good_hosts, sizeof(good_hosts) / sizeof(good_hosts[0]));
}

ParameterizedTest(struct host_case *c, policy_valid, route_host_forms)
{
	char spec[256];
	struct policy_res *r;

	snprintf(spec, sizeof(spec), "id=r|path_prefix=/|upstream=u|host=%s", c->host);
	r = ok_res("route", spec);
	cr_expect_str_eq(r->u.route.host, c->host);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, route_upstream_backend_and_refs)
{
	struct policy_res *r = ok_res("route", "id=api|host=api.example.com|path_prefix=/api/|"
					       "upstream=backend|rewrite_prefix=/app/|methods=GET|"
					       "methods=PROPFIND|methods=X_Y-Z|max_body_bytes=1073741824|"
					       "request_timeout_ms=3600000|rate_limits=r1|rate_limits=r2|"
					       "access_lists=office");
	const struct policy_route *rt = &r->u.route;

	cr_expect_str_eq(rt->host, "api.example.com");
	cr_expect_eq(rt->backend, POLICY_BACKEND_UPSTREAM);
	cr_expect_str_eq(rt->upstream.id, "backend");
	cr_expect_eq(rt->upstream.key_hash, policy_key_hash(POLICY_KIND_UPSTREAM, "backend", 7));
	cr_expect_null(rt->static_root);
	cr_expect_str_eq(rt->rewrite_prefix, "/app/");
	cr_assert_eq(rt->n_methods, 3);
	cr_expect_str_eq(rt->methods[1], "PROPFIND");
	cr_expect_str_eq(rt->methods[2], "X_Y-Z");
	cr_expect_eq(rt->max_body_bytes, POLICY_MAX_BODY_BYTES);
	cr_expect_eq(rt->request_timeout_ms, POLICY_MAX_TIMEOUT_MS);
	cr_assert_eq(rt->n_rate_limits, 2);
	cr_expect_str_eq(rt->rate_limits[1].id, "r2");
	cr_expect_eq(rt->rate_limits[1].key_hash, policy_key_hash(POLICY_KIND_RATE_LIMIT, "r2", 2));
	cr_assert_eq(rt->n_access_lists, 1);
	cr_expect_eq(rt->access_lists[0].key_hash,
		     policy_key_hash(POLICY_KIND_ACCESS_LIST, "office", 6));
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, route_static_backend_defaults)
{
	struct policy_res *r = ok_res("route", "id=site|path_prefix=/|static_files.root=/srv/www/");
	const struct policy_route *rt = &r->u.route;

	cr_expect_str_eq(rt->host, "");
	cr_expect_eq(rt->backend, POLICY_BACKEND_STATIC);
	cr_expect_str_eq(rt->static_root, "/srv/www/");
	cr_expect_str_eq(rt->static_index, "index.html");
	cr_expect_not(rt->static_in_memory);
	cr_expect_null(rt->upstream.id);
	cr_expect_null(rt->rewrite_prefix);
	cr_expect_eq(rt->n_methods, 0);
	cr_expect_null(rt->methods);
	cr_expect_eq(rt->max_body_bytes, 0, "0 means the settings default");
	cr_expect_eq(rt->request_timeout_ms, 0);
	cr_expect_eq(rt->n_rate_limits, 0);
	cr_expect_eq(rt->n_access_lists, 0);
	policy_res_unref(r);

	r = ok_res("route", "id=site|path_prefix=/|static_files.root=/srv/a.txt|"
			    "static_files.index=home.htm|static_files.in_memory=true");
	cr_expect_str_eq(r->u.route.static_index, "home.htm");
	cr_expect(r->u.route.static_in_memory);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, upstream_parses_endpoints_and_applies_defaults)
{
	struct policy_res *r = ok_res("upstream", "id=backend|endpoints=10.0.0.1:8080|"
						  "endpoints=[2001:db8::1]:443|endpoints=app.internal:1|"
						  "endpoints=app.internal:65535");
	const struct policy_upstream *up = &r->u.upstream;

	cr_assert_eq(up->n_endpoints, 4);
	cr_expect_str_eq(up->endpoints[1], "[2001:db8::1]:443");
	cr_expect_str_eq(up->parsed[0].host, "10.0.0.1");
	cr_expect_eq(up->parsed[0].port, 8080);
	cr_expect_str_eq(up->parsed[1].host, "2001:db8::1");
	cr_expect_eq(up->parsed[1].port, 443);
	cr_expect_str_eq(up->parsed[2].host, "app.internal");
	cr_expect_eq(up->parsed[2].port, 1);
	cr_expect_eq(up->parsed[3].port, 65535);
	cr_expect_eq(up->connect_timeout_ms, POLICY_DEFAULT_CONNECT_TIMEOUT_MS);
	cr_expect_eq(up->read_timeout_ms, POLICY_DEFAULT_READ_TIMEOUT_MS);
	cr_expect_eq(up->keepalive_pool_size, POLICY_DEFAULT_POOL_SIZE);
	policy_res_unref(r);

	r = ok_res("upstream", "id=b|endpoints=a:1|connect_timeout_ms=5|read_timeout_ms=6|"
			       "keepalive_pool_size=1024");
	cr_expect_eq(r->u.upstream.connect_timeout_ms, 5);
	cr_expect_eq(r->u.upstream.read_timeout_ms, 6);
	cr_expect_eq(r->u.upstream.keepalive_pool_size, 1024);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, settings_defaults)
{
	struct policy_res *r = ok_res("settings", "id=global");
	const struct policy_settings *st = &r->u.settings;

	cr_expect_str_eq(st->client_id_header, "Client-ID");
	cr_expect_null(st->default_rate_limit.id);
	cr_expect_not(st->disabled);
	cr_expect_eq(st->n_access_lists, 0);
	cr_expect_eq(st->max_body_bytes, 10ull << 20);
	cr_expect_eq(st->request_timeout_ms, 60000);
	policy_res_unref(r);
	pool_free();
}

Test(policy_valid, settings_explicit_values)
{
	struct policy_res *r = ok_res("settings", "id=global|client_id_header=X-Api-Key|"
						  "default_rate_limit=anon|disabled=true|"
						  "access_lists=blocklist|access_lists=office|"
						  "max_body_bytes=1024|request_timeout_ms=5000");
	const struct policy_settings *st = &r->u.settings;

	cr_expect_str_eq(st->client_id_header, "X-Api-Key");
	cr_expect_str_eq(st->default_rate_limit.id, "anon");
	cr_expect_eq(st->default_rate_limit.key_hash,
		     policy_key_hash(POLICY_KIND_RATE_LIMIT, "anon", 4));
	cr_expect(st->disabled);
	cr_assert_eq(st->n_access_lists, 2);
	cr_expect_str_eq(st->access_lists[0].id, "blocklist");
	cr_expect_eq(st->max_body_bytes, 1024);
	cr_expect_eq(st->request_timeout_ms, 5000);
	policy_res_unref(r);
	pool_free();
}

/* ---- canonical encoding -------------------------------------------------- */

/* Minimal protobuf writer for hand-made byte orders; on the test's stack. */
struct wbuf {
	uint8_t b[512];
	size_t n;
};

static void w_varint(struct wbuf *w, uint64_t v)
{
	do {
		uint8_t byte = v & 0x7f;

		v >>= 7;
		w->b[w->n++] = byte | (v ? 0x80 : 0);
	} while (v);
}

static void w_str(struct wbuf *w, unsigned field, const char *s)
{
	w_varint(w, (uint64_t)field << 3 | 2);
	w_varint(w, strlen(s));
	memcpy(w->b + w->n, s, strlen(s));
	w->n += strlen(s);
}

static void w_uint(struct wbuf *w, unsigned field, uint64_t v)
{
	w_varint(w, (uint64_t)field << 3);
	w_varint(w, v);
}

static void w_sub(struct wbuf *w, unsigned field, const struct wbuf *sub)
{
	w_varint(w, (uint64_t)field << 3 | 2);
	w_varint(w, sub->n);
	memcpy(w->b + w->n, sub->b, sub->n);
	w->n += sub->n;
}

static struct policy_res *decode_bytes(const struct wbuf *w)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;

	policy_errs_init(&errs);
	cr_assert_eq(policy_res_decode(w->b, w->n, &errs, &r), 0, "%s",
		     errs.n ? errs.msg[0] : "(no message)");
	return r;
}

/* A Resource{route: ...}; order 0 writes fields ascending, 1 descending;
 * `unknown` appends field 99 (varint) inside the Route. */
static struct policy_res *route_bytes(int order, bool unknown, const char *path)
{
	struct wbuf route = { .n = 0 }, res = { .n = 0 };

	if (order == 0) {
		w_str(&route, 1, "api");
		w_str(&route, 3, path);
		w_str(&route, 4, "backend");
		w_str(&route, 7, "GET");
		w_str(&route, 7, "POST");
		w_uint(&route, 9, 500);
	} else {
		w_uint(&route, 9, 500);
		w_str(&route, 7, "GET");
		w_str(&route, 4, "backend");
		w_str(&route, 3, path);
		w_str(&route, 7, "POST");
		w_str(&route, 1, "api");
	}
	if (unknown) {
		route.b[route.n++] = 0x98; /* field 99, wire type 0 */
		route.b[route.n++] = 0x06;
		w_varint(&route, 12345);
	}
	w_sub(&res, 4, &route);
	if (unknown) {
		res.b[res.n++] = 0x98;
		res.b[res.n++] = 0x06;
		w_varint(&res, 1);
	}
	return decode_bytes(&res);
}

Test(policy_canon, equal_for_permuted_and_unknown_fields)
{
	struct policy_res *a = route_bytes(0, false, "/api");
	struct policy_res *b = route_bytes(1, false, "/api");
	struct policy_res *c = route_bytes(1, true, "/api");
	struct policy_res *d = route_bytes(0, true, "/api");

	cr_assert_eq(a->canon_len, b->canon_len);
	cr_expect_eq(memcmp(a->canon, b->canon, a->canon_len), 0);
	cr_expect(policy_res_equal(a, b));
	cr_expect(policy_res_equal(a, c));
	cr_expect(policy_res_equal(a, d));
	cr_expect_eq(a->content_hash[0], c->content_hash[0]);
	cr_expect_eq(a->content_hash[1], c->content_hash[1]);
	cr_expect_eq(a->content_hash[0], d->content_hash[0]);
	policy_res_unref(a);
	policy_res_unref(b);
	policy_res_unref(c);
	policy_res_unref(d);
}

Test(policy_canon, different_for_different_content)
{
	struct policy_res *a = route_bytes(0, false, "/api");
	struct policy_res *b = route_bytes(0, false, "/api/");
	struct policy_res *c = ok_res("route", "id=api|path_prefix=/api|upstream=backend");

	/* "/api" and "/api/" match the same requests, but the canonical form
	 * keeps what the operator wrote. */
	cr_expect_not(policy_res_equal(a, b));
	cr_expect(a->content_hash[0] != b->content_hash[0] || a->content_hash[1] != b->content_hash[1]);
	cr_expect_not(policy_res_equal(a, c), "methods and timeout differ");
	cr_expect_not(policy_res_equal(a, NULL));
	cr_expect(policy_res_equal(a, a));
	policy_res_unref(a);
	policy_res_unref(b);
	policy_res_unref(c);
	pool_free();
}

Test(policy_canon, bytes_are_ascending_field_order_without_defaults)
{
	struct policy_res *r = ok_res("client", "id=acme|keys=k|priority=0|disabled=false");
	static const uint8_t want[] = { 0x0a, 0x09, 0x0a, 0x04, 'a', 'c', 'm', 'e', 0x12, 0x01, 'k' };
	XXH128_hash_t h;

	cr_assert_eq(r->canon_len, sizeof(want));
	cr_expect_eq(memcmp(r->canon, want, sizeof(want)), 0);
	h = XXH3_128bits(want, sizeof(want));
	cr_expect_eq(r->content_hash[0], h.low64);
	cr_expect_eq(r->content_hash[1], h.high64);
	policy_res_unref(r);
	pool_free();
}

Test(policy_canon, empty_selector_equals_absent_selector)
{
	struct wbuf rl = { .n = 0 }, rl2 = { .n = 0 }, sel = { .n = 0 }, res = { .n = 0 },
		    res2 = { .n = 0 };
	struct policy_res *a, *b;

	w_str(&rl, 1, "rl");
	w_uint(&rl, 3, 1);
	w_uint(&rl, 4, 10);
	w_uint(&rl, 5, 1);
	memcpy(&rl2, &rl, sizeof(rl));
	w_sub(&rl2, 2, &sel); /* selector present, all fields empty */
	w_sub(&res, 2, &rl);
	w_sub(&res2, 2, &rl2);
	a = decode_bytes(&res);
	b = decode_bytes(&res2);
	cr_expect(policy_res_equal(a, b));
	policy_res_unref(a);
	policy_res_unref(b);
}

Test(policy_canon, content_hash_is_xxh3_128_of_canon_and_stable)
{
	struct policy_res *a = ok_res("upstream", "id=b|endpoints=a:1");
	struct policy_res *b = ok_res("upstream", "id=b|endpoints=a:1");
	XXH128_hash_t h = XXH3_128bits(a->canon, a->canon_len);

	cr_expect_eq(a->content_hash[0], h.low64);
	cr_expect_eq(a->content_hash[1], h.high64);
	cr_expect_eq(a->content_hash[0], b->content_hash[0]);
	cr_expect_eq(a->content_hash[1], b->content_hash[1]);
	cr_expect_neq(a, b);
	policy_res_unref(a);
	policy_res_unref(b);
	pool_free();
}

Test(policy_canon, to_pb_returns_the_canonical_message)
{
	struct policy_res *r = route_bytes(1, true, "/api");
	Sluice__V1__Resource *m = policy_res_to_pb(r);
	uint8_t buf[256];
	size_t n;

	cr_assert_not_null(m);
	cr_assert_eq(m->kind_case, SLUICE__V1__RESOURCE__KIND_ROUTE);
	cr_expect_str_eq(m->route->id, "api");
	cr_expect_str_eq(m->route->upstream, "backend");
	cr_assert_eq(m->route->n_methods, 2);
	cr_expect_str_eq(m->route->methods[1], "POST");
	cr_expect_null(m->route->base.unknown_fields, "unknown fields dropped");
	n = sluice__v1__resource__pack(m, buf);
	cr_assert_eq(n, r->canon_len);
	cr_expect_eq(memcmp(buf, r->canon, n), 0);
	sluice__v1__resource__free_unpacked(m, NULL);
	policy_res_unref(r);
}

Test(policy_canon, from_pb_accepts_hand_built_messages_with_null_parts)
{
	Sluice__V1__Resource res = SLUICE__V1__RESOURCE__INIT;
	Sluice__V1__RateLimit rl = SLUICE__V1__RATE_LIMIT__INIT;
	struct policy_errs errs;
	struct policy_res *r = NULL;

	res.kind_case = SLUICE__V1__RESOURCE__KIND_RATE_LIMIT;
	res.rate_limit = &rl;
	rl.id = "rl";
	rl.algorithm = SLUICE__V1__ALGORITHM__TOKEN_BUCKET;
	rl.rate = 3;
	rl.unit = SLUICE__V1__RATE_UNIT__SECOND;
	policy_errs_init(&errs);
	cr_assert_eq(policy_res_from_pb(&res, &errs, &r), 0);
	cr_expect_eq(r->u.rate_limit.burst, 3);
	policy_res_unref(r);

	res.rate_limit = NULL; /* the kind is set but the message missing */
	r = NULL;
	cr_assert_eq(policy_res_from_pb(&res, &errs, &r), -EINVAL);
	cr_expect_str_eq(errs.msg[0], "rate_limit/.id: required");
}

Test(policy_decode, garbage_is_ebadmsg)
{
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t truncated[] = { 0x0a, 0x10, 0x0a, 0x04, 'a' };
	static const uint8_t bad_wire_type[] = { 0x0f, 0x00 };
	struct policy_errs errs;
	struct policy_res *r = NULL;

	policy_errs_init(&errs);
	cr_expect_eq(policy_res_decode(garbage, sizeof(garbage), &errs, &r), -EBADMSG);
	cr_expect_eq(policy_res_decode(truncated, sizeof(truncated), &errs, &r), -EBADMSG);
	cr_expect_eq(policy_res_decode(bad_wire_type, sizeof(bad_wire_type), &errs, &r), -EBADMSG);
	cr_expect_null(r);
	cr_expect_eq(policy_errs_count(&errs), 0);
}

Test(policy_decode, empty_buffer_has_no_kind)
{
	struct policy_errs errs;
	struct policy_res *r = NULL;

	policy_errs_init(&errs);
	cr_expect_eq(policy_res_decode(NULL, 0, &errs, &r), -EINVAL);
	cr_assert_eq(errs.n, 1);
	cr_expect_str_eq(errs.msg[0], "resource.kind: not set");
}

/* ---- names, ids, hashes -------------------------------------------------- */

Test(policy_names, kind_names_round_trip)
{
	static const char *names[] = { NULL, "client", "rate_limit", "access_list",
				       "route", "upstream", "settings" };

	for (int k = POLICY_KIND_MIN; k <= POLICY_KIND_MAX; k++) {
		cr_expect_str_eq(policy_kind_name((enum policy_kind)k), names[k]);
		cr_expect_eq((int)policy_kind_from_name(names[k]), k);
	}
	cr_expect_null(policy_kind_name(0));
	cr_expect_null(policy_kind_name(7));
	cr_expect_null(policy_kind_name((enum policy_kind)-1));
	cr_expect_eq(policy_kind_from_name("Client"), 0);
	cr_expect_eq(policy_kind_from_name(""), 0);
	cr_expect_eq(policy_kind_from_name(NULL), 0);
}

/* A name and whether it is valid; static table. */
struct valid_case {
	char s[160];
	bool ok;
};

static struct valid_case id_cases[] = {
	{ "a", true }, { "0", true }, { "Acme-Corp_1.eu:west", true }, { A64 A64, true },
	{ "", false }, { "-a", false }, { ".a", false }, { "_a", false }, { ":a", false },
	{ "a b", false }, { "a/b", false }, { "a\xc3\xa9", false }, { A64 A64 "a", false },
};

ParameterizedTestParameters(policy_names, id_valid)
{
	return cr_make_param_array(struct valid_case, id_cases, sizeof(id_cases) / sizeof(id_cases[0]));
}

ParameterizedTest(struct valid_case *c, policy_names, id_valid)
{
	cr_expect_eq(policy_id_valid(c->s), c->ok, "'%s'", c->s);
	cr_expect_eq(policy_id_problem(c->s) == NULL, c->ok, "'%s'", c->s);
}

static struct valid_case ruleset_cases[] = {
	{ "prod", true }, { "eu-west.1_a", true }, { "0", true }, { A64, true },
	{ "", false }, { "Prod", false }, { "-prod", false }, { "prod eu", false },
	{ "prod:1", false }, { A64 "a", false },
};

ParameterizedTestParameters(policy_names, ruleset_name_valid)
{
	return cr_make_param_array(struct valid_case, ruleset_cases,
				   sizeof(ruleset_cases) / sizeof(ruleset_cases[0]));
}

ParameterizedTest(struct valid_case *c, policy_names, ruleset_name_valid)
{
	cr_expect_eq(policy_ruleset_name_valid(c->s), c->ok, "'%s'", c->s);
	cr_expect_eq(policy_ruleset_name_problem(c->s) == NULL, c->ok, "'%s'", c->s);
}

Test(policy_names, null_is_not_valid)
{
	cr_expect_not(policy_id_valid(NULL));
	cr_expect_not(policy_ruleset_name_valid(NULL));
}

Test(policy_hash, fnv1a_test_vectors)
{
	cr_expect_eq(policy_client_key_hash("", 0), 0xcbf29ce484222325ull);
	cr_expect_eq(policy_client_key_hash("a", 1), 0xaf63dc4c8601ec8cull);
	cr_expect_eq(policy_client_key_hash("foobar", 6), 0x85944171f73967e8ull);
}

Test(policy_hash, key_hash_is_xxh3_of_kind_byte_and_id)
{
	uint8_t buf[1 + 300];
	char id[301];

	memset(id, 'x', sizeof(id) - 1);
	id[300] = '\0';
	buf[0] = POLICY_KIND_ROUTE;
	memcpy(buf + 1, "api", 3);
	cr_expect_eq(policy_key_hash(POLICY_KIND_ROUTE, "api", 3), XXH3_64bits(buf, 4));
	/* long ids take the streaming path; the value must not change */
	memcpy(buf + 1, id, 300);
	cr_expect_eq(policy_key_hash(POLICY_KIND_ROUTE, id, 300), XXH3_64bits(buf, 301));
	cr_expect_neq(policy_key_hash(POLICY_KIND_ROUTE, "api", 3),
		      policy_key_hash(POLICY_KIND_UPSTREAM, "api", 3));
}

Test(policy_hash, key_hash_never_zero)
{
	char id[32];

	cr_expect_neq(policy_key_hash(POLICY_KIND_CLIENT, "", 0), 0);
	for (int k = POLICY_KIND_MIN; k <= POLICY_KIND_MAX; k++) {
		for (int i = 0; i < 20000; i++) {
			int n = snprintf(id, sizeof(id), "id-%d", i);

			cr_assert_neq(policy_key_hash((enum policy_kind)k, id, (size_t)n), 0);
		}
	}
}

/* ---- errors -------------------------------------------------------------- */

Test(policy_errs, truncates_long_messages)
{
	struct policy_errs e;
	char big[600];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	policy_errs_init(&e);
	policy_errs_add(&e, "%s", big);
	cr_assert_eq(e.n, 1);
	cr_expect_eq(strlen(e.msg[0]), POLICY_ERR_LEN - 1);
}

Test(policy_errs, init_resets)
{
	struct policy_errs e;

	memset(&e, 0x55, sizeof(e));
	policy_errs_init(&e);
	cr_expect_eq(policy_errs_count(&e), 0);
	for (int i = 0; i < POLICY_ERRS_MAX + 3; i++)
		policy_errs_add(&e, "e%d", i);
	cr_expect_eq(e.n, POLICY_ERRS_MAX);
	cr_expect_eq(e.dropped, 3);
	cr_expect_str_eq(e.msg[POLICY_ERRS_MAX - 1], "e15");
}

/* ---- reference counting -------------------------------------------------- */

Test(policy_ref, ref_and_unref_balance)
{
	struct policy_res *r = ok_res("access_list", "id=a|allow=10.0.0.0/8|deny=10.1.0.0/16");

	cr_expect_eq(policy_res_ref(r), r);
	cr_expect_eq(r->refcnt, 2);
	policy_res_unref(r);
	cr_expect_eq(r->refcnt, 1);
	policy_res_unref(r); /* frees, with both tables: ASan reports a leak otherwise */
	policy_res_unref(NULL);
	cr_expect_null(policy_res_ref(NULL));
	pool_free();
}

static void *ref_storm(void *arg)
{
	struct policy_res *r = arg;

	for (int i = 0; i < 100000; i++) {
		policy_res_ref(r);
		policy_res_unref(r);
	}
	return NULL;
}

Test(policy_ref, concurrent_ref_unref_keeps_count)
{
	struct policy_res *r = ok_res("client", "id=acme");
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, ref_storm, r), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cr_expect_eq(r->refcnt, 1);
	policy_res_unref(r);
	pool_free();
}

/* ---- deltas -------------------------------------------------------------- */

Test(policy_delta, new_validates_ruleset_name)
{
	struct policy_delta *d = (struct policy_delta *)0x1;

	cr_expect_eq(policy_delta_new("Bad Name", 1, 2, &d), -EINVAL);
	cr_expect_eq(d, (struct policy_delta *)0x1, "ret untouched on failure");
	cr_assert_eq(policy_delta_new("prod", 5, 9, &d), 0);
	cr_expect_str_eq(d->ruleset, "prod");
	cr_expect_eq(d->from_version, 5);
	cr_expect_eq(d->to_version, 9);
	cr_expect_eq(d->n_upserts, 0);
	cr_expect_eq(d->n_removes, 0);
	policy_delta_free(d);
	policy_delta_free(NULL);
}

Test(policy_delta, holds_references_and_grows)
{
	struct policy_delta *d;
	struct policy_res *r = ok_res("client", "id=acme");
	char id[32];

	cr_assert_eq(policy_delta_new("prod", 0, 1, &d), 0);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(policy_delta_add_upsert(d, r), 0);
	cr_expect_eq(r->refcnt, 1001);
	for (int i = 0; i < 1000; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		cr_assert_eq(policy_delta_add_remove(d, POLICY_KIND_ROUTE, id), 0);
	}
	cr_expect_eq(d->n_upserts, 1000);
	cr_expect_eq(d->n_removes, 1000);
	cr_expect_str_eq(d->removes[999].id, "r999");
	cr_expect_eq(d->removes[999].kind, POLICY_KIND_ROUTE);
	cr_expect_geq(d->cap_upserts, d->n_upserts);
	policy_delta_free(d);
	cr_expect_eq(r->refcnt, 1);
	policy_res_unref(r);
	pool_free();
}

Test(policy_delta, add_remove_validates_key)
{
	struct policy_delta *d;

	cr_assert_eq(policy_delta_new("prod", 0, 1, &d), 0);
	cr_expect_eq(policy_delta_add_remove(d, 0, "a"), -EINVAL);
	cr_expect_eq(policy_delta_add_remove(d, 7, "a"), -EINVAL);
	cr_expect_eq(policy_delta_add_remove(d, POLICY_KIND_CLIENT, ""), -EINVAL);
	cr_expect_eq(policy_delta_add_remove(d, POLICY_KIND_CLIENT, "a b"), -EINVAL);
	cr_expect_eq(policy_delta_add_remove(d, POLICY_KIND_SETTINGS, "main"), -EINVAL);
	cr_expect_eq(policy_delta_add_remove(d, POLICY_KIND_SETTINGS, "global"), 0);
	cr_expect_eq(policy_delta_add_upsert(d, NULL), -EINVAL);
	cr_expect_eq(d->n_removes, 1);
	policy_delta_free(d);
}

Test(policy_delta, wire_round_trip)
{
	struct policy_delta *d, *back = NULL;
	struct policy_res *a = ok_res("client", "id=acme|keys=k1");
	struct policy_res *b = ok_res("route", RTU);
	Sluice__V1__Delta *m, *m2;
	struct policy_errs errs;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(policy_delta_new("prod", 41, 42, &d), 0);
	cr_assert_eq(policy_delta_add_upsert(d, a), 0);
	cr_assert_eq(policy_delta_add_upsert(d, b), 0);
	cr_assert_eq(policy_delta_add_remove(d, POLICY_KIND_UPSTREAM, "old"), 0);
	m = policy_delta_to_pb(d);
	cr_assert_not_null(m);
	cr_expect_str_eq(m->ruleset, "prod");
	cr_expect_eq(m->from_version, 41);
	cr_expect_eq(m->to_version, 42);
	cr_assert_eq(m->n_upserts, 2);
	cr_assert_eq(m->n_removes, 1);
	cr_expect_eq(m->removes[0]->kind, SLUICE__V1__KIND__UPSTREAM);
	cr_expect_str_eq(m->removes[0]->id, "old");

	/* through bytes, as the sync stream carries it */
	len = sluice__v1__delta__get_packed_size(m);
	buf = malloc(len);
	cr_assert(buf);
	sluice__v1__delta__pack(m, buf);
	m2 = sluice__v1__delta__unpack(NULL, len, buf);
	cr_assert_not_null(m2);
	policy_errs_init(&errs);
	cr_assert_eq(policy_delta_from_pb(m2, &errs, &back), 0, "%s", errs.n ? errs.msg[0] : "");
	cr_expect_str_eq(back->ruleset, "prod");
	cr_expect_eq(back->from_version, 41);
	cr_expect_eq(back->to_version, 42);
	cr_assert_eq(back->n_upserts, 2);
	cr_expect(policy_res_equal(back->upserts[0], a));
	cr_expect(policy_res_equal(back->upserts[1], b));
	cr_assert_eq(back->n_removes, 1);
	cr_expect_eq(back->removes[0].kind, POLICY_KIND_UPSTREAM);
	cr_expect_str_eq(back->removes[0].id, "old");

	sluice__v1__delta__free_unpacked(m2, NULL);
	free(buf);
	policy_delta_pb_free(m);
	policy_delta_pb_free(NULL);
	policy_delta_free(back);
	policy_delta_free(d);
	policy_res_unref(a);
	policy_res_unref(b);
	pool_free();
}

Test(policy_delta, empty_delta_round_trips)
{
	struct policy_delta *d, *back = NULL;
	Sluice__V1__Delta *m;

	cr_assert_eq(policy_delta_new("prod", 0, 0, &d), 0);
	m = policy_delta_to_pb(d);
	cr_assert_not_null(m);
	cr_expect_eq(m->n_upserts, 0);
	cr_assert_eq(policy_delta_from_pb(m, NULL, &back), 0);
	cr_expect_eq(back->n_upserts + back->n_removes, 0);
	policy_delta_pb_free(m);
	policy_delta_free(back);
	policy_delta_free(d);
}

Test(policy_delta, from_pb_reports_every_bad_element)
{
	Sluice__V1__Delta m = SLUICE__V1__DELTA__INIT;
	Sluice__V1__Resource *ups[3];
	Sluice__V1__ResourceKey k0 = SLUICE__V1__RESOURCE_KEY__INIT, k1 = SLUICE__V1__RESOURCE_KEY__INIT,
				k2 = SLUICE__V1__RESOURCE_KEY__INIT;
	Sluice__V1__ResourceKey *keys[] = { &k0, &k1, &k2 };
	struct policy_errs errs;
	struct policy_delta *d = (struct policy_delta *)0x1;

	ups[0] = build("client", "id=ok");
	ups[1] = build("", "");
	ups[2] = build("route", "id=r|path_prefix=x|upstream=u");
	m.ruleset = "Prod";
	m.n_upserts = 3;
	m.upserts = ups;
	k0.kind = SLUICE__V1__KIND__ROUTE;
	k0.id = "gone";
	k1.kind = 0;
	k1.id = "x y";
	k2.kind = 12;
	k2.id = "z";
	m.n_removes = 3;
	m.removes = keys;
	policy_errs_init(&errs);
	cr_assert_eq(policy_delta_from_pb(&m, &errs, &d), -EINVAL);
	cr_expect_eq(d, (struct policy_delta *)0x1);
	cr_assert_eq(errs.n, 6);
	cr_expect_str_eq(errs.msg[0], "delta.ruleset: must start with a lower-case letter or digit");
	cr_expect_str_eq(errs.msg[1], "delta.upserts[1]: resource.kind: not set");
	cr_expect_str_eq(errs.msg[2], "route/r.path_prefix: must start with '/'");
	cr_expect_str_eq(errs.msg[3], "delta.removes[1].kind: not set");
	cr_expect_str_eq(errs.msg[4], "delta.removes[1].id: must contain only [A-Za-z0-9._:-]");
	cr_expect_str_eq(errs.msg[5], "delta.removes[2].kind: unknown value 12");
	pool_free();
}

Test(policy_delta, from_pb_rejects_a_key_twice)
{
	Sluice__V1__Delta m = SLUICE__V1__DELTA__INIT;
	Sluice__V1__Resource *ups[3];
	Sluice__V1__ResourceKey k0 = SLUICE__V1__RESOURCE_KEY__INIT;
	Sluice__V1__ResourceKey *keys[] = { &k0 };
	struct policy_errs errs;
	struct policy_delta *d = NULL;

	ups[0] = build("client", "id=a");
	ups[1] = build("route", RTU);
	ups[2] = build("client", "id=a|priority=3");
	m.ruleset = "prod";
	m.n_upserts = 3;
	m.upserts = ups;
	k0.kind = SLUICE__V1__KIND__ROUTE;
	k0.id = "api";
	m.n_removes = 1;
	m.removes = keys;
	policy_errs_init(&errs);
	cr_assert_eq(policy_delta_from_pb(&m, &errs, &d), -EINVAL);
	cr_assert_eq(errs.n, 2);
	cr_expect_str_eq(errs.msg[0], "delta.upserts[2]: client/a already appears at delta.upserts[0]");
	cr_expect_str_eq(errs.msg[1], "delta.removes[0]: route/api already appears at delta.upserts[1]");
	cr_expect_null(d);

	/* the same id under two kinds is two keys */
	k0.kind = SLUICE__V1__KIND__UPSTREAM;
	m.n_upserts = 2;
	cr_assert_eq(policy_delta_from_pb(&m, NULL, &d), 0);
	policy_delta_free(d);
	pool_free();
}
