/* bytes.h - byte-string helpers for the request path (lib/ internal).
 */
#ifndef SLUICE_BYTES_H
#define SLUICE_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Equality of two short byte strings of length n without a libc call: keys
 * on the request path are a few dozen bytes, where memcmp's call and
 * dispatch cost more than the compare. Reads only the n bytes of each. */
static inline bool bytes_eq_short(const void *a, const void *b, size_t n)
{
	const unsigned char *p = a, *q = b;
	uint64_t x, y;
	uint32_t u, v;

	if (n >= 8) {
		/* Most keys and hosts: two words, overlapping, one branch. */
		if (n <= 16) {
			uint64_t x1, y1;

			memcpy(&x, p, 8);
			memcpy(&y, q, 8);
			memcpy(&x1, p + n - 8, 8);
			memcpy(&y1, q + n - 8, 8);
			return ((x ^ y) | (x1 ^ y1)) == 0;
		}
		for (size_t i = 0; i + 8 <= n; i += 8) {
			memcpy(&x, p + i, 8);
			memcpy(&y, q + i, 8);
			if (x != y)
				return false;
		}
		memcpy(&x, p + n - 8, 8); /* the tail, overlapping */
		memcpy(&y, q + n - 8, 8);
		return x == y;
	}
	if (n >= 4) {
		memcpy(&u, p, 4);
		memcpy(&v, q, 4);
		if (u != v)
			return false;
		memcpy(&u, p + n - 4, 4);
		memcpy(&v, q + n - 4, 4);
		return u == v;
	}
	for (size_t i = 0; i < n; i++)
		if (p[i] != q[i])
			return false;
	return true;
}

/* s[0..n) equals lit[0..n) up to ASCII case, for a lit of lower-case
 * letters, digits and '-' (field names and tokens such as "content-length",
 * "keep-alive") and an s without bytes below 0x20 but HTAB (true of field
 * names and values once an HTTP parser scanned them): each byte of s is
 * ORed with 0x20, which gives a letter only from that letter in either
 * case and a digit or '-' only from itself (the other pre-image is a CTL),
 * and compared a word at a time, the last word overlapping the one before.
 * Reads only n bytes of each; with n a constant the branches fold away. */
static inline __attribute__((always_inline)) bool bytes_eq_lower(const void *s, const char *lit,
								     size_t n)
{
	const unsigned char *p = s;
	const uint64_t ones = 0x0101010101010101ull;
	uint64_t x, y;
	uint32_t u, v;

	if (n >= 8) {
		for (size_t i = 0; i + 8 < n; i += 8) {
			memcpy(&x, p + i, 8);
			memcpy(&y, lit + i, 8);
			if ((x | ones * 0x20) != y)
				return false;
		}
		memcpy(&x, p + n - 8, 8); /* the tail, overlapping */
		memcpy(&y, lit + n - 8, 8);
		return (x | ones * 0x20) == y;
	}
	if (n >= 4) {
		memcpy(&u, p, 4);
		memcpy(&v, lit, 4);
		if ((u | 0x20202020u) != v)
			return false;
		memcpy(&u, p + n - 4, 4);
		memcpy(&v, lit + n - 4, 4);
		return (u | 0x20202020u) == v;
	}
	for (size_t i = 0; i < n; i++)
		if ((p[i] | 0x20) != (unsigned char)lit[i])
			return false;
	return true;
}

#endif
