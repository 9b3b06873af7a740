/* escalate.h - escalation of repeat offenders from the proxy to the kernel:
 * counts the proxy's rejections per source (IPv4 address, IPv6 /64) in a
 * fixed-size table and, when a source reaches `rejects` rejections within
 * `window_ms`, hands its prefix with a time-to-live to a deny callback (the
 * node passes one that writes the TC program's deny trie).
 * Invariants: the table never grows past its capacity (a full bucket evicts
 * the entry with the fewest rejections, the oldest among equals, so sources
 * seen once churn among themselves while a repeat offender stays); a source is handed over at most once per TTL; every
 * call is thread-safe (striped locks, no allocation after escalate_new).
 */
#ifndef SLUICE_ESCALATE_H
#define SLUICE_ESCALATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cidr.h"

struct escalate;

#define ESCALATE_DEFAULT_CAPACITY 65536u
#define ESCALATE_MAX_CAPACITY (1u << 24)
#define ESCALATE_BUCKET_SLOTS 8u  /* set associativity: slots per bucket */
#define ESCALATE_IPV6_PREFIX 64u  /* IPv6 sources are tracked and denied per /64 */
/* After a failed deny callback the source is not handed over again for this
 * long, so a full trie or a detached program does not cost a syscall per
 * rejected request. */
#define ESCALATE_RETRY_NS 1000000000ull

/* Denies `prefix` for ttl_ns (> 0). Called with no lock held, from whichever
 * thread reported the rejection that crossed the threshold. 0 or -errno. */
typedef int (*escalate_deny_fn)(void *arg, const struct cidr *prefix, uint64_t ttl_ns);

/* Table settings; read during escalate_new() only. */
struct escalate_config {
	size_t capacity; /* entries, rounded up to a power of two >= 8;
			  * 0: ESCALATE_DEFAULT_CAPACITY; at most ESCALATE_MAX_CAPACITY */
	escalate_deny_fn deny;
	void *deny_arg;
	uint64_t hash_seed; /* 0: random (the usual); tests fix it */
};

/* Allocates the whole table. 0 and *ret, -EINVAL (no callback, capacity too
 * large) or -ENOMEM. The policy starts off (rejects 0). */
int escalate_new(const struct escalate_config *cfg, struct escalate **ret);
/* Accepts NULL. No escalate_reject() may run concurrently. */
void escalate_free(struct escalate *e);

/* The thresholds from Settings (escalation_rejects, escalation_window_ms,
 * escalation_ttl_s). rejects 0 turns escalation off (rejections are still
 * counted in the stats, not in the table); window 0 and ttl 0 mean the
 * policy defaults. Any thread; takes effect for the next rejection. */
void escalate_set_policy(struct escalate *e, uint32_t rejects, uint32_t window_ms,
			 uint32_t ttl_s);

/* Counts one rejection of the source `peer` (sockaddr_in or sockaddr_in6;
 * v4-mapped IPv6 counts as IPv4) at now_ns (CLOCK_MONOTONIC). Returns 1 when
 * this rejection crossed the threshold and the deny callback succeeded, 0
 * when it was only counted (or escalation is off, or the source is already
 * escalated), -EAFNOSUPPORT / -EINVAL for a peer of another family or too
 * short, or the callback's -errno. Any thread. */
int escalate_reject(struct escalate *e, const struct sockaddr *peer, socklen_t peer_len,
		    uint64_t now_ns);

/* Frees the entries whose window and escalation have both run out, so that
 * `entries` counts sources that still matter. Any thread; O(capacity). */
size_t escalate_sweep(struct escalate *e, uint64_t now_ns);

/* Counters since escalate_new (relaxed reads). */
struct escalate_stats {
	uint64_t rejects;     /* rejections reported */
	uint64_t escalations; /* prefixes handed to the deny callback successfully */
	uint64_t failures;    /* deny callback errors */
	uint64_t evictions;   /* live entries dropped because their bucket was full */
	size_t entries;       /* slots in use */
	size_t capacity;
};
void escalate_stats(const struct escalate *e, struct escalate_stats *out);

#endif
