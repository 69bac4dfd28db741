/*
 * NAME
 *	fanout_health - /_health that fails when events stop flowing, degraded on low coverage
 * DESCRIPTION
 *	Lesson 10: health is not "the HTTP thread is alive".  /_health (and /xrpc/_health)
 *	answer 200 {"status":"ok"} only when every stage of the pipeline (ingest, store, each
 *	of the K verifies and N fanouts) has claimed its stats page and stamped a heartbeat
 *	younger than RELAY_HEARTBEAT_TIMEOUT, and no SPSC ring is stuck: a ring holding
 *	unconsumed records whose consumer's progress counter has not moved for STUCK_MS.
 *	Progress counters are sampled from the 200 ms timer (fan_health_sample) so a stuck
 *	ring is noticed whether or not anyone asks.
 *
 *	When the pipeline is healthy but fewer than RELAY_COVERAGE_MIN_PERCENT of the active
 *	upstream hosts delivered within RELAY_COVERAGE_WINDOW (fanout_cov.c), the answer is 200
 *	{"status":"degraded","reason":"..."}.  /metrics is fanout_metrics.c's.
 *
 *	Reads only: stats pages have one writer each (their stage); values are atomics.
 * DIAGNOSTICS
 *	Unhealthy: 503 {"status":"unhealthy","reason":"..."} naming the first problem found.
 */
#include <errno.h>
#include <signal.h>
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

bool fan_slot_in_use(int i, bool *wanted)
{
	const struct bt_sup_page *sp = bt_shm_page(bt_proc.shm, 0);
	struct bt_stats_page *p = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_FANOUT, i)));
	bool w = bt_cfg.spawn_stages && i < 32 && (atomic_load(&sp->fanout_wanted) >> i & 1u);
	if (wanted)
		*wanted = w;
	int32_t pid = p ? atomic_load(&p->pid) : 0;
	return w || (pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH)); /* a pid left by a kill -9 is not */
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
	/* The fanouts the supervisor keeps running, and any other slot a process holds now (scaled
	   by docker-compose or batonctl scale); an empty slot nobody wants is not a failure. */
	for (int i = 0; i < BT_MAX_FANOUT && n < cap; i++)
		if (fan_slot_in_use(i, NULL))
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
	char why[512];
	if (fan_health_check(why, sizeof why)) {
		if (fan_cov_degraded(why, sizeof why)) {
			/* flowing, but not from enough of the network: 200, so a load balancer keeps it,
			   with a status an alert can match */
			json_t *d = json_pack("{s:s, s:s}", "status", "degraded", "reason", why);
			fan_xrpc_json(req, 200, d);
			BT_LOG_EVERY(BT_LOG_WARN, "degraded: %s", why);
			return;
		}
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
