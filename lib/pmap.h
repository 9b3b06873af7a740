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

#endif
