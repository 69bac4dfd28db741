/*
 * NAME
 *	fanout_repo - the com.atproto.sync read queries: hosts and repos from the RocksDB view
 * DESCRIPTION
 *	listHosts, getHostStatus, listRepos, getRepoStatus, getLatestCommit and getRepo, answered
 *	from the fanout's read-only secondary RocksDB view (schema in common/bt_db.h), which is
 *	caught up with the store's writes at most every CATCH_UP_MS before a read.  Runs on the
 *	fanout's loop thread: point reads and bounded scans (at most MAX_SCAN records a page).
 *
 *	  listHosts        hosts in id order (first seen first); cursor = the last host id.
 *	                   seq = the host's committed upstream cursor; accountCount the
 *	                   store's count of its accounts ("l/" key, store/store_limits.c).
 *	  getHostStatus    hostname normalised as requestCrawl does (bt_host_normalize).
 *	  listRepos        accounts in DID order; cursor = the last DID of the page.  Accounts
 *	                   with no commit seen yet (no head, no rev) are left out: head and rev
 *	                   are required by the lexicon.
 *	  getRepoStatus    {did, active, status (only if inactive), rev (if known)}.
 *	  getLatestCommit  {cid, rev} of the last commit/sync relayed for the account.
 *	  getRepo          302 to the account's host: https://<host>/xrpc/com.atproto.sync.getRepo
 *	                   (http:// for localhost:PORT test hosts), did and since passed on.
 * DIAGNOSTICS
 *	Bad parameters: 400 InvalidRequest.  Unknown host: 404 HostNotFound; unknown account:
 *	404 RepoNotFound; an inactive account (getLatestCommit, getRepo): 403 RepoTakendown,
 *	RepoSuspended, RepoDeactivated, RepoDeleted or RepoInactive by its status; no commit
 *	known yet: 404 RepoNotSynchronized (the codes indigo's relay uses).  The view not open
 *	yet (the store has not created the database): 503.  A RocksDB error: 500.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bt_cid.h"
#include "bt_db.h"
#include "bt_host.h"
#include "bt_http.h"
#include "bt_log.h"
#include "bt_pipe.h"
#include "bt_syntax.h"
#include "fanout.h"

#define CATCH_UP_MS 20     /* reads see the store's writes at most this much late */
#define MAX_LIMIT 1000
#define MAX_SCAN 20000     /* records looked at for one listRepos page */
#define DID_PARAM_MAX 2100 /* bt_syntax_did accepts up to 2048 */

/* ---- helpers ---- */

/* Opens and catches up the view; answers 503 and returns <0 when there is none yet. */
static int view(struct bt_http_req *req)
{
	if (fan_db_ensure() < 0) {
		fan_xrpc_error(req, 503, "ServiceUnavailable", "the relay database is not available yet");
		return -1;
	}
	fan_db_catch_up(CATCH_UP_MS);
	return 0;
}

/* Parses the optional integer parameter "limit" (1..MAX_LIMIT); answers 400 and returns <0 if bad. */
static int get_limit(struct bt_http_req *req, int def, int *out)
{
	char b[16];
	int n = bt_http_req_param(req, "limit", b, sizeof b);
	if (n == -ENOENT) {
		*out = def;
		return 0;
	}
	long v = 0;
	bool ok = n > 0 && n <= 4;
	for (int i = 0; ok && i < n; i++) {
		if (b[i] < '0' || b[i] > '9')
			ok = false;
		else
			v = v * 10 + (b[i] - '0');
	}
	if (!ok || v < 1 || v > MAX_LIMIT) {
		fan_xrpc_error(req, 400, "InvalidRequest", "limit must be an integer from 1 to 1000");
		return -1;
	}
	*out = (int)v;
	return 0;
}

/* Reads the required "did" parameter into b (cap DID_PARAM_MAX + 1); answers 400 and returns <0 if bad. */
static int get_did(struct bt_http_req *req, char *b, size_t cap)
{
	int n = bt_http_req_param(req, "did", b, cap);
	if (n == -ENOENT) {
		fan_xrpc_error(req, 400, "InvalidRequest", "did is required");
		return -1;
	}
	if (n <= 0 || !bt_syntax_did(b, (size_t)n)) {
		fan_xrpc_error(req, 400, "InvalidRequest", "did is not a valid DID");
		return -1;
	}
	return n;
}

/* A record as the store writes it; false for a foreign or damaged value. */
static bool acct_ok(const void *v, size_t vn, struct bt_acct_rec *a)
{
	if (vn != sizeof *a)
		return false;
	memcpy(a, v, sizeof *a);
	return a->version == 1 && a->rev_len <= sizeof a->rev && a->data_len <= sizeof a->data_cid &&
	       a->head_len <= sizeof a->head_cid && a->status_len <= sizeof a->status;
}

static bool host_ok(const void *v, size_t vn, struct bt_host_rec *h)
{
	if (vn != sizeof *h)
		return false;
	memcpy(h, v, sizeof *h);
	return h->version == 1 && h->host_len > 0 && h->host_len < sizeof h->host;
}

/* Account record of did: 0, -ENOENT, or another negative code. */
static int acct_get(const char *did, size_t dn, struct bt_acct_rec *a)
{
	if (dn > BT_DID_MAX)
		return -ENOENT; /* the store never keeps such a DID */
	char k[BT_DID_MAX + 2], v[sizeof *a];
	int n = bt_db_get(fan.db, k, bt_key_acct(k, sizeof k, did, dn), v, sizeof v);
	if (n < 0)
		return n;
	return acct_ok(v, (size_t)n, a) ? 0 : -EBADMSG;
}

static int host_get(uint32_t id, struct bt_host_rec *h)
{
	char k[6], v[sizeof *h];
	int n = bt_db_get(fan.db, k, bt_key_host(k, id), v, sizeof v);
	if (n < 0)
		return n;
	return host_ok(v, (size_t)n, h) ? 0 : -EBADMSG;
}

/* Answers the lookup failure rc (not found, or a database error). */
static void lookup_error(struct bt_http_req *req, int rc, const char *notfound, const char *msg)
{
	if (rc == -ENOENT)
		fan_xrpc_error(req, 404, notfound, msg);
	else
		fan_xrpc_error(req, 500, "InternalServerError", "database read failed");
}

/* A JSON string from stored bytes, or NULL when they are not UTF-8 (the key is then left out). */
static json_t *jstr(const char *p, size_t n)
{
	return n ? json_stringn(p, n) : NULL;
}

/* The account's head CID as a string into out; false when no commit is known. */
static bool head_str(const struct bt_acct_rec *a, char *out, size_t cap)
{
	struct bt_cid c;
	if (a->head_len == 0 || a->rev_len == 0 || a->head_len > BT_CID_MAX)
		return false;
	c.len = a->head_len;
	memcpy(c.b, a->head_cid, a->head_len);
	return bt_cid_to_str(&c, out, cap) > 0;
}

static bool acct_active(const struct bt_acct_rec *a)
{
	return (a->flags & BT_ACCT_ACTIVE) && !(a->flags & (BT_ACCT_THROTTLED | BT_ACCT_TAKENDOWN));
}

/* An account over its host's account limit shows "throttled" (store/store_limits.c). */
static json_t *acct_status(const struct bt_acct_rec *a)
{
	if (a->flags & BT_ACCT_TAKENDOWN) /* the operator's takedown (store/store_takedown.c) */
		return json_string("takendown");
	return (a->flags & BT_ACCT_THROTTLED) ? json_string("throttled") : jstr(a->status, a->status_len);
}

/* Adds "active" and, for an inactive account, its "status" to o. */
static void put_active(json_t *o, const struct bt_acct_rec *a)
{
	json_object_set_new(o, "active", json_boolean(acct_active(a)));
	json_t *st = acct_active(a) ? NULL : acct_status(a);
	if (st)
		json_object_set_new(o, "status", st);
}

/* For an inactive account answers 403 with the lexicon's error for its status; returns true then. */
static bool refuse_inactive(struct bt_http_req *req, const struct bt_acct_rec *a)
{
	if (acct_active(a))
		return false;
	if (a->flags & BT_ACCT_TAKENDOWN) {
		fan_xrpc_error(req, 403, "RepoTakendown", "account is not active (takendown)");
		return true;
	}
	static const struct {
		const char *status, *error;
	} map[] = {
		{ "takendown", "RepoTakendown" },
		{ "suspended", "RepoSuspended" },
		{ "deactivated", "RepoDeactivated" },
		{ "deleted", "RepoDeleted" },
	};
	for (size_t i = 0; i < sizeof map / sizeof *map; i++)
		if (a->status_len == strlen(map[i].status) && !memcmp(a->status, map[i].status, a->status_len)) {
			char m[64];
			snprintf(m, sizeof m, "account is not active (%s)", map[i].status);
			fan_xrpc_error(req, 403, map[i].error, m);
			return true;
		}
	char m[96];
	if (a->flags & BT_ACCT_THROTTLED)
		snprintf(m, sizeof m, "account is not active (throttled)");
	else
		snprintf(m, sizeof m, "account is not active (%.*s)", a->status_len ? (int)a->status_len : 4,
			 a->status_len ? a->status : "none");
	fan_xrpc_error(req, 403, "RepoInactive", m);
	return true;
}

/* ---- hosts ---- */

struct host_page {
	json_t *arr;
	int limit, n;
	bool more;
	uint32_t last_id;
};

static json_t *host_json(const struct bt_host_rec *h)
{
	json_t *o = json_object();
	json_object_set_new(o, "hostname", json_stringn(h->host, h->host_len));
	json_object_set_new(o, "seq", json_integer((json_int_t)h->cursor));
	json_object_set_new(o, "status", json_string(bt_host_status_name(h->status)));
	/* The store's count of the host's accounts (store/store_limits.c), 0 before the first. */
	struct bt_host_limits l;
	char k[6];
	bool have = bt_db_get(fan.db, k, bt_key_limits(k, h->host_id), &l, sizeof l) == (int)sizeof l && l.version == 1;
	json_object_set_new(o, "accountCount", json_integer(have ? (json_int_t)l.account_count : 0));
	return o;
}

static int host_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct host_page *pg = arg;
	struct bt_host_rec h;
	if (kn != 6 || !host_ok(v, vn, &h))
		return 0;
	if (pg->n == pg->limit) {
		pg->more = true;
		return 1;
	}
	json_array_append_new(pg->arr, host_json(&h));
	pg->n++;
	pg->last_id = bt_be32_get((const uint8_t *)k + 2);
	return 0;
}

static void list_hosts(struct bt_http_req *req)
{
	int limit;
	if (get_limit(req, 200, &limit) < 0)
		return;
	char cb[16];
	uint64_t after = 0;
	int n = bt_http_req_param(req, "cursor", cb, sizeof cb);
	if (n != -ENOENT) {
		bool ok = n > 0 && n <= 10;
		for (int i = 0; ok && i < n; i++) {
			if (cb[i] < '0' || cb[i] > '9')
				ok = false;
			else
				after = after * 10 + (uint64_t)(cb[i] - '0');
		}
		if (!ok || after > UINT32_MAX) {
			fan_xrpc_error(req, 400, "InvalidRequest", "bad cursor");
			return;
		}
	}
	if (view(req) < 0)
		return;
	struct host_page pg = { .arr = json_array(), .limit = limit };
	int rc = 0;
	if (after < UINT32_MAX) {
		char from[6];
		rc = bt_db_scan(fan.db, from, bt_key_host(from, (uint32_t)after + 1), "h/", 2, host_cb, &pg);
	}
	if (rc < 0) {
		json_decref(pg.arr);
		fan_xrpc_error(req, 500, "InternalServerError", "database read failed");
		return;
	}
	json_t *o = json_object();
	if (pg.more) {
		snprintf(cb, sizeof cb, "%u", pg.last_id);
		json_object_set_new(o, "cursor", json_string(cb));
	}
	json_object_set_new(o, "hosts", pg.arr);
	fan_xrpc_json(req, 200, o);
}

static void get_host_status(struct bt_http_req *req)
{
	char in[300], name[BT_HOST_MAX];
	int n = bt_http_req_param(req, "hostname", in, sizeof in);
	if (n <= 0) {
		fan_xrpc_error(req, 400, "InvalidRequest", n == -ENOSPC ? "hostname too long" : "hostname is required");
		return;
	}
	bool insecure;
	const char *why = NULL;
	if (bt_host_normalize(in, true, name, sizeof name, &insecure, &why) < 0) {
		fan_xrpc_error(req, 404, "HostNotFound", why);
		return;
	}
	if (view(req) < 0)
		return;
	char k[BT_HOST_MAX + 4];
	uint8_t idb[4];
	int rc = bt_db_get(fan.db, k, bt_key_hostname(k, sizeof k, name, strlen(name)), idb, sizeof idb);
	struct bt_host_rec h;
	if (rc >= 0)
		rc = rc == 4 ? host_get(bt_be32_get(idb), &h) : -EBADMSG;
	if (rc < 0) {
		lookup_error(req, rc, "HostNotFound", "this relay does not know that host");
		return;
	}
	fan_xrpc_json(req, 200, host_json(&h));
}

/* ---- repos ---- */

struct repo_page {
	json_t *arr;
	const char *skip; /* the cursor's key: the previous page ended there */
	size_t skip_n;
	int limit, n, scanned;
	bool more;
	char last[BT_DID_MAX + 1];
};

static int repo_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct repo_page *pg = arg;
	if (kn == pg->skip_n && !memcmp(k, pg->skip, kn))
		return 0;
	size_t dn = kn - 2;
	if (++pg->scanned > MAX_SCAN) {
		pg->more = true;
		return 1;
	}
	struct bt_acct_rec a;
	char head[BT_CID_STR_MAX];
	bool skip = dn == 0 || dn > BT_DID_MAX || !acct_ok(v, vn, &a) || !head_str(&a, head, sizeof head);
	if (!skip && pg->n == pg->limit) {
		pg->more = true;
		return 1;
	}
	if (dn <= BT_DID_MAX) {
		/* The cursor moves past skipped records too, so a page never rescans them. */
		memcpy(pg->last, k + 2, dn);
		pg->last[dn] = 0;
	}
	if (skip)
		return 0;
	json_t *o = json_object();
	json_t *did = json_stringn(k + 2, dn), *rev = json_stringn(a.rev, a.rev_len);
	if (!did || !rev) {
		json_decref(did);
		json_decref(rev);
		json_decref(o);
		return 0;
	}
	json_object_set_new(o, "did", did);
	json_object_set_new(o, "head", json_string(head));
	json_object_set_new(o, "rev", rev);
	put_active(o, &a);
	json_array_append_new(pg->arr, o);
	pg->n++;
	return 0;
}

static void list_repos(struct bt_http_req *req)
{
	int limit;
	if (get_limit(req, 500, &limit) < 0)
		return;
	char cur[BT_DID_MAX + 1];
	int cn = bt_http_req_param(req, "cursor", cur, sizeof cur);
	if (cn == -ENOSPC || cn == 0) {
		fan_xrpc_error(req, 400, "InvalidRequest", "bad cursor");
		return;
	}
	if (view(req) < 0)
		return;
	char from[BT_DID_MAX + 2];
	size_t fn = 2;
	memcpy(from, "a/", 2);
	struct repo_page pg = { .arr = json_array(), .limit = limit };
	if (cn > 0) {
		fn = bt_key_acct(from, sizeof from, cur, (size_t)cn);
		pg.skip = from;
		pg.skip_n = fn;
	}
	int rc = bt_db_scan(fan.db, from, fn, "a/", 2, repo_cb, &pg);
	if (rc < 0) {
		json_decref(pg.arr);
		fan_xrpc_error(req, 500, "InternalServerError", "database read failed");
		return;
	}
	json_t *o = json_object();
	if (pg.more && pg.last[0])
		json_object_set_new(o, "cursor", json_string(pg.last));
	json_object_set_new(o, "repos", pg.arr);
	fan_xrpc_json(req, 200, o);
}

/* Looks the "did" parameter up: 0 with *a filled, or <0 after answering the error. */
static int find_repo(struct bt_http_req *req, char *did, size_t cap, struct bt_acct_rec *a)
{
	int dn = get_did(req, did, cap);
	if (dn < 0 || view(req) < 0)
		return -1;
	int rc = acct_get(did, (size_t)dn, a);
	if (rc < 0) {
		lookup_error(req, rc, "RepoNotFound", "this relay has not seen that repo");
		return -1;
	}
	return 0;
}

static void get_repo_status(struct bt_http_req *req)
{
	char did[DID_PARAM_MAX + 1];
	struct bt_acct_rec a;
	if (find_repo(req, did, sizeof did, &a) < 0)
		return;
	json_t *o = json_object();
	json_object_set_new(o, "did", json_string(did));
	put_active(o, &a);
	json_t *rev = jstr(a.rev, a.rev_len);
	if (rev)
		json_object_set_new(o, "rev", rev);
	fan_xrpc_json(req, 200, o);
}

static void get_latest_commit(struct bt_http_req *req)
{
	char did[DID_PARAM_MAX + 1], head[BT_CID_STR_MAX];
	struct bt_acct_rec a;
	if (find_repo(req, did, sizeof did, &a) < 0 || refuse_inactive(req, &a))
		return;
	json_t *rev = head_str(&a, head, sizeof head) ? json_stringn(a.rev, a.rev_len) : NULL;
	if (!rev) {
		fan_xrpc_error(req, 404, "RepoNotSynchronized", "no commit of this repo has been relayed yet");
		return;
	}
	json_t *o = json_object();
	json_object_set_new(o, "cid", json_string(head));
	json_object_set_new(o, "rev", rev);
	fan_xrpc_json(req, 200, o);
}

/* Appends s percent-encoded (RFC 3986 unreserved and ':' kept) to out; false if it does not fit. */
static bool url_enc(char *out, size_t cap, size_t *at, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
			    c == '.' || c == '_' || c == '~' || c == ':';
		if (*at + (keep ? 1 : 3) >= cap)
			return false;
		if (keep) {
			out[(*at)++] = (char)c;
		} else {
			out[(*at)++] = '%';
			out[(*at)++] = hex[c >> 4];
			out[(*at)++] = hex[c & 15];
		}
	}
	out[*at] = 0;
	return true;
}

static void get_repo(struct bt_http_req *req)
{
	char did[DID_PARAM_MAX + 1], since[64];
	struct bt_acct_rec a;
	int sn = bt_http_req_param(req, "since", since, sizeof since);
	if (sn == -ENOSPC || (sn >= 0 && !bt_syntax_tid(since, (size_t)sn))) {
		fan_xrpc_error(req, 400, "InvalidRequest", "since must be a rev (TID)");
		return;
	}
	if (find_repo(req, did, sizeof did, &a) < 0 || refuse_inactive(req, &a))
		return;
	struct bt_host_rec h;
	int rc = host_get(a.host_id, &h);
	if (rc < 0) {
		lookup_error(req, rc, "RepoNotFound", "the repo's host is not known");
		return;
	}
	bool local = h.host_len > 10 && !memcmp(h.host, "localhost:", 10);
	char loc[DID_PARAM_MAX * 3 + BT_HOST_MAX + 160];
	int n = snprintf(loc, sizeof loc, "Location: %s://%.*s/xrpc/com.atproto.sync.getRepo?did=",
			 local ? "http" : "https", (int)h.host_len, h.host);
	size_t at = (size_t)n;
	bool ok = url_enc(loc, sizeof loc, &at, did);
	if (ok && sn > 0) {
		ok = at + 7 < sizeof loc;
		if (ok) {
			memcpy(loc + at, "&since=", 7);
			at += 7;
			ok = url_enc(loc, sizeof loc, &at, since);
		}
	}
	if (!ok || at + 3 > sizeof loc) {
		fan_xrpc_error(req, 500, "InternalServerError", "redirect too long");
		return;
	}
	memcpy(loc + at, "\r\n", 3);
	static const char body[] = "{\"error\":\"Redirect\",\"message\":\"the repo is served by its PDS\"}";
	bt_http_respond_hdr(req, 302, "application/json", loc, body, sizeof body - 1);
}

/* ---- routing ---- */

static const struct {
	const char *nsid;
	void (*fn)(struct bt_http_req *req);
} routes[] = {
	{ "com.atproto.sync.listHosts", list_hosts },
	{ "com.atproto.sync.getHostStatus", get_host_status },
	{ "com.atproto.sync.listRepos", list_repos },
	{ "com.atproto.sync.getRepoStatus", get_repo_status },
	{ "com.atproto.sync.getLatestCommit", get_latest_commit },
	{ "com.atproto.sync.getRepo", get_repo },
};

bool fan_repo_handle(struct bt_http_req *req, const char *nsid)
{
	for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
		if (strcmp(nsid, routes[i].nsid) != 0)
			continue;
		const char *m = bt_http_req_method(req);
		if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0)
			fan_xrpc_error(req, 405, "MethodNotAllowed", "XRPC queries are GET");
		else
			routes[i].fn(req);
		return true;
	}
	return false;
}
