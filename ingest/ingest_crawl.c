/*
 * NAME
 *	ingest_crawl - host admission: requestCrawl and RELAY_HOSTS
 * DESCRIPTION
 *	A hostname is normalised (lower case, scheme and path stripped; no IP literals; a port
 *	only for localhost, and localhost only with RELAY_ALLOW_INSECURE_HOSTS), counted against
 *	the new-hosts-per-day limit, then probed with GET /xrpc/com.atproto.server.describeServer
 *	BEFORE anything is stored (lesson 8): a dead host, or one whose Server header says
 *	atproto-relay, is refused and nothing is written.  Only then is it registered with the
 *	store and subscribed.  A known host is revived at once (lesson 16).
 * DIAGNOSTICS
 *	Refusals answer {ok:false, status, error, message} and count crawls_refused.
 */
#include "bt_ctl.h"
#include "bt_fetch.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "ingest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct bt_fetch *probe;
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
				   .user_agent = bt_cfg.user_agent };
	probe = bt_fetch_new(base, &o);
	bt_params_ipc("store", store_ep, sizeof store_ep);
}

int ing_normalize_host(const char *in, char *out, size_t cap, bool *insecure, const char **why)
{
	const char *w = NULL;
	if (!in || !*in)
		w = "empty hostname";
	const char *p = in;
	if (!w) {
		if (!strncasecmp(p, "https://", 8))
			p += 8;
		else if (!strncasecmp(p, "http://", 7))
			p += 7;
		else if (!strncasecmp(p, "wss://", 6))
			p += 6;
		else if (!strncasecmp(p, "ws://", 5))
			p += 5;
	}
	size_t n = 0;
	while (!w && p[n] && p[n] != '/' && p[n] != '?')
		n++;
	if (!w && (n == 0 || n >= cap || n >= BT_HOST_MAX))
		w = "bad hostname length";
	if (!w) {
		for (size_t i = 0; i < n; i++)
			out[i] = (char)tolower((unsigned char)p[i]);
		out[n] = 0;
		for (size_t i = 0; i < n && !w; i++)
			if (!isalnum((unsigned char)out[i]) && out[i] != '.' && out[i] != '-' && out[i] != ':')
				w = "hostname has invalid characters";
	}
	*insecure = false;
	if (!w) {
		char *colon = strchr(out, ':');
		if (colon) {
			if (strncmp(out, "localhost:", 10) != 0)
				w = "a port is only allowed for localhost";
			else if (!bt_cfg.allow_insecure_hosts)
				w = "localhost is not allowed (RELAY_ALLOW_INSECURE_HOSTS)";
			else {
				char *end;
				long port = strtol(colon + 1, &end, 10);
				if (*end || port < 1 || port > 65535)
					w = "bad port";
				*insecure = true;
			}
		} else {
			struct in_addr a4;
			if (!strcmp(out, "localhost"))
				w = "localhost needs a port";
			else if (inet_pton(AF_INET, out, &a4) == 1)
				w = "IP addresses are not accepted";
			else if (!strchr(out, '.'))
				w = "hostname needs a domain";
		}
	}
	if (w) {
		if (why)
			*why = w;
		return -1;
	}
	return 0;
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
	if (!json_is_true(json_object_get(r, "existed")))
		new_today++;
	uint64_t cur = (uint64_t)json_integer_value(json_object_get(r, "cursor"));
	struct ing_host *h = ing_host_add((uint32_t)json_integer_value(id), c->host, c->insecure, cur, cur > 0);
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
	if (ing_normalize_host(hostname, c->host, sizeof c->host, &c->insecure, &why) < 0) {
		snprintf(c->host, sizeof c->host, "%s", hostname ? hostname : "");
		finish(c, 400, "InvalidRequest", why);
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
	if (bt_fetch_get(probe, url, on_probe, c) < 0)
		finish(c, 503, "ServiceUnavailable", "probe could not start");
}
