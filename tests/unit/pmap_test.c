/* pmap_test.c - the persistent hash map against a plain array model.
 *
 * Values are test structs that count their references, so every test can
 * check that references balance once all maps are gone. Hash functions are
 * chosen per test to force collisions and deep chains.
 */
#include <criterion/criterion.h>

#include "fixture.h"
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pmap.h"

/* A stored value; lives in a test-owned pool for the whole test. */
struct tval {
	uint64_t key;
	uint64_t hash;
	int refs;
};

static long total_refs;
static long same_key_calls;

static bool t_match(const void *val, const void *key)
{
	return ((const struct tval *)val)->key == *(const uint64_t *)key;
}

static bool t_same(const void *a, const void *b)
{
	same_key_calls++;
	return ((const struct tval *)a)->key == ((const struct tval *)b)->key;
}

static void t_ref(void *v)
{
	__atomic_add_fetch(&((struct tval *)v)->refs, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&total_refs, 1, __ATOMIC_RELAXED);
}

static void t_unref(void *v)
{
	int left = __atomic_sub_fetch(&((struct tval *)v)->refs, 1, __ATOMIC_RELAXED);

	cr_assert_geq(left, 0, "value %lu released more often than taken",
		      (unsigned long)((struct tval *)v)->key);
	__atomic_sub_fetch(&total_refs, 1, __ATOMIC_RELAXED);
}

static const struct pmap_ops ops = {
	.match = t_match, .same_key = t_same, .val_ref = t_ref, .val_unref = t_unref,
};

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Deterministic PRNG so every run sees the same operations. */
static uint64_t rnd(void)
{
	return fixture_rand() >> 17;
}

enum hash_kind { H_MIXED, H_CONSTANT, H_TOP_BITS, H_LOW_BITS };

static uint64_t hash_of(enum hash_kind k, uint64_t key)
{
	switch (k) {
	case H_MIXED:
		return mix64(key);
	case H_CONSTANT:
		return 0x1234;
	case H_TOP_BITS: /* differ only in the last level: 13-deep chains */
		return (key % 8) << 61;
	case H_LOW_BITS: /* 16 hash values: collision nodes everywhere */
		return mix64(key % 16);
	}
	return 0;
}

/* Two candidate values per key so that puts also replace. */
#define MAXKEYS 4096
static struct tval pool[MAXKEYS][2];

static void pool_init(enum hash_kind hk, size_t nkeys)
{
	for (size_t k = 0; k < nkeys; k++) {
		for (int v = 0; v < 2; v++) {
			pool[k][v].key = k;
			pool[k][v].hash = hash_of(hk, k);
			pool[k][v].refs = 0;
		}
	}
	total_refs = 0;
}

static void put(struct pmap_edit *e, struct tval *v)
{
	cr_assert_eq(pmap_edit_put(e, v->hash, &v->key, v), 0);
}

static struct pmap *build(struct tval *const *model, size_t nkeys)
{
	struct pmap *base = pmap_new(&ops), *m;
	struct pmap_edit *e;

	cr_assert_not_null(base);
	cr_assert_eq(pmap_edit_begin(base, &e), 0);
	for (size_t k = 0; k < nkeys; k++)
		if (model[k])
			put(e, model[k]);
	m = pmap_edit_end(e);
	cr_assert_not_null(m);
	pmap_unref(base);
	return m;
}

static void check_against(const struct pmap *m, struct tval *const *model, size_t nkeys)
{
	size_t n = 0;

	for (size_t k = 0; k < nkeys; k++) {
		uint64_t key = k;
		void *got = pmap_get(m, pool[k][0].hash, &key);

		cr_assert_eq(got, model[k], "key %zu: got %p, want %p", k, got,
			     (void *)model[k]);
		n += model[k] != NULL;
	}
	cr_assert_eq(pmap_count(m), n);
}

static int count_cb(void *arg, void *val)
{
	(void)val;
	(*(size_t *)arg)++;
	return 0;
}

struct random_ops_case {
	char name[64]; /* inline: Criterion copies params into the test process */
	enum hash_kind hk;
	size_t nkeys;
	size_t nops;
};

ParameterizedTestParameters(pmap, random_ops_match_reference_model)
{
	static struct random_ops_case cases[] = {
		{ "mixed hashes", H_MIXED, 4096, 40000 },
		{ "one constant hash", H_CONSTANT, 64, 4000 },
		{ "hashes differing only in the top bits", H_TOP_BITS, 512, 8000 },
		{ "sixteen distinct hashes", H_LOW_BITS, 512, 8000 },
	};
	return cr_make_param_array(struct random_ops_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct random_ops_case *c, pmap, random_ops_match_reference_model)
{
	static struct tval *model[MAXKEYS];
	struct pmap *m = pmap_new(&ops);
	struct pmap_edit *e = NULL;

	cr_log_info("case: %s", c->name);
	pool_init(c->hk, c->nkeys);
	memset(model, 0, sizeof(model));
	fixture_seed(42);
	for (size_t i = 0; i < c->nops; i++) {
		uint64_t k = rnd() % c->nkeys;

		if (!e)
			cr_assert_eq(pmap_edit_begin(m, &e), 0);
		if (rnd() % 3 == 0) {
			int r = pmap_edit_del(e, pool[k][0].hash, &k);

			cr_assert_eq(r, model[k] ? 0 : -ENOENT, "op %zu del %lu", i,
				     (unsigned long)k);
			model[k] = NULL;
		} else {
			struct tval *v = &pool[k][rnd() % 2];

			put(e, v);
			model[k] = v;
		}
		cr_assert_eq(pmap_edit_get(e, pool[k][0].hash, &k), model[k]);
		/* Seal every few operations so both in-place and path-copy
		 * mutations are exercised. */
		if (rnd() % 16 == 0) {
			pmap_unref(m);
			m = pmap_edit_end(e);
			cr_assert_not_null(m);
			e = NULL;
			check_against(m, model, c->nkeys);
		}
	}
	if (e) {
		pmap_unref(m);
		m = pmap_edit_end(e);
	}
	check_against(m, model, c->nkeys);

	size_t seen = 0;
	cr_assert_eq(pmap_foreach(m, count_cb, &seen), 0);
	cr_assert_eq(seen, pmap_count(m));
	cr_assert_leq(pmap_depth(m), 14);

	pmap_unref(m);
	cr_assert_eq(total_refs, 0, "%ld references left", total_refs);
}

Test(pmap, old_versions_are_unchanged_by_later_edits)
{
	enum { NK = 2048, NVER = 12 };
	static struct tval *models[NVER][NK];
	struct pmap *versions[NVER];
	struct pmap *empty = pmap_new(&ops), *m = empty;

	pool_init(H_MIXED, NK);
	fixture_seed(7);
	for (int v = 0; v < NVER; v++) {
		struct pmap_edit *e;

		if (v > 0)
			memcpy(models[v], models[v - 1], sizeof(models[v]));
		cr_assert_eq(pmap_edit_begin(m, &e), 0);
		for (int i = 0; i < 300; i++) {
			uint64_t k = rnd() % NK;

			if (rnd() % 4 == 0) {
				pmap_edit_del(e, pool[k][0].hash, &k);
				models[v][k] = NULL;
			} else {
				put(e, &pool[k][rnd() % 2]);
				models[v][k] = pmap_edit_get(e, pool[k][0].hash, &k);
			}
		}
		versions[v] = pmap_edit_end(e);
		cr_assert_not_null(versions[v]);
		m = versions[v];
	}
	pmap_unref(empty);
	for (int v = 0; v < NVER; v++)
		check_against(versions[v], models[v], NK);
	/* Free in an order that interleaves old and new owners. */
	for (int v = 0; v < NVER; v += 2)
		pmap_unref(versions[v]);
	for (int v = 1; v < NVER; v += 2) {
		check_against(versions[v], models[v], NK);
		pmap_unref(versions[v]);
	}
	cr_assert_eq(total_refs, 0);
}

/* Diff results collected as a per-key record. */
struct diff_rec {
	void *va[MAXKEYS];
	void *vb[MAXKEYS];
	int hits[MAXKEYS];
	size_t calls;
};

static int rec_cb(void *arg, void *va, void *vb)
{
	struct diff_rec *d = arg;
	const struct tval *any = va ? va : vb;

	cr_assert_not_null(any);
	cr_assert_neq(va, vb);
	d->va[any->key] = va;
	d->vb[any->key] = vb;
	d->hits[any->key]++;
	d->calls++;
	return 0;
}

struct diff_case {
	char name[64]; /* inline: Criterion copies params into the test process */
	enum hash_kind hk;
	size_t nkeys;
	int derived; /* b derived from a by a few edits, else independent */
};

ParameterizedTestParameters(pmap, diff_reports_exactly_the_differing_keys)
{
	static struct diff_case cases[] = {
		{ "derived, mixed hashes", H_MIXED, 3000, 1 },
		{ "independent, mixed hashes", H_MIXED, 3000, 0 },
		{ "derived, constant hash", H_CONSTANT, 40, 1 },
		{ "independent, constant hash", H_CONSTANT, 40, 0 },
		{ "derived, top-bit hashes", H_TOP_BITS, 300, 1 },
		{ "independent, sixteen hashes", H_LOW_BITS, 300, 0 },
	};
	return cr_make_param_array(struct diff_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct diff_case *c, pmap, diff_reports_exactly_the_differing_keys)
{
	static struct tval *ma[MAXKEYS], *mb[MAXKEYS];
	static struct diff_rec rec;

	cr_log_info("case: %s", c->name);
	pool_init(c->hk, c->nkeys);
	fixture_seed(99);
	for (int round = 0; round < 20; round++) {
		struct pmap *a, *b;

		for (size_t k = 0; k < c->nkeys; k++)
			ma[k] = rnd() % 2 ? &pool[k][rnd() % 2] : NULL;
		a = build(ma, c->nkeys);
		if (c->derived) {
			struct pmap_edit *e;

			memcpy(mb, ma, sizeof(ma));
			cr_assert_eq(pmap_edit_begin(a, &e), 0);
			for (int i = 0; i < 1 + round; i++) {
				uint64_t k = rnd() % c->nkeys;

				if (rnd() % 2) {
					pmap_edit_del(e, pool[k][0].hash, &k);
					mb[k] = NULL;
				} else {
					mb[k] = &pool[k][rnd() % 2];
					put(e, mb[k]);
				}
			}
			b = pmap_edit_end(e);
		} else {
			for (size_t k = 0; k < c->nkeys; k++)
				mb[k] = rnd() % 2 ? &pool[k][rnd() % 2] : NULL;
			b = build(mb, c->nkeys);
		}
		memset(&rec, 0, sizeof(rec));
		cr_assert_eq(pmap_diff(a, b, rec_cb, &rec), 0);
		for (size_t k = 0; k < c->nkeys; k++) {
			if (ma[k] == mb[k]) {
				cr_assert_eq(rec.hits[k], 0, "key %zu reported but equal", k);
				continue;
			}
			cr_assert_eq(rec.hits[k], 1, "key %zu reported %d times", k, rec.hits[k]);
			cr_assert_eq(rec.va[k], ma[k]);
			cr_assert_eq(rec.vb[k], mb[k]);
		}
		pmap_unref(a);
		pmap_unref(b);
	}
	cr_assert_eq(total_refs, 0);
}

/* A 100,000-key map built once, shared by the tests below. */
#define BIGN 100000
static struct tval *big_vals;

static struct pmap *big_map(void)
{
	struct pmap *base = pmap_new(&ops), *m;
	struct pmap_edit *e;

	big_vals = calloc(BIGN + 1, sizeof(*big_vals));
	cr_assert_not_null(big_vals);
	total_refs = 0;
	cr_assert_eq(pmap_edit_begin(base, &e), 0);
	for (uint64_t k = 0; k <= BIGN; k++) {
		big_vals[k].key = k;
		big_vals[k].hash = mix64(k);
		if (k < BIGN)
			put(e, &big_vals[k]);
	}
	/* Bulk insertion mutates its own nodes in place: far fewer node
	 * allocations than keys (path copying would need ~4 per key). */
	cr_assert_lt(pmap_edit_nodes_allocated(e), BIGN, "allocated %zu nodes",
		     pmap_edit_nodes_allocated(e));
	m = pmap_edit_end(e);
	pmap_unref(base);
	cr_assert_eq(pmap_count(m), BIGN);
	return m;
}

static int count_diff_cb(void *arg, void *va, void *vb)
{
	(void)va;
	(void)vb;
	(*(size_t *)arg)++;
	return 0;
}

Test(pmap, depth_is_logarithmic_at_100k)
{
	struct pmap *m = big_map();
	unsigned d = pmap_depth(m);

	/* Most keys sit at level 4 (32^3 < 100k); the deepest node is where
	 * the closest pair of hashes diverges, about log32(n^2) levels. */
	cr_assert_geq(d, 4);
	cr_assert_leq(d, 8, "depth %u", d);
	for (uint64_t k = 0; k < BIGN; k += 997)
		cr_assert_eq(pmap_get(m, big_vals[k].hash, &k), &big_vals[k]);
	uint64_t absent = BIGN;
	cr_assert_null(pmap_get(m, big_vals[BIGN].hash, &absent));
	pmap_unref(m);
	cr_assert_eq(total_refs, 0);
	free(big_vals);
}

Test(pmap, one_key_edit_on_100k_copies_only_its_path)
{
	struct pmap *m = big_map(), *m2, *m3, *m4;
	struct pmap_edit *e;
	unsigned depth = pmap_depth(m);
	uint64_t k = 12345;

	/* replace */
	cr_assert_eq(pmap_edit_begin(m, &e), 0);
	struct tval repl = { .key = k, .hash = big_vals[k].hash };
	put(e, &repl);
	cr_assert_leq(pmap_edit_nodes_allocated(e), 2 * depth);
	m2 = pmap_edit_end(e);

	/* insert */
	cr_assert_eq(pmap_edit_begin(m2, &e), 0);
	put(e, &big_vals[BIGN]);
	cr_assert_leq(pmap_edit_nodes_allocated(e), 2 * depth, "allocated %zu",
		      pmap_edit_nodes_allocated(e));
	m3 = pmap_edit_end(e);

	/* delete */
	cr_assert_eq(pmap_edit_begin(m3, &e), 0);
	uint64_t k2 = 777;
	cr_assert_eq(pmap_edit_del(e, big_vals[k2].hash, &k2), 0);
	cr_assert_leq(pmap_edit_nodes_allocated(e), 2 * depth);
	m4 = pmap_edit_end(e);

	/* Only the changed key is reported, and the walk touches O(depth)
	 * leaves, not the 100k shared ones. */
	size_t calls = 0;
	same_key_calls = 0;
	cr_assert_eq(pmap_diff(m, m2, count_diff_cb, &calls), 0);
	cr_assert_eq(calls, 1);
	cr_assert_leq(same_key_calls, 64);
	calls = 0;
	cr_assert_eq(pmap_diff(m2, m3, count_diff_cb, &calls), 0);
	cr_assert_eq(calls, 1);
	calls = 0;
	cr_assert_eq(pmap_diff(m3, m4, count_diff_cb, &calls), 0);
	cr_assert_eq(calls, 1);
	calls = 0;
	cr_assert_eq(pmap_diff(m, m4, count_diff_cb, &calls), 0);
	cr_assert_eq(calls, 3);

	/* The base is untouched. */
	cr_assert_eq(pmap_get(m, big_vals[k].hash, &k), &big_vals[k]);
	cr_assert_eq(pmap_get(m4, big_vals[k].hash, &k), &repl);
	cr_assert_eq(pmap_count(m), BIGN);
	cr_assert_eq(pmap_count(m3), BIGN + 1);
	cr_assert_eq(pmap_count(m4), BIGN);
	cr_assert_null(pmap_get(m4, big_vals[k2].hash, &k2));
	cr_assert_eq(pmap_get(m3, big_vals[k2].hash, &k2), &big_vals[k2]);

	pmap_unref(m2);
	pmap_unref(m);
	pmap_unref(m4);
	pmap_unref(m3);
	cr_assert_eq(total_refs, 0);
	cr_assert_eq(repl.refs, 0);
	free(big_vals);
}

Test(pmap, references_balance_after_all_versions_are_freed)
{
	enum { NK = 1000 };
	struct pmap *keep[50];
	struct pmap *empty = pmap_new(&ops), *m = empty;

	pool_init(H_LOW_BITS, NK);
	fixture_seed(3);
	for (int v = 0; v < 50; v++) {
		struct pmap_edit *e;

		cr_assert_eq(pmap_edit_begin(m, &e), 0);
		for (int i = 0; i < 60; i++) {
			uint64_t k = rnd() % NK;

			if (rnd() % 3 == 0)
				pmap_edit_del(e, pool[k][0].hash, &k);
			else
				put(e, &pool[k][rnd() % 2]);
		}
		keep[v] = m = pmap_edit_end(e);
	}
	/* Each value is referenced once per leaf slot that holds it, so the
	 * total is positive while maps are alive... */
	cr_assert_gt(total_refs, 0);
	pmap_unref(empty);
	for (int v = 49; v >= 0; v--)
		pmap_unref(keep[v]);
	/* ...and every reference taken was released exactly once. */
	cr_assert_eq(total_refs, 0);
	for (int k = 0; k < NK; k++)
		cr_assert_eq(pool[k][0].refs + pool[k][1].refs, 0, "key %d", k);
}

Test(pmap, abort_releases_everything_the_edit_took)
{
	enum { NK = 2000 };
	static struct tval *model[NK];
	struct pmap *base;
	struct pmap_edit *e;

	pool_init(H_MIXED, NK);
	for (size_t k = 0; k < NK; k += 2)
		model[k] = &pool[k][0];
	base = build(model, NK);
	long refs_before = total_refs;

	cr_assert_eq(pmap_edit_begin(base, &e), 0);
	for (uint64_t k = 0; k < NK; k++) {
		if (k % 3 == 0 && model[k])
			cr_assert_eq(pmap_edit_del(e, pool[k][0].hash, &k), 0);
		else
			put(e, &pool[k][1]);
	}
	cr_assert_gt(pmap_edit_nodes_allocated(e), 0);
	pmap_edit_abort(e);
	cr_assert_eq(total_refs, refs_before);
	check_against(base, model, NK);
	pmap_edit_abort(NULL);
	pmap_unref(base);
	cr_assert_eq(total_refs, 0);
}

Test(pmap, edit_reports_count_and_lookups_while_open)
{
	struct pmap *base = pmap_new(&ops), *m;
	struct pmap_edit *e;
	uint64_t k = 5, absent = 6;

	pool_init(H_MIXED, 8);
	cr_assert_eq(pmap_count(base), 0);
	cr_assert_null(pmap_get(base, pool[k][0].hash, &k));
	cr_assert_eq(pmap_depth(base), 0);
	cr_assert_eq(pmap_edit_begin(base, &e), 0);
	cr_assert_eq(pmap_edit_del(e, pool[k][0].hash, &k), -ENOENT);
	put(e, &pool[k][0]);
	cr_assert_eq(pmap_edit_count(e), 1);
	cr_assert_eq(pmap_edit_get(e, pool[k][0].hash, &k), &pool[k][0]);
	cr_assert_null(pmap_edit_get(e, pool[absent][0].hash, &absent));
	put(e, &pool[k][1]); /* replace: count unchanged, old value released */
	cr_assert_eq(pmap_edit_count(e), 1);
	cr_assert_eq(pool[k][0].refs, 0);
	cr_assert_eq(pool[k][1].refs, 1);
	m = pmap_edit_end(e);
	cr_assert_eq(pmap_count(m), 1);
	cr_assert_eq(pmap_depth(m), 1);
	cr_assert_eq(pmap_count(base), 0, "base unchanged");

	/* Storing the same pointer again copies nothing. */
	cr_assert_eq(pmap_edit_begin(m, &e), 0);
	put(e, &pool[k][1]);
	cr_assert_eq(pmap_edit_nodes_allocated(e), 0);
	cr_assert_eq(pmap_edit_del(e, pool[absent][0].hash, &absent), -ENOENT);
	cr_assert_eq(pmap_edit_nodes_allocated(e), 0, "a miss copies nothing");
	cr_assert_eq(pmap_edit_del(e, pool[k][0].hash, &k), 0);
	cr_assert_eq(pmap_edit_count(e), 0);
	struct pmap *empty = pmap_edit_end(e);
	cr_assert_eq(pmap_count(empty), 0);
	cr_assert_null(pmap_get(empty, pool[k][0].hash, &k));

	pmap_unref(empty);
	pmap_unref(m);
	pmap_unref(base);
	cr_assert_eq(total_refs, 0);
}

Test(pmap, ref_keeps_map_alive_until_last_unref)
{
	static struct tval *model[16];
	struct pmap *m, *r;

	pool_init(H_MIXED, 16);
	model[3] = &pool[3][0];
	m = build(model, 16);
	r = pmap_ref(m);
	cr_assert_eq(r, m);
	pmap_unref(m);
	check_against(r, model, 16);
	cr_assert_eq(pool[3][0].refs, 1);
	pmap_unref(r);
	cr_assert_eq(pool[3][0].refs, 0);
	pmap_unref(NULL);
}

static int stop_after_three(void *arg, void *val)
{
	(void)val;
	return ++*(int *)arg == 3 ? 42 : 0;
}

static int stop_diff_after_two(void *arg, void *va, void *vb)
{
	(void)va;
	(void)vb;
	return ++*(int *)arg == 2 ? -7 : 0;
}

Test(pmap, foreach_and_diff_stop_at_first_nonzero_return)
{
	static struct tval *model[200];
	struct pmap *a, *b, *empty = pmap_new(&ops);
	int n = 0;

	pool_init(H_MIXED, 200);
	for (size_t k = 0; k < 200; k++)
		model[k] = &pool[k][0];
	a = build(model, 200);
	cr_assert_eq(pmap_foreach(a, stop_after_three, &n), 42);
	cr_assert_eq(n, 3);
	cr_assert_eq(pmap_foreach(empty, stop_after_three, &n), 0);

	n = 0;
	cr_assert_eq(pmap_diff(a, empty, stop_diff_after_two, &n), -7);
	cr_assert_eq(n, 2);
	b = pmap_ref(a);
	n = 0;
	cr_assert_eq(pmap_diff(a, b, stop_diff_after_two, &n), 0);
	cr_assert_eq(n, 0, "identical maps: nothing visited");

	size_t calls = 0;
	cr_assert_eq(pmap_diff(empty, a, count_diff_cb, &calls), 0);
	cr_assert_eq(calls, 200);

	pmap_unref(a);
	pmap_unref(b);
	pmap_unref(empty);
	cr_assert_eq(total_refs, 0);
}

/* Unowned values: ops without ref/unref. */
static const struct pmap_ops bare_ops = { .match = t_match, .same_key = t_same };

Test(pmap, values_without_ref_callbacks_are_borrowed)
{
	struct pmap *base = pmap_new(&bare_ops), *m;
	struct pmap_edit *e;
	struct tval v = { .key = 1, .hash = mix64(1) };

	cr_assert_eq(pmap_edit_begin(base, &e), 0);
	cr_assert_eq(pmap_edit_put(e, v.hash, &v.key, &v), 0);
	m = pmap_edit_end(e);
	cr_assert_eq(pmap_get(m, v.hash, &v.key), &v);
	cr_assert_eq(v.refs, 0);
	pmap_unref(m);
	pmap_unref(base);
}

/* ---- pmap_get_hash ---- */

Test(pmap, get_hash_returns_every_value_of_a_colliding_hash)
{
	static struct tval v[3] = { { 1, 42, 0 }, { 2, 42, 0 }, { 3, 7, 0 } };
	struct pmap *m = pmap_new(&ops);
	struct pmap_edit *e;
	bool seen[3] = { 0 };
	void *p;
	size_t n;

	cr_assert_eq(pmap_edit_begin(m, &e), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(pmap_edit_put(e, v[i].hash, &v[i].key, &v[i]), 0);
	pmap_unref(m);
	m = pmap_edit_end(e);
	for (n = 0; (p = pmap_get_hash(m, 42, n)); n++)
		seen[(struct tval *)p - v] = true;
	cr_assert_eq(n, 2, "both values under hash 42, and only them");
	cr_assert(seen[0] && seen[1] && !seen[2]);
	cr_assert_eq(pmap_get_hash(m, 7, 0), &v[2]);
	cr_assert_null(pmap_get_hash(m, 7, 1));
	cr_assert_null(pmap_get_hash(m, 8, 0));
	pmap_unref(m);
	cr_assert_eq(total_refs, 0);
}

/* ---- pindex ---- */

/* A pindex holding vals[i] under hash h(i), checked against the model. */
static struct pindex *px_build(const struct pindex *base, size_t expect, const uint64_t *hash,
			       struct tval *vals, size_t n, bool *refilled)
{
	struct pindex_edit *e;
	struct pindex *x;
	bool refill;

	cr_assert_eq(pindex_edit_begin(base, expect, &e, &refill), 0);
	if (refilled)
		*refilled = refill;
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(pindex_edit_add(e, hash[i], &vals[i]), 0);
	cr_assert_eq(pindex_edit_end(e, &x), 0);
	return x;
}

static bool px_has(const struct pindex *x, uint64_t hash, const void *val)
{
	bool unsure;
	void *p;

	for (size_t n = 0; (p = pindex_get(x, hash, n, &unsure)); n++)
		if (p == val)
			return true;
	return false;
}

Test(pindex, finds_what_was_added_and_nothing_else)
{
	enum { N = 20000 };
	static struct tval vals[N];
	static uint64_t hash[N];
	struct pindex *x;
	bool unsure;

	for (size_t i = 0; i < N; i++) {
		hash[i] = mix64(i);
		vals[i].key = i;
	}
	x = px_build(NULL, N, hash, vals, N, NULL);
	cr_assert_eq(pindex_count(x), N);
	cr_assert_geq(pindex_capacity(x), 2 * N);
	for (size_t i = 0; i < N; i++)
		cr_assert(px_has(x, hash[i], &vals[i]), "entry %zu", i);
	for (size_t i = N; i < 2 * N; i++) {
		cr_assert_null(pindex_get(x, mix64(i), 0, &unsure));
		cr_assert_not(unsure);
	}
	pindex_free(x);
}

Test(pindex, removing_keeps_every_other_entry_reachable)
{
	enum { N = 100 };
	static struct tval vals[N];
	static uint64_t hash[N];
	struct pindex_edit *e;
	struct pindex *x, *y;
	bool refill;

	/* Two chunks (hash bits 7-11 clear, one page) for 100 entries: long
	 * probe runs, which removals must shift, not break. */
	for (size_t i = 0; i < N; i++)
		hash[i] = mix64(i) & ~(uint64_t)0xf80;
	x = px_build(NULL, N, hash, vals, N, NULL);
	cr_assert_eq(pindex_count(x), N, "no chunk overflowed");
	cr_assert_eq(pindex_edit_begin(x, N, &e, &refill), 0);
	cr_assert_not(refill);
	for (size_t i = 0; i < N; i += 3)
		cr_assert_eq(pindex_edit_remove(e, hash[i], &vals[i]), 0);
	cr_assert_eq(pindex_edit_remove(e, hash[0], &vals[0]), -ENOENT);
	cr_assert_eq(pindex_edit_end(e, &y), 0);
	for (size_t i = 0; i < N; i++) {
		cr_assert(px_has(x, hash[i], &vals[i]), "base unchanged: %zu", i);
		cr_assert_eq(px_has(y, hash[i], &vals[i]), i % 3 != 0, "entry %zu", i);
	}
	cr_assert_eq(pindex_count(y), N - (N + 2) / 3);
	pindex_free(x);
	pindex_free(y);
}

Test(pindex, a_one_key_edit_copies_one_page_and_one_chunk)
{
	enum { N = 50000 };
	static struct tval vals[N + 1];
	static uint64_t hash[N + 1];
	struct pindex_edit *e;
	struct pindex *x, *y;
	bool refill;

	for (size_t i = 0; i <= N; i++)
		hash[i] = mix64(i);
	x = px_build(NULL, N + 1, hash, vals, N, NULL);
	cr_assert_eq(pindex_edit_begin(x, N + 1, &e, &refill), 0);
	cr_assert_not(refill);
	cr_assert_eq(pindex_edit_add(e, hash[N], &vals[N]), 0);
	cr_assert_eq(pindex_edit_nodes_allocated(e), 2);
	cr_assert_eq(pindex_edit_end(e, &y), 0);
	cr_assert(px_has(y, hash[N], &vals[N]));
	cr_assert_not(px_has(x, hash[N], &vals[N]));
	/* Freeing either leaves the other whole: pages and chunks are shared
	 * by reference. */
	pindex_free(x);
	for (size_t i = 0; i <= N; i++)
		cr_assert(px_has(y, hash[i], &vals[i]), "entry %zu", i);
	pindex_free(y);
}

Test(pindex, growing_past_half_full_starts_over_for_a_refill)
{
	static struct tval vals[4];
	uint64_t hash[4] = { mix64(1), mix64(2), mix64(3), mix64(4) };
	struct pindex_edit *e;
	struct pindex *x;
	bool refill;

	x = px_build(NULL, 4, hash, vals, 4, NULL);
	cr_assert_eq(pindex_edit_begin(x, pindex_capacity(x), &e, &refill), 0);
	cr_assert(refill, "a table for twice its capacity must be a new one");
	cr_assert_eq(pindex_edit_add(e, hash[0], &vals[0]), 0);
	pindex_edit_abort(e);
	pindex_edit_abort(NULL);
	pindex_free(x);
	pindex_free(NULL);
}

Test(pindex, a_full_chunk_drops_adds_and_says_lookups_are_unsure)
{
	enum { N = 70 };
	static struct tval vals[N];
	uint64_t hash[N];
	struct pindex *x;
	size_t found = 0;
	bool unsure;

	/* The same low 12 bits: one page, one chunk, for every entry. */
	for (size_t i = 0; i < N; i++)
		hash[i] = (mix64(i) << 12) | 0x5a5;
	x = px_build(NULL, 0, hash, vals, N, NULL);
	cr_assert_eq(pindex_count(x), 64);
	for (size_t i = 0; i < N; i++)
		found += px_has(x, hash[i], &vals[i]);
	cr_assert_eq(found, 64);
	cr_assert_null(pindex_get(x, (mix64(999) << 12) | 0x5a5, 0, &unsure));
	cr_assert(unsure, "a miss in an overflowed chunk must send the caller to its map");
	cr_assert_null(pindex_get(x, (mix64(999) << 12) | 0x1a5, 0, &unsure));
	cr_assert_not(unsure);
	pindex_free(x);
}
