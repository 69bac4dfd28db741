/*
 * NAME
 *	fanout_admin - the admin API (every /admin/ route) of the public port
 * DESCRIPTION
 *	indigo's admin paths and semantics, so an indigo operator's tools work unchanged
 *	(docs/ops.md).  Authorisation: HTTP Basic "admin:<RELAY_ADMIN_PASSWORD>" as indigo, or
 *	"Authorization: Bearer <password>" as zlay; compared in constant time.  Without a
 *	password the API is disabled: every route answers 403 AdminDisabled, never open.
 *	A route either answers from what the fanout holds or forwards one control message to
 *	the stage that owns the state (fan_ctl_async; the owner persists it through the store).
 * DIAGNOSTICS
 *	401 AuthRequired (with WWW-Authenticate) for missing or wrong credentials, 404 NotFound
 *	for an unknown route, 405 MethodNotAllowed for a known one with the wrong method; a
 *	stage that does not answer in time gives 503.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "bt_host.h"
#include "bt_pipe.h"
#include "bt_http.h"
#include "bt_params.h"
#include "fanout.h"

#define ADMIN_TIMEOUT_MS 5000

typedef void route_fn(struct bt_http_req *req);

struct route {
	const char *method; /* "GET" or "POST" */
	const char *path;
	route_fn *fn;
};

/* Constant-time equality of a given secret with the password (lengths leak, contents do not). */
static bool secret_ok(const char *given, size_t n)
{
	size_t pn = strlen(bt_cfg.admin_password);
	return n == pn && CRYPTO_memcmp(given, bt_cfg.admin_password, pn) == 0;
}

bool fan_admin_authorized(const struct bt_http_req *req)
{
	if (!bt_cfg.admin_password[0])
		return false;
	const char *a = bt_http_req_header(req, "Authorization");
	if (!a)
		return false;
	if (!strncasecmp(a, "Bearer ", 7))
		return secret_ok(a + 7, strlen(a + 7));
	if (strncasecmp(a, "Basic ", 6))
		return false;
	a += 6;
	size_t n = strlen(a);
	if (n == 0 || n > 1024 || n % 4)
		return false;
	unsigned char dec[800];
	int m = EVP_DecodeBlock(dec, (const unsigned char *)a, (int)n);
	if (m < 0)
		return false;
	/* EVP_DecodeBlock counts the '=' padding as zero bytes */
	if (a[n - 1] == '=')
		m--;
	if (a[n - 2] == '=')
		m--;
	dec[m] = 0;
	if (m < 6 || memcmp(dec, "admin:", 6))
		return false;
	return secret_ok((const char *)dec + 6, (size_t)m - 6);
}

/* GET /admin/pds/list: the hosts the store knows, with their cursors and status. */
static void pds_list(struct bt_http_req *req)
{
	if (fan_ctl_async(req, "store", json_pack("{s:s}", "op", "hosts"), ADMIN_TIMEOUT_MS,
			  (fan_ctl_done_fn *)fan_ctl_answer, "store") < 0)
		fan_xrpc_error(req, 503, "ServiceUnavailable", "too many control requests in flight");
}

/* POST /admin/pds/changeLimits {host, repo_limit, per_second?, per_hour?, per_day?} (indigo's
   body; the three rates are baton's): the store persists it, re-activates throttled accounts
   up to a raised limit and pushes the rates to ingest (store/store_limits.c). */
static void pds_change_limits(struct bt_http_req *req)
{
	size_t n;
	const uint8_t *body = bt_http_req_body(req, &n);
	json_error_t je;
	json_t *j = json_loadb((const char *)body, n, 0, &je);
	const char *host = json_string_value(json_object_get(j, "host"));
	char norm[BT_HOST_MAX];
	bool insecure;
	if (!json_is_object(j) || !host || bt_host_normalize(host, true, norm, sizeof norm, &insecure, NULL) < 0) {
		json_decref(j);
		fan_xrpc_error(req, 400, "InvalidRequest", "body must be JSON {\"host\": \"...\", \"repo_limit\": N}");
		return;
	}
	json_t *msg = json_pack("{s:s,s:s}", "op", "changeLimits", "hostname", norm);
	static const char *const keys[] = { "repo_limit", "per_second", "per_hour", "per_day" };
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		json_t *v = json_object_get(j, keys[i]);
		if (v)
			json_object_set(msg, keys[i], v);
	}
	json_decref(j);
	if (fan_ctl_async(req, "store", msg, ADMIN_TIMEOUT_MS, (fan_ctl_done_fn *)fan_ctl_answer, "store") < 0)
		fan_xrpc_error(req, 503, "ServiceUnavailable", "too many control requests in flight");
}

static const struct route routes[] = {
	{ "GET", "/admin/pds/list", pds_list },
	{ "POST", "/admin/pds/changeLimits", pds_change_limits },
};

void fan_admin_handle(struct bt_http_req *req, const char *path)
{
	if (!bt_cfg.admin_password[0]) {
		fan_xrpc_error(req, 403, "AdminDisabled", "the admin API is disabled (RELAY_ADMIN_PASSWORD is not set)");
		return;
	}
	if (!fan_admin_authorized(req)) {
		bt_http_respond_hdr(req, 401, "application/json", "WWW-Authenticate: Basic realm=\"baton admin\"\r\n",
				    "{\"error\":\"AuthRequired\",\"message\":\"admin credentials required\"}", 63);
		return;
	}
	const char *m = bt_http_req_method(req);
	bool known = false;
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		if (strcmp(routes[i].path, path))
			continue;
		known = true;
		if (!strcmp(routes[i].method, m)) {
			routes[i].fn(req);
			return;
		}
	}
	if (known)
		fan_xrpc_error(req, 405, "MethodNotAllowed", NULL);
	else
		fan_xrpc_error(req, 404, "NotFound", "no such admin route");
}
