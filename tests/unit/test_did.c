/*
 * NAME
 *	test_did - DID document parsing and resolution URLs
 * DESCRIPTION
 *	The indigo DID document vectors (Multikey, legacy key, did:web without a
 *	key), the identities of every indigo scenario file turned into DID
 *	documents, refusals (wrong id, garbage, duplicates) and edge cases of
 *	keys, services and handles; bt_did_resolve_url and bt_url_authority.
 *	The signed commit of every #commit/#sync frame in the scenarios is
 *	verified with the account's key (and a tampered copy must fail).
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; exits non-zero on any failure.
 */
#include "bt_test.h"

#include "bt_base.h"
#include "bt_did.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>

#define PLC_DID "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

static char *vec(const char *rel, size_t *len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", bt_vectors(), rel);
	char *b = bt_test_slurp(path, len);
	CHECKF(b != NULL, "cannot read %s", path);
	return b;
}

static void test_vectors(void)
{
	struct bt_identity id, legacy;
	const char *why = "unset";
	size_t n;
	char *doc = vec("indigo/did_plc_doc.json", &n);
	if (!doc)
		return;
	CHECK(bt_diddoc_parse(doc, n, PLC_DID, &id, &why) == 0 && why == NULL);
	CHECK(strcmp(id.did, PLC_DID) == 0);
	CHECK(id.key != NULL && bt_pubkey_type(id.key) == BT_KEY_K256 && id.key_why == NULL);
	char mk[BT_MULTIKEY_MAX];
	CHECK(id.key && bt_pubkey_multikey(id.key, mk, sizeof mk) > 0 &&
	      strcmp(mk, "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF") == 0);
	CHECK(strcmp(id.pds, "https://bsky.social") == 0);
	CHECK(strcmp(id.pds_host, "bsky.social") == 0);
	CHECK(strcmp(id.handle, "atproto.com") == 0);

	/* Wrong DID asked for: refused, nothing left behind. */
	struct bt_identity bad;
	CHECK(bt_diddoc_parse(doc, n, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", &bad, &why) == -EINVAL);
	CHECK(why && strcmp(why, "doc id mismatch") == 0 && bad.key == NULL && bad.did[0] == 0);
	CHECK(bt_diddoc_parse(doc, n, PLC_DID "x", &bad, &why) < 0);
	CHECK(bt_diddoc_parse(doc, n, "not a did", &bad, &why) < 0 && strcmp(why, "bad did") == 0);
	/* Truncated at every 97th byte: always a clean refusal. */
	int refused = 0, tries = 0;
	for (size_t cut = 0; cut < n - 2; cut += 97, tries++)
		refused += bt_diddoc_parse(doc, cut, PLC_DID, &bad, &why) < 0 && bad.key == NULL;
	CHECK(refused == tries);
	free(doc);

	/* Legacy uncompressed secp256k1 key: the same key as the Multikey document. */
	doc = vec("indigo/did_plc_doc_legacy.json", &n);
	if (doc) {
		CHECK(bt_diddoc_parse(doc, n, PLC_DID, &legacy, &why) == 0);
		CHECK(legacy.key && bt_pubkey_type(legacy.key) == BT_KEY_K256);
		CHECK(bt_pubkey_eq(legacy.key, id.key));
		CHECK(strcmp(legacy.pds_host, "bsky.social") == 0 && strcmp(legacy.handle, "atproto.com") == 0);
		bt_identity_clear(&legacy);
		CHECK(legacy.key == NULL && legacy.pds[0] == 0);
		free(doc);
	}
	bt_identity_clear(&id);
	bt_identity_clear(&id);
	bt_identity_clear(NULL);

	doc = vec("indigo/did_web_doc.json", &n);
	if (doc) {
		CHECK(bt_diddoc_parse(doc, n, "did:web:discover.bsky.social", &id, &why) == 0);
		CHECK(id.key == NULL && id.key_why && strcmp(id.key_why, "no #atproto key") == 0);
		CHECK(id.pds[0] == 0 && id.pds_host[0] == 0 && id.handle[0] == 0);
		bt_identity_clear(&id);
		free(doc);
	}
}

/* Formats a document for did with one verification method and one PDS service. */
static int mkdoc(char *out, size_t cap, const char *did, const char *vmid, const char *type, const char *mb,
		 const char *pds, const char *aka)
{
	return snprintf(out, cap,
			"{\"id\":\"%s\",\"alsoKnownAs\":[%s],"
			"\"verificationMethod\":[{\"id\":\"%s\",\"type\":\"%s\",\"controller\":\"%s\","
			"\"publicKeyMultibase\":\"%s\"}],"
			"\"service\":[{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
			"\"serviceEndpoint\":\"%s\"}]}",
			did, aka, vmid, type, did, mb, pds);
}


/* ---- commit signatures of the scenario frames (a tiny CBOR walker, test-only) ---- */

/* Length of the CBOR item at p[0..n), or 0 if malformed.  Enough for commit objects. */
static size_t cbor_skip(const uint8_t *p, size_t n)
{
	if (n < 1)
		return 0;
	unsigned mt = p[0] >> 5, ai = p[0] & 31;
	size_t hl = 1;
	uint64_t arg = ai;
	if (ai >= 24 && ai <= 27) {
		size_t w = (size_t)1 << (ai - 24);
		if (n < 1 + w)
			return 0;
		arg = 0;
		for (size_t i = 0; i < w; i++)
			arg = arg << 8 | p[1 + i];
		hl += w;
	} else if (ai > 27) {
		return 0;
	}
	switch (mt) {
	case 0:
	case 1:
	case 7:
		return hl;
	case 2:
	case 3:
		return arg <= n - hl ? hl + (size_t)arg : 0;
	case 6: {
		size_t l = cbor_skip(p + hl, n - hl);
		return l ? hl + l : 0;
	}
	default: {
		size_t off = hl, items = (size_t)arg * (mt == 5 ? 2 : 1);
		for (size_t i = 0; i < items; i++) {
			size_t l = cbor_skip(p + off, n - off);
			if (!l)
				return 0;
			off += l;
		}
		return off;
	}
	}
}

/* Copies the commit map without its "sig" entry into out and the signature into sig; returns the length. */
static size_t unsign(const uint8_t *p, size_t n, uint8_t *out, uint8_t sig[64])
{
	if (n < 1 || (p[0] >> 5) != 5 || (p[0] & 31) >= 23 || (p[0] & 31) == 0)
		return 0;
	size_t cnt = p[0] & 31, off = 1, o = 1;
	bool found = false;
	out[0] = (uint8_t)(0xa0 | (cnt - 1));
	for (size_t i = 0; i < cnt; i++) {
		size_t kl = cbor_skip(p + off, n - off);
		size_t vl = kl ? cbor_skip(p + off + kl, n - off - kl) : 0;
		if (!vl)
			return 0;
		if (kl == 4 && memcmp(p + off, "\x63sig", 4) == 0) {
			if (vl != 66 || p[off + kl] != 0x58 || p[off + kl + 1] != 64)
				return 0;
			memcpy(sig, p + off + kl + 2, 64);
			found = true;
		} else {
			memcpy(out + o, p + off, kl + vl);
			o += kl + vl;
		}
		off += kl + vl;
	}
	return found ? o : 0;
}

/* Verifies the signed commit at the root of a CAR with key: 0 ok, 1 bad signature, 2 tampered copy
   verified, -1 cannot parse. */
static int verify_car(const uint8_t *car, size_t n, const struct bt_pubkey *key)
{
	uint64_t hl;
	int vl = bt_varint_decode(car, n, &hl);
	if (vl < 0 || hl > n - (size_t)vl)
		return -1;
	const uint8_t *hdr = car + vl;
	const uint8_t *root = NULL;
	for (size_t i = 0; i + 5 + 36 <= hl; i++)
		if (memcmp(hdr + i, "\xd8\x2a\x58\x25\x00", 5) == 0) {
			root = hdr + i + 5;
			break;
		}
	if (!root)
		return -1;
	size_t off = (size_t)vl + (size_t)hl;
	while (off < n) {
		uint64_t bl;
		vl = bt_varint_decode(car + off, n - off, &bl);
		if (vl < 0 || bl > n - off - (size_t)vl || bl < 36)
			return -1;
		const uint8_t *blk = car + off + vl;
		if (memcmp(blk, root, 36) == 0) {
			uint8_t *un = malloc(bl), sig[64];
			size_t ul = unsign(blk + 36, bl - 36, un, sig);
			int rc = ul ? (bt_pubkey_verify(key, un, ul, sig, 64) == 0 ? 0 : 1) : -1;
			if (rc == 0) {
				un[ul / 2] ^= 1; /* a tampered commit must not verify */
				if (bt_pubkey_verify(key, un, ul, sig, 64) == 0)
					rc = 2;
			}
			free(un);
			return rc;
		}
		off += (size_t)vl + bl;
	}
	return -1;
}

static int verify_messages(json_t *root, const struct bt_pubkey *key, const char *file)
{
	size_t i;
	json_t *m;
	int verified = 0;
	json_array_foreach(json_object_get(root, "messages"), i, m)
	{
		json_t *fr = json_object_get(m, "frame");
		const char *t = json_string_value(json_object_get(json_object_get(fr, "header"), "t"));
		if (!t || (strcmp(t, "#commit") != 0 && strcmp(t, "#sync") != 0))
			continue;
		const char *b64 = json_string_value(json_object_get(json_object_get(json_object_get(fr, "body"), "blocks"), "$bytes"));
		if (!b64)
			continue;
		size_t cap = strlen(b64);
		uint8_t *car = malloc(cap);
		int cl = bt_base64_decode(b64, cap, car, cap);
		int rc = cl > 0 ? verify_car(car, (size_t)cl, key) : -1;
		CHECKF(rc == 0, "%s message %zu (%s): %d", file, i, t, rc);
		verified += rc == 0;
		free(car);
	}
	return verified;
}

static void test_scenarios(void)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/indigo", bt_vectors());
	DIR *d = opendir(dir);
	CHECKF(d != NULL, "%s", dir);
	if (!d)
		return;
	struct dirent *de;
	int accounts = 0, sigs = 0;
	while ((de = readdir(d))) {
		char path[1024];
		if (!strstr(de->d_name, ".json"))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		json_t *root = json_load_file(path, 0, NULL);
		json_t *accs = root ? json_object_get(root, "accounts") : NULL;
		size_t i;
		json_t *a;
		json_array_foreach(accs, i, a)
		{
			json_t *ident = json_object_get(a, "identity");
			const char *did = json_string_value(json_object_get(ident, "did"));
			const char *handle = json_string_value(json_object_get(ident, "handle"));
			json_t *key = json_object_get(json_object_get(ident, "keys"), "atproto");
			const char *type = json_string_value(json_object_get(key, "type"));
			const char *mb = json_string_value(json_object_get(key, "publicKeyMultibase"));
			const char *url = json_string_value(
				json_object_get(json_object_get(json_object_get(ident, "services"), "atproto_pds"), "url"));
			CHECKF(did && type && mb && url, "%s account %zu", de->d_name, i);
			if (!did || !type || !mb || !url)
				continue;
			/* The key parses directly ... */
			struct bt_pubkey *k = NULL;
			CHECKF(strcmp(type, "Multikey") == 0 ? bt_pubkey_parse_multikey(mb, strlen(mb), &k) == 0
							      : bt_pubkey_parse_legacy(type, mb, strlen(mb), &k) == 0,
			       "%s: key %s", de->d_name, mb);
			/* ... and through a DID document built from the identity. */
			char doc[4096], aka[512], vmid[300];
			snprintf(aka, sizeof aka, "\"at://%s\"", handle ? handle : "handle.invalid");
			snprintf(vmid, sizeof vmid, "%s#atproto", did);
			int dl = mkdoc(doc, sizeof doc, did, vmid, type, mb, url, aka);
			struct bt_identity id;
			const char *why = NULL;
			CHECKF(bt_diddoc_parse(doc, (size_t)dl, did, &id, &why) == 0, "%s: %s", de->d_name, why);
			CHECK(id.key && bt_pubkey_eq(id.key, k));
			CHECK(strcmp(id.pds, url) == 0);
			CHECK(strncmp(url, "https://", 8) == 0 && strcmp(id.pds_host, url + 8) == 0);
			CHECK(!handle || strcmp(id.handle, handle) == 0);
			bt_identity_clear(&id);
			/* Every commit and sync frame of the scenario is signed by this key. */
			if (k && json_array_size(accs) == 1)
				sigs += verify_messages(root, k, de->d_name);
			bt_pubkey_free(&k);
			accounts++;
		}
		json_decref(root);
	}
	closedir(d);
	CHECKF(accounts >= 7, "accounts parsed: %d", accounts);
	CHECKF(sigs >= 20, "commit signatures verified: %d", sigs);
}

static void test_edges(void)
{
	char doc[4096];
	struct bt_identity id;
	const char *why;
	const char *did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
	const char *k1 = "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF";
	int n;

	/* P-256 keys: Multikey and legacy raw compressed form (from the interop fixtures). */
	n = mkdoc(doc, sizeof doc, did, "#atproto", "Multikey", "zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo",
		  "https://pds.example.com", "\"at://Alice.Example.COM\"");
	CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0);
	CHECK(id.key && bt_pubkey_type(id.key) == BT_KEY_P256);
	CHECK(strcmp(id.handle, "alice.example.com") == 0);
	struct bt_pubkey *p = id.key;
	id.key = NULL;
	bt_identity_clear(&id);
	n = mkdoc(doc, sizeof doc, did, "#atproto", "EcdsaSecp256r1VerificationKey2019",
		  "zxdM8dSstjrpZaRUwBmDvjGXweKuEMVN95A9oJBFjkWMh", "https://pds.example.com", "");
	CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0);
	CHECK(id.key && bt_pubkey_eq(id.key, p));
	CHECK(id.handle[0] == 0);
	bt_identity_clear(&id);
	bt_pubkey_free(&p);

	/* Key edge cases: another DID's #atproto, a different fragment, unknown type, bad multibase. */
	n = mkdoc(doc, sizeof doc, did, "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb#atproto", "Multikey", k1, "https://x.com", "");
	CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0 && id.key == NULL &&
	      strcmp(id.key_why, "no #atproto key") == 0);
	bt_identity_clear(&id);
	n = mkdoc(doc, sizeof doc, did, "#atproto_other", "Multikey", k1, "https://x.com", "");
	CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0 && id.key == NULL);
	bt_identity_clear(&id);
	n = mkdoc(doc, sizeof doc, did, "#atproto", "Ed25519VerificationKey2020", k1, "https://x.com", "");
	CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0 && id.key == NULL &&
	      strcmp(id.key_why, "unsupported #atproto key type") == 0);
	CHECK(strcmp(id.pds_host, "x.com") == 0);
	bt_identity_clear(&id);
	n = mkdoc(doc, sizeof doc, did, "#atproto", "Multikey", "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribS0",
		  "https://x.com", "");
	CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0 && id.key == NULL &&
	      strcmp(id.key_why, "bad #atproto key") == 0);
	bt_identity_clear(&id);

	/* PDS endpoints: default and explicit ports, case, bad schemes, userinfo. */
	struct {
		const char *url, *host;
	} pds[] = {
		{"https://PDS.Example.com:443/", "pds.example.com"},
		{"http://localhost:2583", "localhost:2583"},
		{"http://pds.example.com:80", "pds.example.com"},
		{"https://pds.example.com:8443/xrpc", "pds.example.com:8443"},
		{"ftp://pds.example.com", ""},
		{"https://user@pds.example.com", ""},
		{"https://", ""},
		{"https://pds.example.com:99999", ""},
		{"https://pds.example.com:", ""},
		{"pds.example.com", ""},
	};
	for (size_t i = 0; i < sizeof pds / sizeof pds[0]; i++) {
		n = mkdoc(doc, sizeof doc, did, "#atproto", "Multikey", k1, pds[i].url, "");
		CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0);
		CHECKF(strcmp(id.pds_host, pds[i].host) == 0, "%s -> '%s'", pds[i].url, id.pds_host);
		CHECK(strcmp(id.pds, pds[i].host[0] ? pds[i].url : "") == 0);
		bt_identity_clear(&id);
	}
	/* Handles: first at:// wins; invalid handles give "". */
	const char *akas[][2] = {
		{"\"https://x.com\",\"at://bob.test\",\"at://carol.test\"", "bob.test"},
		{"\"at://bob\"", ""},
		{"\"at://-bob.test\"", ""},
		{"\"at://bob.123\"", ""},
		{"\"at://bob.test/extra\"", ""},
		{"1, null, {}", ""},
	};
	for (size_t i = 0; i < sizeof akas / sizeof akas[0]; i++) {
		n = mkdoc(doc, sizeof doc, did, "#atproto", "Multikey", k1, "https://x.com", akas[i][0]);
		CHECK(bt_diddoc_parse(doc, (size_t)n, did, &id, &why) == 0);
		CHECKF(strcmp(id.handle, akas[i][1]) == 0, "%s -> '%s'", akas[i][0], id.handle);
		bt_identity_clear(&id);
	}
	/* Service with the wrong type is not a PDS. */
	snprintf(doc, sizeof doc,
		 "{\"id\":\"%s\",\"service\":[{\"id\":\"#atproto_pds\",\"type\":\"Other\",\"serviceEndpoint\":\"https://a.com\"},"
		 "{\"id\":\"%s#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\",\"serviceEndpoint\":\"https://b.com\"}]}",
		 did, did);
	CHECK(bt_diddoc_parse(doc, strlen(doc), did, &id, &why) == 0 && id.pds[0] == 0);
	bt_identity_clear(&id);
	snprintf(doc, sizeof doc,
		 "{\"id\":\"%s\",\"service\":[{\"id\":\"%s#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
		 "\"serviceEndpoint\":\"https://b.com\"}],\"verificationMethod\":{}}",
		 did, did);
	CHECK(bt_diddoc_parse(doc, strlen(doc), did, &id, &why) == 0 && strcmp(id.pds_host, "b.com") == 0 &&
	      id.key == NULL);
	bt_identity_clear(&id);

	/* Refusals. */
	const char *bad[][2] = {
		{"", "bad json"},
		{"not json", "bad json"},
		{"[1,2]", "doc not an object"},
		{"{}", "doc has no id"},
		{"{\"id\":5}", "doc has no id"},
		{"{\"id\":\"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\",\"id\":\"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\"}", "bad json"},
		{"{\"id\":\"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\"} trailing", "bad json"},
		{"{\"id\":\"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\\u0000\"}", "bad json"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why = NULL;
		CHECKF(bt_diddoc_parse(bad[i][0], strlen(bad[i][0]), did, &id, &why) == -EINVAL && why &&
			       strcmp(why, bad[i][1]) == 0,
		       "%s -> %s", bad[i][0], why ? why : "(null)");
	}
	CHECK(bt_diddoc_parse("{\"id\":\"x\"}", 10, NULL, &id, &why) < 0);
	/* A minimal valid doc: no key, no PDS, no handle. */
	snprintf(doc, sizeof doc, "{\"id\":\"%s\"}", did);
	CHECK(bt_diddoc_parse(doc, strlen(doc), did, &id, NULL) == 0 && id.key == NULL && id.pds[0] == 0);
	bt_identity_clear(&id);
}

static void test_urls(void)
{
	char u[512];
	CHECK(bt_did_resolve_url(PLC_DID, "https://plc.directory", u, sizeof u) > 0 &&
	      strcmp(u, "https://plc.directory/" PLC_DID) == 0);
	CHECK(bt_did_resolve_url(PLC_DID, "http://127.0.0.1:2582/", u, sizeof u) > 0 &&
	      strcmp(u, "http://127.0.0.1:2582/" PLC_DID) == 0);
	CHECK(bt_did_resolve_url(PLC_DID, "", u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url(PLC_DID, NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:plc:ewvi7nxzyoun6zhxrhs64oi", "https://plc.directory", u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:plc:ewvi7nxzyoun6zhxrhs64oi1", "https://plc.directory", u, sizeof u) ==
	      -EINVAL);
	CHECK(bt_did_resolve_url("did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ", "https://plc.directory", u, sizeof u) ==
	      -EINVAL);
	CHECK(bt_did_resolve_url(PLC_DID, "https://plc.directory", u, 20) == -ENOSPC);
	int n = bt_did_resolve_url("did:web:Discover.Bsky.Social", NULL, u, sizeof u);
	CHECK(n > 0 && strcmp(u, "https://discover.bsky.social/.well-known/did.json") == 0 && (size_t)n == strlen(u));
	CHECK(bt_did_resolve_url("did:web:example.com:user:alice", NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:web:example.com%3A8080", NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:web:localhost%3A8080", NULL, u, sizeof u) > 0 &&
	      strcmp(u, "http://localhost:8080/.well-known/did.json") == 0);
	CHECK(bt_did_resolve_url("did:web:localhost%3A0", NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:web:localhost", NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:web:.example.com", NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:web:example.com", NULL, u, 10) == -ENOSPC);
	CHECK(bt_did_resolve_url("did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF", "https://plc.directory",
				 u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("did:web:", NULL, u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url("plc:abc", "x", u, sizeof u) == -EINVAL);
	CHECK(bt_did_resolve_url(NULL, "x", u, sizeof u) == -EINVAL);

	CHECK(bt_did_valid("did:plc:abc", 11));
	CHECK(bt_did_valid("did:web:localhost%3A1234", 24));
	CHECK(!bt_did_valid("did:PLC:abc", 11));
	CHECK(!bt_did_valid("did:plc:", 8));
	CHECK(!bt_did_valid("did:plc:abc:", 12));
	CHECK(!bt_did_valid("did:plc:ab/c", 12));

	char h[300];
	CHECK(bt_url_authority("https://[::1]:8443/x", h, sizeof h) > 0 && strcmp(h, "[::1]:8443") == 0);
	CHECK(bt_url_authority("HTTPS://A.B.C?x", h, sizeof h) == 5 && strcmp(h, "a.b.c") == 0);
	CHECK(bt_url_authority("https://a.b.c#frag", h, sizeof h) == 5);
	CHECK(bt_url_authority("https://a b.c", h, sizeof h) < 0);
	CHECK(bt_url_authority("https://a.b.c", h, 3) == -ENOSPC);
}

int main(void)
{
	test_vectors();
	test_scenarios();
	test_edges();
	test_urls();
	BT_TEST_END();
}
