/*
 * NAME
 *	manyconsumers - N firehose consumers in one process: counts, seq order, latency
 * DESCRIPTION
 *	manyconsumers --url ws://HOST:PORT/xrpc/com.atproto.sync.subscribeRepos[?cursor=N] --n N
 *	              [--seconds S] [--idle S] [--count C] [--reconnect] [--arrivals FILE]
 *
 *	Opens N WebSocket connections (bt_ws on one libevent loop) to the same URL.  Per connection
 *	it counts frames and #commits, checks that seq strictly increases, and records the latency
 *	of each #commit as its receive time minus the frame's `time` field, like countconsumer, but
 *	without decoding whole frames: only the body's top-level `seq` and `time` are read (a
 *	shallow CBOR walk), so 100 connections at 2,000 ev/s stay cheap next to the relay.
 *	It stops after S seconds, when every connection has C commits, or after --idle seconds
 *	without a frame on any connection once frames arrived.  With --reconnect a connection that
 *	closes opens again with ?cursor=<last seq it saw> (kill tests of the fanout it was on).
 *	SIGTERM or SIGINT also stops it (the results are printed).
 *	--arrivals FILE writes "recv_time_s seq conn frame_time_s" for every #commit of connection 0
 *	(line-buffered, so a script can follow it).
 *	Prints one line of key=value results on stdout:
 *	  conns frames commits min_commits max_commits seq_order_errors gaps bytes mean_frame_bytes
 *	  reconnects closes lat_p50_ms lat_p99_ms lat_max_ms rate_per_s cpu_s
 *	gaps counts seq jumps of more than 1 on a connection (events it did not receive).
 * DIAGNOSTICS
 *	Exit 0 when every connection got at least one commit, 1 otherwise, 2 on a usage error.
 */
#include "bt_cbor.h"
#include "bt_ws.h"

#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_CONNS 10000

struct conn {
	int idx;
	struct bt_ws *ws;
	uint64_t commits, last_seq;
	bool have_seq;
};

static struct {
	const char *url;
	int n;
	double seconds, idle;
	uint64_t max_count;
	bool reconnect;
	FILE *arr;
	struct event_base *base;
	double t0, t_first, t_last;
	uint64_t frames, commits, order, gaps, bytes, reconnects, closes;
	int done_conns, open_conns;
	double *lat;
	size_t n_lat, cap_lat;
	struct conn c[MAX_CONNS];
} g;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "YYYY-MM-DDTHH:MM:SS[.frac]Z" -> seconds since the epoch, or -1. */
static double parse_time(const uint8_t *p, size_t n)
{
	char s[64];
	if (n < 20 || n >= sizeof s)
		return -1;
	memcpy(s, p, n);
	s[n] = 0;
	struct tm tm = { 0 };
	char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!e)
		return -1;
	double frac = 0;
	if (*e == '.') {
		double sc = 0.1;
		for (e++; *e >= '0' && *e <= '9'; e++, sc /= 10)
			frac += (*e - '0') * sc;
	}
	return (double)timegm(&tm) + frac;
}

/* Shallow read of a frame: header {op, t}, then the body's seq and time.  Returns 1 for a
   #commit, 0 for another frame, <0 if malformed. */
static int peek(const uint8_t *p, size_t n, int64_t *seq, double *ft)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it, k, v;
	bool commit = false;
	bt_cbor_rd_init(&r, p, n);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		return -1;
	for (uint64_t i = 0; i < it.n; i++) {
		if (bt_cbor_next(&r, &k) || k.type != BT_CBOR_TEXT)
			return -1;
		if (k.n == 1 && k.p[0] == 't') {
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_TEXT)
				return -1;
			commit = v.n == 7 && !memcmp(v.p, "#commit", 7);
		} else if (bt_cbor_skip(&r)) {
			return -1;
		}
	}
	*seq = -1;
	*ft = -1;
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		return -1;
	for (uint64_t i = 0; i < it.n; i++) {
		if (bt_cbor_next(&r, &k) || k.type != BT_CBOR_TEXT)
			return -1;
		if (k.n == 3 && !memcmp(k.p, "seq", 3)) {
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_UINT)
				return -1;
			*seq = (int64_t)v.u;
		} else if (k.n == 4 && !memcmp(k.p, "time", 4)) {
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_TEXT)
				return -1;
			*ft = parse_time(v.p, v.n);
		} else if (bt_cbor_skip(&r)) {
			return -1;
		}
	}
	return commit;
}

static void open_conn(struct conn *c);

static void on_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
	struct conn *c = arg;
	double t = now_s();
	int64_t seq = -1;
	double ft;
	g.frames++;
	g.bytes += n;
	int k = peek(p, n, &seq, &ft);
	if (seq >= 0) {
		if (c->have_seq && (uint64_t)seq <= c->last_seq)
			g.order++;
		else if (c->have_seq && (uint64_t)seq > c->last_seq + 1)
			g.gaps++;
		c->have_seq = true;
		c->last_seq = (uint64_t)seq;
	}
	if (k != 1)
		return;
	if (!g.commits)
		g.t_first = t;
	g.t_last = t;
	g.commits++;
	c->commits++;
	if (ft > 0) {
		if (g.n_lat == g.cap_lat) {
			size_t nc = g.cap_lat ? g.cap_lat * 2 : 1 << 20;
			double *nl = realloc(g.lat, nc * sizeof *nl);
			if (nl)
				g.lat = nl, g.cap_lat = nc;
		}
		if (g.n_lat < g.cap_lat)
			g.lat[g.n_lat++] = t - ft;
	}
	if (g.arr && c->idx == 0)
		fprintf(g.arr, "%.6f %" PRId64 " %d %.6f\n", t, seq, c->idx, ft);
	if (g.max_count && c->commits == g.max_count) {
		if (++g.done_conns == g.n)
			event_base_loopbreak(g.base);
	}
}

static void reopen_cb(evutil_socket_t fd, short what, void *arg)
{
	open_conn(arg);
}

static void on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	struct conn *c = arg;
	c->ws = NULL;
	if (g.closes++ < 5)
		fprintf(stderr, "manyconsumers: connection %d closed %d %s after %" PRIu64 " commits\n", c->idx, code,
			reason ? reason : "", c->commits);
	g.open_conns--;
	if (g.reconnect) {
		/* Soon, not at once: the listener may be the process that just died. */
		struct timeval tv = { 0, 20000 };
		event_base_once(g.base, -1, EV_TIMEOUT, reopen_cb, c, &tv);
		g.reconnects++;
	} else if (g.open_conns <= 0) {
		event_base_loopbreak(g.base);
	}
}

static void open_conn(struct conn *c)
{
	static const struct bt_ws_cbs cbs = { .on_msg = on_msg, .on_close = on_close };
	struct bt_ws_opts o = { .max_msg = 16u << 20, .user_agent = "manyconsumers" };
	char url[1200];
	if (c->have_seq) {
		const char *q = strchr(g.url, '?');
		snprintf(url, sizeof url, "%.*s?cursor=%" PRIu64, (int)(q ? q - g.url : (long)strlen(g.url)), g.url,
			 c->last_seq);
	} else {
		snprintf(url, sizeof url, "%s", g.url);
	}
	c->ws = bt_ws_connect(g.base, url, &cbs, c, &o);
	if (c->ws)
		g.open_conns++;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	double t = now_s();
	if ((g.seconds > 0 && t - g.t0 >= g.seconds) || (g.idle > 0 && g.frames && t - g.t_last >= g.idle))
		event_base_loopbreak(g.base);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(g.base); /* SIGTERM/SIGINT: stop and print the results */
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double q)
{
	if (!g.n_lat)
		return 0;
	size_t i = (size_t)(q * (double)(g.n_lat - 1) + 0.5);
	return g.lat[i] * 1000.0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "url", 1, 0, 'u' },      { "n", 1, 0, 'n' },         { "seconds", 1, 0, 's' },
					    { "idle", 1, 0, 'i' },     { "count", 1, 0, 'c' },     { "reconnect", 0, 0, 'r' },
					    { "arrivals", 1, 0, 'a' }, { 0, 0, 0, 0 } };
	int o;
	g.n = 1;
	const char *arr = NULL;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'u': g.url = optarg; break;
		case 'n': g.n = atoi(optarg); break;
		case 's': g.seconds = atof(optarg); break;
		case 'i': g.idle = atof(optarg); break;
		case 'c': g.max_count = strtoull(optarg, NULL, 10); break;
		case 'r': g.reconnect = true; break;
		case 'a': arr = optarg; break;
		default: g.url = NULL; optind = argc; break;
		}
	}
	if (!g.url || g.n < 1 || g.n > MAX_CONNS) {
		fprintf(stderr, "usage: manyconsumers --url WS_URL --n N [--seconds S] [--idle S] [--count C] "
				"[--reconnect] [--arrivals FILE]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (arr && !(g.arr = fopen(arr, "w"))) {
		perror(arr);
		return 2;
	}
	if (g.arr)
		setvbuf(g.arr, NULL, _IOLBF, 0);
	g.base = event_base_new();
	g.t0 = now_s();
	for (int i = 0; i < g.n; i++) {
		g.c[i].idx = i;
		open_conn(&g.c[i]);
	}
	struct event *tm = event_new(g.base, -1, EV_PERSIST, on_timer, NULL);
	struct timeval tv = { 0, 100000 };
	event_add(tm, &tv);
	struct event *s1 = evsignal_new(g.base, SIGTERM, on_signal, NULL);
	struct event *s2 = evsignal_new(g.base, SIGINT, on_signal, NULL);
	event_add(s1, NULL);
	event_add(s2, NULL);
	event_base_dispatch(g.base);
	uint64_t mn = UINT64_MAX, mx = 0;
	for (int i = 0; i < g.n; i++) {
		mn = g.c[i].commits < mn ? g.c[i].commits : mn;
		mx = g.c[i].commits > mx ? g.c[i].commits : mx;
	}
	qsort(g.lat, g.n_lat, sizeof *g.lat, cmp_d);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	double span = g.t_last - g.t_first;
	printf("conns=%d frames=%" PRIu64 " commits=%" PRIu64 " min_commits=%" PRIu64 " max_commits=%" PRIu64
	       " seq_order_errors=%" PRIu64 " gaps=%" PRIu64 " bytes=%" PRIu64 " mean_frame_bytes=%.1f reconnects=%" PRIu64
	       " closes=%" PRIu64 " lat_p50_ms=%.3f lat_p99_ms=%.3f lat_max_ms=%.3f rate_per_s=%.1f cpu_s=%.3f\n",
	       g.n, g.frames, g.commits, mn, mx, g.order, g.gaps, g.bytes, g.frames ? (double)g.bytes / (double)g.frames : 0,
	       g.reconnects, g.closes, pct(0.5), pct(0.99), g.n_lat ? g.lat[g.n_lat - 1] * 1000 : 0,
	       span > 0 ? (double)g.commits / span : 0, cpu);
	if (g.arr)
		fclose(g.arr);
	return mn > 0 ? 0 : 1;
}
