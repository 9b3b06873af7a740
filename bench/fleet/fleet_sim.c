/* fleet_sim.c - the fake nodes of fleet_sim.h.
 *
 * Per node, three kinds of batch are outstanding on the shared completion
 * queue: the receive of the next push (re-armed after each), at most one
 * send (Hello, then Acks; gRPC allows one SEND_MESSAGE in flight per call,
 * so a newer Ack waiting behind it replaces an older one: acking the newest
 * nonce is what the protocol needs), and RECV_STATUS_ON_CLIENT, started at
 * once so that a stream the server ends (UNIMPLEMENTED, UNAUTHENTICATED)
 * is seen immediately. Only the queue thread touches calls and buffers;
 * the waiter reads versions and receive times under `lock`.
 */
#include "fleet_sim.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "fileio.h"
#include "sluice/v1/sync.pb-c.h"

#define HIST 16                 /* receive times kept per node */
#define POLL_MS 100             /* queue thread checks `stopping` this often */
#define WAIT_POLL_NS 500000     /* waiter re-checks every 0.5 ms */
#define DRAIN_MS 10000          /* bound on waiting for cancelled calls */
#define ERR_LEN 512

enum op { OP_SEND, OP_RECV, OP_STATUS };

/* One outstanding batch; embedded in its node. */
struct tag {
	struct node *node;
	enum op op;
};

/* One fake node. Owned by the sim (array); lives until fleet_sim_free.
 * Fields above `lock`-guarded ones belong to the queue thread. */
struct node {
	struct fleet_sim *sim;
	char id[48];
	grpc_channel *ch;
	grpc_call *call;
	struct tag t_send, t_recv, t_status;
	bool md_asked;                  /* RECV_INITIAL_METADATA issued */
	grpc_metadata_array init_md, trail_md;
	grpc_status_code status;
	grpc_slice details;
	grpc_byte_buffer *recv_bb;
	grpc_byte_buffer *send_bb;      /* in flight, NULL when idle */
	uint64_t send_version;          /* version the in-flight Ack acks */
	uint8_t *next_ack;              /* newest Ack waiting for the send slot */
	size_t next_ack_len;
	uint64_t next_version;
	/* guarded by sim->lock */
	uint64_t recv_version;          /* highest version received */
	uint64_t acked_version;         /* highest version whose Ack was sent */
	struct { uint64_t version, recv_ns; } hist[HIST];
	unsigned hist_next;
};

/* Owned by its creator; lives until fleet_sim_free. `outstanding` and the
 * calls belong to the queue thread (to fleet_sim_new before it starts). */
struct fleet_sim {
	char *ruleset;
	unsigned n;
	struct node *nodes;
	grpc_completion_queue *cq;
	pthread_t thread;
	bool thread_started;
	grpc_metadata auth_md;
	bool has_auth;
	unsigned outstanding;           /* batches started, not completed */
	int stopping;                   /* atomic: free asks the thread to end */
	pthread_mutex_t lock;
	/* guarded by lock */
	char error[ERR_LEN];
	uint64_t pushes;
};

uint64_t fleet_sim_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static gpr_timespec in_ms(uint64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
			    gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

static const char *status_name(grpc_status_code c)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};

	return (unsigned)c < sizeof(names) / sizeof(names[0]) ? names[c] : "?";
}

/* Keeps the first failure only: later ones are usually its consequences. */
static void __attribute__((format(printf, 2, 3)))
set_error(struct fleet_sim *s, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->lock);
	if (!s->error[0]) {
		va_start(ap, fmt);
		vsnprintf(s->error, sizeof(s->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->lock);
}

static int start_batch(struct node *n, const grpc_op *ops, size_t nops, struct tag *t)
{
	grpc_call_error e = grpc_call_start_batch(n->call, ops, nops, t, NULL);

	if (e != GRPC_CALL_OK) {
		set_error(n->sim, "node '%s': grpc_call_start_batch failed: %d", n->id, (int)e);
		return -EIO;
	}
	n->sim->outstanding++;
	return 0;
}

/* Packs a NodeMessage into a malloc'ed buffer. */
static uint8_t *pack_node_message(const Sluice__V1__NodeMessage *m, size_t *len)
{
	uint8_t *buf;

	*len = sluice__v1__node_message__get_packed_size(m);
	buf = malloc(*len ? *len : 1);
	if (buf)
		sluice__v1__node_message__pack(m, buf);
	return buf;
}

/* Starts sending buf (consumed) if the send slot is free, else keeps it as
 * the next one, replacing an older waiting Ack. */
static int queue_send(struct node *n, uint8_t *buf, size_t len, uint64_t version)
{
	grpc_slice sl;
	grpc_op op;

	if (n->send_bb) {
		free(n->next_ack);
		n->next_ack = buf;
		n->next_ack_len = len;
		n->next_version = version;
		return 0;
	}
	sl = grpc_slice_new(buf, len, free);
	n->send_bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	n->send_version = version;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = n->send_bb;
	if (start_batch(n, &op, 1, &n->t_send)) {
		grpc_byte_buffer_destroy(n->send_bb);
		n->send_bb = NULL;
		return -EIO;
	}
	return 0;
}

static int arm_recv(struct node *n)
{
	grpc_op ops[2];
	size_t k = 0;

	memset(ops, 0, sizeof(ops));
	if (!n->md_asked) {
		ops[k].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[k++].data.recv_initial_metadata.recv_initial_metadata = &n->init_md;
		n->md_asked = true;
	}
	ops[k].op = GRPC_OP_RECV_MESSAGE;
	ops[k++].data.recv_message.recv_message = &n->recv_bb;
	return start_batch(n, ops, k, &n->t_recv);
}

/* Creates the call and starts its three batches: metadata + Hello, the
 * status, the first receive. */
static int start_node(struct fleet_sim *s, struct node *n, gpr_timespec deadline)
{
	Sluice__V1__Hello hello = SLUICE__V1__HELLO__INIT;
	Sluice__V1__NodeMessage msg = SLUICE__V1__NODE_MESSAGE__INIT;
	grpc_slice method = grpc_slice_from_static_string(FLEET_SIM_SYNC_PATH);
	grpc_slice sl;
	grpc_op ops[2];
	uint8_t *buf;
	size_t len;

	n->call = grpc_channel_create_call(n->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
					   method, NULL, deadline, NULL);
	grpc_slice_unref(method);
	if (!n->call)
		return -ENOMEM;
	hello.node_id = n->id;
	hello.software_version = (char *)"fleet-sim";
	hello.ruleset = s->ruleset;
	hello.have_version = 0;
	msg.msg_case = SLUICE__V1__NODE_MESSAGE__MSG_HELLO;
	msg.hello = &hello;
	buf = pack_node_message(&msg, &len);
	if (!buf)
		return -ENOMEM;
	sl = grpc_slice_new(buf, len, free);
	n->send_bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	n->send_version = 0;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = s->has_auth ? 1 : 0;
	ops[0].data.send_initial_metadata.metadata = s->has_auth ? &s->auth_md : NULL;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = n->send_bb;
	if (start_batch(n, ops, 2, &n->t_send))
		return -EIO;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &n->trail_md;
	ops[0].data.recv_status_on_client.status = &n->status;
	ops[0].data.recv_status_on_client.status_details = &n->details;
	if (start_batch(n, ops, 1, &n->t_status))
		return -EIO;
	return arm_recv(n);
}

/* A push (bb, borrowed) arrived at now_ns: record it, answer with an Ack,
 * receive on. */
static void on_push(struct node *n, grpc_byte_buffer *bb, uint64_t now_ns)
{
	struct fleet_sim *s = n->sim;
	Sluice__V1__ControlMessage *cm;
	Sluice__V1__Ack ack = SLUICE__V1__ACK__INIT;
	Sluice__V1__NodeMessage msg = SLUICE__V1__NODE_MESSAGE__INIT;
	grpc_byte_buffer_reader r;
	grpc_slice all;
	uint64_t version = 0;
	const char *rs = NULL;
	uint8_t *buf;
	size_t len;

	if (!grpc_byte_buffer_reader_init(&r, bb)) {
		set_error(s, "node '%s': unreadable message", n->id);
		grpc_call_cancel(n->call, NULL);
		return;
	}
	all = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	cm = sluice__v1__control_message__unpack(NULL, GRPC_SLICE_LENGTH(all),
						 GRPC_SLICE_START_PTR(all));
	grpc_slice_unref(all);
	if (cm && cm->msg_case == SLUICE__V1__CONTROL_MESSAGE__MSG_DELTA && cm->delta) {
		version = cm->delta->to_version;
		rs = cm->delta->ruleset;
	} else if (cm && cm->msg_case == SLUICE__V1__CONTROL_MESSAGE__MSG_SNAPSHOT &&
		   cm->snapshot) {
		version = cm->snapshot->version;
		rs = cm->snapshot->ruleset;
	}
	if (!version) {
		set_error(s, "node '%s': push that is neither a Delta nor a Snapshot with a version",
			  n->id);
		if (cm)
			sluice__v1__control_message__free_unpacked(cm, NULL);
		grpc_call_cancel(n->call, NULL);
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (version > n->recv_version)
		n->recv_version = version;
	n->hist[n->hist_next % HIST].version = version;
	n->hist[n->hist_next % HIST].recv_ns = now_ns;
	n->hist_next++;
	s->pushes++;
	pthread_mutex_unlock(&s->lock);

	ack.ruleset = (char *)(rs && rs[0] ? rs : s->ruleset);
	ack.version = version;
	ack.nonce = cm->nonce;
	msg.msg_case = SLUICE__V1__NODE_MESSAGE__MSG_ACK;
	msg.ack = &ack;
	buf = pack_node_message(&msg, &len);
	sluice__v1__control_message__free_unpacked(cm, NULL);
	if (!buf || queue_send(n, buf, len, version)) {
		set_error(s, "node '%s': cannot send an Ack", n->id);
		grpc_call_cancel(n->call, NULL);
		return;
	}
	arm_recv(n);
}

static void handle(struct fleet_sim *s, const grpc_event *ev, uint64_t now_ns)
{
	struct tag *t = ev->tag;
	struct node *n = t->node;

	s->outstanding--;
	switch (t->op) {
	case OP_RECV:
		if (n->recv_bb) {
			/* taken out first: on_push re-arms the receive into
			 * n->recv_bb, which gRPC may fill from its own threads */
			grpc_byte_buffer *bb = n->recv_bb;

			n->recv_bb = NULL;
			on_push(n, bb, now_ns);
			grpc_byte_buffer_destroy(bb);
		}
		/* no message: the stream ended, the status batch tells why */
		break;
	case OP_SEND:
		grpc_byte_buffer_destroy(n->send_bb);
		n->send_bb = NULL;
		if (ev->success && n->send_version) {
			pthread_mutex_lock(&s->lock);
			if (n->send_version > n->acked_version)
				n->acked_version = n->send_version;
			pthread_mutex_unlock(&s->lock);
		}
		if (n->next_ack && ev->success) {
			uint8_t *buf = n->next_ack;

			n->next_ack = NULL;
			queue_send(n, buf, n->next_ack_len, n->next_version);
		}
		break;
	case OP_STATUS: {
		char *details = grpc_slice_to_c_string(n->details);

		if (!__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE))
			set_error(s, "node '%s': Sync ended: status %d (%s) '%s'", n->id,
				  (int)n->status, status_name(n->status), details ? details : "");
		gpr_free(details);
		break;
	}
	}
}

static void *queue_thread(void *arg)
{
	struct fleet_sim *s = arg;
	bool cancelled = false;
	uint64_t drain_until = 0;

	for (;;) {
		grpc_event ev;

		if (__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE) && !cancelled) {
			for (unsigned i = 0; i < s->n; i++)
				if (s->nodes[i].call)
					grpc_call_cancel(s->nodes[i].call, NULL);
			cancelled = true;
			drain_until = fleet_sim_now_ns() + (uint64_t)DRAIN_MS * 1000000u;
		}
		if (cancelled && (s->outstanding == 0 || fleet_sim_now_ns() > drain_until))
			break;
		ev = grpc_completion_queue_next(s->cq, in_ms(POLL_MS), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			handle(s, &ev, fleet_sim_now_ns());
		else if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
	}
	if (s->outstanding)
		fprintf(stderr, "fleet_sim: %u batches still pending after cancel\n",
			s->outstanding);
	return NULL;
}

/* The whole file as a string (certificates and keys: 1 MiB at most);
 * NULL when it cannot be read. */
static char *slurp(const char *path)
{
	char *buf = NULL;

	return fileio_read(path, 1u << 20, &buf, NULL) == 0 ? buf : NULL;
}

/* Credentials of one node: its own certificate under mTLS. */
static int node_creds(const struct fleet_sim_config *cfg, const char *ca, const char *id,
		      grpc_channel_credentials **out)
{
	grpc_ssl_pem_key_cert_pair pair;
	char path[4096];
	char *cert, *key;

	if (!cfg->tls_ca_file) {
		*out = grpc_insecure_credentials_create();
		return *out ? 0 : -ENOMEM;
	}
	snprintf(path, sizeof(path), "%s/%s.pem", cfg->tls_cert_dir, id);
	cert = slurp(path);
	snprintf(path, sizeof(path), "%s/%s.key", cfg->tls_cert_dir, id);
	key = slurp(path);
	if (!cert || !key) {
		free(cert);
		free(key);
		return -ENOENT;
	}
	pair.cert_chain = cert;
	pair.private_key = key;
	*out = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
	free(cert);
	free(key);
	return *out ? 0 : -EINVAL;
}

int fleet_sim_new(const struct fleet_sim_config *cfg, struct fleet_sim **ret)
{
	struct fleet_sim *s;
	grpc_arg args[4];
	grpc_channel_args cargs = { .num_args = 3, .args = args };
	char *ca = NULL;
	gpr_timespec deadline;
	int err = 0;

	if (!cfg || !cfg->target || !cfg->ruleset || !cfg->node_prefix || !cfg->n_nodes ||
	    cfg->n_nodes > FLEET_SIM_MAX_NODES || strlen(cfg->node_prefix) > 32 ||
	    !cfg->tls_ca_file != !cfg->tls_cert_dir)
		return -EINVAL;
	if (cfg->tls_ca_file && !(ca = slurp(cfg->tls_ca_file)))
		return -ENOENT;
	s = calloc(1, sizeof(*s));
	if (!s) {
		free(ca);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->n = cfg->n_nodes;
	s->ruleset = strdup(cfg->ruleset);
	s->nodes = calloc(s->n, sizeof(*s->nodes));
	if (!s->ruleset || !s->nodes) {
		free(ca);
		free(s->ruleset);
		free(s->nodes);
		free(s);
		return -ENOMEM;
	}
	grpc_init();
	s->cq = grpc_completion_queue_create_for_next(NULL);
	if (cfg->bearer_token) {
		char v[600];

		snprintf(v, sizeof(v), "Bearer %s", cfg->bearer_token);
		s->auth_md.key = grpc_slice_from_static_string("authorization");
		s->auth_md.value = grpc_slice_from_copied_string(v);
		s->has_auth = true;
	}
	/* A local subchannel pool per channel: otherwise gRPC shares one
	 * connection between channels to the same target, and the control
	 * plane would see one connection instead of N nodes. */
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
	args[0].value.integer = 1;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[1].value.integer = -1;     /* a snapshot may be large */
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = (char *)GRPC_ARG_ENABLE_RETRIES;
	args[2].value.integer = 0;      /* a failed stream must show, not retry */
	if (ca) {
		/* the test certificates name localhost (scripts/gen-certs.sh) */
		args[3].type = GRPC_ARG_STRING;
		args[3].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		args[3].value.string = (char *)"localhost";
		cargs.num_args = 4;
	}
	deadline = in_ms(cfg->stream_deadline_ms ? cfg->stream_deadline_ms : 3600000u);
	for (unsigned i = 0; i < s->n && !err; i++) {
		struct node *n = &s->nodes[i];
		grpc_channel_credentials *creds;

		n->sim = s;
		snprintf(n->id, sizeof(n->id), "%s-%u", cfg->node_prefix, i);
		n->t_send = (struct tag){ n, OP_SEND };
		n->t_recv = (struct tag){ n, OP_RECV };
		n->t_status = (struct tag){ n, OP_STATUS };
		grpc_metadata_array_init(&n->init_md);
		grpc_metadata_array_init(&n->trail_md);
		n->details = grpc_empty_slice();
		err = node_creds(cfg, ca, n->id, &creds);
		if (err)
			break;
		n->ch = grpc_channel_create(cfg->target, creds, &cargs);
		grpc_channel_credentials_release(creds);
		if (!n->ch)
			err = -ENOMEM;
		else
			err = start_node(s, n, deadline);
	}
	free(ca);
	if (!err) {
		err = -pthread_create(&s->thread, NULL, queue_thread, s);
		s->thread_started = !err;
	}
	if (err) {
		fleet_sim_free(s);
		return err;
	}
	*ret = s;
	return 0;
}

/* The time node n first received a version >= v; 0 if not kept. */
static uint64_t first_recv(const struct node *n, uint64_t v)
{
	uint64_t best = 0;
	unsigned k = n->hist_next < HIST ? n->hist_next : HIST;

	for (unsigned i = 0; i < k; i++) {
		unsigned j = (n->hist_next - 1 - i) % HIST;

		if (n->hist[j].version >= v && (!best || n->hist[j].recv_ns < best))
			best = n->hist[j].recv_ns;
	}
	return best;
}

int fleet_sim_wait_version(struct fleet_sim *s, uint64_t version, uint64_t deadline_ns,
			   uint64_t *last_recv_ns, uint64_t *first_recv_ns)
{
	for (;;) {
		unsigned reached = 0, received = 0;
		uint64_t last = 0, first = UINT64_MAX;
		bool failed;

		pthread_mutex_lock(&s->lock);
		failed = s->error[0] != '\0';
		for (unsigned i = 0; i < s->n && !failed; i++) {
			const struct node *n = &s->nodes[i];

			if (n->recv_version >= version)
				received++;
			if (n->recv_version >= version && n->acked_version >= version) {
				uint64_t t = first_recv(n, version);

				reached++;
				if (t > last)
					last = t;
				if (t < first)
					first = t;
			}
		}
		if (!failed && reached == s->n) {
			pthread_mutex_unlock(&s->lock);
			if (last_recv_ns)
				*last_recv_ns = last;
			if (first_recv_ns)
				*first_recv_ns = first;
			return 0;
		}
		pthread_mutex_unlock(&s->lock);
		if (failed)
			return -EPROTO;
		if (fleet_sim_now_ns() > deadline_ns) {
			pthread_mutex_lock(&s->lock);
			snprintf(s->error, sizeof(s->error),
				 "timed out: %u of %u nodes received version >= %llu, %u acked it",
				 received, s->n, (unsigned long long)version, reached);
			pthread_mutex_unlock(&s->lock);
			return -ETIMEDOUT;
		}
		nanosleep(&(struct timespec){ .tv_nsec = WAIT_POLL_NS }, NULL);
	}
}

const char *fleet_sim_error(struct fleet_sim *s)
{
	return s->error;
}

uint64_t fleet_sim_pushes(struct fleet_sim *s)
{
	uint64_t p;

	pthread_mutex_lock(&s->lock);
	p = s->pushes;
	pthread_mutex_unlock(&s->lock);
	return p;
}

void fleet_sim_free(struct fleet_sim *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
	if (s->thread_started) {
		pthread_join(s->thread, NULL);
	} else {
		/* calls started before the thread failed: cancel and drain here */
		for (unsigned i = 0; i < s->n; i++)
			if (s->nodes[i].call)
				grpc_call_cancel(s->nodes[i].call, NULL);
		while (s->outstanding) {
			grpc_event ev = grpc_completion_queue_next(s->cq, in_ms(DRAIN_MS), NULL);

			if (ev.type != GRPC_OP_COMPLETE)
				break;
			handle(s, &ev, 0);
		}
	}
	for (unsigned i = 0; i < s->n; i++) {
		struct node *n = &s->nodes[i];

		if (n->call)
			grpc_call_unref(n->call);
		if (n->ch)
			grpc_channel_destroy(n->ch);
		if (n->recv_bb)
			grpc_byte_buffer_destroy(n->recv_bb);
		if (n->send_bb)
			grpc_byte_buffer_destroy(n->send_bb);
		free(n->next_ack);
		grpc_slice_unref(n->details);
		grpc_metadata_array_destroy(&n->init_md);
		grpc_metadata_array_destroy(&n->trail_md);
	}
	grpc_completion_queue_shutdown(s->cq);
	while (grpc_completion_queue_next(s->cq, in_ms(DRAIN_MS), NULL).type == GRPC_OP_COMPLETE)
		;
	grpc_completion_queue_destroy(s->cq);
	if (s->has_auth)
		grpc_slice_unref(s->auth_md.value);
	grpc_shutdown();
	pthread_mutex_destroy(&s->lock);
	free(s->nodes);
	free(s->ruleset);
	free(s);
}
