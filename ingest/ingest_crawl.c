/*
 * NAME
 *	ingest_crawl - host admission: requestCrawl and RELAY_HOSTS
 * DESCRIPTION
 *	A hostname is normalised (lower case, scheme and path stripped; no IP literals; a port
 *	only for localhost, and localhost only with RELAY_ALLOW_INSECURE_HOSTS), counted against
 *	the new-hosts-per-day limit, then probed with GET /xrpc/com.atproto.server.describeServer
 *	BEFORE anything is stored (lesson 8): a dead host, or one whose Server header says
 *	atproto-relay, is refused and nothing is written; so is a host under a domain in
 *	RELAY_BANNED_DOMAINS (the domain itself and every subdomain).  Only then is it registered with the
 *	store and subscribed.  A known host is revived at once (lesson 16).
 * DIAGNOSTICS
 *	Refusals answer {ok:false, status, error, message} and count crawls_refused.
 */
#include "bt_ctl.h"
#include "bt_fetch.h"
#include "bt_host.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "ingest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct bt_fetch *probe;       /* public hosts: public addresses on 80/443 only (SSRF) */
static struct bt_fetch *probe_local; /* localhost:PORT hosts, only with RELAY_ALLOW_INSECURE_HOSTS */
static char store_ep[600];
static unsigned new_today;
static uint64_t day_start_ms;

struct crawl {
	struct bt_ctl_req *req; /* NULL for RELAY_HOSTS */
	char host[BT_HOST_MAX];
	bool insecure;
};

void ing_crawl_init(struct event_base *base)
{
	struct bt_fetch_opts o = { .max_conns = 16, .timeout_ms = 10000, .max_body = 64 * 1024,
				   .user_agent = bt_cfg.user_agent, .public_only = true };
	probe = bt_fetch_new(base, &o);
	o.public_only = false;
	probe_local = bt_cfg.allow_insecure_hosts ? bt_fetch_new(base, &o) : NULL;
	bt_params_ipc("store", store_ep, sizeof store_ep);
}

static void finish(struct crawl *c, int status, const char *error, const char *message)
{
	if (status == 200) {
		bt_stat_add(bt_proc.stats, BT_STAT_CRAWLS, 1);
		BT_INFO("requestCrawl %s: accepted", c->host);
	} else {
		bt_stat_add(bt_proc.stats, BT_STAT_CRAWLS_REFUSED, 1);
		BT_INFO("requestCrawl %s: refused (%s: %s)", c->host, error, message);
	}
	if (c->req) {
		if (status == 200)
			bt_ctl_reply(c->req, json_pack("{s:b}", "ok", 1));
		else
			bt_ctl_reply(c->req, json_pack("{s:b,s:i,s:s,s:s}", "ok", 0, "status", status, "error", error,
						       "message", message));
	}
	free(c);
}

static void on_probe(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct crawl *c = arg;
	if (status == -ECANCELED) {
		finish(c, 503, "ServiceUnavailable", "relay stopping");
		return;
	}
	if (server && strstr(server, "atproto-relay")) {
		finish(c, 400, "HostIsRelay", "the host is a relay (Server header), not a PDS");
		return;
	}
	if (status != 200) {
		char m[128];
		snprintf(m, sizeof m, "describeServer failed (%d)", status);
		finish(c, 400, "HostNotReachable", m);
		return;
	}
	json_t *r = bt_ctl_call(store_ep, json_pack("{s:s,s:s}", "op", "addHost", "hostname", c->host), 5000);
	json_t *id = r ? json_object_get(r, "id") : NULL;
	if (!json_is_integer(id)) {
		json_decref(r);
		finish(c, 503, "ServiceUnavailable", "the store did not register the host");
		return;
	}
	const char *st = json_string_value(json_object_get(r, "status"));
	if (st && !strcmp(st, "banned")) {
		json_decref(r);
		finish(c, 400, "HostBanned", "this host is blocked on this relay");
		return;
	}
	if (!json_is_true(json_object_get(r, "existed")))
		new_today++;
	uint64_t cur = (uint64_t)json_integer_value(json_object_get(r, "cursor"));
	struct ing_host *h = ing_host_add((uint32_t)json_integer_value(id), c->host, c->insecure, cur, cur > 0,
					  (uint32_t)json_integer_value(json_object_get(r, "epoch")));
	json_decref(r);
	if (!h) {
		finish(c, 503, "ServiceUnavailable", "too many hosts");
		return;
	}
	ing_host_connect_now(h);
	finish(c, 200, NULL, NULL);
}

void ing_crawl_request(struct bt_ctl_req *req, const char *hostname)
{
	struct crawl *c = calloc(1, sizeof *c);
	if (!c) {
		if (req)
			bt_ctl_reply(req, json_pack("{s:b,s:i,s:s}", "ok", 0, "status", 503, "error", "OutOfMemory"));
		return;
	}
	c->req = req;
	const char *why = NULL;
	if (bt_host_normalize(hostname, bt_cfg.allow_insecure_hosts, c->host, sizeof c->host, &c->insecure, &why) < 0) {
		snprintf(c->host, sizeof c->host, "%s", hostname ? hostname : "");
		finish(c, 400, "InvalidRequest", why);
		return;
	}
	if (bt_host_banned(c->host, bt_cfg.banned_domains)) {
		finish(c, 400, "DomainBanned", "this host's domain is banned from this relay");
		return;
	}
	struct ing_host *h = ing_host_find(c->host);
	if (h) {
		ing_host_connect_now(h); /* known: revive it now, whatever its backoff */
		finish(c, 200, NULL, NULL);
		return;
	}
	uint64_t now = bt_wall_ms();
	if (now - day_start_ms > 86400000u) {
		day_start_ms = now;
		new_today = 0;
	}
	if (new_today >= (unsigned)bt_cfg.new_hosts_per_day) {
		finish(c, 429, "RateLimitExceeded", "new hosts per day limit reached");
		return;
	}
	char url[BT_HOST_MAX + 96];
	if (c->insecure)
		snprintf(url, sizeof url, "http://127.0.0.1:%s/xrpc/com.atproto.server.describeServer",
			 strchr(c->host, ':') + 1);
	else
		snprintf(url, sizeof url, "https://%s/xrpc/com.atproto.server.describeServer", c->host);
	if (bt_fetch_get(c->insecure ? probe_local : probe, url, on_probe, c) < 0)
		finish(c, 503, "ServiceUnavailable", "probe could not start");
}
