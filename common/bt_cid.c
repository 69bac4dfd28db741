/*
 * NAME
 *	bt_cid - binary CIDv1, base32 strings, sha-256 block CIDs
 * DESCRIPTION
 *	Used by every stage that looks at blocks (verify, store, tools).  No state.
 *	sha-256 is bt_sha256 (OpenSSL, a context reused per thread).
 * DIAGNOSTICS
 *	-EBADMSG malformed, -ENOSPC output too small, -ENOTSUP unsupported hash.
 */
#include "bt_cid.h"

#include <errno.h>
#include "bt_crypto.h"
#include <string.h>

int bt_varint_read(const uint8_t *p, size_t n, uint64_t *v)
{
	uint64_t x = 0;
	for (size_t i = 0; i < 9; i++) {
		if (i >= n)
			return -EBADMSG;
		x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			/* Minimal: a trailing zero byte would be redundant. */
			if (i > 0 && p[i] == 0)
				return -EBADMSG;
			*v = x;
			return (int)i + 1;
		}
	}
	return -EBADMSG;
}

int bt_varint_write(uint64_t v, uint8_t *out)
{
	int i = 0;
	while (v >= 0x80) {
		out[i++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[i++] = (uint8_t)v;
	return i;
}

int bt_cid_prefix_len(const uint8_t *p, size_t n)
{
	uint64_t ver, codec, mh, dlen;
	size_t off = 0;
	int k;
	if ((k = bt_varint_read(p + off, n - off, &ver)) < 0)
		return k;
	off += (size_t)k;
	if (ver != 1)
		return -EBADMSG;
	if ((k = bt_varint_read(p + off, n - off, &codec)) < 0)
		return k;
	off += (size_t)k;
	if ((k = bt_varint_read(p + off, n - off, &mh)) < 0)
		return k;
	off += (size_t)k;
	if ((k = bt_varint_read(p + off, n - off, &dlen)) < 0)
		return k;
	off += (size_t)k;
	if (dlen > BT_CID_MAX || off + dlen > BT_CID_MAX || dlen > n - off)
		return -EBADMSG;
	if (mh == BT_CID_MH_SHA256 && dlen != 32)
		return -EBADMSG;
	return (int)(off + dlen);
}

int bt_cid_parse(const uint8_t *p, size_t n, struct bt_cid *out)
{
	int k = bt_cid_prefix_len(p, n);
	if (k < 0)
		return k;
	if ((size_t)k != n)
		return -EBADMSG;
	out->len = (uint8_t)n;
	memcpy(out->b, p, n);
	return 0;
}

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

int bt_cid_from_strn(const char *s, size_t n, struct bt_cid *out)
{
	uint8_t tmp[BT_CID_MAX];
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	if (n < 2 || s[0] != 'b')
		return -EBADMSG;
	for (size_t i = 1; i < n; i++) {
		char c = s[i];
		int v;
		if (c >= 'a' && c <= 'z')
			v = c - 'a';
		else if (c >= '2' && c <= '7')
			v = c - '2' + 26;
		else
			return -EBADMSG;
		acc = (acc << 5) | (uint32_t)v;
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			if (o >= sizeof tmp)
				return -EBADMSG;
			tmp[o++] = (uint8_t)(acc >> bits);
		}
		acc &= (1u << bits) - 1;
	}
	/* Leftover bits must be fewer than a whole byte and all zero (canonical). */
	if (bits >= 5 || acc != 0)
		return -EBADMSG;
	return bt_cid_parse(tmp, o, out);
}

int bt_cid_from_str(const char *s, struct bt_cid *out)
{
	return bt_cid_from_strn(s, strlen(s), out);
}

int bt_cid_to_str(const struct bt_cid *c, char *out, size_t cap)
{
	size_t need = 1 + (c->len * 8u + 4) / 5;
	if (cap < need + 1)
		return -ENOSPC;
	size_t o = 0;
	out[o++] = 'b';
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < c->len; i++) {
		acc = (acc << 8) | c->b[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[o++] = b32[(acc >> bits) & 31];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits > 0)
		out[o++] = b32[(acc << (5 - bits)) & 31];
	out[o] = 0;
	return (int)o;
}

bool bt_cid_eq(const struct bt_cid *a, const struct bt_cid *b)
{
	return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

int bt_cid_for_block(uint64_t codec, const uint8_t *data, size_t n, struct bt_cid *out)
{
	size_t o = 0;
	out->b[o++] = 1;
	o += (size_t)bt_varint_write(codec, out->b + o);
	out->b[o++] = BT_CID_MH_SHA256;
	out->b[o++] = 32;
	bt_sha256(data, n, out->b + o);
	out->len = (uint8_t)(o + 32);
	return 0;
}

/* Offsets of the multihash code and digest inside a parsed CID. */
static int cid_hash(const struct bt_cid *c, uint64_t *codec, uint64_t *mh, size_t *digest_off)
{
	uint64_t v, dlen;
	size_t off = 0;
	int k;
	if ((k = bt_varint_read(c->b, c->len, &v)) < 0)
		return k;
	off += (size_t)k;
	if ((k = bt_varint_read(c->b + off, c->len - off, codec)) < 0)
		return k;
	off += (size_t)k;
	if ((k = bt_varint_read(c->b + off, c->len - off, mh)) < 0)
		return k;
	off += (size_t)k;
	if ((k = bt_varint_read(c->b + off, c->len - off, &dlen)) < 0)
		return k;
	off += (size_t)k;
	if (off + dlen != c->len)
		return -EBADMSG;
	*digest_off = off;
	return 0;
}

uint64_t bt_cid_codec(const struct bt_cid *c)
{
	uint64_t codec = 0, mh;
	size_t off;
	if (cid_hash(c, &codec, &mh, &off) < 0)
		return 0;
	return codec;
}

int bt_cid_check_block(const struct bt_cid *c, const uint8_t *data, size_t n)
{
	uint64_t codec, mh;
	size_t off;
	int rc = cid_hash(c, &codec, &mh, &off);
	if (rc < 0)
		return rc;
	if (mh != BT_CID_MH_SHA256 || c->len - off != 32)
		return -ENOTSUP;
	uint8_t d[32];
	bt_sha256(data, n, d);
	return memcmp(d, c->b + off, 32) == 0 ? 0 : -EBADMSG;
}
