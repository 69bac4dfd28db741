/*
 * NAME
 *	fanout_metrics - /metrics on the metrics listener (RELAY_METRICS_LISTEN), Prometheus text
 * DESCRIPTION
 *	Every fanout listens on RELAY_METRICS_LISTEN (SO_REUSEPORT, like the public port) and
 *	answers the same page: it is made from the shared stats pages of every stage, /proc and the
 *	store's host records, not from the answering fanout's own state, so a scrape may land on
 *	any of them.  The public port does not serve /metrics.
 *
 *	A family appears only for the roles that write it (stat_roles[]); a drop reason only
 *	for the stage that can count it (ingest: duplicate; verify: its verdicts; store: every
 *	verdict, the relay's decision of record).  Histograms come from the stats pages
 *	(struct bt_hist, cumulated here).  Per-host series are bounded: the
 *	RELAY_METRICS_TOP_HOSTS hosts with the most events, the rest summed into host="_other".
 *	Process metrics (process_*) use the Prometheus client names with role/index labels.
 *	The same listener serves the operator dashboard (/dash, /dash.json: fanout_dash.c).
 *	docs/ops.md has the families and the mapping to indigo's names.
 *
 *	Reads only: stats pages have one writer each (their stage); values are atomics.
 * DIAGNOSTICS
 *	Out of memory: 500.  A stage whose /proc entry is gone has no process_* series.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bt_http.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "fanout.h"

enum { RI = 1 << BT_ROLE_INGEST, RV = 1 << BT_ROLE_VERIFY, RS = 1 << BT_ROLE_STORE, RF = 1 << BT_ROLE_FANOUT };

/* Which roles write each counter (the others would always say 0). */
static const unsigned stat_roles[BT_STAT__COUNT] = {
	[BT_STAT_FRAMES_IN] = RI | RV | RS,
	[BT_STAT_BYTES_IN] = RI,
	[BT_STAT_FRAMES_OUT] = RI | RV | RS | RF,
	[BT_STAT_BAD_FRAMES] = RI,
	[BT_STAT_RING_FULL] = RI | RV,
	[BT_STAT_CONNECTS] = RI | RF,
	[BT_STAT_DISCONNECTS] = RI | RF,
	[BT_STAT_ACCEPTED] = RV,
	[BT_STAT_DROPPED] = RV | RS,
	[BT_STAT_DISCONTINUITIES] = RV,
	[BT_STAT_INVERSION_LENIENT] = RV,
	[BT_STAT_RESOLVES] = RV,
	[BT_STAT_RESOLVE_FAILS] = RV,
	[BT_STAT_WAITING] = RV,
	[BT_STAT_COMMITTED] = RS,
	[BT_STAT_DUPLICATES] = RS,
	[BT_STAT_BATCHES] = RS,
	[BT_STAT_LAST_SEQ] = RS | RF,
	[BT_STAT_CONSUMERS] = RF,
	[BT_STAT_REPLAYED] = RF,
	[BT_STAT_OVERRUNS] = RF,
	[BT_STAT_SLOW_KICKS] = RF,
	[BT_STAT_HOSTS] = RI | RS,
	[BT_STAT_CRAWLS] = RI | RF,
	[BT_STAT_CRAWLS_REFUSED] = RI | RF,
	[BT_STAT_QUARANTINED] = RV,
	[BT_STAT_SIG_PRIOR_KEY] = RV,
	[BT_STAT_IDENTITY_LOADED] = RV,
	[BT_STAT_CHAIN_RESETS] = RS,
	[BT_STAT_EMSGSIZE] = RS,
	[BT_STAT_RING_GAPS] = RF,
	[BT_STAT_REPUBLISHED] = RS,
	[BT_STAT_DB_OPENS] = RS,
	[BT_STAT_READ_TIMEOUTS] = RF,
	[BT_STAT_IP_REFUSED] = RF,
	[BT_STAT_BUDGET_HELD] = RF,
	[BT_STAT_QUEUED_BYTES] = RF,
	[BT_STAT_HTTP_REFUSED] = RF,
	[BT_STAT_RATE_PAUSES] = RI,
	[BT_STAT_THROTTLED_ACCOUNTS] = RS,
	[BT_STAT_TAKEDOWNS] = RS,
	[BT_STAT_TAKEDOWN_GEN] = RS,
	[BT_STAT_TAKEDOWN_HIDDEN] = RF,
	[BT_STAT_TAKEDOWN_ERASED] = RS,
	[BT_STAT_HANDED_OUT] = RF,
	[BT_STAT_HANDED_IN] = RF,
};

static const char *stat_doc[] = {
#define X(n, d) d,
	BT_STATS(X)
#undef X
};
static const char *hist_doc[] = {
#define X(n, d) d,
	BT_HISTS(X)
#undef X
};

static bool stat_is_gauge(enum bt_stat s)
{
	return s == BT_STAT_LAST_SEQ || s == BT_STAT_CONSUMERS || s == BT_STAT_WAITING || s == BT_STAT_HOSTS ||
	       s == BT_STAT_QUEUED_BYTES || s == BT_STAT_THROTTLED_ACCOUNTS ||
	       s == BT_STAT_TAKEDOWNS || s == BT_STAT_TAKEDOWN_GEN;
}

/* Drop reasons a role can count: ingest only re-deliveries, verify its verdicts, the store all
   (it records every verdict, and adds its own). */
static bool drop_possible(enum bt_role r, enum bt_drop d)
{
	switch (r) {
	case BT_ROLE_INGEST: return d == BT_DROP_DUPLICATE;
	case BT_ROLE_VERIFY:
		return d != BT_DROP_DUPLICATE && d != BT_DROP_MALFORMED && d != BT_DROP_STALE_EPOCH &&
		       d != BT_DROP_THROTTLED && d != BT_DROP_TAKENDOWN; /* the store's own */
	case BT_ROLE_STORE: return true;
	default: return false;
	}
}

static enum bt_role hist_role(enum bt_hist_id h)
{
	switch (h) {
	case BT_HIST_EMIT_COMMIT_MS: return BT_ROLE_STORE;
	case BT_HIST_COMMIT_SEND_MS: return BT_ROLE_FANOUT;
	default: return BT_ROLE_INGEST;
	}
}

int fan_stages(struct fan_stage *out)
{
	int n = 0;
	out[n++] = (struct fan_stage){ BT_ROLE_INGEST, 0, NULL };
	out[n++] = (struct fan_stage){ BT_ROLE_STORE, 0, NULL };
	for (int k = 0; k < bt_proc.K; k++)
		out[n++] = (struct fan_stage){ BT_ROLE_VERIFY, k, NULL };
	for (int i = 0; i < BT_MAX_FANOUT; i++)
		if (fan_slot_in_use(i, NULL)) /* scaled fanouts may hold any slot */
			out[n++] = (struct fan_stage){ BT_ROLE_FANOUT, i, NULL };
	for (int i = 0; i < n; i++)
		out[i].pg = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(out[i].role, out[i].index)));
	return n;
}

struct bt_stats_page *fan_store_page(void)
{
	static struct bt_stats_page *p;
	if (!p && bt_proc.shm)
		p = bt_shm_page(bt_proc.shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_STORE, 0)));
	return p;
}

static void lower(char *dst, const char *src, size_t cap)
{
	size_t i = 0;
	for (; src[i] && i + 1 < cap; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = 0;
}

/* A label value with \ " and newlines escaped (host names come from requestCrawl). */
static void label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int fan_proc_stat(int pid, double *cpu_s, double *rss_b, double *start_s)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *p = fopen(path, "r");
	if (!p)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, p);
	fclose(p);
	buf[n] = 0;
	char *q = strrchr(buf, ')');
	if (!q)
		return -1;
	unsigned long long utime = 0, stime = 0, start = 0, rss = 0;
	/* after ") ": state(3) ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24) */
	char *tok = strtok(q + 2, " ");
	for (int field = 3; tok && field <= 24; field++, tok = strtok(NULL, " ")) {
		if (field == 14)
			utime = strtoull(tok, NULL, 10);
		else if (field == 15)
			stime = strtoull(tok, NULL, 10);
		else if (field == 22)
			start = strtoull(tok, NULL, 10);
		else if (field == 24)
			rss = strtoull(tok, NULL, 10);
	}
	static long hz, page;
	static unsigned long long btime;
	if (!hz) {
		hz = sysconf(_SC_CLK_TCK);
		page = sysconf(_SC_PAGESIZE);
		FILE *s = fopen("/proc/stat", "r");
		char line[256];
		while (s && fgets(line, sizeof line, s))
			if (!strncmp(line, "btime ", 6))
				btime = strtoull(line + 6, NULL, 10);
		if (s)
			fclose(s);
	}
	*cpu_s = (double)(utime + stime) / (double)hz;
	*rss_b = (double)rss * (double)page;
	*start_s = (double)btime + (double)start / (double)hz;
	return 0;
}

static int proc_fds(int pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void process_metrics(FILE *f, const struct fan_stage *st, int n)
{
	struct proc {
		const char *role;
		int index, pid;
		double cpu, rss, start;
		int fds;
		bool ok;
	} pr[FAN_N_STAGES + 1];
	int m = 0;
	struct bt_sup_page *sp = bt_shm_page(bt_proc.shm, 0);
	if (sp && atomic_load(&sp->pid) > 0)
		pr[m++] = (struct proc){ .role = "supervisor", .index = 0, .pid = atomic_load(&sp->pid) };
	for (int i = 0; i < n; i++)
		if (st[i].pg && atomic_load(&st[i].pg->pid) > 0)
			pr[m++] = (struct proc){ .role = bt_role_name(st[i].role), .index = st[i].index,
						 .pid = atomic_load(&st[i].pg->pid) };
	for (int i = 0; i < m; i++) {
		pr[i].ok = fan_proc_stat(pr[i].pid, &pr[i].cpu, &pr[i].rss, &pr[i].start) == 0;
		pr[i].fds = pr[i].ok ? proc_fds(pr[i].pid) : -1;
	}
	family(f, "process_cpu_seconds_total", "counter", "user and system CPU time of the stage's process");
	for (int i = 0; i < m; i++)
		if (pr[i].ok)
			fprintf(f, "process_cpu_seconds_total{role=\"%s\",index=\"%d\"} %.2f\n", pr[i].role, pr[i].index,
				pr[i].cpu);
	family(f, "process_resident_memory_bytes", "gauge", "resident memory of the stage's process");
	for (int i = 0; i < m; i++)
		if (pr[i].ok)
			fprintf(f, "process_resident_memory_bytes{role=\"%s\",index=\"%d\"} %.0f\n", pr[i].role,
				pr[i].index, pr[i].rss);
	family(f, "process_open_fds", "gauge", "open file descriptors of the stage's process");
	for (int i = 0; i < m; i++)
		if (pr[i].ok && pr[i].fds >= 0)
			fprintf(f, "process_open_fds{role=\"%s\",index=\"%d\"} %d\n", pr[i].role, pr[i].index, pr[i].fds);
	family(f, "process_start_time_seconds", "gauge", "start time of the stage's process, seconds since the epoch");
	for (int i = 0; i < m; i++)
		if (pr[i].ok)
			fprintf(f, "process_start_time_seconds{role=\"%s\",index=\"%d\"} %.2f\n", pr[i].role, pr[i].index,
				pr[i].start);
}

static void histograms(FILE *f, const struct fan_stage *st, int n)
{
	static const char *names[BT_HIST__COUNT] = {
		[BT_HIST_EMIT_COMMIT_MS] = "baton_emit_commit_seconds",
		[BT_HIST_COMMIT_SEND_MS] = "baton_commit_send_seconds",
		[BT_HIST_EVENT_BYTES] = "baton_upstream_event_bytes",
	};
	for (int h = 0; h < BT_HIST__COUNT; h++) {
		bool ms = h != BT_HIST_EVENT_BYTES;
		double scale = ms ? 1000.0 : 1.0;
		const uint64_t *b = bt_hist_bounds((enum bt_hist_id)h);
		family(f, names[h], "histogram", hist_doc[h]);
		for (int i = 0; i < n; i++) {
			if (!st[i].pg || st[i].role != hist_role((enum bt_hist_id)h))
				continue;
			const struct bt_hist *x = &st[i].pg->hist[h];
			/* count and sum are read after the buckets and raised to their total: a scrape in the
			   middle of an observation stays consistent (+Inf == count). */
			uint64_t cum = 0;
			char lbl[64];
			snprintf(lbl, sizeof lbl, "role=\"%s\",index=\"%d\"", bt_role_name(st[i].role), st[i].index);
			for (int k = 0; k < BT_HIST_BUCKETS - 1; k++) {
				cum += atomic_load_explicit(&x->b[k], memory_order_relaxed);
				fprintf(f, "%s_bucket{%s,le=\"%g\"} %llu\n", names[h], lbl, (double)b[k] / scale,
					(unsigned long long)cum);
			}
			cum += atomic_load_explicit(&x->b[BT_HIST_BUCKETS - 1], memory_order_relaxed);
			uint64_t sum = atomic_load_explicit(&x->sum, memory_order_relaxed);
			fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", names[h], lbl, (unsigned long long)cum);
			fprintf(f, "%s_sum{%s} %.3f\n", names[h], lbl, (double)sum / scale);
			fprintf(f, "%s_count{%s} %llu\n", names[h], lbl, (unsigned long long)cum);
		}
	}
}

static void hosts(FILE *f)
{
	const struct fan_cov *c = fan_cov_get();
	size_t top = (size_t)bt_cfg.metrics_top_hosts;
	family(f, "baton_host_events_total", "counter",
	       "events committed from the host (the RELAY_METRICS_TOP_HOSTS busiest; the rest as host=\"_other\")");
	uint64_t other = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (i < top) {
			fputs("baton_host_events_total{host=\"", f);
			label(f, c->hosts[i].host);
			fprintf(f, "\"} %llu\n", (unsigned long long)c->hosts[i].n_events);
		} else {
			other += c->hosts[i].n_events;
		}
	}
	if (c->n > top)
		fprintf(f, "baton_host_events_total{host=\"_other\"} %llu\n", (unsigned long long)other);
	family(f, "baton_host_last_event_age_seconds", "gauge",
	       "time since the host's last committed event (host=\"_other\": the youngest of the rest)");
	uint64_t other_last = 0;
	for (size_t i = 0; i < c->n; i++) {
		const struct fan_cov_host *h = &c->hosts[i];
		if (!h->last_ms)
			continue;
		if (i >= top) {
			if (h->last_ms > other_last)
				other_last = h->last_ms;
			continue;
		}
		fputs("baton_host_last_event_age_seconds{host=\"", f);
		label(f, h->host);
		fprintf(f, "\"} %.3f\n", c->at_ms > h->last_ms ? (double)(c->at_ms - h->last_ms) / 1000.0 : 0.0);
	}
	if (other_last)
		fprintf(f, "baton_host_last_event_age_seconds{host=\"_other\"} %.3f\n",
			c->at_ms > other_last ? (double)(c->at_ms - other_last) / 1000.0 : 0.0);
	if (c->newest_ms) {
		family(f, "baton_last_event_age_seconds", "gauge", "time since the newest event committed from any host");
		fprintf(f, "baton_last_event_age_seconds %.3f\n",
			c->at_ms > c->newest_ms ? (double)(c->at_ms - c->newest_ms) / 1000.0 : 0.0);
	}
	family(f, "baton_coverage_hosts", "gauge",
	       "hosts by coverage state: known (host records), active (an event within RELAY_COVERAGE_LOOKBACK, not banned), "
	       "recent (an event within RELAY_COVERAGE_WINDOW)");
	fprintf(f, "baton_coverage_hosts{state=\"known\"} %zu\nbaton_coverage_hosts{state=\"active\"} %u\n"
		   "baton_coverage_hosts{state=\"recent\"} %u\n",
		c->n, c->active, c->recent);
	family(f, "baton_coverage_ratio", "gauge", "recent / active hosts (1 with no active host)");
	fprintf(f, "baton_coverage_ratio %.4f\n", c->active ? (double)c->recent / (double)c->active : 1.0);
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
	struct fan_stage st[FAN_N_STAGES];
	int n = fan_stages(st);
	char name[64], fam[96];

	family(f, "baton_up", "gauge", "1 when the stage has a pid and a fresh heartbeat");
	for (int i = 0; i < n; i++) {
		if (!st[i].pg)
			continue;
		int32_t pid = atomic_load(&st[i].pg->pid);
		uint64_t hb = atomic_load(&st[i].pg->heartbeat_ms);
		int up = pid > 0 && hb <= now && now - hb < (uint64_t)bt_cfg.heartbeat_timeout * 1000u;
		fprintf(f, "baton_up{role=\"%s\",index=\"%d\"} %d\n", bt_role_name(st[i].role), st[i].index, up);
	}
	if (bt_cfg.spawn_stages) {
		const struct bt_sup_page *sp = bt_shm_page(bt_proc.shm, 0);
		family(f, "baton_restarts_total", "counter", "times the supervisor restarted the stage (this relay run)");
		for (int i = 0; i < n; i++) {
			unsigned slot = bt_pipe_slot(st[i].role, st[i].index);
			if (st[i].pg && slot < sizeof sp->restarts / sizeof sp->restarts[0])
				fprintf(f, "baton_restarts_total{role=\"%s\",index=\"%d\"} %u\n", bt_role_name(st[i].role),
					st[i].index, atomic_load(&sp->restarts[slot]));
		}
	}
	family(f, "baton_heartbeat_age_seconds", "gauge", "time since the stage's last loop turn");
	for (int i = 0; i < n; i++) {
		if (!st[i].pg || atomic_load(&st[i].pg->pid) <= 0)
			continue;
		uint64_t hb = atomic_load(&st[i].pg->heartbeat_ms);
		fprintf(f, "baton_heartbeat_age_seconds{role=\"%s\",index=\"%d\"} %.3f\n", bt_role_name(st[i].role),
			st[i].index, hb <= now ? (double)(now - hb) / 1000.0 : 0.0);
	}
	family(f, "baton_progress_total", "counter", "input consumed by the stage");
	for (int i = 0; i < n; i++)
		if (st[i].pg)
			fprintf(f, "baton_progress_total{role=\"%s\",index=\"%d\"} %llu\n", bt_role_name(st[i].role),
				st[i].index, (unsigned long long)atomic_load(&st[i].pg->progress));
	for (int s = 0; s < BT_STAT__COUNT; s++) {
		lower(name, bt_stat_name((enum bt_stat)s), sizeof name);
		bool g = stat_is_gauge((enum bt_stat)s);
		snprintf(fam, sizeof fam, "baton_%s%s", name, g ? "" : "_total");
		family(f, fam, g ? "gauge" : "counter", stat_doc[s]);
		for (int i = 0; i < n; i++)
			if (st[i].pg && (stat_roles[s] & (1u << st[i].role)))
				fprintf(f, "%s{role=\"%s\",index=\"%d\"} %llu\n", fam, bt_role_name(st[i].role), st[i].index,
					(unsigned long long)bt_stat_get(st[i].pg, (enum bt_stat)s));
	}
	family(f, "baton_drops_total", "counter", "frames dropped, by the stage that decided and the reason");
	for (int i = 0; i < n; i++) {
		if (!st[i].pg)
			continue;
		for (int d = 1; d < BT_DROP__COUNT; d++) {
			if (!drop_possible(st[i].role, (enum bt_drop)d))
				continue;
			fprintf(f, "baton_drops_total{role=\"%s\",index=\"%d\",reason=\"%s\"} %llu\n",
				bt_role_name(st[i].role), st[i].index, bt_drop_name((enum bt_drop)d),
				(unsigned long long)atomic_load_explicit(&st[i].pg->drops[d], memory_order_relaxed));
		}
	}
	histograms(f, st, n);
	family(f, "baton_ring_used_bytes", "gauge", "bytes waiting in a pipeline ring");
	for (int k = 0; k < bt_proc.K; k++) {
		struct bt_ring *ri = bt_shm_ring(bt_proc.shm, bt_pipe_ring_in(k));
		struct bt_ring *ro = bt_shm_ring(bt_proc.shm, bt_pipe_ring_out(bt_proc.K, k));
		if (ri)
			fprintf(f, "baton_ring_used_bytes{ring=\"ingest_verify\",index=\"%d\"} %zu\n", k, bt_ring_used(ri));
		if (ro)
			fprintf(f, "baton_ring_used_bytes{ring=\"verify_store\",index=\"%d\"} %zu\n", k, bt_ring_used(ro));
	}
	family(f, "baton_bcast_last_seq", "gauge", "newest seq on the broadcast ring");
	fprintf(f, "baton_bcast_last_seq %llu\n", (unsigned long long)bt_bcast_last_seq(fan.ring));
	/* indigo's name where the meaning is the same (docs/ops.md has the whole mapping) */
	if (st[0].pg) {
		family(f, "relay_connected_inbound", "gauge", "upstream hosts subscribed now (indigo's name; = baton_hosts{role=\"ingest\"})");
		fprintf(f, "relay_connected_inbound %llu\n", (unsigned long long)bt_stat_get(st[0].pg, BT_STAT_HOSTS));
	}
	hosts(f);
	process_metrics(f, st, n);
	char why[512];
	int ok = fan_health_check(why, sizeof why);
	family(f, "baton_healthy", "gauge", "1 when /_health answers 200 (ok or degraded)");
	fprintf(f, "baton_healthy %d\n", ok);
	family(f, "baton_degraded", "gauge", "1 when /_health says degraded (coverage below RELAY_COVERAGE_MIN_PERCENT)");
	fprintf(f, "baton_degraded %d\n", ok && fan_cov_degraded(why, sizeof why) ? 1 : 0);
	if (fclose(f) != 0 || !out) {
		free(out);
		fan_xrpc_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	bt_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out, outn);
	free(out);
}

void fan_metrics_handle(struct bt_http_req *req, void *arg)
{
	const char *m = bt_http_req_method(req), *path = bt_http_req_path(req);
	if (strcmp(path, "/metrics") && strcmp(path, "/dash") && strcmp(path, "/dash.json"))
		fan_xrpc_error(req, 404, "NotFound", "this listener serves /metrics, /dash and /dash.json only");
	else if (strcmp(m, "GET") && strcmp(m, "HEAD"))
		fan_xrpc_error(req, 405, "MethodNotAllowed", NULL);
	else if (!strcmp(path, "/dash"))
		fan_dash_page(req);
	else if (!strcmp(path, "/dash.json"))
		fan_dash_json(req);
	else
		fan_metrics_respond(req);
}
