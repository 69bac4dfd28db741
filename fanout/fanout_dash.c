/*
 * NAME
 *	fanout_dash - the operator dashboard: /dash and /dash.json on the metrics listener
 * DESCRIPTION
 *	/dash is one self-contained HTML page (CSS and script inline, nothing fetched from
 *	elsewhere) that asks /dash.json every second and redraws: the stages (up when the pid is
 *	set and the heartbeat younger than RELAY_HEARTBEAT_TIMEOUT), events/s, drops by reason
 *	(non-zero only), hosts by status, consumers and their lag.  Element ids (#health,
 *	#updated, #rate, #totals, #stages, #drops, #hosts, #consumers, #lag) are stable: the test
 *	(tests/proc/dash.sh) and operators' scripts look for them.
 *
 *	/dash.json is made like /metrics (fanout_metrics.c) from the stats pages of every stage,
 *	/proc and the store's host records (fan_cov_get), so any fanout answers alike.
 *	events_per_s is over the last RATE_WINDOW_MS, from the store's commit log (the seq and
 *	time of its last BT_COMMIT_LOG batches; a shorter span when those are younger; null under
 *	MIN_SPAN_MS, e.g. the first batch just written).  A consumer's lag is the store's
 *	LAST_SEQ minus the seq its fanout last sent (so per fanout, not per consumer; null for a
 *	fanout without consumers); the
 *	commit->send histogram of every fanout gives the delay in ms (bucket upper bounds).
 *	Restart counts come from the supervisor's page (null when compose starts the stages).
 *
 *	Reads only (like /metrics); the page's script sets text, never markup, so host names
 *	and reasons cannot inject anything.
 * DIAGNOSTICS
 *	Out of memory: 500.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bt_db.h"
#include "bt_http.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "fanout.h"

#define RATE_WINDOW_MS 10000
#define MIN_SPAN_MS 200

static const char page[] =
	"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>baton dashboard</title>\n"
	"<meta name=viewport content='width=device-width'>\n<style>\n"
	"body{font:14px system-ui,sans-serif;margin:16px;background:#f4f5f7;color:#1d2330}\n"
	"h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:0 0 8px}\n"
	".grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px;margin-top:12px}\n"
	".card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:10px 12px}\n"
	"table{border-collapse:collapse;width:100%}th,td{padding:3px 6px;border-bottom:1px solid #eceef2;text-align:left}\n"
	"th{color:#5b6475;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
	".up{color:#107a2a;font-weight:600}.down{color:#c0182b;font-weight:600}.none{color:#8a92a0}\n"
	".big{font-size:30px;font-weight:700}#spark{display:block;margin:6px 0;background:#f8f9fb}\n"
	"#health{font-size:13px;padding:2px 8px;border-radius:10px;color:#fff;background:#8a92a0}\n"
	"#health.ok{background:#107a2a}#health.degraded{background:#c98a00}#health.bad{background:#c0182b}\n"
	"</style></head><body>\n"
	"<h1>baton relay <span id=health>?</span></h1><div id=updated class=none>waiting for /dash.json</div>\n"
	"<div class=grid>\n"
	"<div class=card><h2>Events</h2><div id=rate><span id=eps class=big>-</span> events/s</div>\n"
	"<canvas id=spark width=480 height=48></canvas><table id=totals></table></div>\n"
	"<div class=card><h2>Stages</h2><table id=stages></table></div>\n"
	"<div class=card><h2>Drops by reason</h2><table id=drops></table></div>\n"
	"<div class=card><h2>Hosts</h2><table id=hosts></table></div>\n"
	"<div class=card><h2>Consumers</h2><div id=lag></div><table id=consumers></table></div>\n"
	"</div>\n<script>\n"
	"'use strict';\n"
	"const $ = id => document.getElementById(id), rates = [];\n"
	"const num = n => n == null ? '-' : Number(n).toLocaleString('en-US');\n"
	"function dur(s) {\n"
	"  if (s == null) return '-';\n"
	"  if (s < 120) return s.toFixed(1) + ' s';\n"
	"  if (s < 7200) return (s / 60).toFixed(0) + ' min';\n"
	"  return (s / 3600).toFixed(1) + ' h';\n"
	"}\n"
	"function bytes(b) {\n"
	"  const u = ['B', 'KiB', 'MiB', 'GiB']; let i = 0;\n"
	"  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }\n"
	"  return (i ? b.toFixed(1) : b) + ' ' + u[i];\n"
	"}\n"
	"/* rows: arrays of cells; a cell is a value (numbers right-aligned) or [text, class] */\n"
	"function fill(t, head, rows, empty) {\n"
	"  t.replaceChildren();\n"
	"  const h = t.createTHead().insertRow();\n"
	"  for (const c of head) { const th = document.createElement('th'); th.textContent = c; h.appendChild(th); }\n"
	"  const b = t.createTBody();\n"
	"  if (!rows.length) rows = [[[empty || 'none', 'none']]];\n"
	"  for (const r of rows) {\n"
	"    const tr = b.insertRow();\n"
	"    for (const c of r) {\n"
	"      const td = tr.insertCell(), [txt, cls] = Array.isArray(c) ? c : [typeof c == 'number' ? num(c) : c, typeof c == 'number' ? 'n' : ''];\n"
	"      td.textContent = txt; if (cls) td.className = cls;\n"
	"    }\n"
	"    tr.dataset.key = r.key || '';\n"
	"  }\n"
	"}\n"
	"function spark() {\n"
	"  const c = $('spark'), g = c.getContext('2d'), max = Math.max(1, ...rates);\n"
	"  g.clearRect(0, 0, c.width, c.height); g.strokeStyle = '#2563c9'; g.lineWidth = 2; g.beginPath();\n"
	"  rates.forEach((r, i) => { const x = i * c.width / 59, y = c.height - 2 - r / max * (c.height - 4); i ? g.lineTo(x, y) : g.moveTo(x, y); });\n"
	"  g.stroke();\n"
	"}\n"
	"function render(d) {\n"
	"  const h = $('health');\n"
	"  h.textContent = d.healthy ? (d.degraded ? 'degraded' : 'ok') : 'unhealthy';\n"
	"  h.className = d.healthy ? (d.degraded ? 'degraded' : 'ok') : 'bad'; h.title = d.health || '';\n"
	"  $('eps').textContent = d.events_per_s == null ? '-' : d.events_per_s.toFixed(1);\n"
	"  if (d.events_per_s != null) { rates.push(d.events_per_s); if (rates.length > 60) rates.shift(); spark(); }\n"
	"  fill($('totals'), ['', ''], [['committed', d.committed], ['last seq', d.last_seq], ['received', d.received],\n"
	"    ['accepted (verify)', d.accepted], ['upstream bytes', [bytes(d.bytes_in), 'n']]]);\n"
	"  fill($('stages'), ['role', 'index', 'pid', 'state', 'heartbeat', 'uptime', 'restarts', 'in', 'out'], d.stages.map(s => Object.assign(\n"
	"    [s.role, s.index, s.pid > 0 ? String(s.pid) : '-', s.up ? ['up', 'up'] : ['down', 'down'], [dur(s.heartbeat_age_s), 'n'],\n"
	"     [dur(s.uptime_s), 'n'], s.restarts == null ? '-' : s.restarts, s.frames_in, s.frames_out], { key: s.role + '-' + s.index })));\n"
	"  fill($('drops'), ['stage', 'reason', 'events'], d.drops.map(x => [x.role + ' ' + x.index, x.reason, x.n]), 'no drops');\n"
	"  const hs = d.hosts, st = Object.entries(hs.by_status);\n"
	"  fill($('hosts'), ['', 'hosts'], [['known', hs.known], ['subscribed (ingest)', hs.subscribed], ['delivering (coverage window)', hs.recent],\n"
	"    ['active (lookback)', hs.active], ...st.map(([k, v]) => ['status ' + k, v])]);\n"
	"  const c = d.consumers;\n"
	"  $('lag').textContent = c.connected + ' connected, lag ' + num(c.max_lag) + ' events, commit to send p50 ' +\n"
	"    (c.commit_send_p50_ms == null ? '-' : '<= ' + c.commit_send_p50_ms + ' ms') + ', p99 ' +\n"
	"    (c.commit_send_p99_ms == null ? '-' : '<= ' + c.commit_send_p99_ms + ' ms');\n"
	"  fill($('consumers'), ['fanout', 'consumers', 'sent seq', 'lag (events)', 'queued'],\n"
	"    c.fanouts.map(f => [f.index, f.consumers, f.sent_seq, f.lag == null ? ['-', 'n'] : f.lag, [bytes(f.queued_bytes), 'n']]));\n"
	"  const u = $('updated'); u.className = '';\n"
	"  u.textContent = 'updated ' + new Date(d.at_ms).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';\n"
	"}\n"
	"async function tick() {\n"
	"  try {\n"
	"    const r = await fetch('/dash.json', { cache: 'no-store' });\n"
	"    if (!r.ok) throw new Error('HTTP ' + r.status);\n"
	"    render(await r.json());\n"
	"  } catch (e) {\n"
	"    const u = $('updated'); u.className = 'down'; u.textContent = 'no data: ' + e.message;\n"
	"  }\n"
	"  setTimeout(tick, 1000);\n"
	"}\n"
	"tick();\n"
	"</script></body></html>\n";

void fan_dash_page(struct bt_http_req *req)
{
	bt_http_respond_hdr(req, 200, "text/html; charset=utf-8", "Cache-Control: no-store\r\n", page, sizeof page - 1);
}

/* Events/s committed by the store over the last RATE_WINDOW_MS, from its commit log (seq and
   wall-clock ms of each written batch): the seqs after the newest batch older than the window,
   or after the oldest logged batch over the time since it when the log is younger.  -1 when
   that span is under MIN_SPAN_MS. */
/* The supervisor's restart count of the stage, null when it does not start them (compose). */
static json_t *restarts_of(const struct fan_stage *st)
{
	const struct bt_sup_page *sp = bt_shm_page(bt_proc.shm, 0);
	unsigned slot = bt_pipe_slot(st->role, st->index);
	if (!bt_cfg.spawn_stages || !sp || slot >= sizeof sp->restarts / sizeof sp->restarts[0])
		return json_null();
	return json_integer(atomic_load(&sp->restarts[slot]));
}

static double commit_rate(const struct bt_stats_page *sp, uint64_t wall)
{
	if (!sp)
		return -1;
	uint64_t n = atomic_load_explicit(&sp->commit_n, memory_order_acquire), last = 0, base = 0, base_ms = 0;
	if (!n)
		return 0;
	uint64_t s1, ms;
	for (uint64_t i = 0; bt_commit_log_at(sp, n, i, &s1, &ms); i++) { /* stops at one being overwritten */
		if (!last)
			last = s1;
		base = s1;
		base_ms = ms;
		if (ms + RATE_WINDOW_MS <= wall) {
			base_ms = wall - RATE_WINDOW_MS;
			break;
		}
	}
	if (!last)
		return -1;
	uint64_t span = wall > base_ms ? wall - base_ms : 0;
	if (span < MIN_SPAN_MS)
		return -1;
	return (double)(last - base) * 1000.0 / (double)span;
}

/* Upper bound (ms) of the bucket holding quantile q of the summed histogram; -1 if empty or
   past the last bound. */
static long long quantile_ms(const uint64_t *b, uint64_t total, double q)
{
	if (!total)
		return -1;
	const uint64_t *bound = bt_hist_bounds(BT_HIST_COMMIT_SEND_MS);
	uint64_t want = (uint64_t)((double)total * q), cum = 0;
	if (want < 1)
		want = 1;
	for (int k = 0; k < BT_HIST_BUCKETS - 1; k++) {
		cum += b[k];
		if (cum >= want)
			return (long long)bound[k];
	}
	return -1;
}

static json_t *ms_or_null(long long v)
{
	return v < 0 ? json_null() : json_integer(v);
}

void fan_dash_json(struct bt_http_req *req)
{
	uint64_t now = bt_now_ms(), wall = bt_wall_ms();
	struct fan_stage st[FAN_N_STAGES];
	int n = fan_stages(st);
	json_t *stages = json_array(), *drops = json_array(), *fanouts = json_array();
	uint64_t committed = 0, last_seq = 0, received = 0, accepted = 0, bytes_in = 0, subscribed = 0;
	uint64_t consumers = 0, queued = 0, hist[BT_HIST_BUCKETS] = { 0 }, hist_n = 0;
	for (int i = 0; i < n; i++) {
		const struct bt_stats_page *pg = st[i].pg;
		if (!pg)
			continue;
		if (st[i].role == BT_ROLE_STORE) {
			committed = bt_stat_get(pg, BT_STAT_COMMITTED);
			last_seq = bt_stat_get(pg, BT_STAT_LAST_SEQ);
		} else if (st[i].role == BT_ROLE_INGEST) {
			received = bt_stat_get(pg, BT_STAT_FRAMES_IN);
			bytes_in = bt_stat_get(pg, BT_STAT_BYTES_IN);
			subscribed = bt_stat_get(pg, BT_STAT_HOSTS);
		} else if (st[i].role == BT_ROLE_VERIFY) {
			accepted += bt_stat_get(pg, BT_STAT_ACCEPTED);
		}
	}
	long long max_lag = 0;
	for (int i = 0; i < n; i++) {
		const struct bt_stats_page *pg = st[i].pg;
		if (!pg)
			continue;
		int32_t pid = atomic_load(&pg->pid);
		uint64_t hb = atomic_load(&pg->heartbeat_ms);
		bool up = pid > 0 && hb <= now && now - hb < (uint64_t)bt_cfg.heartbeat_timeout * 1000u;
		double cpu, rss, start;
		bool alive = pid > 0 && fan_proc_stat(pid, &cpu, &rss, &start) == 0;
		double uptime = alive && (double)wall / 1000.0 > start ? (double)wall / 1000.0 - start : 0;
		const char *role = bt_role_name(st[i].role);
		json_array_append_new(
			stages, json_pack("{s:s,s:i,s:i,s:b,s:o,s:o,s:I,s:I,s:I,s:o}", "role", role, "index", st[i].index, "pid",
					  (int)pid, "up", up, "heartbeat_age_s",
					  pid > 0 ? json_real(hb <= now ? (double)(now - hb) / 1000.0 : 0.0) : json_null(),
					  "uptime_s", alive ? json_real(uptime) : json_null(), "progress",
					  (json_int_t)atomic_load(&pg->progress), "frames_in",
					  (json_int_t)bt_stat_get(pg, BT_STAT_FRAMES_IN), "frames_out",
					  (json_int_t)bt_stat_get(pg, BT_STAT_FRAMES_OUT), "restarts", restarts_of(&st[i])));
		for (int d = 1; d < BT_DROP__COUNT; d++) {
			uint64_t v = atomic_load_explicit(&pg->drops[d], memory_order_relaxed);
			if (v)
				json_array_append_new(drops, json_pack("{s:s,s:i,s:s,s:I}", "role", role, "index", st[i].index,
								       "reason", bt_drop_name((enum bt_drop)d), "n",
								       (json_int_t)v));
		}
		if (st[i].role != BT_ROLE_FANOUT)
			continue;
		uint64_t c = bt_stat_get(pg, BT_STAT_CONSUMERS), q = bt_stat_get(pg, BT_STAT_QUEUED_BYTES);
		uint64_t sent = bt_stat_get(pg, BT_STAT_LAST_SEQ);
		long long lag = last_seq > sent ? (long long)(last_seq - sent) : 0;
		if (c && lag > max_lag)
			max_lag = lag;
		consumers += c;
		queued += q;
		json_array_append_new(fanouts, json_pack("{s:i,s:I,s:I,s:o,s:I}", "index", st[i].index, "consumers",
							 (json_int_t)c, "sent_seq", (json_int_t)sent, "lag",
							 c ? json_integer(lag) : json_null(), "queued_bytes", (json_int_t)q));
		for (int k = 0; k < BT_HIST_BUCKETS; k++) {
			uint64_t v = atomic_load_explicit(&pg->hist[BT_HIST_COMMIT_SEND_MS].b[k], memory_order_relaxed);
			hist[k] += v;
			hist_n += v;
		}
	}
	const struct fan_cov *cov = fan_cov_get();
	unsigned by_status[BT_HOST_BANNED + 1] = { 0 };
	for (size_t i = 0; i < cov->n; i++)
		if (cov->hosts[i].status <= BT_HOST_BANNED)
			by_status[cov->hosts[i].status]++;
	json_t *bs = json_object();
	for (unsigned s = 0; s <= BT_HOST_BANNED; s++)
		if (by_status[s])
			json_object_set_new(bs, bt_host_status_name(s), json_integer(by_status[s]));
	char why[512] = "";
	int healthy = fan_health_check(why, sizeof why);
	char dwhy[512] = "";
	int degraded = healthy && fan_cov_degraded(dwhy, sizeof dwhy);
	double eps = commit_rate(fan_store_page(), wall);
	json_t *j = json_pack(
		"{s:I,s:b,s:b,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:{s:I,s:i,s:i,s:I,s:o},"
		"s:{s:I,s:I,s:I,s:o,s:o,s:o}}",
		"at_ms", (json_int_t)wall, "healthy", healthy, "degraded", degraded, "health", degraded ? dwhy : why,
		"events_per_s", eps < 0 ? json_null() : json_real(eps), "committed", (json_int_t)committed, "last_seq",
		(json_int_t)last_seq, "received", (json_int_t)received, "accepted", (json_int_t)accepted, "bytes_in",
		(json_int_t)bytes_in, "stages", stages, "drops", drops, "hosts", "known", (json_int_t)cov->n, "active",
		(int)cov->active, "recent", (int)cov->recent, "subscribed", (json_int_t)subscribed, "by_status", bs,
		"consumers", "connected", (json_int_t)consumers, "queued_bytes", (json_int_t)queued, "max_lag",
		(json_int_t)max_lag, "commit_send_p50_ms", ms_or_null(quantile_ms(hist, hist_n, 0.5)),
		"commit_send_p99_ms", ms_or_null(quantile_ms(hist, hist_n, 0.99)), "fanouts", fanouts);
	if (!j) {
		fan_xrpc_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	char *txt = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!txt) {
		fan_xrpc_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	bt_http_respond_hdr(req, 200, "application/json", "Cache-Control: no-store\r\n", txt, strlen(txt));
	free(txt);
}
