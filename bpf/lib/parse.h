/* parse.h - Ethernet (up to two VLAN tags), IPv4/IPv6 and TCP header parsing
 * by direct packet access. Every length field is checked against both the
 * packet and the enclosing header before it is used; anything short returns
 * -CLIENT_REASON_TRUNCATED, anything inconsistent -CLIENT_REASON_MALFORMED,
 * and both pass. Offsets stored in struct pkt are from skb->data.
 */
#ifndef SLUICE_BPF_PARSE_H
#define SLUICE_BPF_PARSE_H

#include "common.h"

/* 802.1Q / 802.1AD tag as it follows the MAC addresses: a view into the
 * packet, valid until a helper moves the packet data. */
struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

/* Makes the headers linear when a driver left them in fragments (rare at
 * ingress; never in BPF_PROG_RUN), then sets pkt->data/data_end. Afterwards
 * data_end - data covers every header the packet has, so hitting data_end
 * really means truncated. */
static __always_inline void parse_make_linear(struct __sk_buff *skb, struct pkt *pkt)
{
	__u32 len = skb->len;
	__u32 want = len < PKT_MAX_HEADER_BYTES ? len : PKT_MAX_HEADER_BYTES;
	__u32 linear = skb->data_end - skb->data;

	if (linear < want)
		bpf_skb_pull_data(skb, want);
	/* Read once, after the pull: it moves the data. The barrier keeps
	 * clang from sharing &skb->data between the two paths as a computed
	 * ctx pointer, which the verifier refuses. */
	barrier_var(skb);
	pkt->data = (void *)(long)skb->data;
	pkt->data_end = (void *)(long)skb->data_end;
	pkt->len = len;
}

/* Ethernet and VLAN: returns 0 and sets *l3_off and *proto (network order),
 * or a negative reason. */
static __always_inline int parse_eth(const struct pkt *pkt, __u32 *l3_off, __be16 *proto)
{
	void *data = pkt->data;
	void *data_end = pkt->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 p;

	if ((void *)(eth + 1) > data_end)
		return -CLIENT_REASON_TRUNCATED;
	p = eth->h_proto;
#pragma clang loop unroll(full)
	for (int i = 0; i < 2; i++) {
		struct vlan_tag *tag = data + off;

		if (p != bpf_htons(ETH_P_8021Q) && p != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > data_end)
			return -CLIENT_REASON_TRUNCATED;
		p = tag->encap_proto;
		off += sizeof(*tag);
	}
	*l3_off = off;
	*proto = p;
	return 0;
}

/* IPv4: source, protocol, datagram end, L4 offset. A fragment other than the
 * first returns -CLIENT_REASON_FRAGMENT only after the source is known, so
 * the caller can still apply the deny list. */
static __always_inline int parse_ipv4(struct pkt *pkt, __u32 off)
{
	void *data = pkt->data;
	void *data_end = pkt->data_end;
	struct iphdr *ip = data + off;
	__u32 hdr_bytes, tot_bytes;

	if ((void *)(ip + 1) > data_end)
		return -CLIENT_REASON_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return -CLIENT_REASON_MALFORMED;
	hdr_bytes = ip->ihl * 4;
	tot_bytes = bpf_ntohs(ip->tot_len);
	if (tot_bytes < hdr_bytes)
		return -CLIENT_REASON_MALFORMED;
	/* Frames shorter than 60 bytes carry padding: the datagram ends at
	 * tot_len, never at the frame's end. */
	if (off + tot_bytes > pkt->len)
		return -CLIENT_REASON_TRUNCATED;
	__builtin_memcpy(pkt->src_addr, &ip->saddr, 4);
	pkt->family = 4;
	pkt->l4_proto = ip->protocol;
	pkt->l4_off = off + hdr_bytes;
	pkt->payload_end = off + tot_bytes;
	if (bpf_ntohs(ip->frag_off) & IP_OFFSET)
		return -CLIENT_REASON_FRAGMENT;
	return 0;
}

/* IPv6: no extension-header walk; a next header other than TCP is simply
 * not TCP (the caller passes it). */
static __always_inline int parse_ipv6(struct pkt *pkt, __u32 off)
{
	void *data = pkt->data;
	void *data_end = pkt->data_end;
	struct ipv6hdr *ip6 = data + off;
	__u32 end;

	if ((void *)(ip6 + 1) > data_end)
		return -CLIENT_REASON_TRUNCATED;
	if (ip6->version != 6)
		return -CLIENT_REASON_MALFORMED;
	end = off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if (end > pkt->len)
		return -CLIENT_REASON_TRUNCATED;
	__builtin_memcpy(pkt->src_addr, &ip6->saddr, 16);
	pkt->family = 6;
	pkt->l4_proto = ip6->nexthdr;
	pkt->l4_off = off + sizeof(*ip6);
	pkt->payload_end = end;
	return 0;
}

/* TCP: destination port and payload offset; options are skipped unread. */
static __always_inline int parse_tcp(struct pkt *pkt)
{
	void *data = pkt->data;
	void *data_end = pkt->data_end;
	__u32 off = pkt->l4_off;
	struct tcphdr *tcp;
	__u32 hdr_bytes;

	/* l4_off is at most 14 + 8 + 60 (IPv4) or 14 + 8 + 40 (IPv6); the mask
	 * only tells the verifier so. */
	off &= 0xff;
	tcp = data + off;
	if ((void *)(tcp + 1) > data_end)
		return -CLIENT_REASON_TRUNCATED;
	if (off + sizeof(*tcp) > pkt->payload_end)
		return -CLIENT_REASON_MALFORMED;
	if (tcp->doff < 5)
		return -CLIENT_REASON_MALFORMED;
	hdr_bytes = tcp->doff * 4;
	if (off + hdr_bytes > pkt->payload_end)
		return -CLIENT_REASON_MALFORMED;
	pkt->dport = bpf_ntohs(tcp->dest);
	pkt->payload_off = off + hdr_bytes;
	return 0;
}

#endif
