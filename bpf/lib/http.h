/* http.h - finds the client-id field of an HTTP/1.x request in the first
 * CLIENT_HTTP_WINDOW_BYTES of one segment and hashes its value (FNV-1a-64,
 * as policy_client_key_hash). Only a segment that opens with "METHOD " is
 * read; the search stops at the end of the header block; a field whose CR/LF
 * is not inside the window is never hashed. Header names match
 * case-insensitively, the value is trimmed of spaces and tabs, the first
 * field wins. Bytes past the segment are loaded in whole words but never
 * decide anything.
 */
#ifndef SLUICE_BPF_HTTP_H
#define SLUICE_BPF_HTTP_H

#include "common.h"

#define HTTP_METHOD_MAX_LEN 11

/* The search's iterations: each one moves at least 2 bytes (a line that is
 * not blank holds a byte before its LF) or 8 (a word without LF), so the
 * window is always left before they run out. */
#define HTTP_SCAN_STEPS (CLIENT_HTTP_WINDOW_BYTES / 2 + 1)

#define HTTP_ONES 0x0101010101010101ull
#define HTTP_HIGHS 0x8080808080808080ull

static __always_inline __u64 http_load64(const void *p)
{
	/* Unaligned: fine for map values on the JITs with efficient unaligned
	 * access (x86-64, arm64), which the verifier then does not refuse. */
	__u64 v = *(const __u64 *)p;

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

/* 0x80 in every byte equal to c, exactly (no borrow between bytes). */
static __always_inline __u64 http_bytes_eq(__u64 x, __u8 c)
{
	__u64 v = x ^ (HTTP_ONES * c);

	return ~(((v & ~HTTP_HIGHS) + ~HTTP_HIGHS) | v) & HTTP_HIGHS;
}

/* 0x80 in every byte from lo to hi (ASCII, lo <= hi), exactly. */
static __always_inline __u64 http_bytes_in(__u64 x, __u8 lo, __u8 hi)
{
	__u64 x7 = x & ~HTTP_HIGHS;
	__u64 ge_lo = x7 + HTTP_ONES * (0x80 - lo);
	__u64 gt_hi = x7 + HTTP_ONES * (0x80 - hi - 1);

	return ge_lo & ~gt_hi & ~x & HTTP_HIGHS;
}

/* The low `bytes` bytes (0..8) of a word. */
static __always_inline __u64 http_low_bytes(__s32 bytes)
{
	if (bytes <= 0)
		return 0;
	if (bytes >= 8)
		return ~0ull;
	return (1ull << (8 * bytes)) - 1;
}

/* Byte offset of the lowest byte with 0x80 set in t (t != 0). */
static __always_inline __u32 http_lowest_flag(__u64 t)
{
	/* (t & -t) >> 7 is 1 << 8k; times bytes 07..00 puts k in the top. */
	return (__u32)((((t & -t) >> 7) * 0x0001020304050607ull) >> 56);
}

/* The words of '\n' name (the line break before the field, then its name)
 * hold a blank line ("\n\n" or "\n\r\n"): every match would be past the end
 * of the header block. q holds those name_len + 1 bytes, zero after. */
static __always_inline int http_blank_line_in(const __u64 q[3])
{
	__u64 nl[3], cr[3], blank = 0;

#pragma clang loop unroll(full)
	for (int i = 0; i < 3; i++) {
		nl[i] = http_bytes_eq(q[i], '\n');
		cr[i] = http_bytes_eq(q[i], '\r');
	}
#pragma clang loop unroll(full)
	for (int i = 0; i < 3; i++) {
		__u64 nl1 = nl[i] << 8, cr1 = cr[i] << 8, nl2 = nl[i] << 16;

		if (i > 0) {
			nl1 |= nl[i - 1] >> 56;
			cr1 |= cr[i - 1] >> 56;
			nl2 |= nl[i - 1] >> 48;
		}
		blank |= nl[i] & (nl1 | (cr1 & nl2));
	}
	return blank != 0;
}

static __always_inline int http_pattern_build(const struct client_global_config *g,
					      struct http_pattern *p)
{
	__u32 len = g->client_id_header_len;
	__u64 name[3], q[3], newlines = 0;

	if (len == 0 || len > CLIENT_HEADER_NAME_MAX_LEN)
		return -CLIENT_REASON_NO_HEADER;
#pragma clang loop unroll(full)
	for (int i = 0; i < 3; i++) {
		__u64 in_name = http_low_bytes((__s32)len - 8 * i);
		__u64 upper, lower;

		name[i] = http_load64(g->client_id_header + 8 * i);
		upper = http_bytes_in(name[i], 'A', 'Z');
		lower = name[i] | (upper >> 2);
		p->mask[i] = http_low_bytes((__s32)len + 1 - 8 * i);
		p->word[i] = lower & in_name;
		if (len >= 8u * i && len < 8u * i + 8)
			p->word[i] |= (__u64)':' << (8 * (len - 8 * i));
		p->fold[i] = (http_bytes_in(lower, 'a', 'z') >> 2) & in_name;
		newlines |= http_bytes_eq(name[i], '\n') & in_name;
	}
	p->colon = len;
	p->never = 0;
	if (newlines) {
		q[0] = ((name[0] << 8) | '\n') & p->mask[0];
		q[1] = ((name[1] << 8) | (name[0] >> 56)) & p->mask[1];
		q[2] = ((name[2] << 8) | (name[1] >> 56)) & p->mask[2];
		p->never = http_blank_line_in(q);
	}
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

/* The name and its ':' start at line (< CLIENT_HTTP_WINDOW_BYTES). */
static __always_inline int http_name_at(const struct http_scratch *s, __u32 line,
					const struct http_pattern *p)
{
#pragma clang loop unroll(full)
	for (int i = 0; i < 3; i++) {
		__u64 w = http_load64(s->buf + line + 8 * i);

		if (((w | p->fold[i]) & p->mask[i]) != p->word[i])
			return 0;
	}
	return 1;
}

/* Offset of the ':' ending the field name, or a negative reason. Visits the
 * line starts (the byte after each LF) in order, finding each LF a word at
 * a time; at a line start, a blank line ends the header block, else the
 * name is compared in three words. A field can only start at a line start,
 * and every "\n\n" or "\n\r\n" begins one, so this finds what a byte-wise
 * search for '\n' name ':' that stops at the first blank line finds. The
 * position goes through memory at the end of every iteration, so all the
 * ways through one iteration reach the next in the same state and the
 * verifier walks each iteration once. */
static __always_inline int http_find_field(struct http_scratch *s, __u32 len,
					   const struct http_pattern *p)
{
	WRITE_ONCE(s->scan_off, 0);
	for (__u32 step = 0; step < HTTP_SCAN_STEPS; step++) {
		__u32 pos = READ_ONCE(s->scan_off), line;
		__u64 lf;
		__u8 c;

		if (pos >= len || pos >= CLIENT_HTTP_WINDOW_BYTES)
			return -CLIENT_REASON_NO_HEADER;
		lf = http_bytes_eq(http_load64(s->buf + pos), '\n');
		if (lf == 0) {
			WRITE_ONCE(s->scan_off, pos + 8);
			continue;
		}
		line = pos + http_lowest_flag(lf) + 1;
		if (line >= len || line >= CLIENT_HTTP_WINDOW_BYTES)
			return -CLIENT_REASON_NO_HEADER;
		/* "\n\n" or "\n\r\n": the header block is over, a body follows. */
		c = s->buf[line];
		if (c == '\n')
			return -CLIENT_REASON_NO_HEADER;
		if (c == '\r' && line + 1 < len && s->buf[line + 1] == '\n')
			return -CLIENT_REASON_NO_HEADER;
		if (line + p->colon < len && http_name_at(s, line, p))
			return line + p->colon;
		WRITE_ONCE(s->scan_off, line);
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
 * tags, address family), which would multiply its loops beyond the
 * verifier's budget. Pointers may be NULL to the verifier's eyes, hence the
 * check. */
__noinline int http_key_hash(struct http_scratch *s, __u32 len,
			     const struct client_global_config *g, __u64 *hash)
{
	const struct http_pattern *pat;
	__u32 start;
	int ret;

	if (!s || !g || !hash)
		return -CLIENT_REASON_NO_HEADER;
	/* Built into memory and read back from there: the build's branches
	 * leave differently known values, and the verifier would walk the
	 * whole search once for each mix of them. Built once per CPU and name:
	 * the name changes only with the global config, and comparing it costs
	 * four loads where building costs a hundred instructions. */
	if (s->pat_len != g->client_id_header_len ||
	    s->pat_name[0] != http_load64(g->client_id_header) ||
	    s->pat_name[1] != http_load64(g->client_id_header + 8) ||
	    s->pat_name[2] != http_load64(g->client_id_header + 16)) {
		ret = http_pattern_build(g, &s->pat);
		if (ret < 0)
			return ret;
		s->pat_name[0] = http_load64(g->client_id_header);
		s->pat_name[1] = http_load64(g->client_id_header + 8);
		s->pat_name[2] = http_load64(g->client_id_header + 16);
		s->pat_len = g->client_id_header_len;
	}
	barrier();
	pat = &s->pat;
	if (len > CLIENT_HTTP_WINDOW_BYTES)
		return -CLIENT_REASON_NO_HEADER;
	if (!http_is_request(s, len))
		return -CLIENT_REASON_NOT_REQUEST;
	if (pat->never)
		return -CLIENT_REASON_NO_HEADER;
	ret = http_find_field(s, len, pat);
	if (ret < 0)
		return ret;
	/* The search exits with a different offset range in each iteration;
	 * going through memory turns it into one unknown value, so the value
	 * scan is verified once instead of once per iteration. */
	WRITE_ONCE(s->colon_off, ret);
	start = READ_ONCE(s->colon_off) + 1;
	return http_hash_value(s, start, len, hash);
}

/* Sets pkt->key_hash from the segment's client-id field: 0 or a negative
 * reason. The caller has checked that the payload is not empty. */
static __always_inline int http_client_key(struct __sk_buff *skb,
					   const struct client_global_config *g, struct pkt *pkt)
{
	struct http_scratch *s;
	__u32 zero = 0, len;
	__u64 hash = 0;
	int ret;

	/* Checked first, as before anything is read: a name the kernel does
	 * not match is NO_HEADER whatever the payload. http_key_hash checks
	 * it again on what it builds the pattern from. */
	if (g->client_id_header_len == 0 ||
	    g->client_id_header_len > CLIENT_HEADER_NAME_MAX_LEN)
		return -CLIENT_REASON_NO_HEADER;
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
	ret = http_key_hash(s, len, g, &hash);
	if (ret < 0)
		return ret;
	pkt->key_hash = hash;
	return 0;
}

#endif
