/*
 * NAME
 *	ingest_crawl - host admission: requestCrawl and RELAY_HOSTS
 * DESCRIPTION
 *	Before anything is fetched or stored, in this order (each refusal its own error):
 *	  1. hostname syntax: normalised (lower case, scheme and path stripped), DNS label rules
 *	     ("a..b" refused), no IP literals                                  400 InvalidRequest
 *	  2. the insecure-host rule: a port only for localhost, and localhost only with
 *	     RELAY_ALLOW_INSECURE_HOSTS                                         400 InvalidRequest
 *	  3. domain bans (the store's and RELAY_BANNED_DOMAINS: the domain and every subdomain)
 *	                                                                        400 DomainBanned
 *	  4. host bans (in memory, ingest_admit.c: a banned host is never probed) 400 HostBanned
 *	  5. the crawl switch (/admin/subs/setEnabled)                          403 Forbidden
 *	  6. the new-hosts-per-day limit, for a host not known yet (persisted count, so a
 *	     restart does not reset it)                                         429 RateLimitExceeded
 *	  7. the probe GET /xrpc/com.atproto.server.describeServer (lesson 8): a dead host
 *	                                                                        400 HostNotReachable
 *	     and the relay refusal (a Server header with atproto-relay)         400 HostIsRelay
 *	Only then is it registered with the store and subscribed.  A known host is revived at
 *	once, without a probe (lesson 16).  The operator's requestCrawl (admin) and RELAY_HOSTS
 *	skip 5 and 6 (as indigo's admin requestCrawl).  A cursorHint (indigo PR 1268) given
 *	for a host the store has never seen is its starting cursor: the first subscribe asks
 *	subscribeRepos?cursor=<hint>, so a quiet host is not started at "live only".  The operator's
 *	requestCrawl with noProbe (batonctl pull-hosts) skips 7 too (1-4 still apply).
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

struct crawl {
	struct bt_ctl_req *req; /* NULL for RELAY_HOSTS */
	char host[BT_HOST_MAX];
	bool insecure;
	bool reserved;          /* holds a place of the per-day limit while its probe runs */
	struct ing_crawl_opts o;
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
	if (c->reserved)
		ing_admit_probe_done(NULL);
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
	/* Banned while it was probed (the operator's block, a domain ban): refused all the same. */
	int bst;
	const char *bmsg, *berr = ing_admit_check(c->host, true, true, &bst, &bmsg);
	if (berr) {
		finish(c, bst, berr, bmsg);
		return;
	}
	json_t *add = json_pack("{s:s,s:s,s:b}", "op", "addHost", "hostname", c->host, "count_new", !c->o.admin);
	if (c->o.has_hint)
		json_object_set_new(add, "cursor", json_integer((json_int_t)c->o.cursor_hint));
	json_t *r = bt_ctl_call(store_ep, add, 5000);
	if (c->reserved) {
		c->reserved = false;
		ing_admit_probe_done(r);
	}
	json_t *id = r ? json_object_get(r, "id") : NULL;
	if (r && json_is_false(json_object_get(r, "ok"))) {
		/* the store's own per-day check (the count is the store's) */
		json_int_t st = json_integer_value(json_object_get(r, "status"));
		const char *e = json_string_value(json_object_get(r, "error"));
		char m[160];
		snprintf(m, sizeof m, "%s", json_string_value(json_object_get(r, "message")) ?: "refused by the store");
		json_decref(r);
		finish(c, st >= 400 && st < 600 ? (int)st : 400, e ? e : "InvalidRequest", m);
		return;
	}
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

void ing_crawl_request(struct bt_ctl_req *req, const char *hostname, const struct ing_crawl_opts *o)
{
	struct crawl *c = calloc(1, sizeof *c);
	if (!c) {
		if (req)
			bt_ctl_reply(req, json_pack("{s:b,s:i,s:s}", "ok", 0, "status", 503, "error", "OutOfMemory"));
		return;
	}
	c->req = req;
	if (o)
		c->o = *o;
	const char *why = NULL;
	/* 1, 2: syntax and the insecure-host rule */
	if (bt_host_normalize(hostname, bt_cfg.allow_insecure_hosts, c->host, sizeof c->host, &c->insecure, &why) < 0) {
		snprintf(c->host, sizeof c->host, "%s", hostname ? hostname : "");
		finish(c, 400, "InvalidRequest", why);
		return;
	}
	if (bt_cfg.upstream_relay[0] && strcmp(c->host, bt_cfg.upstream_relay)) {
		finish(c, 400, "InvalidRequest", "this relay serves another relay's firehose (RELAY_UPSTREAM_RELAY): ask that one");
		return;
	}
	/* 3-6: bans, the crawl switch, the per-day limit (nothing fetched yet) */
	struct ing_host *h = ing_host_find(c->host);
	int st;
	const char *msg, *err = ing_admit_check(c->host, h != NULL, c->o.admin, &st, &msg);
	if (err) {
		finish(c, st, err, msg);
		return;
	}
	if (h) {
		ing_host_connect_now(h); /* known: revive it now, whatever its backoff */
		finish(c, 200, NULL, NULL);
		return;
	}
	if (!c->o.admin) {
		ing_admit_probe_started();
		c->reserved = true;
	}
	/* The operator's bulk bootstrap (batonctl pull-hosts): the other relay vouches for the
	   host; probing thousands of them would take minutes.  Everything above still applies. */
	if (c->o.admin && c->o.no_probe) {
		on_probe(c, 200, NULL, 0, NULL);
		return;
	}
	/* 7: the probe */
	char url[BT_HOST_MAX + 96];
	if (c->insecure)
		snprintf(url, sizeof url, "http://127.0.0.1:%s/xrpc/com.atproto.server.describeServer",
			 strchr(c->host, ':') + 1);
	else
		snprintf(url, sizeof url, "https://%s/xrpc/com.atproto.server.describeServer", c->host);
	if (bt_fetch_get(c->insecure ? probe_local : probe, url, on_probe, c) < 0)
		finish(c, 503, "ServiceUnavailable", "probe could not start");
}
