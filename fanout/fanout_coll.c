/*
 * NAME
 *	fanout_coll - the collection index queries: listReposByCollection and /v1/listCollections
 * DESCRIPTION
 *	Answered from the fanout's RocksDB view of the index the store keeps (store/store_coll.c,
 *	keys in common/bt_db.h).  Runs on the fanout's loop thread; a page is one bounded prefix
 *	scan (at most limit + 1 keys).
 *
 *	  com.atproto.sync.listReposByCollection?collection=&limit=&cursor=
 *	                   the lexicon's: collection (NSID) required, limit 1..2000 (default
 *	                   500), cursor = the last DID of the previous page; {cursor?, repos:
 *	                   [{did}]} in DID order ("x/" coll \0 did).
 *	  /v1/listCollections?c=&cursor=&limit=
 *	                   indigo collectiondir's: {collections: {nsid: accounts}, cursor} in
 *	                   NSID order ("y/" \0 coll); limit clamped to 50..1000 (default 500; not
 *	                   a number: the default); cursor = the last NSID of the previous page,
 *	                   "" on the last page; up to 20 repeated c= give just those collections
 *	                   (no paging).  Unlike collectiondir every collection is listed (it hides
 *	                   those with fewer than 5 accounts by default) and the counts are exact
 *	                   and current, not a cached computation.
 * DIAGNOSTICS
 *	Bad parameters of listReposByCollection: 400 InvalidRequest; more than 20 c=: 400
 *	BadRequest.  The view not open yet: 503.  A RocksDB error: 500.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bt_db.h"
#include "bt_http.h"
#include "bt_pipe.h"
#include "bt_syntax.h"
#include "fanout.h"

#define CATCH_UP_MS 20
#define COLL_MAX 317    /* NSID length limit */
#define C_PARAMS 20     /* c= values of listCollections */

static int view(struct bt_http_req *req)
{
	if (fan_db_ensure() < 0) {
		fan_xrpc_error(req, 503, "ServiceUnavailable", "the relay database is not available yet");
		return -1;
	}
	fan_db_catch_up(CATCH_UP_MS);
	return 0;
}

/* The decimal integer parameter "limit": its value, -ENOENT if absent, -EINVAL if not a number. */
static long param_int(struct bt_http_req *req)
{
	char b[16];
	int n = bt_http_req_param(req, "limit", b, sizeof b);
	if (n == -ENOENT)
		return -ENOENT;
	long v = 0;
	bool ok = n > 0 && n <= 9;
	for (int i = 0; ok && i < n; i++) {
		if (b[i] < '0' || b[i] > '9')
			ok = false;
		else
			v = v * 10 + (b[i] - '0');
	}
	return ok ? v : -EINVAL;
}

struct did_page {
	json_t *arr;
	const char *skip;
	size_t skip_n, pn; /* the cursor's key; the prefix length ("x/" coll \0) */
	int n, limit;
	bool more;
	char last[BT_DID_MAX + 1];
};

static int did_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct did_page *pg = arg;
	if (kn == pg->skip_n && !memcmp(k, pg->skip, kn))
		return 0;
	size_t dn = kn - pg->pn;
	if (dn == 0 || dn > BT_DID_MAX)
		return 0;
	if (pg->n == pg->limit) {
		pg->more = true;
		return 1;
	}
	json_t *d = json_stringn(k + pg->pn, dn);
	if (!d)
		return 0;
	memcpy(pg->last, k + pg->pn, dn);
	pg->last[dn] = 0;
	json_array_append_new(pg->arr, json_pack("{s:o}", "did", d));
	pg->n++;
	return 0;
}

static void list_repos_by_collection(struct bt_http_req *req)
{
	char coll[COLL_MAX + 2], cur[BT_DID_MAX + 2];
	int cn = bt_http_req_param(req, "collection", coll, sizeof coll);
	if (cn == -ENOENT) {
		fan_xrpc_error(req, 400, "InvalidRequest", "collection is required");
		return;
	}
	if (cn <= 0 || cn > COLL_MAX || !bt_syntax_nsid(coll, (size_t)cn)) {
		fan_xrpc_error(req, 400, "InvalidRequest", "collection must be an NSID");
		return;
	}
	long limit = param_int(req);
	if (limit == -ENOENT)
		limit = 500;
	if (limit < 1 || limit > 2000) {
		fan_xrpc_error(req, 400, "InvalidRequest", "limit must be an integer from 1 to 2000");
		return;
	}
	int un = bt_http_req_param(req, "cursor", cur, sizeof cur);
	if (un == -ENOSPC || un == 0 || (un > 0 && (un > BT_DID_MAX || !bt_syntax_did(cur, (size_t)un)))) {
		fan_xrpc_error(req, 400, "InvalidRequest", "bad cursor");
		return;
	}
	if (view(req) < 0)
		return;
	char from[2 + COLL_MAX + 1 + BT_DID_MAX];
	memcpy(from, "x/", 2);
	memcpy(from + 2, coll, (size_t)cn);
	from[2 + cn] = 0;
	size_t pn = 3 + (size_t)cn, fn = pn;
	struct did_page pg = { .arr = json_array(), .pn = pn, .limit = (int)limit };
	if (un > 0) {
		memcpy(from + pn, cur, (size_t)un);
		fn = pn + (size_t)un;
		pg.skip = from;
		pg.skip_n = fn;
	}
	if (bt_db_scan(fan.db, from, fn, from, pn, did_cb, &pg) < 0) {
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

struct coll_page {
	json_t *obj;
	const char *skip;
	size_t skip_n;
	int n, limit;
	bool more;
	char last[COLL_MAX + 1];
};

static bool count_of(const char *v, size_t vn, json_int_t *out)
{
	if (vn != 8)
		return false;
	uint64_t c = bt_be64_get((const uint8_t *)v);
	*out = c > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)c;
	return true;
}

static int coll_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct coll_page *pg = arg;
	if (kn == pg->skip_n && !memcmp(k, pg->skip, kn))
		return 0;
	json_int_t c;
	if (kn <= 3 || kn - 3 > COLL_MAX || !count_of(v, vn, &c))
		return 0;
	if (pg->n == pg->limit) {
		pg->more = true;
		return 1;
	}
	memcpy(pg->last, k + 3, kn - 3);
	pg->last[kn - 3] = 0;
	json_object_set_new(pg->obj, pg->last, json_integer(c));
	pg->n++;
	return 0;
}

/* Decodes %XX and + of a query value s[0..n) into out (cap); its length or -1. */
static int url_dec(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && i + 2 < n) {
			char h[3] = { s[i + 1], s[i + 2], 0 };
			char *end;
			long v = strtol(h, &end, 16);
			if (*end)
				return -1;
			c = (char)v;
			i += 2;
		} else if (c == '%') {
			return -1;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = c;
	}
	out[o] = 0;
	return (int)o;
}

static void list_collections(struct bt_http_req *req)
{
	/* The c= values, from the raw query (bt_http_req_param gives only the first). */
	char cs[C_PARAMS][COLL_MAX + 1];
	int n_c = 0;
	for (const char *q = bt_http_req_query(req); q && *q;) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		if (len >= 2 && q[0] == 'c' && q[1] == '=') {
			if (n_c == C_PARAMS) {
				fan_xrpc_error(req, 400, "BadRequest", "at most 20 c parameters");
				return;
			}
			if (url_dec(q + 2, len - 2, cs[n_c], sizeof cs[n_c]) > 0)
				n_c++;
		}
		q = amp ? amp + 1 : q + len;
	}
	long limit = param_int(req);
	limit = limit < 0 ? 500 : limit < 50 ? 50 : limit > 1000 ? 1000 : limit;
	char cur[COLL_MAX + 2];
	int un = bt_http_req_param(req, "cursor", cur, sizeof cur);
	if (un == -ENOSPC)
		un = COLL_MAX + 1; /* longer than any NSID: after every one of them */
	if (view(req) < 0)
		return;
	json_t *obj = json_object();
	char k[3 + COLL_MAX + 2];
	memcpy(k, "y/", 2);
	k[2] = 0;
	const char *cursor = "";
	struct coll_page pg = { .obj = obj, .limit = (int)limit };
	if (n_c) {
		for (int i = 0; i < n_c; i++) {
			size_t cn = strlen(cs[i]);
			if (cn > COLL_MAX)
				continue;
			memcpy(k + 3, cs[i], cn);
			uint8_t v[8];
			json_int_t c;
			if (bt_db_get(fan.db, k, 3 + cn, v, sizeof v) == 8 && count_of((const char *)v, 8, &c))
				json_object_set_new(obj, cs[i], json_integer(c));
		}
	} else {
		size_t fn = 3;
		if (un > 0) {
			memcpy(k + 3, cur, (size_t)un);
			fn = 3 + (size_t)un;
			pg.skip = k;
			pg.skip_n = fn;
		}
		if (bt_db_scan(fan.db, k, fn, "y/\0", 3, coll_cb, &pg) < 0) {
			json_decref(obj);
			fan_xrpc_error(req, 500, "DatabaseError", "failed to read stats");
			return;
		}
		if (pg.more)
			cursor = pg.last;
	}
	fan_xrpc_json(req, 200, json_pack("{s:o,s:s}", "collections", obj, "cursor", cursor));
}

bool fan_coll_handle(struct bt_http_req *req, const char *path)
{
	bool xrpc = !strcmp(path, "/xrpc/com.atproto.sync.listReposByCollection");
	if (!xrpc && strcmp(path, "/v1/listCollections") != 0)
		return false;
	const char *m = bt_http_req_method(req);
	if (strcmp(m, "GET") != 0)
		fan_xrpc_error(req, 405, "MethodNotAllowed", "a GET");
	else if (xrpc)
		list_repos_by_collection(req);
	else
		list_collections(req);
	return true;
}
