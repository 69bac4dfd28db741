/*
 * NAME
 *	test_plcaudit - PLC audit logs: key intervals and the prior-key rule
 * DESCRIPTION
 *	ISO 8601 timestamps as plc.directory writes them (and the lax forms it has served);
 *	audit logs built here with fresh keys in the directory's format: plc_operation and the
 *	legacy create, a handle change that keeps the key (one interval), a nullified operation
 *	(its key never counts), a PDS move, a tombstone, more operations than the bound, and
 *	refusals.  Then bt_plc_prior_ok at every edge of the window (stored rev, the commit's rev
 *	with the clock skew, the grace period, the host, an #identity after the rotation, the open
 *	interval) and bt_plc_prior_find with real K-256/P-256 signatures.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; exits non-zero on any failure.
 */
#include "bt_test.h"

#include "bt_crypto.h"
#include "bt_plcaudit.h"

#include <errno.h>

#define DID "did:plc:rotationtestaccountqwxyz"

static void test_iso8601(void)
{
	CHECK(bt_iso8601_ms("1970-01-01T00:00:00Z") == 0);
	CHECK(bt_iso8601_ms("1970-01-01T00:00:00.001Z") == 1);
	CHECK(bt_iso8601_ms("2025-07-01T00:00:00.000Z") == 1751328000000LL);
	CHECK(bt_iso8601_ms("2025-07-1T00:00:01.000Z") == 1751328001000LL); /* served by plc.directory */
	CHECK(bt_iso8601_ms("2024-02-29T12:00:00.5Z") == 1709208000500LL);
	CHECK(bt_iso8601_ms("2024-12-15T03:13:51.684123Z") == 1734232431684LL); /* microseconds cut */
	CHECK(bt_iso8601_ms("2025-07-01T02:00:00.000+02:00") == 1751328000000LL);
	CHECK(bt_iso8601_ms("2025-06-30T22:00:00-02:00") == 1751328000000LL);
	CHECK(bt_iso8601_ms("") == -1);
	CHECK(bt_iso8601_ms(NULL) == -1);
	CHECK(bt_iso8601_ms("2025-07-01") == -1);
	CHECK(bt_iso8601_ms("2025-07-01T00:00:00") == -1);     /* no zone */
	CHECK(bt_iso8601_ms("2025-13-01T00:00:00Z") == -1);
	CHECK(bt_iso8601_ms("2025-07-01T24:00:00Z") == -1);
	CHECK(bt_iso8601_ms("2025-07-01T00:00:00.Z") == -1);
	CHECK(bt_iso8601_ms("2025-07-01T00:00:00Zjunk") == -1);
	CHECK(bt_iso8601_ms("1969-12-31T23:59:59Z") == -1);
}

struct kp {
	struct bt_privkey *priv;
	struct bt_pubkey *pub;
	char didkey[96];
};

static void kp_new(struct kp *k, enum bt_key_type t)
{
	CHECK(bt_privkey_generate(t, &k->priv) == 0);
	CHECK(bt_privkey_public(k->priv, &k->pub) == 0);
	CHECK(bt_pubkey_didkey(k->pub, k->didkey, sizeof k->didkey) > 0);
}

static void kp_free(struct kp *k)
{
	bt_privkey_free(&k->priv);
	bt_pubkey_free(&k->pub);
}

/* One audit-log entry, plc_operation. */
static int op(char *out, size_t cap, const char *did, const char *prev, const char *key, const char *pds,
	      const char *handle, bool nullified, const char *at)
{
	char prevj[80];
	snprintf(prevj, sizeof prevj, prev ? "\"%s\"" : "null", prev);
	return snprintf(out, cap,
			"{\"did\":\"%s\",\"operation\":{\"sig\":\"c2ln\",\"prev\":%s,\"type\":\"plc_operation\","
			"\"services\":{\"atproto_pds\":{\"type\":\"AtprotoPersonalDataServer\",\"endpoint\":\"%s\"}},"
			"\"alsoKnownAs\":[\"at://%s\"],\"rotationKeys\":[\"%s\"],"
			"\"verificationMethods\":{\"atproto\":\"%s\"}},"
			"\"cid\":\"bafyreicid%s\",\"nullified\":%s,\"createdAt\":\"%s\"}",
			did, prevj, pds, handle, key, key, at, nullified ? "true" : "false", at);
}

static struct kp k1, k2, k3, kh;

/* K1 [T0, T2) pds.example.com (a handle change at T1 extends it); a hijack with KH at T3,
   nullified; K2 [T2, T4); K3 from T4 on other.example:8443. */
static char *history_json(void)
{
	static char buf[16384];
	size_t n = 0;
	n += (size_t)snprintf(buf + n, sizeof buf - n, "[");
	n += (size_t)op(buf + n, sizeof buf - n, DID, NULL, k1.didkey, "https://pds.example.com", "a.test", false,
			"2025-01-01T00:00:00.000Z");
	n += (size_t)snprintf(buf + n, sizeof buf - n, ",");
	n += (size_t)op(buf + n, sizeof buf - n, DID, "c0", k1.didkey, "https://pds.example.com", "b.test", false,
			"2025-01-02T00:00:00.000Z");
	n += (size_t)snprintf(buf + n, sizeof buf - n, ",");
	n += (size_t)op(buf + n, sizeof buf - n, DID, "c1", k2.didkey, "https://pds.example.com/", "b.test", false,
			"2025-01-03T00:00:00.000Z");
	n += (size_t)snprintf(buf + n, sizeof buf - n, ",");
	n += (size_t)op(buf + n, sizeof buf - n, DID, "c2", kh.didkey, "https://evil.example", "b.test", true,
			"2025-01-04T00:00:00.000Z");
	n += (size_t)snprintf(buf + n, sizeof buf - n, ",");
	n += (size_t)op(buf + n, sizeof buf - n, DID, "c2", k3.didkey, "https://other.example:8443", "b.test", false,
			"2025-01-05T00:00:00.000Z");
	snprintf(buf + n, sizeof buf - n, "]");
	return buf;
}

#define T0 1735689600000LL /* 2025-01-01 */
#define DAY 86400000LL

static void test_parse(void)
{
	struct bt_plc_hist h;
	const char *why = NULL;
	char *j = history_json();
	CHECKF(bt_plc_audit_parse(j, strlen(j), DID, &h, &why) == 0, "%s", why ? why : "");
	CHECK(h.n == 3 && !h.tombstoned);
	CHECK(h.k[0].from_ms == T0 && h.k[0].to_ms == T0 + 2 * DAY && bt_pubkey_eq(h.k[0].key, k1.pub));
	CHECK(strcmp(h.k[0].pds_host, "pds.example.com") == 0);
	CHECK(h.k[1].from_ms == T0 + 2 * DAY && h.k[1].to_ms == T0 + 4 * DAY && bt_pubkey_eq(h.k[1].key, k2.pub));
	CHECK(h.k[2].from_ms == T0 + 4 * DAY && h.k[2].to_ms == BT_PLC_OPEN && bt_pubkey_eq(h.k[2].key, k3.pub));
	CHECK(strcmp(h.k[2].pds_host, "other.example:8443") == 0);
	CHECK(bt_pubkey_eq(bt_plc_hist_current(&h), k3.pub));
	for (unsigned i = 0; i < h.n; i++)
		CHECK(!bt_pubkey_eq(h.k[i].key, kh.pub)); /* the nullified op's key never appears */
	bt_plc_hist_clear(&h);
	CHECK(h.n == 0);

	/* Legacy create, then a tombstone: no current key, the last interval closed. */
	char buf[4096];
	int n = snprintf(buf, sizeof buf,
			 "[{\"did\":\"%s\",\"operation\":{\"sig\":\"x\",\"prev\":null,\"type\":\"create\","
			 "\"handle\":\"old.test\",\"service\":\"https://bsky.social\",\"signingKey\":\"%s\","
			 "\"recoveryKey\":\"%s\"},\"cid\":\"bafy1\",\"nullified\":false,\"createdAt\":\"2023-03-01T10:00:00.000Z\"},"
			 "{\"did\":\"%s\",\"operation\":{\"sig\":\"y\",\"prev\":\"bafy1\",\"type\":\"plc_tombstone\"},"
			 "\"cid\":\"bafy2\",\"nullified\":false,\"createdAt\":\"2023-03-02T10:00:00.000Z\"}]",
			 DID, k2.didkey, k1.didkey, DID);
	CHECK(bt_plc_audit_parse(buf, (size_t)n, DID, &h, &why) == 0);
	CHECK(h.n == 1 && h.tombstoned && bt_pubkey_eq(h.k[0].key, k2.pub));
	CHECK(strcmp(h.k[0].pds_host, "bsky.social") == 0);
	CHECK(h.k[0].to_ms == bt_iso8601_ms("2023-03-02T10:00:00.000Z"));
	CHECK(bt_plc_hist_current(&h) == NULL);
	bt_plc_hist_clear(&h);

	/* An operation without a usable key still ends the interval before it. */
	n = snprintf(buf, sizeof buf, "[");
	n += op(buf + n, sizeof buf - (size_t)n, DID, NULL, k1.didkey, "https://pds.example.com", "a.test", false,
		"2025-01-01T00:00:00.000Z");
	n += snprintf(buf + n, sizeof buf - (size_t)n, ",");
	n += op(buf + n, sizeof buf - (size_t)n, DID, "c0", "did:key:zNotAKey", "https://pds.example.com", "a.test",
		false, "2025-01-02T00:00:00.000Z");
	n += snprintf(buf + n, sizeof buf - (size_t)n, "]");
	CHECK(bt_plc_audit_parse(buf, (size_t)n, DID, &h, &why) == 0);
	CHECK(h.n == 2 && h.k[0].to_ms == T0 + DAY && h.k[1].key == NULL && bt_plc_hist_current(&h) == NULL);
	bt_plc_hist_clear(&h);

	/* Refusals leave nothing behind. */
	CHECK(bt_plc_audit_parse("{}", 2, DID, &h, &why) == -EINVAL && !strcmp(why, "not an array") && h.n == 0);
	CHECK(bt_plc_audit_parse("[", 1, DID, &h, &why) == -EINVAL && !strcmp(why, "bad json"));
	CHECK(bt_plc_audit_parse(j, strlen(j), "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", &h, &why) == -EINVAL &&
	      !strcmp(why, "did mismatch") && h.n == 0);
	n = snprintf(buf, sizeof buf, "[");
	n += op(buf + n, sizeof buf - (size_t)n, DID, NULL, k1.didkey, "https://p.example", "a.test", false,
		"2025-01-02T00:00:00.000Z");
	n += snprintf(buf + n, sizeof buf - (size_t)n, ",");
	n += op(buf + n, sizeof buf - (size_t)n, DID, "c0", k2.didkey, "https://p.example", "a.test", false,
		"2025-01-01T00:00:00.000Z");
	n += snprintf(buf + n, sizeof buf - (size_t)n, "]");
	CHECK(bt_plc_audit_parse(buf, (size_t)n, DID, &h, &why) == -EINVAL && !strcmp(why, "bad createdAt"));
	CHECK(bt_plc_audit_parse("[]", 2, DID, &h, &why) == 0 && h.n == 0 && bt_plc_hist_current(&h) == NULL);
	/* Truncated at every byte: never a crash, never a half-filled history. */
	size_t jl = strlen(j);
	int bad = 0;
	for (size_t cut = 0; cut < jl; cut += 7)
		if (bt_plc_audit_parse(j, cut, DID, &h, &why) != -EINVAL || h.n != 0)
			bad++;
	CHECK(bad == 0);

	/* More operations than the bound: the most recent BT_PLC_HIST_MAX intervals are kept. */
	static char big[200000];
	size_t bn = 0;
	struct kp ks[40];
	bn += (size_t)snprintf(big + bn, sizeof big - bn, "[");
	for (int i = 0; i < 40; i++) {
		kp_new(&ks[i], i % 2 ? BT_KEY_P256 : BT_KEY_K256);
		char at[40];
		snprintf(at, sizeof at, "2025-02-%02dT00:00:00.000Z", i / 2 + 1);
		if (i)
			bn += (size_t)snprintf(big + bn, sizeof big - bn, ",");
		bn += (size_t)op(big + bn, sizeof big - bn, DID, i ? "cx" : NULL, ks[i].didkey, "https://p.example", "a.test",
				 false, at);
	}
	snprintf(big + bn, sizeof big - bn, "]");
	CHECK(bt_plc_audit_parse(big, strlen(big), DID, &h, &why) == 0);
	CHECK(h.n == BT_PLC_HIST_MAX && bt_pubkey_eq(h.k[0].key, ks[40 - BT_PLC_HIST_MAX].pub) &&
	      bt_pubkey_eq(bt_plc_hist_current(&h), ks[39].pub));
	bt_plc_hist_clear(&h);
	for (int i = 0; i < 40; i++)
		kp_free(&ks[i]);
}

static void test_rule(void)
{
	struct bt_plc_key k = { .key = k1.pub, .from_ms = 1000000000, .to_ms = 2000000000 };
	strcpy(k.pds_host, "pds.example.com");
	const struct bt_plc_ask base = {
		.rev_us = 1500000000LL * 1000, .stored_us = 1400000000LL * 1000, .now_ms = 2000000000 + 60000,
		.grace_ms = 72LL * 3600 * 1000, .host = "pds.example.com", .ident_ms = 1100000000,
	};
	struct bt_plc_ask a = base;
	CHECK(bt_plc_prior_ok(&k, &a));
	a.stored_us = 0; /* no commit accepted yet */
	CHECK(bt_plc_prior_ok(&k, &a));
	/* The window closes at the rotation: a stored rev at or after it shuts the key out. */
	a = base;
	a.stored_us = 2000000000LL * 1000 - 1;
	a.rev_us = a.stored_us + 1;
	CHECK(bt_plc_prior_ok(&k, &a));
	a.stored_us = 2000000000LL * 1000;
	a.rev_us = a.stored_us + 1;
	CHECK(!bt_plc_prior_ok(&k, &a));
	/* The commit's rev: inside the interval, with the clock skew on both sides. */
	a = base;
	a.rev_us = (2000000000LL + BT_PLC_SKEW_MS - 1) * 1000;
	CHECK(bt_plc_prior_ok(&k, &a));
	a.rev_us = (2000000000LL + BT_PLC_SKEW_MS) * 1000;
	CHECK(!bt_plc_prior_ok(&k, &a));
	a.rev_us = (1000000000LL - BT_PLC_SKEW_MS) * 1000;
	a.stored_us = 0;
	CHECK(bt_plc_prior_ok(&k, &a));
	a.rev_us -= 1000;
	CHECK(!bt_plc_prior_ok(&k, &a));
	a.rev_us = -1;
	CHECK(!bt_plc_prior_ok(&k, &a));
	/* Grace: a rotation longer ago than that no longer vouches. */
	a = base;
	a.now_ms = 2000000000 + a.grace_ms;
	CHECK(bt_plc_prior_ok(&k, &a));
	a.now_ms++;
	CHECK(!bt_plc_prior_ok(&k, &a));
	/* Host: the key must have been current while this host was the PDS. */
	a = base;
	a.host = "other.example";
	CHECK(!bt_plc_prior_ok(&k, &a));
	a.host = NULL;
	CHECK(!bt_plc_prior_ok(&k, &a));
	/* An #identity stamped at or after the rotation came first in the stream. */
	a = base;
	a.ident_ms = 2000000000 - 1;
	CHECK(bt_plc_prior_ok(&k, &a));
	a.ident_ms = 2000000000;
	CHECK(!bt_plc_prior_ok(&k, &a));
	/* The open interval (the current key) and an interval without a key never count. */
	a = base;
	struct bt_plc_key open = k;
	open.to_ms = BT_PLC_OPEN;
	CHECK(!bt_plc_prior_ok(&open, &a));
	struct bt_plc_key nokey = k;
	nokey.key = NULL;
	CHECK(!bt_plc_prior_ok(&nokey, &a));
}

static void test_find(void)
{
	struct bt_plc_hist h;
	const char *why = NULL;
	char *j = history_json();
	CHECK(bt_plc_audit_parse(j, strlen(j), DID, &h, &why) == 0);
	const uint8_t msg[] = "the unsigned commit";
	uint8_t s1[64], s2[64], s3[64], sh[64];
	CHECK(bt_privkey_sign(k1.priv, msg, sizeof msg, s1) == 0);
	CHECK(bt_privkey_sign(k2.priv, msg, sizeof msg, s2) == 0);
	CHECK(bt_privkey_sign(k3.priv, msg, sizeof msg, s3) == 0);
	CHECK(bt_privkey_sign(kh.priv, msg, sizeof msg, sh) == 0);
	/* A commit of day 1.5 on pds.example.com, the last accepted one from day 1. */
	struct bt_plc_ask a = { .rev_us = (T0 + DAY + DAY / 2) * 1000, .stored_us = (T0 + DAY) * 1000,
				.now_ms = T0 + 3 * DAY, .grace_ms = 72LL * 3600 * 1000, .host = "pds.example.com" };
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, s1, 64) == 0);
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, s2, 64) == -1); /* K2 was not current on day 1.5 */
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, s3, 64) == -1); /* the current key is not a prior key */
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, sh, 64) == -1); /* nullified */
	a.rev_us = (T0 + 3 * DAY) * 1000;
	a.stored_us = (T0 + 2 * DAY + 1) * 1000;
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, s2, 64) == 1);
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, s1, 64) == -1); /* K1's window closed at day 2 */
	uint8_t bad[64];
	memcpy(bad, s2, 64);
	bad[10] ^= 1;
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, bad, 64) == -1);
	/* Past the grace period, K2 (rotated away on day 4) no longer vouches. */
	a.now_ms = T0 + 4 * DAY + a.grace_ms + 1;
	CHECK(bt_plc_prior_find(&h, &a, msg, sizeof msg, s2, 64) == -1);
	bt_plc_hist_clear(&h);
}

int main(void)
{
	kp_new(&k1, BT_KEY_K256);
	kp_new(&k2, BT_KEY_P256);
	kp_new(&k3, BT_KEY_K256);
	kp_new(&kh, BT_KEY_K256);
	test_iso8601();
	test_parse();
	test_rule();
	test_find();
	kp_free(&k1);
	kp_free(&k2);
	kp_free(&k3);
	kp_free(&kh);
	BT_TEST_END();
}
