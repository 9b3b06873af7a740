/* fleet_etcd.c - the fleet's etcd side: the load of every ruleset head
 * and node key at one revision, the watch that advances heads from each
 * transaction's events (and re-reads after a compaction), and the registry
 * thread that writes node keys in batches under the replica's lease.
 * Nothing here calls etcd with f->mu held.
 */
#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/v1/admin.pb-c.h"

#include "etcd.h"
#include "log.h"
#include "fleet_internal.h"

/* ---- loading from etcd ---------------------------------------------------------- */

static char *key_join(const char *a, const char *b)
{
	char *k;

	return asprintf(&k, "%s%s", a, b) < 0 ? NULL : k;
}

/* The resources of one ruleset and its head at revision rev. */
static int load_ruleset(struct fleet *f, const char *rs, int64_t rev, struct snapshot **snap,
			int64_t *seq, int64_t *commit_ms)
{
	struct etcd_range_result hr, rr;
	struct policy_res **res = NULL;
	char *hk = NULL, *rk = NULL, *rend = NULL;
	size_t n = 0, rend_len;
	uint64_t version;
	int r;

	if (asprintf(&hk, "%srulesets/%s/head", f->prefix, rs) < 0)
		hk = NULL;
	if (asprintf(&rk, "%srulesets/%s/res/", f->prefix, rs) < 0)
		rk = NULL;
	rend = rk ? malloc(strlen(rk)) : NULL;
	if (!hk || !rk || !rend) {
		r = -ENOMEM;
		goto out_free;
	}
	rend_len = etcd_prefix_end(rk, strlen(rk), rend);
	r = etcd_range(f->etcd, hk, strlen(hk), NULL, 0, rev, 0, &hr);
	if (r < 0)
		goto out_free;
	if (!hr.n_kvs) {
		etcd_range_result_done(&hr);
		*snap = NULL;
		r = 0;
		goto out_free;
	}
	version = (uint64_t)hr.kvs[0].mod_revision;
	*seq = hr.kvs[0].version;
	*commit_ms = 0;
	{
		Sluice__V1__VersionInfo *vi = sluice__v1__version_info__unpack(
			NULL, hr.kvs[0].value_len, hr.kvs[0].value);

		if (vi) {
			*commit_ms = vi->time_unix_ms;
			sluice__v1__version_info__free_unpacked(vi, NULL);
		}
	}
	etcd_range_result_done(&hr);
	r = etcd_range(f->etcd, rk, strlen(rk), rend, rend_len, rev, 0, &rr);
	if (r < 0)
		goto out_free;
	res = calloc(rr.n_kvs ? rr.n_kvs : 1, sizeof(*res));
	if (!res)
		r = -ENOMEM;
	for (size_t i = 0; res && i < rr.n_kvs; i++) {
		r = policy_res_decode(rr.kvs[i].value, rr.kvs[i].value_len, NULL, &res[n]);
		if (r < 0)
			break;
		n++;
	}
	if (r == 0)
		r = snapshot_build(rs, version, res, n, NULL, snap);
	etcd_range_result_done(&rr);
out_free:
	for (size_t i = 0; i < n; i++)
		policy_res_unref(res[i]);
	free(res);
	free(rend);
	free(rk);
	free(hk);
	return r;
}

/* A ruleset read by a load, before it is installed under the lock. */
struct loaded_rs {
	char name[POLICY_RULESET_NAME_MAX_LEN + 1];
	struct snapshot *snap;
	int64_t seq, commit_ms;
	struct loaded_rs *next;
};

/* Reads every ruleset head and every node key at one revision, then
 * installs them. Returns the revision read at (> 0) or -errno. */
static int64_t load_all(struct fleet *f)
{
	struct etcd_range_result rr;
	struct loaded_rs *list = NULL;
	char *rs_prefix = key_join(f->prefix, "rulesets/");
	char *nodes_prefix = key_join(f->prefix, "nodes/");
	char *end = NULL, *cursor = NULL;
	size_t end_len, plen;
	int64_t rev = 0;
	int r;

	if (!rs_prefix || !nodes_prefix) {
		rev = -ENOMEM;
		goto out_free;
	}
	plen = strlen(rs_prefix);
	end = malloc(plen + 1);
	cursor = strdup(rs_prefix);
	if (!end || !cursor) {
		rev = -ENOMEM;
		goto out_free;
	}
	end_len = etcd_prefix_end(rs_prefix, plen, end);
	/* one ruleset per step: the first key at or after the cursor names it,
	 * the cursor then jumps past its whole subtree (logs included) */
	for (;;) {
		char name[POLICY_RULESET_NAME_MAX_LEN + 1];
		const char *k, *slash;
		struct loaded_rs *l;
		size_t nlen;

		r = etcd_range(f->etcd, cursor, strlen(cursor), end, end_len, rev, 1, &rr);
		if (r < 0) {
			rev = r;
			goto out_free;
		}
		if (!rev)
			rev = rr.revision;
		if (!rr.n_kvs) {
			etcd_range_result_done(&rr);
			break;
		}
		k = rr.kvs[0].key + plen;
		slash = strchr(k, '/');
		nlen = slash ? (size_t)(slash - k) : strlen(k);
		if (nlen > POLICY_RULESET_NAME_MAX_LEN || nlen == 0) {
			etcd_range_result_done(&rr);
			rev = -EBADMSG;
			goto out_free;
		}
		memcpy(name, k, nlen);
		name[nlen] = 0;
		etcd_range_result_done(&rr);
		l = calloc(1, sizeof(*l));
		if (!l) {
			rev = -ENOMEM;
			goto out_free;
		}
		l->next = list;
		list = l;
		snprintf(l->name, sizeof(l->name), "%s", name);
		r = load_ruleset(f, name, rev, &l->snap, &l->seq, &l->commit_ms);
		if (r < 0) {
			rev = r;
			goto out_free;
		}
		/* "<rs>0" sorts right after every "<rs>/..." key ('0' = '/' + 1) */
		free(cursor);
		if (asprintf(&cursor, "%s%s0", rs_prefix, name) < 0) {
			cursor = NULL;
			rev = -ENOMEM;
			goto out_free;
		}
	}
	{
		size_t nplen = strlen(nodes_prefix);
		char *nend = malloc(nplen);

		if (!nend) {
			rev = -ENOMEM;
			goto out_free;
		}
		r = etcd_range(f->etcd, nodes_prefix, nplen, nend,
			       etcd_prefix_end(nodes_prefix, nplen, nend), rev, 0, &rr);
		free(nend);
		if (r < 0) {
			rev = r;
			goto out_free;
		}
		pthread_mutex_lock(&f->mu);
		tdestroy(f->view, fleet_view_ent_free);
		f->view = NULL;
		for (size_t i = 0; i < rr.n_kvs; i++) {
			struct view_ent *v = calloc(1, sizeof(*v));

			if (!v)
				break;
			v->node_id = strdup(rr.kvs[i].key + nplen);
			v->val = malloc(rr.kvs[i].value_len ? rr.kvs[i].value_len : 1);
			if (!v->node_id || !v->val || !tsearch(v, &f->view, fleet_view_cmp)) {
				fleet_view_ent_free(v);
				break;
			}
			memcpy(v->val, rr.kvs[i].value, rr.kvs[i].value_len);
			v->len = rr.kvs[i].value_len;
			v->mod_rev = rr.kvs[i].mod_revision;
		}
		etcd_range_result_done(&rr);
	}
	for (struct loaded_rs *l = list; l; l = l->next) {
		struct ruleset *rs;

		if (!l->snap)
			continue;
		rs = fleet_ruleset_get(f, l->name);
		if (!rs)
			continue;
		if (fleet_head_version(rs) != snapshot_version(l->snap)) {
			fleet_ruleset_set_head(f, rs, l->snap, l->seq, l->commit_ms);
			l->snap = NULL;
			fleet_ruleset_push_all(f, rs);
		}
	}
	f->loaded = true;
	for (struct ruleset *rs = f->rulesets; rs; rs = rs->next)
		for (struct conn *c = rs->conns; c; c = c->rs_next)
			fleet_conn_push(c);
	pthread_mutex_unlock(&f->mu);
out_free:
	while (list) {
		struct loaded_rs *n = list->next;

		snapshot_unref(list->snap);
		free(list);
		list = n;
	}
	free(cursor);
	free(end);
	free(nodes_prefix);
	free(rs_prefix);
	return rev;
}

/* ---- the watch ---------------------------------------------------------------- */

static struct pending_rs *pending_get(struct fleet *f, const char *name)
{
	struct pending_rs *p;

	for (p = f->rev_pending; p; p = p->next)
		if (!strcmp(p->name, name))
			return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	snprintf(p->name, sizeof(p->name), "%s", name);
	if (policy_delta_new(name, 0, 0, &p->delta) < 0) {
		free(p);
		return NULL;
	}
	p->next = f->rev_pending;
	f->rev_pending = p;
	return p;
}

/* A ruleset could not be advanced from events (should not happen with the
 * store's transactions): read it whole at the revision instead. */
static void reload_ruleset(struct fleet *f, const char *name, int64_t rev)
{
	struct snapshot *snap = NULL;
	int64_t seq = 0, commit_ms = 0;
	int r = load_ruleset(f, name, rev, &snap, &seq, &commit_ms);

	count(&f->c.reloads, 1);
	if (r < 0 || !snap) {
		log_error("Failed to re-read ruleset, nodes keep their versions until the next change",
			  "ruleset=%s revision=%" PRId64 " error=%s", name, rev, strerror(-r));
		return;
	}
	pthread_mutex_lock(&f->mu);
	{
		struct ruleset *rs = fleet_ruleset_get(f, name);

		if (rs && snapshot_version(snap) > fleet_head_version(rs)) {
			fleet_ruleset_set_head(f, rs, snap, seq, commit_ms);
			snap = NULL;
			fleet_ruleset_push_all(f, rs);
		}
	}
	pthread_mutex_unlock(&f->mu);
	snapshot_unref(snap);
}

/* Applies what one revision did to the rulesets it touched. */
static void revision_done(struct fleet *f, int64_t rev)
{
	while (f->rev_pending) {
		struct pending_rs *p = f->rev_pending;
		bool reload = false;

		f->rev_pending = p->next;
		if (p->head) {
			pthread_mutex_lock(&f->mu);
			struct ruleset *rs = fleet_ruleset_get(f, p->name);
			struct snapshot *base = NULL, *next = NULL;
			int r = -ENOMEM;

			if (rs) {
				base = rs->head ? snapshot_ref(rs->head) : NULL;
				if (!base)
					r = snapshot_new_empty(p->name, &base);
				else
					r = 0;
			}
			if (r == 0) {
				p->delta->from_version = snapshot_version(base);
				p->delta->to_version = (uint64_t)rev;
				r = snapshot_apply(base, p->delta, NULL, &next);
			}
			if (r == 0) {
				fleet_ruleset_set_head(f, rs, next, p->seq, p->commit_unix_ms);
				count(&f->c.versions_applied, 1);
				fleet_ruleset_push_all(f, rs);
			} else {
				reload = true;
			}
			snapshot_unref(base);
			pthread_mutex_unlock(&f->mu);
		} else if (p->delta->n_upserts || p->delta->n_removes) {
			log_warn("Resources changed without a head change (not written by a store), "
				 "ignoring", "ruleset=%s revision=%" PRId64, p->name, rev);
		}
		if (reload)
			reload_ruleset(f, p->name, rev);
		policy_delta_free(p->delta);
		free(p);
	}
}

/* A node key changed in etcd (any replica, this one included). */
static void node_event(struct fleet *f, const struct etcd_watch_event *ev, const char *id)
{
	struct view_ent *v;
	Sluice__V1__NodeStatus *m = NULL;
	struct reg *g;

	pthread_mutex_lock(&f->mu);
	v = fleet_view_find(f, id);
	if (ev->type == ETCD_WATCH_DELETE) {
		if (v) {
			tdelete(v, &f->view, fleet_view_cmp);
			fleet_view_ent_free(v);
		}
		pthread_mutex_unlock(&f->mu);
		return;
	}
	if (!v) {
		v = calloc(1, sizeof(*v));
		if (!v || !(v->node_id = strdup(id)) || !tsearch(v, &f->view, fleet_view_cmp)) {
			if (v)
				free(v->node_id);
			free(v);
			pthread_mutex_unlock(&f->mu);
			return;
		}
	}
	free(v->val);
	v->val = malloc(ev->kv->value_len ? ev->kv->value_len : 1);
	v->len = v->val ? ev->kv->value_len : 0;
	if (v->val)
		memcpy(v->val, ev->kv->value, ev->kv->value_len);
	v->mod_rev = ev->kv->mod_revision;
	m = sluice__v1__node_status__unpack(NULL, ev->kv->value_len, ev->kv->value);
	g = fleet_reg_find(f, id);
	if (m && strcmp(m->control_plane, f->replica_id)) {
		struct rpc_buf *b = rpc_buf_new(ev->kv->value, ev->kv->value_len);

		/* another replica wrote it: the node moved there; a stream of
		 * ours for it is stale */
		if (g && g->conn && !g->superseded && ev->kv->mod_revision > g->mod_rev) {
			g->superseded = true;
			count(&f->c.reg_superseded, 1);
			rpc_stream_finish(g->conn->st, RPC_ABORTED,
					  "node connected to another control plane");
		}
		if (b) {
			fleet_nodes_send(f, b, m->node_id, m->ruleset);
			rpc_buf_unref(b);
		}
	}
	pthread_mutex_unlock(&f->mu);
	if (m)
		sluice__v1__node_status__free_unpacked(m, NULL);
}

static int64_t watch_cb(void *arg, const struct etcd_watch_event *ev)
{
	struct fleet *f = arg;
	size_t plen = strlen(f->prefix);
	const char *k;

	if (ev->type == ETCD_WATCH_COMPACTED) {
		int64_t rev;

		while (f->rev_pending) {
			struct pending_rs *p = f->rev_pending;

			f->rev_pending = p->next;
			policy_delta_free(p->delta);
			free(p);
		}
		/* events were lost: read everything again (the window keeps
		 * what it had; its snapshots are still right for their
		 * versions) */
		for (unsigned delay = RETRY_MIN_MS;; delay = delay * 2 > RETRY_MAX_MS ?
							    RETRY_MAX_MS : delay * 2) {
			rev = load_all(f);
			if (rev > 0 || __atomic_load_n(&f->stopping, __ATOMIC_RELAXED))
				break;
			usleep(delay * 1000);
		}
		count(&f->c.reloads, 1);
		log_info("etcd compacted past the watch, re-read", "revision=%" PRId64, rev);
		return rev > 0 ? rev : ev->compact_revision;
	}
	k = ev->kv->key;
	if (ev->kv->key_len > plen && !strncmp(k, f->prefix, plen)) {
		k += plen;
		if (!strncmp(k, "rulesets/", 9)) {
			char name[POLICY_RULESET_NAME_MAX_LEN + 1];
			const char *rest = k + 9, *slash = strchr(rest, '/');
			size_t nlen = slash ? (size_t)(slash - rest) : 0;
			struct pending_rs *p;

			if (slash && nlen && nlen <= POLICY_RULESET_NAME_MAX_LEN) {
				memcpy(name, rest, nlen);
				name[nlen] = 0;
				rest = slash + 1;
				if (!strcmp(rest, "head") && ev->type == ETCD_WATCH_PUT &&
				    (p = pending_get(f, name))) {
					Sluice__V1__VersionInfo *vi = sluice__v1__version_info__unpack(
						NULL, ev->kv->value_len, ev->kv->value);

					p->head = true;
					p->seq = ev->kv->version;
					p->commit_unix_ms = vi ? vi->time_unix_ms : now_unix_ms();
					if (vi)
						sluice__v1__version_info__free_unpacked(vi, NULL);
				} else if (!strncmp(rest, "res/", 4) && (p = pending_get(f, name))) {
					if (ev->type == ETCD_WATCH_PUT) {
						struct policy_res *res;

						if (policy_res_decode(ev->kv->value, ev->kv->value_len,
								      NULL, &res) == 0) {
							policy_delta_add_upsert(p->delta, res);
							policy_res_unref(res);
						}
					} else {
						char kname[32];
						const char *id = strchr(rest + 4, '/');
						size_t kl = id ? (size_t)(id - rest - 4) : 0;

						if (id && kl < sizeof(kname)) {
							memcpy(kname, rest + 4, kl);
							kname[kl] = 0;
							policy_delta_add_remove(
								p->delta, policy_kind_from_name(kname),
								id + 1);
						}
					}
				}
			}
		} else if (!strncmp(k, "nodes/", 6) && k[6]) {
			node_event(f, ev, k + 6);
		}
	}
	if (ev->last_in_revision)
		revision_done(f, ev->revision);
	return 0;
}

void *fleet_loader_main(void *arg)
{
	struct fleet *f = arg;
	unsigned delay = RETRY_MIN_MS;
	int64_t rev;
	char *end;
	size_t plen = strlen(f->prefix);
	int r;

	for (;;) {
		rev = load_all(f);
		if (rev > 0)
			break;
		log_warn("Failed to load rulesets and nodes from etcd, retrying", "error=%s",
			 strerror((int)-rev));
		for (unsigned waited = 0; waited < delay; waited += 50) {
			if (__atomic_load_n(&f->stopping, __ATOMIC_RELAXED))
				return NULL;
			usleep(50 * 1000);
		}
		delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
	}
	log_info("fleet loaded", "revision=%" PRId64, rev);
	end = malloc(plen);
	if (!end)
		return NULL;
	{
		struct etcd_config ec = { .endpoints = (const char *const *)f->endpoints,
					  .n_endpoints = f->n_endpoints,
					  .timeout_ms = f->etcd_timeout_ms };
		struct etcd_watch *w = NULL;

		r = etcd_watch_start(&ec, f->prefix, plen, end, etcd_prefix_end(f->prefix, plen, end),
				     rev + 1, false, watch_cb, f, &w);
		if (r < 0)
			log_error("Failed to start the etcd watch, nodes get no new versions",
				  "error=%s", strerror(-r));
		pthread_mutex_lock(&f->mu);
		f->watch = w;
		pthread_mutex_unlock(&f->mu);
	}
	free(end);
	return NULL;
}

/* ---- the registry thread ------------------------------------------------------- */

static void observe_latency(struct fleet *f, uint64_t t0)
{
	metrics_histogram_observe(&f->etcd_latency, (double)(mono_ms() - t0) / 1000.0);
}

void fleet_reg_drop(struct fleet *f, struct reg *g)
{
	tdelete(g, &f->regs, fleet_reg_cmp);
	free(g->node_id);
	free(g->val);
	free(g);
}

/* One registry key being written: a copy of what is written, taken under
 * f->mu, used with it released. */
struct reg_item {
	struct reg *g;
	char *key;
	uint8_t *val;
	size_t len;
	int64_t mod;
	bool takeover;
};

/* The outcome of one item once the transaction is back. */
static void reg_item_done(struct fleet *f, struct reg_item *it, bool gone, bool ok,
			  int64_t newrev, const struct etcd_range_result *now)
{
	struct reg *g = it->g;

	g->writing = false;
	if (ok) {
		g->mod_rev = newrev;
		g->takeover = false;
		g->written_ms = mono_ms();
		return;
	}
	if (it->takeover && !it->mod) {
		/* no compare of its own: another key of the batch failed */
		fleet_reg_queue(f, g);
		return;
	}
	if (!now || !now->n_kvs) {
		/* deleted by a lease's expiry, not taken by another replica:
		 * write it again if still absent (a gone mark has nothing to
		 * mark any more) */
		g->mod_rev = 0;
		if (!gone)
			fleet_reg_queue(f, g);
		return;
	}
	{
		const struct etcd_kv *kv = &now->kvs[0];
		Sluice__V1__NodeStatus *m = sluice__v1__node_status__unpack(NULL, kv->value_len,
									     kv->value);
		bool ours = m && !strcmp(m->control_plane, f->replica_id);

		if (m)
			sluice__v1__node_status__free_unpacked(m, NULL);
		if (ours) {
			/* our own write whose answer was lost: adopt its revision */
			g->mod_rev = kv->mod_revision;
			fleet_reg_queue(f, g);
			return;
		}
	}
	/* the node connected to another replica since our last write */
	count(&f->c.reg_superseded, 1);
	g->superseded = true;
	if (g->conn)
		rpc_stream_finish(g->conn->st, RPC_ABORTED, "node connected to another control plane");
}

/* Writes up to FLEET_REG_BATCH queued entries of one kind (live status
 * under the replica's lease, or gone marks under the gone lease) in one
 * transaction: each key compared with our last write's mod_revision (none
 * for a first write). When a compare fails, the failure branch reads every
 * key back to tell which one and why. f->mu held on entry and exit,
 * released around etcd. Returns false when etcd failed (all requeued). */
static bool reg_flush(struct fleet *f, bool gone)
{
	struct reg_item it[FLEET_REG_BATCH];
	struct etcd_compare cmp[FLEET_REG_BATCH];
	struct etcd_op put[FLEET_REG_BATCH], get[FLEET_REG_BATCH];
	struct etcd_txn_result tr;
	struct reg **pp = &f->dirty;
	size_t n = 0, n_cmp = 0;
	int64_t lease = gone ? f->gone_lease : f->lease;
	uint64_t t0;
	int r = 0;

	while (*pp && n < FLEET_REG_BATCH) {
		struct reg *g = *pp;

		if (g->gone != gone && g->dirty) {
			pp = &g->dirty_next;
			continue;
		}
		*pp = g->dirty_next;
		g->on_dirty = false;
		if (!g->dirty)
			continue;
		g->dirty = false;
		if (gone && (!g->mod_rev || g->superseded || f->stopping)) {
			/* never written, or not ours any more: nothing to mark */
			if (!g->conn && !g->writing)
				fleet_reg_drop(f, g);
			continue;
		}
		it[n].g = g;
		it[n].mod = g->mod_rev;
		it[n].takeover = g->takeover;
		it[n].len = g->len;
		it[n].val = malloc(g->len ? g->len : 1);
		if (asprintf(&it[n].key, "%snodes/%s", f->prefix, g->node_id) < 0)
			it[n].key = NULL;
		if (!it[n].val || !it[n].key) {
			free(it[n].val);
			free(it[n].key);
			fleet_reg_queue(f, g);
			break;
		}
		memcpy(it[n].val, g->val, g->len);
		g->writing = true;
		n++;
	}
	if (!n)
		return true;
	pthread_mutex_unlock(&f->mu);

	t0 = mono_ms();
	if (gone && (!lease || mono_ms() - f->gone_lease_ms > (uint64_t)f->gone_ttl_s * 500)) {
		/* one lease for the disconnects of half a TTL: their marks expire
		 * between gone_ttl/2 and gone_ttl after the node left */
		r = etcd_lease_grant(f->etcd, f->gone_ttl_s, &lease);
		if (r == 0) {
			f->gone_lease = lease;
			f->gone_lease_ms = mono_ms();
		}
	}
	if (r == 0) {
		memset(cmp, 0, sizeof(cmp));
		memset(put, 0, sizeof(put));
		memset(get, 0, sizeof(get));
		for (size_t i = 0; i < n; i++) {
			size_t kl = strlen(it[i].key);

			/* mod 0 and no takeover: CREATE == 0 means "absent" */
			if (it[i].mod || !it[i].takeover) {
				cmp[n_cmp] = (struct etcd_compare){
					.key = it[i].key, .key_len = kl,
					.target = it[i].mod ? ETCD_CMP_MOD : ETCD_CMP_CREATE,
					.result = ETCD_CMP_EQUAL, .number = it[i].mod };
				n_cmp++;
			}
			put[i] = (struct etcd_op){ .type = ETCD_OP_PUT, .key = it[i].key,
						   .key_len = kl, .value = it[i].val,
						   .value_len = it[i].len, .lease = lease };
			get[i] = (struct etcd_op){ .type = ETCD_OP_RANGE, .key = it[i].key,
						   .key_len = kl };
		}
		r = etcd_txn(f->etcd, &(struct etcd_txn){ .compares = cmp, .n_compares = n_cmp,
							  .success = put, .n_success = n,
							  .failure = get, .n_failure = n },
			     &tr);
		observe_latency(f, t0);
	}

	pthread_mutex_lock(&f->mu);
	count(&f->c.reg_writes, 1);
	if (r < 0) {
		count(&f->c.reg_write_errors, 1);
		if (r == -ENOENT && !gone)
			f->lease = 0;         /* lease expired: the thread grants a new one */
		if (r == -ENOENT && gone)
			f->gone_lease = 0;
		for (size_t i = 0; i < n; i++) {
			it[i].g->writing = false;
			fleet_reg_queue(f, it[i].g);
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			bool have = !tr.succeeded && i < tr.n_responses;

			reg_item_done(f, &it[i], gone, tr.succeeded, tr.revision,
				      have ? &tr.responses[i].range : NULL);
			if (gone && !it[i].g->dirty && !it[i].g->on_dirty && !it[i].g->conn)
				fleet_reg_drop(f, it[i].g);
		}
		etcd_txn_result_done(&tr);
	}
	for (size_t i = 0; i < n; i++) {
		free(it[i].key);
		free(it[i].val);
	}
	return r == 0;
}

void *fleet_reg_main(void *arg)
{
	struct fleet *f = arg;
	uint64_t backoff_until = 0;

	pthread_mutex_lock(&f->mu);
	while (!f->stopping) {
		uint64_t now = mono_ms();
		bool fail = false;

		if (now < backoff_until) {
			cond_wait_ms(&f->cond, &f->mu, backoff_until - now);
			continue;
		}
		if (!f->lease) {
			int64_t lease;
			uint64_t t0 = mono_ms();
			int r;

			pthread_mutex_unlock(&f->mu);
			r = etcd_lease_grant(f->etcd, f->lease_ttl_s, &lease);
			observe_latency(f, t0);
			pthread_mutex_lock(&f->mu);
			if (r < 0) {
				backoff_until = mono_ms() + 500;
				continue;
			}
			f->lease = lease;
			f->lease_renewed_ms = mono_ms();
			/* keys under a lost lease are gone: write every node again */
			for (struct ruleset *rs = f->rulesets; rs; rs = rs->next)
				for (struct conn *c = rs->conns; c; c = c->rs_next)
					if (c->reg && !c->reg->superseded) {
						c->reg->mod_rev = 0;
						fleet_reg_queue(f, c->reg);
					}
		} else if (now - f->lease_renewed_ms >= (uint64_t)f->lease_ttl_s * 1000 / 3) {
			int64_t lease = f->lease, ttl;
			uint64_t t0 = mono_ms();
			int r;

			pthread_mutex_unlock(&f->mu);
			r = etcd_lease_keepalive(f->etcd, lease, &ttl);
			observe_latency(f, t0);
			pthread_mutex_lock(&f->mu);
			if (r == 0 && ttl > 0)
				f->lease_renewed_ms = mono_ms();
			else if (r == -ENOENT || (r == 0 && ttl <= 0))
				f->lease = 0;
			else
				backoff_until = mono_ms() + 500;
			continue;
		}
		for (struct watcher *w = f->node_watchers; w; w = w->next)
			fleet_watcher_flush(w);
		/* retry pushes a full stream queue refused, refresh last_seen */
		for (struct ruleset *rs = f->rulesets; rs; rs = rs->next)
			for (struct conn *c = rs->conns; c; c = c->rs_next) {
				if (c->want_push)
					fleet_conn_push(c);
				if (c->reg && !c->reg->dirty &&
				    now - c->reg->written_ms >= FLEET_SEEN_REFRESH_MS &&
				    c->reg->written_ms)
					fleet_conn_changed(c, true, true);
			}
		while (f->dirty && !f->stopping && f->lease && !fail) {
			bool any_gone = false;

			for (struct reg *g = f->dirty; g && !any_gone; g = g->dirty_next)
				any_gone = g->gone;
			fail = !reg_flush(f, false) || (any_gone && !reg_flush(f, true));
		}
		if (fail) {
			backoff_until = mono_ms() + 500;
			continue;
		}
		cond_wait_ms(&f->cond, &f->mu, TICK_MS);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}
