/*
 * NAME
 *	store_admin - the admission state the store persists for ingest: domain bans, host bans,
 *	the crawl switch, the new-hosts-per-day limit and today's count
 * DESCRIPTION
 *	Ingest owns admission (ingest/ingest_admit.c) but may not write RocksDB, so every change
 *	it makes is written here before ingest answers the operator; at start ingest loads it all
 *	(op "admission").  Keys (common/bt_db.h):
 *	  "d/" domain     empty: a banned domain (the domain and every subdomain)
 *	  "m/crawl"       be64 flags (1 = new crawls disabled), be64 per-day limit + 1 (0 = not
 *	                  set: RELAY_NEW_HOSTS_PER_DAY_LIMIT), be64 UTC day, be64 new hosts that day
 *	A host ban is the host record's status (banned).  The per-day count moves in the same
 *	write that creates the host (addHost with count_new), so a restart neither resets it nor
 *	counts a host twice; over the limit the store refuses to create the host.
 *	Control ops (docs/ctl.md): admission, banDomain, unbanDomain, setCrawl, banHost, unbanHost.
 * DIAGNOSTICS
 *	{error, status, message} replies; a failed write is StoreFailed (503).
 */
#include "bt_ctl.h"
#include "bt_db.h"
#include "bt_host.h"
#include "bt_log.h"
#include "bt_params.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOMAIN_MAX 256

static struct {
	bool loaded;
	bool disabled;
	bool limit_set;
	uint64_t limit;
	uint64_t day, count;
} crawl;

static uint64_t today(void)
{
	return bt_wall_ms() / 86400000u;
}

static void crawl_load(struct bt_db *db)
{
	if (crawl.loaded)
		return;
	crawl.loaded = true;
	uint8_t v[32];
	if (bt_db_get(db, "m/crawl", 7, v, sizeof v) != (int)sizeof v)
		return;
	crawl.disabled = bt_be64_get(v) & 1;
	uint64_t l = bt_be64_get(v + 8);
	crawl.limit_set = l > 0;
	crawl.limit = l ? l - 1 : 0;
	crawl.day = bt_be64_get(v + 16);
	crawl.count = bt_be64_get(v + 24);
}

static void crawl_put(struct bt_db_batch *b)
{
	uint8_t v[32];
	bt_be64_put(v, crawl.disabled ? 1 : 0);
	bt_be64_put(v + 8, crawl.limit_set ? crawl.limit + 1 : 0);
	bt_be64_put(v + 16, crawl.day);
	bt_be64_put(v + 24, crawl.count);
	bt_db_batch_put(b, "m/crawl", 7, v, sizeof v);
}

static uint64_t crawl_limit(void)
{
	return crawl.limit_set ? crawl.limit : (uint64_t)bt_cfg.new_hosts_per_day;
}

static uint64_t crawl_today(void)
{
	return crawl.day == today() ? crawl.count : 0;
}

static json_t *err(int status, const char *error, const char *message)
{
	return json_pack("{s:b,s:i,s:s,s:s}", "ok", 0, "status", status, "error", error, "message", message);
}

static int write_one(struct bt_db *db, struct bt_db_batch *b)
{
	int rc = bt_db_write(db, b);
	bt_db_batch_free(&b);
	return rc;
}

static int scan_domain(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	if (kn > 2 && kn - 2 < DOMAIN_MAX)
		json_array_append_new(arg, json_stringn(k + 2, kn - 2));
	return 0;
}

static json_t *host_reply(const struct sto_host *h)
{
	return json_pack("{s:b,s:i,s:s#,s:s,s:I,s:I}", "ok", 1, "id", (int)h->rec.host_id, "host", h->rec.host,
			 (int)h->rec.host_len, "status", bt_host_status_name(h->rec.status), "cursor",
			 (json_int_t)h->rec.cursor, "epoch", (json_int_t)sto_host_epoch(h));
}

/* The name of a host op, as ingest normalised it; NULL if unusable. */
static const char *host_arg(json_t *msg)
{
	const char *name = json_string_value(json_object_get(msg, "hostname"));
	return name && *name && strlen(name) < BT_HOST_MAX ? name : NULL;
}

int sto_admin_new_host(struct bt_db *db, json_t *msg, json_t **refusal)
{
	crawl_load(db);
	*refusal = NULL;
	if (!json_is_true(json_object_get(msg, "count_new")))
		return 0;
	if (crawl_today() >= crawl_limit()) {
		*refusal = err(429, "RateLimitExceeded", "new hosts per day limit reached");
		return -1;
	}
	return 1;
}

void sto_admin_host_added(struct bt_db *db, struct sto_host *h, json_t *msg, int counted, struct bt_db_batch *b)
{
	json_t *hint = json_object_get(msg, "cursor");
	if (json_is_integer(hint) && json_integer_value(hint) > 0)
		sto_host_set_start(h, (uint64_t)json_integer_value(hint), b);
	if (counted > 0) {
		uint64_t d = today();
		if (crawl.day != d) {
			crawl.day = d;
			crawl.count = 0;
		}
		crawl.count++;
		crawl_put(b);
	}
}

uint64_t sto_admin_new_today(struct bt_db *db)
{
	crawl_load(db);
	return crawl_today();
}

bool sto_admin_ctl(struct bt_db *db, struct sto_hosts *hs, struct bt_ctl_req *req, const char *op, json_t *msg)
{
	crawl_load(db);
	if (!strcmp(op, "admission")) {
		json_t *domains = json_array(), *banned = json_array();
		bt_db_scan(db, "d/", 2, "d/", 2, scan_domain, domains);
		for (uint32_t i = 1; i < hs->n; i++)
			if (hs->v[i] && hs->v[i]->rec.status == BT_HOST_BANNED)
				json_array_append_new(banned, json_stringn(hs->v[i]->rec.host, hs->v[i]->rec.host_len));
		bt_ctl_reply(req, json_pack("{s:b,s:b,s:I,s:b,s:I,s:o,s:o}", "ok", 1, "enabled", !crawl.disabled,
					    "per_day_limit", (json_int_t)crawl_limit(), "per_day_limit_set",
					    crawl.limit_set, "new_today", (json_int_t)crawl_today(), "domains", domains,
					    "banned_hosts", banned));
		return true;
	}
	if (!strcmp(op, "banDomain") || !strcmp(op, "unbanDomain")) {
		char d[DOMAIN_MAX];
		const char *why = NULL;
		if (bt_host_domain_normalize(json_string_value(json_object_get(msg, "domain")), d, sizeof d, &why) < 0) {
			bt_ctl_reply(req, err(400, "BadRequest", why));
			return true;
		}
		char k[DOMAIN_MAX + 2];
		int kn = snprintf(k, sizeof k, "d/%s", d);
		char probe[1];
		bool existed = bt_db_get(db, k, (size_t)kn, probe, 0) >= 0;
		struct bt_db_batch *b = bt_db_batch_new();
		if (op[0] == 'b')
			bt_db_batch_put(b, k, (size_t)kn, "", 0);
		else
			bt_db_batch_del(b, k, (size_t)kn);
		if (write_one(db, b) < 0) {
			bt_ctl_reply(req, err(503, "StoreFailed", "the ban could not be written"));
			return true;
		}
		BT_INFO("domain %s %s", d, op[0] == 'b' ? "banned" : "unbanned");
		bt_ctl_reply(req, json_pack("{s:b,s:s,s:b}", "ok", 1, "domain", d, "existed", existed));
		return true;
	}
	if (!strcmp(op, "setCrawl")) {
		json_t *en = json_object_get(msg, "enabled"), *lim = json_object_get(msg, "per_day_limit");
		if ((en && !json_is_boolean(en)) || (lim && (!json_is_integer(lim) || json_integer_value(lim) < 0))) {
			bt_ctl_reply(req, err(400, "BadRequest", "enabled must be a boolean, per_day_limit an integer >= 0"));
			return true;
		}
		if (en)
			crawl.disabled = !json_is_true(en);
		if (lim) {
			crawl.limit_set = true;
			crawl.limit = (uint64_t)json_integer_value(lim);
		}
		struct bt_db_batch *b = bt_db_batch_new();
		crawl_put(b);
		if (write_one(db, b) < 0) {
			crawl.loaded = false; /* reload what is really written */
			bt_ctl_reply(req, err(503, "StoreFailed", "the setting could not be written"));
			return true;
		}
		bt_ctl_reply(req, json_pack("{s:b,s:b,s:I,s:I}", "ok", 1, "enabled", !crawl.disabled, "per_day_limit",
					    (json_int_t)crawl_limit(), "new_today", (json_int_t)crawl_today()));
		return true;
	}
	if (!strcmp(op, "banHost") || !strcmp(op, "unbanHost")) {
		bool ban = op[0] == 'b';
		const char *name = host_arg(msg);
		if (!name) {
			bt_ctl_reply(req, err(400, "BadRequest", "hostname missing"));
			return true;
		}
		struct sto_host *h = sto_host_find(hs, name, strlen(name));
		struct bt_db_batch *b = bt_db_batch_new();
		if (!h && !ban) {
			bt_db_batch_free(&b);
			bt_ctl_reply(req, err(404, "HostNotFound", "this relay does not know that host"));
			return true;
		}
		if (!h && !(h = sto_host_add(hs, name, strlen(name), b))) {
			bt_db_batch_free(&b);
			bt_ctl_reply(req, err(503, "StoreFailed", "the host could not be added"));
			return true;
		}
		uint32_t was = h->rec.status;
		if (ban)
			h->rec.status = BT_HOST_BANNED;
		else if (h->rec.status == BT_HOST_BANNED)
			h->rec.status = BT_HOST_ACTIVE;
		sto_host_flush(h, b);
		if (write_one(db, b) < 0) {
			h->rec.status = was;
			bt_ctl_reply(req, err(503, "StoreFailed", "the host status could not be written"));
			return true;
		}
		BT_INFO("host %s %s", name, ban ? "banned" : "unbanned");
		bt_ctl_reply(req, host_reply(h));
		return true;
	}
	return false;
}
