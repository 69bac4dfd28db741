/*
 * NAME
 *	fanout_health - /_health that fails when events stop flowing, and /metrics
 * DESCRIPTION
 *	Lesson 10: health is not "the HTTP thread is alive".  /_health (and /xrpc/_health)
 *	answer 200 {"status":"ok"} only when every stage of the pipeline (ingest, store, each
 *	of the K verifies and N fanouts) has claimed its stats page and stamped a heartbeat
 *	younger than RELAY_HEARTBEAT_TIMEOUT, and no SPSC ring is stuck: a ring holding
 *	unconsumed records whose consumer's progress counter has not moved for STUCK_MS.
 *	Progress counters are sampled from the 200 ms timer (fan_health_sample) so a stuck
 *	ring is noticed whether or not anyone asks.
 *
 *	/metrics prints every stage's counters and drop counts in the Prometheus text format,
 *	labelled role and index, plus heartbeat age, progress and ring fill.
 *
 *	Reads only: stats pages have one writer each (their stage); values are atomics.
 * DIAGNOSTICS
 *	Unhealthy: 503 {"status":"unhealthy","reason":"..."} naming the first problem found.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bt_http.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "fanout.h"

#define STUCK_MS 10000u
#define N_SLOTS (3 + BT_MAX_VERIFY + BT_MAX_FANOUT)

static uint64_t prog_last[N_SLOTS];
static uint64_t prog_moved_ms[N_SLOTS];
static bool prog_init[N_SLOTS];

static struct bt_stats_page *page_of(unsigned slot)
{
	return bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(slot));
}

void fan_health_sample(void)
{
	uint64_t now = bt_now_ms();
	for (unsigned slot = 0; slot < N_SLOTS; slot++) {
		struct bt_stats_page *p = page_of(slot);
		if (!p)
			continue;
		uint64_t v = atomic_load_explicit(&p->progress, memory_order_relaxed);
		if (!prog_init[slot] || v != prog_last[slot]) {
			prog_init[slot] = true;
			prog_last[slot] = v;
			prog_moved_ms[slot] = now;
		}
	}
}

struct stage {
	enum bt_role role;
	int index;
	unsigned slot;
};

/* The stages the pipeline needs, in the order they are checked. */
static int stages(struct stage *out, int cap)
{
	int n = 0;
	out[n++] = (struct stage){ BT_ROLE_INGEST, 0, bt_pipe_slot(BT_ROLE_INGEST, 0) };
	out[n++] = (struct stage){ BT_ROLE_STORE, 0, bt_pipe_slot(BT_ROLE_STORE, 0) };
	for (int k = 0; k < bt_proc.K && n < cap; k++)
		out[n++] = (struct stage){ BT_ROLE_VERIFY, k, bt_pipe_slot(BT_ROLE_VERIFY, k) };
	for (int i = 0; i < bt_proc.N && n < cap; i++)
		out[n++] = (struct stage){ BT_ROLE_FANOUT, i, bt_pipe_slot(BT_ROLE_FANOUT, i) };
	return n;
}

/* A ring is stuck when it holds records and its consumer has not progressed for STUCK_MS. */
static int ring_stuck(unsigned ring_idx, unsigned consumer_slot, uint64_t now)
{
	struct bt_ring *r = bt_shm_ring(bt_proc.shm, ring_idx);
	if (!r || bt_ring_used(r) == 0)
		return 0;
	return prog_init[consumer_slot] && now - prog_moved_ms[consumer_slot] > STUCK_MS;
}

int fan_health_check(char *why, size_t cap)
{
	fan_health_sample();
	uint64_t now = bt_now_ms();
	/* Half the supervisor's kill timeout: health turns 503 while a stage is silent, before the
	   supervisor kills and restarts it, not only in the instant between the two. */
	uint64_t limit_ms = (uint64_t)bt_cfg.heartbeat_timeout * 500u;
	struct stage st[N_SLOTS];
	int n = stages(st, N_SLOTS);
	for (int i = 0; i < n; i++) {
		struct bt_stats_page *p = page_of(st[i].slot);
		if (!p) {
			snprintf(why, cap, "no stats page for %s %d", bt_role_name(st[i].role), st[i].index);
			return 0;
		}
		int32_t pid = atomic_load_explicit(&p->pid, memory_order_acquire);
		uint64_t hb = atomic_load_explicit(&p->heartbeat_ms, memory_order_acquire);
		if (pid <= 0) {
			snprintf(why, cap, "%s %d is not running", bt_role_name(st[i].role), st[i].index);
			return 0;
		}
		if (hb > now ? 0 : now - hb >= limit_ms) {
			snprintf(why, cap, "%s %d (pid %d) has not sent a heartbeat for %llu ms",
				 bt_role_name(st[i].role), st[i].index, (int)pid, (unsigned long long)(now - hb));
			return 0;
		}
	}
	for (int k = 0; k < bt_proc.K; k++) {
		if (ring_stuck(bt_pipe_ring_in(k), bt_pipe_slot(BT_ROLE_VERIFY, k), now)) {
			snprintf(why, cap, "ring ingest->verify %d is stuck", k);
			return 0;
		}
		if (ring_stuck(bt_pipe_ring_out(bt_proc.K, k), bt_pipe_slot(BT_ROLE_STORE, 0), now)) {
			snprintf(why, cap, "ring verify %d->store is stuck", k);
			return 0;
		}
	}
	return 1;
}

void fan_health_respond(struct bt_http_req *req)
{
	char why[256];
	if (fan_health_check(why, sizeof why)) {
		bt_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
		return;
	}
	json_t *j = json_pack("{s:s, s:s}", "status", "unhealthy", "reason", why);
	char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (txt)
		bt_http_respond(req, 503, "application/json", txt, strlen(txt));
	else
		bt_http_respond(req, 503, "application/json", "{\"status\":\"unhealthy\"}", 22);
	free(txt);
	BT_LOG_EVERY(BT_LOG_WARN, "unhealthy: %s", why);
}

static const char *stat_doc[] = {
#define X(n, d) d,
	BT_STATS(X)
#undef X
};

static bool stat_is_gauge(enum bt_stat s)
{
	return s == BT_STAT_LAST_SEQ || s == BT_STAT_CONSUMERS || s == BT_STAT_WAITING || s == BT_STAT_HOSTS ||
	       s == BT_STAT_THROTTLED_ACCOUNTS;
}

static void lower(char *dst, const char *src, size_t cap)
{
	size_t i = 0;
	for (; src[i] && i + 1 < cap; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = 0;
}

void fan_metrics_respond(struct bt_http_req *req)
{
	char *out = NULL;
	size_t outn = 0;
	FILE *f = open_memstream(&out, &outn);
	if (!f) {
		fan_xrpc_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	uint64_t now = bt_now_ms();
	struct stage st[N_SLOTS];
	int n = stages(st, N_SLOTS);
	struct bt_stats_page *pg[N_SLOTS];
	for (int i = 0; i < n; i++)
		pg[i] = page_of(st[i].slot);
	char name[64];

	fprintf(f, "# HELP baton_up 1 when the stage has a pid and a fresh heartbeat\n# TYPE baton_up gauge\n");
	for (int i = 0; i < n; i++) {
		if (!pg[i])
			continue;
		int32_t pid = atomic_load(&pg[i]->pid);
		uint64_t hb = atomic_load(&pg[i]->heartbeat_ms);
		int up = pid > 0 && hb <= now && now - hb < (uint64_t)bt_cfg.heartbeat_timeout * 1000u;
		fprintf(f, "baton_up{role=\"%s\",index=\"%d\"} %d\n", bt_role_name(st[i].role), st[i].index, up);
	}
	fprintf(f, "# HELP baton_heartbeat_age_seconds time since the stage's last loop turn\n"
		   "# TYPE baton_heartbeat_age_seconds gauge\n");
	for (int i = 0; i < n; i++) {
		if (!pg[i] || atomic_load(&pg[i]->pid) <= 0)
			continue;
		uint64_t hb = atomic_load(&pg[i]->heartbeat_ms);
		fprintf(f, "baton_heartbeat_age_seconds{role=\"%s\",index=\"%d\"} %.3f\n", bt_role_name(st[i].role),
			st[i].index, hb <= now ? (double)(now - hb) / 1000.0 : 0.0);
	}
	fprintf(f, "# HELP baton_progress_total input consumed by the stage\n# TYPE baton_progress_total counter\n");
	for (int i = 0; i < n; i++)
		if (pg[i])
			fprintf(f, "baton_progress_total{role=\"%s\",index=\"%d\"} %llu\n", bt_role_name(st[i].role),
				st[i].index, (unsigned long long)atomic_load(&pg[i]->progress));
	for (int s = 0; s < BT_STAT__COUNT; s++) {
		lower(name, bt_stat_name((enum bt_stat)s), sizeof name);
		bool g = stat_is_gauge((enum bt_stat)s);
		fprintf(f, "# HELP baton_%s%s %s\n# TYPE baton_%s%s %s\n", name, g ? "" : "_total", stat_doc[s], name,
			g ? "" : "_total", g ? "gauge" : "counter");
		for (int i = 0; i < n; i++)
			if (pg[i])
				fprintf(f, "baton_%s%s{role=\"%s\",index=\"%d\"} %llu\n", name, g ? "" : "_total",
					bt_role_name(st[i].role), st[i].index,
					(unsigned long long)bt_stat_get(pg[i], (enum bt_stat)s));
	}
	fprintf(f, "# HELP baton_drops_total frames dropped, by reason\n# TYPE baton_drops_total counter\n");
	for (int i = 0; i < n; i++) {
		if (!pg[i])
			continue;
		for (int d = 1; d < BT_DROP__COUNT; d++) {
			lower(name, bt_drop_name((enum bt_drop)d), sizeof name);
			fprintf(f, "baton_drops_total{role=\"%s\",index=\"%d\",reason=\"%s\"} %llu\n",
				bt_role_name(st[i].role), st[i].index, name,
				(unsigned long long)atomic_load_explicit(&pg[i]->drops[d], memory_order_relaxed));
		}
	}
	fprintf(f, "# HELP baton_ring_used_bytes bytes waiting in a pipeline ring\n# TYPE baton_ring_used_bytes gauge\n");
	for (int k = 0; k < bt_proc.K; k++) {
		struct bt_ring *ri = bt_shm_ring(bt_proc.shm, bt_pipe_ring_in(k));
		struct bt_ring *ro = bt_shm_ring(bt_proc.shm, bt_pipe_ring_out(bt_proc.K, k));
		if (ri)
			fprintf(f, "baton_ring_used_bytes{ring=\"ingest_verify\",index=\"%d\"} %zu\n", k, bt_ring_used(ri));
		if (ro)
			fprintf(f, "baton_ring_used_bytes{ring=\"verify_store\",index=\"%d\"} %zu\n", k, bt_ring_used(ro));
	}
	fprintf(f, "# HELP baton_bcast_last_seq newest seq on the broadcast ring\n# TYPE baton_bcast_last_seq gauge\n"
		   "baton_bcast_last_seq %llu\n",
		(unsigned long long)bt_bcast_last_seq(fan.ring));
	char why[256];
	int ok = fan_health_check(why, sizeof why);
	fprintf(f, "# HELP baton_healthy 1 when /_health answers 200\n# TYPE baton_healthy gauge\nbaton_healthy %d\n", ok);
	if (fclose(f) != 0 || !out) {
		free(out);
		fan_xrpc_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	bt_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out, outn);
	free(out);
}
