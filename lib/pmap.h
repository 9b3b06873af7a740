/* pmap.h - persistent hash map (hash array mapped trie) with path copying.
 *
 * Maps a 64-bit hash plus a caller-defined key to a value pointer. A map is
 * immutable once sealed: an edit copies only the nodes on the paths it
 * changes (O(log32 n) per key) and shares every other node with the map it
 * started from, so old and new versions coexist and are read without locks.
 * Nodes created inside one edit are mutated in place until the edit ends
 * (a "transient"), so bulk builds cost O(n), not O(n log n) copies.
 * Nodes and values are reference counted with atomic operations; a map is
 * freed by pmap_unref() from any thread.
 */
#ifndef SLUICE_PMAP_H
#define SLUICE_PMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How the map treats its values. Static, outlives every map using it. */
struct pmap_ops {
	/* Does stored value `val` have lookup key `key`? (key as passed to
	 * pmap_get/put/del; hashes already matched) */
	bool (*match)(const void *val, const void *key);
	/* Do two stored values have the same key? (used by pmap_diff) */
	bool (*same_key)(const void *a, const void *b);
	/* Take / drop a reference to a value; may be NULL for unowned values. */
	void (*val_ref)(void *val);
	void (*val_unref)(void *val);
};

struct pmap;

/* An empty map. NULL + errno=ENOMEM on failure. */
struct pmap *pmap_new(const struct pmap_ops *ops);
struct pmap *pmap_ref(const struct pmap *m);
void pmap_unref(struct pmap *m); /* accepts NULL */

size_t pmap_count(const struct pmap *m);
/* The value stored under (hash, key), or NULL. Lock-free, allocation-free. */
void *pmap_get(const struct pmap *m, uint64_t hash, const void *key);

/* The nth (from 0) value stored under exactly `hash`, or NULL: for callers
 * that compare keys themselves, inline, instead of through ops->match.
 * Values share a hash only in a collision, so n > 0 is for that rare loop:
 *     for (n = 0; (v = pmap_get_hash(m, h, n)); n++) if (mine(v)) ...
 * Lock-free, allocation-free, no indirect calls. */
void *pmap_get_hash(const struct pmap *m, uint64_t hash, size_t n);

/* An edit turns one map into the next. Not thread-safe itself; the base map
 * stays valid and unchanged throughout. */
struct pmap_edit;

int pmap_edit_begin(const struct pmap *base, struct pmap_edit **ret);
/* Stores val (never NULL) under (hash, key), taking a reference on val
 * (ops->val_ref); replaces and releases an existing value with the same
 * key. -ENOMEM. */
int pmap_edit_put(struct pmap_edit *e, uint64_t hash, const void *key, void *val);
/* Removes the value with that key. Returns 0, or -ENOENT when absent. */
int pmap_edit_del(struct pmap_edit *e, uint64_t hash, const void *key);
/* Lookup in the map as edited so far. */
void *pmap_edit_get(const struct pmap_edit *e, uint64_t hash, const void *key);
size_t pmap_edit_count(const struct pmap_edit *e);
/* Nodes allocated by this edit so far (copies and new ones): what a test
 * checks to prove a 1-key edit touches O(log n) nodes. */
size_t pmap_edit_nodes_allocated(const struct pmap_edit *e);
/* Seals the edit and returns the new map (one reference); frees the edit.
 * NULL + errno=ENOMEM on failure, with the edit freed. */
struct pmap *pmap_edit_end(struct pmap_edit *e);
void pmap_edit_abort(struct pmap_edit *e); /* accepts NULL */

/* Calls cb(arg, val) for every value, in unspecified order; stops and
 * returns cb's value when it is non-zero. */
int pmap_foreach(const struct pmap *m, int (*cb)(void *arg, void *val), void *arg);

/* Calls cb(arg, va, vb) for every key whose value differs by pointer between
 * a and b (va NULL: only in b; vb NULL: only in a). Subtrees shared by both
 * maps are skipped without being visited. Same early-stop rule. */
int pmap_diff(const struct pmap *a, const struct pmap *b,
	      int (*cb)(void *arg, void *va, void *vb), void *arg);

/* Depth of the deepest node (tests and benchmarks). */
unsigned pmap_depth(const struct pmap *m);

/* ---- pindex: a flat hash index for the request path ----
 *
 * hash -> borrowed pointer, as a fixed-depth radix of open-addressing
 * chunks: root[] -> page (64 chunk pointers) -> chunk (64 slots of {hash,
 * value}). A lookup reads three cache lines (root entry, page entry, slot)
 * where a trie of 100,000 keys reads two per level. Edits copy the root,
 * one page and one chunk per changed key and share everything else, like a
 * pmap. Values are not owned: the caller keeps them alive (the snapshot's
 * maps do). Sized when an edit begins: an edit that would pass half full
 * starts over with a larger table that the caller refills. A chunk that
 * fills up marks itself overflowed and drops the add: a lookup that misses
 * there must ask the caller's authoritative map (pindex_get's *unsure).
 * Hashes index the table as they are: they must be uniform (XXH3 is; an
 * FNV-style hash is not).
 */
struct pindex;
struct pindex_edit;

/* An edit of `base` (NULL: empty) for up to `expect` entries in the end.
 * *refill is set when the edit starts empty (a new size): the caller then
 * adds every entry it had. -ENOMEM. */
int pindex_edit_begin(const struct pindex *base, size_t expect, struct pindex_edit **ret,
		      bool *refill);
/* Adds (hash, val); the caller guarantees val is not already there. */
int pindex_edit_add(struct pindex_edit *e, uint64_t hash, void *val);
/* Removes the slot holding exactly (hash, val); 0 or -ENOENT. */
int pindex_edit_remove(struct pindex_edit *e, uint64_t hash, const void *val);
/* Seals the edit into *ret (frees the edit, also on failure). -ENOMEM. */
int pindex_edit_end(struct pindex_edit *e, struct pindex **ret);
void pindex_edit_abort(struct pindex_edit *e); /* accepts NULL */
void pindex_free(struct pindex *x);             /* accepts NULL */

/* The nth (from 0) value stored under `hash`, or NULL. When it returns
 * NULL and *unsure is true, the key may exist but did not fit (its chunk
 * overflowed): look it up in the authoritative map. Lock-free. */
void *pindex_get(const struct pindex *x, uint64_t hash, size_t nth, bool *unsure);

size_t pindex_count(const struct pindex *x);
size_t pindex_capacity(const struct pindex *x);
/* Pages and chunks allocated by this edit so far. */
size_t pindex_edit_nodes_allocated(const struct pindex_edit *e);

#endif
