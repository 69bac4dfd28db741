/*
 * NAME
 *	bt_base.h - base58btc, base32, base64 and unsigned-varint codecs
 * DESCRIPTION
 *	Small, allocation-free codecs used by multibase keys (did:key), CIDs
 *	and CAR files.  Every function works on caller-supplied buffers, is
 *	pure (no global state) and therefore safe from any thread or process.
 *	Encoders NUL-terminate their output; lengths returned never count the
 *	NUL.  Decoders accept exactly the canonical alphabet described on each
 *	function and reject anything else.
 * DIAGNOSTICS
 *	Functions return a length (>= 0) or a negative errno value:
 *	-EINVAL for malformed input, -ENOSPC when the output buffer is too
 *	small.
 */
#ifndef BT_BASE_H
#define BT_BASE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest unsigned varint accepted (multiformats caps them at 63 bits = 9 bytes). */
#define BT_VARINT_MAX 9

/* Decodes base58btc (Bitcoin alphabet, no multibase prefix); borrows s, writes out; returns the byte length. */
int bt_base58_decode(const char *s, size_t n, uint8_t *out, size_t cap);
/* Encodes p as base58btc into out (NUL-terminated); borrows p; returns the string length. */
int bt_base58_encode(const uint8_t *p, size_t n, char *out, size_t cap);

/* Decodes RFC 4648 base32, lower-case, no padding (multibase 'b' without the 'b'); returns the byte length. */
int bt_base32_decode(const char *s, size_t n, uint8_t *out, size_t cap);
/* Encodes p as lower-case unpadded base32 into out (NUL-terminated); returns the string length. */
int bt_base32_encode(const uint8_t *p, size_t n, char *out, size_t cap);

/* Decodes base64, standard or url-safe alphabet (not mixed), padding optional; returns the byte length. */
int bt_base64_decode(const char *s, size_t n, uint8_t *out, size_t cap);
/* Encodes p as base64 into out (NUL-terminated): url=false standard with padding, url=true url-safe
   without padding; returns the string length. */
int bt_base64_encode(const uint8_t *p, size_t n, char *out, size_t cap, bool url);

/* Decodes one unsigned varint from p[0..n); rejects non-minimal forms and more than 9 bytes;
   returns the number of bytes consumed. */
int bt_varint_decode(const uint8_t *p, size_t n, uint64_t *v);
/* Encodes v (must be < 2^63) into out; returns the number of bytes written (1..9). */
int bt_varint_encode(uint64_t v, uint8_t *out, size_t cap);

#endif
