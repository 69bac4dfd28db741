/*
 * NAME
 *	fuzz_diddoc - libFuzzer target for bt_diddoc_parse and the DID/URL helpers
 * DESCRIPTION
 *	The whole input is parsed as a DID document for
 *	did:plc:ewvi7nxzyoun6zhxrhs64oiz (the DID of most seeds); then its first
 *	line is taken as a DID and the rest as that DID's document.  The first
 *	line also goes through bt_did_resolve_url, bt_url_authority and the
 *	multikey parser.  Any
 *	crash, sanitizer report or leak is a finding; parse results must be
 *	self-consistent (a key-less identity has a reason).
 * DIAGNOSTICS
 *	Aborts on an inconsistent result so libFuzzer reports it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bt_crypto.h"
#include "bt_did.h"

static void check(const struct bt_identity *id)
{
	if (!id->key && !id->key_why)
		abort();
	if (id->key && id->key_why)
		abort();
	if ((id->pds[0] == 0) != (id->pds_host[0] == 0))
		abort();
	if (memchr(id->did, 0, sizeof id->did) == NULL || memchr(id->handle, 0, sizeof id->handle) == NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bt_identity id;
	const char *why = NULL;
	const char *js = (const char *)data;

	if (bt_diddoc_parse(js, size, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", &id, &why) == 0) {
		check(&id);
		if (id.key) {
			char mk[BT_MULTIKEY_MAX];
			struct bt_pubkey *k2 = NULL;
			int n = bt_pubkey_multikey(id.key, mk, sizeof mk);
			if (n <= 0 || bt_pubkey_parse_multikey(mk, (size_t)n, &k2) != 0 || !bt_pubkey_eq(k2, id.key))
				abort();
			bt_pubkey_free(&k2);
		}
		bt_identity_clear(&id);
	} else if (!why) {
		abort();
	}

	/* The first line, as a C string, through the string helpers. */
	char line[600];
	size_t n = 0;
	while (n < size && n < sizeof line - 1 && data[n] != '\n')
		n++;
	memcpy(line, data, n);
	line[n] = 0;
	char out[2048];
	int r = bt_did_resolve_url(line, "https://plc.directory", out, sizeof out);
	if (r >= 0 && (size_t)r != strlen(out))
		abort();
	/* The rest of the input as a document for the DID on the first line. */
	size_t skip = n < size ? n + 1 : size;
	if (bt_diddoc_parse(js + skip, size - skip, line, &id, &why) == 0) {
		check(&id);
		if (strcmp(id.did, line) != 0)
			abort();
		bt_identity_clear(&id);
	}
	char host[300];
	r = bt_url_authority(line, host, sizeof host);
	if (r >= 0 && (size_t)r != strlen(host))
		abort();
	struct bt_pubkey *k = NULL;
	if (bt_pubkey_parse_multikey(line, n, &k) == 0 && !k)
		abort();
	bt_pubkey_free(&k);
	return 0;
}
