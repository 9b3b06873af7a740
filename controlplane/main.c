/* main.c - sluice-control: the control plane's gRPC server over etcd.
 *
 * Opens the store on etcd, serves PolicyAdmin (role admin), PolicySync
 * (role node) and Fleet (role admin, controlplane/fleet), health and
 * reflection through controlplane/rpc, optionally Prometheus /metrics,
 * probes etcd every second (health NOT_SERVING while it does not answer),
 * prints one "ready" line on stdout once serving and drains on
 * SIGTERM/SIGINT. Flags override the YAML
 * config file, which takes the same keys (controlplane/rpc/README.md).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yaml.h>

#include "admin.h"
#include "descriptor_set.h"
#include "etcd.h"
#include "fleet.h"
#include "log.h"
#include "rpc.h"
#include "store.h"

#define DEFAULT_LISTEN "127.0.0.1:7070"
#define DEFAULT_ETCD "http://127.0.0.1:2379"
#define PROBE_INTERVAL_MS 1000
#define PROBE_TIMEOUT_MS 1000
#define DRAIN_GRACE_MS 5000
#define MAX_ENDPOINTS 16

/* Everything the flags and the config file set. Owned by main; strings
 * are malloc'ed; lives until exit. */
struct options {
	char *listen;
	char *etcd;             /* comma-separated URLs */
	char *prefix;
	char *tls_cert;
	char *tls_key;
	char *tls_ca;
	char *admin_token_file;
	char *log_level;
	char *metrics_listen;
	char *replica_id;
	bool plaintext;
	bool require_client_cert;
	unsigned workers;
	uint64_t etcd_timeout_ms;
	uint64_t sync_window;
	uint64_t node_lease_ttl_s;
};

static void usage(FILE *f)
{
	fputs("usage: sluice-control [options]\n"
	      "  --listen HOST:PORT        gRPC address (default " DEFAULT_LISTEN ", port 0 = any)\n"
	      "  --etcd URL[,URL...]       etcd client URLs (default " DEFAULT_ETCD ")\n"
	      "  --prefix PREFIX           etcd key prefix (default " STORE_DEFAULT_PREFIX ")\n"
	      "  --tls-cert FILE           server certificate chain (PEM)\n"
	      "  --tls-key FILE            server private key (PEM)\n"
	      "  --tls-ca FILE             client CA (PEM): mTLS, node and admin certificates\n"
	      "  --require-client-cert     with --tls-ca: refuse TLS clients without a certificate\n"
	      "  --admin-token-file FILE   admin bearer tokens, one per line\n"
	      "  --plaintext               no TLS (development only)\n"
	      "  --workers N               handler threads (default 4)\n"
	      "  --etcd-timeout-ms MS      deadline of one etcd call (default 5000)\n"
	      "  --metrics-listen HOST:PORT Prometheus /metrics over HTTP (default: off)\n"
	      "  --replica-id NAME         this replica in NodeStatus.control_plane\n"
	      "                            (default: the bound gRPC address)\n"
	      "  --sync-window N           versions kept per ruleset for deltas (default 64)\n"
	      "  --node-lease-ttl S        lease of this replica's node keys (default 10)\n"
	      "  --config FILE             YAML file with the same keys (listen, etcd, ...)\n"
	      "  --log-level LEVEL         debug, info, warn, error (default info)\n"
	      "  --help\n", f);
}

static int set_str(char **dst, const char *v)
{
	char *c = strdup(v);

	if (!c)
		return -ENOMEM;
	free(*dst);
	*dst = c;
	return 0;
}

static int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *end || n > max || v[0] == '-')
		return -EINVAL;
	*out = n;
	return 0;
}

/* One key = value, from a flag (--key) or the config file (key:). */
static int set_option(struct options *o, const char *key, const char *v)
{
	uint64_t n;

	if (!strcmp(key, "listen"))
		return set_str(&o->listen, v);
	if (!strcmp(key, "etcd"))
		return set_str(&o->etcd, v);
	if (!strcmp(key, "prefix"))
		return set_str(&o->prefix, v);
	if (!strcmp(key, "tls-cert") || !strcmp(key, "tls_cert"))
		return set_str(&o->tls_cert, v);
	if (!strcmp(key, "tls-key") || !strcmp(key, "tls_key"))
		return set_str(&o->tls_key, v);
	if (!strcmp(key, "tls-ca") || !strcmp(key, "tls_ca"))
		return set_str(&o->tls_ca, v);
	if (!strcmp(key, "admin-token-file") || !strcmp(key, "admin_token_file"))
		return set_str(&o->admin_token_file, v);
	if (!strcmp(key, "log-level") || !strcmp(key, "log_level"))
		return set_str(&o->log_level, v);
	if (!strcmp(key, "metrics-listen") || !strcmp(key, "metrics_listen"))
		return set_str(&o->metrics_listen, v);
	if (!strcmp(key, "replica-id") || !strcmp(key, "replica_id"))
		return set_str(&o->replica_id, v);
	if (!strcmp(key, "sync-window") || !strcmp(key, "sync_window"))
		return parse_u64(v, FLEET_MAX_WINDOW, &o->sync_window) || !o->sync_window ?
		       -EINVAL : 0;
	if (!strcmp(key, "node-lease-ttl") || !strcmp(key, "node_lease_ttl"))
		return parse_u64(v, 3600, &o->node_lease_ttl_s) || o->node_lease_ttl_s < 2 ?
		       -EINVAL : 0;
	if (!strcmp(key, "plaintext"))
		return parse_bool(v, &o->plaintext);
	if (!strcmp(key, "require-client-cert") || !strcmp(key, "require_client_cert"))
		return parse_bool(v, &o->require_client_cert);
	if (!strcmp(key, "workers")) {
		if (parse_u64(v, 256, &n) || n == 0)
			return -EINVAL;
		o->workers = (unsigned)n;
		return 0;
	}
	if (!strcmp(key, "etcd-timeout-ms") || !strcmp(key, "etcd_timeout_ms")) {
		if (parse_u64(v, 600000, &n) || n == 0)
			return -EINVAL;
		o->etcd_timeout_ms = n;
		return 0;
	}
	return -ENOENT;
}

/* A flat YAML mapping of scalars; `etcd` may also be a sequence. */
static int load_config(struct options *o, const char *path)
{
	FILE *f = fopen(path, "rb");
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	char q[300];
	int err = 0;

	if (!f) {
		fprintf(stderr, "sluice-control: cannot open config %s: %s\n",
			log_quote(path, q, sizeof(q)), strerror(errno));
		return -errno;
	}
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		fprintf(stderr, "sluice-control: %s: YAML error at line %zu: %s\n",
			log_quote(path, q, sizeof(q)), parser.problem_mark.line + 1,
			parser.problem ? parser.problem : "?");
		yaml_parser_delete(&parser);
		fclose(f);
		return -EINVAL;
	}
	root = yaml_document_get_root_node(&doc);
	if (root && root->type != YAML_MAPPING_NODE) {
		fprintf(stderr, "sluice-control: %s: top level must be a mapping\n",
			log_quote(path, q, sizeof(q)));
		err = -EINVAL;
	}
	for (yaml_node_pair_t *p = root && !err ? root->data.mapping.pairs.start : NULL;
	     p && p < root->data.mapping.pairs.top && !err; p++) {
		yaml_node_t *k = yaml_document_get_node(&doc, p->key);
		yaml_node_t *v = yaml_document_get_node(&doc, p->value);
		const char *key = k && k->type == YAML_SCALAR_NODE ? (char *)k->data.scalar.value : "";

		if (v && v->type == YAML_SEQUENCE_NODE && !strcmp(key, "etcd")) {
			char joined[4096] = "";

			for (yaml_node_item_t *it = v->data.sequence.items.start;
			     it < v->data.sequence.items.top; it++) {
				yaml_node_t *e = yaml_document_get_node(&doc, *it);

				if (!e || e->type != YAML_SCALAR_NODE ||
				    strlen(joined) + e->data.scalar.length + 2 > sizeof(joined)) {
					err = -EINVAL;
					break;
				}
				if (joined[0])
					strcat(joined, ",");
				strcat(joined, (char *)e->data.scalar.value);
			}
			if (!err)
				err = set_option(o, key, joined);
		} else if (v && v->type == YAML_SCALAR_NODE) {
			err = set_option(o, key, (char *)v->data.scalar.value);
		} else {
			err = -EINVAL;
		}
		if (err)
			fprintf(stderr, "sluice-control: %s: bad or unknown key '%s'\n",
				log_quote(path, q, sizeof(q)), key);
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	fclose(f);
	return err;
}

static const struct option long_opts[] = {
	{ "listen", required_argument, NULL, 0 },
	{ "etcd", required_argument, NULL, 0 },
	{ "prefix", required_argument, NULL, 0 },
	{ "tls-cert", required_argument, NULL, 0 },
	{ "tls-key", required_argument, NULL, 0 },
	{ "tls-ca", required_argument, NULL, 0 },
	{ "require-client-cert", no_argument, NULL, 0 },
	{ "admin-token-file", required_argument, NULL, 0 },
	{ "plaintext", no_argument, NULL, 0 },
	{ "workers", required_argument, NULL, 0 },
	{ "etcd-timeout-ms", required_argument, NULL, 0 },
	{ "metrics-listen", required_argument, NULL, 0 },
	{ "replica-id", required_argument, NULL, 0 },
	{ "sync-window", required_argument, NULL, 0 },
	{ "node-lease-ttl", required_argument, NULL, 0 },
	{ "config", required_argument, NULL, 0 },
	{ "log-level", required_argument, NULL, 0 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int parse_args(int argc, char **argv, struct options *o)
{
	int c, idx, err;

	/* the config file first, so that flags override it wherever it is */
	for (int i = 1; i < argc; i++) {
		const char *path = NULL;

		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			path = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			path = argv[i] + 9;
		if (path && (err = load_config(o, path)))
			return err;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1) {
		const char *name;

		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c != 0)
			return -EINVAL;
		name = long_opts[idx].name;
		if (!strcmp(name, "config"))
			continue;
		err = set_option(o, name, optarg ? optarg : "true");
		if (err) {
			fprintf(stderr, "sluice-control: bad value for --%s\n", name);
			return err;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluice-control: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* ---- etcd probe ------------------------------------------------------------ */

static int split_endpoints(char *list, const char **out, size_t max)
{
	size_t n = 0;
	char *save = NULL;

	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		if (!*t)
			continue;
		if (n == max)
			return -E2BIG;
		out[n++] = t;
	}
	return n ? (int)n : -EINVAL;
}

/* A linearizable read of one key: etcd answers only with a quorum. */
static bool etcd_reachable(struct etcd *e, const char *prefix)
{
	struct etcd_range_result r;
	int err = etcd_range(e, prefix, strlen(prefix), NULL, 0, 0, 1, &r);

	if (err == 0)
		etcd_range_result_done(&r);
	return err == 0;
}

/* "HOST:PORT" of what the server is bound to, for the ready line. */
static void bound_address(const char *listen, int port, char *out, size_t cap)
{
	const char *colon = strrchr(listen, ':');
	int host_len = colon ? (int)(colon - listen) : (int)strlen(listen);

	snprintf(out, cap, "%.*s:%d", host_len, listen, port);
}

int main(int argc, char **argv)
{
	struct options o = { .workers = 0 };
	const char *endpoints[MAX_ENDPOINTS];
	struct etcd *etcd = NULL, *probe = NULL, *fleet_etcd = NULL;
	struct fleet *fleet = NULL;
	struct store *store = NULL;
	struct admin *admin = NULL;
	struct rpc_server *srv = NULL;
	enum log_level level = LOG_LEVEL_INFO;
	sigset_t sigs;
	char addr[300], maddr[300] = "", q[300];
	bool up;
	int n_ep, err, rc = 1;

	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		goto out;
	}
	if (o.log_level && log_level_parse(o.log_level, &level)) {
		fprintf(stderr, "sluice-control: bad log level '%s'\n", o.log_level);
		goto out;
	}
	log_set_level(level);
	if (!o.listen && set_str(&o.listen, DEFAULT_LISTEN))
		goto out;
	if (!o.etcd && set_str(&o.etcd, DEFAULT_ETCD))
		goto out;
	if (!o.prefix && set_str(&o.prefix, STORE_DEFAULT_PREFIX))
		goto out;
	if (o.plaintext && (o.tls_cert || o.tls_key || o.tls_ca)) {
		fprintf(stderr, "sluice-control: --plaintext and --tls-* exclude each other\n");
		goto out;
	}
	if (!o.plaintext && (!o.tls_cert || !o.tls_key)) {
		fprintf(stderr, "sluice-control: give --tls-cert and --tls-key, or --plaintext "
			"for local development\n");
		goto out;
	}
	if (o.plaintext)
		log_warn("PLAINTEXT MODE: no TLS, bearer tokens travel in clear and nodes are "
			 "not authenticated; for local development only",
			 "listen=%s", log_quote(o.listen, q, sizeof(q)));

	/* every thread started from here on inherits the blocked set; the
	 * main thread takes the signals with sigtimedwait */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	n_ep = split_endpoints(o.etcd, endpoints, MAX_ENDPOINTS);
	if (n_ep < 0) {
		log_error("Bad --etcd endpoint list", NULL);
		goto out;
	}
	{
		struct etcd_config ec = { .endpoints = endpoints, .n_endpoints = (size_t)n_ep,
					  .timeout_ms = o.etcd_timeout_ms };
		struct etcd_config pc = { .endpoints = endpoints, .n_endpoints = (size_t)n_ep,
					  .timeout_ms = PROBE_TIMEOUT_MS };
		struct store_config sc = { .prefix = o.prefix };
		struct admin_config ac;

		err = etcd_new(&ec, &etcd);
		if (!err)
			err = etcd_new(&pc, &probe);
		/* the fleet's own client: its registry writes must not queue
		 * behind (or hold up) admin calls while etcd is slow */
		if (!err)
			err = etcd_new(&ec, &fleet_etcd);
		if (err) {
			log_error("Failed to create the etcd client", "error=%s", strerror(-err));
			goto out;
		}
		sc.etcd = etcd;
		err = store_new(&sc, &store);
		if (err) {
			log_error("Failed to open the store", "error=%s", strerror(-err));
			goto out;
		}
		ac.store = store;
		err = admin_new(&ac, &admin);
		if (err) {
			log_error("Failed to create the admin service", "error=%s", strerror(-err));
			goto out;
		}
	}
	{
		struct rpc_server_config rc_cfg = {
			.listen = o.listen,
			.tls_cert_file = o.tls_cert,
			.tls_key_file = o.tls_key,
			.tls_ca_file = o.tls_ca,
			.require_client_cert = o.require_client_cert,
			.admin_token_file = o.admin_token_file,
			.n_workers = o.workers,
		};
		const struct admin_method *am;
		size_t n_am;

		err = rpc_server_new(&rc_cfg, &srv);
		if (err) {
			log_error("Failed to create the gRPC server", "listen=%s error=%s",
				  log_quote(o.listen, q, sizeof(q)), strerror(-err));
			goto out;
		}
		am = admin_methods(&n_am);
		for (size_t i = 0; i < n_am && !err; i++)
			err = rpc_server_add_unary(srv, am[i].path, RPC_ROLE_ADMIN, am[i].fn, admin);
		if (!err) {
			struct fleet_config fc = {
				.etcd = fleet_etcd,
				.store_etcd = etcd,
				.etcd_endpoints = endpoints,
				.n_etcd_endpoints = (size_t)n_ep,
				.etcd_timeout_ms = o.etcd_timeout_ms,
				.prefix = o.prefix,
				.replica_id = o.replica_id,
				.window = (unsigned)o.sync_window,
				.lease_ttl_s = (unsigned)o.node_lease_ttl_s,
				.any_node = o.plaintext,
			};

			bound_address(o.listen, rpc_server_port(srv), addr, sizeof(addr));
			if (!fc.replica_id)
				fc.replica_id = addr;
			err = fleet_new(&fc, &fleet);
			if (!err)
				err = fleet_register(fleet, srv);
		}
		if (!err)
			err = rpc_server_enable_health(srv);
		if (!err)
			err = rpc_server_enable_reflection(srv, sluice_descriptor_set,
							   sluice_descriptor_set_len);
		if (!err)
			err = fleet_start(fleet);
		if (!err)
			err = rpc_server_start(srv);
		if (err) {
			log_error("Failed to start the gRPC server", "error=%s", strerror(-err));
			goto out;
		}
	}
	if (o.metrics_listen) {
		int mport = 0;

		err = fleet_metrics_listen(fleet, o.metrics_listen, &mport);
		if (err) {
			log_error("Failed to listen for /metrics", "metrics_listen=%s error=%s",
				  log_quote(o.metrics_listen, q, sizeof(q)), strerror(-err));
			goto out;
		}
		bound_address(o.metrics_listen, mport, maddr, sizeof(maddr));
	}
	up = etcd_reachable(probe, o.prefix);
	if (!up) {
		log_warn("etcd unreachable, serving NOT_SERVING until it answers",
			 "etcd=%s", log_quote(endpoints[0], q, sizeof(q)));
		rpc_server_set_health_all(srv, RPC_HEALTH_NOT_SERVING);
	}
	bound_address(o.listen, rpc_server_port(srv), addr, sizeof(addr));
	log_info("serving", "listen=%s tls=%s mtls=%s tokens=%s etcd_up=%s", addr,
		 o.plaintext ? "false" : "true", o.tls_ca ? "true" : "false",
		 o.admin_token_file ? "true" : "false", up ? "true" : "false");
	if (maddr[0])
		printf("sluice-control: ready listen=%s metrics=%s\n", addr, maddr);
	else
		printf("sluice-control: ready listen=%s\n", addr);
	fflush(stdout);

	for (;;) {
		struct timespec ts = { .tv_sec = PROBE_INTERVAL_MS / 1000,
				       .tv_nsec = (PROBE_INTERVAL_MS % 1000) * 1000000L };
		int sig = sigtimedwait(&sigs, NULL, &ts);
		bool now;

		if (sig == SIGTERM || sig == SIGINT) {
			log_info("draining", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
			break;
		}
		now = etcd_reachable(probe, o.prefix);
		if (now != up) {
			if (now)
				log_info("etcd reachable again, SERVING", NULL);
			else
				log_warn("etcd unreachable, NOT_SERVING", NULL);
			rpc_server_set_health_all(srv, now ? RPC_HEALTH_SERVING :
							     RPC_HEALTH_NOT_SERVING);
			up = now;
		}
	}
	rpc_server_set_health_all(srv, RPC_HEALTH_NOT_SERVING);
	rpc_server_shutdown(srv, DRAIN_GRACE_MS);
	fleet_stop(fleet);
	log_info("stopped", NULL);
	rc = 0;
out:
	rpc_server_free(srv);
	fleet_free(fleet);
	admin_free(admin);
	store_free(store);
	etcd_free(probe);
	etcd_free(etcd);
	etcd_free(fleet_etcd);
	free(o.metrics_listen);
	free(o.replica_id);
	free(o.listen);
	free(o.etcd);
	free(o.prefix);
	free(o.tls_cert);
	free(o.tls_key);
	free(o.tls_ca);
	free(o.admin_token_file);
	free(o.log_level);
	return rc;
}
