/* node_config.c - the node's YAML configuration, table-driven.
 *
 * libyaml loads the document as a node tree (so each key keeps its line);
 * the walk builds the dotted key of each scalar and looks it up in `fields`,
 * mappings must be one of `sections`. Anything else is an error naming the
 * key: a typo in a config must never be silently ignored.
 */
#include "node_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#define CONFIG_FILE_MAX_BYTES (1u << 20)
#define KEY_MAX 128

enum field_type {
	FIELD_STR,
	FIELD_ADDR,      /* string, "host:port" checked */
	FIELD_BOOL,
	FIELD_U32,
	FIELD_UINT,      /* unsigned */
	FIELD_SIZE,      /* size_t */
	FIELD_U64,
	FIELD_LEVEL,     /* log level name */
	FIELD_ENDPOINTS, /* sequence of "host:port" */
	FIELD_PORTS,     /* sequence of port numbers (bpf.http_ports) */
	FIELD_LABELS,    /* mapping of string to string */
	FIELD_SECTION,   /* presence flag of a mapping (sync) */
};

/* One known key. Static table; `offset` into struct node_config. */
struct field {
	const char *key;
	enum field_type type;
	size_t offset;
	uint64_t max;   /* numbers: inclusive upper bound */
};

#define OFF(m) offsetof(struct node_config, m)
#define MS_MAX (24ull * 3600 * 1000) /* a day: anything longer is a typo */

static const struct field fields[] = {
	{ "node.id", FIELD_STR, OFF(node_id), 0 },
	{ "node.ruleset", FIELD_STR, OFF(ruleset), 0 },
	{ "node.labels", FIELD_LABELS, 0, 0 },

	{ "proxy.listen", FIELD_ADDR, OFF(listen), 0 },
	{ "proxy.workers", FIELD_UINT, OFF(workers), 1024 },
	{ "proxy.pin_cpus", FIELD_BOOL, OFF(pin_cpus), 0 },
	{ "proxy.reuseport_steering", FIELD_BOOL, OFF(reuseport_steering), 0 },
	{ "proxy.max_connections", FIELD_UINT, OFF(max_connections), 10000000 },
	{ "proxy.max_clients", FIELD_UINT, OFF(max_clients), 1u << 20 },
	{ "proxy.limits.max_head_bytes", FIELD_SIZE, OFF(max_head_bytes), 1u << 20 },
	{ "proxy.limits.max_body_bytes", FIELD_U64, OFF(max_body_bytes), 1ull << 40 },
	{ "proxy.timeouts.header_ms", FIELD_U32, OFF(header_timeout_ms), MS_MAX },
	{ "proxy.timeouts.body_ms", FIELD_U32, OFF(body_timeout_ms), MS_MAX },
	{ "proxy.timeouts.idle_ms", FIELD_U32, OFF(idle_timeout_ms), MS_MAX },
	{ "proxy.timeouts.upstream_connect_ms", FIELD_U32, OFF(upstream_connect_timeout_ms), MS_MAX },
	{ "proxy.timeouts.upstream_read_ms", FIELD_U32, OFF(upstream_read_timeout_ms), MS_MAX },
	{ "proxy.timeouts.drain_ms", FIELD_U32, OFF(drain_timeout_ms), MS_MAX },
	{ "proxy.upstream_pool.idle_per_worker", FIELD_UINT, OFF(upstream_idle_per_worker), 65536 },
	{ "proxy.upstream_pool.idle_timeout_ms", FIELD_U32, OFF(upstream_idle_timeout_ms), MS_MAX },

	{ "tls.listen", FIELD_ADDR, OFF(tls_listen), 0 },
	{ "tls.cert", FIELD_STR, OFF(tls_cert_file), 0 },
	{ "tls.key", FIELD_STR, OFF(tls_key_file), 0 },
	{ "tls.ktls", FIELD_BOOL, OFF(ktls), 0 },
	{ "tls.ktls_required", FIELD_BOOL, OFF(ktls_required), 0 },

	{ "admin.listen", FIELD_ADDR, OFF(admin_listen), 0 },
	{ "admin.drain_delay_ms", FIELD_U32, OFF(admin_drain_delay_ms), 600000 },

	{ "log.level", FIELD_LEVEL, OFF(log_level), 0 },
	{ "log.access_log", FIELD_STR, OFF(access_log), 0 },

	{ "policy.file", FIELD_STR, OFF(policy_file), 0 },

	{ "limiter.max_buckets", FIELD_SIZE, OFF(limiter_max_buckets), 1ull << 30 },
	{ "limiter.idle_ttl_s", FIELD_U32, OFF(limiter_idle_ttl_s), 30 * 86400 },
	{ "limiter.sweep_interval_s", FIELD_U32, OFF(limiter_sweep_interval_s), 86400 },
	{ "limiter.prefault", FIELD_BOOL, OFF(limiter_prefault), 0 },

	{ "sync", FIELD_SECTION, OFF(sync_enabled), 0 },
	{ "sync.endpoints", FIELD_ENDPOINTS, 0, 0 },
	{ "sync.plaintext", FIELD_BOOL, OFF(sync_plaintext), 0 },
	{ "sync.tls.ca", FIELD_STR, OFF(sync_ca_file), 0 },
	{ "sync.tls.cert", FIELD_STR, OFF(sync_cert_file), 0 },
	{ "sync.tls.key", FIELD_STR, OFF(sync_key_file), 0 },
	{ "sync.tls.server_name", FIELD_STR, OFF(sync_server_name), 0 },
	{ "sync.state_dir", FIELD_STR, OFF(sync_state_dir), 0 },
	{ "sync.connect_timeout_ms", FIELD_U32, OFF(sync_connect_timeout_ms), MS_MAX },
	{ "sync.backoff_min_ms", FIELD_U32, OFF(sync_backoff_min_ms), MS_MAX },
	{ "sync.backoff_max_ms", FIELD_U32, OFF(sync_backoff_max_ms), MS_MAX },
	{ "sync.report_interval_ms", FIELD_U32, OFF(sync_report_interval_ms), MS_MAX },

	{ "bpf.enabled", FIELD_BOOL, OFF(bpf_enabled), 0 },
	{ "bpf.interface", FIELD_STR, OFF(bpf_interface), 0 },
	{ "bpf.http_ports", FIELD_PORTS, 0, 0 },
	{ "bpf.pin_path", FIELD_STR, OFF(bpf_pin_path), 0 },
	{ "bpf.log_level", FIELD_STR, OFF(bpf_log_level), 0 },
	{ "bpf.escalation_capacity", FIELD_SIZE, OFF(bpf_escalation_capacity), 1u << 24 },
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* Mappings that only group keys. */
static const char *const sections[] = {
	"node", "proxy", "proxy.limits", "proxy.timeouts", "proxy.upstream_pool", "tls",
	"admin", "log", "policy", "limiter", "sync.tls", "bpf",
};
#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

/* State of one parse; on the stack of node_config_parse. */
struct walk {
	struct node_config *c;
	yaml_document_t *doc;
	const char *name;
	char *err;
	bool seen_field[N_FIELDS];
	bool seen_section[N_SECTIONS];
};

static int fail(struct walk *w, const yaml_node_t *n, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct walk *w, const yaml_node_t *n, const char *key, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* libyaml counts lines from 0. */
	snprintf(w->err, NODE_CONFIG_ERR_LEN, "%s:%lu: %s: %s", w->name,
		 n ? (unsigned long)n->start_mark.line + 1 : 0ul, key, why);
	return -EINVAL;
}

void node_config_init(struct node_config *c)
{
	memset(c, 0, sizeof(*c));
	c->log_level = LOG_LEVEL_INFO;
	c->ktls = true;
	c->limiter_prefault = true;
}

void node_config_done(struct node_config *c)
{
	char **strs[] = {
		&c->node_id, &c->ruleset, &c->listen, &c->tls_listen, &c->tls_cert_file,
		&c->tls_key_file, &c->admin_listen, &c->access_log, &c->policy_file,
		&c->sync_ca_file, &c->sync_cert_file, &c->sync_key_file, &c->sync_server_name,
		&c->sync_state_dir, &c->bpf_interface, &c->bpf_pin_path, &c->bpf_log_level,
	};

	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		free(*strs[i]);
		*strs[i] = NULL;
	}
	for (unsigned i = 0; i < c->n_labels; i++) {
		free(c->labels[i].name);
		free(c->labels[i].value);
	}
	c->n_labels = 0;
	for (unsigned i = 0; i < c->n_sync_endpoints; i++)
		free(c->sync_endpoints[i]);
	c->n_sync_endpoints = 0;
}

int node_config_set(char **slot, const char *v)
{
	char *copy = NULL;

	if (v) {
		copy = strdup(v);
		if (!copy)
			return -ENOMEM;
	}
	free(*slot);
	*slot = copy;
	return 0;
}

int node_config_split_addr(const char *addr, char *host, size_t host_len, uint16_t *port)
{
	const char *colon, *h = addr, *p;
	size_t hl;
	unsigned long v = 0;

	if (!addr)
		return -EINVAL;
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = addr + 1;
		hl = (size_t)(close - h);
		p = close + 2;
		if (hl == 0)
			return -EINVAL;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
			return -EINVAL; /* bare IPv6 needs brackets */
		hl = (size_t)(colon - addr);
		p = colon + 1;
	}
	if (*p == '\0' || strlen(p) > 5)
		return -EINVAL;
	for (const char *q = p; *q; q++) {
		if (*q < '0' || *q > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(*q - '0');
	}
	if (v > 65535 || hl >= host_len)
		return -EINVAL;
	for (size_t i = 0; i < hl; i++)
		if (h[i] == ' ' || h[i] == '/' || h[i] == '[' || h[i] == ']')
			return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)v;
	return 0;
}

/* A scalar's text; NULL for a YAML null (empty, "~", "null" unquoted). */
static const char *scalar_text(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;

	if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	    (s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0))
		return NULL;
	return s;
}

static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

static int set_string(struct walk *w, const yaml_node_t *n, const char *key, char **slot,
		      bool addr)
{
	const char *s = scalar_text(n);
	char host[256];
	uint16_t port;

	if (s && addr && node_config_split_addr(s, host, sizeof(host), &port) < 0)
		return fail(w, n, key, "'%s' is not host:port (IPv6 as [addr]:port)", s);
	if (s && strlen(s) >= PATH_MAX)
		return fail(w, n, key, "value too long");
	if (node_config_set(slot, s) < 0)
		return -ENOMEM;
	return 0;
}

static int set_endpoints(struct walk *w, const yaml_node_t *n, const char *key)
{
	struct node_config *c = w->c;
	char host[256];
	uint16_t port;

	if (n->type != YAML_SEQUENCE_NODE)
		return fail(w, n, key, "expected a list of host:port");
	for (unsigned i = 0; i < c->n_sync_endpoints; i++)
		free(c->sync_endpoints[i]);
	c->n_sync_endpoints = 0;
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		const yaml_node_t *e = yaml_document_get_node(w->doc, *it);
		const char *s;

		if (!e || e->type != YAML_SCALAR_NODE || !(s = scalar_text(e)))
			return fail(w, e ? e : n, key, "expected host:port");
		if (node_config_split_addr(s, host, sizeof(host), &port) < 0 || port == 0)
			return fail(w, e, key, "'%s' is not host:port with a non-zero port", s);
		if (c->n_sync_endpoints == NODE_CONFIG_MAX_ENDPOINTS)
			return fail(w, e, key, "more than %d endpoints", NODE_CONFIG_MAX_ENDPOINTS);
		c->sync_endpoints[c->n_sync_endpoints] = strdup(s);
		if (!c->sync_endpoints[c->n_sync_endpoints])
			return -ENOMEM;
		c->n_sync_endpoints++;
	}
	return 0;
}

static int set_ports(struct walk *w, const yaml_node_t *n, const char *key)
{
	struct node_config *c = w->c;

	if (n->type != YAML_SEQUENCE_NODE)
		return fail(w, n, key, "expected a list of port numbers");
	c->n_bpf_http_ports = 0;
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		const yaml_node_t *e = yaml_document_get_node(w->doc, *it);
		const char *s;
		uint64_t v;

		if (!e || e->type != YAML_SCALAR_NODE || !(s = scalar_text(e)) ||
		    parse_u64(s, &v) < 0 || v == 0 || v > 65535)
			return fail(w, e ? e : n, key, "expected a port number 1..65535");
		if (c->n_bpf_http_ports == NODE_CONFIG_MAX_BPF_PORTS)
			return fail(w, e, key, "more than %d ports", NODE_CONFIG_MAX_BPF_PORTS);
		c->bpf_http_ports[c->n_bpf_http_ports++] = (uint16_t)v;
	}
	return 0;
}

static int set_labels(struct walk *w, const yaml_node_t *n, const char *key)
{
	struct node_config *c = w->c;

	if (n->type != YAML_MAPPING_NODE)
		return fail(w, n, key, "expected a mapping of name: value");
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		const yaml_node_t *k = yaml_document_get_node(w->doc, pr->key);
		const yaml_node_t *v = yaml_document_get_node(w->doc, pr->value);
		const char *ks, *vs;

		if (!k || k->type != YAML_SCALAR_NODE || !(ks = scalar_text(k)))
			return fail(w, k ? k : n, key, "label names must be strings");
		if (!v || v->type != YAML_SCALAR_NODE || !(vs = scalar_text(v)))
			return fail(w, v ? v : k, key, "label '%s' needs a string value", ks);
		for (unsigned i = 0; i < c->n_labels; i++)
			if (strcmp(c->labels[i].name, ks) == 0)
				return fail(w, k, key, "duplicate label '%s'", ks);
		if (c->n_labels == NODE_CONFIG_MAX_LABELS)
			return fail(w, k, key, "more than %d labels", NODE_CONFIG_MAX_LABELS);
		c->labels[c->n_labels].name = strdup(ks);
		c->labels[c->n_labels].value = strdup(vs);
		c->n_labels++;
		if (!c->labels[c->n_labels - 1].name || !c->labels[c->n_labels - 1].value)
			return -ENOMEM;
	}
	return 0;
}

static int set_field(struct walk *w, const struct field *f, const yaml_node_t *n,
		     const char *key)
{
	char *base = (char *)w->c;
	const char *s;
	uint64_t v;

	if (f->type == FIELD_ENDPOINTS)
		return set_endpoints(w, n, key);
	if (f->type == FIELD_LABELS)
		return set_labels(w, n, key);
	if (f->type == FIELD_PORTS)
		return set_ports(w, n, key);
	if (n->type != YAML_SCALAR_NODE)
		return fail(w, n, key, "expected a single value, not a %s",
			    n->type == YAML_MAPPING_NODE ? "mapping" : "list");
	switch (f->type) {
	case FIELD_STR:
	case FIELD_ADDR:
		return set_string(w, n, key, (char **)(base + f->offset), f->type == FIELD_ADDR);
	case FIELD_BOOL:
		s = scalar_text(n);
		if (s && strcmp(s, "true") == 0)
			*(bool *)(base + f->offset) = true;
		else if (s && strcmp(s, "false") == 0)
			*(bool *)(base + f->offset) = false;
		else
			return fail(w, n, key, "expected true or false");
		return 0;
	case FIELD_LEVEL:
		s = scalar_text(n);
		if (log_level_parse(s, (enum log_level *)(base + f->offset)) < 0)
			return fail(w, n, key, "expected debug, info, warn or error");
		return 0;
	default:
		break;
	}
	s = scalar_text(n);
	if (!s) {
		v = 0; /* null: back to the default */
	} else {
		int r = parse_u64(s, &v);

		if (r == -EINVAL)
			return fail(w, n, key, "expected an unsigned integer, got '%s'", s);
		if (r < 0 || v > f->max)
			return fail(w, n, key, "%s is above the maximum %llu", s,
				    (unsigned long long)f->max);
	}
	switch (f->type) {
	case FIELD_U32:
		*(uint32_t *)(base + f->offset) = (uint32_t)v;
		break;
	case FIELD_UINT:
		*(unsigned *)(base + f->offset) = (unsigned)v;
		break;
	case FIELD_SIZE:
		*(size_t *)(base + f->offset) = (size_t)v;
		break;
	case FIELD_U64:
		*(uint64_t *)(base + f->offset) = v;
		break;
	default:
		break;
	}
	return 0;
}

static int walk_mapping(struct walk *w, const yaml_node_t *map, const char *prefix);

static int walk_pair(struct walk *w, const yaml_node_t *k, const yaml_node_t *v,
		     const char *prefix)
{
	char key[KEY_MAX];
	const char *ks;

	if (k->type != YAML_SCALAR_NODE || !(ks = scalar_text(k)))
		return fail(w, k, prefix[0] ? prefix : "(top)", "keys must be plain names");
	if ((size_t)snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", ks) >=
	    sizeof(key))
		return fail(w, k, prefix, "key '%s' too long", ks);

	for (size_t i = 0; i < N_FIELDS; i++) {
		if (strcmp(fields[i].key, key) != 0)
			continue;
		if (w->seen_field[i])
			return fail(w, k, key, "duplicate key");
		w->seen_field[i] = true;
		if (fields[i].type == FIELD_SECTION) {
			if (v->type != YAML_MAPPING_NODE)
				return fail(w, v, key, "expected a mapping");
			*(bool *)((char *)w->c + fields[i].offset) = true;
			return walk_mapping(w, v, key);
		}
		return set_field(w, &fields[i], v, key);
	}
	for (size_t i = 0; i < N_SECTIONS; i++) {
		if (strcmp(sections[i], key) != 0)
			continue;
		if (w->seen_section[i])
			return fail(w, k, key, "duplicate key");
		w->seen_section[i] = true;
		if (v->type == YAML_SCALAR_NODE && !scalar_text(v))
			return 0; /* "tls:" with nothing under it */
		if (v->type != YAML_MAPPING_NODE)
			return fail(w, v, key, "expected a mapping");
		return walk_mapping(w, v, key);
	}
	return fail(w, k, key, "unknown key");
}

static int walk_mapping(struct walk *w, const yaml_node_t *map, const char *prefix)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		const yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
		const yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
		int r;

		if (!k || !v)
			return fail(w, map, prefix, "malformed mapping");
		r = walk_pair(w, k, v, prefix);
		if (r < 0)
			return r;
	}
	return 0;
}

int node_config_parse(struct node_config *c, const char *yaml, size_t len, const char *name,
		      char err[NODE_CONFIG_ERR_LEN])
{
	struct walk w = { .c = c, .name = name, .err = err };
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	int r;

	err[0] = '\0';
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, NODE_CONFIG_ERR_LEN, "%s:%lu: YAML syntax: %s", name,
			 (unsigned long)parser.problem_mark.line + 1,
			 parser.problem ? parser.problem : "unreadable");
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	w.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root) {
		r = 0; /* an empty file: every default */
	} else if (root->type != YAML_MAPPING_NODE) {
		r = fail(&w, root, "(top)", "expected a mapping of sections");
	} else {
		r = walk_mapping(&w, root, "");
	}
	if (r == 0) {
		/* One document only: a second one would be silently ignored. */
		yaml_document_t next;

		if (yaml_parser_load(&parser, &next)) {
			yaml_node_t *nr = yaml_document_get_root_node(&next);

			if (nr)
				r = fail(&w, nr, "(top)", "only one YAML document is allowed");
			yaml_document_delete(&next);
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (r == -ENOMEM && !err[0])
		snprintf(err, NODE_CONFIG_ERR_LEN, "%s: out of memory", name);
	return r;
}

int node_config_load(struct node_config *c, const char *path, char err[NODE_CONFIG_ERR_LEN])
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(err, NODE_CONFIG_ERR_LEN, "'%s': %s", path, strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(err, NODE_CONFIG_ERR_LEN, "'%s': %s", path, strerror(errno));
		goto out_close;
	}
	if (st.st_size > CONFIG_FILE_MAX_BYTES) {
		r = -EFBIG;
		snprintf(err, NODE_CONFIG_ERR_LEN, "'%s': larger than %u bytes", path,
			 CONFIG_FILE_MAX_BYTES);
		goto out_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		snprintf(err, NODE_CONFIG_ERR_LEN, "'%s': out of memory", path);
		goto out_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, NODE_CONFIG_ERR_LEN, "'%s': %s", path, strerror(errno));
			goto out_free;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	r = node_config_parse(c, buf, got, path, err);
out_free:
	free(buf);
out_close:
	close(fd);
	return r;
}

static int check_fail(char err[NODE_CONFIG_ERR_LEN], const char *key, const char *why)
{
	snprintf(err, NODE_CONFIG_ERR_LEN, "%s: %s", key, why);
	return -EINVAL;
}

int node_config_check(const struct node_config *c, char err[NODE_CONFIG_ERR_LEN])
{
	char host[256];
	uint16_t port;
	const struct {
		const char *key;
		const char *value;
	} addrs[] = {
		{ "proxy.listen", c->listen },
		{ "tls.listen", c->tls_listen },
		{ "admin.listen", c->admin_listen },
	};

	/* Command-line values did not go through the parser's checks. */
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		if (addrs[i].value &&
		    node_config_split_addr(addrs[i].value, host, sizeof(host), &port) < 0) {
			snprintf(err, NODE_CONFIG_ERR_LEN,
				 "%s: '%s' is not host:port (IPv6 as [addr]:port)", addrs[i].key,
				 addrs[i].value);
			return -EINVAL;
		}
	}
	if (!c->listen && !c->tls_listen)
		return check_fail(err, "proxy.listen",
				  "no listener configured (proxy.listen or tls.listen)");
	if (c->tls_listen && !c->tls_cert_file)
		return check_fail(err, "tls.cert", "required with tls.listen");
	if (c->tls_listen && !c->tls_key_file)
		return check_fail(err, "tls.key", "required with tls.listen");
	if (!c->tls_listen && (c->tls_cert_file || c->tls_key_file))
		return check_fail(err, "tls.listen", "tls.cert and tls.key given without a listener");
	if (c->access_log && !c->access_log[0])
		return check_fail(err, "log.access_log", "empty path (use \"-\" for stdout)");
	if (!c->policy_file && !c->sync_enabled)
		return check_fail(err, "policy.file",
				  "required without a sync section (standalone mode)");
	if (c->policy_file && c->sync_enabled)
		return check_fail(err, "policy.file",
				  "standalone policy file and sync section are exclusive");
	if (c->sync_enabled) {
		if (c->n_sync_endpoints == 0)
			return check_fail(err, "sync.endpoints", "at least one endpoint is required");
		if (!c->ruleset)
			return check_fail(err, "node.ruleset", "required with a sync section");
		if (!c->sync_state_dir)
			return check_fail(err, "sync.state_dir",
					  "required with a sync section (fail-static start-up)");
		if (!c->sync_plaintext && !c->sync_ca_file)
			return check_fail(err, "sync.tls.ca", "required unless sync.plaintext is true");
		if (!c->sync_plaintext && !c->sync_cert_file)
			return check_fail(err, "sync.tls.cert",
					  "required unless sync.plaintext is true");
		if (!c->sync_plaintext && !c->sync_key_file)
			return check_fail(err, "sync.tls.key", "required unless sync.plaintext is true");
		if (c->sync_backoff_min_ms && c->sync_backoff_max_ms &&
		    c->sync_backoff_min_ms > c->sync_backoff_max_ms)
			return check_fail(err, "sync.backoff_min_ms", "above sync.backoff_max_ms");
	}
	if (c->bpf_enabled && !c->bpf_interface)
		return check_fail(err, "bpf.interface", "required when bpf.enabled is true");
	if (c->bpf_pin_path && strncmp(c->bpf_pin_path, "/sys/fs/bpf/", 12) != 0)
		return check_fail(err, "bpf.pin_path", "must be a directory under /sys/fs/bpf/");
	if (c->bpf_log_level && strcmp(c->bpf_log_level, "drops") != 0 &&
	    strcmp(c->bpf_log_level, "errors") != 0 && strcmp(c->bpf_log_level, "debug") != 0)
		return check_fail(err, "bpf.log_level", "expected drops, errors or debug");
	return 0;
}
