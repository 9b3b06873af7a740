/* maps.h - the maps of the TC ingress program, BTF-style. Keys and values are
 * the structs of client_abi.h; user space fills every map but events and
 * reason_counters (program output) and http_scratch (program-private).
 * Included once, by the entry file: each definition creates a map.
 */
#ifndef SLUICE_BPF_MAPS_H
#define SLUICE_BPF_MAPS_H

#include "common.h"

/* A name compare loads three words at any line start inside the window. */
#define HTTP_OVERREAD_BYTES 24

/* name ':' as it must appear at a line start, in three little-endian words
 * (byte 0 of the line lowest). A window word w matches word i when
 * ((w | fold[i]) & mask[i]) == word[i]: fold sets 0x20 on the name's
 * letters, which makes 'C' and 'c' alike and nothing else. Built by http.h
 * for each packet into http_scratch; read back only from there. */
struct http_pattern {
	__u64 word[3]; /* lower-cased name, then ':' */
	__u64 fold[3];
	__u64 mask[3]; /* the name_len + 1 bytes that take part */
	__u32 colon;   /* the ':' offset from the line start: the name length */
	__u32 never;   /* the name holds a blank line: no field can match */
};

/* Client id -> its limit. Preallocated: updates never fail for memory. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CLIENT_MAX_CLIENTS);
	__type(key, __u64);
	__type(value, struct client_config);
} client_config SEC(".maps");

/* Client id -> GCRA state. LRU: an evicted bucket comes back full, which
 * errs towards admitting (the proxy still enforces the exact limit). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CLIENT_MAX_CLIENTS);
	__type(key, __u64);
	__type(value, struct client_bucket);
} rate_buckets SEC(".maps");

/* Client id -> statistics. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CLIENT_MAX_CLIENTS);
	__type(key, __u64);
	__type(value, struct client_stats);
} client_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct client_global_config);
} global_config SEC(".maps");

/* FNV-1a-64 of a client-id header value -> client id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CLIENT_MAX_LOOKUP_KEYS);
	__type(key, __u64);
	__type(value, __u64);
} client_lookup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, CLIENT_MAX_DENY_V4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct client_deny_v4_key);
	__type(value, struct client_deny_value);
} deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, CLIENT_MAX_DENY_V6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct client_deny_v6_key);
	__type(value, struct client_deny_value);
} deny_v6 SEC(".maps");

/* The deny tries' pre-filter: a bit per first 16 bits of a source address,
 * set when an entry may cover it (see client_abi.h for the rule user space
 * keeps). Most sources hit a clear bit: an inlined array load instead of a
 * trie walk. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CLIENT_DENY_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} deny_filter SEC(".maps");

/* struct client_event records. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, CLIENT_EVENTS_RING_BYTES);
} events SEC(".maps");

/* Packets per enum client_reason, plus CLIENT_COUNTER_EVENTS_LOST. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CLIENT_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} reason_counters SEC(".maps");

/* The payload window being inspected. Per CPU: a TC run does not migrate and
 * does not nest on one CPU, and 512 bytes do not fit the 512-byte stack.
 * Bytes from the segment's length on are stale (an earlier packet's or
 * zero): http.h reads them in whole words but never lets them decide. */
struct http_scratch {
	__u8 buf[CLIENT_HTTP_WINDOW_BYTES];
	__u8 overread[HTTP_OVERREAD_BYTES]; /* 24-byte loads at any offset < 512 */
	struct http_pattern pat; /* see http.h: the verifier sees one pattern */
	/* The header name `pat` was built from (len 0: none yet): while the
	 * global config keeps it, the pattern is reused, not rebuilt. */
	__u64 pat_name[3];
	__u32 pat_len;
	__u32 pad0;
	__u32 colon_off; /* see http.h: forgets which iteration found it */
	__u32 scan_off;  /* see http.h: the search's position, same reason */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_scratch);
} http_scratch SEC(".maps");

#endif
