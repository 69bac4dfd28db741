/*
 * NAME
 *	bt_plcaudit.c - a did:plc account's signing-key history, from the PLC audit log
 * DESCRIPTION
 *	See bt_plcaudit.h; the rule and why it is safe are in docs/identity.md.  Used by verify.
 *	Pure functions; thread-safe.
 * DIAGNOSTICS
 *	-EINVAL with a static *why ("bad json", "not an array", "did mismatch", "bad createdAt").
 */
#include "bt_plcaudit.h"
#include "bt_did.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <string.h>

void bt_plc_hist_clear(struct bt_plc_hist *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < h->n && i < BT_PLC_HIST_MAX; i++)
		bt_pubkey_free(&h->k[i].key);
	memset(h, 0, sizeof *h);
}

/* Reads 1..maxd digits; returns the value or -1, advances *p. */
static int digits(const char **p, int maxd)
{
	int v = 0, n = 0;
	while (n < maxd && isdigit((unsigned char)**p)) {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	return n ? v : -1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int64_t bt_iso8601_ms(const char *s)
{
	if (!s)
		return -1;
	const char *p = s;
	int y = digits(&p, 4);
	if (y < 1970 || *p++ != '-')
		return -1;
	int mo = digits(&p, 2);
	if (mo < 1 || mo > 12 || *p++ != '-')
		return -1;
	int d = digits(&p, 2);
	if (d < 1 || d > 31 || (*p != 'T' && *p != 't' && *p != ' '))
		return -1;
	p++;
	int h = digits(&p, 2);
	if (h < 0 || h > 23 || *p++ != ':')
		return -1;
	int mi = digits(&p, 2);
	if (mi < 0 || mi > 59 || *p++ != ':')
		return -1;
	int se = digits(&p, 2);
	if (se < 0 || se > 60)
		return -1;
	int ms = 0;
	if (*p == '.') {
		p++;
		int n = 0;
		while (isdigit((unsigned char)*p)) {
			if (n < 3)
				ms = ms * 10 + (*p - '0');
			n++;
			p++;
		}
		if (n == 0)
			return -1;
		for (; n < 3; n++)
			ms *= 10;
	}
	int64_t off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;
		int oh = digits(&p, 2);
		if (oh < 0 || oh > 23 || *p++ != ':')
			return -1;
		int om = digits(&p, 2);
		if (om < 0 || om > 59)
			return -1;
		off = sign * ((int64_t)oh * 3600 + om * 60);
	} else {
		return -1;
	}
	if (*p)
		return -1;
	int64_t secs = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + mi * 60 + se - off;
	return secs * 1000 + ms;
}

/* The key and PDS an operation names; false for a tombstone.  Unknown types name nothing. */
static bool op_fields(json_t *op, const char **didkey, const char **pds)
{
	const char *type = json_string_value(json_object_get(op, "type"));
	*didkey = *pds = NULL;
	if (type && !strcmp(type, "plc_tombstone"))
		return false;
	if (type && !strcmp(type, "plc_operation")) {
		*didkey = json_string_value(json_object_get(json_object_get(op, "verificationMethods"), "atproto"));
		*pds = json_string_value(
			json_object_get(json_object_get(json_object_get(op, "services"), "atproto_pds"), "endpoint"));
	} else if (type && !strcmp(type, "create")) {
		*didkey = json_string_value(json_object_get(op, "signingKey"));
		*pds = json_string_value(json_object_get(op, "service"));
	}
	return true;
}

int bt_plc_audit_parse(const char *json, size_t n, const char *did, struct bt_plc_hist *out, const char **why)
{
	memset(out, 0, sizeof *out);
	json_error_t je;
	json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &je);
	const char *w = NULL;
	if (!root) {
		w = "bad json";
	} else if (!json_is_array(root)) {
		w = "not an array";
	}
	size_t i;
	json_t *e;
	int64_t last_ms = -1;
	if (!w) {
		json_array_foreach(root, i, e)
		{
			const char *edid = json_string_value(json_object_get(e, "did"));
			if (!edid || strcmp(edid, did)) {
				w = "did mismatch";
				break;
			}
			if (json_is_true(json_object_get(e, "nullified")))
				continue;
			int64_t at = bt_iso8601_ms(json_string_value(json_object_get(e, "createdAt")));
			if (at < 0 || at < last_ms) {
				w = "bad createdAt";
				break;
			}
			last_ms = at;
			const char *dk, *pds;
			bool live = op_fields(json_object_get(e, "operation"), &dk, &pds);
			char host[300] = "";
			if (pds && bt_url_authority(pds, host, sizeof host) < 0)
				host[0] = 0;
			struct bt_pubkey *key = NULL;
			if (dk && bt_pubkey_parse_didkey(dk, strlen(dk), &key) < 0)
				key = NULL;
			/* The interval before this operation ends here. */
			if (out->n && out->k[out->n - 1].to_ms == BT_PLC_OPEN) {
				struct bt_plc_key *prev = &out->k[out->n - 1];
				if (live && key && prev->key && bt_pubkey_eq(prev->key, key) && !strcmp(prev->pds_host, host)) {
					bt_pubkey_free(&key); /* same key and PDS (e.g. a handle change): one interval */
					continue;
				}
				prev->to_ms = at;
			}
			out->tombstoned = !live;
			if (!live) {
				bt_pubkey_free(&key);
				continue;
			}
			if (out->n == BT_PLC_HIST_MAX) {
				/* Bounded: keep the most recent intervals. */
				bt_pubkey_free(&out->k[0].key);
				memmove(&out->k[0], &out->k[1], (BT_PLC_HIST_MAX - 1) * sizeof out->k[0]);
				out->n--;
			}
			struct bt_plc_key *k = &out->k[out->n++];
			memset(k, 0, sizeof *k);
			k->key = key;
			k->from_ms = at;
			k->to_ms = BT_PLC_OPEN;
			memcpy(k->pds_host, host, sizeof host);
		}
	}
	json_decref(root);
	if (w) {
		bt_plc_hist_clear(out);
		if (why)
			*why = w;
		return -EINVAL;
	}
	return 0;
}

const struct bt_pubkey *bt_plc_hist_current(const struct bt_plc_hist *h)
{
	if (!h || !h->n || h->tombstoned || h->k[h->n - 1].to_ms != BT_PLC_OPEN)
		return NULL;
	return h->k[h->n - 1].key;
}

bool bt_plc_prior_ok(const struct bt_plc_key *k, const struct bt_plc_ask *a)
{
	if (!k->key || k->to_ms == BT_PLC_OPEN || a->rev_us < 0)
		return false;
	/* The window closes at the rotation: once any commit claiming a time at or after it has
	   been accepted, this key never vouches again (no skew here, on purpose). */
	if (a->stored_us / 1000 >= k->to_ms)
		return false;
	/* ... and at the #identity that announced it: every later frame of the account in the
	   PDS's stream was made after the rotation. */
	if (a->ident_ms >= k->to_ms)
		return false;
	if (a->now_ms - k->to_ms > a->grace_ms)
		return false;
	int64_t rev_ms = a->rev_us / 1000;
	if (rev_ms < k->from_ms - BT_PLC_SKEW_MS || rev_ms >= k->to_ms + BT_PLC_SKEW_MS)
		return false;
	return a->host && !strcmp(k->pds_host, a->host);
}

int bt_plc_prior_find(const struct bt_plc_hist *h, const struct bt_plc_ask *a, const uint8_t *msg, size_t n,
		      const uint8_t *sig, size_t siglen)
{
	for (unsigned i = h->n; i-- > 0;) {
		if (!bt_plc_prior_ok(&h->k[i], a))
			continue;
		if (bt_pubkey_verify(h->k[i].key, msg, n, sig, siglen) == 0)
			return (int)i;
	}
	return -1;
}
