/*
 * NAME
 *	bt_cid.h - binary CIDv1 (multihash sha2-256; codecs dag-cbor and raw)
 * DESCRIPTION
 *	A bt_cid holds the exact binary bytes of a CIDv1: varint version (1),
 *	varint codec, varint multihash code, varint digest length, digest.  Parsing
 *	accepts any codec and hash code but only checks hashes for sha2-256.
 *	String form is multibase base32 lower case ('b' prefix, no padding).
 *	Plain values, no allocation, safe from any thread.
 * DIAGNOSTICS
 *	-EBADMSG on malformed input, -ENOSPC when an output buffer is too small,
 *	-ENOTSUP for an unsupported hash.
 */
#ifndef BT_CID_H
#define BT_CID_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BT_CID_MAX 64
#define BT_CID_STR_MAX 128
#define BT_CID_CODEC_DAG_CBOR 0x71
#define BT_CID_CODEC_RAW 0x55
#define BT_CID_MH_SHA256 0x12

struct bt_cid {
	uint8_t len;
	uint8_t b[BT_CID_MAX];
};

/* Parse exactly p[0..n) as a binary CIDv1; borrows p, copies into out. */
int bt_cid_parse(const uint8_t *p, size_t n, struct bt_cid *out);
/* Length of the CIDv1 at the start of p[0..n) (the rest is ignored), or <0. */
int bt_cid_prefix_len(const uint8_t *p, size_t n);
/* Parse a 'b' base32 multibase string; borrows s. */
int bt_cid_from_str(const char *s, struct bt_cid *out);
/* Same, for a string that is not NUL-terminated. */
int bt_cid_from_strn(const char *s, size_t n, struct bt_cid *out);
/* Write the "bafy..." form into out (NUL-terminated); returns its length or -ENOSPC. */
int bt_cid_to_str(const struct bt_cid *c, char *out, size_t cap);
/* Byte equality. */
bool bt_cid_eq(const struct bt_cid *a, const struct bt_cid *b);
/* CIDv1 with sha-256 of data[0..n) and the given codec; borrows data. */
int bt_cid_for_block(uint64_t codec, const uint8_t *data, size_t n, struct bt_cid *out);
/* 0 if c is a sha-256 CID whose digest matches data, -EBADMSG if not, -ENOTSUP for other hashes. */
int bt_cid_check_block(const struct bt_cid *c, const uint8_t *data, size_t n);
/* Codec of a parsed CID (e.g. 0x71). */
uint64_t bt_cid_codec(const struct bt_cid *c);

/* Unsigned LEB128 varint (multiformats): minimal, at most 9 bytes.  Returns bytes read or <0. */
int bt_varint_read(const uint8_t *p, size_t n, uint64_t *v);
/* Write v as a varint into out (at least 10 bytes); returns bytes written. */
int bt_varint_write(uint64_t v, uint8_t *out);

#endif
