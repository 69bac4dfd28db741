/*
 * NAME
 *	test_crypto - bt_base codecs, bt_crypto keys and signatures
 * DESCRIPTION
 *	Runs the interop signature fixtures (both curves, high-S and DER
 *	rejects), the W3C did:key vectors, sign/verify round trips with
 *	generated keys, low-S output, tampering, and the base58/32/64 and
 *	varint codecs against known values.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; exits non-zero on any failure.
 */
#include "bt_test.h"

#include "bt_base.h"
#include "bt_crypto.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>

static const uint8_t k256_n[32] = {
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
	0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
static const uint8_t p256_n[32] = {
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

/* out = n - s, big-endian. */
static void negate(const uint8_t *n, const uint8_t *s, uint8_t *out)
{
	int borrow = 0;
	for (int i = 31; i >= 0; i--) {
		int v = (int)n[i] - (int)s[i] - borrow;
		borrow = v < 0;
		out[i] = (uint8_t)(v + (borrow ? 256 : 0));
	}
}

/* True when s <= n/2, by comparing 2*s with n. */
static bool low_s(const uint8_t *n, const uint8_t *s)
{
	uint8_t neg[32];
	negate(n, s, neg);
	return memcmp(s, neg, 32) <= 0;
}

static int hexdec(const char *h, uint8_t *out, size_t cap)
{
	size_t n = strlen(h);
	if (n % 2 || n / 2 > cap)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(h + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return (int)(n / 2);
}

static void test_base58(void)
{
	char s[128];
	uint8_t b[128];
	CHECK(bt_base58_encode((const uint8_t *)"hello world", 11, s, sizeof s) == 15);
	CHECK(strcmp(s, "StV1DL6CwTryKyV") == 0);
	CHECK(bt_base58_decode("StV1DL6CwTryKyV", 15, b, sizeof b) == 11 && memcmp(b, "hello world", 11) == 0);
	const uint8_t z[] = {0, 0, 1};
	CHECK(bt_base58_encode(z, 3, s, sizeof s) == 3 && strcmp(s, "112") == 0);
	CHECK(bt_base58_decode("112", 3, b, sizeof b) == 3 && memcmp(b, z, 3) == 0);
	CHECK(bt_base58_decode("", 0, b, sizeof b) == 0);
	CHECK(bt_base58_decode("0OIl", 4, b, sizeof b) == -EINVAL);
	CHECK(bt_base58_decode("StV1DL6CwTryKyV", 15, b, 5) == -ENOSPC);
	CHECK(bt_base58_encode((const uint8_t *)"hello world", 11, s, 10) == -ENOSPC);
	/* Round trip random-ish buffers with leading zeros. */
	for (int len = 0; len < 40; len++) {
		uint8_t in[40];
		for (int i = 0; i < len; i++)
			in[i] = (uint8_t)(i < len / 4 ? 0 : (i * 37 + len) & 0xff);
		int e = bt_base58_encode(in, (size_t)len, s, sizeof s);
		int d = e >= 0 ? bt_base58_decode(s, (size_t)e, b, sizeof b) : -1;
		CHECKF(d == len && memcmp(in, b, (size_t)len) == 0, "len %d", len);
	}
}

static void test_base32_64(void)
{
	char s[128];
	uint8_t b[128];
	CHECK(bt_base32_encode((const uint8_t *)"hello", 5, s, sizeof s) == 8 && strcmp(s, "nbswy3dp") == 0);
	CHECK(bt_base32_decode("nbswy3dp", 8, b, sizeof b) == 5 && memcmp(b, "hello", 5) == 0);
	CHECK(bt_base32_encode((const uint8_t *)"f", 1, s, sizeof s) == 2 && strcmp(s, "my") == 0);
	CHECK(bt_base32_decode("my", 2, b, sizeof b) == 1 && b[0] == 'f');
	CHECK(bt_base32_decode("mz", 2, b, sizeof b) == -EINVAL); /* non-zero trailing bits */
	CHECK(bt_base32_decode("NBSWY3DP", 8, b, sizeof b) == -EINVAL);
	CHECK(bt_base32_decode("nbs", 3, b, sizeof b) == -EINVAL);
	CHECK(bt_base32_decode("nbswy3dp", 8, b, 4) == -ENOSPC);

	CHECK(bt_base64_encode((const uint8_t *)"foob", 4, s, sizeof s, false) == 8 && strcmp(s, "Zm9vYg==") == 0);
	CHECK(bt_base64_encode((const uint8_t *)"foob", 4, s, sizeof s, true) == 6 && strcmp(s, "Zm9vYg") == 0);
	CHECK(bt_base64_decode("Zm9vYg==", 8, b, sizeof b) == 4 && memcmp(b, "foob", 4) == 0);
	CHECK(bt_base64_decode("Zm9vYg", 6, b, sizeof b) == 4 && memcmp(b, "foob", 4) == 0);
	CHECK(bt_base64_decode("Zm9vYmE=", 8, b, sizeof b) == 5 && memcmp(b, "fooba", 5) == 0);
	const uint8_t hi[] = {0xfb, 0xff, 0xbf};
	CHECK(bt_base64_encode(hi, 3, s, sizeof s, false) == 4 && strcmp(s, "+/+/") == 0);
	CHECK(bt_base64_encode(hi, 3, s, sizeof s, true) == 4 && strcmp(s, "-_-_") == 0);
	CHECK(bt_base64_decode("+/+/", 4, b, sizeof b) == 3 && memcmp(b, hi, 3) == 0);
	CHECK(bt_base64_decode("-_-_", 4, b, sizeof b) == 3 && memcmp(b, hi, 3) == 0);
	CHECK(bt_base64_decode("+_-/", 4, b, sizeof b) == -EINVAL); /* mixed alphabets */
	CHECK(bt_base64_decode("Zm9vY", 5, b, sizeof b) == -EINVAL);
	CHECK(bt_base64_decode("Zm9=vYg=", 8, b, sizeof b) == -EINVAL);
	CHECK(bt_base64_decode("Zh==", 4, b, sizeof b) == -EINVAL); /* non-zero trailing bits */
	CHECK(bt_base64_decode("", 0, b, sizeof b) == 0);
}

static void test_varint(void)
{
	uint8_t b[16];
	uint64_t v;
	CHECK(bt_varint_encode(300, b, sizeof b) == 2 && b[0] == 0xac && b[1] == 0x02);
	CHECK(bt_varint_decode(b, 2, &v) == 2 && v == 300);
	CHECK(bt_varint_encode(0, b, sizeof b) == 1 && b[0] == 0);
	CHECK(bt_varint_decode(b, 1, &v) == 1 && v == 0);
	CHECK(bt_varint_encode(0x1200, b, sizeof b) == 2 && b[0] == 0x80 && b[1] == 0x24);
	const uint8_t nonmin[] = {0x80, 0x00};
	CHECK(bt_varint_decode(nonmin, 2, &v) == -EINVAL);
	const uint8_t nonmin2[] = {0xac, 0x82, 0x00};
	CHECK(bt_varint_decode(nonmin2, 3, &v) == -EINVAL);
	CHECK(bt_varint_decode(b, 0, &v) == -ENODATA);
	const uint8_t trunc[] = {0xac};
	CHECK(bt_varint_decode(trunc, 1, &v) == -ENODATA);
	uint64_t max = (1ull << 63) - 1;
	CHECK(bt_varint_encode(max, b, sizeof b) == 9);
	CHECK(bt_varint_decode(b, 9, &v) == 9 && v == max);
	CHECK(bt_varint_encode(1ull << 63, b, sizeof b) == -EINVAL);
	const uint8_t ten[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	CHECK(bt_varint_decode(ten, 10, &v) == -EINVAL);
	CHECK(bt_varint_encode(300, b, 1) == -ENOSPC);
	for (uint64_t x = 1; x < (1ull << 62); x = x * 3 + 1) {
		int n = bt_varint_encode(x, b, sizeof b);
		CHECKF(n > 0 && bt_varint_decode(b, (size_t)n, &v) == n && v == x, "%llu", (unsigned long long)x);
	}
}

static void test_sha256(void)
{
	uint8_t d[32], e[32];
	uint8_t buf[10000];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	bt_sha256("abc", 3, d);
	uint8_t abc[32];
	hexdec("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", abc, 32);
	CHECK(memcmp(d, abc, 32) == 0);
	const size_t lens[] = {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 4095, 4096, 9999};
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		unsigned int l = 32;
		bt_sha256(buf, lens[i], d);
		EVP_Digest(buf, lens[i], e, &l, EVP_sha256(), NULL);
		CHECKF(memcmp(d, e, 32) == 0, "len %zu", lens[i]);
	}
}

static void test_fixtures(void)
{
	char path[512];
	snprintf(path, sizeof path, "%s/interop/crypto/signature-fixtures.json", bt_vectors());
	json_error_t err;
	json_t *arr = json_load_file(path, 0, &err);
	CHECKF(arr && json_is_array(arr), "%s: %s", path, err.text);
	if (!arr)
		return;
	size_t i;
	json_t *e;
	int n = 0, invalid = 0;
	json_array_foreach(arr, i, e)
	{
		const char *msg64 = json_string_value(json_object_get(e, "messageBase64"));
		const char *sig64 = json_string_value(json_object_get(e, "signatureBase64"));
		const char *did = json_string_value(json_object_get(e, "publicKeyDid"));
		const char *mb = json_string_value(json_object_get(e, "publicKeyMultibase"));
		const char *suite = json_string_value(json_object_get(e, "didDocSuite"));
		const char *alg = json_string_value(json_object_get(e, "algorithm"));
		bool valid = json_is_true(json_object_get(e, "validSignature"));
		uint8_t msg[256], sig[128];
		int ml = bt_base64_decode(msg64, strlen(msg64), msg, sizeof msg);
		int sl = bt_base64_decode(sig64, strlen(sig64), sig, sizeof sig);
		CHECKF(ml > 0 && sl > 0, "entry %zu base64", i);
		struct bt_pubkey *kd = NULL, *kl = NULL;
		CHECKF(bt_pubkey_parse_didkey(did, strlen(did), &kd) == 0, "entry %zu did:key", i);
		CHECKF(bt_pubkey_parse_legacy(suite, mb, strlen(mb), &kl) == 0, "entry %zu legacy", i);
		if (!kd || !kl || ml < 0 || sl < 0) {
			bt_pubkey_free(&kd);
			bt_pubkey_free(&kl);
			continue;
		}
		enum bt_key_type t = strcmp(alg, "ES256K") == 0 ? BT_KEY_K256 : BT_KEY_P256;
		CHECK(bt_pubkey_type(kd) == t);
		CHECK(bt_pubkey_eq(kd, kl));
		char back[128];
		int bl = bt_pubkey_didkey(kd, back, sizeof back);
		CHECKF(bl > 0 && strcmp(back, did) == 0, "entry %zu: %s", i, back);
		int r1 = bt_pubkey_verify(kd, msg, (size_t)ml, sig, (size_t)sl);
		int r2 = bt_pubkey_verify(kl, msg, (size_t)ml, sig, (size_t)sl);
		CHECKF((r1 == 0) == valid, "entry %zu (%s): got %d want %d", i,
		       json_string_value(json_object_get(e, "comment")), r1, valid);
		CHECKF((r2 == 0) == valid, "entry %zu legacy key: got %d", i, r2);
		if (valid) {
			/* The same valid signature with its S negated (high-S) is refused. */
			uint8_t hs[64];
			memcpy(hs, sig, 32);
			negate(t == BT_KEY_K256 ? k256_n : p256_n, sig + 32, hs + 32);
			CHECKF(bt_pubkey_verify(kd, msg, (size_t)ml, hs, 64) < 0, "entry %zu high-S", i);
			msg[0] ^= 1;
			CHECK(bt_pubkey_verify(kd, msg, (size_t)ml, sig, 64) < 0);
		} else {
			invalid++;
		}
		n++;
		bt_pubkey_free(&kd);
		bt_pubkey_free(&kl);
		CHECK(kd == NULL && kl == NULL);
	}
	CHECK(n == 6 && invalid == 4);
	json_decref(arr);
}

static void test_w3c(void)
{
	char path[512];
	const char *files[] = {"w3c_didkey_K256.json", "w3c_didkey_P256.json"};
	for (int f = 0; f < 2; f++) {
		snprintf(path, sizeof path, "%s/interop/crypto/%s", bt_vectors(), files[f]);
		json_t *arr = json_load_file(path, 0, NULL);
		CHECKF(arr != NULL, "%s", path);
		if (!arr)
			continue;
		size_t i;
		json_t *e;
		int n = 0;
		json_array_foreach(arr, i, e)
		{
			uint8_t sk[40];
			int skl;
			const char *hex = json_string_value(json_object_get(e, "privateKeyBytesHex"));
			const char *b58 = json_string_value(json_object_get(e, "privateKeyBytesBase58"));
			const char *want = json_string_value(json_object_get(e, "publicDidKey"));
			skl = hex ? hexdec(hex, sk, sizeof sk) : bt_base58_decode(b58, strlen(b58), sk, sizeof sk);
			CHECK(skl == 32);
			enum bt_key_type t = f == 0 ? BT_KEY_K256 : BT_KEY_P256;
			struct bt_privkey *priv = NULL;
			struct bt_pubkey *pub = NULL, *parsed = NULL;
			CHECK(bt_privkey_from_bytes(t, sk, &priv) == 0);
			CHECK(priv && bt_privkey_public(priv, &pub) == 0);
			char got[128];
			CHECK(pub && bt_pubkey_didkey(pub, got, sizeof got) > 0 && strcmp(got, want) == 0);
			CHECK(bt_pubkey_parse_didkey(want, strlen(want), &parsed) == 0);
			CHECK(bt_pubkey_eq(pub, parsed));
			CHECK(bt_pubkey_type(parsed) == t);
			/* Signing with the vector key verifies under the parsed did:key. */
			uint8_t sig[64];
			CHECK(priv && bt_privkey_sign(priv, (const uint8_t *)"atproto", 7, sig) == 0);
			CHECK(parsed && bt_pubkey_verify(parsed, (const uint8_t *)"atproto", 7, sig, 64) == 0);
			bt_privkey_free(&priv);
			bt_pubkey_free(&pub);
			bt_pubkey_free(&parsed);
			n++;
		}
		CHECK(n == (f == 0 ? 5 : 1));
		json_decref(arr);
	}
}

static void test_roundtrip(enum bt_key_type t)
{
	const uint8_t *n = t == BT_KEY_K256 ? k256_n : p256_n;
	struct bt_privkey *priv = NULL, *other = NULL;
	struct bt_pubkey *pub = NULL, *opub = NULL, *again = NULL;
	CHECK(bt_privkey_generate(t, &priv) == 0);
	CHECK(bt_privkey_generate(t, &other) == 0);
	if (!priv || !other)
		return;
	CHECK(bt_privkey_type(priv) == t);
	CHECK(bt_privkey_public(priv, &pub) == 0);
	CHECK(bt_privkey_public(other, &opub) == 0);
	CHECK(!bt_pubkey_eq(pub, opub));
	char mk[BT_MULTIKEY_MAX];
	int ml = bt_pubkey_multikey(pub, mk, sizeof mk);
	CHECK(ml > 0 && mk[0] == 'z');
	CHECK(strncmp(mk, t == BT_KEY_K256 ? "zQ3s" : "zDna", 4) == 0);
	CHECK(bt_pubkey_parse_multikey(mk, (size_t)ml, &again) == 0 && bt_pubkey_eq(pub, again));
	CHECK(bt_pubkey_multikey(pub, mk, 10) == -ENOSPC);

	int lows = 0, oks = 0, flips = 0, wrong = 0, highs = 0;
	for (int i = 0; i < 100; i++) {
		uint8_t msg[64], sig[64], bad[64];
		for (int j = 0; j < 64; j++)
			msg[j] = (uint8_t)(i * 31 + j);
		if (bt_privkey_sign(priv, msg, sizeof msg, sig) != 0)
			continue;
		lows += low_s(n, sig + 32);
		oks += bt_pubkey_verify(pub, msg, sizeof msg, sig, 64) == 0;
		wrong += bt_pubkey_verify(opub, msg, sizeof msg, sig, 64) < 0;
		memcpy(bad, sig, 64);
		bad[i % 64] ^= (uint8_t)(1u << (i % 8));
		int fs = bt_pubkey_verify(pub, msg, sizeof msg, bad, 64) < 0;
		msg[i % 64] ^= 0x10;
		flips += fs && bt_pubkey_verify(pub, msg, sizeof msg, sig, 64) < 0;
		msg[i % 64] ^= 0x10;
		memcpy(bad, sig, 32);
		negate(n, sig + 32, bad + 32);
		highs += bt_pubkey_verify(pub, msg, sizeof msg, bad, 64) < 0;
		/* The shortened and DER-sized signatures are refused outright. */
		if (i == 0) {
			CHECK(bt_pubkey_verify(pub, msg, sizeof msg, sig, 63) < 0);
			CHECK(bt_pubkey_verify(pub, msg, sizeof msg, NULL, 0) < 0);
			uint8_t zero[64] = {0};
			CHECK(bt_pubkey_verify(pub, msg, sizeof msg, zero, 64) < 0);
			uint8_t big[64];
			memset(big, 0xff, sizeof big);
			CHECK(bt_pubkey_verify(pub, msg, sizeof msg, big, 64) < 0);
		}
	}
	CHECKF(lows == 100, "low-S %d/100 (type %d)", lows, t);
	CHECKF(oks == 100, "verified %d/100", oks);
	CHECKF(flips == 100, "flips rejected %d/100", flips);
	CHECKF(wrong == 100, "wrong key rejected %d/100", wrong);
	CHECKF(highs == 100, "high-S rejected %d/100", highs);

	bt_privkey_free(&priv);
	bt_privkey_free(&other);
	bt_privkey_free(&priv); /* NULL is fine */
	CHECK(priv == NULL);
	bt_pubkey_free(&pub);
	bt_pubkey_free(&opub);
	bt_pubkey_free(&again);
	bt_pubkey_free(NULL);
}

static void test_bad_keys(void)
{
	struct bt_pubkey *k = NULL;
	uint8_t sk[32];
	struct bt_privkey *pk = NULL;
	CHECK(bt_pubkey_parse_multikey("", 0, &k) < 0 && k == NULL);
	CHECK(bt_pubkey_parse_multikey("z", 1, &k) < 0);
	const char *good = "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF";
	CHECK(bt_pubkey_parse_multikey(good, strlen(good), &k) == 0 && bt_pubkey_type(k) == BT_KEY_K256);
	bt_pubkey_free(&k);
	CHECK(bt_pubkey_parse_multikey(good + 1, strlen(good) - 1, &k) == -EINVAL); /* no 'z' */
	CHECK(bt_pubkey_parse_multikey(good, strlen(good) - 1, &k) < 0);             /* truncated */
	CHECK(bt_pubkey_parse_didkey(good, strlen(good), &k) == -EINVAL);
	/* ed25519 did:key: a multicodec we do not support. */
	const char *ed = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
	CHECK(bt_pubkey_parse_didkey(ed, strlen(ed), &k) == -ENOTSUP && k == NULL);
	CHECK(bt_pubkey_parse_legacy("Ed25519VerificationKey2020", good, strlen(good), &k) == -ENOTSUP);
	CHECK(bt_pubkey_parse_legacy(NULL, good, strlen(good), &k) == -EINVAL);
	/* Raw points: x with no curve point, bad prefixes, tampered uncompressed. */
	uint8_t raw[65];
	memset(raw, 0, sizeof raw);
	raw[0] = 0x02;
	raw[32] = 5; /* x = 5 */
	int k1 = bt_pubkey_from_raw(BT_KEY_K256, raw, 33, &k); /* x=5: 5^3+7=132, not a QR mod p */
	CHECK(k1 < 0 && k == NULL);
	raw[0] = 0x05;
	CHECK(bt_pubkey_from_raw(BT_KEY_P256, raw, 33, &k) == -EINVAL);
	struct bt_privkey *g = NULL;
	struct bt_pubkey *gp = NULL;
	CHECK(bt_privkey_generate(BT_KEY_P256, &g) == 0 && bt_privkey_public(g, &gp) == 0);
	bt_pubkey_free(&gp);
	bt_privkey_free(&g);
	memset(raw, 0x11, sizeof raw);
	raw[0] = 0x04;
	CHECK(bt_pubkey_from_raw(BT_KEY_P256, raw, 65, &k) == -EINVAL);
	CHECK(bt_pubkey_from_raw(BT_KEY_K256, raw, 65, &k) == -EINVAL);
	CHECK(bt_pubkey_from_raw(BT_KEY_NONE, raw, 33, &k) < 0);
	/* Scalars out of range. */
	memset(sk, 0, sizeof sk);
	CHECK(bt_privkey_from_bytes(BT_KEY_K256, sk, &pk) == -EINVAL && pk == NULL);
	CHECK(bt_privkey_from_bytes(BT_KEY_P256, sk, &pk) == -EINVAL);
	memcpy(sk, p256_n, 32);
	CHECK(bt_privkey_from_bytes(BT_KEY_P256, sk, &pk) == -EINVAL);
	memcpy(sk, k256_n, 32);
	CHECK(bt_privkey_from_bytes(BT_KEY_K256, sk, &pk) == -EINVAL);
	CHECK(bt_pubkey_type(NULL) == BT_KEY_NONE);
	CHECK(bt_pubkey_eq(NULL, NULL));
}

int main(void)
{
	test_base58();
	test_base32_64();
	test_varint();
	test_sha256();
	test_fixtures();
	test_w3c();
	test_roundtrip(BT_KEY_K256);
	test_roundtrip(BT_KEY_P256);
	test_bad_keys();
	BT_TEST_END();
}
