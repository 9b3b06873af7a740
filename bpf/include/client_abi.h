/* client_abi.h - the map keys, values and events that the TC ingress program
 * (bpf/tc_ingress.bpf.c) and user space share. Plain __u8/__u16/__u32/__u64,
 * no implicit padding: both compilers must lay every struct out the same way,
 * which the _Static_asserts at the end check on each side. Multi-byte fields
 * are host byte order unless their comment says otherwise.
 */
#ifndef SLUICE_BPF_CLIENT_ABI_H
#define SLUICE_BPF_CLIENT_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Map sizes (max_entries). */
#define CLIENT_MAX_CLIENTS 100000     /* client config, buckets, statistics */
#define CLIENT_MAX_LOOKUP_KEYS 100000 /* header value hash -> client id */
#define CLIENT_MAX_DENY_V4 65536      /* LPM entries, allocated on insert */
#define CLIENT_MAX_DENY_V6 65536
#define CLIENT_EVENTS_RING_BYTES (256 * 1024)

/* Deny pre-filter (map deny_filter, an ARRAY of __u64 words): one bit per
 * value of the first CLIENT_DENY_FILTER_BITS bits of a source address (its
 * "slot"), IPv4 slots in words [CLIENT_DENY_FILTER_V4_BASE, +1024), IPv6 in
 * [CLIENT_DENY_FILTER_V6_BASE, +1024); slot s is bit s % 64 of word s / 64.
 * A set bit means some entry of that family's deny trie may cover an address
 * of the slot; a clear bit lets the program skip the trie. So user space
 * sets the bits an entry covers (all the slots of a prefix shorter than 16
 * bits) BEFORE it inserts the entry, and clears a bit only AFTER no entry
 * covering the slot is left: a bit may be set for nothing (the lookup then
 * finds nothing), never clear for an entry. */
#define CLIENT_DENY_FILTER_BITS 16
#define CLIENT_DENY_FILTER_SLOTS (1u << CLIENT_DENY_FILTER_BITS)
#define CLIENT_DENY_FILTER_FAMILY_WORDS (CLIENT_DENY_FILTER_SLOTS / 64)
#define CLIENT_DENY_FILTER_V4_BASE 0
#define CLIENT_DENY_FILTER_V6_BASE CLIENT_DENY_FILTER_FAMILY_WORDS
#define CLIENT_DENY_FILTER_WORDS (2 * CLIENT_DENY_FILTER_FAMILY_WORDS)

/* HTTP inspection bounds. The program reads at most CLIENT_HTTP_WINDOW_BYTES
 * of a segment's payload; a client-id field (the bytes between ':' and CR/LF,
 * optional whitespace included) longer than CLIENT_FIELD_SCAN_BYTES is not
 * hashed. Keys longer than CLIENT_KEY_MAX_BYTES are never installed by user
 * space, so they stay proxy-only. The header name is at most
 * CLIENT_HEADER_NAME_MAX_LEN bytes (the program compares each header line's
 * start against '\n' name ':', at most 24 bytes). */
#define CLIENT_HTTP_WINDOW_BYTES 512
#define CLIENT_KEY_MAX_BYTES 128
#define CLIENT_FIELD_SCAN_BYTES 160
#define CLIENT_HEADER_NAME_MAX_LEN 22
#define CLIENT_HTTP_PORTS_MAX 8

/* 64-bit FNV-1a over the trimmed header value: policy_client_key_hash() in
 * lib/policy.h computes the same. */
#define CLIENT_FNV64_OFFSET 0xcbf29ce484222325ULL
#define CLIENT_FNV64_PRIME 0x100000001b3ULL

/* Rates are requests per second in 32.32 fixed point, so per-minute and
 * per-hour limits keep their precision: 1/s is 1 << 32, 1/h is 2^32 / 3600.
 * The program derives the emission interval as CLIENT_NS_PER_SEC_FP32 / rate
 * and caps a bucket's depth (burst x interval) at CLIENT_DEPTH_MAX_NS. */
#define CLIENT_RATE_FP_SHIFT 32
#define CLIENT_NS_PER_SEC_FP32 (1000000000ULL << CLIENT_RATE_FP_SHIFT)
#define CLIENT_DEPTH_MAX_NS ((1ULL << 56) - 1)

/* Values equal enum policy_algorithm (lib/policy.h). In the kernel both admit
 * the same requests (GCRA); a leaky bucket's pacing delay cannot be applied
 * at ingress, the proxy applies it. Anything else is not enforced here. */
enum client_algorithm {
	CLIENT_ALG_TOKEN_BUCKET = 1,
	CLIENT_ALG_LEAKY_BUCKET = 2,
};

enum client_status {
	CLIENT_STATUS_NORMAL = 0,  /* last request admitted */
	CLIENT_STATUS_LIMITED = 1, /* last request throttled */
	CLIENT_STATUS_BLOCKED = 2, /* >= CLIENT_BLOCKED_AFTER_DROPS drops in a row */
};
#define CLIENT_BLOCKED_AFTER_DROPS 100

/* Why a packet got its verdict; index of the per-reason counters. Helpers
 * return -CLIENT_REASON_*; only DENY and RATE drop, everything else passes. */
enum client_reason {
	CLIENT_REASON_NONE = 0,        /* never counted */
	CLIENT_REASON_DISABLED,        /* global switch off */
	CLIENT_REASON_NOT_IP,          /* neither IPv4 nor IPv6 (ARP, LLDP...) */
	CLIENT_REASON_TRUNCATED,       /* a header runs past the packet */
	CLIENT_REASON_MALFORMED,       /* bad version, IHL, doff or lengths */
	CLIENT_REASON_FRAGMENT,        /* IPv4 fragment other than the first */
	CLIENT_REASON_NOT_TCP,         /* UDP, ICMP, IPv6 extension headers... */
	CLIENT_REASON_NOT_HTTP,        /* TCP to a port not configured as HTTP */
	CLIENT_REASON_NO_PAYLOAD,      /* SYN, bare ACK, FIN... */
	CLIENT_REASON_NOT_REQUEST,     /* payload does not open with "METHOD " */
	CLIENT_REASON_NO_HEADER,       /* no client-id field in the header block
					* within the window (or an empty one) */
	CLIENT_REASON_HEADER_TRUNCATED,/* the field runs past window or segment */
	CLIENT_REASON_KEY_TOO_LONG,    /* no CR/LF in CLIENT_FIELD_SCAN_BYTES */
	CLIENT_REASON_UNKNOWN_CLIENT,  /* value hashes to no client */
	CLIENT_REASON_CLIENT_OFF,      /* client has no kernel limit */
	CLIENT_REASON_CONTENDED,       /* bucket update lost every CAS retry */
	CLIENT_REASON_ALLOWED,         /* within its limit */
	CLIENT_REASON_DENY,            /* source on a deny list: dropped */
	CLIENT_REASON_RATE,            /* over its limit: dropped */
	CLIENT_REASON_MAX,
};
/* The per-reason counter array has one more slot: ring buffer events lost
 * because the ring was full. */
#define CLIENT_COUNTER_EVENTS_LOST CLIENT_REASON_MAX
#define CLIENT_COUNTERS (CLIENT_REASON_MAX + 1)

/* global_config log levels: which events the program emits. */
enum client_log_level {
	CLIENT_LOG_DROPS = 0,  /* every drop */
	CLIENT_LOG_ERRORS = 1, /* + malformed/truncated packets, lost CAS races */
	CLIENT_LOG_DEBUG = 2,  /* + every client-id header parsed, with its hash */
};

enum client_event_type {
	CLIENT_EVENT_DROP = 1,
	CLIENT_EVENT_ERROR = 2,
	CLIENT_EVENT_DEBUG = 3,
};

/* client_config value, keyed by client id (__u64, never 0). Written by user
 * space; the program only reads it. */
struct client_config {
	__u64 rate_per_sec_fp32; /* 0: the global default rate and burst */
	__u32 burst;             /* requests at once; 0 counts as 1 */
	__u8 priority;           /* carried for the node; unused in the kernel */
	__u8 enabled;            /* 0: no kernel limit for this client */
	__u8 algorithm;          /* enum client_algorithm */
	__u8 pad0;
};

/* rate_buckets value, keyed by client id. GCRA: the theoretical arrival time
 * of the next request (bpf_ktime_get_ns clock); 0 = full bucket. One word so
 * that a compare-and-swap updates it without a lock. */
struct client_bucket {
	__u64 tat_ns;
};

/* client_stats value, keyed by client id. Counters are updated atomically;
 * the others are last-writer-wins. */
struct client_stats {
	__u64 requests;          /* requests seen with this client's key */
	__u64 drops;             /* of those, throttled */
	__u64 last_seen_ns;      /* bpf_ktime_get_ns of the last request */
	__u64 last_key_hash;     /* hash of the last key seen (debug aid) */
	__u32 consecutive_drops;
	__u8 status;             /* enum client_status */
	__u8 pad0[3];
};

/* global_config value, the single entry of an ARRAY. All zero (as created)
 * means disabled: every packet passes. */
struct client_global_config {
	__u64 default_rate_per_sec_fp32; /* for clients whose rate is 0;
					  * 0: such clients are not limited */
	__u32 default_burst;
	__u32 max_clients;               /* for the loader; not read here */
	__u8 enabled;
	__u8 log_level;                  /* enum client_log_level */
	__u8 client_id_header_len;       /* 1..CLIENT_HEADER_NAME_MAX_LEN, else
					  * no header is looked for */
	__u8 pad0;
	__u16 http_ports[CLIENT_HTTP_PORTS_MAX]; /* TCP dst ports; 0 = unused */
	char client_id_header[CLIENT_HEADER_NAME_MAX_LEN + 2]; /* matched
					  * case-insensitively, not NUL-ended */
	__u32 pad1;
};

/* Deny list keys (LPM tries); addresses in network byte order. */
struct client_deny_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};
struct client_deny_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};
/* Deny list value. An entry past its expiry is ignored by the program (user
 * space deletes it at leisure), so escalations end by themselves. */
struct client_deny_value {
	__u64 expires_ns; /* bpf_ktime_get_ns clock (CLOCK_MONOTONIC); 0 = never */
};

/* Ring buffer record. */
struct client_event {
	__u16 type;      /* enum client_event_type */
	__u16 reason;    /* enum client_reason */
	__u8 family;     /* 4 or 6; 0 when not IP */
	__u8 pad0[3];
	__u64 ts_ns;     /* bpf_ktime_get_ns */
	__u64 client_id; /* 0 when not known */
	__u64 key_hash;  /* client-id value hash; 0 when none was parsed */
	__u8 src_addr[16]; /* network byte order; IPv4 in the first 4 bytes */
};

_Static_assert(sizeof(struct client_config) == 16, "client_config layout");
_Static_assert(sizeof(struct client_bucket) == 8, "client_bucket layout");
_Static_assert(sizeof(struct client_stats) == 40, "client_stats layout");
_Static_assert(sizeof(struct client_global_config) == 64, "client_global_config layout");
_Static_assert(sizeof(struct client_deny_v4_key) == 8, "client_deny_v4_key layout");
_Static_assert(sizeof(struct client_deny_v6_key) == 20, "client_deny_v6_key layout");
_Static_assert(sizeof(struct client_deny_value) == 8, "client_deny_value layout");
_Static_assert(sizeof(struct client_event) == 48, "client_event layout");

#endif
