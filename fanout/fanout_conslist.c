/*
 * NAME
 *	fanout_conslist - GET /admin/consumers/list over all N fanout processes
 * DESCRIPTION
 *	Each fanout holds its own consumers.  The fanout that gets the request asks the others
 *	through shared memory: it raises list_req in its stats page to a new generation (one
 *	above every fanout's), and every fanout's 200 ms tick that sees a generation newer than
 *	the last it wrote writes its consumer table (fan_sub_table, at most MAX_PER_FANOUT) to
 *	"<RELAY_SHM_DIR>/<RELAY_NAME>-consumers-<index>.json" (written to a temporary name and
 *	renamed, so a reader never sees half a file) with that generation.  The requester polls
 *	every POLL_MS until each running fanout's file carries the generation, or WAIT_MS, and
 *	answers {"consumers":[...], "fanouts":N, "missing":[indexes that did not answer]}.
 * DIAGNOSTICS
 *	More than MAX_PENDING requests waiting: 503.  A fanout that does not answer in WAIT_MS is
 *	listed in "missing" (its consumers are not in the answer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "bt_http.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "fanout.h"

#define MAX_PER_FANOUT 10000
#define MAX_PENDING 8
#define POLL_MS 50
#define WAIT_MS 2000

struct pending {
	struct bt_http_req *req;
	uint64_t gen, deadline_ms;
};

static struct pending pend[MAX_PENDING];
static unsigned n_pend;
static struct event *poll_ev;
static uint64_t written_gen;

static struct bt_stats_page *fpage(int i)
{
	return bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_FANOUT, i)));
}

static void file_of(int i, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s-consumers-%d.json", bt_cfg.shm_dir, bt_cfg.name, i);
}

static uint64_t max_req(void)
{
	uint64_t m = 0;
	for (int i = 0; i < BT_MAX_FANOUT; i++) {
		struct bt_stats_page *p = fpage(i);
		uint64_t v = p ? atomic_load_explicit(&p->list_req, memory_order_acquire) : 0;
		if (v > m)
			m = v;
	}
	return m;
}

static void write_table(uint64_t gen)
{
	char path[1100], tmp[1110];
	file_of(bt_proc.index, path, sizeof path);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	json_t *j = json_pack("{s:I, s:i, s:o}", "gen", (json_int_t)gen, "index", bt_proc.index, "consumers",
			      fan_sub_table(MAX_PER_FANOUT));
	if (!j || json_dump_file(j, tmp, JSON_COMPACT) < 0 || rename(tmp, path) < 0)
		BT_LOG_EVERY(BT_LOG_WARN, "cannot write %s", path);
	json_decref(j);
	written_gen = gen;
}

void fan_conslist_tick(void)
{
	uint64_t m = max_req();
	if (m > written_gen)
		write_table(m);
}

/* The table fanout i wrote for gen, NULL while it has not (new reference). */
static json_t *read_table(int i, uint64_t gen)
{
	char path[1100];
	file_of(i, path, sizeof path);
	json_t *j = json_load_file(path, 0, NULL);
	if (!j)
		return NULL;
	if ((uint64_t)json_integer_value(json_object_get(j, "gen")) < gen) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Answers p if every running fanout wrote its table (or the deadline passed); true when answered. */
static bool try_answer(struct pending *p, uint64_t now)
{
	json_t *tabs[BT_MAX_FANOUT] = { 0 };
	bool all = true;
	for (int i = 0; i < BT_MAX_FANOUT; i++) {
		struct bt_stats_page *pg = fpage(i);
		if (!pg || atomic_load(&pg->pid) <= 0)
			continue;
		tabs[i] = read_table(i, p->gen);
		if (!tabs[i])
			all = false;
	}
	if (!all && now < p->deadline_ms) {
		for (int i = 0; i < BT_MAX_FANOUT; i++)
			json_decref(tabs[i]);
		return false;
	}
	json_t *arr = json_array(), *missing = json_array();
	int fanouts = 0;
	for (int i = 0; i < BT_MAX_FANOUT; i++) {
		fanouts += fan_slot_in_use(i, NULL);
		if (!tabs[i]) {
			if (fan_slot_in_use(i, NULL))
				json_array_append_new(missing, json_integer(i));
			continue;
		}
		json_array_extend(arr, json_object_get(tabs[i], "consumers"));
		json_decref(tabs[i]);
	}
	fan_xrpc_json(p->req, 200, json_pack("{s:o, s:i, s:o}", "consumers", arr, "fanouts", fanouts, "missing", missing));
	return true;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	fan_conslist_tick();
	uint64_t now = bt_now_ms();
	unsigned k = 0;
	for (unsigned i = 0; i < n_pend; i++)
		if (!try_answer(&pend[i], now))
			pend[k++] = pend[i];
	n_pend = k;
	if (n_pend) {
		struct timeval tv = { 0, POLL_MS * 1000 };
		event_add(poll_ev, &tv);
	}
}

void fan_conslist_route(struct bt_http_req *req)
{
	if (!poll_ev)
		poll_ev = evtimer_new(fan.base, on_poll, NULL);
	if (!poll_ev || n_pend == MAX_PENDING) {
		fan_xrpc_error(req, 503, "ServiceUnavailable", "too many consumer listings in flight");
		return;
	}
	uint64_t gen = max_req() + 1;
	atomic_store_explicit(&bt_proc.stats->list_req, gen, memory_order_release);
	write_table(gen);
	pend[n_pend++] = (struct pending){ .req = req, .gen = gen, .deadline_ms = bt_now_ms() + WAIT_MS };
	on_poll(-1, 0, NULL);
}
