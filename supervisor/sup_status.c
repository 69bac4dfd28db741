/*
 * NAME
 *	sup_status - the supervisor's answer to `batonctl status`
 * DESCRIPTION
 *	Reads each stage's stats page (single writer: the stage) with relaxed loads: counters
 *	are monotonic and a slightly stale value is fine for a status view.
 */
#include "sup.h"

#include <stdatomic.h>

static struct sup_counts counts;

void sup_set_counts(int K, int N)
{
	counts.K = K;
	counts.N = N;
}

struct sup_counts sup_counts_get(void)
{
	return counts;
}

static const char *state_name(enum sup_state s)
{
	return s == SUP_RUNNING ? "running" : s == SUP_BACKOFF ? "restarting" : "stopped";
}

json_t *sup_status_json(const struct sup_stage *st, int n, struct sup_counts c)
{
	json_t *arr = json_array();
	uint64_t now = bt_now_ms();
	for (int i = 0; i < n; i++) {
		const struct sup_stage *s = &st[i];
		if (!s->wanted && !s->pid && !s->seen)
			continue; /* a fanout slot nobody uses */
		uint64_t hb = atomic_load(&s->stats->heartbeat_ms);
		json_t *ctr = json_object();
		for (int k = 0; k < BT_STAT__COUNT; k++) {
			uint64_t v = bt_stat_get(s->stats, (enum bt_stat)k);
			if (v)
				json_object_set_new(ctr, bt_stat_name((enum bt_stat)k), json_integer((json_int_t)v));
		}
		json_t *drops = json_object();
		for (int k = 1; k < BT_DROP__COUNT; k++) {
			uint64_t v = atomic_load_explicit(&s->stats->drops[k], memory_order_relaxed);
			if (v)
				json_object_set_new(drops, bt_drop_name((enum bt_drop)k), json_integer((json_int_t)v));
		}
		json_array_append_new(arr, json_pack("{s:s,s:i,s:i,s:s,s:i,s:I,s:I,s:I,s:I,s:o,s:o}", "role",
						      bt_role_name(s->role), "index", s->index, "pid", (int)s->pid,
						      "state", state_name(s->state), "restarts", (int)s->restarts,
						      "heartbeat_age_ms", (json_int_t)(now > hb ? now - hb : 0),
						      "restart_delay_ms", (json_int_t)s->last_delay_ms,
						      "uptime_ms", (json_int_t)(s->pid && s->started_ms ? now - s->started_ms : 0),
						      "reload_gen", (json_int_t)atomic_load(&s->stats->reload_seen),
						      "counters", ctr, "drops", drops));
	}
	return json_pack("{s:i,s:i,s:o}", "verify_procs", c.K, "fanout_procs", c.N, "stages", arr);
}
