/* http.h - finds the client-id field of an HTTP/1.x request in the first
 * CLIENT_HTTP_WINDOW_BYTES of one segment and hashes its value (FNV-1a-64,
 * as policy_client_key_hash). Only a segment that opens with "METHOD " is
 * read; the search stops at the end of the header block; a field whose CR/LF
 * is not inside the window is never hashed. Header names match
 * case-insensitively, the value is trimmed of spaces and tabs, the first
 * field wins.
 */
#ifndef SLUICE_BPF_HTTP_H
#define SLUICE_BPF_HTTP_H

#include "common.h"

#define HTTP_METHOD_MAX_LEN 11

/* '\n' name ':' as the last bytes of a 24-byte window held in three words,
 * newest byte lowest; mask selects the pattern's bytes. On the stack of
 * http_client_key, for one packet. */
struct http_pattern {
	__u64 w0, w1, w2;
	__u64 m0, m1, m2;
};

static __always_inline __u8 http_lower(__u8 c)
{
	return (__u8)(c - 'A') < 26 ? c + ('a' - 'A') : c;
}

static __always_inline void http_roll(__u64 *w0, __u64 *w1, __u64 *w2, __u8 c)
{
	*w2 = (*w2 << 8) | (*w1 >> 56);
	*w1 = (*w1 << 8) | (*w0 >> 56);
	*w0 = (*w0 << 8) | c;
}

static __always_inline int http_pattern_build(const struct client_global_config *g,
					      struct http_pattern *p)
{
	__u32 len = g->client_id_header_len;

	if (len == 0 || len > CLIENT_HEADER_NAME_MAX_LEN)
		return -CLIENT_REASON_NO_HEADER;
	__builtin_memset(p, 0, sizeof(*p));
	http_roll(&p->w0, &p->w1, &p->w2, '\n');
	http_roll(&p->m0, &p->m1, &p->m2, 0xff);
	for (__u32 i = 0; i < CLIENT_HEADER_NAME_MAX_LEN; i++) {
		if (i >= len)
			break;
		http_roll(&p->w0, &p->w1, &p->w2, http_lower(g->client_id_header[i]));
		http_roll(&p->m0, &p->m1, &p->m2, 0xff);
	}
	http_roll(&p->w0, &p->w1, &p->w2, ':');
	http_roll(&p->m0, &p->m1, &p->m2, 0xff);
	return 0;
}

/* A request line opens with 3..HTTP_METHOD_MAX_LEN upper-case letters and a
 * space; anything else is a later segment, a response or not HTTP. */
static __always_inline int http_is_request(const struct http_scratch *s, __u32 len)
{
	for (__u32 i = 0; i < HTTP_METHOD_MAX_LEN + 1; i++) {
		__u8 c;

		if (i >= len)
			return 0;
		c = s->buf[i];
		if (c == ' ')
			return i >= 3;
		if ((__u8)(c - 'A') >= 26)
			return 0;
	}
	return 0;
}

/* Offset of the ':' ending the field name, or a negative reason. One pass,
 * one live path per byte: the verifier walks it once per iteration. */
static __always_inline int http_find_field(const struct http_scratch *s, __u32 len,
					   const struct http_pattern *p)
{
	__u64 w0 = 0, w1 = 0, w2 = 0;

	for (__u32 i = 0; i < CLIENT_HTTP_WINDOW_BYTES; i++) {
		if (i >= len)
			return -CLIENT_REASON_NO_HEADER;
		http_roll(&w0, &w1, &w2, http_lower(s->buf[i]));
		/* "\n\n" or "\n\r\n": the header block is over, a body follows. */
		if ((w0 & 0xffff) == 0x0a0a || (w0 & 0xffffff) == 0x0a0d0a)
			return -CLIENT_REASON_NO_HEADER;
		if ((w0 & p->m0) == p->w0 && (w1 & p->m1) == p->w1 && (w2 & p->m2) == p->w2)
			return i;
	}
	return -CLIENT_REASON_NO_HEADER;
}

static __always_inline __u64 http_fnv1a(__u64 h, __u8 c)
{
	return (h ^ c) * CLIENT_FNV64_PRIME;
}

/* Hashes the field value starting at `start`, trimmed of spaces and tabs.
 * Two hashes run side by side: h_all over everything since the first
 * non-blank byte, h_trimmed as of the last non-blank one, so trailing blanks
 * never need a second pass. */
static __always_inline int http_hash_value(const struct http_scratch *s, __u32 start,
					   __u32 len, __u64 *hash)
{
	__u64 h_all = CLIENT_FNV64_OFFSET, h_trimmed = CLIENT_FNV64_OFFSET;
	int started = 0;

	if (start >= len)
		return -CLIENT_REASON_HEADER_TRUNCATED;
	for (__u32 k = 0; k < CLIENT_FIELD_SCAN_BYTES; k++) {
		__u32 idx = start + k;
		__u8 c;

		if (idx >= len || idx >= CLIENT_HTTP_WINDOW_BYTES)
			return -CLIENT_REASON_HEADER_TRUNCATED;
		c = s->buf[idx];
		if (c == '\r' || c == '\n') {
			if (!started)
				return -CLIENT_REASON_NO_HEADER;
			*hash = h_trimmed;
			return 0;
		}
		if (c == ' ' || c == '\t') {
			if (started)
				h_all = http_fnv1a(h_all, c);
			continue;
		}
		started = 1;
		h_all = http_fnv1a(h_all, c);
		h_trimmed = h_all;
	}
	return -CLIENT_REASON_KEY_TOO_LONG;
}

/* The window's request, searched and hashed: 0 and *hash set, or a negative
 * reason. A global (not inlined) function: the verifier checks it once, with
 * unknown arguments, instead of once for every way of reaching it (VLAN
 * tags, address family, header name length), which would multiply its
 * 512-byte loop beyond the verifier's budget. Pointers may be NULL to the
 * verifier's eyes, hence the check. */
__noinline int http_key_hash(struct http_scratch *s, __u32 len, const struct http_pattern *pat,
			     __u64 *hash)
{
	__u32 start;
	int ret;

	if (!s || !pat || !hash)
		return -CLIENT_REASON_NO_HEADER;
	if (len > CLIENT_HTTP_WINDOW_BYTES)
		return -CLIENT_REASON_NO_HEADER;
	if (!http_is_request(s, len))
		return -CLIENT_REASON_NOT_REQUEST;
	ret = http_find_field(s, len, pat);
	if (ret < 0)
		return ret;
	/* Each iteration of the search exits with its own constant offset;
	 * going through memory turns it into one unknown value, so the value
	 * scan is verified once instead of once per possible offset. */
	WRITE_ONCE(s->colon_off, ret);
	start = READ_ONCE(s->colon_off) + 1;
	return http_hash_value(s, start, len, hash);
}

/* Sets pkt->key_hash from the segment's client-id field: 0 or a negative
 * reason. The caller has checked that the payload is not empty. */
static __always_inline int http_client_key(struct __sk_buff *skb,
					   const struct client_global_config *g, struct pkt *pkt)
{
	struct http_pattern pat;
	struct http_scratch *s;
	__u32 zero = 0, len;
	__u64 hash = 0;
	int ret;

	ret = http_pattern_build(g, &pat);
	if (ret < 0)
		return ret;
	s = bpf_map_lookup_elem(&http_scratch, &zero);
	if (!s)
		return -CLIENT_REASON_NO_HEADER;
	len = pkt->payload_end - pkt->payload_off;
	if (len > CLIENT_HTTP_WINDOW_BYTES)
		len = CLIENT_HTTP_WINDOW_BYTES;
	if (len == 0)
		return -CLIENT_REASON_NO_PAYLOAD;
	if (bpf_skb_load_bytes(skb, pkt->payload_off, s->buf, len) < 0)
		return -CLIENT_REASON_TRUNCATED;
	ret = http_key_hash(s, len, &pat, &hash);
	if (ret < 0)
		return ret;
	pkt->key_hash = hash;
	return 0;
}

#endif
