/* sync.c - the sync agent: one thread that keeps one PolicySync/Sync
 * stream open to a control plane and applies what it pushes.
 *
 * Per stream: Hello, then for each ControlMessage validate -> build (path
 * copying) -> publish -> persist -> Ack, or Nack and keep the current
 * snapshot. A NodeReport goes up every report_interval_ms. When a stream
 * ends the agent waits a jittered, exponentially growing delay and tries
 * the next endpoint, sending the version it holds, so the control plane
 * resumes with a delta. All gRPC work happens on this thread and its one
 * completion queue; other threads only read atomics.
 */
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "fileio.h"
#include "log.h"
#include "policy_wire.h"
#include "sync_internal.h"

#define SYNC_METHOD "/sluice.v1.PolicySync/Sync"
#define DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define DEFAULT_BACKOFF_MIN_MS 200u
#define DEFAULT_BACKOFF_MAX_MS 30000u
#define DEFAULT_REPORT_INTERVAL_MS 10000u
#define DEFAULT_KEEPALIVE_MS 30000u
#define KEEPALIVE_TIMEOUT_MS 10000u
#define TICK_MS 100u           /* how often the thread looks at its stop flag */
#define SENDQ_MAX 64u          /* a stream that backs up this far is dropped */
#define PEM_MAX_BYTES (1u << 20)
#define NACK_ERR_LEN 2048

/* Completion-queue tags: what a finished batch was. */
enum tag { TAG_CONN = 1, TAG_MD_SENT, TAG_SEND, TAG_RECV, TAG_STATUS };

/* Owned by the node's main; lives until sync_free. Fields below `thread
 * only` are touched by the agent's thread alone; the atomics are read by
 * the admin thread for /metrics. */
struct sync {
	struct sync_config cfg;
	char *pem_roots;
	char *pem_cert;
	char *pem_key;
	grpc_completion_queue *cq;
	pthread_t thread;
	bool started;
	atomic_bool stop;

	/* thread only */
	struct snapshot *current;   /* the agent's reference to what it published */
	uint64_t rng;
	unsigned next_endpoint;

	atomic_bool connected;
	atomic_uint_fast64_t version;
	atomic_uint_fast64_t acks;
	atomic_uint_fast64_t nacks;
	atomic_uint_fast64_t connects;
	atomic_uint_fast64_t connect_failures;
	atomic_uint_fast64_t reconnects;
	atomic_uint_fast64_t applied;
	atomic_uint_fast64_t persist_failures;
	atomic_uint_fast64_t reports;
	_Atomic double last_applied_unix_s;
};

/* One stream's state. On the agent's stack; lives for one session. */
struct session {
	const char *endpoint;
	grpc_channel *ch;
	grpc_call *call;
	grpc_metadata_array md_in;
	grpc_metadata_array trailing;
	grpc_status_code status;
	grpc_slice details;
	grpc_byte_buffer *recv_buf;
	grpc_byte_buffer *sendq[SENDQ_MAX];
	unsigned sq_head, sq_n;
	bool send_busy;
	unsigned pending;      /* batches started and not yet completed */
	bool got_status;
	bool cancelled;
	bool received;         /* at least one ControlMessage arrived */
	uint64_t next_report_ms;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static gpr_timespec deadline_in_ms(uint64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
			    gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

/* xorshift64*: jitter only, not security. */
static uint64_t rnd(struct sync *s)
{
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 2685821657736338717ull;
}

int sync_new(const struct sync_config *cfg, struct sync **ret)
{
	struct sync *s;
	const char *which = NULL;
	char q[PATH_MAX + 8];
	int r;

	if (!cfg || !cfg->node_id || !cfg->ruleset || !cfg->cell || cfg->n_endpoints == 0 ||
	    (!cfg->plaintext && (!cfg->ca_file || !cfg->cert_file || !cfg->key_file)))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	if (!s->cfg.connect_timeout_ms)
		s->cfg.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	if (!s->cfg.backoff_min_ms)
		s->cfg.backoff_min_ms = DEFAULT_BACKOFF_MIN_MS;
	if (!s->cfg.backoff_max_ms)
		s->cfg.backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
	if (s->cfg.backoff_max_ms < s->cfg.backoff_min_ms)
		s->cfg.backoff_max_ms = s->cfg.backoff_min_ms;
	if (!s->cfg.report_interval_ms)
		s->cfg.report_interval_ms = DEFAULT_REPORT_INTERVAL_MS;
	if (!s->cfg.keepalive_ms)
		s->cfg.keepalive_ms = DEFAULT_KEEPALIVE_MS;
	if (!cfg->plaintext) {
		if ((r = fileio_read(cfg->ca_file, PEM_MAX_BYTES, &s->pem_roots, NULL)) < 0)
			which = cfg->ca_file;
		else if ((r = fileio_read(cfg->cert_file, PEM_MAX_BYTES, &s->pem_cert, NULL)) < 0)
			which = cfg->cert_file;
		else if ((r = fileio_read(cfg->key_file, PEM_MAX_BYTES, &s->pem_key, NULL)) < 0)
			which = cfg->key_file;
		if (which) {
			log_error("Failed to read a sync TLS file", "file=%s error=%s",
				  log_quote(which, q, sizeof(q)),
				  log_quote(strerror(-r), (char[64]){ 0 }, 64));
			goto out_free;
		}
	}
	if (cfg->state_dir && mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error("Failed to create the state directory", "dir=%s error=%s",
			  log_quote(cfg->state_dir, q, sizeof(q)),
			  log_quote(strerror(-r), (char[64]){ 0 }, 64));
		goto out_free;
	}
	if (getrandom(&s->rng, sizeof(s->rng), 0) != sizeof(s->rng) || !s->rng)
		s->rng = (uint64_t)mono_ms() | 1;
	grpc_init();
	s->cq = grpc_completion_queue_create_for_next(NULL);
	*ret = s;
	return 0;

out_free:
	free(s->pem_roots);
	free(s->pem_cert);
	free(s->pem_key);
	free(s);
	return r;
}

/* ---- sending ---- */

static void kick_send(struct session *ss)
{
	grpc_op op;

	if (ss->send_busy || ss->sq_n == 0 || ss->cancelled || ss->got_status)
		return;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = ss->sendq[ss->sq_head];
	if (grpc_call_start_batch(ss->call, &op, 1, (void *)(intptr_t)TAG_SEND, NULL) !=
	    GRPC_CALL_OK) {
		ss->cancelled = true;
		grpc_call_cancel(ss->call, NULL);
		return;
	}
	ss->send_busy = true;
	ss->pending++;
}

/* Encodes m and queues it. -ENOBUFS when the queue is full (the stream is
 * not draining: the caller drops it), -ENOMEM. */
static int queue_msg(struct session *ss, const Sluice__V1__NodeMessage *m)
{
	size_t len = sluice__v1__node_message__get_packed_size(m);
	grpc_slice sl;
	grpc_byte_buffer *bb;

	if (ss->sq_n == SENDQ_MAX)
		return -ENOBUFS;
	sl = grpc_slice_malloc(len);
	sluice__v1__node_message__pack(m, GRPC_SLICE_START_PTR(sl));
	bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	if (!bb)
		return -ENOMEM;
	ss->sendq[(ss->sq_head + ss->sq_n) % SENDQ_MAX] = bb;
	ss->sq_n++;
	kick_send(ss);
	return 0;
}

static void send_done(struct session *ss, bool ok)
{
	grpc_byte_buffer_destroy(ss->sendq[ss->sq_head]);
	ss->sendq[ss->sq_head] = NULL;
	ss->sq_head = (ss->sq_head + 1) % SENDQ_MAX;
	ss->sq_n--;
	ss->send_busy = false;
	ss->pending--;
	/* A failed send means the stream is gone; the status tells why. */
	if (ok)
		kick_send(ss);
}

static void queue_or_drop(struct session *ss, const Sluice__V1__NodeMessage *m)
{
	if (queue_msg(ss, m) < 0 && !ss->cancelled) {
		log_warn("Sync stream not draining, reconnecting", "endpoint=%s queued=%u",
			 ss->endpoint, ss->sq_n);
		ss->cancelled = true;
		grpc_call_cancel(ss->call, NULL);
	}
}

static void send_hello(struct sync *s, struct session *ss)
{
	Sluice__V1__NodeMessage m = SLUICE__V1__NODE_MESSAGE__INIT;
	Sluice__V1__Hello h = SLUICE__V1__HELLO__INIT;
	Sluice__V1__Label labels[64], *lp[64];
	unsigned n = s->cfg.n_labels < 64 ? s->cfg.n_labels : 64;

	for (unsigned i = 0; i < n; i++) {
		sluice__v1__label__init(&labels[i]);
		labels[i].key = (char *)s->cfg.labels[i].name;
		labels[i].value = (char *)s->cfg.labels[i].value;
		lp[i] = &labels[i];
	}
	h.node_id = (char *)s->cfg.node_id;
	h.n_labels = n;
	h.labels = lp;
	h.software_version = (char *)SLUICE_VERSION;
	h.ruleset = (char *)s->cfg.ruleset;
	h.have_version = s->current ? snapshot_version(s->current) : 0;
	m.msg_case = SLUICE__V1__NODE_MESSAGE__MSG_HELLO;
	m.hello = &h;
	queue_or_drop(ss, &m);
}

static void send_ack(struct sync *s, struct session *ss, const char *nonce)
{
	Sluice__V1__NodeMessage m = SLUICE__V1__NODE_MESSAGE__INIT;
	Sluice__V1__Ack a = SLUICE__V1__ACK__INIT;

	a.ruleset = (char *)s->cfg.ruleset;
	a.version = snapshot_version(s->current);
	a.nonce = (char *)nonce;
	m.msg_case = SLUICE__V1__NODE_MESSAGE__MSG_ACK;
	m.ack = &a;
	atomic_fetch_add(&s->acks, 1);
	queue_or_drop(ss, &m);
}

static void send_nack(struct sync *s, struct session *ss, const char *nonce, const char *why)
{
	Sluice__V1__NodeMessage m = SLUICE__V1__NODE_MESSAGE__INIT;
	Sluice__V1__Nack n = SLUICE__V1__NACK__INIT;
	char q[NACK_ERR_LEN + 64];

	n.ruleset = (char *)s->cfg.ruleset;
	n.version = s->current ? snapshot_version(s->current) : 0;
	n.nonce = (char *)nonce;
	n.error = (char *)why;
	m.msg_case = SLUICE__V1__NODE_MESSAGE__MSG_NACK;
	m.nack = &n;
	atomic_fetch_add(&s->nacks, 1);
	log_warn("Refused a policy push, keeping the current version", "endpoint=%s version=%llu error=%s",
		 ss->endpoint, (unsigned long long)n.version, log_quote(why, q, sizeof(q)));
	queue_or_drop(ss, &m);
}

static void send_report(struct sync *s, struct session *ss)
{
	Sluice__V1__NodeMessage m = SLUICE__V1__NODE_MESSAGE__INIT;
	Sluice__V1__NodeReport r = SLUICE__V1__NODE_REPORT__INIT;
	Sluice__V1__AppliedVersion av = SLUICE__V1__APPLIED_VERSION__INIT, *avp = &av;
	struct metrics_buf b;
	const char *why = s->cfg.not_ready ? s->cfg.not_ready(s->cfg.arg) : NULL;

	/* A report that cannot leave now is skipped, not queued: the next one
	 * carries the same counters, later. */
	if (ss->sq_n > 1)
		return;
	r.node_id = (char *)s->cfg.node_id;
	av.ruleset = (char *)s->cfg.ruleset;
	av.version = s->current ? snapshot_version(s->current) : 0;
	av.applied_unix_ms = (int64_t)(atomic_load(&s->last_applied_unix_s) * 1000.0);
	r.n_applied = 1;
	r.applied = &avp;
	r.health = why ? SLUICE__V1__HEALTH__DEGRADED : SLUICE__V1__HEALTH__HEALTHY;
	r.health_detail = (char *)(why ? why : "");
	r.time_unix_ms = (int64_t)(wall_s() * 1000.0);
	metrics_buf_init(&b);
	if (s->cfg.metrics)
		s->cfg.metrics(s->cfg.arg, &b);
	if (!b.err && sync_report_fill(&r, b.data ? b.data : "", b.len) == 0) {
		m.msg_case = SLUICE__V1__NODE_MESSAGE__MSG_REPORT;
		m.report = &r;
		if (queue_msg(ss, &m) == 0)
			atomic_fetch_add(&s->reports, 1);
	}
	sync_report_done(&r);
	metrics_buf_done(&b);
}

/* ---- applying ---- */

/* Joins validation errors into out ("a; b; ... and N more"). */
static void join_errs(const struct policy_errs *e, int r, char *out, size_t len)
{
	size_t n = 0;

	out[0] = '\0';
	for (unsigned i = 0; i < e->n && n + 1 < len; i++)
		n += (size_t)snprintf(out + n, len - n, "%s%s", i ? "; " : "", e->msg[i]);
	if (e->dropped && n + 1 < len)
		snprintf(out + n, len - n, "; ... and %u more errors", e->dropped);
	if (!out[0])
		snprintf(out, len, "%s", strerror(-r));
}

/* Publishes next (takes the caller's reference), persists it, counts it. */
static void publish(struct sync *s, struct snapshot *next)
{
	char err[SYNC_STATE_ERR_LEN], q[SYNC_STATE_ERR_LEN + 64];

	snapshot_unref(s->current);
	s->current = snapshot_ref(next);
	snapshot_cell_publish(s->cfg.cell, next);
	atomic_store(&s->version, snapshot_version(s->current));
	atomic_store(&s->last_applied_unix_s, wall_s());
	atomic_fetch_add(&s->applied, 1);
	if (s->cfg.on_applied)
		s->cfg.on_applied(s->cfg.arg, s->current);
	/* After publishing: a slow disk delays the next version's state file,
	 * never enforcement. A failed write is logged and the old file stays. */
	if (s->cfg.state_dir && sync_state_save(s->cfg.state_dir, s->current, err) < 0) {
		atomic_fetch_add(&s->persist_failures, 1);
		log_error("Failed to persist the snapshot, fail-static will use an older one",
			  "version=%llu error=%s", (unsigned long long)snapshot_version(s->current),
			  log_quote(err, q, sizeof(q)));
	}
}

static void apply_delta(struct sync *s, struct session *ss, const char *nonce,
			const Sluice__V1__Delta *d)
{
	char why[NACK_ERR_LEN], q[256];
	struct policy_errs errs;
	struct policy_delta *pd = NULL;
	struct snapshot *next = NULL;
	uint64_t have = s->current ? snapshot_version(s->current) : 0;
	int r;

	if (strcmp(d->ruleset, s->cfg.ruleset) != 0) {
		snprintf(why, sizeof(why), "delta for ruleset '%s', this node enforces '%s'",
			 d->ruleset, s->cfg.ruleset);
		send_nack(s, ss, nonce, why);
		return;
	}
	if (!s->current || d->from_version != have) {
		snprintf(why, sizeof(why), "delta from_version %llu, node holds version %llu",
			 (unsigned long long)d->from_version, (unsigned long long)have);
		send_nack(s, ss, nonce, why);
		return;
	}
	policy_errs_init(&errs);
	r = policy_delta_from_pb(d, &errs, &pd);
	if (r == 0)
		r = snapshot_apply(s->current, pd, &errs, &next);
	policy_delta_free(pd);
	if (r < 0) {
		join_errs(&errs, r, why, sizeof(why));
		send_nack(s, ss, nonce, why);
		return;
	}
	publish(s, next);
	log_info("Applied delta", "ruleset=%s from=%llu to=%llu upserts=%zu removes=%zu",
		 log_quote(s->cfg.ruleset, q, sizeof(q)), (unsigned long long)have,
		 (unsigned long long)snapshot_version(s->current), d->n_upserts, d->n_removes);
	send_ack(s, ss, nonce);
}

static void apply_snapshot(struct sync *s, struct session *ss, const char *nonce,
			   const Sluice__V1__Snapshot *m)
{
	Sluice__V1__Ruleset rs = SLUICE__V1__RULESET__INIT;
	char why[NACK_ERR_LEN], q[256];
	struct policy_errs errs;
	struct snapshot *next;
	uint64_t have = s->current ? snapshot_version(s->current) : 0;
	int r;

	if (strcmp(m->ruleset, s->cfg.ruleset) != 0) {
		snprintf(why, sizeof(why), "snapshot of ruleset '%s', this node enforces '%s'",
			 m->ruleset, s->cfg.ruleset);
		send_nack(s, ss, nonce, why);
		return;
	}
	rs.name = m->ruleset;
	rs.version = m->version;
	rs.n_resources = m->n_resources;
	rs.resources = m->resources;
	policy_errs_init(&errs);
	r = policy_ruleset_from_pb(&rs, &errs, &next);
	if (r < 0) {
		join_errs(&errs, r, why, sizeof(why));
		send_nack(s, ss, nonce, why);
		return;
	}
	if (s->current && snapshot_version(next) == have && snapshot_equal(next, s->current)) {
		/* Already enforced (a resumed stream): nothing to publish. */
		snapshot_unref(next);
	} else {
		if (m->version < have)
			log_warn("Snapshot older than the enforced version, applying it",
				 "version=%llu previous=%llu", (unsigned long long)m->version,
				 (unsigned long long)have);
		publish(s, next);
		log_info("Applied snapshot", "ruleset=%s version=%llu resources=%zu",
			 log_quote(s->cfg.ruleset, q, sizeof(q)),
			 (unsigned long long)snapshot_version(s->current),
			 snapshot_count(s->current, 0));
	}
	send_ack(s, ss, nonce);
}

static void handle_message(struct sync *s, struct session *ss, grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader rd;
	grpc_slice sl;
	Sluice__V1__ControlMessage *m;

	if (!grpc_byte_buffer_reader_init(&rd, bb)) {
		send_nack(s, ss, "", "unreadable message");
		return;
	}
	sl = grpc_byte_buffer_reader_readall(&rd);
	grpc_byte_buffer_reader_destroy(&rd);
	m = sluice__v1__control_message__unpack(NULL, GRPC_SLICE_LENGTH(sl),
						 GRPC_SLICE_START_PTR(sl));
	grpc_slice_unref(sl);
	if (!m) {
		send_nack(s, ss, "", "message is not a sluice.v1.ControlMessage");
		return;
	}
	ss->received = true;
	if (m->msg_case == SLUICE__V1__CONTROL_MESSAGE__MSG_DELTA)
		apply_delta(s, ss, m->nonce, m->delta);
	else if (m->msg_case == SLUICE__V1__CONTROL_MESSAGE__MSG_SNAPSHOT)
		apply_snapshot(s, ss, m->nonce, m->snapshot);
	else
		send_nack(s, ss, m->nonce, "control message carries neither delta nor snapshot");
	sluice__v1__control_message__free_unpacked(m, NULL);
}

/* ---- one stream ---- */

static grpc_arg int_arg(char *key, int v)
{
	return (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = key, .value.integer = v };
}

static grpc_channel *make_channel(struct sync *s, const char *endpoint)
{
	grpc_ssl_pem_key_cert_pair pair = { .private_key = s->pem_key,
					    .cert_chain = s->pem_cert };
	grpc_channel_credentials *creds;
	grpc_channel *ch;
	grpc_arg args[8];
	grpc_channel_args ca = { .num_args = 0, .args = args };

	/* Pings find a dead peer behind a silent network; the server must
	 * permit them (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS). */
	args[ca.num_args++] = int_arg((char *)GRPC_ARG_KEEPALIVE_TIME_MS, (int)s->cfg.keepalive_ms);
	args[ca.num_args++] = int_arg((char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS, KEEPALIVE_TIMEOUT_MS);
	args[ca.num_args++] = int_arg((char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
	args[ca.num_args++] = int_arg((char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
	/* The agent does its own backoff across endpoints; a stream is never
	 * replayed by the library. */
	args[ca.num_args++] = int_arg((char *)GRPC_ARG_ENABLE_RETRIES, 0);
	args[ca.num_args++] = int_arg((char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 256 << 20);
	if (!s->cfg.plaintext && s->cfg.server_name)
		args[ca.num_args++] = (grpc_arg){ .type = GRPC_ARG_STRING,
						.key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
						.value.string = (char *)s->cfg.server_name };
	if (s->cfg.plaintext)
		creds = grpc_insecure_credentials_create();
	else
		creds = grpc_ssl_credentials_create(s->pem_roots, &pair, NULL, NULL);
	ch = grpc_channel_create(endpoint, creds, &ca);
	grpc_channel_credentials_release(creds);
	return ch;
}

/* Waits for the channel to be READY. 0, -ETIMEDOUT, -ECONNREFUSED (the
 * channel failed), -ECANCELED (stop). */
static int wait_ready(struct sync *s, grpc_channel *ch)
{
	uint64_t deadline = mono_ms() + s->cfg.connect_timeout_ms;
	grpc_connectivity_state st = grpc_channel_check_connectivity_state(ch, 1);
	bool tried = false;

	while (st != GRPC_CHANNEL_READY) {
		grpc_event ev;
		uint64_t now = mono_ms();

		if (atomic_load(&s->stop))
			return -ECANCELED;
		if (now >= deadline)
			return -ETIMEDOUT;
		/* TRANSIENT_FAILURE before the first attempt may be left over
		 * from nothing; after one it means this endpoint is down. */
		if (st == GRPC_CHANNEL_TRANSIENT_FAILURE && tried)
			return -ECONNREFUSED;
		if (st == GRPC_CHANNEL_CONNECTING)
			tried = true;
		if (st == GRPC_CHANNEL_SHUTDOWN)
			return -ECONNREFUSED;
		grpc_channel_watch_connectivity_state(
			ch, st, deadline_in_ms(deadline - now < TICK_MS ? deadline - now : TICK_MS),
			s->cq, (void *)(intptr_t)TAG_CONN);
		do
			ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		while (ev.type == GRPC_OP_COMPLETE && (intptr_t)ev.tag != TAG_CONN);
		if (st == GRPC_CHANNEL_TRANSIENT_FAILURE)
			tried = true;
		st = grpc_channel_check_connectivity_state(ch, 1);
	}
	return 0;
}

static void arm_recv(struct session *ss, bool with_md)
{
	grpc_op ops[2];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	if (with_md) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n++].data.recv_initial_metadata.recv_initial_metadata = &ss->md_in;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n++].data.recv_message.recv_message = &ss->recv_buf;
	if (grpc_call_start_batch(ss->call, ops, n, (void *)(intptr_t)TAG_RECV, NULL) ==
	    GRPC_CALL_OK)
		ss->pending++;
}

static int start_call(struct sync *s, struct session *ss)
{
	grpc_slice method = grpc_slice_from_static_string(SYNC_METHOD);
	grpc_op ops[1];

	ss->call = grpc_channel_create_call(ss->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, method,
					    NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (!ss->call)
		return -ENOMEM;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (grpc_call_start_batch(ss->call, ops, 1, (void *)(intptr_t)TAG_MD_SENT, NULL) !=
	    GRPC_CALL_OK)
		return -EIO;
	ss->pending++;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &ss->trailing;
	ops[0].data.recv_status_on_client.status = &ss->status;
	ops[0].data.recv_status_on_client.status_details = &ss->details;
	if (grpc_call_start_batch(ss->call, ops, 1, (void *)(intptr_t)TAG_STATUS, NULL) !=
	    GRPC_CALL_OK)
		return -EIO;
	ss->pending++;
	arm_recv(ss, true);
	return 0;
}

/* Runs one stream until it ends. true when the control plane answered
 * (the next backoff starts from the minimum). */
static bool session(struct sync *s, const char *endpoint)
{
	struct session ss = { .endpoint = endpoint };
	char q[512];
	int r;

	grpc_metadata_array_init(&ss.md_in);
	grpc_metadata_array_init(&ss.trailing);
	ss.details = grpc_empty_slice();
	ss.ch = make_channel(s, endpoint);
	r = wait_ready(s, ss.ch);
	if (r < 0) {
		if (r != -ECANCELED) {
			atomic_fetch_add(&s->connect_failures, 1);
			log_warn("Control plane unreachable", "endpoint=%s error=%s", endpoint,
				 r == -ETIMEDOUT ? "timeout" : "connect failed");
		}
		goto out_channel;
	}
	if (start_call(s, &ss) < 0) {
		log_warn("Failed to start the sync stream", "endpoint=%s", endpoint);
		if (ss.call && ss.pending)
			grpc_call_cancel(ss.call, NULL);
		else
			goto out_call;
	} else {
		atomic_fetch_add(&s->connects, 1);
		atomic_store(&s->connected, true);
		log_info("Sync stream open", "endpoint=%s have_version=%llu", endpoint,
			 (unsigned long long)(s->current ? snapshot_version(s->current) : 0));
		send_hello(s, &ss);
	}
	ss.next_report_ms = mono_ms() + s->cfg.report_interval_ms;

	while (!(ss.got_status && ss.pending == 0)) {
		grpc_event ev;
		uint64_t now = mono_ms();

		if (!ss.cancelled && (atomic_load(&s->stop) || ss.got_status)) {
			ss.cancelled = true;
			grpc_call_cancel(ss.call, NULL);
		}
		if (!ss.cancelled && !ss.got_status && now >= ss.next_report_ms) {
			send_report(s, &ss);
			ss.next_report_ms = now + s->cfg.report_interval_ms;
		}
		ev = grpc_completion_queue_next(s->cq, deadline_in_ms(TICK_MS), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		switch ((intptr_t)ev.tag) {
		case TAG_MD_SENT:
			ss.pending--;
			break;
		case TAG_SEND:
			send_done(&ss, ev.success);
			break;
		case TAG_RECV:
			ss.pending--;
			if (ev.success && ss.recv_buf) {
				grpc_byte_buffer *bb = ss.recv_buf;

				ss.recv_buf = NULL;
				if (!ss.cancelled)
					handle_message(s, &ss, bb);
				grpc_byte_buffer_destroy(bb);
				if (!ss.cancelled && !ss.got_status)
					arm_recv(&ss, false);
			}
			/* No message: the server closed its side; the status follows. */
			break;
		case TAG_STATUS:
			ss.pending--;
			ss.got_status = true;
			break;
		default:
			break;
		}
	}
	atomic_store(&s->connected, false);
	if (ss.got_status) {
		char *d = grpc_slice_to_c_string(ss.details);

		if (!atomic_load(&s->stop))
			log_warn("Sync stream closed", "endpoint=%s status=%d details=%s", endpoint,
				 (int)ss.status, log_quote(d, q, sizeof(q)));
		gpr_free(d);
	}
out_call:
	if (ss.call)
		grpc_call_unref(ss.call);
	while (ss.sq_n) {
		grpc_byte_buffer_destroy(ss.sendq[ss.sq_head]);
		ss.sq_head = (ss.sq_head + 1) % SENDQ_MAX;
		ss.sq_n--;
	}
out_channel:
	grpc_channel_destroy(ss.ch);
	grpc_metadata_array_destroy(&ss.md_in);
	grpc_metadata_array_destroy(&ss.trailing);
	grpc_slice_unref(ss.details);
	return ss.received;
}

/* Sleeps up to ms, waking for stop. */
static void nap(struct sync *s, uint64_t ms)
{
	uint64_t end = mono_ms() + ms;

	while (!atomic_load(&s->stop)) {
		uint64_t now = mono_ms();
		struct timespec ts;

		if (now >= end)
			return;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)((end - now < TICK_MS ? end - now : TICK_MS) * 1000000u);
		nanosleep(&ts, NULL);
	}
}

static void *sync_thread(void *arg)
{
	struct sync *s = arg;
	unsigned attempt = 0;
	bool first = true;

	snapshot_thread_online();
	while (!atomic_load(&s->stop)) {
		const char *ep = s->cfg.endpoints[s->next_endpoint];
		uint64_t delay;

		if (!first)
			atomic_fetch_add(&s->reconnects, 1);
		first = false;
		if (session(s, ep))
			attempt = 0;
		if (atomic_load(&s->stop))
			break;
		s->next_endpoint = (s->next_endpoint + 1) % s->cfg.n_endpoints;
		/* Equal jitter: half the exponential delay, plus a random half,
		 * so that a fleet cut off together does not come back together. */
		delay = (uint64_t)s->cfg.backoff_min_ms << (attempt < 20 ? attempt : 20);
		if (delay > s->cfg.backoff_max_ms)
			delay = s->cfg.backoff_max_ms;
		delay = delay / 2 + rnd(s) % (delay / 2 + 1);
		if (attempt < 32)
			attempt++;
		log_debug("Sync reconnect", "next_endpoint=%s delay_ms=%llu",
			  s->cfg.endpoints[s->next_endpoint], (unsigned long long)delay);
		nap(s, delay);
	}
	snapshot_thread_offline();
	return NULL;
}

int sync_start(struct sync *s)
{
	const struct snapshot *cur;
	int r;

	/* The start-up snapshot (empty, version 0, or the persisted one). */
	snapshot_thread_online();
	snapshot_read_lock();
	cur = snapshot_cell_get(s->cfg.cell);
	s->current = cur ? snapshot_ref(cur) : NULL;
	snapshot_read_unlock();
	snapshot_thread_offline();
	if (s->current && snapshot_version(s->current) == 0) {
		/* An empty placeholder: have_version 0 asks for everything. */
		snapshot_unref(s->current);
		s->current = NULL;
	}
	atomic_store(&s->version, s->current ? snapshot_version(s->current) : 0);
	r = pthread_create(&s->thread, NULL, sync_thread, s);
	if (r)
		return -r;
	s->started = true;
	return 0;
}

void sync_free(struct sync *s)
{
	grpc_event ev;

	if (!s)
		return;
	atomic_store(&s->stop, true);
	if (s->started)
		pthread_join(s->thread, NULL);
	grpc_completion_queue_shutdown(s->cq);
	do
		ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	while (ev.type != GRPC_QUEUE_SHUTDOWN);
	grpc_completion_queue_destroy(s->cq);
	grpc_shutdown();
	snapshot_unref(s->current);
	free(s->pem_roots);
	free(s->pem_cert);
	free(s->pem_key);
	free(s);
}

uint64_t sync_version(const struct sync *s)
{
	return atomic_load(&s->version);
}

void sync_metrics(const struct sync *s, struct metrics_buf *b)
{
	struct sync *m = (struct sync *)s; /* atomics: loads only */

	metrics_scalar_u64(b, "sluice_sync_connected", "gauge",
			   "1 while a sync stream to a control plane is open",
			   atomic_load(&m->connected));
	metrics_scalar_u64(b, "sluice_sync_version", "gauge",
			   "Version last applied from the control plane (or loaded at start-up)",
			   atomic_load(&m->version));
	metrics_scalar_u64(b, "sluice_sync_acks_total", "counter",
			   "Pushes applied and acknowledged",
			   atomic_load(&m->acks));
	metrics_scalar_u64(b, "sluice_sync_nacks_total", "counter",
			   "Pushes refused (invalid, or not starting at the node's version)",
			   atomic_load(&m->nacks));
	metrics_scalar_u64(b, "sluice_sync_applied_total", "counter",
			   "Snapshots published by the agent",
			   atomic_load(&m->applied));
	metrics_scalar_u64(b, "sluice_sync_connects_total", "counter", "Sync streams opened",
			   atomic_load(&m->connects));
	metrics_scalar_u64(b, "sluice_sync_connect_failures_total", "counter",
			   "Endpoints that did not become ready in time",
			   atomic_load(&m->connect_failures));
	metrics_scalar_u64(b, "sluice_sync_reconnects_total", "counter",
			   "Connection attempts after the first",
			   atomic_load(&m->reconnects));
	metrics_scalar_u64(b, "sluice_sync_reports_total", "counter",
			   "NodeReports queued on the stream",
			   atomic_load(&m->reports));
	metrics_scalar_u64(b, "sluice_sync_persist_failures_total", "counter",
			   "State-file writes that failed",
			   atomic_load(&m->persist_failures));
	metrics_scalar(b, "sluice_sync_last_applied_timestamp_seconds", "gauge",
		       "When the agent last published a version, since the Unix epoch",
		       atomic_load(&m->last_applied_unix_s));
}
