/* common.h - what every part of the TC programs shares: kernel types, libbpf
 * helpers, the constants vmlinux.h lacks (they are macros in the kernel), and
 * struct pkt, the per-packet facts the parsers fill in for the entry point.
 * Include first, before any other bpf/lib header.
 */
#ifndef SLUICE_BPF_COMMON_H
#define SLUICE_BPF_COMMON_H

#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "client_abi.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/* Headers parsed by direct packet access must sit in the linear area:
 * Ethernet, two VLAN tags, the largest IPv4 header and the largest TCP
 * header. */
#define PKT_MAX_HEADER_BYTES (14 + 2 * 4 + 60 + 60)

/* One packet's facts, on the entry point's stack; lives for one run. */
struct pkt {
	void *data;        /* skb->data and data_end after parse_make_linear */
	void *data_end;
	__u32 len;         /* skb->len: the frame, from the MAC header */
	__u32 l4_off;      /* offsets from skb->data */
	__u32 payload_off;
	__u32 payload_end; /* end of the IP datagram, not of the frame padding */
	__u16 dport;       /* host byte order */
	__u8 family;       /* 4 or 6; 0 until the IP header is parsed */
	__u8 l4_proto;
	__u64 now_ns;      /* bpf_ktime_get_ns(), 0 until pkt_now() reads it */
	__u64 client_id;   /* 0 until the client is known */
	__u64 key_hash;    /* 0 until a client-id value is hashed */
	__u8 src_addr[16]; /* network byte order, IPv4 in the first 4 bytes */
};

/* The packet's time, read once and only by the paths that need it (a
 * limit, statistics, an event, an expiring deny entry): most packets never
 * pay for the helper call. */
static __always_inline __u64 pkt_now(struct pkt *pkt)
{
	if (pkt->now_ns == 0)
		pkt->now_ns = bpf_ktime_get_ns();
	return pkt->now_ns;
}

#ifndef READ_ONCE
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#endif
#ifndef WRITE_ONCE
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))
#endif

#endif
