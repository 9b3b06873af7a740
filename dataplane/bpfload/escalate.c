/* escalate.c - per-source rejection counting for escalation to the kernel.
 * The table is set-associative: a source hashes (keyed XXH3, so a client
 * cannot aim its addresses at one bucket) to a bucket of ESCALATE_BUCKET_SLOTS
 * slots, and a bucket is only touched under its stripe's mutex. The deny
 * callback runs after the lock is dropped: it is a bpf() syscall.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <xxhash.h>

#include "escalate.h"
#include "policy.h"

#define STRIPES 256u

/* Policy packed in one word so that a reader never mixes two policies:
 * rejects (21 bits), window_ms (22 bits), ttl_s (17 bits). */
#define P_REJECTS_BITS 21
#define P_WINDOW_BITS 22
#define P_TTL_BITS 17
_Static_assert(POLICY_MAX_ESCALATION_REJECTS < (1u << P_REJECTS_BITS), "rejects bits");
_Static_assert(POLICY_MAX_ESCALATION_WINDOW_MS < (1u << P_WINDOW_BITS), "window bits");
_Static_assert(POLICY_MAX_ESCALATION_TTL_S < (1u << P_TTL_BITS), "ttl bits");

/* One tracked source. Owned by its bucket; guarded by the bucket's stripe. */
struct slot {
	uint8_t key[16];          /* IPv4 as ::ffff:a.b.c.d, IPv6 masked to /64 */
	uint64_t window_start_ns; /* first rejection of the current window */
	uint64_t until_ns;        /* escalated (or backing off) until; 0: not */
	uint32_t count;           /* rejections in the current window */
	bool used;
};

/* One lock per cache line: workers rejecting sources of neighbouring
 * stripes must not bounce one line between them. */
struct stripe {
	pthread_mutex_t m;
} __attribute__((aligned(64)));

/* Owned by the node (node_bpf.c); lives until escalate_free(). */
struct escalate {
	struct slot *slots;       /* n_buckets * ESCALATE_BUCKET_SLOTS */
	size_t n_buckets;         /* power of two */
	uint64_t seed;
	escalate_deny_fn deny;
	void *deny_arg;
	_Atomic uint64_t policy;  /* packed, see P_* */
	_Atomic uint64_t rejects, escalations, failures, evictions;
	_Atomic size_t entries;
	struct stripe stripe[STRIPES];
};

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int escalate_new(const struct escalate_config *cfg, struct escalate **ret)
{
	struct escalate *e;
	size_t cap;

	if (!cfg || !cfg->deny || !ret || cfg->capacity > ESCALATE_MAX_CAPACITY)
		return -EINVAL;
	cap = cfg->capacity ? cfg->capacity : ESCALATE_DEFAULT_CAPACITY;
	if (cap < ESCALATE_BUCKET_SLOTS)
		cap = ESCALATE_BUCKET_SLOTS;
	/* Round up to a power of two: the bucket index is a mask. */
	while (cap & (cap - 1))
		cap += cap & -cap;
	/* The stripes are cache-line aligned: so must the struct be. */
	e = aligned_alloc(_Alignof(struct escalate), sizeof(*e));
	if (!e)
		return -ENOMEM;
	memset(e, 0, sizeof(*e));
	e->slots = calloc(cap, sizeof(*e->slots));
	if (!e->slots) {
		free(e);
		return -ENOMEM;
	}
	e->n_buckets = cap / ESCALATE_BUCKET_SLOTS;
	e->seed = cfg->hash_seed;
	if (!e->seed && getrandom(&e->seed, sizeof(e->seed), GRND_NONBLOCK) != sizeof(e->seed)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		e->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uintptr_t)e;
	}
	e->deny = cfg->deny;
	e->deny_arg = cfg->deny_arg;
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_mutex_init(&e->stripe[i].m, NULL);
	*ret = e;
	return 0;
}

void escalate_free(struct escalate *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&e->stripe[i].m);
	free(e->slots);
	free(e);
}

void escalate_set_policy(struct escalate *e, uint32_t rejects, uint32_t window_ms, uint32_t ttl_s)
{
	uint64_t p;

	if (rejects > POLICY_MAX_ESCALATION_REJECTS)
		rejects = POLICY_MAX_ESCALATION_REJECTS;
	if (!window_ms)
		window_ms = POLICY_DEFAULT_ESCALATION_WINDOW_MS;
	if (window_ms > POLICY_MAX_ESCALATION_WINDOW_MS)
		window_ms = POLICY_MAX_ESCALATION_WINDOW_MS;
	if (!ttl_s)
		ttl_s = POLICY_DEFAULT_ESCALATION_TTL_S;
	if (ttl_s > POLICY_MAX_ESCALATION_TTL_S)
		ttl_s = POLICY_MAX_ESCALATION_TTL_S;
	p = (uint64_t)rejects | (uint64_t)window_ms << P_REJECTS_BITS |
	    (uint64_t)ttl_s << (P_REJECTS_BITS + P_WINDOW_BITS);
	atomic_store_explicit(&e->policy, p, memory_order_relaxed);
}

/* The tracking key and the prefix a denial covers. */
static int source_key(const struct sockaddr *peer, socklen_t len, uint8_t key[16],
		      struct cidr *prefix)
{
	memset(prefix, 0, sizeof(*prefix));
	if (!peer || len < (socklen_t)sizeof(sa_family_t))
		return -EINVAL;
	if (peer->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)peer;

		if (len < (socklen_t)sizeof(*in))
			return -EINVAL;
		memcpy(key, v4_mapped, 12);
		memcpy(key + 12, &in->sin_addr, 4);
	} else if (peer->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;

		if (len < (socklen_t)sizeof(*in6))
			return -EINVAL;
		memcpy(key, &in6->sin6_addr, 16);
		if (memcmp(key, v4_mapped, 12) != 0)
			memset(key + ESCALATE_IPV6_PREFIX / 8, 0, 16 - ESCALATE_IPV6_PREFIX / 8);
	} else {
		return -EAFNOSUPPORT;
	}
	if (memcmp(key, v4_mapped, 12) == 0) {
		prefix->family = AF_INET;
		prefix->prefix_len = 32;
		memcpy(prefix->addr, key + 12, 4);
	} else {
		prefix->family = AF_INET6;
		prefix->prefix_len = ESCALATE_IPV6_PREFIX;
		memcpy(prefix->addr, key, 16);
	}
	return 0;
}

/* A caller's clock reading may be a little older than a start another
 * thread stored under the lock: that counts as no time elapsed. */
static uint64_t elapsed(uint64_t now_ns, uint64_t start_ns)
{
	return now_ns > start_ns ? now_ns - start_ns : 0;
}

static bool slot_dead(const struct slot *s, uint64_t window_ns, uint64_t now_ns)
{
	return elapsed(now_ns, s->window_start_ns) >= window_ns && s->until_ns <= now_ns;
}

/* Eviction order in a full bucket: entries not escalated first (the
 * kernel holds an escalated one anyway; losing it only allows an early
 * re-escalation), then the fewest rejections (so a stream of one-off
 * sources evicts itself, not a source on its way to the threshold), then
 * the oldest window. */
static bool evict_before(const struct slot *a, const struct slot *b, uint64_t now_ns)
{
	bool ea = a->until_ns > now_ns, eb = b->until_ns > now_ns;

	if (ea != eb)
		return !ea;
	if (a->count != b->count)
		return a->count < b->count;
	return a->window_start_ns < b->window_start_ns;
}

/* The slot of `key` in its bucket, taking a free, dead or (last resort) the
 * stalest slot. Stripe held. */
static struct slot *slot_get(struct escalate *e, struct slot *b, const uint8_t key[16],
			     uint64_t window_ns, uint64_t now_ns)
{
	struct slot *free_slot = NULL, *dead = NULL, *oldest = NULL;

	for (unsigned i = 0; i < ESCALATE_BUCKET_SLOTS; i++) {
		struct slot *s = &b[i];

		if (!s->used) {
			if (!free_slot)
				free_slot = s;
			continue;
		}
		if (memcmp(s->key, key, 16) == 0)
			return s;
		if (!dead && slot_dead(s, window_ns, now_ns))
			dead = s;
		if (!oldest || evict_before(s, oldest, now_ns))
			oldest = s;
	}
	if (free_slot) {
		atomic_fetch_add_explicit(&e->entries, 1, memory_order_relaxed);
		free_slot->used = true;
		oldest = free_slot;
	} else if (dead) {
		oldest = dead;
	} else {
		atomic_fetch_add_explicit(&e->evictions, 1, memory_order_relaxed);
	}
	memcpy(oldest->key, key, 16);
	oldest->window_start_ns = now_ns;
	oldest->until_ns = 0;
	oldest->count = 0;
	return oldest;
}

int escalate_reject(struct escalate *e, const struct sockaddr *peer, socklen_t peer_len,
		    uint64_t now_ns)
{
	uint64_t p = atomic_load_explicit(&e->policy, memory_order_relaxed);
	uint32_t rejects = (uint32_t)(p & ((1u << P_REJECTS_BITS) - 1));
	uint64_t window_ns = ((p >> P_REJECTS_BITS) & ((1u << P_WINDOW_BITS) - 1)) * 1000000ull;
	uint64_t ttl_ns = (p >> (P_REJECTS_BITS + P_WINDOW_BITS)) * 1000000000ull;
	struct cidr prefix;
	uint8_t key[16];
	struct slot *s;
	size_t b;
	pthread_mutex_t *m;
	int err;

	err = source_key(peer, peer_len, key, &prefix);
	if (err)
		return err;
	atomic_fetch_add_explicit(&e->rejects, 1, memory_order_relaxed);
	if (!rejects)
		return 0;
	b = XXH3_64bits_withSeed(key, sizeof(key), e->seed) & (e->n_buckets - 1);
	m = &e->stripe[b % STRIPES].m;
	pthread_mutex_lock(m);
	s = slot_get(e, &e->slots[b * ESCALATE_BUCKET_SLOTS], key, window_ns, now_ns);
	if (s->until_ns > now_ns) {
		pthread_mutex_unlock(m);
		return 0;
	}
	if (elapsed(now_ns, s->window_start_ns) >= window_ns) {
		s->window_start_ns = now_ns;
		s->count = 0;
	}
	if (++s->count < rejects) {
		pthread_mutex_unlock(m);
		return 0;
	}
	/* Crossed: mark it first so that concurrent rejections of the same
	 * source do not call the callback again. */
	s->until_ns = now_ns + ttl_ns;
	s->count = 0;
	s->window_start_ns = now_ns;
	pthread_mutex_unlock(m);

	err = e->deny(e->deny_arg, &prefix, ttl_ns);
	if (err) {
		atomic_fetch_add_explicit(&e->failures, 1, memory_order_relaxed);
		pthread_mutex_lock(m);
		for (unsigned i = 0; i < ESCALATE_BUCKET_SLOTS; i++) {
			s = &e->slots[b * ESCALATE_BUCKET_SLOTS + i];
			if (s->used && memcmp(s->key, key, 16) == 0 &&
			    s->until_ns == now_ns + ttl_ns && ttl_ns > ESCALATE_RETRY_NS)
				s->until_ns = now_ns + ESCALATE_RETRY_NS;
		}
		pthread_mutex_unlock(m);
		return err < 0 ? err : -EIO;
	}
	atomic_fetch_add_explicit(&e->escalations, 1, memory_order_relaxed);
	return 1;
}

size_t escalate_sweep(struct escalate *e, uint64_t now_ns)
{
	uint64_t p = atomic_load_explicit(&e->policy, memory_order_relaxed);
	uint64_t window_ns = ((p >> P_REJECTS_BITS) & ((1u << P_WINDOW_BITS) - 1)) * 1000000ull;
	size_t freed = 0;

	for (size_t b = 0; b < e->n_buckets; b++) {
		pthread_mutex_t *m = &e->stripe[b % STRIPES].m;

		pthread_mutex_lock(m);
		for (unsigned i = 0; i < ESCALATE_BUCKET_SLOTS; i++) {
			struct slot *s = &e->slots[b * ESCALATE_BUCKET_SLOTS + i];

			if (s->used && slot_dead(s, window_ns, now_ns)) {
				memset(s, 0, sizeof(*s));
				freed++;
			}
		}
		pthread_mutex_unlock(m);
	}
	atomic_fetch_sub_explicit(&e->entries, freed, memory_order_relaxed);
	return freed;
}

void escalate_stats(const struct escalate *e, struct escalate_stats *out)
{
	out->rejects = atomic_load_explicit(&e->rejects, memory_order_relaxed);
	out->escalations = atomic_load_explicit(&e->escalations, memory_order_relaxed);
	out->failures = atomic_load_explicit(&e->failures, memory_order_relaxed);
	out->evictions = atomic_load_explicit(&e->evictions, memory_order_relaxed);
	out->entries = atomic_load_explicit(&e->entries, memory_order_relaxed);
	out->capacity = e->n_buckets * ESCALATE_BUCKET_SLOTS;
}
