/* report.h - what the entry point does with a final reason: the per-reason
 * counter (per CPU, plain increments), the client's statistics (atomic
 * counters, last-writer-wins for the rest) and a ring buffer event. A full
 * ring loses the event and counts CLIENT_COUNTER_EVENTS_LOST, never the
 * verdict.
 */
#ifndef SLUICE_BPF_REPORT_H
#define SLUICE_BPF_REPORT_H

#include "common.h"

static __always_inline void report_count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&reason_counters, &slot);

	if (n)
		*n += 1;
}

static __always_inline void report_stats(const struct pkt *pkt, __u32 reason, __u64 now_ns)
{
	struct client_stats *st = bpf_map_lookup_elem(&client_stats, &pkt->client_id);

	if (!st) {
		struct client_stats fresh = {};

		bpf_map_update_elem(&client_stats, &pkt->client_id, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&client_stats, &pkt->client_id);
		if (!st)
			return;
	}
	__sync_fetch_and_add(&st->requests, 1);
	st->last_seen_ns = now_ns;
	st->last_key_hash = pkt->key_hash;
	if (reason == CLIENT_REASON_RATE) {
		__u32 drops_in_row;

		__sync_fetch_and_add(&st->drops, 1);
		drops_in_row = __sync_fetch_and_add(&st->consecutive_drops, 1) + 1;
		st->status = drops_in_row >= CLIENT_BLOCKED_AFTER_DROPS ? CLIENT_STATUS_BLOCKED
									: CLIENT_STATUS_LIMITED;
	} else {
		st->consecutive_drops = 0;
		st->status = CLIENT_STATUS_NORMAL;
	}
}

/* Which event, if any, a reason deserves at this log level; 0 for none. */
static __always_inline __u16 report_event_type(__u32 reason, __u8 log_level, const struct pkt *pkt)
{
	switch (reason) {
	case CLIENT_REASON_DENY:
	case CLIENT_REASON_RATE:
		return CLIENT_EVENT_DROP;
	case CLIENT_REASON_TRUNCATED:
	case CLIENT_REASON_MALFORMED:
	case CLIENT_REASON_HEADER_TRUNCATED:
	case CLIENT_REASON_KEY_TOO_LONG:
	case CLIENT_REASON_CONTENDED:
		return log_level >= CLIENT_LOG_ERRORS ? CLIENT_EVENT_ERROR : 0;
	default:
		return log_level >= CLIENT_LOG_DEBUG && pkt->key_hash ? CLIENT_EVENT_DEBUG : 0;
	}
}

static __always_inline void report_event(const struct pkt *pkt, __u16 type, __u32 reason,
					 __u64 now_ns)
{
	struct client_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev) {
		report_count(CLIENT_COUNTER_EVENTS_LOST);
		return;
	}
	ev->type = type;
	ev->reason = reason;
	ev->family = pkt->family;
	__builtin_memset(ev->pad0, 0, sizeof(ev->pad0));
	ev->ts_ns = now_ns;
	ev->client_id = pkt->client_id;
	ev->key_hash = pkt->key_hash;
	__builtin_memcpy(ev->src_addr, pkt->src_addr, sizeof(ev->src_addr));
	bpf_ringbuf_submit(ev, 0);
}

#endif
