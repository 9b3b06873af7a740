/* node_bpf.c - the node's glue to the kernel enforcer: one bpfload, one
 * escalation table and one consumer thread (event ring, queued escalations,
 * sweeps of expired deny entries).
 * Locks: `mu` serializes the loader's own (not thread-safe) state: sync,
 * poll, event counts. `live` (a rwlock) guards the loader's lifetime for
 * readers on other threads (counters for /metrics): they take it shared,
 * start and stop take it exclusive. Order: live, then mu. `qmu` guards the
 * escalation queue and the wake fd, and is never held with the others.
 * The consumer uses the loader without `live`: it starts after the loader
 * is set and is joined before the loader goes.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bpfload.h"
#include "client_abi.h"
#include "escalate.h"
#include "log.h"
#include "node_bpf.h"
#include "policy.h"

_Static_assert(NODE_BPF_MAX_HTTP_PORTS == BPFLOAD_MAX_HTTP_PORTS, "http ports");
_Static_assert(NODE_BPF_REASONS >= CLIENT_COUNTERS, "reason slots");

#define DEFAULT_POLL_INTERVAL_MS 500u
#define SWEEP_INTERVAL_NS 1000000000ull        /* expired kernel deny entries */
#define TRACKER_SWEEP_INTERVAL_NS 10000000000ull /* escalation table */
#define EVENT_LOG_PER_SEC 20u                   /* debug lines per second */

#define PENDING_MAX 1024u

/* One escalation waiting for the consumer thread. */
struct pending {
	struct cidr prefix;
	uint64_t ttl_ns;
	int http_status;
	char client[64];           /* the client id last seen, cut; NUL-ended */
};

/* Set by node_bpf_on_reject() for the deny callback it may trigger on the
 * same thread: what the escalation's log line names. */
static __thread const char *tl_client;
static __thread size_t tl_client_len;
static __thread int tl_status;

/* Owned by main; lives until node_bpf_free(). */
struct node_bpf {
	bool enabled;
	char *ifname;
	char *pin_path;
	uint16_t http_ports[NODE_BPF_MAX_HTTP_PORTS];
	uint8_t log_level;
	uint32_t poll_interval_ms;

	pthread_rwlock_t live;     /* guards l's lifetime */
	pthread_mutex_t mu;        /* guards the loader's state and what follows */
	struct bpfload *l;         /* NULL: not running */
	struct snapshot *latest;   /* last snapshot given; synced at start */
	uint64_t latest_gen;       /* bumped with each snapshot given */
	uint64_t syncs, sync_errors, map_updates, map_deletes, kernel_clients;
	uint64_t log_window_s, log_lines, log_suppressed; /* event log cap */

	atomic_bool running;       /* on_reject's cheap check */
	struct escalate *esc;
	_Atomic uint64_t deny_expired;
	_Atomic uint64_t deny_failures; /* the kernel refused an escalation */

	/* Escalations crossed on a worker, written and logged by the consumer:
	 * the proxy's hook must not do I/O. Guarded by qmu (taken only when a
	 * source crosses its threshold, once per source and TTL). */
	pthread_mutex_t qmu;
	struct pending q[PENDING_MAX];
	size_t q_len;
	struct pending batch[PENDING_MAX]; /* consumer thread only */
	_Atomic uint64_t deny_written;     /* escalations now in the kernel */

	pthread_t thread;
	bool thread_started;
	atomic_bool stop;
	int wake_fd;               /* eventfd: stop, or escalations queued */
};

static const char *const reason_names[CLIENT_REASON_MAX] = {
	[CLIENT_REASON_NONE] = "none",
	[CLIENT_REASON_DISABLED] = "disabled",
	[CLIENT_REASON_NOT_IP] = "not_ip",
	[CLIENT_REASON_TRUNCATED] = "truncated",
	[CLIENT_REASON_MALFORMED] = "malformed",
	[CLIENT_REASON_FRAGMENT] = "fragment",
	[CLIENT_REASON_NOT_TCP] = "not_tcp",
	[CLIENT_REASON_NOT_HTTP] = "not_http",
	[CLIENT_REASON_NO_PAYLOAD] = "no_payload",
	[CLIENT_REASON_NOT_REQUEST] = "not_request",
	[CLIENT_REASON_NO_HEADER] = "no_header",
	[CLIENT_REASON_HEADER_TRUNCATED] = "header_truncated",
	[CLIENT_REASON_KEY_TOO_LONG] = "key_too_long",
	[CLIENT_REASON_UNKNOWN_CLIENT] = "unknown_client",
	[CLIENT_REASON_CLIENT_OFF] = "client_off",
	[CLIENT_REASON_CONTENDED] = "contended",
	[CLIENT_REASON_ALLOWED] = "allowed",
	[CLIENT_REASON_DENY] = "deny",
	[CLIENT_REASON_RATE] = "rate",
};

const char *node_bpf_reason_name(unsigned reason)
{
	return reason < CLIENT_REASON_MAX ? reason_names[reason] : NULL;
}

int node_bpf_log_level_parse(const char *name, uint8_t *out)
{
	static const char *const names[] = {"drops", "errors", "debug"};

	for (uint8_t i = 0; i < 3; i++) {
		if (name && strcmp(name, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* escalate's deny callback: runs on a proxy worker, so it only queues. */
static int deny_cb(void *arg, const struct cidr *prefix, uint64_t ttl_ns)
{
	struct node_bpf *nb = arg;
	uint64_t one = 1;
	struct pending *p;

	pthread_mutex_lock(&nb->qmu);
	if (nb->q_len == PENDING_MAX || nb->wake_fd < 0) {
		pthread_mutex_unlock(&nb->qmu);
		return nb->wake_fd < 0 ? -ENOTCONN : -ENOBUFS;
	}
	p = &nb->q[nb->q_len++];
	p->prefix = *prefix;
	p->ttl_ns = ttl_ns;
	p->http_status = tl_status;
	snprintf(p->client, sizeof(p->client), "%.*s",
		 (int)(tl_client_len < sizeof(p->client) - 1 ? tl_client_len : sizeof(p->client) - 1),
		 tl_client ? tl_client : "");
	/* Under qmu: stop closes the fd under it too. A non-blocking eventfd
	 * write cannot block; if it fails, the consumer's next poll timeout
	 * picks the entry up. */
	if (write(nb->wake_fd, &one, sizeof(one)) < 0)
		log_debug("eventfd write failed", "error=\"%s\"", strerror(errno));
	pthread_mutex_unlock(&nb->qmu);
	return 0;
}

/* Consumer thread: writes the queued escalations into the deny tries. */
static void flush_pending(struct node_bpf *nb)
{
	struct pending *batch = nb->batch;
	char src[64], cid[160];
	size_t n;

	pthread_mutex_lock(&nb->qmu);
	n = nb->q_len;
	memcpy(batch, nb->q, n * sizeof(*batch));
	nb->q_len = 0;
	pthread_mutex_unlock(&nb->qmu);
	for (size_t i = 0; i < n; i++) {
		int err = bpfload_deny_add(nb->l, &batch[i].prefix, batch[i].ttl_ns);

		if (cidr_format(&batch[i].prefix, src, sizeof(src)) < 0)
			snprintf(src, sizeof(src), "?");
		log_quote(batch[i].client, cid, sizeof(cid));
		if (err == -EEXIST) {
			/* The policy denies it already, for good. */
			continue;
		}
		if (err) {
			atomic_fetch_add(&nb->deny_failures, 1);
			log_warn("Failed to escalate a source to the kernel deny list, ignoring",
				 "source=%s error=\"%s\"", src, strerror(-err));
			continue;
		}
		atomic_fetch_add(&nb->deny_written, 1);
		log_info("Source escalated to the kernel deny list",
			 "source=%s ttl_s=%llu client=%s status=%d", src,
			 (unsigned long long)(batch[i].ttl_ns / 1000000000u), cid,
			 batch[i].http_status);
	}
}

int node_bpf_new(const struct node_bpf_config *cfg, struct node_bpf **ret)
{
	struct escalate_config ec = {0};
	struct node_bpf *nb;
	int err;

	if (!cfg || !ret || cfg->log_level > CLIENT_LOG_DEBUG)
		return -EINVAL;
	if (cfg->enabled && (!cfg->ifname || !cfg->ifname[0]))
		return -EINVAL;
	nb = calloc(1, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	nb->enabled = cfg->enabled;
	nb->log_level = cfg->log_level;
	nb->poll_interval_ms = cfg->poll_interval_ms ? cfg->poll_interval_ms
						     : DEFAULT_POLL_INTERVAL_MS;
	memcpy(nb->http_ports, cfg->http_ports, sizeof(nb->http_ports));
	nb->wake_fd = -1;
	err = -ENOMEM;
	if (cfg->ifname && !(nb->ifname = strdup(cfg->ifname)))
		goto out_free;
	if (cfg->pin_path && !(nb->pin_path = strdup(cfg->pin_path)))
		goto out_free;
	ec.capacity = cfg->escalation_capacity;
	ec.deny = deny_cb;
	ec.deny_arg = nb;
	err = escalate_new(&ec, &nb->esc);
	if (err)
		goto out_free;
	pthread_rwlock_init(&nb->live, NULL);
	pthread_mutex_init(&nb->mu, NULL);
	pthread_mutex_init(&nb->qmu, NULL);
	*ret = nb;
	return 0;

out_free:
	free(nb->ifname);
	free(nb->pin_path);
	free(nb);
	return err;
}

/* ---- ring consumer ---------------------------------------------------- */

/* One debug line per event, at most EVENT_LOG_PER_SEC a second; the rest is
 * counted and reported with the next line. mu held (bpfload_poll's caller). */
static void on_event(void *arg, const void *data)
{
	struct node_bpf *nb = arg;
	const struct client_event *ev = data;
	char src[64];
	uint64_t sec;

	if (log_get_level() > LOG_LEVEL_DEBUG)
		return;
	sec = mono_ns() / 1000000000u;
	if (sec != nb->log_window_s) {
		nb->log_window_s = sec;
		nb->log_lines = 0;
	}
	if (nb->log_lines++ >= EVENT_LOG_PER_SEC) {
		nb->log_suppressed++;
		return;
	}
	if (ev->family == 4)
		snprintf(src, sizeof(src), "%u.%u.%u.%u", ev->src_addr[0], ev->src_addr[1],
			 ev->src_addr[2], ev->src_addr[3]);
	else if (ev->family == 6)
		snprintf(src, sizeof(src), "%02x%02x:%02x%02x:%02x%02x:%02x%02x:...",
			 ev->src_addr[0], ev->src_addr[1], ev->src_addr[2], ev->src_addr[3],
			 ev->src_addr[4], ev->src_addr[5], ev->src_addr[6], ev->src_addr[7]);
	else
		snprintf(src, sizeof(src), "-");
	log_debug("Kernel enforcer event",
		  "type=%u reason=%s src=%s client_id=%016llx key_hash=%016llx suppressed=%llu",
		  ev->type, node_bpf_reason_name(ev->reason) ? node_bpf_reason_name(ev->reason) : "?",
		  src, (unsigned long long)ev->client_id, (unsigned long long)ev->key_hash,
		  (unsigned long long)nb->log_suppressed);
	nb->log_suppressed = 0;
}

static void *consumer(void *arg)
{
	struct node_bpf *nb = arg;
	uint64_t next_sweep = 0, next_tracker_sweep = 0;
	int ring_fd = bpfload_event_fd(nb->l);

	while (!atomic_load(&nb->stop)) {
		struct pollfd p[2] = {
			{.fd = ring_fd, .events = POLLIN},
			{.fd = nb->wake_fd, .events = POLLIN},
		};
		uint64_t now;
		int err;

		if (poll(p, 2, (int)nb->poll_interval_ms) < 0 && errno != EINTR)
			break;
		if (atomic_load(&nb->stop))
			break;
		if (p[1].revents & POLLIN) {
			uint64_t v;

			if (read(nb->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				break;
		}
		flush_pending(nb);
		pthread_mutex_lock(&nb->mu);
		err = bpfload_poll(nb->l, 0);
		pthread_mutex_unlock(&nb->mu);
		if (err < 0)
			log_debug("Kernel event ring poll failed", "error=\"%s\"", strerror(-err));
		now = mono_ns();
		if (now >= next_sweep) {
			size_t n = 0;

			/* The program already ignores expired entries; deleting
			 * them keeps the tries from filling up. */
			if (bpfload_deny_sweep(nb->l, &n) == 0 && n) {
				atomic_fetch_add(&nb->deny_expired, n);
				log_debug("Expired escalations removed", "entries=%zu", n);
			}
			next_sweep = now + SWEEP_INTERVAL_NS;
		}
		if (now >= next_tracker_sweep) {
			escalate_sweep(nb->esc, now);
			next_tracker_sweep = now + TRACKER_SWEEP_INTERVAL_NS;
		}
	}
	return NULL;
}

/* ---- start / snapshot / stop ------------------------------------------ */

int node_bpf_start(struct node_bpf *nb, char *err, size_t err_len)
{
	char msg[256] = "";
	struct bpfload_config cfg = {
		.ifname = nb->ifname, .pin_path = nb->pin_path, .log_level = nb->log_level,
		.errmsg = msg, .errmsg_len = sizeof(msg),
	};
	struct bpfload_sync_stats st;
	uint64_t synced_gen = 0;
	struct bpfload *l = NULL;
	int rc;

	if (err && err_len)
		err[0] = '\0';
	if (!nb->enabled)
		return 0;
	if (nb->l || nb->thread_started)
		return -EALREADY;
	memcpy(cfg.http_ports, nb->http_ports, sizeof(cfg.http_ports));
	rc = bpfload_new(&cfg, &l);
	if (rc)
		goto out_err;
	bpfload_set_event_cb(l, on_event, nb);

	pthread_mutex_lock(&nb->mu);
	/* The policy first: the program must not enforce a pinned or empty
	 * state once attached. */
	if (nb->latest) {
		synced_gen = nb->latest_gen;
		rc = bpfload_sync(l, nb->latest, &st);
		nb->syncs++;
		if (rc) {
			nb->sync_errors++;
			snprintf(msg, sizeof(msg), "cannot write the policy into the maps: %s",
				 strerror(-rc));
		} else {
			nb->map_updates += st.updates;
			nb->map_deletes += st.deletes;
			nb->kernel_clients = st.kernel_clients;
		}
	}
	pthread_mutex_unlock(&nb->mu);
	if (rc)
		goto out_free;
	rc = bpfload_attach(l);
	if (rc) {
		snprintf(msg, sizeof(msg), "cannot attach the TC program to '%s': %s", nb->ifname,
			 strerror(-rc));
		goto out_free;
	}
	nb->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (nb->wake_fd < 0) {
		rc = -errno;
		snprintf(msg, sizeof(msg), "eventfd: %s", strerror(-rc));
		goto out_free;
	}
	pthread_rwlock_wrlock(&nb->live);
	pthread_mutex_lock(&nb->mu);
	/* A snapshot that arrived (on the sync thread) while we attached. */
	if (nb->latest && nb->latest_gen != synced_gen) {
		nb->syncs++;
		if (bpfload_sync(l, nb->latest, &st)) {
			nb->sync_errors++; /* the next snapshot reconciles */
		} else {
			nb->map_updates += st.updates;
			nb->map_deletes += st.deletes;
			nb->kernel_clients = st.kernel_clients;
		}
	}
	nb->l = l;
	pthread_mutex_unlock(&nb->mu);
	pthread_rwlock_unlock(&nb->live);
	atomic_store(&nb->stop, false);
	rc = -pthread_create(&nb->thread, NULL, consumer, nb);
	if (rc) {
		snprintf(msg, sizeof(msg), "cannot start the event thread: %s", strerror(-rc));
		pthread_rwlock_wrlock(&nb->live);
		nb->l = NULL;
		pthread_rwlock_unlock(&nb->live);
		close(nb->wake_fd);
		nb->wake_fd = -1;
		goto out_free;
	}
	nb->thread_started = true;
	atomic_store(&nb->running, true);
	return 0;

out_free:
	bpfload_free(l); /* detaches if attached */
out_err:
	if (err && err_len)
		snprintf(err, err_len, "%s", msg[0] ? msg : strerror(-rc));
	return rc;
}

int node_bpf_on_snapshot(struct node_bpf *nb, const struct snapshot *s)
{
	const struct policy_settings *st = snapshot_settings(s);
	struct bpfload_sync_stats ss;
	int rc = 0;

	escalate_set_policy(nb->esc, st->escalation_rejects, st->escalation_window_ms,
			    st->escalation_ttl_s);
	pthread_mutex_lock(&nb->mu);
	snapshot_unref(nb->latest);
	nb->latest = snapshot_ref(s);
	nb->latest_gen++;
	if (nb->l) {
		rc = bpfload_sync(nb->l, s, &ss);
		nb->syncs++;
		if (rc) {
			nb->sync_errors++;
		} else {
			nb->map_updates += ss.updates;
			nb->map_deletes += ss.deletes;
			nb->kernel_clients = ss.kernel_clients;
		}
	}
	pthread_mutex_unlock(&nb->mu);
	return rc;
}

void node_bpf_stop(struct node_bpf *nb)
{
	struct bpfload *l;

	atomic_store(&nb->running, false);
	if (nb->thread_started) {
		uint64_t one = 1;

		atomic_store(&nb->stop, true);
		if (write(nb->wake_fd, &one, sizeof(one)) < 0)
			log_debug("eventfd write failed", "error=\"%s\"", strerror(errno));
		pthread_join(nb->thread, NULL);
		nb->thread_started = false;
	}
	pthread_rwlock_wrlock(&nb->live);
	pthread_mutex_lock(&nb->mu);
	l = nb->l;
	nb->l = NULL;
	pthread_mutex_unlock(&nb->mu);
	pthread_rwlock_unlock(&nb->live);
	bpfload_free(l);
	/* After the loader is gone: a late deny callback may still write it. */
	if (nb->wake_fd >= 0) {
		pthread_mutex_lock(&nb->qmu);
		nb->q_len = 0;
		close(nb->wake_fd);
		nb->wake_fd = -1;
		pthread_mutex_unlock(&nb->qmu);
	}
}

void node_bpf_free(struct node_bpf *nb)
{
	if (!nb)
		return;
	node_bpf_stop(nb);
	escalate_free(nb->esc);
	snapshot_unref(nb->latest);
	pthread_mutex_destroy(&nb->qmu);
	pthread_mutex_destroy(&nb->mu);
	pthread_rwlock_destroy(&nb->live);
	free(nb->ifname);
	free(nb->pin_path);
	free(nb);
}

/* ---- the proxy's hook ------------------------------------------------- */

void node_bpf_on_reject(void *arg, const struct sockaddr *peer, socklen_t peer_len,
			const char *client_id, size_t client_len, int http_status)
{
	struct node_bpf *nb = arg;

	if (http_status != 403 && http_status != 429)
		return;
	if (!atomic_load_explicit(&nb->running, memory_order_relaxed))
		return;
	tl_client = client_id;
	tl_client_len = client_id ? client_len : 0;
	tl_status = http_status;
	/* 1: crossed and queued for the consumer, which writes and logs it;
	 * < 0: a peer that is not IP, or the queue was full (counted). */
	escalate_reject(nb->esc, peer, peer_len, mono_ns());
	tl_client = NULL;
}

/* ---- counters --------------------------------------------------------- */

void node_bpf_counters(struct node_bpf *nb, struct node_bpf_counters *out)
{
	struct bpfload_event_counts ev;
	struct escalate_stats es;
	uint64_t k[CLIENT_COUNTERS];

	memset(out, 0, sizeof(*out));
	out->enabled = nb->enabled;
	pthread_rwlock_rdlock(&nb->live);
	if (nb->l && bpfload_counters(nb->l, k, CLIENT_COUNTERS) == 0) {
		out->attached = true;
		for (unsigned i = 1; i < CLIENT_REASON_MAX; i++) {
			out->packets[i] = k[i];
			if (i == CLIENT_REASON_DENY)
				out->dropped_deny = k[i];
			else if (i == CLIENT_REASON_RATE)
				out->dropped_rate = k[i];
			else
				out->passed += k[i];
		}
		out->events_lost = k[CLIENT_COUNTER_EVENTS_LOST];
	}
	pthread_mutex_lock(&nb->mu);
	if (nb->l) {
		bpfload_event_counts(nb->l, &ev);
		out->events = ev.events;
		for (unsigned i = 0; i < CLIENT_REASON_MAX; i++)
			out->events_by_reason[i] = ev.by_reason[i];
	}
	out->syncs = nb->syncs;
	out->sync_errors = nb->sync_errors;
	out->map_updates = nb->map_updates;
	out->map_deletes = nb->map_deletes;
	out->kernel_clients = nb->kernel_clients;
	pthread_mutex_unlock(&nb->mu);
	pthread_rwlock_unlock(&nb->live);
	escalate_stats(nb->esc, &es);
	out->rejects = es.rejects;
	out->escalations = atomic_load(&nb->deny_written);
	out->escalation_failures = es.failures + atomic_load(&nb->deny_failures);
	out->escalation_evictions = es.evictions;
	out->tracked_sources = es.entries;
	out->deny_expired = atomic_load(&nb->deny_expired);
}

int node_bpf_map_fd(struct node_bpf *nb, const char *name)
{
	int fd = -1;

	pthread_rwlock_rdlock(&nb->live);
	if (nb->l)
		fd = bpfload_map_fd(nb->l, name);
	pthread_rwlock_unlock(&nb->live);
	return fd;
}

void node_bpf_metrics(struct node_bpf *nb, struct metrics_buf *b)
{
	struct node_bpf_counters c;

	node_bpf_counters(nb, &c);
	metrics_scalar_u64(b, "sluice_bpf_attached", "gauge",
			   "1 when the TC ingress program is loaded and attached",
			   c.attached);
	metrics_family(b, "sluice_bpf_packets_total", "counter",
		       "Packets seen by the TC ingress program, by reason and verdict");
	for (unsigned i = 1; i < CLIENT_REASON_MAX; i++) {
		const char *labels[] = {"reason", reason_names[i], "verdict",
					i == CLIENT_REASON_DENY || i == CLIENT_REASON_RATE ? "drop"
											    : "pass",
					NULL};

		metrics_sample_u64(b, "sluice_bpf_packets_total", labels, c.packets[i]);
	}
	metrics_family(b, "sluice_bpf_events_total", "counter",
		       "Ring buffer events consumed, by reason");
	for (unsigned i = 1; i < CLIENT_REASON_MAX; i++) {
		const char *labels[] = {"reason", reason_names[i], NULL};

		if (c.events_by_reason[i])
			metrics_sample_u64(b, "sluice_bpf_events_total", labels,
					   c.events_by_reason[i]);
	}
	metrics_scalar_u64(b, "sluice_bpf_events_lost_total", "counter",
			   "Events the program could not queue (ring full)",
			   c.events_lost);
	metrics_family(b, "sluice_bpf_syncs_total", "counter", "Policy snapshots written to the maps");
	{
		const char *ok[] = {"result", "ok", NULL}, *bad[] = {"result", "error", NULL};

		metrics_sample_u64(b, "sluice_bpf_syncs_total", ok, c.syncs - c.sync_errors);
		metrics_sample_u64(b, "sluice_bpf_syncs_total", bad, c.sync_errors);
	}
	metrics_family(b, "sluice_bpf_map_writes_total", "counter",
		       "Map entries written by policy syncs");
	{
		const char *up[] = {"op", "update", NULL}, *del[] = {"op", "delete", NULL};

		metrics_sample_u64(b, "sluice_bpf_map_writes_total", up, c.map_updates);
		metrics_sample_u64(b, "sluice_bpf_map_writes_total", del, c.map_deletes);
	}
	metrics_scalar_u64(b, "sluice_bpf_kernel_clients", "gauge",
			   "Clients whose limit the kernel enforces",
			   c.kernel_clients);
	metrics_scalar_u64(b, "sluice_escalation_rejects_total", "counter",
			   "Proxy rejections (403, 429) counted for escalation",
			   c.rejects);
	metrics_scalar_u64(b, "sluice_escalation_escalations_total", "counter",
			   "Sources put on the kernel deny list with a TTL",
			   c.escalations);
	metrics_scalar_u64(b, "sluice_escalation_failures_total", "counter",
			   "Escalations the kernel refused (deny trie full...)",
			   c.escalation_failures);
	metrics_scalar_u64(b, "sluice_escalation_evictions_total", "counter",
			   "Tracked sources dropped because the table was full",
			   c.escalation_evictions);
	metrics_scalar_u64(b, "sluice_escalation_tracked_sources", "gauge",
			   "Sources in the escalation table",
			   c.tracked_sources);
	metrics_scalar_u64(b, "sluice_escalation_expired_total", "counter",
			   "Expired escalations deleted from the kernel deny lists",
			   c.deny_expired);
}
