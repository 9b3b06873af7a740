/* frames.c - Ethernet frames for BPF_PROG_RUN tests and benchmarks. */
#include "frames.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <string.h>

void frame_put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

size_t frame_build(const struct frame_spec *s, uint8_t *buf)
{
	int family = s->family ? s->family : 4;
	int l4 = s->l4 ? s->l4 : IPPROTO_TCP;
	size_t plen = s->payload ? (s->payload_len ? s->payload_len : strlen(s->payload)) : 0;
	size_t off = 0, l3, l4_off, l4_len, ip_hdr;
	uint8_t doff = s->doff ? s->doff : 5;

	memset(buf, 0, FRAME_MAX);
	memcpy(buf, "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02", 12);
	off = 12;
	for (int i = 0; i < 2; i++) {
		if (!s->vlan_tpid[i])
			continue;
		frame_put16(buf + off, s->vlan_tpid[i]);
		frame_put16(buf + off + 2, 100 + i);
		off += 4;
	}
	frame_put16(buf + off, family == 4 ? ETH_P_IP : ETH_P_IPV6);
	off += 2;
	l3 = off;

	if (l4 == IPPROTO_TCP)
		l4_len = (doff < 5 ? 5 : doff) * 4;
	else
		l4_len = 8; /* UDP header, or ICMP type/code/csum/id/seq */

	if (family == 4) {
		uint8_t ihl = s->ihl ? s->ihl : 5;
		struct in_addr a;

		ip_hdr = (ihl < 5 ? 5 : ihl) * 4;
		inet_pton(AF_INET, s->src ? s->src : "192.0.2.10", &a);
		buf[l3] = ((s->version ? s->version : 4) << 4) | (ihl & 0x0f);
		frame_put16(buf + l3 + 2, (uint16_t)(ip_hdr + l4_len + plen + s->ip_len_delta));
		frame_put16(buf + l3 + 6, s->frag_off);
		buf[l3 + 8] = 64;
		buf[l3 + 9] = (uint8_t)l4;
		memcpy(buf + l3 + 12, &a, 4);
		inet_pton(AF_INET, "198.51.100.1", buf + l3 + 16);
		memset(buf + l3 + 20, 1, ip_hdr - 20); /* NOP options */
	} else {
		struct in6_addr a;

		ip_hdr = 40;
		inet_pton(AF_INET6, s->src ? s->src : "2001:db8:ffff::10", &a);
		buf[l3] = (s->version ? s->version : 6) << 4;
		frame_put16(buf + l3 + 4, (uint16_t)(l4_len + plen + s->ip_len_delta));
		buf[l3 + 6] = (uint8_t)l4;
		buf[l3 + 7] = 64;
		memcpy(buf + l3 + 8, &a, 16);
		inet_pton(AF_INET6, "2001:db8::1", buf + l3 + 24);
	}
	l4_off = l3 + ip_hdr;
	frame_put16(buf + l4_off, 40000);
	frame_put16(buf + l4_off + 2, s->dport ? s->dport : FRAME_DEFAULT_DPORT);
	if (l4 == IPPROTO_TCP) {
		buf[l4_off + 12] = (uint8_t)(doff << 4);
		buf[l4_off + 13] = 0x18; /* PSH|ACK */
		frame_put16(buf + l4_off + 14, 65535);
		memset(buf + l4_off + 20, 1, l4_len - 20); /* NOP options */
	} else if (l4 == IPPROTO_UDP) {
		frame_put16(buf + l4_off + 4, (uint16_t)(8 + plen));
	} else {
		buf[l4_off] = 8; /* echo request */
	}
	off = l4_off + l4_len;
	if (plen)
		memcpy(buf + off, s->payload, plen);
	off += plen;
	/* Padding that looks like a request: it must never be read as one. */
	for (size_t i = 0; i < s->pad_bytes; i++)
		buf[off + i] = "GET / HTTP/1.1\r\nClient-ID: pad\r\n"[i % 32];
	off += s->pad_bytes;
	if (s->cut_to && s->cut_to < off)
		off = s->cut_to;
	return off;
}
