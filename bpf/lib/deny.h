/* deny.h - source address deny lists (LPM tries, longest prefix wins),
 * behind a bitmap pre-filter on the address's first 16 bits. An entry whose
 * expires_ns has passed no longer denies: escalations end by themselves, and
 * user space removes the dead entry when it likes.
 */
#ifndef SLUICE_BPF_DENY_H
#define SLUICE_BPF_DENY_H

#include "common.h"

static __always_inline int deny_entry_live(const struct client_deny_value *v, struct pkt *pkt)
{
	__u64 expires_ns = v->expires_ns;

	return expires_ns == 0 || pkt_now(pkt) < expires_ns;
}

/* The source's slot bit in deny_filter: 0 when no entry of its family can
 * cover it. An ARRAY lookup is inlined by the verifier (a bounds check and
 * an add), where a trie lookup is a helper call that walks nodes. */
static __always_inline int deny_filter_hit(const struct pkt *pkt)
{
	__u32 slot = ((__u32)pkt->src_addr[0] << 8) | pkt->src_addr[1];
	__u32 idx = (slot >> 6) + (pkt->family == 4 ? CLIENT_DENY_FILTER_V4_BASE
						    : CLIENT_DENY_FILTER_V6_BASE);
	__u64 *w = bpf_map_lookup_elem(&deny_filter, &idx);

	return w && ((*w >> (slot & 63)) & 1);
}

/* -CLIENT_REASON_DENY when the packet's source is denied, else 0. One trie
 * lookup, for the family of the packet, and only when the filter says an
 * entry may cover the source. */
static __always_inline int deny_check(struct pkt *pkt)
{
	struct client_deny_value *v;

	if (!deny_filter_hit(pkt))
		return 0;
	if (pkt->family == 4) {
		struct client_deny_v4_key k4 = { .prefixlen = 32 };

		__builtin_memcpy(k4.addr, pkt->src_addr, 4);
		v = bpf_map_lookup_elem(&deny_v4, &k4);
	} else {
		struct client_deny_v6_key k6 = { .prefixlen = 128 };

		__builtin_memcpy(k6.addr, pkt->src_addr, 16);
		v = bpf_map_lookup_elem(&deny_v6, &k6);
	}
	if (v && deny_entry_live(v, pkt))
		return -CLIENT_REASON_DENY;
	return 0;
}

#endif
