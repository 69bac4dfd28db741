/*
 * NAME
 *	fuzz_admin_body.c - libFuzzer target: request bodies and parameters into the admin API
 * DESCRIPTION
 *	The first byte picks a route of fanout_admin.c (and the public requestCrawl, whose body
 *	is the same kind); the input up to the first newline is the query string, the rest the
 *	body, sent with the right credentials (RELAY_ADMIN_PASSWORD "fuzz", fanout_stub.c)
 *	through the fanout's real HTTP handler.  Routes that forward to another stage answer
 *	503 once the request is validated (no stage runs).  /admin/consumers/list reads the
 *	other fanouts' shared memory and is left out.
 * DIAGNOSTICS
 *	Crashes and sanitizer reports only.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fanout_stub.h"

static const char *const routes[] = {
	"POST /admin/pds/requestCrawl",    "POST /admin/pds/changeLimits",     "POST /admin/subs/banDomain",
	"POST /admin/subs/unbanDomain",    "POST /admin/pds/block",            "POST /admin/pds/unblock",
	"POST /admin/subs/killUpstream",   "POST /admin/subs/setEnabled",      "POST /admin/subs/setPerDayLimit",
	"GET /admin/pds/list",             "GET /admin/subs/getEnabled",       "GET /admin/subs/listDomainBans",
	"POST /xrpc/com.atproto.sync.requestCrawl", "GET /admin/pds/requestCrawl", "POST /admin/nothing",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 60000)
		return 0;
	fuzz_fanout_init();
	static char req[60000 + 3 * 4096 + 512];
	const char *r = routes[data[0] % (sizeof routes / sizeof *routes)];
	const uint8_t *q = data + 1, *nl = memchr(q, '\n', size - 1);
	size_t qn = nl ? (size_t)(nl - q) : 0;
	if (qn > 4096)
		return 0;
	const uint8_t *body = nl ? nl + 1 : q;
	size_t bn = size - (size_t)(body - data);
	size_t n = (size_t)snprintf(req, sizeof req, "%s?", r);
	for (size_t i = 0; i < qn; i++) {
		uint8_t c = q[i];
		if (c <= ' ' || c == 0x7f)
			n += (size_t)snprintf(req + n, 4, "%%%02X", c);
		else
			req[n++] = (char)c;
	}
	/* Basic admin:fuzz */
	n += (size_t)snprintf(req + n, sizeof req - n,
			      " HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Basic YWRtaW46ZnV6eg==\r\n"
			      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			      bn);
	memcpy(req + n, body, bn);
	fuzz_fanout_request(req, n + bn);
	return 0;
}
