/* bpfload.c - loads bpf/tc_ingress.bpf.c, attaches it at clsact ingress and
 * keeps its maps equal to the latest synced snapshot.
 * Invariant: l->prev is the snapshot the maps were last made equal to (NULL
 * before the first sync or after a failed one, which makes the next sync a
 * full reconcile); incremental syncs compare prev with next resource by
 * resource, so the maps are written only where the two differ.
 * Invariant (deny_lock held for every deny trie write): deny_slots counts,
 * for each 16-bit slot of each family, the trie entries that cover at least
 * one address of the slot, and deny_filter's bit is set exactly when that
 * count is not 0 -- set before an entry goes in, cleared after the last one
 * covering the slot is gone, so the program never skips a live entry.
 */
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>

#include "bpfload.h"
#include "client_abi.h"
#include "log.h"
#include "policy.h"
#include "snapshot.h"
#include "tc_ingress.skel.h"

_Static_assert(BPFLOAD_MAX_HTTP_PORTS == CLIENT_HTTP_PORTS_MAX, "http ports");
_Static_assert(CLIENT_REASON_MAX < 32, "bpfload_event_counts.by_reason too small");

#define BPF_FS_MAGIC_NUMBER 0xcafe4a11
#define BPF_FS_ROOT "/sys/fs/bpf"
/* Our filter's slot in the clsact ingress chain; detach removes exactly it. */
#define BPFLOAD_TC_HANDLE 0x5c
#define BPFLOAD_TC_PRIORITY 0x5c

/* One loaded program and what it has written. Owned by the node; lives
 * until bpfload_free(). */
struct bpfload {
	struct tc_ingress *skel;
	int ifindex;
	struct bpf_tc_hook hook;
	struct bpf_tc_opts opts;
	bool attached;
	bool hook_created;   /* attach made the clsact qdisc: detach removes it */
	struct client_global_config global; /* as last written */
	struct snapshot *prev; /* maps equal this one; NULL: reconcile next */
	size_t kernel_clients; /* running totals for bpfload_sync_stats */
	size_t skipped_keys;
	struct ring_buffer *rb;
	bpfload_event_cb cb;
	void *cb_arg;
	struct bpfload_event_counts ev;
	/* Every deny trie write (sync, escalation, sweep: any thread) and the
	 * pre-filter bookkeeping below. */
	pthread_mutex_t deny_lock;
	uint32_t *deny_slots;  /* [family][slot]: entries covering the slot */
	uint64_t filter[CLIENT_DENY_FILTER_WORDS]; /* deny_filter as written */
};

/* Index of deny_slots' families and of the tries. */
enum { DENY_V4 = 0, DENY_V6 = 1 };

__attribute__((format(printf, 2, 0))) static int libbpf_to_log(enum libbpf_print_level level,
							       const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	if (level == LIBBPF_DEBUG || log_get_level() > LOG_LEVEL_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	log_debug("libbpf", "detail=\"%s\"", line);
	return 0;
}

__attribute__((format(printf, 2, 3))) static void set_err(const struct bpfload_config *cfg,
							  const char *fmt, ...)
{
	va_list ap;

	if (!cfg->errmsg || !cfg->errmsg_len)
		return;
	va_start(ap, fmt);
	vsnprintf(cfg->errmsg, cfg->errmsg_len, fmt, ap);
	va_end(ap);
}

static void set_header(struct client_global_config *g, const char *name)
{
	size_t len = strlen(name);

	memset(g->client_id_header, 0, sizeof(g->client_id_header));
	/* Too long: length 0 makes the kernel look for no header at all. */
	if (len == 0 || len > CLIENT_HEADER_NAME_MAX_LEN) {
		g->client_id_header_len = 0;
		return;
	}
	memcpy(g->client_id_header, name, len);
	g->client_id_header_len = (uint8_t)len;
}

static int write_global(struct bpfload *l, const struct client_global_config *g)
{
	uint32_t zero = 0;

	if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.global_config), &zero, g, BPF_ANY) < 0)
		return -errno;
	l->global = *g;
	return 0;
}

/* Mounts bpffs at /sys/fs/bpf when nothing is there, then makes `dir`. */
static int prepare_pin_dir(const struct bpfload_config *cfg)
{
	struct statfs sfs;

	if (strncmp(cfg->pin_path, BPF_FS_ROOT "/", strlen(BPF_FS_ROOT) + 1) == 0 &&
	    (statfs(BPF_FS_ROOT, &sfs) < 0 || sfs.f_type != BPF_FS_MAGIC_NUMBER)) {
		if (mount("bpf", BPF_FS_ROOT, "bpf", 0, NULL) < 0) {
			int err = -errno;

			set_err(cfg, "cannot mount bpffs at " BPF_FS_ROOT ": %s", strerror(-err));
			return err;
		}
	}
	if (mkdir(cfg->pin_path, 0700) < 0 && errno != EEXIST) {
		int err = -errno;

		set_err(cfg, "cannot create pin directory '%s': %s", cfg->pin_path, strerror(-err));
		return err;
	}
	if (statfs(cfg->pin_path, &sfs) < 0 || sfs.f_type != BPF_FS_MAGIC_NUMBER) {
		set_err(cfg, "pin directory '%s' is not on bpffs", cfg->pin_path);
		return -EINVAL;
	}
	return 0;
}

static int set_pins(struct tc_ingress *skel, const char *dir)
{
	struct bpf_map *maps[] = {
		skel->maps.client_config, skel->maps.rate_buckets, skel->maps.client_stats,
		skel->maps.global_config, skel->maps.client_lookup, skel->maps.deny_v4,
		skel->maps.deny_v6,       skel->maps.reason_counters, skel->maps.deny_filter,
	};
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		int n = snprintf(path, sizeof(path), "%s/%s", dir, bpf_map__name(maps[i]));
		int err;

		if (n < 0 || (size_t)n >= sizeof(path))
			return -ENAMETOOLONG;
		err = bpf_map__set_pin_path(maps[i], path);
		if (err)
			return err;
	}
	return 0;
}

static int on_event(void *ctx, void *data, size_t size)
{
	struct bpfload *l = ctx;
	const struct client_event *ev = data;

	if (size < sizeof(*ev))
		return 0;
	l->ev.events++;
	if (ev->reason < sizeof(l->ev.by_reason) / sizeof(l->ev.by_reason[0]))
		l->ev.by_reason[ev->reason]++;
	if (l->cb)
		l->cb(l->cb_arg, ev);
	return 0;
}

/* ---- deny tries and their pre-filter --------------------------------- */

static int deny_fd(const struct bpfload *l, int fam)
{
	return bpf_map__fd(fam == DENY_V4 ? l->skel->maps.deny_v4 : l->skel->maps.deny_v6);
}

/* The slots [*first, *first + *n) a trie key (either family: prefixlen,
 * then the address) covers: its own slot when the prefix has 16 bits or
 * more, else every slot under the prefix. */
static void key_slots(const void *key, uint32_t *first, uint32_t *n)
{
	uint32_t plen;
	const uint8_t *addr = (const uint8_t *)key + sizeof(plen);
	uint32_t slot;

	memcpy(&plen, key, sizeof(plen));
	slot = (uint32_t)addr[0] << 8 | addr[1];
	if (plen >= CLIENT_DENY_FILTER_BITS) {
		*first = slot;
		*n = 1;
		return;
	}
	*n = 1u << (CLIENT_DENY_FILTER_BITS - plen);
	*first = slot & ~(*n - 1);
}

/* Writes the filter words holding slots [first, first + n) of `fam` that
 * differ from what deny_slots says (all of them with `force`). 0 or -errno;
 * a word that failed keeps its old value in l->filter and is retried by the
 * next write that touches it. */
static int filter_flush(struct bpfload *l, int fam, uint32_t first, uint32_t n, bool force)
{
	const uint32_t *count = l->deny_slots + (size_t)fam * CLIENT_DENY_FILTER_SLOTS;
	uint32_t base = fam == DENY_V4 ? CLIENT_DENY_FILTER_V4_BASE : CLIENT_DENY_FILTER_V6_BASE;
	int fd = bpf_map__fd(l->skel->maps.deny_filter);

	for (uint32_t w = first / 64; w <= (first + n - 1) / 64; w++) {
		uint32_t idx = base + w;
		uint64_t bits = 0;

		for (uint32_t b = 0; b < 64; b++)
			if (count[w * 64 + b])
				bits |= 1ull << b;
		if (!force && bits == l->filter[idx])
			continue;
		if (bpf_map_update_elem(fd, &idx, &bits, BPF_ANY) < 0)
			return -errno;
		l->filter[idx] = bits;
	}
	return 0;
}

/* Counts one entry more (+1) or less (-1) on the slots `key` covers, then
 * writes the words that changed. */
static int filter_adjust(struct bpfload *l, int fam, const void *key, int delta)
{
	uint32_t *count = l->deny_slots + (size_t)fam * CLIENT_DENY_FILTER_SLOTS;
	uint32_t first, n;

	key_slots(key, &first, &n);
	for (uint32_t i = 0; i < n; i++)
		count[first + i] += (uint32_t)delta;
	return filter_flush(l, fam, first, n, false);
}

/* Counts the entries the tries already hold (pinned maps from an earlier
 * loader) and writes the whole filter from them. Nobody else writes yet. */
static int filter_rebuild(struct bpfload *l)
{
	uint8_t key[sizeof(struct client_deny_v6_key)], next[sizeof(key)];
	int err;

	memset(l->deny_slots, 0, 2 * CLIENT_DENY_FILTER_SLOTS * sizeof(*l->deny_slots));
	for (int fam = DENY_V4; fam <= DENY_V6; fam++) {
		size_t key_size = fam == DENY_V4 ? sizeof(struct client_deny_v4_key)
						 : sizeof(struct client_deny_v6_key);
		uint32_t *count = l->deny_slots + (size_t)fam * CLIENT_DENY_FILTER_SLOTS;
		int fd = deny_fd(l, fam);
		void *prev = NULL;

		while (bpf_map_get_next_key(fd, prev, next) == 0) {
			uint32_t first, n;

			memcpy(key, next, key_size);
			prev = key;
			key_slots(key, &first, &n);
			for (uint32_t i = 0; i < n; i++)
				count[first + i]++;
		}
		err = filter_flush(l, fam, 0, CLIENT_DENY_FILTER_SLOTS, true);
		if (err)
			return err;
	}
	return 0;
}

/* Puts `key` into the trie of `fam` with expires_ns (0: a policy entry,
 * which replaces whatever is there; else an escalation, which never
 * replaces a policy entry: -EEXIST). The filter bits go first. deny_lock
 * held. 0 or -errno. */
static int deny_put(struct bpfload *l, int fam, const void *key, uint64_t expires_ns)
{
	const struct client_deny_value v = {.expires_ns = expires_ns};
	struct client_deny_value cur;
	int fd = deny_fd(l, fam), err;

	err = filter_adjust(l, fam, key, +1);
	if (!err && bpf_map_update_elem(fd, key, &v, BPF_NOEXIST) == 0)
		return 0;
	if (!err)
		err = -errno;
	/* Not inserted: uncount it (the bits stay while the existing entry
	 * counts for them). */
	filter_adjust(l, fam, key, -1);
	if (err != -EEXIST)
		return err;
	/* The exact prefix is there, so an LPM lookup of the key finds that
	 * entry (no longer prefix can match it). */
	if (expires_ns && bpf_map_lookup_elem(fd, key, &cur) == 0 && cur.expires_ns == 0)
		return -EEXIST;
	if (bpf_map_update_elem(fd, key, &v, BPF_EXIST) < 0)
		return -errno;
	return 0;
}

/* Deletes `key` from the trie of `fam`, then clears the filter bits that
 * nothing covers any more. deny_lock held. 0 (also when it was not there)
 * or -errno. */
static int deny_del(struct bpfload *l, int fam, const void *key)
{
	if (bpf_map_delete_elem(deny_fd(l, fam), key) < 0)
		return errno == ENOENT ? 0 : -errno;
	return filter_adjust(l, fam, key, -1);
}

int bpfload_new(const struct bpfload_config *cfg, struct bpfload **ret)
{
	struct client_global_config g;
	struct bpfload *l;
	uint32_t zero = 0;
	int ifindex, err;

	if (!cfg || !ret || cfg->log_level > CLIENT_LOG_DEBUG)
		return -EINVAL;
	if (cfg->ifname && cfg->ifname[0]) {
		ifindex = (int)if_nametoindex(cfg->ifname);
		if (!ifindex) {
			set_err(cfg, "no interface '%s'", cfg->ifname);
			return -ENODEV;
		}
	} else {
		char name[IF_NAMESIZE];

		ifindex = cfg->ifindex;
		if (ifindex <= 0 || !if_indextoname((unsigned)ifindex, name)) {
			set_err(cfg, "no interface with index %d", ifindex);
			return -ENODEV;
		}
	}
	if (cfg->pin_path) {
		err = prepare_pin_dir(cfg);
		if (err)
			return err;
	}

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->deny_slots = calloc(2 * CLIENT_DENY_FILTER_SLOTS, sizeof(*l->deny_slots));
	if (!l->deny_slots) {
		free(l);
		return -ENOMEM;
	}
	pthread_mutex_init(&l->deny_lock, NULL);
	l->ifindex = ifindex;
	libbpf_set_print(libbpf_to_log);

	l->skel = tc_ingress__open();
	if (!l->skel) {
		err = errno ? -errno : -ENOMEM;
		set_err(cfg, "cannot open the TC program: %s", strerror(-err));
		goto out_free;
	}
	if (cfg->pin_path) {
		err = set_pins(l->skel, cfg->pin_path);
		if (err) {
			set_err(cfg, "cannot pin under '%s': %s", cfg->pin_path, strerror(-err));
			goto out_destroy_skel;
		}
	}
	err = tc_ingress__load(l->skel);
	if (err) {
		if (err == -EPERM || err == -EACCES)
			set_err(cfg, "loading the TC program needs root (CAP_BPF, CAP_PERFMON and "
				     "CAP_NET_ADMIN): %s", strerror(-err));
		else
			set_err(cfg, "cannot load the TC program: %s", strerror(-err));
		goto out_destroy_skel;
	}

	/* A pinned map from an earlier loader keeps its enabled switch and
	 * default limit until the first sync, so enforcement goes on. */
	if (bpf_map_lookup_elem(bpf_map__fd(l->skel->maps.global_config), &zero, &g) < 0) {
		err = -errno;
		goto out_destroy_skel;
	}
	memcpy(g.http_ports, cfg->http_ports, sizeof(g.http_ports));
	g.log_level = cfg->log_level;
	g.max_clients = CLIENT_MAX_CLIENTS;
	set_header(&g, cfg->client_id_header ? cfg->client_id_header
					     : POLICY_DEFAULT_CLIENT_ID_HEADER);
	err = write_global(l, &g);
	if (err) {
		set_err(cfg, "cannot write the global config map: %s", strerror(-err));
		goto out_destroy_skel;
	}

	/* Pinned tries keep their entries: the filter must cover them before
	 * the program is attached. */
	err = filter_rebuild(l);
	if (err) {
		set_err(cfg, "cannot write the deny filter map: %s", strerror(-err));
		goto out_destroy_skel;
	}

	l->rb = ring_buffer__new(bpf_map__fd(l->skel->maps.events), on_event, l, NULL);
	if (!l->rb) {
		err = errno ? -errno : -ENOMEM;
		set_err(cfg, "cannot open the event ring: %s", strerror(-err));
		goto out_destroy_skel;
	}
	*ret = l;
	return 0;

out_destroy_skel:
	tc_ingress__destroy(l->skel);
out_free:
	pthread_mutex_destroy(&l->deny_lock);
	free(l->deny_slots);
	free(l);
	return err;
}

void bpfload_free(struct bpfload *l)
{
	if (!l)
		return;
	bpfload_detach(l);
	ring_buffer__free(l->rb);
	tc_ingress__destroy(l->skel);
	snapshot_unref(l->prev);
	pthread_mutex_destroy(&l->deny_lock);
	free(l->deny_slots);
	free(l);
}

/* ---- attach ---------------------------------------------------------- */

int bpfload_attach(struct bpfload *l)
{
	int err;

	if (l->attached)
		return -EALREADY;
	memset(&l->hook, 0, sizeof(l->hook));
	l->hook.sz = sizeof(l->hook);
	l->hook.ifindex = l->ifindex;
	l->hook.attach_point = BPF_TC_INGRESS;
	err = bpf_tc_hook_create(&l->hook);
	if (err && err != -EEXIST)
		return err;
	/* -EEXIST: someone else's clsact qdisc; it outlives us. */
	l->hook_created = (err == 0);

	memset(&l->opts, 0, sizeof(l->opts));
	l->opts.sz = sizeof(l->opts);
	l->opts.handle = BPFLOAD_TC_HANDLE;
	l->opts.priority = BPFLOAD_TC_PRIORITY;
	l->opts.prog_fd = bpf_program__fd(l->skel->progs.tc_ingress);
	err = bpf_tc_attach(&l->hook, &l->opts);
	if (err == -EEXIST) {
		/* Our slot, left by a loader that died: take it over. */
		l->opts.flags = BPF_TC_F_REPLACE;
		l->opts.prog_id = 0;
		err = bpf_tc_attach(&l->hook, &l->opts);
	}
	if (err)
		goto out_destroy_hook;
	l->attached = true;
	return 0;

out_destroy_hook:
	if (l->hook_created) {
		l->hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		bpf_tc_hook_destroy(&l->hook);
		l->hook_created = false;
	}
	return err;
}

int bpfload_detach(struct bpfload *l)
{
	int err = 0;

	if (!l->attached)
		return 0;
	/* libbpf refuses a detach that names the program: the handle and
	 * priority alone identify our filter. */
	l->opts.flags = 0;
	l->opts.prog_fd = 0;
	l->opts.prog_id = 0;
	err = bpf_tc_detach(&l->hook, &l->opts);
	if (err && err != -ENOENT)
		return err;
	err = 0;
	if (l->hook_created) {
		/* Both points: that is how libbpf deletes the clsact qdisc. */
		l->hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		err = bpf_tc_hook_destroy(&l->hook);
		if (err == -ENOENT)
			err = 0;
		l->hook.attach_point = BPF_TC_INGRESS;
		l->hook_created = false;
	}
	l->attached = false;
	return err;
}

/* ---- what a snapshot asks of the kernel ------------------------------ */

/* A limit the kernel can apply to every request of a client exactly as the
 * proxy would; anything narrower or softer stays proxy-only. */
static bool rl_kernel(const struct policy_res *rl, const struct policy_res *client)
{
	const struct policy_rate_limit *r;

	if (!rl)
		return false;
	r = &rl->u.rate_limit;
	if (r->enforce != POLICY_ENFORCE_KERNEL && r->enforce != POLICY_ENFORCE_BOTH)
		return false;
	if (r->action != POLICY_ACTION_REJECT)
		return false;
	if (r->algorithm != POLICY_ALG_TOKEN_BUCKET && r->algorithm != POLICY_ALG_LEAKY_BUCKET)
		return false;
	if (r->sel.has_source || r->sel.host || r->sel.path_prefix || r->sel.method)
		return false;
	if (r->sel.client.id &&
	    (!client || r->sel.client.id_len != client->id_len ||
	     memcmp(r->sel.client.id, client->id, client->id_len) != 0))
		return false;
	return true;
}

static uint64_t rate_fp32(const struct policy_rate_limit *r)
{
	unsigned __int128 v = ((unsigned __int128)r->rate << CLIENT_RATE_FP_SHIFT) * 1000000000u;

	v /= r->unit_ns;
	return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

static const struct policy_res *default_rl(const struct snapshot *s)
{
	const struct policy_settings *st = snapshot_settings(s);

	if (!st->default_rate_limit.id)
		return NULL;
	return snapshot_get_ref(s, POLICY_KIND_RATE_LIMIT, &st->default_rate_limit);
}

/* The client_config entry `c` gets from `s`; false when it gets none. */
static bool client_entry(const struct snapshot *s, const struct policy_res *c,
			 struct client_config *out)
{
	const struct policy_client *pc = &c->u.client;
	const struct policy_res *rl;

	memset(out, 0, sizeof(*out));
	out->priority = pc->priority;
	out->enabled = !pc->disabled;
	if (pc->rate_limit.id) {
		rl = snapshot_get_ref(s, POLICY_KIND_RATE_LIMIT, &pc->rate_limit);
		if (!rl_kernel(rl, c))
			return false;
		out->rate_per_sec_fp32 = rate_fp32(&rl->u.rate_limit);
		out->burst = rl->u.rate_limit.burst > UINT32_MAX ? UINT32_MAX
								 : (uint32_t)rl->u.rate_limit.burst;
	} else {
		/* Rate 0: the kernel applies global_config's default. */
		rl = default_rl(s);
		if (!rl_kernel(rl, NULL))
			return false;
	}
	out->algorithm = (uint8_t)rl->u.rate_limit.algorithm;
	return true;
}

static void global_entry(const struct snapshot *s, const struct client_global_config *cur,
			 struct client_global_config *out)
{
	const struct policy_settings *st = snapshot_settings(s);
	const struct policy_res *rl = default_rl(s);

	*out = *cur;
	out->enabled = !st->disabled;
	out->max_clients = CLIENT_MAX_CLIENTS;
	out->default_rate_per_sec_fp32 = 0;
	out->default_burst = 0;
	if (rl_kernel(rl, NULL)) {
		out->default_rate_per_sec_fp32 = rate_fp32(&rl->u.rate_limit);
		out->default_burst = rl->u.rate_limit.burst > UINT32_MAX
					     ? UINT32_MAX
					     : (uint32_t)rl->u.rate_limit.burst;
	}
	set_header(out, st->client_id_header ? st->client_id_header
					     : POLICY_DEFAULT_CLIENT_ID_HEADER);
}

/* ---- deny sets ------------------------------------------------------- */

/* The global deny prefixes of one snapshot, as sorted unique map keys. */
struct deny_set {
	struct client_deny_v4_key *v4;
	size_t n4, cap4;
	struct client_deny_v6_key *v6;
	size_t n6, cap6;
};

static int cmp_v4(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct client_deny_v4_key));
}

static int cmp_v6(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct client_deny_v6_key));
}

static void deny_set_done(struct deny_set *d)
{
	free(d->v4);
	free(d->v6);
	memset(d, 0, sizeof(*d));
}

static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
	void *np;
	size_t ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 64;
	np = realloc(*p, ncap * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Also the key form bpfload_deny_add() writes. 0, or -EINVAL. */
static int deny_key(const struct cidr *c, struct client_deny_v4_key *k4,
		    struct client_deny_v6_key *k6, bool *is_v4)
{
	memset(k4, 0, sizeof(*k4));
	memset(k6, 0, sizeof(*k6));
	if (c->family == AF_INET && c->prefix_len <= 32) {
		k4->prefixlen = c->prefix_len;
		memcpy(k4->addr, c->addr, 4);
		*is_v4 = true;
		return 0;
	}
	if (c->family != AF_INET6 || c->prefix_len > 128)
		return -EINVAL;
	/* The program sees IPv4 packets as IPv4: a ::ffff:a.b.c.d/96+ prefix
	 * must go into the IPv4 trie to match anything. */
	if (c->prefix_len >= 96 && memcmp(c->addr, v4_mapped, 12) == 0) {
		k4->prefixlen = c->prefix_len - 96u;
		memcpy(k4->addr, c->addr + 12, 4);
		*is_v4 = true;
		return 0;
	}
	k6->prefixlen = c->prefix_len;
	memcpy(k6->addr, c->addr, 16);
	*is_v4 = false;
	return 0;
}

static int deny_set_build(const struct snapshot *s, struct deny_set *d)
{
	const struct policy_settings *st;
	int err;

	memset(d, 0, sizeof(*d));
	if (!s)
		return 0;
	st = snapshot_settings(s);
	for (size_t i = 0; i < st->n_access_lists; i++) {
		const struct policy_res *al =
			snapshot_get_ref(s, POLICY_KIND_ACCESS_LIST, &st->access_lists[i]);

		if (!al)
			continue;
		for (size_t j = 0; j < al->u.access_list.n_deny; j++) {
			struct client_deny_v4_key k4;
			struct client_deny_v6_key k6;
			bool is_v4;

			if (deny_key(&al->u.access_list.deny[j], &k4, &k6, &is_v4))
				continue;
			if (is_v4) {
				err = grow((void **)&d->v4, &d->cap4, d->n4, sizeof(k4));
				if (err)
					goto out_done;
				d->v4[d->n4++] = k4;
			} else {
				err = grow((void **)&d->v6, &d->cap6, d->n6, sizeof(k6));
				if (err)
					goto out_done;
				d->v6[d->n6++] = k6;
			}
		}
	}
	if (d->n4)
		qsort(d->v4, d->n4, sizeof(*d->v4), cmp_v4);
	if (d->n6)
		qsort(d->v6, d->n6, sizeof(*d->v6), cmp_v6);
	/* The same prefix in two lists is one entry. */
	for (size_t i = 1, o = d->n4 ? 1 : 0; i <= d->n4; i++) {
		if (i == d->n4) {
			d->n4 = o;
			break;
		}
		if (cmp_v4(&d->v4[i], &d->v4[o - 1]))
			d->v4[o++] = d->v4[i];
	}
	for (size_t i = 1, o = d->n6 ? 1 : 0; i <= d->n6; i++) {
		if (i == d->n6) {
			d->n6 = o;
			break;
		}
		if (cmp_v6(&d->v6[i], &d->v6[o - 1]))
			d->v6[o++] = d->v6[i];
	}
	return 0;

out_done:
	deny_set_done(d);
	return err;
}

/* Writes what is in `next` and not in `old`, deletes the reverse; one trie.
 * Both arrays are sorted and unique. deny_lock held. */
static int deny_apply(struct bpfload *l, int fam, const void *old, size_t n_old, const void *next,
		      size_t n_next, size_t key_size, struct bpfload_sync_stats *st)
{
	const uint8_t *o = old, *n = next;
	size_t i = 0, j = 0;
	int err;

	while (i < n_old || j < n_next) {
		int c;

		if (i == n_old)
			c = 1;
		else if (j == n_next)
			c = -1;
		else
			c = memcmp(o + i * key_size, n + j * key_size, key_size);
		if (c < 0) {
			err = deny_del(l, fam, o + i * key_size);
			if (err)
				return err;
			st->deletes++;
			i++;
		} else if (c > 0) {
			err = deny_put(l, fam, n + j * key_size, 0);
			if (err)
				return err;
			st->updates++;
			j++;
		} else {
			i++;
			j++;
		}
	}
	return 0;
}

/* Deletes every key of the map that is not in the sorted `keep` array.
 * deny_fam >= 0: fd is that family's deny trie (deny_lock held): entries
 * that expire (escalations) are kept, and deletes go through deny_del(). */
static int prune_map(struct bpfload *l, int fd, size_t key_size, const void *keep, size_t n_keep,
		     int (*cmp)(const void *, const void *), int deny_fam,
		     struct bpfload_sync_stats *st)
{
	uint8_t key[64], next[64];
	uint8_t *doomed = NULL;
	size_t n_doomed = 0, cap = 0;
	void *prev = NULL;
	int err = 0;

	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		memcpy(key, next, key_size);
		prev = key;
		if (n_keep && bsearch(key, keep, n_keep, key_size, cmp))
			continue;
		if (deny_fam >= 0) {
			struct client_deny_value v;

			if (bpf_map_lookup_elem(fd, key, &v) == 0 && v.expires_ns)
				continue;
		}
		err = grow((void **)&doomed, &cap, n_doomed, key_size);
		if (err)
			goto out_free;
		memcpy(doomed + n_doomed * key_size, key, key_size);
		n_doomed++;
	}
	for (size_t i = 0; i < n_doomed; i++) {
		if (deny_fam >= 0)
			err = deny_del(l, deny_fam, doomed + i * key_size);
		else if (bpf_map_delete_elem(fd, doomed + i * key_size) < 0 && errno != ENOENT)
			err = -errno;
		if (err)
			goto out_free;
		st->deletes++;
	}
out_free:
	free(doomed);
	return err;
}

/* ---- sync ------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* A grow-only list of u64 (client ids or key hashes). Lives for one sync. */
struct u64_list {
	uint64_t *v;
	size_t n, cap;
};

static int u64_push(struct u64_list *u, uint64_t x)
{
	int err = grow((void **)&u->v, &u->cap, u->n, sizeof(uint64_t));

	if (err)
		return err;
	u->v[u->n++] = x;
	return 0;
}

/* State of a full reconcile: the keys the maps must keep. */
struct full_ctx {
	struct bpfload *l;
	const struct snapshot *s;
	struct bpfload_sync_stats *st;
	struct u64_list ids, hashes;
	int err;
};

static int full_client(void *arg, const struct policy_res *r)
{
	struct full_ctx *f = arg;
	const struct policy_client *pc;
	struct client_config cc;
	int cfg_fd, lk_fd;

	if (r->kind != POLICY_KIND_CLIENT)
		return 0;
	if (!client_entry(f->s, r, &cc))
		return 0;
	cfg_fd = bpf_map__fd(f->l->skel->maps.client_config);
	lk_fd = bpf_map__fd(f->l->skel->maps.client_lookup);
	pc = &r->u.client;
	for (size_t i = 0; i < pc->n_keys; i++) {
		if (strlen(pc->keys[i]) > CLIENT_KEY_MAX_BYTES) {
			f->st->skipped_keys++;
			continue;
		}
		if (bpf_map_update_elem(lk_fd, &pc->key_hashes[i], &r->key_hash, BPF_ANY) < 0)
			return f->err = -errno;
		f->st->updates++;
		if ((f->err = u64_push(&f->hashes, pc->key_hashes[i])))
			return f->err;
	}
	if (bpf_map_update_elem(cfg_fd, &r->key_hash, &cc, BPF_ANY) < 0)
		return f->err = -errno;
	f->st->updates++;
	f->st->kernel_clients++;
	if ((f->err = u64_push(&f->ids, r->key_hash)))
		return f->err;
	return 0;
}

static int sync_full(struct bpfload *l, const struct snapshot *s, struct bpfload_sync_stats *st)
{
	struct full_ctx f = {.l = l, .s = s, .st = st};
	struct deny_set d;
	int err;

	snapshot_foreach(s, full_client, &f);
	err = f.err;
	if (err)
		goto out_free;
	/* qsort's array must not be NULL, even for 0 elements (UBSan). */
	if (f.ids.n)
		qsort(f.ids.v, f.ids.n, sizeof(uint64_t), cmp_u64);
	if (f.hashes.n)
		qsort(f.hashes.v, f.hashes.n, sizeof(uint64_t), cmp_u64);
	err = prune_map(l, bpf_map__fd(l->skel->maps.client_config), sizeof(uint64_t), f.ids.v,
			f.ids.n, cmp_u64, -1, st);
	if (!err)
		err = prune_map(l, bpf_map__fd(l->skel->maps.client_lookup), sizeof(uint64_t),
				f.hashes.v, f.hashes.n, cmp_u64, -1, st);
	if (err)
		goto out_free;

	err = deny_set_build(s, &d);
	if (err)
		goto out_free;
	pthread_mutex_lock(&l->deny_lock);
	err = deny_apply(l, DENY_V4, NULL, 0, d.v4, d.n4, sizeof(*d.v4), st);
	if (!err)
		err = deny_apply(l, DENY_V6, NULL, 0, d.v6, d.n6, sizeof(*d.v6), st);
	if (!err)
		err = prune_map(l, deny_fd(l, DENY_V4), sizeof(*d.v4), d.v4, d.n4, cmp_v4, DENY_V4,
				st);
	if (!err)
		err = prune_map(l, deny_fd(l, DENY_V6), sizeof(*d.v6), d.v6, d.n6, cmp_v6, DENY_V6,
				st);
	pthread_mutex_unlock(&l->deny_lock);
	deny_set_done(&d);
	l->kernel_clients = st->kernel_clients;
	l->skipped_keys = st->skipped_keys;
out_free:
	free(f.ids.v);
	free(f.hashes.v);
	return err;
}

/* Client ids (strings) a delta touches, directly or through a rate limit
 * or the settings. Borrowed from the snapshots; lives for one sync. */
struct touched {
	const char **ids;
	size_t n, cap;
	/* Rate limits that changed, and whether defaulted clients are touched. */
	const struct policy_delta *d;
	bool defaulted;
	int err;
};

static int touch(struct touched *t, const char *id)
{
	int err = grow((void **)&t->ids, &t->cap, t->n, sizeof(char *));

	if (err)
		return t->err = err;
	t->ids[t->n++] = id;
	return 0;
}

static bool rl_changed(const struct policy_delta *d, const struct policy_ref *ref)
{
	for (size_t i = 0; i < d->n_upserts; i++)
		if (d->upserts[i]->kind == POLICY_KIND_RATE_LIMIT &&
		    d->upserts[i]->key_hash == ref->key_hash)
			return true;
	for (size_t i = 0; i < d->n_removes; i++)
		if (d->removes[i].kind == POLICY_KIND_RATE_LIMIT &&
		    strlen(d->removes[i].id) == ref->id_len &&
		    memcmp(d->removes[i].id, ref->id, ref->id_len) == 0)
			return true;
	return false;
}

static int touch_by_reference(void *arg, const struct policy_res *r)
{
	struct touched *t = arg;
	const struct policy_client *pc;

	if (r->kind != POLICY_KIND_CLIENT)
		return 0;
	pc = &r->u.client;
	if (pc->rate_limit.id ? rl_changed(t->d, &pc->rate_limit) : t->defaulted)
		return touch(t, r->id);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool has_hash(const struct policy_client *pc, uint64_t h)
{
	for (size_t i = 0; i < pc->n_keys; i++)
		if (pc->key_hashes[i] == h && strlen(pc->keys[i]) <= CLIENT_KEY_MAX_BYTES)
			return true;
	return false;
}

static size_t long_keys(const struct policy_client *pc)
{
	size_t n = 0;

	for (size_t i = 0; i < pc->n_keys; i++)
		n += strlen(pc->keys[i]) > CLIENT_KEY_MAX_BYTES;
	return n;
}

/* One touched client: pass 0 deletes what went away, pass 1 writes what is
 * new or different (deleting first lets a key move between clients). */
static int sync_client(struct bpfload *l, const struct snapshot *prev, const struct snapshot *s,
		       const char *id, int pass, struct bpfload_sync_stats *st)
{
	const struct policy_res *o = snapshot_get(prev, POLICY_KIND_CLIENT, id);
	const struct policy_res *n = snapshot_get(s, POLICY_KIND_CLIENT, id);
	struct client_config oc, nc;
	bool o_in = o && client_entry(prev, o, &oc);
	bool n_in = n && client_entry(s, n, &nc);
	int cfg_fd = bpf_map__fd(l->skel->maps.client_config);
	int lk_fd = bpf_map__fd(l->skel->maps.client_lookup);
	uint64_t cid = o ? o->key_hash : n ? n->key_hash : 0;

	if (pass == 0) {
		if (o_in) {
			for (size_t i = 0; i < o->u.client.n_keys; i++) {
				uint64_t h = o->u.client.key_hashes[i];

				if (strlen(o->u.client.keys[i]) > CLIENT_KEY_MAX_BYTES)
					continue;
				if (n_in && has_hash(&n->u.client, h))
					continue;
				if (bpf_map_delete_elem(lk_fd, &h) < 0 && errno != ENOENT)
					return -errno;
				st->deletes++;
			}
			l->skipped_keys -= long_keys(&o->u.client);
		}
		if (o_in && !n_in) {
			if (bpf_map_delete_elem(cfg_fd, &cid) < 0 && errno != ENOENT)
				return -errno;
			st->deletes++;
			l->kernel_clients--;
		}
		return 0;
	}
	if (!n_in)
		return 0;
	for (size_t i = 0; i < n->u.client.n_keys; i++) {
		uint64_t h = n->u.client.key_hashes[i];

		if (strlen(n->u.client.keys[i]) > CLIENT_KEY_MAX_BYTES)
			continue;
		if (o_in && has_hash(&o->u.client, h))
			continue;
		if (bpf_map_update_elem(lk_fd, &h, &cid, BPF_ANY) < 0)
			return -errno;
		st->updates++;
	}
	l->skipped_keys += long_keys(&n->u.client);
	if (!o_in || memcmp(&oc, &nc, sizeof(nc)) != 0) {
		if (bpf_map_update_elem(cfg_fd, &cid, &nc, BPF_ANY) < 0)
			return -errno;
		st->updates++;
		if (!o_in)
			l->kernel_clients++;
	}
	return 0;
}

static bool lists_global(const struct snapshot *s, const char *id)
{
	const struct policy_settings *st = snapshot_settings(s);

	for (size_t i = 0; i < st->n_access_lists; i++)
		if (strcmp(st->access_lists[i].id, id) == 0)
			return true;
	return false;
}

static int sync_delta(struct bpfload *l, const struct snapshot *s, struct bpfload_sync_stats *st)
{
	const struct snapshot *prev = l->prev;
	struct touched t = {0};
	struct policy_delta *d;
	bool settings = false, any_rl = false, deny = false;
	int err;

	err = snapshot_diff(prev, s, &d);
	if (err)
		return err;
	t.d = d;
	for (size_t i = 0; i < d->n_upserts; i++) {
		const struct policy_res *r = d->upserts[i];

		settings |= r->kind == POLICY_KIND_SETTINGS;
		any_rl |= r->kind == POLICY_KIND_RATE_LIMIT;
		if (r->kind == POLICY_KIND_CLIENT)
			touch(&t, r->id);
		if (r->kind == POLICY_KIND_ACCESS_LIST)
			deny |= lists_global(prev, r->id) || lists_global(s, r->id);
	}
	for (size_t i = 0; i < d->n_removes; i++) {
		const struct policy_key *k = &d->removes[i];

		settings |= k->kind == POLICY_KIND_SETTINGS;
		any_rl |= k->kind == POLICY_KIND_RATE_LIMIT;
		if (k->kind == POLICY_KIND_CLIENT)
			touch(&t, k->id);
		if (k->kind == POLICY_KIND_ACCESS_LIST)
			deny |= lists_global(prev, k->id);
	}
	deny |= settings;
	if (any_rl || settings) {
		const struct policy_settings *ps = snapshot_settings(prev);
		const struct policy_settings *ns = snapshot_settings(s);

		/* Defaulted clients follow the default limit: touched when the
		 * settings or either default's resource changed. */
		t.defaulted = settings || (ps->default_rate_limit.id &&
					   rl_changed(d, &ps->default_rate_limit)) ||
			      (ns->default_rate_limit.id && rl_changed(d, &ns->default_rate_limit));
		snapshot_foreach(s, touch_by_reference, &t);
	}
	err = t.err;
	if (err)
		goto out_free;
	if (t.n)
		qsort(t.ids, t.n, sizeof(*t.ids), cmp_str);
	for (int pass = 0; pass < 2 && !err; pass++)
		for (size_t i = 0; i < t.n && !err; i++)
			if (i == 0 || strcmp(t.ids[i], t.ids[i - 1]) != 0)
				err = sync_client(l, prev, s, t.ids[i], pass, st);
	if (err)
		goto out_free;

	if (deny) {
		struct deny_set od, nd;

		err = deny_set_build(prev, &od);
		if (err)
			goto out_free;
		err = deny_set_build(s, &nd);
		pthread_mutex_lock(&l->deny_lock);
		if (!err)
			err = deny_apply(l, DENY_V4, od.v4, od.n4, nd.v4, nd.n4, sizeof(*nd.v4), st);
		if (!err)
			err = deny_apply(l, DENY_V6, od.v6, od.n6, nd.v6, nd.n6, sizeof(*nd.v6), st);
		pthread_mutex_unlock(&l->deny_lock);
		deny_set_done(&od);
		deny_set_done(&nd);
	}
	st->kernel_clients = l->kernel_clients;
	st->skipped_keys = l->skipped_keys;
out_free:
	free(t.ids);
	policy_delta_free(d);
	return err;
}

int bpfload_sync(struct bpfload *l, const struct snapshot *s, struct bpfload_sync_stats *stats)
{
	struct bpfload_sync_stats st = {0};
	struct client_global_config g;
	int err;

	if (!l || !s)
		return -EINVAL;
	if (l->prev && strcmp(snapshot_ruleset(l->prev), snapshot_ruleset(s)) != 0) {
		snapshot_unref(l->prev);
		l->prev = NULL;
	}
	err = l->prev ? sync_delta(l, s, &st) : sync_full(l, s, &st);
	if (err)
		goto out_reset;
	global_entry(s, &l->global, &g);
	if (!l->prev || memcmp(&g, &l->global, sizeof(g)) != 0) {
		err = write_global(l, &g);
		if (err)
			goto out_reset;
		st.updates++;
	}
	snapshot_unref(l->prev);
	l->prev = snapshot_ref(s);
	if (stats)
		*stats = st;
	return 0;

out_reset:
	/* The maps are somewhere between the two: reconcile next time. */
	snapshot_unref(l->prev);
	l->prev = NULL;
	return err;
}

/* ---- escalation ------------------------------------------------------ */

static uint64_t mono_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

int bpfload_deny_add(struct bpfload *l, const struct cidr *prefix, uint64_t ttl_ns)
{
	struct client_deny_v4_key k4;
	struct client_deny_v6_key k6;
	bool is_v4;
	int err;

	if (!l || !prefix || !ttl_ns || deny_key(prefix, &k4, &k6, &is_v4))
		return -EINVAL;
	/* A policy entry (never expiring) must stay one: an escalation of the
	 * same prefix would otherwise end the policy's deny with its TTL.
	 * deny_lock orders this against a sync on another thread. */
	pthread_mutex_lock(&l->deny_lock);
	err = deny_put(l, is_v4 ? DENY_V4 : DENY_V6, is_v4 ? (void *)&k4 : (void *)&k6,
		       mono_ns() + ttl_ns);
	pthread_mutex_unlock(&l->deny_lock);
	return err;
}

/* Deletes the expired entries of one trie. deny_lock held. */
static int sweep_trie(struct bpfload *l, int fam, uint64_t now_ns, size_t *deleted)
{
	int fd = deny_fd(l, fam), err;
	size_t key_size = fam == DENY_V4 ? sizeof(struct client_deny_v4_key)
					 : sizeof(struct client_deny_v6_key);
	uint8_t key[32], next[32];
	uint8_t doomed[64][32];
	size_t n = 0;
	void *prev = NULL;

	/* Collect, then delete: deleting during get_next_key iteration would
	 * restart the walk from the first key. Bounded batches of 64. */
	for (;;) {
		while (n < 64 && bpf_map_get_next_key(fd, prev, next) == 0) {
			struct client_deny_value v;

			memcpy(key, next, key_size);
			prev = key;
			if (bpf_map_lookup_elem(fd, key, &v) == 0 && v.expires_ns &&
			    v.expires_ns <= now_ns)
				memcpy(doomed[n++], key, key_size);
		}
		if (n == 0)
			return 0;
		for (size_t i = 0; i < n; i++) {
			err = deny_del(l, fam, doomed[i]);
			if (err)
				return err;
			(*deleted)++;
		}
		if (n < 64)
			return 0;
		/* A full batch: walk again from the start (deleted keys are gone). */
		n = 0;
		prev = NULL;
	}
}

int bpfload_deny_sweep(struct bpfload *l, size_t *deleted)
{
	uint64_t now_ns = mono_ns();
	size_t n = 0;
	int err;

	pthread_mutex_lock(&l->deny_lock);
	err = sweep_trie(l, DENY_V4, now_ns, &n);
	if (!err)
		err = sweep_trie(l, DENY_V6, now_ns, &n);
	pthread_mutex_unlock(&l->deny_lock);
	if (deleted)
		*deleted = n;
	return err;
}

/* ---- events and counters --------------------------------------------- */

void bpfload_set_event_cb(struct bpfload *l, bpfload_event_cb cb, void *arg)
{
	l->cb = cb;
	l->cb_arg = arg;
}

int bpfload_event_fd(const struct bpfload *l)
{
	return ring_buffer__epoll_fd(l->rb);
}

int bpfload_poll(struct bpfload *l, int timeout_ms)
{
	uint64_t before = l->ev.events;
	int err = ring_buffer__poll(l->rb, timeout_ms);

	if (err < 0 && err != -EINTR)
		return err;
	return (int)(l->ev.events - before);
}

void bpfload_event_counts(const struct bpfload *l, struct bpfload_event_counts *out)
{
	*out = l->ev;
}

int bpfload_counters(const struct bpfload *l, uint64_t *out, size_t n)
{
	int ncpu = libbpf_num_possible_cpus();
	int fd = bpf_map__fd(l->skel->maps.reason_counters);
	uint64_t *vals;
	int err = 0;

	if (n > CLIENT_COUNTERS)
		return -EINVAL;
	if (ncpu <= 0)
		return ncpu < 0 ? ncpu : -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (uint32_t slot = 0; slot < n; slot++) {
		out[slot] = 0;
		if (bpf_map_lookup_elem(fd, &slot, vals) < 0) {
			err = -errno;
			break;
		}
		for (int c = 0; c < ncpu; c++)
			out[slot] += vals[c];
	}
	free(vals);
	return err;
}

int bpfload_map_fd(const struct bpfload *l, const char *name)
{
	const struct bpf_map *m = bpf_object__find_map_by_name(l->skel->obj, name);

	return m ? bpf_map__fd(m) : -1;
}
