/*
 * NAME
 *	bt_crypto.h - atproto signing keys: K-256 (libsecp256k1) and P-256 (OpenSSL 3 EVP)
 * DESCRIPTION
 *	A struct bt_pubkey is parsed once (multikey, did:key or the legacy
 *	verification-method forms) and is then ready to verify; the verify
 *	process keeps them in its identity cache.  Verification follows the
 *	atproto cryptography spec: the message is hashed with SHA-256, the
 *	signature must be the 64-byte compact r||s form, and only low-S
 *	signatures are valid on both curves (high-S and DER are rejected).
 *	A public key may be shared by several threads for verification.
 *	Private keys exist for tests, tools and the load generator.
 * DIAGNOSTICS
 *	Functions return 0 (or a length) on success and a negative errno value
 *	on failure: -EINVAL for malformed input, -ENOTSUP for an unknown key
 *	type or multicodec, -EBADMSG for a signature that does not verify,
 *	-ENOMEM, -ENOSPC for a short output buffer.
 */
#ifndef BT_CRYPTO_H
#define BT_CRYPTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bt_key_type { BT_KEY_NONE, BT_KEY_K256, BT_KEY_P256 };

/* Room for a multikey string: "z" + base58 of 35 bytes + NUL. */
#define BT_MULTIKEY_MAX 64

struct bt_pubkey; /* opaque: parsed once, ready to verify */
struct bt_privkey;

/* Parses "z"+base58btc(varint multicodec 0xe7 K-256 | 0x1200 P-256 + 33-byte compressed point);
   borrows mb; *out is returned owned. */
int bt_pubkey_parse_multikey(const char *mb, size_t n, struct bt_pubkey **out);
/* Parses "did:key:z..." (same payload as a multikey); borrows s; *out is returned owned. */
int bt_pubkey_parse_didkey(const char *s, size_t n, struct bt_pubkey **out);
/* Parses a legacy verification method: type EcdsaSecp256k1VerificationKey2019 or
   EcdsaSecp256r1VerificationKey2019, mb = "z"+base58btc of the raw key (33 or 65 bytes, no multicodec);
   borrows type and mb; *out is returned owned. */
int bt_pubkey_parse_legacy(const char *type, const char *mb, size_t n, struct bt_pubkey **out);
/* Builds a key from a raw SEC1 point (33-byte compressed or 65-byte uncompressed); borrows p; *out owned. */
int bt_pubkey_from_raw(enum bt_key_type t, const uint8_t *p, size_t n, struct bt_pubkey **out);
/* The key's curve; borrows k (NULL gives BT_KEY_NONE). */
enum bt_key_type bt_pubkey_type(const struct bt_pubkey *k);
/* Writes the multikey "z..." (NUL-terminated) into out; returns its length or -ENOSPC. */
int bt_pubkey_multikey(const struct bt_pubkey *k, char *out, size_t cap);
/* Writes "did:key:z..." into out; returns its length or -ENOSPC. */
int bt_pubkey_didkey(const struct bt_pubkey *k, char *out, size_t cap);
/* Copies the 33-byte compressed point into out; borrows k. */
void bt_pubkey_compressed(const struct bt_pubkey *k, uint8_t out[33]);
/* True when both keys are the same curve and point; borrows both (NULLs compare equal only to NULL). */
bool bt_pubkey_eq(const struct bt_pubkey *a, const struct bt_pubkey *b);
/* 0 when sig (64-byte compact r||s, low-S) signs sha-256(msg) under k, <0 otherwise; borrows all.
   Allocates nothing itself in the common case (OpenSSL's P-256 internals may). */
int bt_pubkey_verify(const struct bt_pubkey *k, const uint8_t *msg, size_t n, const uint8_t *sig,
		     size_t siglen);
/* Same, with the 32-byte digest already computed by the caller. */
int bt_pubkey_verify_digest(const struct bt_pubkey *k, const uint8_t digest[32], const uint8_t *sig,
			    size_t siglen);
/* Frees *k and sets it to NULL; accepts NULL and *k == NULL. */
void bt_pubkey_free(struct bt_pubkey **k);

/* Generates a fresh random key; *out is returned owned. */
int bt_privkey_generate(enum bt_key_type t, struct bt_privkey **out);
/* Builds a key from its 32-byte big-endian scalar (must be in [1, n-1]); borrows sk; *out owned. */
int bt_privkey_from_bytes(enum bt_key_type t, const uint8_t sk[32], struct bt_privkey **out);
/* Signs sha-256(msg) (K-256: RFC 6979 nonce; P-256: OpenSSL's random nonce), writes compact low-S r||s;
   borrows all. */
int bt_privkey_sign(const struct bt_privkey *k, const uint8_t *msg, size_t n, uint8_t sig[64]);
/* Returns the public half in *out (owned by the caller); borrows k. */
int bt_privkey_public(const struct bt_privkey *k, struct bt_pubkey **out);
/* The key's curve; borrows k. */
enum bt_key_type bt_privkey_type(const struct bt_privkey *k);
/* Frees *k (scalar wiped) and sets it to NULL; accepts NULL. */
void bt_privkey_free(struct bt_privkey **k);

/* SHA-256 of p[0..n) into out; borrows p; thread-safe; no allocation. */
void bt_sha256(const void *p, size_t n, uint8_t out[32]);

#endif
