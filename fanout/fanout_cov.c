/*
 * NAME
 *	fanout_cov - coverage: which upstream hosts delivered lately (for /_health and /metrics)
 * DESCRIPTION
 *	The store's host records ("h/" be32(id), struct bt_host_rec) carry each host's last
 *	committed event (last_ms, wall clock) and its event count; every fanout reads them from
 *	its RocksDB view, so all N fanouts answer alike.  A snapshot is taken at most once per
 *	REFRESH_MS, on demand (a /_health or /metrics request), and sorted by event count (most
 *	first) for the per-host metric series.
 *
 *	A host is active when it is not banned and its last event is younger than
 *	RELAY_COVERAGE_LOOKBACK; it delivered recently when its last event is younger than
 *	RELAY_COVERAGE_WINDOW.  The coverage share is recent / active (1 with no active host).
 *	With RELAY_COVERAGE_MIN_PERCENT > 0, a share below it makes /_health "degraded".
 * DIAGNOSTICS
 *	Without a database (the store has not created it) the snapshot is empty: never degraded.
 *	More than MAX_HOSTS host records: the rest are not looked at (logged).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bt_db.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "fanout.h"

#define REFRESH_MS 1000
#define MAX_HOSTS 200000

static struct fan_cov cov;
static size_t cap;
static uint64_t refreshed_ms;
static bool ever;

static int scan_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct bt_host_rec h;
	if (kn != 6 || vn != sizeof h)
		return 0;
	memcpy(&h, v, sizeof h);
	if (h.version != 1 || h.host_len == 0 || h.host_len >= sizeof h.host)
		return 0;
	if (cov.n == cap) {
		if (cap >= MAX_HOSTS) {
			BT_LOG_EVERY(BT_LOG_WARN, "coverage: more than %d hosts; the rest are not counted", MAX_HOSTS);
			return 1;
		}
		size_t nc = cap ? cap * 2 : 256;
		struct fan_cov_host *nh = realloc(cov.hosts, nc * sizeof *nh);
		if (!nh)
			return 1;
		cov.hosts = nh;
		cap = nc;
	}
	struct fan_cov_host *o = &cov.hosts[cov.n++];
	memcpy(o->host, h.host, h.host_len);
	o->host[h.host_len] = 0;
	o->status = h.status;
	o->last_ms = h.last_ms;
	o->n_events = h.n_events;
	return 0;
}

static int by_events(const void *a, const void *b)
{
	const struct fan_cov_host *x = a, *y = b;
	if (x->n_events != y->n_events)
		return x->n_events > y->n_events ? -1 : 1;
	return strcmp(x->host, y->host);
}

const struct fan_cov *fan_cov_get(void)
{
	uint64_t now = bt_now_ms();
	if (ever && now - refreshed_ms < REFRESH_MS)
		return &cov;
	refreshed_ms = now;
	ever = true;
	cov.n = 0;
	cov.active = cov.recent = 0;
	cov.newest_ms = 0;
	cov.at_ms = bt_wall_ms();
	if (fan_db_ensure() < 0)
		return &cov;
	fan_db_catch_up(20);
	char from[6];
	bt_db_scan(fan.db, from, bt_key_host(from, 0), "h/", 2, scan_cb, NULL);
	if (cov.n) /* cov.hosts is NULL before the first host */
		qsort(cov.hosts, cov.n, sizeof *cov.hosts, by_events);
	uint64_t win = (uint64_t)bt_cfg.coverage_window * 1000u, look = (uint64_t)bt_cfg.coverage_lookback * 1000u;
	for (size_t i = 0; i < cov.n; i++) {
		const struct fan_cov_host *h = &cov.hosts[i];
		if (h->last_ms > cov.newest_ms)
			cov.newest_ms = h->last_ms;
		if (h->status == BT_HOST_BANNED || !h->n_events || !h->last_ms)
			continue;
		uint64_t age = cov.at_ms > h->last_ms ? cov.at_ms - h->last_ms : 0;
		if (age < look) {
			cov.active++;
			if (age < win)
				cov.recent++;
		}
	}
	return &cov;
}

int fan_cov_degraded(char *why, size_t wcap)
{
	if (bt_cfg.coverage_min_percent <= 0)
		return 0;
	const struct fan_cov *c = fan_cov_get();
	if (!c->active || (uint64_t)c->recent * 100u >= (uint64_t)bt_cfg.coverage_min_percent * c->active)
		return 0;
	int n = snprintf(why, wcap, "coverage: %u of %u active hosts delivered in the last %llds (%u%% < %lld%%); silent:",
			 c->recent, c->active, (long long)bt_cfg.coverage_window, c->recent * 100u / c->active,
			 (long long)bt_cfg.coverage_min_percent);
	uint64_t win = (uint64_t)bt_cfg.coverage_window * 1000u, look = (uint64_t)bt_cfg.coverage_lookback * 1000u;
	int shown = 0;
	for (size_t i = 0; i < c->n && n > 0 && (size_t)n < wcap; i++) {
		const struct fan_cov_host *h = &c->hosts[i];
		uint64_t age = c->at_ms > h->last_ms ? c->at_ms - h->last_ms : 0;
		if (h->status == BT_HOST_BANNED || !h->n_events || !h->last_ms || age >= look || age < win)
			continue;
		if (shown == 5) {
			n += snprintf(why + n, wcap - (size_t)n, " ...");
			break;
		}
		n += snprintf(why + n, wcap - (size_t)n, " %s", h->host);
		shown++;
	}
	return 1;
}
