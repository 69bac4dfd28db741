/*
 * NAME
 *	bt_crypto.c - atproto signing keys: K-256 (libsecp256k1) and P-256 (OpenSSL 3 EVP)
 * DESCRIPTION
 *	Used by verify (commit signatures), by tools and by the load generator
 *	(signing).  K-256 verification goes through libsecp256k1's static
 *	context, which rejects high-S itself and allocates nothing.  P-256 goes
 *	through the non-deprecated EVP API: the compact r||s is range- and
 *	low-S-checked by hand, turned into DER on the stack and verified with an
 *	EVP_PKEY_CTX cached in the key.  The cached context is claimed with an
 *	atomic flag, so a key shared by threads stays correct: a thread that
 *	finds it busy makes a temporary context instead.
 *	SHA-256 is OpenSSL's low-level SHA256_* (bt_sha256): no fetch, no
 *	allocation, SHA extensions where the CPU has them.
 * DIAGNOSTICS
 *	Negative errno values: -EINVAL bad encoding or point, -ENOTSUP unknown
 *	multicodec or key type, -EBADMSG signature invalid, -ENOMEM, -ENOSPC.
 *	Nothing is logged; OpenSSL's error queue is cleared after failures.
 */
/* bt_sha256 uses SHA256_Init/Update/Final, deprecated since OpenSSL 3.0 (see there why). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "bt_crypto.h"

#include "bt_base.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <secp256k1.h>

#define PUB_MAGIC 0x4b505542u  /* "KPUB" */
#define PRIV_MAGIC 0x4b505256u /* "KPRV" */

struct bt_pubkey {
	uint32_t magic;
	enum bt_key_type type;
	uint8_t comp[33];
	secp256k1_pubkey k1;   /* K-256 */
	EVP_PKEY *pk;          /* P-256 */
	EVP_PKEY_CTX *vctx;    /* P-256: verify context, initialised once */
	atomic_flag vbusy;     /* claims vctx */
};

struct bt_privkey {
	uint32_t magic;
	enum bt_key_type type;
	uint8_t sk[32];
	uint8_t comp[33];
	EVP_PKEY *pk; /* P-256 */
};

static const uint8_t p256_n[32] = {
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
static const uint8_t p256_half_n[32] = {
	0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8};

/* Multicodec prefixes as unsigned varints. */
#define MC_K256 0xe7
#define MC_P256 0x1200

/* ---- SHA-256 ---------------------------------------------------------- */

/* OpenSSL's SHA-256 (its assembly uses the CPU's SHA extensions where there are any), through
   the low-level SHA256_Init/Update/Final: the state lives on the stack, nothing is fetched or
   allocated.  OpenSSL 3 marks these deprecated in favour of EVP, but on 3.0 every
   EVP_DigestInit_ex2 allocates a provider context (one malloc per block hashed), and the
   one-shot SHA256() fetches the algorithm under a rwlock as well: that was ~220 rwlock
   acquisitions per #commit frame in verify's profile.  tools/framebench counts mallocs per
   frame (0 from hashing). */
void bt_sha256(const void *p, size_t n, uint8_t out[32])
{
	SHA256_CTX c;
	SHA256_Init(&c);
	SHA256_Update(&c, p, n);
	SHA256_Final(out, &c);
}

/* ---- secp256k1 context for signing ---------------------------------------- */

static secp256k1_context *k1_sign_ctx;
static pthread_once_t k1_once = PTHREAD_ONCE_INIT;

static void k1_init(void)
{
	k1_sign_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
	if (k1_sign_ctx) {
		uint8_t seed[32];
		/* Randomisation only blinds side channels; a failure leaves a working context. */
		if (RAND_bytes(seed, sizeof seed) == 1) {
			int ok = secp256k1_context_randomize(k1_sign_ctx, seed);
			(void)ok;
		}
		OPENSSL_cleanse(seed, sizeof seed);
	}
}

static secp256k1_context *k1_ctx(void)
{
	pthread_once(&k1_once, k1_init);
	return k1_sign_ctx;
}

/* ---- public keys ------------------------------------------------------ */

static struct bt_pubkey *pub_alloc(enum bt_key_type t)
{
	struct bt_pubkey *k = calloc(1, sizeof *k);
	if (!k)
		return NULL;
	k->magic = PUB_MAGIC;
	k->type = t;
	atomic_flag_clear(&k->vbusy);
	return k;
}

/* Builds an EVP_PKEY for P-256 from SEC1 bytes; the import rejects points off the curve. */
static EVP_PKEY *p256_pkey(const uint8_t *pt, size_t n, const uint8_t *sk)
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *c = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	BIGNUM *priv = NULL;

	if (!bld)
		goto out;
	if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, n))
		goto out;
	if (sk) {
		priv = BN_bin2bn(sk, 32, NULL);
		if (!priv || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv))
			goto out;
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !c || EVP_PKEY_fromdata_init(c) != 1 ||
	    EVP_PKEY_fromdata(c, &pk, sk ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1) {
		pk = NULL;
		goto out;
	}
	/* Belt and braces: make sure the point is a valid public key of the group. */
	EVP_PKEY_CTX_free(c);
	c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	if (!c || EVP_PKEY_public_check(c) != 1) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
out:
	EVP_PKEY_CTX_free(c);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_clear_free(priv);
	if (!pk)
		ERR_clear_error();
	return pk;
}

int bt_pubkey_from_raw(enum bt_key_type t, const uint8_t *p, size_t n, struct bt_pubkey **out)
{
	*out = NULL;
	if (!((n == 33 && (p[0] == 2 || p[0] == 3)) || (n == 65 && p[0] == 4)))
		return -EINVAL;
	if (t != BT_KEY_K256 && t != BT_KEY_P256)
		return -ENOTSUP;
	struct bt_pubkey *k = pub_alloc(t);
	if (!k)
		return -ENOMEM;
	if (t == BT_KEY_K256) {
		size_t cl = sizeof k->comp;
		if (!secp256k1_ec_pubkey_parse(secp256k1_context_static, &k->k1, p, n) ||
		    !secp256k1_ec_pubkey_serialize(secp256k1_context_static, k->comp, &cl, &k->k1,
						   SECP256K1_EC_COMPRESSED)) {
			free(k);
			return -EINVAL;
		}
	} else {
		k->pk = p256_pkey(p, n, NULL);
		if (!k->pk) {
			free(k);
			return -EINVAL;
		}
		if (n == 33) {
			memcpy(k->comp, p, 33);
		} else {
			k->comp[0] = 2 | (p[64] & 1);
			memcpy(k->comp + 1, p + 1, 32);
		}
		k->vctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pk, NULL);
		if (!k->vctx || EVP_PKEY_verify_init(k->vctx) != 1 ||
		    EVP_PKEY_CTX_set_signature_md(k->vctx, EVP_sha256()) != 1) {
			ERR_clear_error();
			bt_pubkey_free(&k);
			return -ENOMEM;
		}
	}
	*out = k;
	return 0;
}

int bt_pubkey_parse_multikey(const char *mb, size_t n, struct bt_pubkey **out)
{
	uint8_t raw[48];
	uint64_t codec;

	*out = NULL;
	if (n < 2 || mb[0] != 'z')
		return -EINVAL;
	int len = bt_base58_decode(mb + 1, n - 1, raw, sizeof raw);
	if (len < 0)
		return -EINVAL;
	int vl = bt_varint_decode(raw, (size_t)len, &codec);
	if (vl < 0)
		return -EINVAL;
	enum bt_key_type t;
	if (codec == MC_K256)
		t = BT_KEY_K256;
	else if (codec == MC_P256)
		t = BT_KEY_P256;
	else
		return -ENOTSUP;
	/* Multikeys carry the compressed point only. */
	if ((size_t)len - (size_t)vl != 33)
		return -EINVAL;
	return bt_pubkey_from_raw(t, raw + vl, 33, out);
}

int bt_pubkey_parse_didkey(const char *s, size_t n, struct bt_pubkey **out)
{
	*out = NULL;
	if (n < 8 || memcmp(s, "did:key:", 8) != 0)
		return -EINVAL;
	return bt_pubkey_parse_multikey(s + 8, n - 8, out);
}

int bt_pubkey_parse_legacy(const char *type, const char *mb, size_t n, struct bt_pubkey **out)
{
	uint8_t raw[80];
	enum bt_key_type t;

	*out = NULL;
	if (!type)
		return -EINVAL;
	if (strcmp(type, "EcdsaSecp256k1VerificationKey2019") == 0)
		t = BT_KEY_K256;
	else if (strcmp(type, "EcdsaSecp256r1VerificationKey2019") == 0)
		t = BT_KEY_P256;
	else
		return -ENOTSUP;
	if (n < 2 || mb[0] != 'z')
		return -EINVAL;
	int len = bt_base58_decode(mb + 1, n - 1, raw, sizeof raw);
	if (len < 0)
		return -EINVAL;
	return bt_pubkey_from_raw(t, raw, (size_t)len, out);
}

enum bt_key_type bt_pubkey_type(const struct bt_pubkey *k)
{
	if (!k)
		return BT_KEY_NONE;
	assert(k->magic == PUB_MAGIC);
	return k->type;
}

static int multikey_of(enum bt_key_type t, const uint8_t comp[33], char *out, size_t cap)
{
	uint8_t raw[35];
	size_t vl = 2;
	if (t == BT_KEY_K256) {
		raw[0] = 0xe7;
		raw[1] = 0x01;
	} else {
		raw[0] = 0x80;
		raw[1] = 0x24;
	}
	memcpy(raw + vl, comp, 33);
	if (cap < 2)
		return -ENOSPC;
	out[0] = 'z';
	int n = bt_base58_encode(raw, vl + 33, out + 1, cap - 1);
	return n < 0 ? n : n + 1;
}

int bt_pubkey_multikey(const struct bt_pubkey *k, char *out, size_t cap)
{
	assert(k && k->magic == PUB_MAGIC);
	return multikey_of(k->type, k->comp, out, cap);
}

int bt_pubkey_didkey(const struct bt_pubkey *k, char *out, size_t cap)
{
	assert(k && k->magic == PUB_MAGIC);
	if (cap < 9)
		return -ENOSPC;
	memcpy(out, "did:key:", 8);
	int n = multikey_of(k->type, k->comp, out + 8, cap - 8);
	return n < 0 ? n : n + 8;
}

void bt_pubkey_compressed(const struct bt_pubkey *k, uint8_t out[33])
{
	assert(k && k->magic == PUB_MAGIC);
	memcpy(out, k->comp, 33);
}

bool bt_pubkey_eq(const struct bt_pubkey *a, const struct bt_pubkey *b)
{
	if (!a || !b)
		return a == b;
	assert(a->magic == PUB_MAGIC && b->magic == PUB_MAGIC);
	return a->type == b->type && memcmp(a->comp, b->comp, 33) == 0;
}

static bool is_zero32(const uint8_t *p)
{
	uint8_t acc = 0;
	for (int i = 0; i < 32; i++)
		acc |= p[i];
	return acc == 0;
}

/* Appends a DER INTEGER for the 32-byte unsigned big-endian v; returns bytes written. */
static size_t der_int(uint8_t *o, const uint8_t *v)
{
	size_t i = 0;
	while (i < 31 && v[i] == 0)
		i++;
	size_t len = 32 - i, pad = (v[i] & 0x80) ? 1 : 0;
	o[0] = 0x02;
	o[1] = (uint8_t)(len + pad);
	if (pad)
		o[2] = 0;
	memcpy(o + 2 + pad, v + i, len);
	return 2 + pad + len;
}

static int verify_p256(const struct bt_pubkey *k, const uint8_t digest[32], const uint8_t *sig)
{
	const uint8_t *r = sig, *s = sig + 32;
	uint8_t der[72];

	if (is_zero32(r) || is_zero32(s) || memcmp(r, p256_n, 32) >= 0 || memcmp(s, p256_n, 32) >= 0)
		return -EBADMSG;
	if (memcmp(s, p256_half_n, 32) > 0)
		return -EBADMSG; /* high-S is invalid in atproto */
	size_t n = 2;
	n += der_int(der + n, r);
	n += der_int(der + n, s);
	der[0] = 0x30;
	der[1] = (uint8_t)(n - 2);

	/* The cached context is shared state; a thread that loses the race uses its own. */
	struct bt_pubkey *mk = (struct bt_pubkey *)k;
	EVP_PKEY_CTX *c = NULL;
	bool own = atomic_flag_test_and_set_explicit(&mk->vbusy, memory_order_acquire);
	if (!own) {
		c = mk->vctx;
	} else {
		c = EVP_PKEY_CTX_new_from_pkey(NULL, mk->pk, NULL);
		if (!c || EVP_PKEY_verify_init(c) != 1 || EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) != 1) {
			EVP_PKEY_CTX_free(c);
			ERR_clear_error();
			return -ENOMEM;
		}
	}
	int ok = EVP_PKEY_verify(c, der, n, digest, 32);
	if (own)
		EVP_PKEY_CTX_free(c);
	else
		atomic_flag_clear_explicit(&mk->vbusy, memory_order_release);
	if (ok != 1) {
		ERR_clear_error();
		return -EBADMSG;
	}
	return 0;
}

int bt_pubkey_verify_digest(const struct bt_pubkey *k, const uint8_t digest[32], const uint8_t *sig,
			    size_t siglen)
{
	assert(k && k->magic == PUB_MAGIC);
	if (!sig || siglen != 64)
		return -EINVAL; /* DER or anything but compact r||s */
	if (k->type == BT_KEY_K256) {
		secp256k1_ecdsa_signature es;
		if (!secp256k1_ecdsa_signature_parse_compact(secp256k1_context_static, &es, sig))
			return -EBADMSG;
		/* secp256k1_ecdsa_verify refuses non-normalised (high-S) signatures. */
		if (!secp256k1_ecdsa_verify(secp256k1_context_static, &es, digest, &k->k1))
			return -EBADMSG;
		return 0;
	}
	if (k->type == BT_KEY_P256)
		return verify_p256(k, digest, sig);
	return -ENOTSUP;
}

int bt_pubkey_verify(const struct bt_pubkey *k, const uint8_t *msg, size_t n, const uint8_t *sig,
		     size_t siglen)
{
	uint8_t d[32];
	assert(k && k->magic == PUB_MAGIC);
	if (!sig || siglen != 64)
		return -EINVAL;
	bt_sha256(msg, n, d);
	return bt_pubkey_verify_digest(k, d, sig, siglen);
}

void bt_pubkey_free(struct bt_pubkey **kp)
{
	if (!kp || !*kp)
		return;
	struct bt_pubkey *k = *kp;
	assert(k->magic == PUB_MAGIC);
	EVP_PKEY_CTX_free(k->vctx);
	EVP_PKEY_free(k->pk);
	k->magic = 0;
	free(k);
	*kp = NULL;
}

/* ---- private keys ----------------------------------------------------- */

/* Computes the compressed P-256 public point of scalar sk. */
static int p256_public(const uint8_t sk[32], uint8_t comp[33])
{
	int rc = -ENOMEM;
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	EC_POINT *pt = g ? EC_POINT_new(g) : NULL;
	BIGNUM *d = BN_bin2bn(sk, 32, NULL);
	BN_CTX *bc = BN_CTX_new();
	if (g && pt && d && bc && EC_POINT_mul(g, pt, d, NULL, NULL, bc) == 1 &&
	    EC_POINT_point2oct(g, pt, POINT_CONVERSION_COMPRESSED, comp, 33, bc) == 33)
		rc = 0;
	BN_CTX_free(bc);
	BN_clear_free(d);
	EC_POINT_free(pt);
	EC_GROUP_free(g);
	if (rc)
		ERR_clear_error();
	return rc;
}

int bt_privkey_from_bytes(enum bt_key_type t, const uint8_t sk[32], struct bt_privkey **out)
{
	*out = NULL;
	if (t != BT_KEY_K256 && t != BT_KEY_P256)
		return -ENOTSUP;
	struct bt_privkey *k = calloc(1, sizeof *k);
	if (!k)
		return -ENOMEM;
	k->magic = PRIV_MAGIC;
	k->type = t;
	memcpy(k->sk, sk, 32);
	if (t == BT_KEY_K256) {
		secp256k1_context *c = k1_ctx();
		secp256k1_pubkey pub;
		size_t cl = 33;
		if (!c) {
			bt_privkey_free(&k);
			return -ENOMEM;
		}
		if (!secp256k1_ec_seckey_verify(c, sk) || !secp256k1_ec_pubkey_create(c, &pub, sk) ||
		    !secp256k1_ec_pubkey_serialize(c, k->comp, &cl, &pub, SECP256K1_EC_COMPRESSED)) {
			bt_privkey_free(&k);
			return -EINVAL;
		}
	} else {
		if (is_zero32(sk) || memcmp(sk, p256_n, 32) >= 0) {
			bt_privkey_free(&k);
			return -EINVAL;
		}
		int rc = p256_public(sk, k->comp);
		if (rc == 0) {
			k->pk = p256_pkey(k->comp, 33, sk);
			if (!k->pk)
				rc = -EINVAL;
		}
		if (rc) {
			bt_privkey_free(&k);
			return rc;
		}
	}
	*out = k;
	return 0;
}

int bt_privkey_generate(enum bt_key_type t, struct bt_privkey **out)
{
	uint8_t sk[32];
	*out = NULL;
	if (t != BT_KEY_K256 && t != BT_KEY_P256)
		return -ENOTSUP;
	for (int tries = 0; tries < 64; tries++) {
		if (RAND_bytes(sk, sizeof sk) != 1) {
			ERR_clear_error();
			return -EIO;
		}
		int rc = bt_privkey_from_bytes(t, sk, out);
		if (rc != -EINVAL) {
			OPENSSL_cleanse(sk, sizeof sk);
			return rc;
		}
	}
	OPENSSL_cleanse(sk, sizeof sk);
	return -EIO;
}

/* out = n - s for 32-byte big-endian numbers (s < n). */
static void p256_negate(const uint8_t *s, uint8_t *out)
{
	int borrow = 0;
	for (int i = 31; i >= 0; i--) {
		int v = (int)p256_n[i] - (int)s[i] - borrow;
		borrow = v < 0;
		out[i] = (uint8_t)(v + (borrow ? 256 : 0));
	}
}

static int sign_p256(const struct bt_privkey *k, const uint8_t d[32], uint8_t sig[64])
{
	int rc = -EIO;
	uint8_t der[80];
	size_t dl = sizeof der;
	ECDSA_SIG *es = NULL;
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pk, NULL);
	if (!c || EVP_PKEY_sign_init(c) != 1 || EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) != 1 ||
	    EVP_PKEY_sign(c, der, &dl, d, 32) != 1)
		goto out;
	const unsigned char *dp = der;
	es = d2i_ECDSA_SIG(NULL, &dp, (long)dl);
	if (!es)
		goto out;
	const BIGNUM *r, *s;
	ECDSA_SIG_get0(es, &r, &s);
	uint8_t sb[32];
	if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sb, 32) != 32)
		goto out;
	if (memcmp(sb, p256_half_n, 32) > 0)
		p256_negate(sb, sig + 32);
	else
		memcpy(sig + 32, sb, 32);
	rc = 0;
out:
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(c);
	if (rc)
		ERR_clear_error();
	return rc;
}

int bt_privkey_sign(const struct bt_privkey *k, const uint8_t *msg, size_t n, uint8_t sig[64])
{
	uint8_t d[32];
	assert(k && k->magic == PRIV_MAGIC);
	bt_sha256(msg, n, d);
	if (k->type == BT_KEY_K256) {
		secp256k1_context *c = k1_ctx();
		secp256k1_ecdsa_signature es;
		/* libsecp256k1 always produces normalised (low-S) signatures, nonce per RFC 6979. */
		if (!c || !secp256k1_ecdsa_sign(c, &es, d, k->sk, NULL, NULL) ||
		    !secp256k1_ecdsa_signature_serialize_compact(c, sig, &es))
			return -EIO;
		return 0;
	}
	return sign_p256(k, d, sig);
}

int bt_privkey_public(const struct bt_privkey *k, struct bt_pubkey **out)
{
	assert(k && k->magic == PRIV_MAGIC);
	return bt_pubkey_from_raw(k->type, k->comp, 33, out);
}

enum bt_key_type bt_privkey_type(const struct bt_privkey *k)
{
	if (!k)
		return BT_KEY_NONE;
	assert(k->magic == PRIV_MAGIC);
	return k->type;
}

void bt_privkey_free(struct bt_privkey **kp)
{
	if (!kp || !*kp)
		return;
	struct bt_privkey *k = *kp;
	assert(k->magic == PRIV_MAGIC);
	EVP_PKEY_free(k->pk);
	OPENSSL_cleanse(k, sizeof *k);
	free(k);
	*kp = NULL;
}
