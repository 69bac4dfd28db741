/*
 * NAME
 *	bt_limits - per-host limits: trusted domains, indigo's rate formulas, sliding windows
 * DESCRIPTION
 *	See bt_limits.h.  A window's estimate at time t in [start, start + size) is
 *	prev * (start + size - t) / size + cur, as indigo's slidingwindow.Limiter computes it;
 *	one more event fits while estimate + 1 <= max.
 */
#include "bt_limits.h"

#include <string.h>

#include "bt_params.h"

bool bt_host_trusted_in(const char *host, const char *list)
{
	size_t hn = strlen(host);
	const char *p = list;
	while (p && *p) {
		while (*p == ',' || *p == ' ')
			p++;
		size_t n = strcspn(p, ", ");
		if (n) {
			if (n == hn && !strncmp(p, host, n))
				return true;
			if (p[0] == '*' && n > 1 && hn > n - 1 && !strncmp(host + hn - (n - 1), p + 1, n - 1))
				return true;
		}
		p += n;
	}
	return false;
}

bool bt_host_trusted(const char *host)
{
	/* the relay we serve carries the whole network: no per-host limit of a PDS applies */
	if (bt_cfg.upstream_relay[0] && !strcmp(host, bt_cfg.upstream_relay))
		return true;
	return bt_host_trusted_in(host, bt_cfg.trusted_domains);
}

int64_t bt_default_account_limit(const char *host)
{
	return bt_host_trusted(host) ? bt_cfg.trusted_account_limit : bt_cfg.default_account_limit;
}

void bt_rates_for(int64_t L, bool trusted, const int64_t override[3], struct bt_rates *out)
{
	if (L < 0)
		L = 0;
	if (trusted) {
		out->max[0] = BT_TRUSTED_PER_SECOND;
		out->max[1] = BT_TRUSTED_PER_HOUR;
		out->max[2] = BT_TRUSTED_PER_DAY;
	} else {
		out->max[0] = bt_cfg.host_events_per_second + L / 1000;
		out->max[1] = bt_cfg.host_events_per_hour + L;
		out->max[2] = bt_cfg.host_events_per_day + 10 * L;
	}
	for (int i = 0; i < 3; i++)
		if (override && override[i] > 0)
			out->max[i] = override[i];
}

static const uint64_t sizes[3] = { 1000, 3600000, 86400000 };

void bt_limiter_init(struct bt_limiter *l, const struct bt_rates *r)
{
	memset(l, 0, sizeof *l);
	for (int i = 0; i < 3; i++) {
		l->w[i].size_ms = sizes[i];
		l->w[i].max = r->max[i];
	}
}

void bt_limiter_set(struct bt_limiter *l, const struct bt_rates *r)
{
	for (int i = 0; i < 3; i++)
		l->w[i].max = r->max[i];
}

static void advance(struct bt_window *w, uint64_t now)
{
	uint64_t start = now - now % w->size_ms;
	if (start == w->start_ms)
		return;
	w->prev = start == w->start_ms + w->size_ms ? w->cur : 0;
	w->cur = 0;
	w->start_ms = start;
}

/* Milliseconds until one more event fits w (0: it fits now). */
static uint64_t window_wait(struct bt_window *w, uint64_t now)
{
	advance(w, now);
	uint64_t end = w->start_ms + w->size_ms;
	double room = (double)w->max - 1.0 - (double)w->cur; /* what prev's share must fall to */
	double est = (double)w->prev * (double)(end - now) / (double)w->size_ms;
	if (est <= room)
		return 0;
	if (room < 0 || w->prev == 0)
		return end - now; /* the current window alone is full: at least its end */
	/* prev * (end - t) / size <= room  <=>  t >= end - room * size / prev */
	double t = (double)end - room * (double)w->size_ms / (double)w->prev;
	uint64_t at = t > (double)now ? (uint64_t)t + 1 : now + 1;
	return at > now ? at - now : 1;
}

uint64_t bt_limiter_wait(struct bt_limiter *l, uint64_t now_ms)
{
	uint64_t wait = 0;
	for (int i = 0; i < 3; i++) {
		uint64_t w = window_wait(&l->w[i], now_ms);
		if (w > wait)
			wait = w;
	}
	return wait;
}

void bt_limiter_take(struct bt_limiter *l, uint64_t now_ms)
{
	for (int i = 0; i < 3; i++) {
		advance(&l->w[i], now_ms);
		l->w[i].cur++;
	}
}
