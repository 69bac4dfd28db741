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
#include <strings.h>

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

/* Sends msg to the stage what; done answers.  A full worker queue is a 503 at once. */
static void forward(struct bt_http_req *req, const char *what, json_t *msg, fan_ctl_done_fn *done, void *arg)
{
	if (fan_ctl_async(req, what, msg, ADMIN_TIMEOUT_MS, done, arg) < 0)
		fan_xrpc_error(req, 503, "ServiceUnavailable", "too many control requests in flight");
}

/* A refusal (or no answer) is passed on by fan_ctl_answer; true if r was one. */
static bool refused(struct bt_http_req *req, json_t *r, const char *what)
{
	if (r && !json_string_value(json_object_get(r, "error")) && !json_is_false(json_object_get(r, "ok")))
		return false;
	fan_ctl_answer(req, r, what);
	return true;
}

/* indigo's answer to a write: {"success": "true"}. */
static void answer_success(struct bt_http_req *req, json_t *r, void *arg)
{
	if (!refused(req, r, arg))
		fan_xrpc_json(req, 200, json_pack("{s:s}", "success", "true"));
}

/* The query parameter name (url-decoded) into out; false (answered 400) if absent or too long. */
static bool query_arg(struct bt_http_req *req, const char *name, char *out, size_t cap)
{
	if (bt_http_req_param(req, name, out, cap) > 0)
		return true;
	char m[96];
	snprintf(m, sizeof m, "query parameter '%s' missing or too long", name);
	fan_xrpc_error(req, 400, "BadRequest", m);
	return false;
}

/* Go's strconv.ParseBool, as indigo parses ?enabled= and ?block=: 1 t T TRUE true True, 0 f F
   FALSE false False.  -1 for anything else. */
static int parse_bool(const char *s)
{
	static const char *yes[] = { "1", "t", "T", "TRUE", "true", "True" }, *no[] = { "0", "f", "F", "FALSE", "false", "False" };
	for (size_t i = 0; i < 6; i++) {
		if (!strcmp(s, yes[i]))
			return 1;
		if (!strcmp(s, no[i]))
			return 0;
	}
	return -1;
}

/* The JSON body (owned, NULL answered 400): an object. */
static json_t *json_body(struct bt_http_req *req)
{
	size_t n;
	const uint8_t *b = bt_http_req_body(req, &n);
	json_error_t je;
	json_t *j = json_loadb((const char *)b, n, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		fan_xrpc_error(req, 400, "BadRequest", "the body must be a JSON object");
		return NULL;
	}
	return j;
}

/* A string member of a JSON object, its key matched without case (as Go's encoding/json
   binds "Domain" and "domain" alike).  Borrowed, or NULL. */
static const char *member(json_t *j, const char *key)
{
	const char *k;
	json_t *v;
	json_object_foreach(j, k, v)
		if (!strcasecmp(k, key) && json_is_string(v))
			return json_string_value(v);
	return NULL;
}

/* GET /admin/pds/list: indigo's host list, from the store's hosts and ingest's connections. */
static void pds_list_ingest(struct bt_http_req *req, json_t *up, void *arg)
{
	json_t *store = arg, *out = json_array(), *h;
	size_t i, k;
	json_t *ups = json_object_get(up, "upstreams");
	json_array_foreach(json_object_get(store, "hosts"), i, h)
	{
		const char *name = json_string_value(json_object_get(h, "host"));
		const char *st = json_string_value(json_object_get(h, "status"));
		if (!name || !st)
			continue;
		bool active = false;
		json_t *u;
		json_array_foreach(ups, k, u)
			if (!strcmp(name, json_string_value(json_object_get(u, "host")) ?: ""))
				active = json_is_true(json_object_get(u, "connected"));
		json_array_append_new(out, json_pack("{s:O,s:s,s:b,s:O,s:b,s:b,s:s,s:b,s:O}", "ID", json_object_get(h, "id"),
						     "Host", name, "SSL", strncmp(name, "localhost:", 10) != 0,
						     "Cursor", json_object_get(h, "cursor"), "Registered",
						     !strcmp(st, "active"), "Blocked", !strcmp(st, "banned"), "Status", st,
						     "HasActiveConnection", active, "EventsSeenSinceStartup",
						     json_object_get(h, "events")));
	}
	json_decref(store);
	if (!up) {
		json_decref(out);
		fan_ctl_answer(req, NULL, "ingest");
		return;
	}
	fan_xrpc_json(req, 200, out);
}

static void pds_list_store(struct bt_http_req *req, json_t *r, void *arg)
{
	if (refused(req, r, "store"))
		return;
	json_incref(r);
	if (fan_ctl_async(req, "ingest", json_pack("{s:s}", "op", "upstreams"), ADMIN_TIMEOUT_MS, pds_list_ingest, r) < 0) {
		json_decref(r);
		fan_xrpc_error(req, 503, "ServiceUnavailable", "too many control requests in flight");
	}
}

static void pds_list(struct bt_http_req *req)
{
	forward(req, "store", json_pack("{s:s}", "op", "hosts"), pds_list_store, NULL);
}

/* POST /admin/pds/requestCrawl {hostname, cursorHint?}: requestCrawl past the crawl switch and
   the per-day limit (indigo's admin flag); bans still apply. */
static void pds_request_crawl(struct bt_http_req *req)
{
	json_t *j = json_body(req);
	if (!j)
		return;
	const char *host = member(j, "hostname");
	json_t *hint = json_object_get(j, "cursorHint");
	if (!host || !*host || strlen(host) > 253) {
		json_decref(j);
		fan_xrpc_error(req, 400, "BadRequest", "body must be JSON {\"hostname\": \"...\"}");
		return;
	}
	json_t *msg = json_pack("{s:s,s:s,s:b}", "op", "requestCrawl", "hostname", host, "admin", 1);
	if (hint)
		json_object_set(msg, "cursorHint", hint);
	json_decref(j);
	forward(req, "ingest", msg, answer_success, "ingest");
}

/* POST ?host=H: block, unblock, killUpstream (&block=true). */
static void host_op(struct bt_http_req *req, const char *op)
{
	char host[300], b[16];
	if (!query_arg(req, "host", host, sizeof host))
		return;
	json_t *msg = json_pack("{s:s,s:s}", "op", op, "hostname", host);
	if (!strcmp(op, "killUpstream") && bt_http_req_param(req, "block", b, sizeof b) > 0)
		json_object_set_new(msg, "block", json_boolean(!strcasecmp(b, "true")));
	forward(req, "ingest", msg, answer_success, "ingest");
}

static void pds_block(struct bt_http_req *req)
{
	host_op(req, "block");
}

static void pds_unblock(struct bt_http_req *req)
{
	host_op(req, "unblock");
}

static void subs_kill_upstream(struct bt_http_req *req)
{
	host_op(req, "killUpstream");
}

/* GET /admin/subs/getUpstreamConns: the hostnames ingest subscribes to (connected or
   reconnecting), a JSON array as indigo's. */
static void answer_conns(struct bt_http_req *req, json_t *r, void *arg)
{
	if (refused(req, r, "ingest"))
		return;
	json_t *out = json_array(), *u;
	size_t i;
	json_array_foreach(json_object_get(r, "upstreams"), i, u)
		if (json_is_string(json_object_get(u, "host")))
			json_array_append(out, json_object_get(u, "host"));
	fan_xrpc_json(req, 200, out);
}

static void subs_upstream_conns(struct bt_http_req *req)
{
	forward(req, "ingest", json_pack("{s:s}", "op", "upstreams"), answer_conns, NULL);
}

/* GET getEnabled {enabled}, GET perDayLimit {limit}: from ingest's admission state. */
static void answer_crawl_state(struct bt_http_req *req, json_t *r, void *arg)
{
	if (refused(req, r, "ingest"))
		return;
	if (arg)
		fan_xrpc_json(req, 200, json_pack("{s:O}", "limit", json_object_get(r, "per_day_limit")));
	else
		fan_xrpc_json(req, 200, json_pack("{s:b}", "enabled", json_is_true(json_object_get(r, "enabled"))));
}

static void subs_get_enabled(struct bt_http_req *req)
{
	forward(req, "ingest", json_pack("{s:s}", "op", "crawl"), answer_crawl_state, NULL);
}

static void subs_per_day_limit(struct bt_http_req *req)
{
	forward(req, "ingest", json_pack("{s:s}", "op", "crawl"), answer_crawl_state, "limit");
}

/* POST setEnabled?enabled=BOOL: pause (false) or resume all new crawls. */
static void subs_set_enabled(struct bt_http_req *req)
{
	char v[16];
	if (!query_arg(req, "enabled", v, sizeof v))
		return;
	int en = parse_bool(v);
	if (en < 0) {
		fan_xrpc_error(req, 400, "BadRequest", "enabled must be true or false");
		return;
	}
	forward(req, "ingest", json_pack("{s:s,s:b}", "op", "setCrawl", "enabled", en), answer_success, "ingest");
}

/* POST setPerDayLimit?limit=N: new hosts accepted by the public requestCrawl per UTC day. */
static void subs_set_per_day_limit(struct bt_http_req *req)
{
	char v[24], *end;
	if (!query_arg(req, "limit", v, sizeof v))
		return;
	long long n = strtoll(v, &end, 10);
	if (*end || n < 0 || n > 1000000) {
		fan_xrpc_error(req, 400, "BadRequest", "limit must be an integer from 0 to 1000000");
		return;
	}
	forward(req, "ingest", json_pack("{s:s,s:I}", "op", "setCrawl", "per_day_limit", (json_int_t)n), answer_success,
		"ingest");
}

/* GET listDomainBans {banned_domains}; POST banDomain / unbanDomain {"Domain": D}. */
static void subs_list_domain_bans(struct bt_http_req *req)
{
	forward(req, "ingest", json_pack("{s:s}", "op", "domainBans"), (fan_ctl_done_fn *)fan_ctl_answer, "ingest");
}

static void domain_op(struct bt_http_req *req, const char *op)
{
	json_t *j = json_body(req);
	if (!j)
		return;
	const char *d = member(j, "domain");
	if (!d) {
		json_decref(j);
		fan_xrpc_error(req, 400, "BadRequest", "body must be JSON {\"Domain\": \"...\"}");
		return;
	}
	json_t *msg = json_pack("{s:s,s:s}", "op", op, "domain", d);
	json_decref(j);
	forward(req, "ingest", msg, answer_success, "ingest");
}

static void subs_ban_domain(struct bt_http_req *req)
{
	domain_op(req, "banDomain");
}

static void subs_unban_domain(struct bt_http_req *req)
{
	domain_op(req, "unbanDomain");
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

/* POST /admin/repo/takeDown and /admin/repo/reverseTakedown {did} (indigo's): the store
   persists it and sequences the #account (store/store_takedown.c). */
static void repo_takedown_op(struct bt_http_req *req, const char *op)
{
	size_t n;
	const uint8_t *body = bt_http_req_body(req, &n);
	json_error_t je;
	json_t *j = json_loadb((const char *)body, n, 0, &je);
	const char *did = json_string_value(json_object_get(j, "did"));
	if (!json_is_object(j) || !did) {
		json_decref(j);
		fan_xrpc_error(req, 400, "InvalidRequest", "must specify DID parameter in body");
		return;
	}
	json_t *msg = json_pack("{s:s,s:s}", "op", op, "did", did);
	json_decref(j);
	forward(req, "store", msg, answer_success, "store");
}

static void repo_take_down(struct bt_http_req *req)
{
	repo_takedown_op(req, "takeDown");
}

static void repo_reverse_takedown(struct bt_http_req *req)
{
	repo_takedown_op(req, "reverseTakedown");
}

static const struct route routes[] = {
	{ "GET", "/admin/pds/list", pds_list },
	{ "POST", "/admin/pds/requestCrawl", pds_request_crawl },
	{ "POST", "/admin/pds/block", pds_block },
	{ "POST", "/admin/pds/unblock", pds_unblock },
	{ "GET", "/admin/subs/getUpstreamConns", subs_upstream_conns },
	{ "POST", "/admin/subs/killUpstream", subs_kill_upstream },
	{ "GET", "/admin/subs/getEnabled", subs_get_enabled },
	{ "POST", "/admin/subs/setEnabled", subs_set_enabled },
	{ "GET", "/admin/subs/perDayLimit", subs_per_day_limit },
	{ "POST", "/admin/subs/setPerDayLimit", subs_set_per_day_limit },
	{ "GET", "/admin/subs/listDomainBans", subs_list_domain_bans },
	{ "POST", "/admin/subs/banDomain", subs_ban_domain },
	{ "POST", "/admin/subs/unbanDomain", subs_unban_domain },
	{ "GET", "/admin/consumers/list", fan_conslist_route }, /* fanout_conslist.c */
	{ "POST", "/admin/pds/changeLimits", pds_change_limits },
	{ "POST", "/admin/repo/takeDown", repo_take_down },
	{ "POST", "/admin/repo/reverseTakedown", repo_reverse_takedown },
	{ "GET", "/admin/repo/takedowns", fan_td_route }, /* fanout_takedown.c */
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
