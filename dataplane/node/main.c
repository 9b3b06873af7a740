/* main.c - sluice-node: reads the config, loads the policy, starts the proxy
 * and the admin listener, then waits for signals in the main thread.
 *
 * Invariants: signals are blocked in every thread and read from a signalfd
 * here, never handled asynchronously; one thread writes the snapshot cell:
 * main in standalone mode, the sync agent (dataplane/sync) in sync mode once
 * started; a policy that fails to load never replaces the published one. In
 * sync mode the last good snapshot persisted in the state directory is
 * enforced before any control plane answers (fail-static). Exit status: 0 after a drain, 1 on a start-up failure,
 * 2 on a usage or configuration error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "node_admin.h"
#include "node_bpf.h"
#include "node_config.h"
#include "policy_load.h"
#include "proxy.h"
#include "snapshot.h"
#include "sync.h"
#include "tls.h"

#define EXIT_CONFIG 2
#define DEFAULT_SWEEP_INTERVAL_S 60u
/* The limiter is swept in this many steps per second, a full pass per
 * sweep interval: the main thread shares CPUs with the workers, and a pass
 * over the default table at once is ~6 ms of stall and 48 MiB through the
 * cache. */
#define SWEEP_STEPS_PER_S 10u

/* The running node. Owned by main(); lives until main returns. Fields the
 * admin thread reads are atomics or immutable after start-up. */
struct node {
	struct node_config cfg;
	char ruleset[POLICY_RULESET_NAME_MAX_LEN + 1];  /* the enforced ruleset's name */
	struct snapshot *current;         /* main's own reference to the published one */
	struct snapshot_cell *cell;
	struct limiter *limiter;
	struct tls_config tls_cfg;
	struct tls_ctx *tls;
	struct proxy *proxy;
	struct node_admin *admin;
	struct sync *sync;                /* NULL in standalone mode */
	struct node_bpf *bpf;             /* the kernel enforcer; a no-op when off */
	struct sync_label labels[NODE_CONFIG_MAX_LABELS];
	int access_log_fd;                /* -1: none; 1 for "-" (not owned) */
	struct timespec start_mono;
	double start_unix_s;

	atomic_bool policy_loaded;
	atomic_bool proxy_started;
	atomic_bool draining;
	atomic_uint_fast64_t reloads_ok;
	atomic_uint_fast64_t reloads_failed;
	atomic_uint_fast64_t swaps;
	atomic_uint_fast64_t buckets_swept;
	size_t sweep_slots_per_step;     /* a full limiter pass per sweep interval */
	_Atomic double last_reload_ok_unix_s;
};

static void usage(FILE *f)
{
	fputs("usage: sluice-node [--config FILE.yaml] [--policy FILE.json]\n"
	      "                   [--listen HOST:PORT] [--tls-listen HOST:PORT --tls-cert F\n"
	      "                    --tls-key F [--ktls] [--no-ktls] [--ktls-required]]\n"
	      "                   [--admin-listen HOST:PORT] [--workers N] [--pin-cpus]\n"
	      "                   [--access-log FILE|-] [--log-level debug|info|warn|error]\n"
	      "                   [--node-id ID] [--ruleset NAME] [--check-config]\n"
	      "Flags override the config file. deploy/README.md documents every key;\n"
	      "a sync section streams the ruleset from the control plane instead of a file.\n"
	      "Signals: SIGHUP reloads the policy file (standalone), TLS certificate and\n"
	      "reopens the access log; SIGTERM/SIGINT drain and exit.\n",
	      f);
}

static double timespec_s(const struct timespec *ts)
{
	return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static double wall_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return timespec_s(&ts);
}

static uint64_t mono_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- command line ---- */

enum {
	OPT_CONFIG = 256, OPT_POLICY, OPT_LISTEN, OPT_TLS_LISTEN, OPT_TLS_CERT, OPT_TLS_KEY,
	OPT_KTLS, OPT_NO_KTLS, OPT_KTLS_REQUIRED, OPT_ADMIN_LISTEN, OPT_WORKERS, OPT_PIN_CPUS,
	OPT_ACCESS_LOG, OPT_LOG_LEVEL, OPT_NODE_ID, OPT_RULESET, OPT_CHECK_CONFIG, OPT_HELP,
	OPT_VERSION,
};

static const struct option long_options[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "tls-listen", required_argument, NULL, OPT_TLS_LISTEN },
	{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
	{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
	{ "ktls", no_argument, NULL, OPT_KTLS },
	{ "no-ktls", no_argument, NULL, OPT_NO_KTLS },
	{ "ktls-required", no_argument, NULL, OPT_KTLS_REQUIRED },
	{ "admin-listen", required_argument, NULL, OPT_ADMIN_LISTEN },
	{ "workers", required_argument, NULL, OPT_WORKERS },
	{ "pin-cpus", no_argument, NULL, OPT_PIN_CPUS },
	{ "access-log", required_argument, NULL, OPT_ACCESS_LOG },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "node-id", required_argument, NULL, OPT_NODE_ID },
	{ "ruleset", required_argument, NULL, OPT_RULESET },
	{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

/* Parses the flags: the config file first (wherever --config appears), then
 * every other flag over it. Returns 0, or an exit status (-1: exit 0). */
static int parse_args(int argc, char **argv, struct node_config *c, bool *check_only)
{
	char err[NODE_CONFIG_ERR_LEN];
	const char *config_file = NULL;
	int opt, r = 0;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		if (opt == OPT_CONFIG)
			config_file = optarg;
		else if (opt == OPT_HELP) {
			usage(stdout);
			return -1;
		} else if (opt == OPT_VERSION) {
			printf("sluice-node %s\n", SLUICE_VERSION);
			return -1;
		} else if (opt == '?') {
			fprintf(stderr, "sluice-node: unknown or incomplete option '%s'\n",
				argv[optind - 1]);
			usage(stderr);
			return EXIT_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluice-node: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_CONFIG;
	}
	if (config_file && node_config_load(c, config_file, err) < 0) {
		fprintf(stderr, "sluice-node: %s\n", err);
		return EXIT_CONFIG;
	}

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		char *end;
		unsigned long v;

		switch (opt) {
		case OPT_POLICY: r = node_config_set(&c->policy_file, optarg); break;
		case OPT_LISTEN: r = node_config_set(&c->listen, optarg); break;
		case OPT_TLS_LISTEN: r = node_config_set(&c->tls_listen, optarg); break;
		case OPT_TLS_CERT: r = node_config_set(&c->tls_cert_file, optarg); break;
		case OPT_TLS_KEY: r = node_config_set(&c->tls_key_file, optarg); break;
		case OPT_KTLS: c->ktls = true; break;
		case OPT_NO_KTLS: c->ktls = false; break;
		case OPT_KTLS_REQUIRED: c->ktls_required = true; break;
		case OPT_ADMIN_LISTEN: r = node_config_set(&c->admin_listen, optarg); break;
		case OPT_PIN_CPUS: c->pin_cpus = true; break;
		case OPT_ACCESS_LOG: r = node_config_set(&c->access_log, optarg); break;
		case OPT_NODE_ID: r = node_config_set(&c->node_id, optarg); break;
		case OPT_RULESET: r = node_config_set(&c->ruleset, optarg); break;
		case OPT_CHECK_CONFIG: *check_only = true; break;
		case OPT_WORKERS:
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v > 1024 || optarg[0] == '-') {
				fprintf(stderr, "sluice-node: --workers: expected 0..1024, got '%s'\n",
					optarg);
				return EXIT_CONFIG;
			}
			c->workers = (unsigned)v;
			break;
		case OPT_LOG_LEVEL:
			if (log_level_parse(optarg, &c->log_level) < 0) {
				fprintf(stderr,
					"sluice-node: --log-level: expected debug, info, warn or error, got '%s'\n",
					optarg);
				return EXIT_CONFIG;
			}
			break;
		default:
			break;
		}
		if (r < 0) {
			fprintf(stderr, "sluice-node: out of memory\n");
			return 1;
		}
	}
	if (c->ktls_required)
		c->ktls = true;
	if (!c->node_id) {
		char host[HOST_NAME_MAX + 1] = "node";

		gethostname(host, sizeof(host) - 1);
		host[HOST_NAME_MAX] = '\0';
		if (node_config_set(&c->node_id, host) < 0)
			return 1;
	}
	if (node_config_check(c, err) < 0) {
		fprintf(stderr, "sluice-node: %s%s%s\n", config_file ? config_file : "",
			config_file ? ": " : "", err);
		return EXIT_CONFIG;
	}
	return 0;
}

/* ---- policy ---- */

/* Loads the policy file and publishes it when it differs. Returns 0 or
 * -errno (the old snapshot stays). Main thread only. */
/* After every publish, on the publishing thread: the kernel maps follow the
 * snapshot (only changed entries are written). A failure is logged and the
 * next snapshot reconciles everything. */
static void bpf_follow(struct node *n, const struct snapshot *s)
{
	char q[64];
	int r;

	if (!n->bpf)
		return;
	r = node_bpf_on_snapshot(n->bpf, s);
	if (r < 0)
		log_warn("Failed to update the kernel enforcer's maps, ignoring", "error=%s",
			 log_quote(strerror(-r), q, sizeof(q)));
}

static int policy_reload(struct node *n)
{
	char err[POLICY_LOAD_ERR_LEN], q[POLICY_LOAD_ERR_LEN + 64], fq[PATH_MAX + 8];
	struct snapshot *s;
	int r;

	log_quote(n->cfg.policy_file, fq, sizeof(fq));
	r = policy_load_file(n->cfg.policy_file, n->ruleset[0] ? n->ruleset : NULL, err, NULL, &s);
	if (r < 0) {
		atomic_fetch_add(&n->reloads_failed, 1);
		log_error("Failed to load policy, keeping the current one", "file=%s version=%llu error=%s",
			  fq, n->current ? (unsigned long long)snapshot_version(n->current) : 0ull,
			  log_quote(err, q, sizeof(q)));
		return r;
	}
	atomic_fetch_add(&n->reloads_ok, 1);
	atomic_store(&n->last_reload_ok_unix_s, wall_now_s());
	if (n->current && snapshot_version(s) == snapshot_version(n->current) &&
	    snapshot_equal(s, n->current)) {
		log_info("Policy file unchanged", "file=%s version=%llu", fq,
			 (unsigned long long)snapshot_version(s));
		snapshot_unref(s);
		return 0;
	}
	if (n->current && snapshot_version(s) <= snapshot_version(n->current))
		log_warn("Policy version does not increase, publishing anyway",
			 "file=%s version=%llu previous=%llu", fq,
			 (unsigned long long)snapshot_version(s),
			 (unsigned long long)snapshot_version(n->current));
	if (!n->ruleset[0])
		snprintf(n->ruleset, sizeof(n->ruleset), "%s", snapshot_ruleset(s));
	snapshot_unref(n->current);
	n->current = snapshot_ref(s);
	/* Counted before the store: whoever sees the new version in /metrics
	 * sees its swap counted too. */
	atomic_fetch_add(&n->swaps, 1);
	atomic_store(&n->policy_loaded, true);
	snapshot_cell_publish(n->cell, s);
	bpf_follow(n, s);
	log_info("Policy published", "ruleset=%s version=%llu resources=%zu",
		 log_quote(snapshot_ruleset(n->current), q, sizeof(q)),
		 (unsigned long long)snapshot_version(n->current), snapshot_count(n->current, 0));
	return 0;
}

/* ---- access log ---- */

static int access_log_open(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* Log rotation: the proxy keeps writing to the same fd number, which now
 * names the new file (dup2 replaces it atomically). */
static void access_log_reopen(struct node *n)
{
	char fq[PATH_MAX + 8];
	int fd;

	if (n->access_log_fd < 0 || strcmp(n->cfg.access_log, "-") == 0)
		return;
	log_quote(n->cfg.access_log, fq, sizeof(fq));
	fd = access_log_open(n->cfg.access_log);
	if (fd < 0) {
		log_error("Failed to reopen the access log, ignoring", "file=%s error=%s", fq,
			  log_quote(strerror(errno), (char[64]){ 0 }, 64));
		return;
	}
	if (dup3(fd, n->access_log_fd, O_CLOEXEC) < 0)
		log_error("Failed to reopen the access log, ignoring", "file=%s errno=%d", fq,
			  errno);
	close(fd);
}

/* ---- admin callbacks (admin thread) ---- */

static const char *node_not_ready(void *arg)
{
	struct node *n = arg;

	if (atomic_load(&n->draining))
		return "draining";
	if (!atomic_load(&n->policy_loaded))
		return "no policy loaded";
	if (!atomic_load(&n->proxy_started))
		return "proxy not started";
	return NULL;
}

static void tls_metrics(struct node *n, struct metrics_buf *b)
{
	static const char *const path_names[TLS_PATH__COUNT] = {
		[TLS_PATH_USERSPACE] = "userspace",
		[TLS_PATH_KTLS_SEND] = "ktls_send",
		[TLS_PATH_KTLS_BOTH] = "ktls_both",
	};
	struct tls_stats st;

	tls_ctx_stats(n->tls, &st);
	metrics_scalar_u64(b, "sluice_tls_kernel_ulp", "gauge",
			   "1 when this kernel accepts the TLS ULP (kTLS possible)",
			   tls_kernel_has_ulp());
	metrics_scalar_u64(b, "sluice_tls_handshakes_total", "counter", "Completed TLS handshakes",
			   st.handshakes);
	metrics_scalar_u64(b, "sluice_tls_handshake_failures_total", "counter",
			   "Failed TLS handshakes",
			   st.handshake_failures);
	metrics_family(b, "sluice_tls_connections_total", "counter",
		       "TLS connections by record path after the handshake");
	for (int i = 0; i < TLS_PATH__COUNT; i++) {
		const char *labels[] = { "path", path_names[i], NULL };

		metrics_sample_u64(b, "sluice_tls_connections_total", labels, st.path[i]);
	}
	metrics_scalar_u64(b, "sluice_tls_refused_no_ktls_total", "counter",
			   "Connections refused because ktls_required and no offload",
			   st.refused_no_ktls);
	metrics_family(b, "sluice_tls_reloads_total", "counter",
		       "Certificate reloads by result");
	metrics_sample_u64(b, "sluice_tls_reloads_total",
			   (const char *const[]){ "result", "ok", NULL }, st.reloads);
	metrics_sample_u64(b, "sluice_tls_reloads_total",
			   (const char *const[]){ "result", "failed", NULL }, st.reload_failures);
}

static void node_metrics(void *arg, struct metrics_buf *b)
{
	struct node *n = arg;
	struct timespec now;
	const struct snapshot *s;

	clock_gettime(CLOCK_MONOTONIC, &now);
	metrics_family(b, "sluice_node_info", "gauge", "Node identity and software version");
	metrics_sample_u64(b, "sluice_node_info",
			   (const char *const[]){ "node_id", n->cfg.node_id, "version",
						  SLUICE_VERSION, NULL },
			   1);
	metrics_scalar(b, "sluice_node_start_time_seconds", "gauge",
		       "Start time of the process since the Unix epoch",
		       n->start_unix_s);
	metrics_scalar(b, "sluice_node_uptime_seconds", "gauge",
		       "Seconds since the process started",
		       timespec_s(&now) - timespec_s(&n->start_mono));
	metrics_scalar_u64(b, "sluice_node_ready", "gauge", "1 when /readyz answers 200",
			   node_not_ready(n) == NULL);

	snapshot_read_lock();
	s = snapshot_cell_get(n->cell);
	if (s) {
		const char *labels[] = { "ruleset", snapshot_ruleset(s), NULL };

		metrics_family(b, "sluice_policy_version", "gauge",
			       "Version of the enforced ruleset");
		metrics_sample_u64(b, "sluice_policy_version", labels, snapshot_version(s));
		metrics_family(b, "sluice_policy_resources", "gauge",
			       "Resources in the enforced ruleset");
		metrics_sample_u64(b, "sluice_policy_resources", labels, snapshot_count(s, 0));
	}
	snapshot_read_unlock();

	metrics_family(b, "sluice_policy_reloads_total", "counter",
		       "Policy loads (start-up and SIGHUP) by result");
	metrics_sample_u64(b, "sluice_policy_reloads_total",
			   (const char *const[]){ "result", "ok", NULL },
			   atomic_load(&n->reloads_ok));
	metrics_sample_u64(b, "sluice_policy_reloads_total",
			   (const char *const[]){ "result", "failed", NULL },
			   atomic_load(&n->reloads_failed));
	metrics_scalar(b, "sluice_policy_last_reload_success_timestamp_seconds", "gauge",
		       "When a policy last loaded successfully, since the Unix epoch",
		       atomic_load(&n->last_reload_ok_unix_s));
	metrics_scalar_u64(b, "sluice_policy_snapshot_swaps_total", "counter",
			   "Snapshots published to the workers",
			   atomic_load(&n->swaps));
	metrics_scalar_u64(b, "sluice_limiter_buckets", "gauge", "Live rate-limit buckets",
			   limiter_count(n->limiter));
	metrics_scalar_u64(b, "sluice_limiter_buckets_swept_total", "counter",
			   "Idle rate-limit buckets reclaimed",
			   atomic_load(&n->buckets_swept));
	if (n->tls)
		tls_metrics(n, b);
	if (n->proxy)
		proxy_metrics(n->proxy, b);
	if (n->sync)
		sync_metrics(n->sync, b);
	if (n->bpf)
		node_bpf_metrics(n->bpf, b);
}

/* ---- sync mode ---- */

/* Sync thread, after each publish. */
static void on_sync_applied(void *arg, const struct snapshot *s)
{
	struct node *n = arg;

	bpf_follow(n, s);
	atomic_fetch_add(&n->swaps, 1);
	atomic_store(&n->policy_loaded, true);
}

/* Fail-static: the persisted snapshot, else an empty one, published before
 * the proxy starts. A bad state file is logged and never half-applied. */
static int publish_startup_snapshot(struct node *n)
{
	char err[SYNC_STATE_ERR_LEN], q[SYNC_STATE_ERR_LEN + 64], rq[128];
	struct snapshot *s;
	int r;

	log_quote(n->cfg.ruleset, rq, sizeof(rq));
	r = sync_state_load(n->cfg.sync_state_dir, n->cfg.ruleset, err, &s);
	if (r == 0) {
		snapshot_cell_publish(n->cell, s);
		bpf_follow(n, s);
		atomic_fetch_add(&n->swaps, 1);
		atomic_store(&n->policy_loaded, true);
		log_info("Enforcing the persisted snapshot until a control plane answers",
			 "ruleset=%s version=%llu resources=%zu", rq,
			 (unsigned long long)snapshot_version(s), snapshot_count(s, 0));
		return 0;
	}
	if (r == -ENOENT)
		log_info("No persisted snapshot: waiting for the control plane", "ruleset=%s", rq);
	else
		log_error("Ignoring the persisted snapshot", "ruleset=%s error=%s", rq,
			  log_quote(err, q, sizeof(q)));
	/* The proxy always reads a snapshot: an empty one refuses every
	 * request (no route) until the sync agent delivers. */
	r = snapshot_new_empty(n->cfg.ruleset, &s);
	if (r < 0) {
		log_error("Failed to create an empty ruleset", "ruleset=%s error=%d", rq, r);
		return r;
	}
	snapshot_cell_publish(n->cell, s);
	bpf_follow(n, s);
	log_warn("Not ready until a policy arrives", "ruleset=%s", rq);
	return 0;
}

static int start_sync(struct node *n)
{
	struct sync_config sc = {
		.node_id = n->cfg.node_id,
		.ruleset = n->cfg.ruleset,
		.labels = n->labels,
		.n_labels = n->cfg.n_labels,
		.endpoints = (const char *const *)n->cfg.sync_endpoints,
		.n_endpoints = n->cfg.n_sync_endpoints,
		.plaintext = n->cfg.sync_plaintext,
		.ca_file = n->cfg.sync_ca_file,
		.cert_file = n->cfg.sync_cert_file,
		.key_file = n->cfg.sync_key_file,
		.server_name = n->cfg.sync_server_name,
		.state_dir = n->cfg.sync_state_dir,
		.connect_timeout_ms = n->cfg.sync_connect_timeout_ms,
		.backoff_min_ms = n->cfg.sync_backoff_min_ms,
		.backoff_max_ms = n->cfg.sync_backoff_max_ms,
		.report_interval_ms = n->cfg.sync_report_interval_ms,
		.cell = n->cell,
		.on_applied = on_sync_applied,
		.metrics = node_metrics,
		.not_ready = node_not_ready,
		.arg = n,
	};
	char q[64];
	int r;

	for (unsigned i = 0; i < n->cfg.n_labels; i++)
		n->labels[i] = (struct sync_label){ n->cfg.labels[i].name, n->cfg.labels[i].value };
	if (n->cfg.sync_plaintext)
		log_warn("Sync in PLAINTEXT: no TLS, no node identity; for local development only",
			 NULL);
	r = sync_new(&sc, &n->sync);
	if (r < 0)
		return r; /* sync_new logged which file */
	r = sync_start(n->sync);
	if (r < 0)
		log_error("Failed to start the sync agent", "error=%s",
			  log_quote(strerror(-r), q, sizeof(q)));
	return r;
}

/* ---- start-up ---- */

_Static_assert(NODE_CONFIG_MAX_BPF_PORTS == NODE_BPF_MAX_HTTP_PORTS, "bpf.http_ports");

/* The kernel enforcer's object, before any snapshot is published (it
 * follows every publish from the first). Loading and attaching wait for
 * node_bpf_start(). */
static int start_bpf_config(struct node *n)
{
	struct node_bpf_config bc = {
		.enabled = n->cfg.bpf_enabled,
		.ifname = n->cfg.bpf_interface,
		.pin_path = n->cfg.bpf_pin_path,
		.escalation_capacity = n->cfg.bpf_escalation_capacity,
	};
	char host[256], q[64];
	uint16_t port;
	int r;

	if (n->cfg.bpf_log_level)
		(void)node_bpf_log_level_parse(n->cfg.bpf_log_level, &bc.log_level); /* checked */
	for (unsigned i = 0; i < n->cfg.n_bpf_http_ports; i++)
		bc.http_ports[i] = n->cfg.bpf_http_ports[i];
	if (!n->cfg.n_bpf_http_ports && n->cfg.listen &&
	    node_config_split_addr(n->cfg.listen, host, sizeof(host), &port) == 0)
		bc.http_ports[0] = port;
	r = node_bpf_new(&bc, &n->bpf);
	if (r < 0)
		log_error("Failed to set up the kernel enforcer", "error=%s",
			  log_quote(strerror(-r), q, sizeof(q)));
	return r;
}

/* "host:port" with the real port (what was asked may say 0). */
static void format_addr(const char *asked, uint16_t port, char *out, size_t len)
{
	char host[256];
	uint16_t ignored;

	if (node_config_split_addr(asked, host, sizeof(host), &ignored) < 0)
		host[0] = '\0';
	snprintf(out, len, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
}

static int start_tls(struct node *n)
{
	char q[PATH_MAX + 8];
	int r;

	n->tls_cfg = (struct tls_config){
		.cert_file = n->cfg.tls_cert_file,
		.key_file = n->cfg.tls_key_file,
		.ktls = n->cfg.ktls,
		.ktls_required = n->cfg.ktls_required,
	};
	r = tls_ctx_new(&n->tls_cfg, &n->tls);
	if (r < 0)
		log_error("Failed to load the TLS certificate and key", "cert=%s key=%s error=%s",
			  log_quote(n->cfg.tls_cert_file, q, sizeof(q)),
			  log_quote(n->cfg.tls_key_file, (char[PATH_MAX + 8]){ 0 }, PATH_MAX + 8),
			  log_quote(strerror(-r), (char[64]){ 0 }, 64));
	else if (n->cfg.ktls && !tls_kernel_has_ulp())
		log_info("Kernel has no TLS ULP: TLS records stay in user space",
			 "ktls_required=%s", n->cfg.ktls_required ? "true" : "false");
	return r;
}

static int start_proxy(struct node *n)
{
	struct proxy_config pc = {
		.workers = n->cfg.workers,
		.pin_cpus = n->cfg.pin_cpus,
		.reuseport_steering = n->cfg.reuseport_steering,
		.listen = n->cfg.listen,
		.tls_listen = n->cfg.tls_listen,
		.tls = n->tls,
		.max_connections = n->cfg.max_connections,
		.max_clients = n->cfg.max_clients,
		.max_head_bytes = n->cfg.max_head_bytes,
		.max_body_bytes = n->cfg.max_body_bytes,
		.header_timeout_ms = n->cfg.header_timeout_ms,
		.body_timeout_ms = n->cfg.body_timeout_ms,
		.idle_timeout_ms = n->cfg.idle_timeout_ms,
		.upstream_connect_timeout_ms = n->cfg.upstream_connect_timeout_ms,
		.upstream_read_timeout_ms = n->cfg.upstream_read_timeout_ms,
		.upstream_idle_per_worker = n->cfg.upstream_idle_per_worker,
		.upstream_idle_timeout_ms = n->cfg.upstream_idle_timeout_ms,
		.drain_timeout_ms = n->cfg.drain_timeout_ms,
		.policy = n->cell,
		.limiter = n->limiter,
		.access_log_fd = n->access_log_fd,
		.on_reject = node_bpf_on_reject,
		.on_reject_arg = n->bpf,
	};
	char q[64];
	int r;

	r = proxy_new(&pc, &n->proxy);
	if (r < 0) {
		log_error("Failed to create the proxy", "listen=%s tls_listen=%s error=%s",
			  n->cfg.listen ? n->cfg.listen : "-",
			  n->cfg.tls_listen ? n->cfg.tls_listen : "-",
			  log_quote(strerror(-r), q, sizeof(q)));
		return r;
	}
	r = proxy_start(n->proxy);
	if (r < 0) {
		log_error("Failed to start the proxy workers", "error=%s",
			  log_quote(strerror(-r), q, sizeof(q)));
		return r;
	}
	atomic_store(&n->proxy_started, true);
	return 0;
}

static void print_ready(struct node *n)
{
	char line[1024], a[300];
	size_t len;

	len = (size_t)snprintf(line, sizeof(line), "sluice-node: ready");
	if (n->proxy && n->cfg.listen) {
		format_addr(n->cfg.listen, proxy_port(n->proxy, false), a, sizeof(a));
		len += (size_t)snprintf(line + len, sizeof(line) - len, " listen=%s", a);
	}
	if (n->proxy && n->cfg.tls_listen) {
		format_addr(n->cfg.tls_listen, proxy_port(n->proxy, true), a, sizeof(a));
		len += (size_t)snprintf(line + len, sizeof(line) - len, " tls_listen=%s", a);
	}
	if (n->admin) {
		format_addr(n->cfg.admin_listen, node_admin_port(n->admin), a, sizeof(a));
		snprintf(line + len, sizeof(line) - len, " admin=%s", a);
	}
	printf("%s\n", line);
	fflush(stdout);
}

/* ---- signals ---- */

static void on_sighup(struct node *n)
{
	char q[64];
	int r;

	log_info("SIGHUP: reloading", NULL);
	if (n->cfg.policy_file)
		policy_reload(n);
	if (n->tls) {
		r = tls_ctx_reload(n->tls, &n->tls_cfg);
		if (r < 0)
			log_error("Failed to reload the TLS certificate, keeping the current one",
				  "error=%s", log_quote(strerror(-r), q, sizeof(q)));
		else
			log_info("TLS certificate reloaded", NULL);
	}
	access_log_reopen(n);
}

static void sweep_limiter(struct node *n)
{
	size_t k = limiter_sweep_step(n->limiter, mono_now_ns(), n->sweep_slots_per_step);

	atomic_fetch_add(&n->buckets_swept, k);
	if (k)
		log_debug("Limiter sweep", "reclaimed=%zu live=%zu", k, limiter_count(n->limiter));
}

/* Returns the terminating signal. */
static int serve(struct node *n, int sig_fd, int timer_fd)
{
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = sig_fd, .events = POLLIN },
			{ .fd = timer_fd, .events = POLLIN },
		};
		struct signalfd_siginfo si;
		uint64_t ticks;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll failed, stopping", "errno=%d", errno);
			return SIGTERM;
		}
		if (pfd[1].revents & POLLIN && read(timer_fd, &ticks, sizeof(ticks)) > 0)
			sweep_limiter(n);
		if (!(pfd[0].revents & POLLIN))
			continue;
		if (read(sig_fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
			continue;
		if (si.ssi_signo == SIGHUP)
			on_sighup(n);
		else
			return (int)si.ssi_signo;
	}
}

/* readyz says 503 first, so load balancers stop sending before the
 * listeners close; a second SIGTERM/SIGINT cuts the wait short. */
static void drain(struct node *n, int sig_fd, int sig)
{
	uint64_t deadline_ns = mono_now_ns() + (uint64_t)n->cfg.admin_drain_delay_ms * 1000000u;
	unsigned forced;

	atomic_store(&n->draining, true);
	log_info("Draining", "signal=%s delay_ms=%u", sig == SIGINT ? "SIGINT" : "SIGTERM",
		 n->cfg.admin_drain_delay_ms);
	for (;;) {
		uint64_t now = mono_now_ns();
		struct pollfd pfd = { .fd = sig_fd, .events = POLLIN };
		struct signalfd_siginfo si;

		if (now >= deadline_ns)
			break;
		if (poll(&pfd, 1, (int)((deadline_ns - now + 999999) / 1000000)) > 0 &&
		    read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si) &&
		    si.ssi_signo != SIGHUP)
			break;
	}
	if (n->proxy) {
		forced = proxy_drain(n->proxy);
		log_info("Drained", "closed_forcibly=%u", forced);
	}
}

int main(int argc, char **argv)
{
	struct node n = { .access_log_fd = -1 };
	struct limiter_config lc;
	struct itimerspec its = { 0 };
	bool check_only = false;
	char err[POLICY_LOAD_ERR_LEN], q[64];
	sigset_t mask;
	int sig_fd = -1, timer_fd = -1, status = 1, r, sig;

	clock_gettime(CLOCK_MONOTONIC, &n.start_mono);
	n.start_unix_s = wall_now_s();
	node_config_init(&n.cfg);
	r = parse_args(argc, argv, &n.cfg, &check_only);
	if (r) {
		status = r < 0 ? 0 : r;
		goto out_config;
	}
	log_set_level(n.cfg.log_level);
	if (n.cfg.ruleset)
		snprintf(n.ruleset, sizeof(n.ruleset), "%s", n.cfg.ruleset);

	if (check_only) {
		struct snapshot *s;

		if (n.cfg.policy_file &&
		    policy_load_file(n.cfg.policy_file, n.cfg.ruleset, err, NULL, &s) < 0) {
			fprintf(stderr, "sluice-node: %s\n", err);
			status = EXIT_CONFIG;
			goto out_config;
		}
		if (n.cfg.policy_file)
			snapshot_unref(s);
		printf("sluice-node: configuration ok\n");
		status = 0;
		goto out_config;
	}

	/* Before any thread exists, so every thread inherits the mask. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (sig_fd < 0 || timer_fd < 0) {
		log_error("Failed to create the signal or timer fd", "errno=%d", errno);
		goto out_fds;
	}

	if (start_bpf_config(&n) < 0)
		goto out_fds;
	r = snapshot_cell_new(NULL, &n.cell);
	if (r < 0)
		goto out_fds;
	if (n.cfg.policy_file) {
		if (policy_reload(&n) < 0)
			goto out_cell;
	} else if (publish_startup_snapshot(&n) < 0) {
		goto out_cell;
	}

	lc = (struct limiter_config){
		.max_buckets = n.cfg.limiter_max_buckets,
		.idle_ttl_ns = (uint64_t)n.cfg.limiter_idle_ttl_s * 1000000000u,
		.prefault = n.cfg.limiter_prefault,
	};
	r = limiter_new(&lc, &n.limiter);
	if (r < 0) {
		log_error("Failed to create the limiter", "max_buckets=%zu error=%s",
			  n.cfg.limiter_max_buckets, log_quote(strerror(-r), q, sizeof(q)));
		goto out_cell;
	}
	{
		uint64_t steps = (uint64_t)(n.cfg.limiter_sweep_interval_s
						    ? n.cfg.limiter_sweep_interval_s
						    : DEFAULT_SWEEP_INTERVAL_S) *
				 SWEEP_STEPS_PER_S;

		n.sweep_slots_per_step = (limiter_slots(n.limiter) + steps - 1) / steps;
		its.it_interval.tv_nsec = 1000000000L / SWEEP_STEPS_PER_S;
		its.it_value = its.it_interval;
	}
	timerfd_settime(timer_fd, 0, &its, NULL);

	if (n.cfg.access_log) {
		if (strcmp(n.cfg.access_log, "-") == 0) {
			n.access_log_fd = STDOUT_FILENO;
		} else {
			n.access_log_fd = access_log_open(n.cfg.access_log);
			if (n.access_log_fd < 0) {
				log_error("Failed to open the access log", "file=%s error=%s",
					  log_quote(n.cfg.access_log, err, sizeof(err)),
					  log_quote(strerror(errno), q, sizeof(q)));
				goto out_limiter;
			}
		}
	}

	if (n.cfg.tls_listen && start_tls(&n) < 0)
		goto out_access_log;

	if (n.cfg.admin_listen) {
		struct node_admin_config ac = {
			.listen = n.cfg.admin_listen,
			.metrics = node_metrics,
			.not_ready = node_not_ready,
			.arg = &n,
		};

		r = node_admin_new(&ac, &n.admin);
		if (r < 0) {
			log_error("Failed to open the admin listener", "listen=%s error=%s",
				  log_quote(n.cfg.admin_listen, err, sizeof(err)),
				  log_quote(strerror(-r), q, sizeof(q)));
			goto out_tls;
		}
	}
	if ((r = node_bpf_start(n.bpf, err, sizeof(err))) < 0)
		log_warn("Kernel enforcer not running, ignoring: the proxy enforces alone",
			 "interface=%s error=%s", n.cfg.bpf_interface,
			 log_quote(err, q, sizeof(q)));
	if (start_proxy(&n) < 0)
		goto out_proxy;
	if (n.admin && (r = node_admin_start(n.admin)) < 0) {
		log_error("Failed to start the admin thread", "error=%s",
			  log_quote(strerror(-r), q, sizeof(q)));
		goto out_proxy;
	}
	if (n.cfg.sync_enabled && start_sync(&n) < 0)
		goto out_proxy;
	log_info("sluice-node started", "node_id=%s workers=%u",
		 log_quote(n.cfg.node_id, err, sizeof(err)), n.cfg.workers);
	print_ready(&n);

	sig = serve(&n, sig_fd, timer_fd);
	drain(&n, sig_fd, sig);
	status = 0;

out_proxy:
	/* The sync and admin threads read the proxy's metrics: stop them first. */
	sync_free(n.sync);
	node_admin_free(n.admin);
	proxy_free(n.proxy);
	node_bpf_stop(n.bpf); /* after the proxy: its workers call on_reject */
out_tls:
	tls_ctx_free(n.tls);
out_access_log:
	if (n.access_log_fd > STDOUT_FILENO)
		close(n.access_log_fd);
out_limiter:
	limiter_free(n.limiter);
out_cell:
	snapshot_unref(n.current);
	snapshot_cell_free(n.cell);
	snapshot_barrier();
out_fds:
	node_bpf_free(n.bpf);
	if (timer_fd >= 0)
		close(timer_fd);
	if (sig_fd >= 0)
		close(sig_fd);
out_config:
	node_config_done(&n.cfg);
	return status;
}
