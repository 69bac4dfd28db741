/*
 * NAME
 *	ingest_admit - host admission state and the operator's control ops (bans, crawl switch,
 *	per-day limit, kill, unblock)
 * DESCRIPTION
 *	Ingest owns admission: it keeps in memory the domain bans (the store's, plus the static
 *	RELAY_BANNED_DOMAINS), the banned hosts, the crawl switch and the per-day limit with
 *	today's count, so a requestCrawl is refused before anything is fetched or stored
 *	(ingest_crawl.c: syntax, insecure rule, domain and host bans, switch, per-day limit, then
 *	the probe).  The store persists all of it (store/store_admin.c): every change is written
 *	there first, and applied here only once the store answered, so it survives a restart and
 *	an operator is never told "done" for a change that is lost.  A ban takes effect at once:
 *	the host (or every host under the domain) is disconnected and leaves the table.
 *	Ops (docs/ctl.md): requestCrawl, block, unblock, killUpstream, banDomain, unbanDomain,
 *	domainBans, setCrawl, crawl.
 * DIAGNOSTICS
 *	Refusals are {ok:false, status, error, message}; a store that does not answer gives 503.
 */
#include "bt_ctl.h"
#include "bt_host.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_MS 3000
#define MAX_BANS 100000

struct strset {
	char **v;
	size_t n, cap;
};

static struct {
	bool enabled;
	uint64_t per_day_limit;
	uint64_t new_today, day; /* as the store last counted, and its UTC day */
	unsigned probing_new;    /* probes of hosts not known yet, in flight (reserve the limit) */
	struct strset domains;   /* the store's domain bans (RELAY_BANNED_DOMAINS apart) */
	struct strset banned;    /* hosts whose status is banned */
} adm = { .enabled = true };

static char store_ep[600];

static ssize_t set_find(const struct strset *s, const char *x)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i], x))
			return (ssize_t)i;
	return -1;
}

static void set_add(struct strset *s, const char *x)
{
	if (set_find(s, x) >= 0 || s->n >= MAX_BANS)
		return;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **nv = realloc(s->v, cap * sizeof *nv);
		if (!nv)
			return;
		s->v = nv;
		s->cap = cap;
	}
	char *d = strdup(x);
	if (d)
		s->v[s->n++] = d;
}

static void set_del(struct strset *s, const char *x)
{
	ssize_t i = set_find(s, x);
	if (i < 0)
		return;
	free(s->v[i]);
	s->v[i] = s->v[--s->n];
}

static uint64_t today(void)
{
	return bt_wall_ms() / 86400000u;
}

static uint64_t new_today(void)
{
	return adm.day == today() ? adm.new_today : 0;
}

static void note_count(json_t *r)
{
	json_t *n = json_object_get(r, "new_today");
	if (json_is_integer(n)) {
		adm.new_today = (uint64_t)json_integer_value(n);
		adm.day = today();
	}
}

static void apply_crawl(json_t *r)
{
	if (json_is_boolean(json_object_get(r, "enabled")))
		adm.enabled = json_is_true(json_object_get(r, "enabled"));
	if (json_is_integer(json_object_get(r, "per_day_limit")))
		adm.per_day_limit = (uint64_t)json_integer_value(json_object_get(r, "per_day_limit"));
	note_count(r);
}

void ing_admit_load(void)
{
	bt_params_ipc("store", store_ep, sizeof store_ep);
	adm.per_day_limit = (uint64_t)bt_cfg.new_hosts_per_day;
	json_t *r = ing_store_wait("admission");
	if (!r)
		return;
	apply_crawl(r);
	size_t i;
	json_t *it;
	json_array_foreach(json_object_get(r, "domains"), i, it)
		if (json_is_string(it))
			set_add(&adm.domains, json_string_value(it));
	json_array_foreach(json_object_get(r, "banned_hosts"), i, it)
		if (json_is_string(it))
			set_add(&adm.banned, json_string_value(it));
	BT_INFO("admission: new crawls %s, %llu new hosts a day (%llu today), %zu domain bans, %zu banned hosts",
		adm.enabled ? "enabled" : "disabled", (unsigned long long)adm.per_day_limit,
		(unsigned long long)new_today(), adm.domains.n, adm.banned.n);
	json_decref(r);
}

bool ing_admit_domain_banned(const char *host)
{
	if (bt_host_banned(host, bt_cfg.banned_domains))
		return true;
	for (size_t i = 0; i < adm.domains.n; i++)
		if (bt_host_under(host, adm.domains.v[i]))
			return true;
	return false;
}

bool ing_admit_blocked(const char *host)
{
	return ing_admit_domain_banned(host) || set_find(&adm.banned, host) >= 0;
}

const char *ing_admit_check(const char *host, bool known, bool admin, int *status, const char **message)
{
	*status = 400;
	if (ing_admit_domain_banned(host)) {
		*message = "this host's domain is banned from this relay";
		return "DomainBanned";
	}
	if (set_find(&adm.banned, host) >= 0) {
		*message = "this host is blocked on this relay";
		return "HostBanned";
	}
	if (!adm.enabled && !admin) {
		*status = 403;
		*message = "new crawls are disabled on this relay (public requestCrawl not allowed)";
		return "Forbidden";
	}
	if (!known && !admin && new_today() + adm.probing_new >= adm.per_day_limit) {
		*status = 429;
		*message = "new hosts per day limit reached";
		return "RateLimitExceeded";
	}
	return NULL;
}

void ing_admit_probe_started(void)
{
	adm.probing_new++;
}

void ing_admit_probe_done(json_t *store_reply)
{
	if (adm.probing_new)
		adm.probing_new--;
	if (store_reply)
		note_count(store_reply);
}

static void reply_err(struct bt_ctl_req *req, int status, const char *error, const char *message)
{
	bt_ctl_reply(req, json_pack("{s:b,s:i,s:s,s:s}", "ok", 0, "status", status, "error", error, "message",
				    message ? message : ""));
}

/* A store reply that is a refusal is passed on as it is; NULL is a 503.  True if it was one. */
static bool store_refused(struct bt_ctl_req *req, json_t *r)
{
	if (!r) {
		reply_err(req, 503, "ServiceUnavailable", "the store did not answer");
		return true;
	}
	if (json_is_false(json_object_get(r, "ok")) || json_object_get(r, "error")) {
		bt_ctl_reply(req, json_incref(r));
		return true;
	}
	return false;
}

static bool host_arg(struct bt_ctl_req *req, json_t *msg, char *norm, bool *insecure)
{
	const char *name = json_string_value(json_object_get(msg, "hostname"));
	const char *why = "hostname missing";
	if (!name || bt_host_normalize(name, bt_cfg.allow_insecure_hosts, norm, BT_HOST_MAX, insecure, &why) < 0) {
		reply_err(req, 400, "BadRequest", why);
		return false;
	}
	return true;
}

/* Disconnect (and drop from the table) every host under domain; how many. */
static int drop_domain(const char *domain)
{
	size_t n;
	struct ing_host **hs = ing_hosts(&n);
	char (*names)[BT_HOST_MAX] = n ? calloc(n, BT_HOST_MAX) : NULL;
	int k = 0;
	for (size_t i = 0; names && i < n; i++)
		if (bt_host_under(hs[i]->name, domain))
			snprintf(names[k++], BT_HOST_MAX, "%s", hs[i]->name);
	for (int i = 0; i < k; i++)
		ing_host_drop(names[i], NULL);
	free(names);
	return k;
}

/* After a ban is lifted: the hosts the store knows under domain (or the one host), not banned
   otherwise, are subscribed again from their committed cursors.  How many. */
static int resubscribe(const char *domain, const char *only)
{
	json_t *r = bt_ctl_call(store_ep, json_pack("{s:s}", "op", "hosts"), STORE_MS);
	size_t i;
	json_t *it;
	int k = 0;
	json_array_foreach(json_object_get(r, "hosts"), i, it)
	{
		const char *name = json_string_value(json_object_get(it, "host"));
		const char *st = json_string_value(json_object_get(it, "status"));
		char norm[BT_HOST_MAX];
		bool insecure;
		if (!name || (st && !strcmp(st, "banned")) ||
		    bt_host_normalize(name, bt_cfg.allow_insecure_hosts, norm, sizeof norm, &insecure, NULL) < 0)
			continue;
		if ((only && strcmp(norm, only)) || (domain && !bt_host_under(norm, domain)) || ing_admit_blocked(norm) ||
		    ing_host_find(norm))
			continue;
		uint64_t cur = (uint64_t)json_integer_value(json_object_get(it, "cursor"));
		struct ing_host *h = ing_host_add((uint32_t)json_integer_value(json_object_get(it, "id")), norm, insecure,
						  cur, cur > 0, (uint32_t)json_integer_value(json_object_get(it, "epoch")));
		if (h) {
			ing_host_connect_now(h);
			k++;
		}
	}
	json_decref(r);
	return k;
}

/* Writes the ban of norm to the store, then applies it here: false if it answered 503/refused. */
static bool ban_host(struct bt_ctl_req *req, const char *norm)
{
	json_t *r = bt_ctl_call(store_ep, json_pack("{s:s,s:s}", "op", "banHost", "hostname", norm), STORE_MS);
	if (store_refused(req, r)) {
		json_decref(r);
		return false;
	}
	json_decref(r);
	set_add(&adm.banned, norm);
	return true;
}

static void op_request_crawl(struct bt_ctl_req *req, json_t *msg)
{
	struct ing_crawl_opts o = { .admin = json_is_true(json_object_get(msg, "admin")),
				    .no_probe = json_is_true(json_object_get(msg, "noProbe")) };
	json_t *hint = json_object_get(msg, "cursorHint");
	if (hint && !json_is_null(hint)) {
		if (!json_is_integer(hint) || json_integer_value(hint) < 0) {
			reply_err(req, 400, "InvalidRequest", "cursorHint must be an integer >= 0");
			return;
		}
		o.cursor_hint = (uint64_t)json_integer_value(hint);
		o.has_hint = true;
	}
	ing_crawl_request(req, json_string_value(json_object_get(msg, "hostname")), &o);
}

bool ing_admin_ctl(struct bt_ctl_req *req, const char *op, json_t *msg)
{
	char norm[BT_HOST_MAX];
	bool insecure;
	if (!strcmp(op, "requestCrawl")) {
		op_request_crawl(req, msg);
		return true;
	}
	if (!strcmp(op, "block")) {
		if (!host_arg(req, msg, norm, &insecure) || !ban_host(req, norm))
			return true;
		bool was = ing_host_drop(norm, "banned") == 0;
		BT_INFO("%s: blocked by the operator%s", norm, was ? " (disconnected)" : "");
		bt_ctl_reply(req, json_pack("{s:b,s:s,s:b}", "ok", 1, "host", norm, "disconnected", was));
		return true;
	}
	if (!strcmp(op, "unblock")) {
		if (!host_arg(req, msg, norm, &insecure))
			return true;
		json_t *r = bt_ctl_call(store_ep, json_pack("{s:s,s:s}", "op", "unbanHost", "hostname", norm), STORE_MS);
		if (store_refused(req, r)) {
			json_decref(r);
			return true;
		}
		set_del(&adm.banned, norm);
		int k = resubscribe(NULL, norm);
		BT_INFO("%s: unblocked by the operator%s", norm, k ? " (subscribed again)" : "");
		json_object_set_new(r, "resubscribed", json_boolean(k > 0));
		bt_ctl_reply(req, r);
		return true;
	}
	if (!strcmp(op, "killUpstream")) {
		if (!host_arg(req, msg, norm, &insecure))
			return true;
		bool ban = json_is_true(json_object_get(msg, "block"));
		if (!ing_host_find(norm)) {
			reply_err(req, 400, "BadRequest", "no active connection to given host");
			return true;
		}
		if (ban && !ban_host(req, norm))
			return true;
		ing_host_drop(norm, ban ? "banned" : NULL);
		BT_INFO("%s: upstream killed by the operator%s", norm, ban ? " and blocked" : "");
		bt_ctl_reply(req, json_pack("{s:b,s:s,s:b}", "ok", 1, "host", norm, "blocked", ban));
		return true;
	}
	if (!strcmp(op, "banDomain") || !strcmp(op, "unbanDomain")) {
		bool ban = op[0] == 'b';
		json_t *d = json_object_get(msg, "domain");
		char dom[256];
		const char *why = NULL;
		if (bt_host_domain_normalize(json_string_value(d), dom, sizeof dom, &why) < 0) {
			reply_err(req, 400, "BadRequest", why);
			return true;
		}
		if (!ban && bt_host_banned(dom, bt_cfg.banned_domains) && set_find(&adm.domains, dom) < 0) {
			reply_err(req, 400, "BadRequest", "this domain is banned by RELAY_BANNED_DOMAINS: remove it there");
			return true;
		}
		json_t *r = bt_ctl_call(store_ep, json_pack("{s:s,s:s}", "op", op, "domain", dom), STORE_MS);
		if (store_refused(req, r)) {
			json_decref(r);
			return true;
		}
		int k;
		if (ban) {
			set_add(&adm.domains, dom);
			k = drop_domain(dom);
		} else {
			set_del(&adm.domains, dom);
			k = resubscribe(dom, NULL);
		}
		BT_INFO("domain %s %s by the operator: %d hosts %s", dom, ban ? "banned" : "unbanned", k,
			ban ? "disconnected" : "subscribed again");
		json_object_set_new(r, ban ? "disconnected" : "resubscribed", json_integer(k));
		bt_ctl_reply(req, r);
		return true;
	}
	if (!strcmp(op, "domainBans")) {
		json_t *all = json_array(), *st = json_array();
		for (size_t i = 0; i < adm.domains.n; i++)
			json_array_append_new(all, json_string(adm.domains.v[i]));
		char list[sizeof bt_cfg.banned_domains], *save = NULL;
		snprintf(list, sizeof list, "%s", bt_cfg.banned_domains);
		for (char *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
			json_array_append_new(st, json_string(t));
			if (set_find(&adm.domains, t) < 0)
				json_array_append_new(all, json_string(t));
		}
		bt_ctl_reply(req, json_pack("{s:o,s:o}", "banned_domains", all, "static_domains", st));
		return true;
	}
	if (!strcmp(op, "setCrawl")) {
		json_t *m = json_pack("{s:s}", "op", "setCrawl");
		if (json_object_get(msg, "enabled"))
			json_object_set(m, "enabled", json_object_get(msg, "enabled"));
		if (json_object_get(msg, "per_day_limit"))
			json_object_set(m, "per_day_limit", json_object_get(msg, "per_day_limit"));
		json_t *r = bt_ctl_call(store_ep, m, STORE_MS);
		if (store_refused(req, r)) {
			json_decref(r);
			return true;
		}
		apply_crawl(r);
		BT_INFO("admission: new crawls %s, %llu new hosts a day", adm.enabled ? "enabled" : "disabled",
			(unsigned long long)adm.per_day_limit);
		bt_ctl_reply(req, r);
		return true;
	}
	if (!strcmp(op, "crawl")) {
		bt_ctl_reply(req, json_pack("{s:b,s:b,s:I,s:I}", "ok", 1, "enabled", adm.enabled, "per_day_limit",
					    (json_int_t)adm.per_day_limit, "new_today", (json_int_t)new_today()));
		return true;
	}
	return false;
}
