/* pmap.c - persistent hash array mapped trie (32-way, popcount bitmaps).
 * Invariants: sealed nodes are never written; only the open edit whose
 * (never reused) token a node carries may mutate it; each node holds one
 * reference per child and value; a non-root node never holds a lone leaf,
 * so equal contents give equal shapes and pmap_diff stays cheap.
 */
#include "pmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BITS_PER_LEVEL 5u
#define LEVEL_MASK 31u
#define SLOTS_MAX 32u

/* A leaf (value + its full hash) or, when its bit is in node->childmap, a
 * child node. Owned by the node holding it. */
struct pmap_slot {
	void *ptr;
	uint64_t hash; /* leaf: the value's hash; child: unused */
};

/* One trie node; owned by its references (parents, maps, edits), lives until
 * the last one is dropped. A collision node holds leaves that all have the
 * same 64-bit hash, in any order, and ignores bitmap/childmap. */
struct pmap_node {
	uint32_t refcnt;   /* atomic */
	uint32_t bitmap;   /* present slots, indexed by 5 hash bits */
	uint32_t childmap; /* subset of bitmap holding child nodes */
	uint32_t n;        /* slots in use */
	uint32_t cap;      /* slots allocated */
	uint32_t collision;
	uint64_t edit;     /* token of the edit allowed to mutate it */
	struct pmap_slot slot[];
};

/* A sealed map; owned by its references (pmap_ref/unref). */
struct pmap {
	uint32_t refcnt; /* atomic */
	struct pmap_node *root; /* NULL when empty */
	size_t count;
	const struct pmap_ops *ops;
};

/* An open edit; owned by the caller until pmap_edit_end/abort. */
struct pmap_edit {
	struct pmap_node *root;
	size_t count;
	const struct pmap_ops *ops;
	uint64_t token;
	size_t nodes_allocated;
};

/* Starts at 1: token 0 would match nothing anyway, but keep it unused. */
static uint64_t next_edit_token = 1;

static inline unsigned slot_index(uint32_t bitmap, uint32_t bit)
{
	return (unsigned)__builtin_popcount(bitmap & (bit - 1));
}

static inline uint32_t hash_bit(uint64_t hash, unsigned shift)
{
	return 1u << ((hash >> shift) & LEVEL_MASK);
}

static void node_ref(struct pmap_node *n)
{
	__atomic_add_fetch(&n->refcnt, 1, __ATOMIC_RELAXED);
}

static void val_ref(const struct pmap_ops *ops, void *v)
{
	if (ops->val_ref)
		ops->val_ref(v);
}

static void val_unref(const struct pmap_ops *ops, void *v)
{
	if (ops->val_unref)
		ops->val_unref(v);
}

static void node_unref(const struct pmap_ops *ops, struct pmap_node *n)
{
	if (!n || __atomic_sub_fetch(&n->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	/* Recursion is bounded by the trie depth (at most 14 levels). */
	if (n->collision) {
		for (uint32_t i = 0; i < n->n; i++)
			val_unref(ops, n->slot[i].ptr);
	} else {
		uint32_t bits = n->bitmap;
		for (uint32_t i = 0; i < n->n; i++) {
			uint32_t bit = bits & -bits;
			bits &= bits - 1;
			if (n->childmap & bit)
				node_unref(ops, n->slot[i].ptr);
			else
				val_unref(ops, n->slot[i].ptr);
		}
	}
	free(n);
}

static struct pmap_node *node_alloc(struct pmap_edit *e, uint32_t cap)
{
	struct pmap_node *n = malloc(sizeof(*n) + (size_t)cap * sizeof(n->slot[0]));

	if (!n)
		return NULL;
	n->refcnt = 1;
	n->bitmap = 0;
	n->childmap = 0;
	n->n = 0;
	n->cap = cap;
	n->collision = 0;
	n->edit = e->token;
	e->nodes_allocated++;
	return n;
}

/* Makes *np writable by edit e with room for `extra` more slots: copies a
 * sealed or foreign node (the copy takes references on everything it
 * shares and the parent's reference on the original is dropped), or grows
 * an owned one. Returns NULL when out of memory, leaving *np unchanged. */
static struct pmap_node *node_writable(struct pmap_edit *e, struct pmap_node **np, uint32_t extra)
{
	struct pmap_node *old = *np, *n;
	uint32_t need = old->n + extra, cap;

	if (old->edit == e->token && old->cap >= need)
		return old;
	if (old->edit == e->token) {
		/* Owned: grow geometrically so bulk inserts stay O(1) amortized. */
		cap = old->cap * 2;
		if (cap < need)
			cap = need;
		if (!old->collision && cap > SLOTS_MAX)
			cap = SLOTS_MAX;
	} else {
		cap = need;
	}
	n = node_alloc(e, cap);
	if (!n)
		return NULL;
	n->bitmap = old->bitmap;
	n->childmap = old->childmap;
	n->n = old->n;
	n->collision = old->collision;
	memcpy(n->slot, old->slot, (size_t)old->n * sizeof(old->slot[0]));
	if (old->edit == e->token) {
		/* The references move with the slots. */
		free(old);
	} else {
		uint32_t bits = old->collision ? 0 : old->bitmap;

		for (uint32_t i = 0; i < old->n; i++) {
			uint32_t bit = bits & -bits;

			bits &= bits - 1;
			if (old->childmap & bit)
				node_ref(old->slot[i].ptr);
			else
				val_ref(e->ops, old->slot[i].ptr);
		}
		node_unref(e->ops, old);
	}
	*np = n;
	return n;
}

static void slot_insert(struct pmap_node *n, unsigned idx, struct pmap_slot s)
{
	memmove(&n->slot[idx + 1], &n->slot[idx], (n->n - idx) * sizeof(n->slot[0]));
	n->slot[idx] = s;
	n->n++;
}

static void slot_remove(struct pmap_node *n, unsigned idx)
{
	memmove(&n->slot[idx], &n->slot[idx + 1], (n->n - idx - 1) * sizeof(n->slot[0]));
	n->n--;
}

/* A subtree at `shift` holding entry `a` (a leaf, or a child node whose
 * leaves all hash to a_hash, i.e. a collision node) and leaf `b`. Moves
 * a's reference into the new subtree; takes none on b. NULL on ENOMEM with
 * nothing changed. */
static struct pmap_node *make_pair(struct pmap_edit *e, unsigned shift, struct pmap_slot a,
				   bool a_is_child, struct pmap_slot b)
{
	struct pmap_node *n;

	if (a.hash == b.hash && !a_is_child) {
		n = node_alloc(e, 2);
		if (!n)
			return NULL;
		n->collision = 1;
		n->slot[0] = a;
		n->slot[1] = b;
		n->n = 2;
		return n;
	}
	uint32_t abit = hash_bit(a.hash, shift), bbit = hash_bit(b.hash, shift);

	n = node_alloc(e, abit == bbit ? 1 : 2);
	if (!n)
		return NULL;
	if (abit == bbit) {
		struct pmap_node *sub = make_pair(e, shift + BITS_PER_LEVEL, a, a_is_child, b);

		if (!sub) {
			free(n);
			e->nodes_allocated--;
			return NULL;
		}
		n->bitmap = n->childmap = abit;
		n->slot[0] = (struct pmap_slot){ .ptr = sub };
		n->n = 1;
		return n;
	}
	n->bitmap = abit | bbit;
	n->childmap = a_is_child ? abit : 0;
	n->slot[abit < bbit ? 0 : 1] = a;
	n->slot[abit < bbit ? 1 : 0] = b;
	n->n = 2;
	return n;
}

/* Stores val in slot idx of *np (a leaf with the same key), copying the
 * node first unless this edit owns it. */
static int replace_val(struct pmap_edit *e, struct pmap_node **np, unsigned idx, void *val)
{
	struct pmap_node *n = node_writable(e, np, 0);

	if (!n)
		return -ENOMEM;
	val_ref(e->ops, val);
	val_unref(e->ops, n->slot[idx].ptr);
	n->slot[idx].ptr = val;
	return 0;
}

/* Inserts or replaces leaf (hash, val) in the subtree *np at `shift`; *np
 * is a slot of a writable parent (or the edit root). Takes a reference on
 * val only on success. */
static int put_rec(struct pmap_edit *e, struct pmap_node **np, unsigned shift, uint64_t hash,
		   const void *key, void *val, bool *added)
{
	struct pmap_node *n = *np;
	struct pmap_slot leaf = { .ptr = val, .hash = hash };

	if (n->collision) {
		if (n->slot[0].hash != hash) {
			/* Push the collision node down beside the new leaf. */
			struct pmap_slot child = { .ptr = n, .hash = n->slot[0].hash };
			struct pmap_node *pair = make_pair(e, shift, child, true, leaf);

			if (!pair)
				return -ENOMEM;
			*np = pair;
			val_ref(e->ops, val);
			*added = true;
			return 0;
		}
		for (uint32_t i = 0; i < n->n; i++)
			if (e->ops->match(n->slot[i].ptr, key))
				return replace_val(e, np, i, val);
		n = node_writable(e, np, 1);
		if (!n)
			return -ENOMEM;
		n->slot[n->n++] = leaf;
		val_ref(e->ops, val);
		*added = true;
		return 0;
	}

	uint32_t bit = hash_bit(hash, shift);
	unsigned idx = slot_index(n->bitmap, bit);

	if (!(n->bitmap & bit)) {
		n = node_writable(e, np, 1);
		if (!n)
			return -ENOMEM;
		slot_insert(n, idx, leaf);
		n->bitmap |= bit;
		val_ref(e->ops, val);
		*added = true;
		return 0;
	}
	if (n->childmap & bit) {
		n = node_writable(e, np, 0);
		if (!n)
			return -ENOMEM;
		return put_rec(e, (struct pmap_node **)&n->slot[idx].ptr, shift + BITS_PER_LEVEL,
			       hash, key, val, added);
	}
	if (n->slot[idx].hash == hash && e->ops->match(n->slot[idx].ptr, key))
		return replace_val(e, np, idx, val);
	n = node_writable(e, np, 0);
	if (!n)
		return -ENOMEM;
	struct pmap_node *pair = make_pair(e, shift + BITS_PER_LEVEL, n->slot[idx], false, leaf);

	if (!pair)
		return -ENOMEM;
	n->slot[idx] = (struct pmap_slot){ .ptr = pair };
	n->childmap |= bit;
	val_ref(e->ops, val);
	*added = true;
	return 0;
}

/* Replaces child slot idx of writable node n by the child's only entry
 * when the child (owned by this edit) has shrunk to one leaf, or to one
 * collision node, which can live at any level. */
static void collapse_child(struct pmap_node *n, unsigned idx, uint32_t bit)
{
	struct pmap_node *c = n->slot[idx].ptr;

	if (c->n != 1)
		return;
	if (c->collision || !c->childmap) {
		n->slot[idx] = c->slot[0];
		n->childmap &= ~bit;
	} else {
		struct pmap_node *gc = c->slot[0].ptr;

		if (!gc->collision)
			return;
		n->slot[idx].ptr = gc;
	}
	/* The slot's references moved to the parent: free the shell only. */
	free(c);
}

/* Removes the key, known to be present, from subtree *np. */
static int del_rec(struct pmap_edit *e, struct pmap_node **np, unsigned shift, uint64_t hash,
		   const void *key)
{
	struct pmap_node *n = node_writable(e, np, 0);

	if (!n)
		return -ENOMEM;
	if (n->collision) {
		for (uint32_t i = 0; i < n->n; i++) {
			if (e->ops->match(n->slot[i].ptr, key)) {
				val_unref(e->ops, n->slot[i].ptr);
				n->slot[i] = n->slot[n->n - 1];
				n->n--;
				return 0;
			}
		}
		return -ENOENT;
	}

	uint32_t bit = hash_bit(hash, shift);
	unsigned idx = slot_index(n->bitmap, bit);

	if (!(n->bitmap & bit))
		return -ENOENT;
	if (n->childmap & bit) {
		int r = del_rec(e, (struct pmap_node **)&n->slot[idx].ptr, shift + BITS_PER_LEVEL,
				hash, key);
		if (r == 0)
			collapse_child(n, idx, bit);
		return r;
	}
	val_unref(e->ops, n->slot[idx].ptr);
	slot_remove(n, idx);
	n->bitmap &= ~bit;
	return 0;
}

/* Shared lookup; `same` selects ops->same_key (stored value as key) over
 * ops->match (caller key). */
static void *lookup(const struct pmap_ops *ops, const struct pmap_node *n, unsigned shift,
		    uint64_t hash, const void *key, bool same)
{
	while (n) {
		if (__builtin_expect(n->collision, 0)) {
			if (n->slot[0].hash != hash)
				return NULL;
			for (uint32_t i = 0; i < n->n; i++) {
				void *v = n->slot[i].ptr;
				if (same ? ops->same_key(v, key) : ops->match(v, key))
					return v;
			}
			return NULL;
		}
		uint32_t bit = hash_bit(hash, shift);

		if (!(n->bitmap & bit))
			return NULL;
		const struct pmap_slot *s = &n->slot[slot_index(n->bitmap, bit)];

		if (n->childmap & bit) {
			n = s->ptr;
			shift += BITS_PER_LEVEL;
			continue;
		}
		if (s->hash != hash)
			return NULL;
		return (same ? ops->same_key(s->ptr, key) : ops->match(s->ptr, key)) ? s->ptr
										     : NULL;
	}
	return NULL;
}

struct pmap *pmap_new(const struct pmap_ops *ops)
{
	struct pmap *m = calloc(1, sizeof(*m));

	if (!m) {
		errno = ENOMEM;
		return NULL;
	}
	m->refcnt = 1;
	m->ops = ops;
	return m;
}

struct pmap *pmap_ref(const struct pmap *m)
{
	struct pmap *mm = (struct pmap *)m;

	__atomic_add_fetch(&mm->refcnt, 1, __ATOMIC_RELAXED);
	return mm;
}

void pmap_unref(struct pmap *m)
{
	if (!m || __atomic_sub_fetch(&m->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	node_unref(m->ops, m->root);
	free(m);
}

size_t pmap_count(const struct pmap *m)
{
	return m->count;
}

void *pmap_get(const struct pmap *m, uint64_t hash, const void *key)
{
	return lookup(m->ops, m->root, 0, hash, key, false);
}

void *pmap_get_hash(const struct pmap *m, uint64_t hash, size_t nth)
{
	const struct pmap_node *n = m->root;
	unsigned shift = 0;

	while (n) {
		if (__builtin_expect(n->collision, 0))
			return n->slot[0].hash == hash && nth < n->n ? n->slot[nth].ptr : NULL;

		uint32_t bit = hash_bit(hash, shift);

		if (!(n->bitmap & bit))
			return NULL;
		const struct pmap_slot *s = &n->slot[slot_index(n->bitmap, bit)];

		if (n->childmap & bit) {
			n = s->ptr;
			shift += BITS_PER_LEVEL;
			continue;
		}
		return s->hash == hash && nth == 0 ? s->ptr : NULL;
	}
	return NULL;
}

int pmap_edit_begin(const struct pmap *base, struct pmap_edit **ret)
{
	struct pmap_edit *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	e->root = base->root;
	if (e->root)
		node_ref(e->root);
	e->count = base->count;
	e->ops = base->ops;
	e->token = __atomic_fetch_add(&next_edit_token, 1, __ATOMIC_RELAXED);
	*ret = e;
	return 0;
}

int pmap_edit_put(struct pmap_edit *e, uint64_t hash, const void *key, void *val)
{
	bool added = false;
	int r;

	/* Storing the pointer already there changes nothing: copy no path. */
	if (e->root && lookup(e->ops, e->root, 0, hash, key, false) == val)
		return 0;
	if (!e->root) {
		struct pmap_node *n = node_alloc(e, 1);

		if (!n)
			return -ENOMEM;
		n->bitmap = hash_bit(hash, 0);
		n->slot[0] = (struct pmap_slot){ .ptr = val, .hash = hash };
		n->n = 1;
		val_ref(e->ops, val);
		e->root = n;
		e->count++;
		return 0;
	}
	r = put_rec(e, &e->root, 0, hash, key, val, &added);
	if (r == 0 && added)
		e->count++;
	return r;
}

int pmap_edit_del(struct pmap_edit *e, uint64_t hash, const void *key)
{
	int r;

	/* Check first so that a miss copies nothing. */
	if (!lookup(e->ops, e->root, 0, hash, key, false))
		return -ENOENT;
	r = del_rec(e, &e->root, 0, hash, key);
	if (r < 0)
		return r;
	e->count--;
	if (e->root->n == 0) {
		free(e->root); /* writable, hence owned by this edit and empty */
		e->root = NULL;
	}
	return 0;
}

void *pmap_edit_get(const struct pmap_edit *e, uint64_t hash, const void *key)
{
	return lookup(e->ops, e->root, 0, hash, key, false);
}

size_t pmap_edit_count(const struct pmap_edit *e)
{
	return e->count;
}

size_t pmap_edit_nodes_allocated(const struct pmap_edit *e)
{
	return e->nodes_allocated;
}

struct pmap *pmap_edit_end(struct pmap_edit *e)
{
	struct pmap *m = calloc(1, sizeof(*m));

	if (!m) {
		pmap_edit_abort(e);
		errno = ENOMEM;
		return NULL;
	}
	m->refcnt = 1;
	m->ops = e->ops;
	m->count = e->count;
	/* The token dies with the edit and is never handed out again, so the
	 * nodes it marked are sealed from here on without being visited. */
	m->root = e->root;
	free(e);
	return m;
}

void pmap_edit_abort(struct pmap_edit *e)
{
	if (!e)
		return;
	node_unref(e->ops, e->root);
	free(e);
}

static int foreach_rec(const struct pmap_node *n, int (*cb)(void *arg, void *val), void *arg)
{
	uint32_t bits = n->bitmap;
	int r;

	for (uint32_t i = 0; i < n->n; i++) {
		bool child = false;

		if (!n->collision) {
			uint32_t bit = bits & -bits;
			bits &= bits - 1;
			child = (n->childmap & bit) != 0;
		}
		r = child ? foreach_rec(n->slot[i].ptr, cb, arg) : cb(arg, n->slot[i].ptr);
		if (r)
			return r;
	}
	return 0;
}

int pmap_foreach(const struct pmap *m, int (*cb)(void *arg, void *val), void *arg)
{
	return m->root ? foreach_rec(m->root, cb, arg) : 0;
}

/* One side of a diff position: nothing, a leaf, or a subtree; on the
 * diff's stack, borrowing from the map. */
struct diff_ent {
	enum { ENT_NONE, ENT_LEAF, ENT_NODE } type;
	void *ptr;
	uint64_t hash;
};

/* State of one pmap_diff call; lives on its stack. */
struct diff_ctx {
	const struct pmap_ops *ops;
	int (*cb)(void *arg, void *va, void *vb);
	void *arg;
	/* For the leaf walks of the general case. */
	const struct diff_ent *other;
	unsigned shift;
	bool a_side;
};

static struct diff_ent node_ent(const struct pmap_node *n, uint32_t bit)
{
	struct diff_ent d = { .type = ENT_NONE };

	if (n->bitmap & bit) {
		const struct pmap_slot *s = &n->slot[slot_index(n->bitmap, bit)];

		d.ptr = s->ptr;
		d.hash = s->hash;
		d.type = (n->childmap & bit) ? ENT_NODE : ENT_LEAF;
	}
	return d;
}

static void *ent_find(const struct diff_ctx *c, const struct diff_ent *ent, unsigned shift,
		      uint64_t hash, const void *val)
{
	switch (ent->type) {
	case ENT_LEAF:
		return ent->hash == hash && c->ops->same_key(ent->ptr, val) ? ent->ptr : NULL;
	case ENT_NODE:
		return lookup(c->ops, ent->ptr, shift, hash, val, true);
	default:
		return NULL;
	}
}

/* Reports one leaf of side a (or b) against whatever the other side holds
 * at the same position. */
static int diff_leaf(struct diff_ctx *c, void *v, uint64_t hash)
{
	void *o = ent_find(c, c->other, c->shift, hash, v);

	if (c->a_side)
		return o == v ? 0 : c->cb(c->arg, v, o);
	return o ? 0 : c->cb(c->arg, NULL, v);
}

static int diff_walk(struct diff_ctx *c, const struct pmap_node *n)
{
	uint32_t bits = n->bitmap;
	int r;

	for (uint32_t i = 0; i < n->n; i++) {
		bool child = false;

		if (!n->collision) {
			uint32_t bit = bits & -bits;
			bits &= bits - 1;
			child = (n->childmap & bit) != 0;
		}
		r = child ? diff_walk(c, n->slot[i].ptr) : diff_leaf(c, n->slot[i].ptr,
								    n->slot[i].hash);
		if (r)
			return r;
	}
	return 0;
}

static int diff_side(struct diff_ctx *c, const struct diff_ent *self,
		     const struct diff_ent *other, unsigned shift, bool a_side)
{
	c->other = other;
	c->shift = shift;
	c->a_side = a_side;
	if (self->type == ENT_LEAF)
		return diff_leaf(c, self->ptr, self->hash);
	if (self->type == ENT_NODE)
		return diff_walk(c, self->ptr);
	return 0;
}

static int diff_ent(struct diff_ctx *c, const struct diff_ent *a, const struct diff_ent *b,
		    unsigned shift)
{
	int r;

	if (a->type == b->type && a->ptr == b->ptr)
		return 0; /* shared subtree, same leaf, or both empty */
	if (a->type == ENT_NODE && b->type == ENT_NODE) {
		const struct pmap_node *na = a->ptr, *nb = b->ptr;

		if (!na->collision && !nb->collision) {
			uint32_t bits = na->bitmap | nb->bitmap;

			while (bits) {
				uint32_t bit = bits & -bits;
				struct diff_ent ea = node_ent(na, bit), eb = node_ent(nb, bit);

				bits &= bits - 1;
				r = diff_ent(c, &ea, &eb, shift + BITS_PER_LEVEL);
				if (r)
					return r;
			}
			return 0;
		}
	}
	/* Shapes differ here: pair every leaf with its counterpart by key. */
	r = diff_side(c, a, b, shift, true);
	if (r)
		return r;
	return diff_side(c, b, a, shift, false);
}

int pmap_diff(const struct pmap *a, const struct pmap *b,
	      int (*cb)(void *arg, void *va, void *vb), void *arg)
{
	struct diff_ctx c = { .ops = a->ops, .cb = cb, .arg = arg };
	struct diff_ent ea = { .type = a->root ? ENT_NODE : ENT_NONE, .ptr = a->root };
	struct diff_ent eb = { .type = b->root ? ENT_NODE : ENT_NONE, .ptr = b->root };

	/* Roots are both at level 0. */
	return diff_ent(&c, &ea, &eb, 0);
}

static unsigned depth_rec(const struct pmap_node *n)
{
	unsigned best = 0;
	uint32_t bits = n->bitmap;

	if (n->collision)
		return 1;
	for (uint32_t i = 0; i < n->n; i++) {
		uint32_t bit = bits & -bits;

		bits &= bits - 1;
		if (n->childmap & bit) {
			unsigned d = depth_rec(n->slot[i].ptr);
			if (d > best)
				best = d;
		}
	}
	return best + 1;
}

unsigned pmap_depth(const struct pmap *m)
{
	return m->root ? depth_rec(m->root) : 0;
}

/* ---- pindex ---- */

#define PX_FAN 64u       /* chunk pointers per page */
#define PX_SLOTS 64u     /* slots per chunk */
#define PX_PAGE_SLOTS (PX_FAN * PX_SLOTS)

/* One slot; val NULL when free. Owned by its chunk. */
struct px_slot {
	uint64_t hash; /* the caller's hash, unmixed */
	void *val;     /* borrowed */
};

/* Slots with linear probing that wraps inside the chunk. Owned by its
 * references (pages); lives until the last is dropped. Mutated only by the
 * edit whose token it carries. */
struct px_chunk {
	uint32_t refcnt;   /* atomic */
	uint16_t used;
	uint16_t overflow; /* an add found it full: some entries are missing */
	uint64_t edit;
	struct px_slot slot[PX_SLOTS];
};

/* Chunk pointers (NULL: empty chunk). Ownership as for chunks. */
struct px_page {
	uint32_t refcnt; /* atomic */
	uint64_t edit;
	struct px_chunk *chunk[PX_FAN];
};

/* A sealed index: owned by one holder (a snapshot); its root array is its
 * own, pages and chunks are shared. */
struct pindex {
	size_t count;
	unsigned root_bits;
	struct px_page *root[]; /* 1 << root_bits; NULL: empty page */
};

/* An open edit; owned by the caller until pindex_edit_end/abort. */
struct pindex_edit {
	struct pindex *x; /* root array private to the edit */
	uint64_t token;
	size_t nodes_allocated;
};

/* The caller's hash indexes directly (no mixing on the request path): it
 * must be uniform in its low 12 + root_bits bits, as XXH3 is. */
#define px_mix(h) (h)

static inline size_t px_root(const struct pindex *x, uint64_t m)
{
	return (size_t)(m >> 12) & (((size_t)1 << x->root_bits) - 1);
}

static inline unsigned px_page_idx(uint64_t m)
{
	return (unsigned)(m >> 6) & (PX_FAN - 1);
}

static inline unsigned px_home(uint64_t m)
{
	return (unsigned)m & (PX_SLOTS - 1);
}

static void px_chunk_unref(struct px_chunk *c)
{
	if (c && __atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		free(c);
}

static void px_page_unref(struct px_page *p)
{
	if (!p || __atomic_sub_fetch(&p->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (unsigned i = 0; i < PX_FAN; i++)
		px_chunk_unref(p->chunk[i]);
	free(p);
}

void pindex_free(struct pindex *x)
{
	if (!x)
		return;
	for (size_t i = 0; i < ((size_t)1 << x->root_bits); i++)
		px_page_unref(x->root[i]);
	free(x);
}

void *pindex_get(const struct pindex *x, uint64_t hash, size_t nth, bool *unsure)
{
	uint64_t m = px_mix(hash);
	const struct px_page *pg = x->root[px_root(x, m)];
	const struct px_chunk *c;

	*unsure = false;
	if (!pg || !(c = pg->chunk[px_page_idx(m)]))
		return NULL;
	for (unsigned i = px_home(m), n = 0; n < PX_SLOTS; n++, i = (i + 1) & (PX_SLOTS - 1)) {
		const struct px_slot *s = &c->slot[i];

		if (!s->val)
			break;
		if (s->hash == hash && nth-- == 0)
			return s->val;
	}
	*unsure = c->overflow != 0;
	return NULL;
}

size_t pindex_count(const struct pindex *x)
{
	return x->count;
}

size_t pindex_capacity(const struct pindex *x)
{
	return ((size_t)PX_PAGE_SLOTS) << x->root_bits;
}

size_t pindex_edit_nodes_allocated(const struct pindex_edit *e)
{
	return e->nodes_allocated;
}

static struct pindex *px_alloc(unsigned root_bits)
{
	struct pindex *x = calloc(1, sizeof(*x) + (sizeof(x->root[0]) << root_bits));

	if (x)
		x->root_bits = root_bits;
	return x;
}

int pindex_edit_begin(const struct pindex *base, size_t expect, struct pindex_edit **ret,
		      bool *refill)
{
	struct pindex_edit *e = calloc(1, sizeof(*e));
	unsigned bits = 0;

	if (!e)
		return -ENOMEM;
	e->token = __atomic_fetch_add(&next_edit_token, 1, __ATOMIC_RELAXED);
	if (base && pindex_capacity(base) >= 2 * expect) {
		size_t n = (size_t)1 << base->root_bits;

		*refill = false;
		e->x = px_alloc(base->root_bits);
		if (!e->x)
			goto out_free;
		e->x->count = base->count;
		for (size_t i = 0; i < n; i++) {
			e->x->root[i] = base->root[i];
			if (base->root[i])
				__atomic_add_fetch(&base->root[i]->refcnt, 1, __ATOMIC_RELAXED);
		}
	} else {
		/* At most half full: chunks of 64 slots then overflow with a
		 * negligible chance, and a growing ruleset starts over once
		 * per doubling (the power of two rounds up). */
		while (((size_t)PX_PAGE_SLOTS << bits) < 2 * expect && bits < 40)
			bits++;
		*refill = true;
		e->x = px_alloc(bits);
		if (!e->x)
			goto out_free;
	}
	*ret = e;
	return 0;

out_free:
	free(e);
	return -ENOMEM;
}

/* Makes the page holding m writable by e; NULL on ENOMEM. */
static struct px_page *px_page_writable(struct pindex_edit *e, uint64_t m)
{
	struct px_page **pp = &e->x->root[px_root(e->x, m)], *old = *pp, *p;

	if (old && old->edit == e->token)
		return old;
	p = malloc(sizeof(*p));
	if (!p)
		return NULL;
	e->nodes_allocated++;
	p->refcnt = 1;
	p->edit = e->token;
	if (old) {
		memcpy(p->chunk, old->chunk, sizeof(p->chunk));
		for (unsigned i = 0; i < PX_FAN; i++)
			if (p->chunk[i])
				__atomic_add_fetch(&p->chunk[i]->refcnt, 1, __ATOMIC_RELAXED);
		px_page_unref(old);
	} else {
		memset(p->chunk, 0, sizeof(p->chunk));
	}
	*pp = p;
	return p;
}

static struct px_chunk *px_chunk_writable(struct pindex_edit *e, struct px_page *p, uint64_t m)
{
	struct px_chunk **cp = &p->chunk[px_page_idx(m)], *old = *cp, *c;

	if (old && old->edit == e->token)
		return old;
	c = malloc(sizeof(*c));
	if (!c)
		return NULL;
	e->nodes_allocated++;
	c->refcnt = 1;
	c->edit = e->token;
	if (old) {
		c->used = old->used;
		c->overflow = old->overflow;
		memcpy(c->slot, old->slot, sizeof(c->slot));
		px_chunk_unref(old);
	} else {
		c->used = 0;
		c->overflow = 0;
		memset(c->slot, 0, sizeof(c->slot));
	}
	*cp = c;
	return c;
}

int pindex_edit_add(struct pindex_edit *e, uint64_t hash, void *val)
{
	uint64_t m = px_mix(hash);
	struct px_page *p = px_page_writable(e, m);
	struct px_chunk *c = p ? px_chunk_writable(e, p, m) : NULL;
	unsigned i = px_home(m);

	if (!c)
		return -ENOMEM;
	if (c->used == PX_SLOTS) {
		c->overflow = 1;
		return 0;
	}
	while (c->slot[i].val)
		i = (i + 1) & (PX_SLOTS - 1);
	c->slot[i] = (struct px_slot){ hash, val };
	c->used++;
	e->x->count++;
	return 0;
}

int pindex_edit_remove(struct pindex_edit *e, uint64_t hash, const void *val)
{
	uint64_t m = px_mix(hash);
	const struct px_page *rp = e->x->root[px_root(e->x, m)];
	const struct px_chunk *rc = rp ? rp->chunk[px_page_idx(m)] : NULL;
	struct px_chunk *c;
	struct px_page *p;
	unsigned i = px_home(m), n;

	/* Find it before copying anything: a miss copies nothing. */
	if (!rc)
		return -ENOENT;
	for (n = 0; n < PX_SLOTS; n++, i = (i + 1) & (PX_SLOTS - 1)) {
		if (!rc->slot[i].val)
			return -ENOENT;
		if (rc->slot[i].val == val && rc->slot[i].hash == hash)
			break;
	}
	if (n == PX_SLOTS)
		return -ENOENT;
	p = px_page_writable(e, m);
	c = p ? px_chunk_writable(e, p, m) : NULL;
	if (!c)
		return -ENOMEM;
	/* Backward-shift deletion keeps every probe run unbroken. */
	for (unsigned j = i, k = 1; k < PX_SLOTS; k++) {
		j = (j + 1) & (PX_SLOTS - 1);
		if (!c->slot[j].val)
			break;
		unsigned home = px_home(px_mix(c->slot[j].hash));
		/* Move j back to the hole when its home is not within (i, j]. */
		if (((j - home) & (PX_SLOTS - 1)) >= ((j - i) & (PX_SLOTS - 1))) {
			c->slot[i] = c->slot[j];
			i = j;
		}
	}
	c->slot[i] = (struct px_slot){ 0, NULL };
	c->used--;
	e->x->count--;
	return 0;
}

int pindex_edit_end(struct pindex_edit *e, struct pindex **ret)
{
	/* The token dies with the edit: its pages and chunks are sealed. */
	*ret = e->x;
	free(e);
	return 0;
}

void pindex_edit_abort(struct pindex_edit *e)
{
	if (!e)
		return;
	pindex_free(e->x);
	free(e);
}
