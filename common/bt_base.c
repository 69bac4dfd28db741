/*
 * NAME
 *	bt_base.c - base58btc, base32, base64 and unsigned-varint codecs
 * DESCRIPTION
 *	Used by bt_crypto (multibase keys), bt_did and the CID/CAR code in every
 *	process.  No allocation, no global state: callable from any thread.
 *	base58 is quadratic in the input length, which is fine for the short
 *	strings it is used for (keys are about 50 characters).
 * DIAGNOSTICS
 *	-EINVAL for malformed input, -ENOSPC when the output does not fit,
 *	-ENODATA from bt_varint_decode when the input ends inside a varint.
 */
#include "bt_base.h"

#include <errno.h>
#include <string.h>

static const char b58_alpha[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
static const char b32_alpha[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b58_val(unsigned char c)
{
	const char *p = c ? strchr(b58_alpha, c) : NULL;
	return p ? (int)(p - b58_alpha) : -1;
}

int bt_base58_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	size_t zeros = 0, len = 0;

	while (zeros < n && s[zeros] == '1')
		zeros++;
	if (zeros > cap)
		return -ENOSPC;
	/* Accumulate the big number little-endian at out[0..len), then flip it. */
	for (size_t i = zeros; i < n; i++) {
		int d = b58_val((unsigned char)s[i]);
		if (d < 0)
			return -EINVAL;
		unsigned carry = (unsigned)d;
		for (size_t j = 0; j < len; j++) {
			carry += (unsigned)out[j] * 58;
			out[j] = (uint8_t)carry;
			carry >>= 8;
		}
		while (carry) {
			if (zeros + len >= cap)
				return -ENOSPC;
			out[len++] = (uint8_t)carry;
			carry >>= 8;
		}
	}
	for (size_t i = 0; i < len / 2; i++) {
		uint8_t t = out[i];
		out[i] = out[len - 1 - i];
		out[len - 1 - i] = t;
	}
	if (zeros) {
		memmove(out + zeros, out, len);
		memset(out, 0, zeros);
	}
	if (zeros + len > (size_t)INT32_MAX)
		return -EINVAL;
	return (int)(zeros + len);
}

int bt_base58_encode(const uint8_t *p, size_t n, char *out, size_t cap)
{
	size_t zeros = 0, len = 0;

	while (zeros < n && p[zeros] == 0)
		zeros++;
	if (zeros + 1 > cap)
		return -ENOSPC;
	memset(out, '1', zeros);
	/* Digits little-endian at d[0..len), as values 0..57. */
	char *d = out + zeros;
	size_t room = cap - zeros - 1;
	for (size_t i = zeros; i < n; i++) {
		unsigned carry = p[i];
		for (size_t j = 0; j < len; j++) {
			carry += (unsigned)(uint8_t)d[j] << 8;
			d[j] = (char)(carry % 58);
			carry /= 58;
		}
		while (carry) {
			if (len >= room)
				return -ENOSPC;
			d[len++] = (char)(carry % 58);
			carry /= 58;
		}
	}
	for (size_t i = 0; i < len / 2; i++) {
		char t = d[i];
		d[i] = d[len - 1 - i];
		d[len - 1 - i] = t;
	}
	for (size_t i = 0; i < len; i++)
		d[i] = b58_alpha[(uint8_t)d[i]];
	d[len] = 0;
	if (zeros + len > (size_t)INT32_MAX)
		return -EINVAL;
	return (int)(zeros + len);
}

static int b32_val(unsigned char c)
{
	if (c >= 'a' && c <= 'z')
		return c - 'a';
	if (c >= '2' && c <= '7')
		return c - '2' + 26;
	return -1;
}

int bt_base32_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	size_t rem = n % 8;
	if (rem == 1 || rem == 3 || rem == 6)
		return -EINVAL;
	size_t olen = n / 8 * 5 + (rem * 5) / 8;
	if (olen > cap)
		return -ENOSPC;
	if (olen > (size_t)INT32_MAX)
		return -EINVAL;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b32_val((unsigned char)s[i]);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 5) | (uint32_t)v;
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0) /* non-canonical: leftover bits must be zero */
		return -EINVAL;
	return (int)o;
}

int bt_base32_encode(const uint8_t *p, size_t n, char *out, size_t cap)
{
	size_t olen = (n * 8 + 4) / 5;
	if (olen + 1 > cap)
		return -ENOSPC;
	if (olen > (size_t)INT32_MAX)
		return -EINVAL;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | p[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[o++] = b32_alpha[(acc >> bits) & 31];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits)
		out[o++] = b32_alpha[(acc << (5 - bits)) & 31];
	out[o] = 0;
	return (int)o;
}

/* 0 = standard, 1 = url-safe, 2 = either (A-Z a-z 0-9). */
static int b64_val(unsigned char c, int *kind)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	int k = -1, v = -1;
	if (c == '+' || c == '/') {
		k = 0;
		v = c == '+' ? 62 : 63;
	} else if (c == '-' || c == '_') {
		k = 1;
		v = c == '-' ? 62 : 63;
	}
	if (k < 0)
		return -1;
	if (*kind != 2 && *kind != k)
		return -1; /* mixed alphabets */
	*kind = k;
	return v;
}

int bt_base64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	if (n % 4 == 0 && n >= 1 && s[n - 1] == '=') {
		n--;
		if (s[n - 1] == '=')
			n--;
	}
	size_t rem = n % 4;
	if (rem == 1)
		return -EINVAL;
	size_t olen = n / 4 * 3 + (rem ? rem - 1 : 0);
	if (olen > cap)
		return -ENOSPC;
	if (olen > (size_t)INT32_MAX)
		return -EINVAL;
	int kind = 2, bits = 0;
	uint32_t acc = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((unsigned char)s[i], &kind);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0)
		return -EINVAL;
	return (int)o;
}

int bt_base64_encode(const uint8_t *p, size_t n, char *out, size_t cap, bool url)
{
	const char *a = url ? b64_url : b64_std;
	size_t olen = url ? (n * 8 + 5) / 6 : (n + 2) / 3 * 4;
	if (olen + 1 > cap)
		return -ENOSPC;
	if (olen > (size_t)INT32_MAX)
		return -EINVAL;
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = a[v >> 18];
		out[o++] = a[(v >> 12) & 63];
		out[o++] = a[(v >> 6) & 63];
		out[o++] = a[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		out[o++] = a[v >> 18];
		out[o++] = a[(v >> 12) & 63];
		if (!url) {
			out[o++] = '=';
			out[o++] = '=';
		}
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = a[v >> 18];
		out[o++] = a[(v >> 12) & 63];
		out[o++] = a[(v >> 6) & 63];
		if (!url)
			out[o++] = '=';
	}
	out[o] = 0;
	return (int)o;
}

int bt_varint_decode(const uint8_t *p, size_t n, uint64_t *v)
{
	uint64_t x = 0;
	for (size_t i = 0; i < BT_VARINT_MAX; i++) {
		if (i >= n)
			return -ENODATA;
		uint8_t b = p[i];
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			if (i > 0 && b == 0)
				return -EINVAL; /* non-minimal: trailing zero group */
			*v = x;
			return (int)i + 1;
		}
	}
	return -EINVAL;
}

int bt_varint_encode(uint64_t v, uint8_t *out, size_t cap)
{
	if (v >> 63)
		return -EINVAL;
	size_t i = 0;
	do {
		if (i >= cap)
			return -ENOSPC;
		uint8_t b = v & 0x7f;
		v >>= 7;
		out[i++] = b | (v ? 0x80 : 0);
	} while (v);
	return (int)i;
}
