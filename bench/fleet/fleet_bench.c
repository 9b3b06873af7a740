/* fleet_bench.c - commit->all-acked convergence and control-plane memory per
 * node, with N fake nodes (fleet_sim) on the real sluice-control over a real
 * etcd.
 *
 * For each N (default 10, 100, 1000) a fresh sluice-control is started in
 * plaintext development mode; N nodes connect and ack their Snapshot; the
 * control plane's VmRSS before and after gives rss_per_node_kib_nN. Then
 * FLEET_CHANGES single-resource changes go through PolicyAdmin/ApplyChanges,
 * one at a time: convergence = from just before the call is sent to the
 * moment the last node received a push of that version (receive time at
 * the node, recorded by the simulator). Prints `name: value` lines; with
 * SLUICE_BENCH_RECORD=1 appends a row to SLUICE_BENCH_RESULTS.
 *
 * usage: fleet_bench SLUICE_CONTROL [GEN_CERTS_SH]
 * env (bench/fleet/README.md): FLEET_NODES ("10,100,1000"), FLEET_CHANGES
 *      (30), FLEET_GAP_MS (50, pause after each converged change),
 *      FLEET_WAIT_MS (30000, bound on one change's convergence),
 *      FLEET_CONTROL_ARGS (extra sluice-control flags, space-separated),
 *      FLEET_TLS=1 (mTLS: every node with its own certificate made by
 *      GEN_CERTS_SH; admin by bearer token over TLS), FLEET_PKI_DIR (keep
 *      those certificates for the next run).
 * Exit 77 (skip) without /usr/bin/etcd or when the fd limit cannot be
 * raised for the largest N.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "bench_record.h"
#include "etcd_helper.h"
#include "fleet_sim.h"
#include "rpc_client.h"
#include "sluice/v1/admin.pb-c.h"

#define RULESET "fleet-bench"
#define NODE_PREFIX "sim"
#define LIMIT_ID "fleet-bench-limit"
#define TOKEN "fleet-bench-admin-token"
#define MAX_RUNS 8
#define MAX_CHANGES 10000
#define READY_WAIT_MS 20000
#define STOP_WAIT_MS 10000
#define ADMIN_DEADLINE_MS 10000
#define SETTLE_MS 500            /* before each RSS reading */
#define MAX_EXTRA_ARGS 32

static const char *prog = "fleet_bench";

/* What every run shares. Owned by main; lives until exit. */
struct bench {
	const char *control_bin;
	const char *etcd;          /* client URL */
	const char *dir;           /* temp dir: token, logs, pki/ */
	bool tls;
	char pki[320];             /* with tls: ca.pem, control.*, sim-<i>.* */
	char ca[340];
};

static uint64_t env_u64(const char *name, uint64_t def, uint64_t min, uint64_t max)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long n;

	if (!v || !*v)
		return def;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || *end || n < min || n > max) {
		fprintf(stderr, "%s: bad %s='%s' (%llu..%llu), using %llu\n", prog, name, v,
			(unsigned long long)min, (unsigned long long)max,
			(unsigned long long)def);
		return def;
	}
	return n;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Runs argv and waits for it (the caller bounds it with timeout(1)).
 * 0 when it exits 0. */
static int run_wait(char *const *argv)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* With mTLS: the test PKI with one certificate per node id. */
static int make_certs(struct bench *b, const char *gen_certs, unsigned max_n)
{
	char **argv = calloc((size_t)max_n + 5, sizeof(*argv));
	uint64_t t0 = fleet_sim_now_ns();
	size_t k = 0;
	int err;

	if (!argv)
		return -ENOMEM;
	argv[k++] = (char *)"timeout";
	argv[k++] = (char *)"900";      /* ~0.2 s per certificate here */
	argv[k++] = (char *)gen_certs;
	argv[k++] = b->pki;
	for (unsigned i = 0; i < max_n; i++)
		if (asprintf(&argv[k++], NODE_PREFIX "-%u", i) < 0)
			argv[--k] = NULL;
	err = k == (size_t)max_n + 4 ? run_wait(argv) : -ENOMEM;
	for (size_t i = 4; i < k; i++)
		free(argv[i]);
	free(argv);
	if (!err)
		printf("gen_certs_s: %.1f\n", (double)(fleet_sim_now_ns() - t0) / 1e9);
	return err;
}

/* ---- the control plane process --------------------------------------------- */

/* A running sluice-control. Owned by main; lives until control_stop. */
struct control {
	pid_t pid;
	int port;
	char log[300];
};

static void print_log_tail(const char *path)
{
	char buf[4096];
	FILE *f = fopen(path, "rb");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(stderr, "--- end of '%s' ---\n%s\n---\n", path, buf);
}

/* Starts `bin` and waits (bounded) for its "ready listen=HOST:PORT" line. */
static int control_start(const struct bench *b, unsigned run, struct control *c)
{
	char token_file[300], line[512], cert[340], key[340];
	const char *argv[16 + MAX_EXTRA_ARGS];
	char *extra = getenv("FLEET_CONTROL_ARGS") ? strdup(getenv("FLEET_CONTROL_ARGS")) : NULL;
	size_t k = 0, have = 0;
	uint64_t until;
	int out[2], logfd;
	char *port;

	snprintf(token_file, sizeof(token_file), "%s/admin.token", b->dir);
	snprintf(c->log, sizeof(c->log), "%s/control-%u.log", b->dir, run);
	snprintf(cert, sizeof(cert), "%s/control.pem", b->pki);
	snprintf(key, sizeof(key), "%s/control.key", b->pki);
	argv[k++] = b->control_bin;
	if (b->tls) {
		argv[k++] = "--tls-cert";
		argv[k++] = cert;
		argv[k++] = "--tls-key";
		argv[k++] = key;
		argv[k++] = "--tls-ca";
		argv[k++] = b->ca;
	} else {
		argv[k++] = "--plaintext";
	}
	argv[k++] = "--listen";
	argv[k++] = "127.0.0.1:0";
	argv[k++] = "--etcd";
	argv[k++] = b->etcd;
	argv[k++] = "--admin-token-file";
	argv[k++] = token_file;
	argv[k++] = "--log-level";
	argv[k++] = "warn";
	for (char *save = NULL, *t = extra ? strtok_r(extra, " ", &save) : NULL;
	     t && k < sizeof(argv) / sizeof(argv[0]) - 1; t = strtok_r(NULL, " ", &save))
		argv[k++] = t;
	argv[k] = NULL;

	logfd = open(c->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0 || pipe2(out, O_CLOEXEC)) {
		free(extra);
		return -errno;
	}
	c->pid = fork();
	if (c->pid == 0) {
		/* dies with us, so a crashed benchmark leaves no server behind */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(out[1], STDOUT_FILENO);
		dup2(logfd, STDERR_FILENO);
		execv(b->control_bin, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(logfd);
	free(extra);
	if (c->pid < 0) {
		close(out[0]);
		return -errno;
	}
	until = fleet_sim_now_ns() + (uint64_t)READY_WAIT_MS * 1000000u;
	while (!memchr(line, '\n', have)) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };
		uint64_t now = fleet_sim_now_ns();
		ssize_t r;

		if (now >= until || have == sizeof(line) - 1 ||
		    poll(&p, 1, (int)((until - now) / 1000000u) + 1) <= 0)
			break;
		r = read(out[0], line + have, sizeof(line) - 1 - have);
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	/* the read end stays open until control_stop: sluice-control may
	 * write to stdout again */
	line[have] = '\0';
	/* "sluice-control: ready listen=HOST:PORT[ more=...]": the port is
	 * after the last ':' of the listen token (HOST may be [v6]) */
	port = strstr(line, "ready listen=");
	if (port) {
		port += strlen("ready listen=");
		port[strcspn(port, " \n")] = '\0';
		port = strrchr(port, ':');
	}
	c->port = port ? atoi(port + 1) : 0;
	if (c->port <= 0) {
		fprintf(stderr, "%s: sluice-control exited or printed no ready line within %d ms "
			"(stdout: '%s')\n", prog, READY_WAIT_MS, line);
		print_log_tail(c->log);
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		close(out[0]);
		return -ETIMEDOUT;
	}
	return out[0];
}

/* SIGTERM, bounded wait, then SIGKILL. */
static void control_stop(struct control *c, int out_fd)
{
	uint64_t until = fleet_sim_now_ns() + (uint64_t)STOP_WAIT_MS * 1000000u;
	int st;

	if (c->pid <= 0)
		return;
	kill(c->pid, SIGTERM);
	while (waitpid(c->pid, &st, WNOHANG) == 0) {
		if (fleet_sim_now_ns() > until) {
			fprintf(stderr, "%s: sluice-control did not stop within %d ms, killing it\n",
				prog, STOP_WAIT_MS);
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			break;
		}
		sleep_ms(20);
	}
	c->pid = 0;
	if (out_fd >= 0)
		close(out_fd);
}

/* VmRSS of pid in KiB; -1 if unreadable. */
static long vmrss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* User + system CPU seconds of pid (from /proc/PID/stat); -1 if unreadable. */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces: fields count from its ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- the admin client -------------------------------------------------------- */

/* ApplyChanges upserting the one RateLimit (plus, when seed, a Client that
 * uses it), over the rpc tests' client. 0 and *version, or -EPROTO with the
 * status printed. */
static int admin_apply(struct tc *a, uint64_t rate, bool seed, uint64_t *version)
{
	Sluice__V1__RateLimit rl = SLUICE__V1__RATE_LIMIT__INIT;
	Sluice__V1__Client cl = SLUICE__V1__CLIENT__INIT;
	Sluice__V1__Resource r_rl = SLUICE__V1__RESOURCE__INIT, r_cl = SLUICE__V1__RESOURCE__INIT;
	Sluice__V1__Resource *ups[2] = { &r_rl, &r_cl };
	Sluice__V1__ApplyChangesRequest req = SLUICE__V1__APPLY_CHANGES_REQUEST__INIT;
	Sluice__V1__ApplyChangesResponse *resp = NULL;
	char *keys[1] = { (char *)"fleet-bench-key" };
	struct tc_result res;
	uint8_t *buf;
	size_t len;
	int err = 0;

	rl.id = (char *)LIMIT_ID;
	rl.algorithm = SLUICE__V1__ALGORITHM__TOKEN_BUCKET;
	rl.rate = rate;
	rl.unit = SLUICE__V1__RATE_UNIT__SECOND;
	rl.burst = 2 * rate;
	r_rl.kind_case = SLUICE__V1__RESOURCE__KIND_RATE_LIMIT;
	r_rl.rate_limit = &rl;
	cl.id = (char *)"fleet-bench-client";
	cl.n_keys = 1;
	cl.keys = keys;
	cl.rate_limit = (char *)LIMIT_ID;
	r_cl.kind_case = SLUICE__V1__RESOURCE__KIND_CLIENT;
	r_cl.client = &cl;
	req.ruleset = (char *)RULESET;
	req.n_upserts = seed ? 2 : 1;
	req.upserts = ups;
	req.author = (char *)"fleet-bench";
	req.message = (char *)"fleet benchmark change";
	len = sluice__v1__apply_changes_request__get_packed_size(&req);
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	sluice__v1__apply_changes_request__pack(&req, buf);
	tc_unary(a, "/sluice.v1.PolicyAdmin/ApplyChanges", buf, len, TOKEN, ADMIN_DEADLINE_MS, &res);
	free(buf);
	if (res.status == GRPC_STATUS_OK && res.data)
		resp = sluice__v1__apply_changes_response__unpack(NULL, res.len, res.data);
	if (res.status != GRPC_STATUS_OK || !resp || !resp->version || !resp->version->version) {
		fprintf(stderr, "%s: ApplyChanges failed: status %d '%s'%s\n", prog, res.status,
			res.details ? res.details : "",
			res.status == GRPC_STATUS_OK ? " (no version in the reply)" : "");
		err = -EPROTO;
	} else {
		*version = resp->version->version;
	}
	if (resp)
		sluice__v1__apply_changes_response__free_unpacked(resp, NULL);
	tc_result_done(&res);
	return err;
}

/* The machine is shared: a figure taken under load says so. */
static void print_loadavg(unsigned n)
{
	double l1;
	FILE *f = fopen("/proc/loadavg", "r");

	if (f && fscanf(f, "%lf", &l1) == 1)
		printf("loadavg_1m_n%u: %.2f\n", n, l1);
	if (f)
		fclose(f);
}

/* ---- one run at N nodes ----------------------------------------------------------- */

/* Figures of one N. Owned by main. */
struct run {
	unsigned n;
	bool done;
	double p50_ms, p99_ms, max_ms, rss_per_node_kib, connect_ms;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least p of them at or below. */
static double percentile(const double *sorted, size_t n, double p)
{
	size_t rank = (size_t)(p * (double)n + 0.999999);

	return sorted[rank ? rank - 1 : 0];
}

static int run_one(const struct bench *b, unsigned index, unsigned changes, unsigned gap_ms, uint64_t wait_ms, uint64_t *rate,
		   struct run *out)
{
	struct control c = { 0 };
	struct tc *a;
	struct fleet_sim *sim = NULL;
	struct fleet_sim_config sc = { 0 };
	double *lat = NULL;
	char target[64];
	uint64_t v0, t0, last, first, t_commit, v_first = 0, v_last = 0;
	double *commit = NULL, *first_ms = NULL, cpu_sim0, cpu_ctl0;
	long rss0, rss1, rss_end;
	int out_fd, err;

	out_fd = control_start(b, index, &c);
	if (out_fd < 0)
		return out_fd;
	/* tc_new reads the CA file; an unreadable one fails the first call */
	a = tc_new(c.port, b->tls ? b->ca : NULL, NULL, NULL);
	if (!a) {
		control_stop(&c, out_fd);
		return -ENOMEM;
	}
	/* the head exists (and is loaded) before the "before" reading */
	err = admin_apply(a, (*rate)++, true, &v0);
	if (err) {
		print_log_tail(c.log);
		goto out;
	}
	sleep_ms(SETTLE_MS);
	rss0 = vmrss_kib(c.pid);

	snprintf(target, sizeof(target), "127.0.0.1:%d", c.port);
	sc.target = target;
	sc.ruleset = RULESET;
	/* the same ids in every run: with mTLS each needs its certificate */
	sc.node_prefix = NODE_PREFIX;
	sc.n_nodes = out->n;
	if (b->tls) {
		sc.tls_ca_file = b->ca;
		sc.tls_cert_dir = b->pki;
	}
	err = fleet_sim_new(&sc, &sim);
	if (err) {
		fprintf(stderr, "%s: cannot start %u fake nodes: %s\n", prog, out->n, strerror(-err));
		goto out;
	}
	t0 = fleet_sim_now_ns();
	err = fleet_sim_wait_version(sim, v0, t0 + (30000u + 30u * out->n) * 1000000ull, &last,
				     NULL);
	if (err) {
		fprintf(stderr, "%s: N=%u: nodes did not all get version %llu: %s\n", prog, out->n,
			(unsigned long long)v0, fleet_sim_error(sim));
		if (!b->tls && strstr(fleet_sim_error(sim), "UNAUTHENTICATED"))
			fprintf(stderr, "%s: hint: this sluice-control refuses node calls without a "
				"certificate; run with FLEET_TLS=1 (bench/fleet/README.md)\n", prog);
		print_log_tail(c.log);
		goto out;
	}
	out->connect_ms = (double)(last - t0) / 1e6;
	sleep_ms(SETTLE_MS);
	rss1 = vmrss_kib(c.pid);
	out->rss_per_node_kib = rss0 < 0 || rss1 < 0 ? -1 :
				(double)(rss1 - rss0) / (double)out->n;

	lat = calloc(changes, sizeof(*lat));
	commit = calloc(changes, sizeof(*commit));
	first_ms = calloc(changes, sizeof(*first_ms));
	if (!lat || !commit || !first_ms) {
		err = -ENOMEM;
		goto out;
	}
	cpu_sim0 = self_cpu_s();
	cpu_ctl0 = proc_cpu_s(c.pid);
	for (unsigned i = 0; i < changes; i++) {
		uint64_t v;

		t0 = fleet_sim_now_ns();
		err = admin_apply(a, (*rate)++, false, &v);
		t_commit = fleet_sim_now_ns();
		if (err) {
			print_log_tail(c.log);
			goto out;
		}
		err = fleet_sim_wait_version(sim, v, fleet_sim_now_ns() + wait_ms * 1000000u, &last,
					     &first);
		if (err) {
			fprintf(stderr, "%s: N=%u change %u (version %llu): %s\n", prog, out->n, i,
				(unsigned long long)v, fleet_sim_error(sim));
			print_log_tail(c.log);
			goto out;
		}
		if (i == 0)
			v_first = v;
		v_last = v;
		lat[i] = last > t0 ? (double)(last - t0) / 1e6 : 0;
		first_ms[i] = first > t0 ? (double)(first - t0) / 1e6 : 0;
		commit[i] = (double)(t_commit - t0) / 1e6;
		sleep_ms(gap_ms);
	}
	/* read before anything else runs: who spent the CPU while changes
	 * converged (on a shared 2-core machine the simulator's share, HTTP/2
	 * and TLS for N connections, is what the control plane did not get),
	 * and the RSS growth over the changes (memory kept per version) */
	cpu_sim0 = self_cpu_s() - cpu_sim0;
	cpu_ctl0 = proc_cpu_s(c.pid) - cpu_ctl0;
	rss_end = vmrss_kib(c.pid);
	qsort(lat, changes, sizeof(*lat), cmp_double);
	qsort(commit, changes, sizeof(*commit), cmp_double);
	qsort(first_ms, changes, sizeof(*first_ms), cmp_double);
	out->p50_ms = percentile(lat, changes, 0.50);
	out->p99_ms = percentile(lat, changes, 0.99);
	out->max_ms = lat[changes - 1];
	out->done = true;
	printf("convergence_p50_ms_n%u: %.1f\n", out->n, out->p50_ms);
	printf("convergence_p99_ms_n%u: %.1f\n", out->n, out->p99_ms);
	printf("rss_per_node_kib_n%u: %.1f\n", out->n, out->rss_per_node_kib);
	printf("convergence_max_ms_n%u: %.1f\n", out->n, out->max_ms);
	printf("commit_reply_p50_ms_n%u: %.1f\n", out->n, percentile(commit, changes, 0.5));
	printf("first_node_p50_ms_n%u: %.1f\n", out->n, percentile(first_ms, changes, 0.5));
	printf("connect_all_ms_n%u: %.1f\n", out->n, out->connect_ms);
	printf("rss_before_kib_n%u: %ld\n", out->n, rss0);
	printf("rss_after_kib_n%u: %ld\n", out->n, rss1);
	printf("rss_end_kib_n%u: %ld\n", out->n, rss_end);
	printf("cpu_sim_s_n%u: %.2f\n", out->n, cpu_sim0);
	printf("cpu_control_s_n%u: %.2f\n", out->n, cpu_ctl0);
	/* versions are etcd revisions: what else was written to etcd per
	 * change (node registry, status) shows in the gaps between them */
	if (changes > 1)
		printf("etcd_revisions_per_change_n%u: %.1f\n", out->n,
		       (double)(v_last - v_first) / (double)(changes - 1));
	printf("pushes_n%u: %llu\n", out->n, (unsigned long long)fleet_sim_pushes(sim));
	print_loadavg(out->n);
	fflush(stdout);
out:
	free(lat);
	free(commit);
	free(first_ms);
	fleet_sim_free(sim);
	tc_free(a);
	control_stop(&c, out_fd);
	return err;
}

/* ---- main ---------------------------------------------------------------------------- */

static int parse_nodes(const char *list, unsigned *ns, size_t max)
{
	char *copy = strdup(list), *save = NULL;
	int k = 0;

	if (!copy)
		return -ENOMEM;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *end;
		unsigned long n = strtoul(t, &end, 10);

		if (*end || !n || n > FLEET_SIM_MAX_NODES || (size_t)k == max) {
			free(copy);
			return -EINVAL;
		}
		ns[k++] = (unsigned)n;
	}
	free(copy);
	return k ? k : -EINVAL;
}

/* Room for every fake node's socket here and in sluice-control (which
 * inherits the limit). */
static int raise_nofile(unsigned max_n)
{
	rlim_t need = (rlim_t)max_n * 2 + 1024;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return -errno;
	if (rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max < need)
		rl.rlim_max = need;
	rl.rlim_cur = need;
	return setrlimit(RLIMIT_NOFILE, &rl) ? -errno : 0;
}

static void record(const struct run *runs, size_t n_runs, bool tls)
{
	static const unsigned cols[] = { 10, 100, 1000 };
	char line[512];
	size_t len;

	len = (size_t)snprintf(line, sizeof(line), "%s", tls ? "fleet (mtls)" : "fleet");
	for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
		const struct run *r = NULL;

		for (size_t i = 0; i < n_runs; i++)
			if (runs[i].n == cols[c] && runs[i].done)
				r = &runs[i];
		if (r)
			len += (size_t)snprintf(line + len, sizeof(line) - len, " | %.1f | %.1f | %.1f",
						r->p50_ms, r->p99_ms, r->rss_per_node_kib);
		else
			len += (size_t)snprintf(line + len, sizeof(line) - len, " | - | - | -");
	}
	bench_record(prog, "fleet", line);
}

static int write_token(const char *dir)
{
	char path[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/admin.token", dir);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	fputs(TOKEN "\n", f);
	return fclose(f) ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct run runs[MAX_RUNS];
	unsigned ns[MAX_RUNS], max_n = 0, changes, gap_ms;
	uint64_t wait_ms, rate = 1;
	struct etcd_helper *etcd = NULL;
	char dir[] = "/tmp/fleet-bench.XXXXXX", why[256], cmd[400];
	const char *list = getenv("FLEET_NODES") ? getenv("FLEET_NODES") : "10,100,1000";
	int n_runs, err, rc = 1;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s SLUICE_CONTROL [GEN_CERTS_SH]\n", prog);
		return 2;
	}
	b.control_bin = argv[1];
	b.dir = dir;
	b.tls = getenv("FLEET_TLS") && !strcmp(getenv("FLEET_TLS"), "1");
	if (b.tls && argc < 3) {
		fprintf(stderr, "%s: FLEET_TLS=1 needs the path of scripts/gen-certs.sh\n", prog);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	n_runs = parse_nodes(list, ns, MAX_RUNS);
	if (n_runs < 0) {
		fprintf(stderr, "%s: bad FLEET_NODES='%s' (up to %d counts, 1..%d)\n", prog, list,
			MAX_RUNS, FLEET_SIM_MAX_NODES);
		return 2;
	}
	changes = (unsigned)env_u64("FLEET_CHANGES", 30, 1, MAX_CHANGES);
	gap_ms = (unsigned)env_u64("FLEET_GAP_MS", 50, 0, 60000);
	wait_ms = env_u64("FLEET_WAIT_MS", 30000, 100, 600000);
	for (int i = 0; i < n_runs; i++)
		if (ns[i] > max_n)
			max_n = ns[i];
	if (!etcd_helper_available(why, sizeof(why))) {
		printf("%s: skipped: %s\n", prog, why);
		return 77;
	}
	err = raise_nofile(max_n);
	if (err) {
		printf("%s: skipped: cannot raise the open-file limit to %u for %u nodes: %s\n",
		       prog, max_n * 2 + 1024, max_n, strerror(-err));
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir) || write_token(dir)) {
		fprintf(stderr, "%s: cannot make a temp dir: %s\n", prog, strerror(errno));
		return 1;
	}
	/* a kept PKI saves N openssl runs next time (gen-certs.sh keeps
	 * what exists) */
	if (getenv("FLEET_PKI_DIR") && *getenv("FLEET_PKI_DIR"))
		snprintf(b.pki, sizeof(b.pki), "%s", getenv("FLEET_PKI_DIR"));
	else
		snprintf(b.pki, sizeof(b.pki), "%s/pki", dir);
	snprintf(b.ca, sizeof(b.ca), "%s/ca.pem", b.pki);
	if (b.tls && (err = make_certs(&b, argv[2], max_n))) {
		fprintf(stderr, "%s: '%s' failed: %s\n", prog, argv[2], strerror(-err));
		goto out;
	}
	printf("transport: %s\n", b.tls ? "mtls" : "plaintext");
	err = etcd_helper_start(&etcd);
	if (err) {
		fprintf(stderr, "%s: cannot start etcd: %s\n", prog, strerror(-err));
		goto out;
	}
	b.etcd = etcd->endpoint;
	printf("changes_per_n: %u\n", changes);
	for (int i = 0; i < n_runs; i++) {
		memset(&runs[i], 0, sizeof(runs[i]));
		runs[i].n = ns[i];
		err = run_one(&b, (unsigned)i, changes, gap_ms, wait_ms, &rate, &runs[i]);
		if (err)
			goto out;
	}
	record(runs, (size_t)n_runs, b.tls);
	rc = 0;
out:
	etcd_helper_free(etcd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (rc == 0 && system(cmd) != 0)
		fprintf(stderr, "%s: could not remove '%s'\n", prog, dir);
	if (rc)
		fprintf(stderr, "%s: FAILED (logs kept in '%s')\n", prog, dir);
	return rc;
}
