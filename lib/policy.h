/* policy.h - the Sluice policy model in the project's own structs.
 *
 * A resource (client, rate limit, access list, route, upstream, settings) is
 * decoded from its sluice.v1.Resource wire form, validated field by field and
 * frozen: after policy_res_decode() returns, nothing in it changes. Resources
 * are reference counted and shared by every snapshot that holds them.
 * Cross-resource rules (references, duplicates across resources, counts) are
 * checked by snapshot.c, which sees the whole ruleset.
 * Conversion from protobuf-c structs lives in policy_wire.h; nothing else in
 * lib/ sees a protobuf-c type.
 */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"

/* Values equal sluice.v1.Kind. */
enum policy_kind {
	POLICY_KIND_CLIENT = 1,
	POLICY_KIND_RATE_LIMIT = 2,
	POLICY_KIND_ACCESS_LIST = 3,
	POLICY_KIND_ROUTE = 4,
	POLICY_KIND_UPSTREAM = 5,
	POLICY_KIND_SETTINGS = 6,
};
#define POLICY_KIND_MIN POLICY_KIND_CLIENT
#define POLICY_KIND_MAX POLICY_KIND_SETTINGS

/* Values equal sluice.v1.Algorithm / RateUnit / Action / Enforcement. */
enum policy_algorithm {
	POLICY_ALG_TOKEN_BUCKET = 1,
	POLICY_ALG_LEAKY_BUCKET = 2,
	POLICY_ALG_SLIDING_WINDOW = 3,
};
enum policy_unit { POLICY_UNIT_SECOND = 1, POLICY_UNIT_MINUTE = 2, POLICY_UNIT_HOUR = 3 };
enum policy_action { POLICY_ACTION_REJECT = 1, POLICY_ACTION_SHADOW = 2 };
enum policy_enforce { POLICY_ENFORCE_PROXY = 1, POLICY_ENFORCE_KERNEL = 2, POLICY_ENFORCE_BOTH = 3 };

/* Hard caps. Anything a policy author can make the planes allocate is
 * bounded by one of these; validation names the cap it hit. */
#define POLICY_ID_MAX_LEN 128          /* bytes of a resource id */
#define POLICY_RULESET_NAME_MAX_LEN 64
#define POLICY_MAX_RESOURCES (1u << 20) /* per ruleset, all kinds */
#define POLICY_MAX_ROUTES 10000
#define POLICY_MAX_CLIENT_KEYS 16       /* per client */
#define POLICY_MAX_KEY_LEN 256          /* bytes of one client key */
#define POLICY_MAX_CIDRS 65536          /* per access list and direction */
#define POLICY_MAX_REFS 16              /* rate_limits / access_lists / methods per route */
#define POLICY_MAX_ENDPOINTS 64         /* per upstream */
#define POLICY_MAX_HOST_LEN 253
#define POLICY_MAX_PATH_LEN 1024
#define POLICY_MAX_RATE 1000000000ull   /* per unit */
#define POLICY_MAX_SLIDING_RATE 1000000ull
#define POLICY_MAX_BODY_BYTES (1ull << 30)
#define POLICY_MAX_TIMEOUT_MS 3600000u
#define POLICY_MAX_POOL_SIZE 1024
#define POLICY_MAX_HEADER_NAME_LEN 64
#define POLICY_SETTINGS_ID "global"
#define POLICY_MAX_ESCALATION_REJECTS 1000000u
#define POLICY_MAX_ESCALATION_WINDOW_MS 3600000u
#define POLICY_MAX_ESCALATION_TTL_S 86400u

/* Defaults applied when a field is 0 / empty. */
#define POLICY_DEFAULT_CLIENT_ID_HEADER "Client-ID"
#define POLICY_DEFAULT_MAX_BODY_BYTES (10ull << 20)
#define POLICY_DEFAULT_REQUEST_TIMEOUT_MS 60000u
#define POLICY_DEFAULT_CONNECT_TIMEOUT_MS 1000u
#define POLICY_DEFAULT_READ_TIMEOUT_MS 30000u
#define POLICY_DEFAULT_POOL_SIZE 8u
#define POLICY_DEFAULT_INDEX "index.html"
#define POLICY_DEFAULT_ESCALATION_WINDOW_MS 10000u
#define POLICY_DEFAULT_ESCALATION_TTL_S 300u

/* Validation errors, each "<kind>/<id>.<field>: <what is wrong>", e.g.
 * "route/api.path_prefix: must start with '/'". Collects up to
 * POLICY_ERRS_MAX messages and counts the rest. Caller-owned, stack-friendly. */
#define POLICY_ERRS_MAX 16
#define POLICY_ERR_LEN 256
struct policy_errs {
	unsigned n;       /* messages stored in msg[] */
	unsigned dropped; /* further errors not stored */
	char msg[POLICY_ERRS_MAX][POLICY_ERR_LEN];
};

void policy_errs_init(struct policy_errs *e);
/* Appends one formatted message (truncated to POLICY_ERR_LEN - 1). */
void policy_errs_add(struct policy_errs *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline unsigned policy_errs_count(const struct policy_errs *e)
{
	return e->n + e->dropped;
}

/* "client", "rate_limit", "access_list", "route", "upstream", "settings";
 * NULL for an invalid kind. */
const char *policy_kind_name(enum policy_kind kind);
/* The inverse; 0 when the name is unknown. */
enum policy_kind policy_kind_from_name(const char *name);

/* Hash of a resource key (kind, id) for maps: XXH3-64 over the kind byte and
 * the id bytes. Never 0. */
uint64_t policy_key_hash(enum policy_kind kind, const char *id, size_t id_len);

/* Hash of a client-id header value: 64-bit FNV-1a over the bytes, as the
 * eBPF enforcer computes it (bpf/include/client_abi.h). Part of the ABI
 * between user space and the kernel program: do not change. */
uint64_t policy_client_key_hash(const void *key, size_t len);

/* True when `s` is a valid resource id: 1..POLICY_ID_MAX_LEN bytes of
 * [A-Za-z0-9._:-], starting with a letter or digit. */
bool policy_id_valid(const char *s);
/* True for a valid ruleset name: 1..64 bytes of [a-z0-9._-], starting with a
 * letter or digit. */
bool policy_ruleset_name_valid(const char *s);
/* Why `s` is not a valid resource id / ruleset name: a static string such as
 * "must not be empty", or NULL when it is valid. For error messages. */
const char *policy_id_problem(const char *s);
const char *policy_ruleset_name_problem(const char *s);

/* A reference to another resource: its id and its policy_key_hash(). */
struct policy_ref {
	const char *id;
	size_t id_len;
	uint64_t key_hash;
};

struct policy_client {
	const char **keys;      /* n_keys header values; the id when none given */
	uint64_t *key_hashes;   /* policy_client_key_hash() of each key */
	size_t n_keys;
	struct policy_ref rate_limit; /* id NULL when unset */
	uint8_t priority;
	bool disabled;
};

struct policy_selector {
	struct policy_ref client;  /* id NULL when unset */
	bool has_source;
	struct cidr source;
	const char *host;          /* NULL when unset */
	const char *path_prefix;   /* normalized as route paths; NULL when unset */
	const char *method;        /* NULL when unset */
};

struct policy_rate_limit {
	struct policy_selector sel;
	enum policy_algorithm algorithm;
	uint64_t rate;             /* requests per unit, >= 1 */
	enum policy_unit unit;
	uint64_t unit_ns;          /* 1e9, 60e9 or 3600e9 */
	uint64_t burst;            /* >= 1; `rate` when the wire value is 0 */
	enum policy_action action;     /* REJECT when unspecified */
	enum policy_enforce enforce;   /* PROXY when unspecified */
};

struct policy_access_list {
	const struct cidr *allow;  /* as written, in order */
	size_t n_allow;
	const struct cidr *deny;
	size_t n_deny;
	/* Compiled longest-prefix tables for the request path; NULL when the
	 * corresponding list is empty. */
	const struct cidr_table *allow_table;
	const struct cidr_table *deny_table;
};

enum policy_backend { POLICY_BACKEND_UPSTREAM = 1, POLICY_BACKEND_STATIC = 2 };

struct policy_route {
	const char *host;          /* lower case; "" matches any host */
	const char *path_prefix;   /* as written */
	const char *match_prefix;  /* normalized: no trailing '/' unless "/" */
	size_t match_prefix_len;
	unsigned match_depth;      /* segments in match_prefix; "/" is 0 */
	enum policy_backend backend;
	struct policy_ref upstream;          /* BACKEND_UPSTREAM */
	const char *static_root;             /* BACKEND_STATIC */
	const char *static_index;            /* default "index.html" */
	bool static_in_memory;
	const char *rewrite_prefix;          /* NULL when unset */
	const char **methods;                /* empty allows every method */
	size_t n_methods;
	uint64_t max_body_bytes;             /* 0: settings default */
	uint32_t request_timeout_ms;         /* 0: settings default */
	const struct policy_ref *rate_limits;
	size_t n_rate_limits;
	const struct policy_ref *access_lists;
	size_t n_access_lists;
};

struct policy_endpoint {
	const char *host;   /* name or address literal, without brackets */
	uint16_t port;
};

struct policy_upstream {
	const char **endpoints;                 /* as written */
	const struct policy_endpoint *parsed;   /* same order */
	size_t n_endpoints;
	uint32_t connect_timeout_ms;            /* defaults applied */
	uint32_t read_timeout_ms;
	uint32_t keepalive_pool_size;
};

struct policy_settings {
	const char *client_id_header;          /* default "Client-ID" */
	struct policy_ref default_rate_limit;  /* id NULL when unset */
	bool disabled;
	const struct policy_ref *access_lists;
	size_t n_access_lists;
	uint64_t max_body_bytes;               /* defaults applied */
	uint32_t request_timeout_ms;
	/* Escalation to the kernel deny list (dataplane/bpfload/escalate.h):
	 * escalation_rejects 0 = off; window and TTL have defaults applied. */
	uint32_t escalation_rejects;
	uint32_t escalation_window_ms;
	uint32_t escalation_ttl_s;
};

/* One validated, immutable resource. Owned by its references
 * (policy_res_ref/unref); lives until the last snapshot, delta or caller
 * holding it lets go. All strings and arrays live in the same allocation. */
struct policy_res {
	uint32_t refcnt;            /* atomic; use policy_res_ref/unref */
	enum policy_kind kind;
	const char *id;
	size_t id_len;
	uint64_t key_hash;          /* policy_key_hash(kind, id) */
	/* Canonical encoding: a sluice.v1.Resource re-encoded from the decoded
	 * fields (unknown fields dropped, field order fixed), so equal content
	 * gives equal bytes whatever order or extras the input had. */
	const uint8_t *canon;
	size_t canon_len;
	uint64_t content_hash[2];   /* XXH3-128 of canon */
	union {
		struct policy_client client;
		struct policy_rate_limit rate_limit;
		struct policy_access_list access_list;
		struct policy_route route;
		struct policy_upstream upstream;
		struct policy_settings settings;
	} u;
};

/* Decodes and validates one sluice.v1.Resource from its protobuf encoding.
 * Returns 0 and a new reference in *ret; -EBADMSG for undecodable bytes;
 * -EINVAL when validation fails, with every problem in `errs`; -ENOMEM.
 * `errs` may be NULL. Thread-safe. */
int policy_res_decode(const uint8_t *buf, size_t len, struct policy_errs *errs,
		      struct policy_res **ret);

struct policy_res *policy_res_ref(struct policy_res *r);
void policy_res_unref(struct policy_res *r); /* accepts NULL */

/* Same kind, id and canonical bytes. */
bool policy_res_equal(const struct policy_res *a, const struct policy_res *b);

/* A resource key with its own copy of the id. */
struct policy_key {
	enum policy_kind kind;
	char id[POLICY_ID_MAX_LEN + 1];
};

/* What changed between two versions of one ruleset. Owned by the caller of
 * policy_delta_new()/snapshot_diff(); holds one reference per upsert. */
struct policy_delta {
	char ruleset[POLICY_RULESET_NAME_MAX_LEN + 1];
	uint64_t from_version;
	uint64_t to_version;
	struct policy_res **upserts;
	size_t n_upserts;
	struct policy_key *removes;
	size_t n_removes;
	size_t cap_upserts, cap_removes; /* private */
};

/* -EINVAL for an invalid ruleset name. */
int policy_delta_new(const char *ruleset, uint64_t from_version, uint64_t to_version,
		     struct policy_delta **ret);
void policy_delta_free(struct policy_delta *d); /* accepts NULL */
/* Takes a new reference on r. */
int policy_delta_add_upsert(struct policy_delta *d, struct policy_res *r);
/* -EINVAL for an invalid kind or id. */
int policy_delta_add_remove(struct policy_delta *d, enum policy_kind kind, const char *id);

#endif
