/*
 * NAME
 *	bt_did.c - DID documents: parsing into an identity, resolution URLs
 * DESCRIPTION
 *	Used by verify's identity cache.  The parser follows what indigo's
 *	identity package accepts: the document id must equal the DID asked for;
 *	the signing key is the first verificationMethod whose id is "#atproto"
 *	or "<did>#atproto" (Multikey, or the legacy EcdsaSecp256k1/r1
 *	VerificationKey2019 forms); the PDS is the first service "#atproto_pds"
 *	of type AtprotoPersonalDataServer; the handle is the first at:// entry
 *	of alsoKnownAs.  Duplicate JSON keys are refused so two parsers can
 *	never disagree about a document.  Pure functions; thread-safe.
 * DIAGNOSTICS
 *	bt_diddoc_parse returns -EINVAL with *why = a static reason ("bad
 *	json", "doc id mismatch", ...).  A document without a usable key is
 *	still an identity: key is NULL and key_why holds the reason.
 */
#include "bt_did.h"
#include "bt_syntax.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool bt_did_valid(const char *s, size_t n)
{
	return bt_syntax_did(s, n); /* one definition of DID syntax: bt_syntax.c */
}

/* atproto handle syntax: >= 2 labels of [A-Za-z0-9-], 1..63 chars, no edge '-', TLD not starting with a digit. */
static bool handle_valid(const char *s, size_t n)
{
	if (n < 3 || n > 253)
		return false;
	size_t labels = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			size_t len = i - start;
			if (len < 1 || len > 63 || s[start] == '-' || s[i - 1] == '-')
				return false;
			labels++;
			if (i == n && isdigit((unsigned char)s[start]))
				return false;
			start = i + 1;
		} else if (!isalnum((unsigned char)s[i]) && s[i] != '-') {
			return false;
		}
	}
	return labels >= 2;
}

int bt_url_authority(const char *url, char *out, size_t cap)
{
	const char *p;
	bool tls;
	if (strncasecmp(url, "https://", 8) == 0) {
		p = url + 8;
		tls = true;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		p = url + 7;
		tls = false;
	} else {
		return -EINVAL;
	}
	size_t alen = strcspn(p, "/?#");
	const char *host = p, *port = NULL;
	size_t hlen;
	if (alen == 0 || memchr(p, '@', alen))
		return -EINVAL;
	if (host[0] == '[') {
		const char *rb = memchr(host, ']', alen);
		if (!rb)
			return -EINVAL;
		hlen = (size_t)(rb - host) + 1;
		for (size_t i = 1; i + 1 < hlen; i++)
			if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
				return -EINVAL;
	} else {
		hlen = 0;
		while (hlen < alen && host[hlen] != ':') {
			char c = host[hlen];
			if (!isalnum((unsigned char)c) && c != '.' && c != '-')
				return -EINVAL;
			hlen++;
		}
		if (hlen == 0)
			return -EINVAL;
	}
	if (hlen < alen) {
		if (host[hlen] != ':')
			return -EINVAL;
		port = host + hlen + 1;
	}
	long pv = -1;
	if (port) {
		size_t plen = alen - hlen - 1;
		if (plen == 0 || plen > 5)
			return -EINVAL;
		pv = 0;
		for (size_t i = 0; i < plen; i++) {
			if (!isdigit((unsigned char)port[i]))
				return -EINVAL;
			pv = pv * 10 + (port[i] - '0');
		}
		if (pv < 1 || pv > 65535)
			return -EINVAL;
		if (pv == (tls ? 443 : 80))
			pv = -1;
	}
	int n = pv > 0 ? snprintf(out, cap, "%.*s:%ld", (int)hlen, host, pv)
		       : snprintf(out, cap, "%.*s", (int)hlen, host);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	for (int i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)out[i]);
	return n;
}

/* True when id is "#<frag>" or "<did>#<frag>". */
static bool id_is(const char *id, const char *did, const char *frag)
{
	if (!id)
		return false;
	size_t dl = strlen(did);
	if (id[0] == '#')
		return strcmp(id + 1, frag) == 0;
	return strncmp(id, did, dl) == 0 && id[dl] == '#' && strcmp(id + dl + 1, frag) == 0;
}

static void parse_key(json_t *vms, const char *did, struct bt_identity *out)
{
	size_t i;
	json_t *vm;
	out->key_why = "no #atproto key";
	if (!json_is_array(vms))
		return;
	json_array_foreach(vms, i, vm)
	{
		if (!id_is(json_string_value(json_object_get(vm, "id")), did, "atproto"))
			continue;
		const char *type = json_string_value(json_object_get(vm, "type"));
		json_t *mbj = json_object_get(vm, "publicKeyMultibase");
		const char *mb = json_string_value(mbj);
		if (!type || !mb) {
			out->key_why = "bad #atproto key";
			return;
		}
		size_t mbl = json_string_length(mbj);
		int rc;
		if (strcmp(type, "Multikey") == 0)
			rc = bt_pubkey_parse_multikey(mb, mbl, &out->key);
		else
			rc = bt_pubkey_parse_legacy(type, mb, mbl, &out->key);
		if (rc == 0)
			out->key_why = NULL;
		else
			out->key_why = rc == -ENOTSUP ? "unsupported #atproto key type" : "bad #atproto key";
		return;
	}
}

static void parse_pds(json_t *svcs, const char *did, struct bt_identity *out)
{
	size_t i;
	json_t *s;
	if (!json_is_array(svcs))
		return;
	json_array_foreach(svcs, i, s)
	{
		if (!id_is(json_string_value(json_object_get(s, "id")), did, "atproto_pds"))
			continue;
		const char *type = json_string_value(json_object_get(s, "type"));
		json_t *ep = json_object_get(s, "serviceEndpoint");
		const char *url = json_string_value(ep);
		if (!type || strcmp(type, "AtprotoPersonalDataServer") != 0 || !url)
			return;
		if (json_string_length(ep) != strlen(url) || strlen(url) >= sizeof out->pds)
			return;
		if (bt_url_authority(url, out->pds_host, sizeof out->pds_host) < 0) {
			out->pds_host[0] = 0;
			return;
		}
		memcpy(out->pds, url, strlen(url) + 1);
		return;
	}
}

static void parse_handle(json_t *aka, struct bt_identity *out)
{
	size_t i;
	json_t *a;
	if (!json_is_array(aka))
		return;
	json_array_foreach(aka, i, a)
	{
		const char *s = json_string_value(a);
		if (!s || strncmp(s, "at://", 5) != 0)
			continue;
		size_t n = strlen(s + 5);
		if (n < sizeof out->handle && handle_valid(s + 5, n)) {
			for (size_t j = 0; j <= n; j++)
				out->handle[j] = (char)tolower((unsigned char)s[5 + j]);
		}
		return; /* only the first at:// entry counts */
	}
}

int bt_diddoc_parse(const char *json, size_t n, const char *did, struct bt_identity *out, const char **why)
{
	const char *w = NULL;
	json_t *doc = NULL;

	memset(out, 0, sizeof *out);
	size_t dl = did ? strlen(did) : 0;
	if (!did || dl >= sizeof out->did || !bt_did_valid(did, dl)) {
		w = "bad did";
		goto fail;
	}
	doc = json_loadb(json, n, JSON_REJECT_DUPLICATES, NULL);
	if (!doc) {
		w = "bad json";
		goto fail;
	}
	if (!json_is_object(doc)) {
		w = "doc not an object";
		goto fail;
	}
	json_t *id = json_object_get(doc, "id");
	if (!json_is_string(id)) {
		w = "doc has no id";
		goto fail;
	}
	if (json_string_length(id) != dl || memcmp(json_string_value(id), did, dl) != 0) {
		w = "doc id mismatch";
		goto fail;
	}
	memcpy(out->did, did, dl + 1);
	parse_key(json_object_get(doc, "verificationMethod"), did, out);
	parse_pds(json_object_get(doc, "service"), did, out);
	parse_handle(json_object_get(doc, "alsoKnownAs"), out);
	json_decref(doc);
	if (why)
		*why = NULL;
	return 0;
fail:
	json_decref(doc);
	bt_identity_clear(out);
	if (why)
		*why = w;
	return -EINVAL;
}

void bt_identity_clear(struct bt_identity *id)
{
	if (!id)
		return;
	bt_pubkey_free(&id->key);
	memset(id, 0, sizeof *id);
}

static bool host_char(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '-';
}

int bt_did_resolve_url(const char *did, const char *plc_host, char *out, size_t cap)
{
	int n;
	if (!did || !bt_did_valid(did, strlen(did)))
		return -EINVAL;
	if (strncmp(did, "did:plc:", 8) == 0) {
		const char *id = did + 8;
		if (strlen(id) != 24)
			return -EINVAL;
		for (int i = 0; i < 24; i++)
			if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '2' && id[i] <= '7')))
				return -EINVAL;
		if (!plc_host || !*plc_host)
			return -EINVAL;
		size_t hl = strlen(plc_host);
		while (hl > 0 && plc_host[hl - 1] == '/')
			hl--;
		if (hl == 0 || hl > 1024)
			return -EINVAL;
		n = snprintf(out, cap, "%.*s/%s", (int)hl, plc_host, did);
	} else if (strncmp(did, "did:web:", 8) == 0) {
		const char *h = did + 8;
		size_t hl = strlen(h);
		const char *scheme = "https";
		const char *port = "";
		if (strncasecmp(h, "localhost%3A", 12) == 0) {
			/* did:web allows a port only for localhost development. */
			port = h + 12;
			size_t pl = strlen(port);
			if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl || atoi(port) < 1 ||
			    atoi(port) > 65535)
				return -EINVAL;
			hl = 9;
			scheme = "http";
		} else {
			for (size_t i = 0; i < hl; i++)
				if (!host_char(h[i]))
					return -EINVAL; /* ':' is a path, '%' an encoded port or path */
			if (h[0] == '.' || h[0] == '-' || h[hl - 1] == '.' || h[hl - 1] == '-' || hl > 253 ||
			    !strchr(h, '.'))
				return -EINVAL;
		}
		n = snprintf(out, cap, "%s://%.*s%s%s/.well-known/did.json", scheme, (int)hl, h, *port ? ":" : "",
			     port);
		if (n >= 0 && (size_t)n < cap) {
			size_t off = strlen(scheme) + 3;
			for (size_t i = 0; i < hl; i++)
				out[off + i] = (char)tolower((unsigned char)out[off + i]);
		}
	} else {
		return -EINVAL;
	}
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}
