/*
 * NAME
 *	bt_did.h - DID documents: parsing into an identity, resolution URLs
 * DESCRIPTION
 *	verify resolves DIDs (did:plc through the PLC directory, did:web through
 *	https://<host>/.well-known/did.json), parses the document with
 *	bt_diddoc_parse and caches the resulting struct bt_identity: the atproto
 *	signing key, the PDS endpoint and its authority (for the host check)
 *	and the claimed handle.  Pure functions, no global state.
 * DIAGNOSTICS
 *	Negative errno values; bt_diddoc_parse also sets *why to a static
 *	reason string suitable for a log line or a counter label.
 */
#ifndef BT_DID_H
#define BT_DID_H
#include <stdbool.h>
#include <stddef.h>

#include "bt_crypto.h"

struct bt_identity {
	char did[256];
	struct bt_pubkey *key; /* owned; NULL if the doc has no usable #atproto key (see key_why) */
	char pds[512];         /* #atproto_pds serviceEndpoint URL, "" if none */
	char pds_host[300];    /* its authority, lower-case "host" or "host:port" (port only if non-default) */
	char handle[256];      /* from alsoKnownAs at://..., lower-case, "" if none or not a valid handle */
	const char *key_why;   /* static: NULL when key is set, else why there is none */
};

/* Parses a DID document (JSON text json[0..n), need not be NUL-terminated); doc.id must equal did.
   Key: verificationMethod whose id is "#atproto" or "<did>#atproto" (Multikey or the legacy types);
   a missing or unusable key is not an error (key = NULL, key_why says why).  PDS: service whose id
   is "#atproto_pds" or "<did>#atproto_pds" with type AtprotoPersonalDataServer and an http(s) URL.
   Borrows json and did; fills *out (caller clears it with bt_identity_clear).  Returns 0, or <0 with
   *why set (out is then left cleared). */
int bt_diddoc_parse(const char *json, size_t n, const char *did, struct bt_identity *out, const char **why);
/* Frees the key and zeroes the identity; accepts NULL. */
void bt_identity_clear(struct bt_identity *id);

/* Writes the URL that resolves did into out: did:plc -> "<plc_host>/<did>"; did:web:<host> ->
   "https://<host>/.well-known/did.json" (hostname only, lower-cased; a did:web with a path is refused;
   "did:web:localhost%3A<port>" gives "http://localhost:<port>/..." for tests).  Borrows both strings;
   returns the URL length, -EINVAL for bad syntax or another method, -ENOSPC if out is too small. */
int bt_did_resolve_url(const char *did, const char *plc_host, char *out, size_t cap);

/* True when s is a syntactically valid DID (atproto rules: "did:<method>:<id>", <= 2048 chars). */
bool bt_did_valid(const char *s, size_t n);

/* Splits an http(s) URL's authority into host_out: lower-case "host" or "host:port" with the port
   kept only if non-default; rejects userinfo, empty hosts and bad ports.  Returns the length or <0. */
int bt_url_authority(const char *url, char *host_out, size_t cap);

#endif
