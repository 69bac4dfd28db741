/*
 * NAME
 *	ingest_limits - per-host event rate limits, enforced by pausing the host's socket
 * DESCRIPTION
 *	Each host has a struct bt_limiter (common/bt_limits.c: per second, hour and day, from its
 *	account limit as indigo computes them, or the operator's overrides).  Before a frame of
 *	a host goes into a ring, ing_lim_wait() asks its limiter; over a limit the frame is held
 *	(with the few the paused socket still delivers) and the socket paused exactly as for a
 *	full ring (ingest_main.c), so the rest wait in the kernel and TCP backpressure reaches
 *	the PDS.  The retry timer pushes the held frames as soon as the limiter has room again.
 *	Nothing is dropped; other hosts are not slowed (each has its own limiter and socket).
 *	The store owns the limits (store_limits.c): ingest reads them with "hosts" at start and
 *	takes changes by the control op setLimits.
 */
#include "bt_ctl.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "ingest.h"

#include <string.h>

static void recompute(struct ing_host *h)
{
	struct bt_rates r;
	bt_rates_for(h->account_limit, bt_host_trusted(h->name), h->rate_override, &r);
	bt_limiter_set(&h->lim, &r);
}

void ing_lim_init(struct ing_host *h)
{
	struct bt_rates r;
	h->account_limit = bt_default_account_limit(h->name);
	memset(h->rate_override, 0, sizeof h->rate_override);
	bt_rates_for(h->account_limit, bt_host_trusted(h->name), NULL, &r);
	bt_limiter_init(&h->lim, &r);
}

void ing_lim_from_json(struct ing_host *h, json_t *it)
{
	json_t *l = json_object_get(it, "account_limit"), *o = json_object_get(it, "rate_override");
	if (json_is_integer(l))
		h->account_limit = json_integer_value(l);
	for (int i = 0; i < 3; i++) {
		json_t *v = json_array_get(o, (size_t)i);
		if (json_is_integer(v))
			h->rate_override[i] = json_integer_value(v);
	}
	recompute(h);
}

uint64_t ing_lim_wait(struct ing_host *h)
{
	uint64_t w = bt_limiter_wait(&h->lim, bt_now_ms());
	if (w && !h->rate_paused) {
		h->rate_paused = true;
		bt_stat_add(bt_proc.stats, BT_STAT_RATE_PAUSES, 1);
		BT_LOG_EVERY(BT_LOG_INFO, "%s: over its event rate limit (%lld/s, %lld/h, %lld/day): paused",
			     h->name, (long long)h->lim.w[0].max, (long long)h->lim.w[1].max, (long long)h->lim.w[2].max);
	}
	return w;
}

void ing_lim_took(struct ing_host *h)
{
	bt_limiter_take(&h->lim, bt_now_ms());
	h->rate_paused = false;
}

void ing_lim_ctl(struct bt_ctl_req *req, json_t *msg)
{
	const char *name = json_string_value(json_object_get(msg, "host"));
	struct ing_host *h = name ? ing_host_find(name) : NULL;
	if (!h) {
		/* Not subscribed now: it reads its limits from the store when it is. */
		bt_ctl_reply(req, json_pack("{s:b,s:b}", "ok", 1, "subscribed", 0));
		return;
	}
	ing_lim_from_json(h, msg);
	BT_INFO("%s: rate limits now %lld/s, %lld/h, %lld/day", h->name, (long long)h->lim.w[0].max,
		(long long)h->lim.w[1].max, (long long)h->lim.w[2].max);
	bt_ctl_reply(req, json_pack("{s:b,s:b}", "ok", 1, "subscribed", 1));
}
