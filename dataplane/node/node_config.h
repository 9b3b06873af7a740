/* node_config.h - the sluice-node configuration: a YAML file (libyaml),
 * overridden by command-line flags, checked as a whole before start-up.
 *
 * Every key is known: an unknown or duplicate key, a wrong type or an out of
 * range value is an error naming the file, line and dotted key
 * ("node.yaml:7: proxy.timeouts.header_ms: expected an unsigned integer").
 * deploy/README.md is the reference for each key.
 */
#ifndef SLUICE_NODE_CONFIG_H
#define SLUICE_NODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define NODE_CONFIG_ERR_LEN 512
#define NODE_CONFIG_MAX_BPF_PORTS 8
#define NODE_CONFIG_MAX_ENDPOINTS 16
#define NODE_CONFIG_MAX_LABELS 32

/* One label of node.labels, sent to the control plane in Hello. Owned by
 * struct node_config (strings freed by node_config_done). */
struct node_config_label {
	char *name;
	char *value;
};

/* The whole node configuration. Owned by main; strings are malloc'ed and
 * freed by node_config_done; lives until the process exits. Numbers at 0
 * mean "the documented default" (see struct proxy_config). */
struct node_config {
	/* node */
	char *node_id;              /* NULL: the host name */
	char *ruleset;              /* NULL in standalone mode: the file's name */
	struct node_config_label labels[NODE_CONFIG_MAX_LABELS];
	unsigned n_labels;

	/* proxy */
	char *listen;               /* "host:port", NULL: no plaintext listener */
	unsigned workers;           /* 0: one per online CPU */
	bool pin_cpus;
	bool reuseport_steering;
	unsigned max_connections;
	unsigned max_clients;       /* per-client counters per worker; 0: proxy default */
	size_t max_head_bytes;
	uint64_t max_body_bytes;
	uint32_t header_timeout_ms;
	uint32_t body_timeout_ms;
	uint32_t idle_timeout_ms;
	uint32_t upstream_connect_timeout_ms;
	uint32_t upstream_read_timeout_ms;
	uint32_t drain_timeout_ms;
	unsigned upstream_idle_per_worker;
	uint32_t upstream_idle_timeout_ms;

	/* tls */
	char *tls_listen;           /* NULL: no TLS listener */
	char *tls_cert_file;
	char *tls_key_file;
	bool ktls;
	bool ktls_required;         /* implies ktls */

	/* admin */
	char *admin_listen;         /* NULL: no admin listener */
	uint32_t admin_drain_delay_ms; /* readyz says 503 this long before the
					* proxy stops accepting */

	/* log */
	enum log_level log_level;
	char *access_log;           /* path, "-" for stdout, NULL: none */

	/* policy (standalone mode) */
	char *policy_file;          /* proto3 JSON sluice.v1.Ruleset */

	/* limiter */
	size_t limiter_max_buckets;     /* 0: limiter default (1 << 20) */
	uint32_t limiter_idle_ttl_s;    /* 0: limiter default (600) */
	uint32_t limiter_sweep_interval_s; /* 0: 60 */
	bool limiter_prefault;          /* commit the bucket table at start */

	/* sync (node-sync agent); present = sync_enabled */
	bool sync_enabled;
	char *sync_endpoints[NODE_CONFIG_MAX_ENDPOINTS];
	unsigned n_sync_endpoints;
	bool sync_plaintext;        /* development only: no mTLS */
	char *sync_ca_file;
	char *sync_cert_file;
	char *sync_key_file;
	char *sync_server_name;     /* NULL: the endpoint's host */
	char *sync_state_dir;       /* last good snapshot, for fail-static */
	uint32_t sync_connect_timeout_ms;  /* 0: 5000 */
	uint32_t sync_backoff_min_ms;      /* 0: 200 */
	uint32_t sync_backoff_max_ms;      /* 0: 30000 */
	uint32_t sync_report_interval_ms;  /* 0: 10000 */

	/* bpf (the TC eBPF enforcer, dataplane/node/node_bpf.h) */
	bool bpf_enabled;
	char *bpf_interface;        /* required when enabled */
	uint16_t bpf_http_ports[NODE_CONFIG_MAX_BPF_PORTS]; /* 0 = unused; none: proxy.listen's port */
	unsigned n_bpf_http_ports;
	char *bpf_pin_path;         /* NULL: no pinning; else under /sys/fs/bpf/ */
	char *bpf_log_level;        /* drops (default), errors, debug */
	size_t bpf_escalation_capacity; /* 0: 65,536 sources */
};

/* Defaults: everything unset, log level info, ktls and limiter prefault on. */
void node_config_init(struct node_config *c);
void node_config_done(struct node_config *c);

/* Parses a YAML document into c (keys present override what c holds).
 * `name` is used in error messages (the file name). Returns 0, or -EINVAL
 * with err = "NAME:LINE: KEY: why". On error c may be partly updated:
 * the caller exits anyway. */
int node_config_parse(struct node_config *c, const char *yaml, size_t len, const char *name,
		      char err[NODE_CONFIG_ERR_LEN]);
/* Reads and parses a file (at most 1 MiB). -errno on I/O errors, err names
 * the file. */
int node_config_load(struct node_config *c, const char *path, char err[NODE_CONFIG_ERR_LEN]);

/* Rules across keys, run after the command-line overrides: TLS listener
 * needs cert and key, at least one proxy listener, a policy file or a sync
 * section, sync needs endpoints, a state dir and (unless plaintext) its CA,
 * cert and key. Returns 0 or -EINVAL with err = "KEY: why". */
int node_config_check(const struct node_config *c, char err[NODE_CONFIG_ERR_LEN]);

/* Replaces a string setting with a copy of v (NULL clears). 0 or -ENOMEM. */
int node_config_set(char **slot, const char *v);

/* Splits "host:port", "[v6]:port" or ":port" (host "" = any address).
 * host gets the bare host (no brackets). 0, or -EINVAL when malformed or
 * the port is not 0..65535. */
int node_config_split_addr(const char *addr, char *host, size_t host_len, uint16_t *port);

#endif
