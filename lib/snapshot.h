/* snapshot.h - one ruleset at one version, immutable, with the indexes the
 * request path needs; and the cell that publishes the current one.
 *
 * A snapshot is a set of persistent hash maps (pmap.h). snapshot_apply()
 * builds the next snapshot from the previous one by path copying: a delta of
 * k resources copies O(k log n) map nodes and shares everything else, so a
 * snapshot never changes after it is built and old and new can be read at
 * the same time. Cross-resource validation (references, duplicate client
 * keys and routes, counts) happens here, against the whole new ruleset.
 *
 * Threads: snapshots are read concurrently by any number of threads without
 * locks; building (apply/build/diff) may run on any thread. Publication goes
 * through a snapshot_cell: readers enter an RCU read section (liburcu memb
 * flavour; the thread must be registered with snapshot_thread_online()).
 */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

#include "cidr.h"
#include "limiter.h"
#include "policy.h"

struct snapshot;

/* An empty snapshot (version 0) of the named ruleset. -EINVAL for a bad
 * name, -ENOMEM. */
int snapshot_new_empty(const char *ruleset, struct snapshot **ret);

/* A whole ruleset at `version` from a list of resources (a sluice.v1.Snapshot
 * or a file). Validates everything: duplicates, references, caps. Returns 0,
 * -EINVAL (errs filled), -E2BIG (a cap; errs names it), -ENOMEM. */
int snapshot_build(const char *ruleset, uint64_t version, struct policy_res *const *res,
		   size_t n, struct policy_errs *errs, struct snapshot **ret);

/* The snapshot `base` with delta `d` applied. Refused, with `base` untouched:
 * -ESTALE when d->from_version != snapshot_version(base) or the ruleset name
 * differs; -EINVAL when d->to_version <= from_version, when a key is both
 * upserted and removed or upserted twice, when a remove names an absent
 * resource, or when the result fails validation (errs says why); -E2BIG on
 * a cap; -ENOMEM. An upsert equal to the current resource is a no-op. */
int snapshot_apply(const struct snapshot *base, const struct policy_delta *d,
		   struct policy_errs *errs, struct snapshot **ret);

/* The delta that turns `a` into `b` (same ruleset): upserts of resources
 * absent from `a` or different from it, removes of keys absent from `b`,
 * each sorted by (kind, id). from/to versions are a's and b's. Subtrees
 * shared by a and b are skipped, so diffing neighbours costs O(changes). */
int snapshot_diff(const struct snapshot *a, const struct snapshot *b, struct policy_delta **ret);

/* Same ruleset name and the same resources (kind, id, content); versions are
 * not compared. */
bool snapshot_equal(const struct snapshot *a, const struct snapshot *b);

/* Map nodes allocated (copied or new, across all of the snapshot's maps)
 * when this snapshot was built: O(k log n) for a delta of k resources.
 * For tests and benchmarks. */
size_t snapshot_nodes_created(const struct snapshot *s);

/* Snapshots currently allocated in this process (all rulesets): a debug
 * counter for tests that check released snapshots are freed. */
size_t snapshot_live_count(void);

struct snapshot *snapshot_ref(const struct snapshot *s);
void snapshot_unref(struct snapshot *s); /* accepts NULL */

const char *snapshot_ruleset(const struct snapshot *s);
uint64_t snapshot_version(const struct snapshot *s);
/* Never 0 and never given to another snapshot of this process (unlike its
 * address or version): what a cache of lookups into one snapshot keys on,
 * so that it cannot mistake a later snapshot for this one. */
static inline uint64_t snapshot_uid(const struct snapshot *s);
/* Resources of one kind, or of all kinds with kind == 0. */
size_t snapshot_count(const struct snapshot *s, enum policy_kind kind);

/* Borrowed pointer, valid while the snapshot is. NULL when absent. */
const struct policy_res *snapshot_get(const struct snapshot *s, enum policy_kind kind,
				      const char *id);
const struct policy_res *snapshot_get_ref(const struct snapshot *s, enum policy_kind kind,
					  const struct policy_ref *ref);

/* Every resource, sorted by (kind, id); stops early and returns cb's value
 * when cb returns non-zero. */
int snapshot_foreach(const struct snapshot *s,
		     int (*cb)(void *arg, const struct policy_res *r), void *arg);

/* ---- request path: lock-free lookups; allocation-free but for each
 * thread's first route lookup (its memo, see snapshot_find_route) ---- */

/* The Settings resource, or built-in defaults when the ruleset has none. */
static inline const struct policy_settings *snapshot_settings(const struct snapshot *s);

/* The enabled or disabled client whose key equals the header value. */
const struct policy_res *snapshot_find_client(const struct snapshot *s, const char *key,
					      size_t len);

/* What the request path needs of a client, kept in the client index next
 * to the key: a decision reads it without touching the (colder) resource.
 * Borrowed from the snapshot; rate_limit.id points into this entry. */
struct snapshot_client {
	const struct policy_res *res;
	uint64_t key_hash;             /* res->key_hash */
	struct policy_ref rate_limit;  /* id NULL when the client names none */
	bool disabled;
};

/* Same lookup as snapshot_find_client(); NULL when no client has the key. */
const struct snapshot_client *snapshot_lookup_client(const struct snapshot *s,
						    const char *key, size_t len);

/* The hash the request path's client index is keyed by (XXH3-64 of the key
 * bytes; not policy_client_key_hash, which the eBPF ABI fixes). Inline, so
 * a caller that keeps a cache of its own indexes it with the same hash and
 * hands it on: the key is hashed once per request. */
static inline uint64_t snapshot_client_key_hash(const char *key, size_t len)
{
	return XXH3_64bits(key, len);
}

/* snapshot_lookup_client() with hash == snapshot_client_key_hash(key, len). */
const struct snapshot_client *snapshot_lookup_client_hash(const struct snapshot *s,
							 const char *key, size_t len,
							 uint64_t hash);

/* A rate limit as the request path runs it: the resource and its limiter
 * plan, derived once when the limit entered the ruleset. Borrowed from the
 * snapshot. */
struct snapshot_limit {
	const struct policy_res *res;
	struct limiter_plan plan;
	bool proxy;       /* enforced by the proxy: res->u.rate_limit.enforce != KERNEL */
	bool shadow;      /* action SHADOW: count, never refuse */
	bool selects_all; /* empty selector: applies to every request */
};

/* The rate limit `ref` names; NULL when ref->id is NULL or absent. */
const struct snapshot_limit *snapshot_lookup_limit(const struct snapshot *s,
						   const struct policy_ref *ref);

/* Route for a request: routes of exactly `host` first, then routes with an
 * empty host; among them the longest path_prefix that matches `path`
 * segment-wise ("/api" matches "/api" and "/api/x", not "/apix"). `path`
 * is the request target's path, without query. NULL when none matches. */
const struct policy_res *snapshot_match_route(const struct snapshot *s, const char *host,
					      size_t host_len, const char *path,
					      size_t path_len);

/* What the request path needs of a route, kept in the route index next to
 * its key, so that a request to a route with nothing of its own to check
 * does not read the (colder) resource. Borrowed from the snapshot. */
struct snapshot_route {
	const struct policy_res *res;
	bool all_methods;     /* res->u.route.n_methods == 0 */
	bool no_access_lists; /* res->u.route.n_access_lists == 0 */
	bool no_rate_limits;  /* res->u.route.n_rate_limits == 0 */
};

/* Same match as snapshot_match_route(); NULL when no route matches. */
const struct snapshot_route *snapshot_lookup_route(const struct snapshot *s, const char *host,
						   size_t host_len, const char *path,
						   size_t path_len);

/* Same match, copied to *out: false when no route matches (*out then
 * unspecified). What the request path uses: the answer comes from the
 * calling thread's memo of matches when it holds this (host, prefix) for
 * this snapshot (by uid), which costs neither the hashes nor the index
 * walk nor a read of the route's index entry. snapshot_match_route()
 * uses it too. A thread's first call allocates its memo (256 KiB, freed
 * when the thread exits); without memory, lookups go without it. */
bool snapshot_find_route(const struct snapshot *s, const char *host, size_t host_len,
			 const char *path, size_t path_len, struct snapshot_route *out);

enum snapshot_access {
	SNAPSHOT_ACCESS_ALLOW = 0,
	SNAPSHOT_ACCESS_DENY = 1,      /* on a deny list */
	SNAPSHOT_ACCESS_NOT_ALLOWED = 2, /* a non-empty allow list did not match */
};
/* Checks the global access lists, then the route's (route may be NULL).
 * Deny wins; an empty allow list allows; else the address must match.
 * *list (may be NULL) is set to the deciding access list on refusal. */
enum snapshot_access snapshot_check_access(const struct snapshot *s,
					   const struct policy_res *route,
					   const struct cidr_addr *addr,
					   const struct policy_res **list);

/* ---- inline accessors ----
 * The first fields of every struct snapshot, for the accessors below that
 * the request path calls on every decision (a call across translation
 * units cost more than the load). Set when the snapshot is built, never
 * changed after; read them through the accessors only. */
struct snapshot_head {
	uint64_t uid;
	const struct policy_settings *settings; /* never NULL: the defaults */
	/* Bit b set: an IPv4 address with first octet b passes the global
	 * access lists (there is no global allow list, and no global deny
	 * list covers any address under b.0.0.0/8). */
	uint64_t v4_open[4];
};

static inline uint64_t snapshot_uid(const struct snapshot *s)
{
	return ((const struct snapshot_head *)(const void *)s)->uid;
}

static inline const struct policy_settings *snapshot_settings(const struct snapshot *s)
{
	return ((const struct snapshot_head *)(const void *)s)->settings;
}

/* True when `addr` passes the settings' (global) access lists, known from
 * its first octet alone; false says nothing. The request path asks this
 * before snapshot_check_access(), which a route with lists of its own
 * still needs: most requests come from where no list reaches and need no
 * call. */
static inline bool snapshot_global_access_open(const struct snapshot *s,
					       const struct cidr_addr *addr)
{
	const struct snapshot_head *h = (const struct snapshot_head *)(const void *)s;

	return addr->family == AF_INET && (h->v4_open[addr->addr[0] / 64] >> (addr->addr[0] % 64) & 1);
}

/* ---- publication (RCU) ---- */

/* The published pointer to the current snapshot of one ruleset. */
struct snapshot_cell;

/* Takes over the caller's reference to `initial` (may be NULL). */
int snapshot_cell_new(struct snapshot *initial, struct snapshot_cell **ret);
/* Waits for readers, drops the current snapshot. No reader may be inside. */
void snapshot_cell_free(struct snapshot_cell *c);

/* Register / unregister the calling thread as an RCU reader. */
void snapshot_thread_online(void);
void snapshot_thread_offline(void);

/* Read side: nestable, never blocks, never allocates. The snapshot returned
 * by snapshot_cell_get() stays valid until the matching unlock. */
void snapshot_read_lock(void);
void snapshot_read_unlock(void);
const struct snapshot *snapshot_cell_get(const struct snapshot_cell *c);

/* Publishes `next` with one atomic pointer store, taking over the caller's
 * reference; the previous snapshot is released after an RCU grace period,
 * which frees exactly the parts `next` does not share. Writers must be
 * serialized by the caller. */
void snapshot_cell_publish(struct snapshot_cell *c, struct snapshot *next);

/* Waits until every snapshot released so far has been freed (tests,
 * shutdown, memory measurements). */
void snapshot_barrier(void);

#endif
