/*
 * NAME
 *	fuzz_xrpc_params.c - libFuzzer target: query strings into the fanout's XRPC queries
 * DESCRIPTION
 *	The first byte picks the method (listHosts, getHostStatus, listRepos, getRepoStatus,
 *	getLatestCommit, getRepo, and one unknown NSID); the rest is the query string, sent as
 *	GET /xrpc/<method>?<rest> through the fanout's real HTTP handler (fanout_stub.c: a
 *	seeded RocksDB view, no other stage).  Bytes an HTTP request line cannot carry (CR,
 *	LF, space, NUL) are sent percent-encoded, so every input reaches the parameter parsing.
 * DIAGNOSTICS
 *	Crashes and sanitizer reports only.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fanout_stub.h"

static const char *const methods[] = {
	"com.atproto.sync.listHosts",      "com.atproto.sync.getHostStatus",   "com.atproto.sync.listRepos",
	"com.atproto.sync.getRepoStatus",  "com.atproto.sync.getLatestCommit", "com.atproto.sync.getRepo",
	"com.atproto.sync.notAMethod",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 6000)
		return 0;
	fuzz_fanout_init();
	static char req[6000 * 3 + 256];
	const char *m = methods[data[0] % (sizeof methods / sizeof *methods)];
	size_t n = (size_t)snprintf(req, sizeof req, "GET /xrpc/%s?", m);
	for (size_t i = 1; i < size; i++) {
		uint8_t c = data[i];
		if (c <= ' ' || c == 0x7f)
			n += (size_t)snprintf(req + n, 4, "%%%02X", c);
		else
			req[n++] = (char)c;
	}
	n += (size_t)snprintf(req + n, sizeof req - n, " HTTP/1.1\r\nHost: fuzz\r\n\r\n");
	fuzz_fanout_request(req, n);
	return 0;
}
