/* fleet.c - the fleet's core: rulesets with their head and window of
 * versions, the encoded push bodies shared between streams, the per-node
 * push state machine and the PolicySync/Sync stream (see fleet.h for the
 * invariants, README.md for the reasons), and the life cycle.
 */
#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/v1/sync.pb-c.h"

#include "etcd.h"
#include "log.h"
#include "policy_wire.h"
#include "store.h"
#include "fleet_internal.h"

static const double convergence_bounds[] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};
static const double latency_bounds[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

/* ---- trees ----------------------------------------------------------------- */

int fleet_reg_cmp(const void *a, const void *b)
{
	return strcmp(((const struct reg *)a)->node_id, ((const struct reg *)b)->node_id);
}

int fleet_view_cmp(const void *a, const void *b)
{
	return strcmp(((const struct view_ent *)a)->node_id,
		      ((const struct view_ent *)b)->node_id);
}

struct reg *fleet_reg_find(struct fleet *f, const char *id)
{
	struct reg key = { .node_id = (char *)id };
	void **p = tfind(&key, &f->regs, fleet_reg_cmp);

	return p ? *p : NULL;
}

struct view_ent *fleet_view_find(struct fleet *f, const char *id)
{
	struct view_ent key = { .node_id = (char *)id };
	void **p = tfind(&key, &f->view, fleet_view_cmp);

	return p ? *p : NULL;
}

void fleet_view_ent_free(void *p)
{
	struct view_ent *v = p;

	free(v->node_id);
	free(v->val);
	free(v);
}

/* ---- rulesets and their window ------------------------------------------------ */

struct ruleset *fleet_ruleset_find(struct fleet *f, const char *name)
{
	for (struct ruleset *r = f->rulesets; r; r = r->next)
		if (!strcmp(r->name, name))
			return r;
	return NULL;
}

struct ruleset *fleet_ruleset_get(struct fleet *f, const char *name)
{
	struct ruleset *r = fleet_ruleset_find(f, name);

	if (r)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->win = calloc(f->window, sizeof(*r->win));
	if (!r->win) {
		free(r);
		return NULL;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->next = f->rulesets;
	f->rulesets = r;
	return r;
}

uint64_t fleet_head_version(const struct ruleset *r)
{
	return r && r->head ? snapshot_version(r->head) : 0;
}

const struct version_rec *fleet_window_find(const struct fleet *f, const struct ruleset *r,
					     uint64_t version)
{
	for (unsigned i = 0; i < r->win_len; i++) {
		const struct version_rec *v = &r->win[(r->win_pos + f->window - 1 - i) % f->window];

		if (v->version == version)
			return v;
	}
	return NULL;
}

const struct vlog_rec *fleet_vlog_find(const struct ruleset *r, uint64_t version)
{
	for (unsigned i = 0; i < r->vlog_len; i++) {
		const struct vlog_rec *v = &r->vlog[(r->vlog_pos + VLOG_LEN - 1 - i) % VLOG_LEN];

		if (v->version == version)
			return v;
		if (v->version < version)
			break;
	}
	return NULL;
}

/* Versions committed after `acked` up to the head. Exact while `acked` is
 * in the version log; a lower bound (the log's span) beyond it. */
uint64_t fleet_lag_versions(const struct ruleset *r, uint64_t acked)
{
	const struct vlog_rec *h, *a, *oldest;
	uint64_t head = fleet_head_version(r);

	if (!r || !head || acked >= head || !r->vlog_len)
		return 0;
	h = &r->vlog[(r->vlog_pos + VLOG_LEN - 1) % VLOG_LEN];
	a = acked ? fleet_vlog_find(r, acked) : NULL;
	if (a)
		return (uint64_t)(h->seq - a->seq);
	if (!acked)
		return (uint64_t)h->seq;
	oldest = &r->vlog[(r->vlog_pos + VLOG_LEN - r->vlog_len) % VLOG_LEN];
	return (uint64_t)(h->seq - oldest->seq) + 1;
}

/* Makes snap the head and the newest window entry (takes the reference). */
void fleet_ruleset_set_head(struct fleet *f, struct ruleset *r, struct snapshot *snap,
			     int64_t seq, int64_t commit_unix_ms)
{
	struct version_rec *slot = &r->win[r->win_pos];
	struct vlog_rec *vl = &r->vlog[r->vlog_pos];

	snapshot_unref(slot->snap);
	slot->version = snapshot_version(snap);
	slot->snap = snapshot_ref(snap);
	r->win_pos = (r->win_pos + 1) % f->window;
	if (r->win_len < f->window)
		r->win_len++;
	vl->version = snapshot_version(snap);
	vl->seq = seq;
	vl->commit_unix_ms = commit_unix_ms;
	r->vlog_pos = (r->vlog_pos + 1) % VLOG_LEN;
	if (r->vlog_len < VLOG_LEN)
		r->vlog_len++;
	snapshot_unref(r->head);
	r->head = snap;
}

static void ruleset_free(struct fleet *f, struct ruleset *r)
{
	for (unsigned i = 0; i < f->window; i++)
		snapshot_unref(r->win[i].snap);
	free(r->win);
	for (unsigned i = 0; i < FLEET_DELTA_CACHE; i++)
		rpc_buf_unref(r->cache[i].buf);
	snapshot_unref(r->head);
	free(r);
}

/* ---- encoded bodies ---------------------------------------------------------- */

/* Packs m into a new rpc_buf. */
struct rpc_buf *fleet_pack_buf(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	struct rpc_buf *b;

	if (!buf)
		return NULL;
	protobuf_c_message_pack(m, buf);
	b = rpc_buf_take(buf, len);
	if (!b)
		free(buf);
	return b;
}

/* ControlMessage{delta: head - from} or {snapshot: head} without a nonce:
 * the shared part of a push, looked up in (or added to) the LRU cache. A
 * borrowed reference (the cache's) is returned. */
static struct rpc_buf *body_get(struct fleet *f, struct ruleset *r, uint64_t from)
{
	uint64_t to = fleet_head_version(r);
	struct body_ent *slot = &r->cache[0];
	Sluice__V1__ControlMessage cm = SLUICE__V1__CONTROL_MESSAGE__INIT;
	struct rpc_buf *b = NULL;

	for (unsigned i = 0; i < FLEET_DELTA_CACHE; i++) {
		struct body_ent *e = &r->cache[i];

		if (e->buf && e->from == from && e->to == to) {
			e->used = ++r->cache_clock;
			return e->buf;
		}
		if (!e->buf || e->used < slot->used)
			slot = e;
		if (!slot->buf)
			break;
	}
	if (from == UINT64_MAX) {
		Sluice__V1__Ruleset *rpb = policy_ruleset_to_pb(r->head);
		Sluice__V1__Snapshot sn = SLUICE__V1__SNAPSHOT__INIT;

		if (!rpb)
			return NULL;
		sn.ruleset = rpb->name;
		sn.version = rpb->version;
		sn.n_resources = rpb->n_resources;
		sn.resources = rpb->resources;
		cm.msg_case = SLUICE__V1__CONTROL_MESSAGE__MSG_SNAPSHOT;
		cm.snapshot = &sn;
		b = fleet_pack_buf(&cm.base);
		policy_ruleset_pb_free(rpb);
	} else {
		const struct version_rec *v = fleet_window_find(f, r, from);
		struct policy_delta *d = NULL;
		Sluice__V1__Delta *dpb;

		if (!v || snapshot_diff(v->snap, r->head, &d) < 0)
			return NULL;
		dpb = policy_delta_to_pb(d);
		policy_delta_free(d);
		if (!dpb)
			return NULL;
		cm.msg_case = SLUICE__V1__CONTROL_MESSAGE__MSG_DELTA;
		cm.delta = dpb;
		b = fleet_pack_buf(&cm.base);
		policy_delta_pb_free(dpb);
	}
	if (!b)
		return NULL;
	count(&f->c.bodies_built, 1);
	rpc_buf_unref(slot->buf);
	slot->buf = b;
	slot->from = from;
	slot->to = to;
	slot->used = ++r->cache_clock;
	return b;
}

/* ---- node status ------------------------------------------------------------- */

/* The wire status of a local connection (strings borrowed from c). */
static void conn_status(const struct conn *c, bool connected, Sluice__V1__NodeStatus *m,
			Sluice__V1__Label *labels, Sluice__V1__Label **lptr)
{
	sluice__v1__node_status__init(m);
	m->node_id = (char *)c->node_id;
	for (size_t i = 0; i < c->n_labels; i++) {
		sluice__v1__label__init(&labels[i]);
		labels[i].key = c->label_keys[i];
		labels[i].value = c->label_vals[i];
		lptr[i] = &labels[i];
	}
	m->n_labels = c->n_labels;
	m->labels = lptr;
	m->software_version = c->software_version ? c->software_version : (char *)"";
	m->connected = connected;
	m->control_plane = c->f->replica_id;
	m->ruleset = c->rs ? c->rs->name : (char *)"";
	m->acked_version = c->acked;
	m->head_version = fleet_head_version(c->rs);
	m->lag_versions = fleet_lag_versions(c->rs, c->acked);
	m->last_nack_error = c->nack_error ? c->nack_error : (char *)"";
	m->last_nack_version = c->nack_version;
	m->last_nack_unix_ms = c->nack_unix_ms;
	m->last_seen_unix_ms = c->last_seen_unix_ms;
	m->health = (Sluice__V1__Health)c->health;
	m->health_detail = c->health_detail ? c->health_detail : (char *)"";
}

struct rpc_buf *fleet_conn_status_buf(const struct conn *c, bool connected)
{
	Sluice__V1__NodeStatus m;
	Sluice__V1__Label labels[FLEET_MAX_LABELS];
	Sluice__V1__Label *lptr[FLEET_MAX_LABELS];

	conn_status(c, connected, &m, labels, lptr);
	return fleet_pack_buf(&m.base);
}

void fleet_reg_queue(struct fleet *f, struct reg *g)
{
	g->dirty = true;
	if (!g->on_dirty) {
		g->on_dirty = true;
		g->dirty_next = f->dirty;
		f->dirty = g;
		pthread_cond_signal(&f->cond);
	}
}

/* The node's status changed: WatchNodes, and a registry write (coalesced)
 * when `persist` (what only the node can tell: versions, nack, health;
 * readers recompute head and lag from their own view). */
void fleet_conn_changed(struct conn *c, bool connected, bool persist)
{
	struct fleet *f = c->f;
	struct rpc_buf *b = fleet_conn_status_buf(c, connected);

	if (!b)
		return;
	if (persist && c->reg && !c->reg->superseded) {
		free(c->reg->val);
		c->reg->val = malloc(rpc_buf_len(b) ? rpc_buf_len(b) : 1);
		if (c->reg->val) {
			memcpy(c->reg->val, rpc_buf_data(b), rpc_buf_len(b));
			c->reg->len = rpc_buf_len(b);
			fleet_reg_queue(f, c->reg);
		}
	}
	fleet_nodes_send(f, b, c->node_id, c->rs ? c->rs->name : "");
	rpc_buf_unref(b);
}

/* ---- pushing ------------------------------------------------------------------- */

/* Sends the node what takes it from its acked version to the head, unless a
 * push is in flight (then the ack will bring the coalesced one). */
void fleet_conn_push(struct conn *c)
{
	struct fleet *f = c->f;
	struct ruleset *r = c->rs;
	uint64_t head = fleet_head_version(r);
	Sluice__V1__ControlMessage env = SLUICE__V1__CONTROL_MESSAGE__INIT;
	struct rpc_buf *parts[2];
	bool delta;
	int err;

	if (!c->hello || c->closed || c->pending || !head || !f->loaded)
		return;
	if (c->acked == head || (c->nack_version && c->nack_version >= head))
		return;
	/* a node ahead of this replica: our watch lags; wait for it */
	if (c->acked > head)
		return;
	delta = c->acked && fleet_window_find(f, r, c->acked);
	parts[1] = body_get(f, r, delta ? c->acked : UINT64_MAX);
	if (!parts[1]) {
		c->want_push = true;
		return;
	}
	snprintf(c->nonce, sizeof(c->nonce), "%" PRIu64, ++f->nonce_seq);
	env.nonce = c->nonce;
	parts[0] = fleet_pack_buf(&env.base);
	if (!parts[0]) {
		c->want_push = true;
		return;
	}
	err = rpc_stream_sendv(c->st, parts, 2);
	rpc_buf_unref(parts[0]);
	if (err == -EAGAIN || err == -ENOMEM) {
		c->want_push = true;
		count(&f->c.pushes_deferred, 1);
		return;
	}
	if (err < 0)
		return;
	c->want_push = false;
	c->pending = true;
	c->pending_to = head;
	count(delta ? &f->c.pushes_delta : &f->c.pushes_snapshot, 1);
	log_debug("pushed", "node=%s ruleset=%s from=%" PRIu64 " to=%" PRIu64 " kind=%s nonce=%s",
		  c->node_id, r->name, c->acked, head, delta ? "delta" : "snapshot", c->nonce);
}

void fleet_ruleset_push_all(struct fleet *f, struct ruleset *r)
{
	(void)f;
	for (struct conn *c = r->conns; c; c = c->rs_next) {
		fleet_conn_push(c);
		/* head and lag changed for every node of the ruleset */
		fleet_conn_changed(c, true, false);
	}
}

/* ---- PolicySync/Sync -------------------------------------------------------------- */

static void conn_free(struct conn *c)
{
	if (!c)
		return;
	free(c->software_version);
	for (size_t i = 0; i < c->n_labels; i++) {
		free(c->label_keys[i]);
		free(c->label_vals[i]);
	}
	free(c->label_keys);
	free(c->label_vals);
	free(c->nack_error);
	free(c->health_detail);
	free(c);
}

void fleet_sync_open(void *ctx, struct rpc_stream *st, const struct rpc_peer *peer,
		      const uint8_t *req, size_t len)
{
	struct fleet *f = ctx;
	struct conn *c = calloc(1, sizeof(*c));

	(void)peer;
	(void)req;
	(void)len;
	if (!c) {
		rpc_stream_finish(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	c->f = f;
	c->st = st;
	c->connected_ms = mono_ms();
	c->connected_unix_ms = now_unix_ms();
	rpc_stream_set_data(st, c);
}

static int conn_set_hello(struct conn *c, const Sluice__V1__Hello *h)
{
	c->software_version = strdup(h->software_version);
	c->label_keys = calloc(h->n_labels ? h->n_labels : 1, sizeof(char *));
	c->label_vals = calloc(h->n_labels ? h->n_labels : 1, sizeof(char *));
	if (!c->software_version || !c->label_keys || !c->label_vals)
		return -ENOMEM;
	for (size_t i = 0; i < h->n_labels; i++) {
		c->label_keys[i] = strdup(h->labels[i]->key);
		c->label_vals[i] = strdup(h->labels[i]->value);
		c->n_labels = i + 1;
		if (!c->label_keys[i] || !c->label_vals[i])
			return -ENOMEM;
	}
	return 0;
}

static void on_hello(struct fleet *f, struct conn *c, const Sluice__V1__Hello *h)
{
	const struct rpc_peer *peer = rpc_stream_peer(c->st);
	struct reg *g;
	char q[300], q2[300];

	if (c->hello) {
		rpc_stream_finish(c->st, RPC_INVALID_ARGUMENT, "hello: sent twice");
		return;
	}
	if (!h->node_id[0] || strlen(h->node_id) > FLEET_MAX_NODE_ID_LEN) {
		rpc_stream_finish(c->st, RPC_INVALID_ARGUMENT,
				  "hello.node_id: must be 1 to 253 bytes");
		return;
	}
	if (!policy_ruleset_name_valid(h->ruleset)) {
		rpc_stream_finish(c->st, RPC_INVALID_ARGUMENT, "hello.ruleset: invalid name");
		return;
	}
	if (h->n_labels > FLEET_MAX_LABELS) {
		rpc_stream_finish(c->st, RPC_INVALID_ARGUMENT, "hello.labels: more than 64");
		return;
	}
	/* a node may only speak as itself; plaintext (no identity) is the
	 * development mode, which says so at start-up */
	if (peer && peer->identity && strcmp(peer->identity, h->node_id)) {
		count(&f->c.hello_refused, 1);
		log_warn("Node identity mismatch, refusing", "certificate=%s node_id=%s",
			 log_quote(peer->identity, q, sizeof(q)), log_quote(h->node_id, q2, sizeof(q2)));
		rpc_stream_finish(c->st, RPC_PERMISSION_DENIED,
				  "hello.node_id: does not match the client certificate");
		return;
	}
	if (conn_set_hello(c, h) < 0) {
		rpc_stream_finish(c->st, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	snprintf(c->node_id, sizeof(c->node_id), "%s", h->node_id);
	pthread_mutex_lock(&f->mu);
	c->rs = fleet_ruleset_get(f, h->ruleset);
	if (!c->rs) {
		pthread_mutex_unlock(&f->mu);
		rpc_stream_finish(c->st, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	g = fleet_reg_find(f, c->node_id);
	if (g && g->conn) {
		/* the node reconnected before its old stream was noticed dead */
		struct conn *old = g->conn;

		old->reg = NULL;
		g->conn = NULL;
		rpc_stream_finish(old->st, RPC_ABORTED, "replaced by a newer stream of the node");
	}
	if (!g) {
		g = calloc(1, sizeof(*g));
		if (g && !(g->node_id = strdup(c->node_id))) {
			free(g);
			g = NULL;
		}
		if (g && !tsearch(g, &f->regs, fleet_reg_cmp)) {
			free(g->node_id);
			free(g);
			g = NULL;
		}
	}
	if (g) {
		g->conn = c;
		g->gone = false;
		/* a node (re)connecting here takes its key over unconditionally;
		 * later writes are guarded by that write's revision */
		g->superseded = false;
		g->mod_rev = 0;
		g->takeover = true;
		c->reg = g;
	}
	c->hello = true;
	c->acked = h->have_version;
	c->last_seen_unix_ms = now_unix_ms();
	c->rs_next = c->rs->conns;
	c->rs->conns = c;
	f->connected++;
	log_info("node connected", "node=%s ruleset=%s have_version=%" PRIu64, c->node_id,
		 c->rs->name, c->acked);
	fleet_conn_push(c);
	fleet_conn_changed(c, true, true);
	pthread_mutex_unlock(&f->mu);
}

static void on_ack(struct fleet *f, struct conn *c, const Sluice__V1__Ack *a)
{
	pthread_mutex_lock(&f->mu);
	if (!c->pending || strcmp(a->nonce, c->nonce) || a->version != c->pending_to ||
	    strcmp(a->ruleset, c->rs->name)) {
		count(&f->c.acks_ignored, 1);
		log_debug("ack ignored", "node=%s nonce=%s version=%" PRIu64, c->node_id, a->nonce,
			  a->version);
		pthread_mutex_unlock(&f->mu);
		return;
	}
	count(&f->c.acks, 1);
	c->pending = false;
	c->acked = a->version;
	c->last_seen_unix_ms = now_unix_ms();
	{
		const struct vlog_rec *v = fleet_vlog_find(c->rs, a->version);

		/* commit->ack only for versions committed while the node was
		 * here, not for the catch-up of a node that just arrived */
		if (v && v->commit_unix_ms >= c->connected_unix_ms)
			metrics_histogram_observe(&f->convergence,
						  (double)(now_unix_ms() - v->commit_unix_ms) / 1000.0);
	}
	fleet_conn_push(c);
	fleet_conn_changed(c, true, true);
	pthread_mutex_unlock(&f->mu);
}

static void on_nack(struct fleet *f, struct conn *c, const Sluice__V1__Nack *n)
{
	char *err;

	pthread_mutex_lock(&f->mu);
	if (!c->pending || strcmp(n->nonce, c->nonce)) {
		count(&f->c.acks_ignored, 1);
		pthread_mutex_unlock(&f->mu);
		return;
	}
	count(&f->c.nacks, 1);
	c->pending = false;
	c->nack_version = c->pending_to;
	c->nack_unix_ms = now_unix_ms();
	c->last_seen_unix_ms = c->nack_unix_ms;
	err = strdup(n->error[0] ? n->error : "(no error given)");
	if (err) {
		free(c->nack_error);
		c->nack_error = err;
	}
	log_warn("node refused a version, it keeps its own", "node=%s ruleset=%s refused=%" PRIu64
		 " keeps=%" PRIu64 " error=%s", c->node_id, c->rs->name, c->nack_version, c->acked,
		 c->nack_error);
	fleet_conn_push(c);
	fleet_conn_changed(c, true, true);
	pthread_mutex_unlock(&f->mu);
}

static void on_report(struct fleet *f, struct conn *c, Sluice__V1__NodeReport *rep)
{
	char *claimed = rep->node_id;
	struct rpc_buf *b;
	bool changed;
	char *detail;

	/* a node speaks only for itself (the claim is put back: it is what
	 * free_unpacked frees) */
	rep->node_id = c->node_id;
	b = fleet_pack_buf(&rep->base);
	rep->node_id = claimed;
	pthread_mutex_lock(&f->mu);
	count(&f->c.reports, 1);
	changed = c->health != (int)rep->health ||
		  strcmp(c->health_detail ? c->health_detail : "", rep->health_detail);
	c->health = (int)rep->health;
	detail = strdup(rep->health_detail);
	if (detail) {
		free(c->health_detail);
		c->health_detail = detail;
	}
	c->last_seen_unix_ms = now_unix_ms();
	if (changed)
		fleet_conn_changed(c, true, true);
	if (b)
		fleet_stats_send(f, b, c->node_id);
	pthread_mutex_unlock(&f->mu);
	rpc_buf_unref(b);
}

void fleet_sync_recv(void *ctx, struct rpc_stream *st, const uint8_t *msg, size_t len)
{
	struct fleet *f = ctx;
	struct conn *c = rpc_stream_data(st);
	Sluice__V1__NodeMessage *m;

	if (!c || !msg)
		return;   /* half-close: the node sends nothing more, we keep pushing */
	m = sluice__v1__node_message__unpack(NULL, len, msg);
	if (!m) {
		rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "NodeMessage does not decode");
		return;
	}
	if (m->msg_case != SLUICE__V1__NODE_MESSAGE__MSG_HELLO && !c->hello) {
		rpc_stream_finish(st, RPC_FAILED_PRECONDITION, "the first message must be a Hello");
		goto out;
	}
	switch (m->msg_case) {
	case SLUICE__V1__NODE_MESSAGE__MSG_HELLO:
		on_hello(f, c, m->hello);
		break;
	case SLUICE__V1__NODE_MESSAGE__MSG_ACK:
		on_ack(f, c, m->ack);
		break;
	case SLUICE__V1__NODE_MESSAGE__MSG_NACK:
		on_nack(f, c, m->nack);
		break;
	case SLUICE__V1__NODE_MESSAGE__MSG_REPORT:
		on_report(f, c, m->report);
		break;
	default:
		rpc_stream_finish(st, RPC_INVALID_ARGUMENT, "NodeMessage: empty");
		break;
	}
out:
	sluice__v1__node_message__free_unpacked(m, NULL);
}

void fleet_sync_close(void *ctx, struct rpc_stream *st, enum rpc_status status)
{
	struct fleet *f = ctx;
	struct conn *c = rpc_stream_data(st);

	if (!c)
		return;
	pthread_mutex_lock(&f->mu);
	c->closed = true;
	if (c->hello) {
		for (struct conn **p = &c->rs->conns; *p; p = &(*p)->rs_next)
			if (*p == c) {
				*p = c->rs_next;
				break;
			}
		f->connected--;
		log_info("node disconnected", "node=%s status=%s", c->node_id,
			 rpc_status_name(status));
		if (c->reg) {
			c->reg->conn = NULL;
			c->reg->gone = true;
			fleet_conn_changed(c, false, true);
			if (!c->reg->on_dirty && !c->reg->writing && !c->reg->mod_rev)
				fleet_reg_drop(f, c->reg);
		}
	}
	pthread_mutex_unlock(&f->mu);
	rpc_stream_set_data(st, NULL);
	conn_free(c);
}

/* ---- life cycle ----------------------------------------------------------------------- */

int fleet_new(const struct fleet_config *cfg, struct fleet **ret)
{
	struct fleet *f;
	pthread_condattr_t ca;

	if (!cfg->etcd || !cfg->n_etcd_endpoints || !cfg->replica_id || !cfg->replica_id[0] ||
	    cfg->window > FLEET_MAX_WINDOW)
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->etcd = cfg->etcd;
	f->store_etcd = cfg->store_etcd;
	f->etcd_timeout_ms = cfg->etcd_timeout_ms;
	f->any_node = cfg->any_node;
	f->window = cfg->window ? cfg->window : FLEET_DEFAULT_WINDOW;
	f->lease_ttl_s = cfg->lease_ttl_s ? cfg->lease_ttl_s : FLEET_DEFAULT_LEASE_TTL_S;
	f->gone_ttl_s = cfg->gone_ttl_s ? cfg->gone_ttl_s : FLEET_DEFAULT_GONE_TTL_S;
	f->prefix = strdup(cfg->prefix ? cfg->prefix : STORE_DEFAULT_PREFIX);
	f->replica_id = strdup(cfg->replica_id);
	f->endpoints = calloc(cfg->n_etcd_endpoints, sizeof(char *));
	f->http_fd = -1;
	if (!f->prefix || !f->replica_id || !f->endpoints)
		goto out_nomem;
	for (size_t i = 0; i < cfg->n_etcd_endpoints; i++) {
		f->endpoints[i] = strdup(cfg->etcd_endpoints[i]);
		if (!f->endpoints[i])
			goto out_nomem;
		f->n_endpoints++;
	}
	pthread_mutex_init(&f->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);
	metrics_histogram_init(&f->convergence, convergence_bounds,
			       sizeof(convergence_bounds) / sizeof(convergence_bounds[0]));
	metrics_histogram_init(&f->etcd_latency, latency_bounds,
			       sizeof(latency_bounds) / sizeof(latency_bounds[0]));
	*ret = f;
	return 0;
out_nomem:
	for (size_t i = 0; i < f->n_endpoints; i++)
		free(f->endpoints[i]);
	free(f->endpoints);
	free(f->prefix);
	free(f->replica_id);
	free(f);
	return -ENOMEM;
}

int fleet_start(struct fleet *f)
{
	int r;

	if (f->started)
		return -EBUSY;
	r = pthread_create(&f->loader_thr, NULL, fleet_loader_main, f);
	if (r)
		return -r;
	r = pthread_create(&f->reg_thr, NULL, fleet_reg_main, f);
	if (r) {
		__atomic_store_n(&f->stopping, true, __ATOMIC_RELAXED);
		pthread_join(f->loader_thr, NULL);
		return -r;
	}
	f->started = true;
	return 0;
}

void fleet_stop(struct fleet *f)
{
	struct etcd_watch *w;
	int64_t lease;

	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	__atomic_store_n(&f->stopping, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	if (f->http_running) {
		pthread_join(f->http_thr, NULL);
		close(f->http_fd);
		f->http_fd = -1;
		f->http_running = false;
	}
	if (!f->started)
		return;
	f->started = false;
	pthread_join(f->loader_thr, NULL);
	pthread_join(f->reg_thr, NULL);
	pthread_mutex_lock(&f->mu);
	w = f->watch;
	f->watch = NULL;
	lease = f->lease;
	f->lease = 0;
	pthread_mutex_unlock(&f->mu);
	etcd_watch_stop(w);
	/* our nodes' keys go now rather than at lease expiry: they reconnect
	 * to another replica, which writes them again */
	if (lease)
		etcd_lease_revoke(f->etcd, lease);
}

static void reg_free_node(void *p)
{
	struct reg *g = p;

	free(g->node_id);
	free(g->val);
	free(g);
}

void fleet_free(struct fleet *f)
{
	if (!f)
		return;
	fleet_stop(f);
	while (f->rulesets) {
		struct ruleset *r = f->rulesets;

		f->rulesets = r->next;
		ruleset_free(f, r);
	}
	while (f->rev_pending) {
		struct pending_rs *p = f->rev_pending;

		f->rev_pending = p->next;
		policy_delta_free(p->delta);
		free(p);
	}
	tdestroy(f->regs, reg_free_node);
	tdestroy(f->view, fleet_view_ent_free);
	while (f->node_watchers)
		fleet_watcher_remove(&f->node_watchers, f->node_watchers->st);
	while (f->stat_watchers)
		fleet_watcher_remove(&f->stat_watchers, f->stat_watchers->st);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->mu);
	for (size_t i = 0; i < f->n_endpoints; i++)
		free(f->endpoints[i]);
	free(f->endpoints);
	free(f->prefix);
	free(f->replica_id);
	free(f);
}
