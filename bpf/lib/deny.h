/* deny.h - source address deny lists (LPM tries, longest prefix wins). An
 * entry whose expires_ns has passed no longer denies: escalations end by
 * themselves, and user space removes the dead entry when it likes.
 */
#ifndef SLUICE_BPF_DENY_H
#define SLUICE_BPF_DENY_H

#include "common.h"

static __always_inline int deny_entry_live(const struct client_deny_value *v)
{
	__u64 expires_ns = v->expires_ns;

	return expires_ns == 0 || bpf_ktime_get_ns() < expires_ns;
}

/* -CLIENT_REASON_DENY when the packet's source is denied, else 0. */
static __always_inline int deny_check(const struct pkt *pkt)
{
	struct client_deny_value *v;

	if (pkt->family == 4) {
		struct client_deny_v4_key k4 = { .prefixlen = 32 };

		__builtin_memcpy(k4.addr, pkt->src_addr, 4);
		v = bpf_map_lookup_elem(&deny_v4, &k4);
	} else {
		struct client_deny_v6_key k6 = { .prefixlen = 128 };

		__builtin_memcpy(k6.addr, pkt->src_addr, 16);
		v = bpf_map_lookup_elem(&deny_v6, &k6);
	}
	if (v && deny_entry_live(v))
		return -CLIENT_REASON_DENY;
	return 0;
}

#endif
