/* frames.h - Ethernet frames for BPF_PROG_RUN tests and benchmarks:
 * IPv4/IPv6, optional VLAN tags, TCP/UDP/ICMP, a payload, and knobs to make
 * them malformed (IHL, doff, lengths, truncation, padding). */
#ifndef SLUICE_FRAMES_H
#define SLUICE_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAX 2048
#define FRAME_DEFAULT_DPORT 80

/* What to build; zero fields take the usual value. Caller-owned. */
struct frame_spec {
	int family;              /* 4 (default) or 6 */
	const char *src;         /* default 192.0.2.10 / 2001:db8:ffff::10 */
	int l4;                  /* IPPROTO_TCP (default), _UDP, _ICMP, _ICMPV6 */
	uint16_t dport;          /* default FRAME_DEFAULT_DPORT */
	const char *payload;     /* text; NULL for none */
	size_t payload_len;      /* 0: strlen(payload) */
	uint16_t vlan_tpid[2];   /* outer, inner; 0 = no tag */
	uint8_t version;         /* IP version field; 0: family */
	uint8_t ihl;             /* 0: 5 (IPv4 header words) */
	uint8_t doff;            /* 0: 5 (TCP header words) */
	uint16_t frag_off;       /* IPv4 flags + offset, host order */
	int ip_len_delta;        /* added to tot_len / payload_len */
	size_t cut_to;           /* non-zero: frame truncated to this many bytes */
	size_t pad_bytes;        /* Ethernet padding after the datagram */
};

/* Writes v at p in network byte order. */
void frame_put16(uint8_t *p, uint16_t v);

/* Builds the frame into buf (FRAME_MAX bytes); returns its length. */
size_t frame_build(const struct frame_spec *s, uint8_t *buf);

#endif
