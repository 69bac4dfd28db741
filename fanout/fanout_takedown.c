/*
 * NAME
 *	fanout_takedown - taken-down accounts' events left out of replay; /admin/repo/takedowns
 * DESCRIPTION
 *	The store records a takedown as "k/" did -> struct bt_takedown_rec, whose seq T is the
 *	relay-made #account takendown (store/store_takedown.c).  Every event of that DID below T
 *	is skipped here, whether it comes from the broadcast ring or from RocksDB, until the store
 *	has erased it (an erased event, frame_len 0, is skipped the same way).  The records are
 *	held in memory, sorted by DID as RocksDB returns them, and reloaded from the read view
 *	(after a catch-up) whenever the store's BT_STAT_TAKEDOWN_GEN moved; the store moves it
 *	after it wrote the takedown and before it answered, so a replay that starts after the
 *	admin call returned skips the account.  Live events cost nothing: a seq at or above the
 *	highest T is never hidden (the store drops the account's events after T); below it, a
 *	ring frame's DID is read with bt_fh_peek.  Memory: one entry per takedown ever made.
 * DIAGNOSTICS
 *	A reload that fails keeps the previous list and is tried again at the next pump.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bt_db.h"
#include "bt_did.h"
#include "bt_fh.h"
#include "bt_http.h"
#include "bt_proc.h"
#include "fanout.h"

struct td {
	size_t off;   /* DID in pool */
	uint16_t dn;
	uint32_t flags;
	uint64_t seq;
};

static struct {
	struct td *v;
	size_t n, cap;
	char *pool;
	size_t pool_len, pool_cap;
	uint64_t max_seq; /* no seq at or above it is hidden */
	uint64_t gen;     /* BT_STAT_TAKEDOWN_GEN of the list held */
	bool loaded;
} tds;

static int load_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	(void)arg;
	struct bt_takedown_rec r;
	if (kn <= 2 || kn - 2 > BT_DID_MAX || vn != sizeof r)
		return 0;
	memcpy(&r, v, sizeof r);
	size_t dn = kn - 2;
	if (tds.n == tds.cap) {
		size_t cap = tds.cap ? tds.cap * 2 : 64;
		struct td *nv = realloc(tds.v, cap * sizeof *nv);
		if (!nv)
			return -1;
		tds.v = nv;
		tds.cap = cap;
	}
	if (tds.pool_len + dn > tds.pool_cap) {
		size_t cap = tds.pool_cap ? tds.pool_cap * 2 : 4096;
		while (cap < tds.pool_len + dn)
			cap *= 2;
		char *np = realloc(tds.pool, cap);
		if (!np)
			return -1;
		tds.pool = np;
		tds.pool_cap = cap;
	}
	memcpy(tds.pool + tds.pool_len, k + 2, dn);
	tds.v[tds.n++] = (struct td){ .off = tds.pool_len, .dn = (uint16_t)dn, .flags = r.flags, .seq = r.seq };
	tds.pool_len += dn;
	if (r.seq > tds.max_seq)
		tds.max_seq = r.seq;
	return 0;
}

void fan_td_refresh(void)
{
	struct bt_stats_page *pg = fan_store_page();
	uint64_t gen = pg ? bt_stat_get(pg, BT_STAT_TAKEDOWN_GEN) : 0;
	if (tds.loaded && gen == tds.gen)
		return;
	if (fan_db_ensure() < 0)
		return; /* no database yet: no takedown either */
	fan_db_catch_up(0);
	tds.n = 0;
	tds.pool_len = 0;
	tds.max_seq = 0;
	if (bt_db_scan(fan.db, "k/", 2, "k/", 2, load_cb, NULL) < 0)
		return; /* partial: tried again (max_seq covers what was read) */
	tds.gen = gen;
	tds.loaded = true;
}

static const struct td *td_find(const char *did, size_t dn)
{
	size_t lo = 0, hi = tds.n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct td *t = &tds.v[mid];
		int c = memcmp(tds.pool + t->off, did, t->dn < dn ? t->dn : dn);
		if (!c)
			c = (t->dn > dn) - (t->dn < dn);
		if (c == 0)
			return t;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

bool fan_td_hidden(const char *did, size_t dn, uint64_t seq)
{
	if (seq >= tds.max_seq)
		return false;
	const struct td *t = td_find(did, dn);
	return t && seq < t->seq;
}

bool fan_td_hidden_frame(const uint8_t *p, size_t n, uint64_t seq)
{
	if (seq >= tds.max_seq)
		return false;
	struct bt_fh_peek pk;
	if (bt_fh_peek(p, n, &pk) < 0 || !pk.did.n)
		return false;
	return fan_td_hidden((const char *)pk.did.p, pk.did.n, seq);
}

/* GET /admin/repo/takedowns[?cursor=DID][&limit=N]: the takedowns in force, by DID, as indigo
   ({dids, cursor}); the cursor is the last DID of a full page (indigo's is an account id). */
void fan_td_route(struct bt_http_req *req)
{
	fan_td_refresh();
	char cursor[BT_DID_MAX + 1] = "", lb[16];
	long limit = 500;
	int cn = bt_http_req_param(req, "cursor", cursor, sizeof cursor);
	if (cn == -ENOENT)
		cn = 0;
	if (cn < 0 || (cn > 0 && !bt_did_valid(cursor, (size_t)cn))) {
		fan_xrpc_error(req, 400, "BadRequest", "invalid cursor param");
		return;
	}
	if (bt_http_req_param(req, "limit", lb, sizeof lb) > 0) {
		char *end;
		limit = strtol(lb, &end, 10);
		if (*end || limit < 1 || limit > 1000) {
			fan_xrpc_error(req, 400, "BadRequest", "limit must be an integer from 1 to 1000");
			return;
		}
	}
	json_t *dids = json_array();
	const struct td *last = NULL;
	for (size_t i = 0; i < tds.n && json_array_size(dids) < (size_t)limit; i++) {
		const struct td *t = &tds.v[i];
		if (!(t->flags & BT_TAKEDOWN_IN_FORCE))
			continue;
		if (cn > 0) {
			size_t m = t->dn < (size_t)cn ? t->dn : (size_t)cn;
			int c = memcmp(tds.pool + t->off, cursor, m);
			if (c < 0 || (c == 0 && t->dn <= (size_t)cn))
				continue; /* at or before the cursor */
		}
		json_array_append_new(dids, json_stringn(tds.pool + t->off, t->dn));
		last = t;
	}
	json_t *o = json_pack("{s:o}", "dids", dids);
	if (last && json_array_size(dids) == (size_t)limit)
		json_object_set_new(o, "cursor", json_stringn(tds.pool + last->off, last->dn));
	fan_xrpc_json(req, 200, o);
}

void fan_td_fini(void)
{
	free(tds.v);
	free(tds.pool);
	memset(&tds, 0, sizeof tds);
}
