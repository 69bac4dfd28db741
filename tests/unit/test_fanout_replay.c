/*
 * NAME
 *	test_fanout_replay - baton-fanout as a real process: cursors, replay -> live, HTTP routes
 * DESCRIPTION
 *	Plays supervisor and store: creates a segment with the supervisor's layout (K=1, N=1),
 *	a primary RocksDB, fake stats pages for ingest/store/verify, and a ZeroMQ server on the
 *	ingest's control endpoint.  Starts baton-fanout (next to this binary: <build>/baton-fanout,
 *	or $BT_FANOUT_BIN) and checks, while events keep being published the way the store does
 *	(RocksDB first, then the broadcast ring):
 *	  - live, cursor-in-window, cursor 0, old cursor (#info OutdatedCursor), cursor at the
 *	    window's edge, future cursor (FutureCursor) — each consumer receives every event
 *	    exactly once, in order, across the RocksDB -> ring switch (lessons 6, 13, 14);
 *	  - paused consumers (one lapped by the small ring, one replaying) catch up with no gap;
 *	  - a consumer whose position leaves the window (events deleted) gets ConsumerTooSlow;
 *	  - a seq committed but missing on the ring is filled from RocksDB for a live consumer;
 *	  - SIGTERM closes consumers with 1012;
 *	  - /, 404, 501, /_health (200, then 503 when the ingest stops heartbeating: lesson 10),
 *	    /metrics, requestCrawl forwarding (ok, refused, bad body).
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; the temp dir is kept on failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "bt_buf.h"
#include "bt_cbor.h"
#include "bt_ctl.h"
#include "bt_db.h"
#include "bt_fh.h"
#include "bt_pipe.h"
#include "bt_shm.h"
#include "bt_test.h"
#include "bt_ws.h"

#define FIRST_SEQ 11  /* the "window" starts here: seqs 1..10 were retired */
#define PRE_EVENTS 2000
#define LIVE_EVENTS 10000
#define BCAST_CAP (256u << 10)

static char dir[256];
static int port;
static int mport; /* RELAY_METRICS_LISTEN of fanout 0..N-1 (shared) */
#define N_FANOUT 2 /* two processes share the port (SO_REUSEPORT) */
static pid_t child[N_FANOUT];
static struct bt_shm *shm;
static struct bt_ring *ring;
static struct bt_db *db;
static struct event_base *base;
static uint64_t published; /* last seq published */
static uint64_t pub_target;
static uint64_t skip_ring_seq; /* committed to RocksDB but never put on the ring (test_ring_gap) */
static struct bt_buf fbuf;
static uint8_t padbuf[8192];

/* ---- fake stages: heartbeats and the ingest's control endpoint ---- */

static atomic_bool stop_thread, starve_ingest;
static char crawl_seen[256];
static pthread_mutex_t crawl_mu = PTHREAD_MUTEX_INITIALIZER;

static struct bt_stats_page *page(enum bt_role r, int idx)
{
	return bt_shm_page(shm, bt_pipe_page_of_slot(bt_pipe_slot(r, idx)));
}

static void on_ctl(void *arg, struct bt_ctl_req *req, json_t *msg)
{
	const char *op = json_string_value(json_object_get(msg, "op"));
	const char *h = json_string_value(json_object_get(msg, "hostname"));
	pthread_mutex_lock(&crawl_mu);
	snprintf(crawl_seen, sizeof crawl_seen, "%s:%s", op ? op : "?", h ? h : "?");
	pthread_mutex_unlock(&crawl_mu);
	if (h && !strcmp(h, "good.example"))
		bt_ctl_reply(req, json_pack("{s:b}", "ok", 1));
	else
		bt_ctl_reply(req, json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "status", 400, "error", "HostUnreachable",
					    "message", "describeServer failed"));
}

static void *fake_stages(void *arg)
{
	char ep[512];
	snprintf(ep, sizeof ep, "ipc://%s/baton-t-ingest.sock", dir);
	struct bt_ctl_srv *srv = bt_ctl_srv_new(NULL, ep, on_ctl, NULL);
	while (!atomic_load(&stop_thread)) {
		uint64_t now = bt_now_ms();
		if (!atomic_load(&starve_ingest))
			atomic_store(&page(BT_ROLE_INGEST, 0)->heartbeat_ms, now);
		atomic_store(&page(BT_ROLE_STORE, 0)->heartbeat_ms, now);
		atomic_store(&page(BT_ROLE_VERIFY, 0)->heartbeat_ms, now);
		if (srv)
			bt_ctl_srv_poll(srv);
		usleep(10000);
	}
	bt_ctl_srv_free(&srv);
	return NULL;
}

/* ---- the store's side: events into RocksDB, then onto the ring ---- */

static void make_frame(uint64_t seq)
{
	size_t pad = 500 + (size_t)((seq * 7919u) % 5500u);
	bt_buf_reset(&fbuf);
	bt_cbor_w_map(&fbuf, 2);
	bt_cbor_w_str(&fbuf, "t");
	bt_cbor_w_str(&fbuf, "#identity");
	bt_cbor_w_str(&fbuf, "op");
	bt_cbor_w_uint(&fbuf, 1);
	bt_cbor_w_map(&fbuf, 4);
	bt_cbor_w_str(&fbuf, "did");
	bt_cbor_w_str(&fbuf, "did:plc:fanouttestfanouttestfa");
	bt_cbor_w_str(&fbuf, "pad");
	bt_cbor_w_bytes(&fbuf, padbuf, pad);
	bt_cbor_w_str(&fbuf, "seq");
	bt_cbor_w_uint(&fbuf, seq);
	bt_cbor_w_str(&fbuf, "time");
	bt_cbor_w_str(&fbuf, "2024-01-01T00:00:00.000Z");
}

static int publish_one(uint64_t seq)
{
	static uint8_t rec[16 + 64 + 8192];
	make_frame(seq);
	const char *did = "did:plc:fanouttestfanouttestfa";
	struct bt_ev_hdr h = { .time_ms = bt_wall_ms(), .frame_len = (uint32_t)fbuf.len,
			       .did_len = (uint16_t)strlen(did), .ev = BT_EV_IDENTITY };
	memcpy(rec, &h, sizeof h);
	memcpy(rec + sizeof h, did, h.did_len);
	memcpy(rec + sizeof h + h.did_len, fbuf.p, fbuf.len);
	char k[10];
	bt_key_event(k, seq);
	int rc = bt_db_put(db, k, sizeof k, rec, sizeof h + h.did_len + fbuf.len);
	if (rc < 0)
		return rc;
	rc = seq == skip_ring_seq ? 0 : bt_bcast_publish(ring, seq, BT_REC_EVENT, fbuf.p, fbuf.len);
	if (rc < 0)
		return rc;
	published = seq;
	return 0;
}

static struct event *pub_ev;
static void on_pub(evutil_socket_t fd, short what, void *arg)
{
	for (int i = 0; i < 25 && published < pub_target; i++)
		if (publish_one(published + 1) < 0) {
			fprintf(stderr, "publish failed\n");
			pub_target = published;
		}
}

/* ---- consumers ---- */

struct cl {
	const char *name;
	struct bt_ws *ws;
	bool open, closed, pause_on_open;
	int close_code;
	uint64_t first, last, n;
	int bad;            /* order violations or undecodable frames */
	int infos;
	uint64_t n_at_info; /* events received before the #info */
	char info[64], error[64];
};

static struct bt_fh_msg msg;

static void cl_open(struct bt_ws *ws, void *arg)
{
	struct cl *c = arg;
	c->open = true;
	if (c->pause_on_open)
		bt_ws_pause(ws);
}

static void cl_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
	struct cl *c = arg;
	struct bt_fh_peek pk;
	if (opcode != BT_WS_BINARY || bt_fh_peek(p, n, &pk) < 0) {
		c->bad++;
		return;
	}
	if (pk.op == -1) {
		snprintf(c->error, sizeof c->error, "%.*s", (int)pk.error.n, (const char *)pk.error.p);
		return;
	}
	if (pk.type == BT_FH_INFO) {
		c->infos++;
		c->n_at_info = c->n;
		if (bt_fh_decode(p, n, &msg, NULL) == 0)
			snprintf(c->info, sizeof c->info, "%.*s", (int)msg.name.n, (const char *)msg.name.p);
		return;
	}
	if (!pk.has_seq) {
		c->bad++;
		return;
	}
	uint64_t seq = (uint64_t)pk.seq;
	if (c->n == 0)
		c->first = seq;
	else if (seq != c->last + 1) {
		if (c->bad < 5)
			fprintf(stderr, "%s: seq %llu after %llu\n", c->name, (unsigned long long)seq,
				(unsigned long long)c->last);
		c->bad++;
	}
	c->last = seq;
	c->n++;
}

static void cl_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	struct cl *c = arg;
	c->closed = true;
	c->close_code = code;
	c->ws = NULL;
}

static void cl_connect(struct cl *c, const char *name, const char *query, bool pause)
{
	memset(c, 0, sizeof *c);
	c->name = name;
	c->pause_on_open = pause;
	char url[256];
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/xrpc/com.atproto.sync.subscribeRepos%s", port, query);
	static const struct bt_ws_cbs cbs = { .on_open = cl_open, .on_msg = cl_msg, .on_close = cl_close };
	struct bt_ws_opts o = { .max_msg = 6000000, .user_agent = "test_fanout_replay" };
	c->ws = bt_ws_connect(base, url, &cbs, c, &o);
	if (!c->ws)
		c->closed = true;
}

/* ---- running the loop until a condition ---- */

static bool (*pred)(void);
static uint64_t deadline;
static void on_check(evutil_socket_t fd, short what, void *arg)
{
	if (pred() || bt_now_ms() > deadline)
		event_base_loopbreak(base);
}

static bool run_until(bool (*p)(void), int timeout_ms)
{
	pred = p;
	deadline = bt_now_ms() + (uint64_t)timeout_ms;
	struct event *ev = event_new(base, -1, EV_PERSIST, on_check, NULL);
	struct timeval tv = { 0, 10000 };
	event_add(ev, &tv);
	event_base_dispatch(base);
	event_free(ev);
	return p();
}

static bool always_false(void)
{
	return false;
}

static void run_for(int ms)
{
	run_until(always_false, ms);
}

/* ---- a blocking HTTP/1.1 client ---- */

static int http(const char *method, const char *path, const char *body, char *resp, size_t cap, char **bodyp)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { 25, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	char req[1024];
	int n;
	if (body)
		n = snprintf(req, sizeof req,
			     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
			     "Content-Length: %zu\r\n\r\n%s",
			     method, path, strlen(body), body);
	else
		n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method,
			     path);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	size_t got = 0;
	ssize_t r;
	while (got + 1 < cap && (r = read(fd, resp + got, cap - 1 - got)) > 0)
		got += (size_t)r;
	resp[got] = 0;
	close(fd);
	int status = 0;
	if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
		return -1;
	char *b = strstr(resp, "\r\n\r\n");
	if (bodyp)
		*bodyp = b ? b + 4 : resp + got;
	return status;
}

static char resp[1 << 20];

static void test_http(void)
{
	char *body;
	int st = http("GET", "/", NULL, resp, sizeof resp, &body);
	CHECKF(st == 200, "GET / -> %d", st);
	CHECK(strstr(resp, "Server: baton/") != NULL);
	CHECK(strstr(body, "relay") != NULL);

	st = http("GET", "/nope", NULL, resp, sizeof resp, &body);
	CHECKF(st == 404, "GET /nope -> %d", st);
	CHECK(strstr(body, "\"NotFound\"") != NULL);
	CHECK(strstr(resp, "Server: baton/") != NULL);

	st = http("GET", "/xrpc/com.atproto.sync.getBlob", NULL, resp, sizeof resp, &body);
	CHECKF(st == 501, "getBlob -> %d", st);
	CHECK(strstr(body, "MethodNotImplemented") != NULL);

	st = http("GET", "/xrpc/com.atproto.sync.subscribeRepos?cursor=abc", NULL, resp, sizeof resp, &body);
	CHECKF(st == 400, "bad cursor -> %d", st);
	CHECK(strstr(body, "InvalidRequest") != NULL);

	st = http("GET", "/_health", NULL, resp, sizeof resp, &body);
	CHECKF(st == 200, "health -> %d %s", st, body);
	CHECK(strstr(body, "\"ok\"") != NULL);
	st = http("GET", "/xrpc/_health", NULL, resp, sizeof resp, &body);
	CHECKF(st == 200, "xrpc health -> %d %s", st, body);

	st = http("GET", "/metrics", NULL, resp, sizeof resp, &body);
	CHECKF(st == 404, "metrics on the public port -> %d", st);
	int pub = port;
	port = mport;
	st = http("GET", "/metrics", NULL, resp, sizeof resp, &body);
	port = pub;
	CHECKF(st == 200, "metrics -> %d", st);
	CHECK(strstr(body, "baton_frames_out_total{role=\"fanout\",index=\"0\"}") != NULL);
	CHECK(strstr(body, "baton_drops_total{role=\"verify\",index=\"0\",reason=\"bad_sig\"} 0") != NULL);
	CHECK(strstr(body, "baton_drops_total{role=\"fanout\"") == NULL);
	CHECK(strstr(body, "baton_consumers{role=\"ingest\"") == NULL);
	CHECK(strstr(body, "baton_up{role=\"ingest\",index=\"0\"} 1") != NULL);

	st = http("POST", "/xrpc/com.atproto.sync.requestCrawl", "{\"hostname\":\"good.example\"}", resp, sizeof resp,
		  &body);
	CHECKF(st == 200, "requestCrawl ok -> %d %s", st, body);
	CHECK(!strcmp(body, "{}"));
	pthread_mutex_lock(&crawl_mu);
	CHECKF(!strcmp(crawl_seen, "requestCrawl:good.example"), "ingest saw %s", crawl_seen);
	pthread_mutex_unlock(&crawl_mu);

	st = http("POST", "/xrpc/com.atproto.sync.requestCrawl", "{\"hostname\":\"dead.example\"}", resp, sizeof resp,
		  &body);
	CHECKF(st == 400, "requestCrawl refused -> %d", st);
	CHECK(strstr(body, "\"HostUnreachable\"") != NULL);
	CHECK(strstr(body, "describeServer failed") != NULL);

	st = http("POST", "/xrpc/com.atproto.sync.requestCrawl", "not json", resp, sizeof resp, &body);
	CHECKF(st == 400, "requestCrawl bad body -> %d", st);
	CHECK(strstr(body, "InvalidRequest") != NULL);
	st = http("POST", "/xrpc/com.atproto.sync.requestCrawl", "{\"host\":\"x\"}", resp, sizeof resp, &body);
	CHECKF(st == 400, "requestCrawl no hostname -> %d", st);

	/* Lesson 10: a stage that stops heartbeating makes health fail. */
	atomic_store(&starve_ingest, true);
	run_for(2600); /* RELAY_HEARTBEAT_TIMEOUT=2 */
	st = http("GET", "/_health", NULL, resp, sizeof resp, &body);
	CHECKF(st == 503, "health with a silent ingest -> %d %s", st, body);
	CHECK(strstr(body, "unhealthy") != NULL && strstr(body, "ingest") != NULL);
	port = mport;
	st = http("GET", "/metrics", NULL, resp, sizeof resp, &body);
	port = pub;
	CHECK(strstr(body, "baton_up{role=\"ingest\",index=\"0\"} 0") != NULL);
	atomic_store(&starve_ingest, false);
	run_for(300);
	st = http("GET", "/_health", NULL, resp, sizeof resp, &body);
	CHECKF(st == 200, "health recovered -> %d %s", st, body);
}

/* ---- the replay/live scenario ---- */

static uint64_t fstat_sum(enum bt_stat st)
{
	uint64_t v = 0;
	for (int i = 0; i < N_FANOUT; i++)
		v += bt_stat_get(page(BT_ROLE_FANOUT, i), st);
	return v;
}

static struct cl A, B, C, D, E, F, G, H;

static bool all_open(void)
{
	struct cl *v[] = { &A, &B, &C, &D, &E, &G, &H };
	for (unsigned i = 0; i < sizeof v / sizeof *v; i++)
		if (!v[i]->open || v[i]->closed)
			return false;
	return F.closed;
}

static bool all_caught_up(void)
{
	struct cl *v[] = { &A, &B, &C, &D, &E, &G, &H };
	for (unsigned i = 0; i < sizeof v / sizeof *v; i++)
		if (v[i]->last != pub_target || v[i]->closed)
			return false;
	return published == pub_target;
}

static bool published_all(void)
{
	return published == pub_target;
}

static void check_cl(struct cl *c, uint64_t first, int infos)
{
	CHECKF(!c->closed, "%s closed (%d)", c->name, c->close_code);
	CHECKF(c->bad == 0, "%s: %d out-of-order or bad frames", c->name, c->bad);
	CHECKF(c->first == first, "%s: first seq %llu, want %llu", c->name, (unsigned long long)c->first,
	       (unsigned long long)first);
	CHECKF(c->last == pub_target, "%s: last seq %llu, want %llu", c->name, (unsigned long long)c->last,
	       (unsigned long long)pub_target);
	CHECKF(c->n == pub_target - first + 1, "%s: %llu events, want %llu", c->name, (unsigned long long)c->n,
	       (unsigned long long)(pub_target - first + 1));
	CHECKF(c->infos == infos, "%s: %d #info frames", c->name, c->infos);
	CHECKF(c->error[0] == 0, "%s: error frame %s", c->name, c->error);
}

static void test_replay_live(void)
{
	uint64_t pre = published;
	cl_connect(&A, "live", "", false);
	cl_connect(&B, "cursor-mid", "?cursor=1000", false);
	cl_connect(&C, "cursor-0", "?cursor=0", false);
	cl_connect(&D, "cursor-old", "?cursor=3", false);
	cl_connect(&E, "cursor-edge", "?cursor=10", false);
	char q[64];
	snprintf(q, sizeof q, "?cursor=%llu", (unsigned long long)(pre + 1000));
	cl_connect(&F, "cursor-future", q, false);
	cl_connect(&G, "live-paused", "", true);
	cl_connect(&H, "cursor-paused", "?cursor=500", true);
	CHECK(run_until(all_open, 20000));
	CHECKF(!strcmp(F.error, "FutureCursor"), "future cursor got error '%s'", F.error);
	CHECK(F.closed && F.n == 0);

	/* Keep publishing while the replaying consumers switch to the ring. */
	pub_target = pre + LIVE_EVENTS;
	CHECK(run_until(published_all, 120000));
	run_for(300);
	bt_ws_resume(G.ws);
	bt_ws_resume(H.ws);
	CHECK(run_until(all_caught_up, 120000));

	check_cl(&A, pre + 1, 0);
	check_cl(&B, 1001, 0);
	check_cl(&C, FIRST_SEQ, 0);
	check_cl(&D, FIRST_SEQ, 1);
	CHECKF(!strcmp(D.info, "OutdatedCursor") && D.n_at_info == 0, "old cursor: info '%s' after %llu events",
	       D.info, (unsigned long long)D.n_at_info);
	check_cl(&E, FIRST_SEQ, 0);
	check_cl(&G, pre + 1, 0);
	check_cl(&H, 501, 0);

	uint64_t overruns = fstat_sum(BT_STAT_OVERRUNS), replayed = fstat_sum(BT_STAT_REPLAYED);
	uint64_t out = fstat_sum(BT_STAT_FRAMES_OUT), consumers = fstat_sum(BT_STAT_CONSUMERS);
	CHECKF(overruns >= 1, "overruns %llu", (unsigned long long)overruns);
	CHECK(replayed > 0);
	CHECK(out >= 7 * (uint64_t)LIVE_EVENTS);
	CHECKF(consumers == 7, "consumers %llu", (unsigned long long)consumers);
	uint64_t last = 0;
	for (int i = 0; i < N_FANOUT; i++)
		if (bt_stat_get(page(BT_ROLE_FANOUT, i), BT_STAT_LAST_SEQ) > last)
			last = bt_stat_get(page(BT_ROLE_FANOUT, i), BT_STAT_LAST_SEQ);
	CHECK(last == pub_target);
	fprintf(stderr, "replayed %llu, overruns %llu, frames out %llu, consumers per fanout:", (unsigned long long)replayed,
		(unsigned long long)overruns, (unsigned long long)out);
	for (int i = 0; i < N_FANOUT; i++)
		fprintf(stderr, " %llu", (unsigned long long)bt_stat_get(page(BT_ROLE_FANOUT, i), BT_STAT_CONSUMERS));
	fputc('\n', stderr);
}

/* ---- a consumer that falls out of the window ---- */

static struct cl S, T;

static bool s_open(void)
{
	return S.open;
}

static bool s_done(void)
{
	return S.closed && T.last == pub_target;
}

static void test_too_slow(void)
{
	/* Everyone else leaves first; A stays for the shutdown test. */
	struct cl *v[] = { &B, &C, &D, &E, &G, &H };
	for (unsigned i = 0; i < sizeof v / sizeof *v; i++)
		if (v[i]->ws)
			bt_ws_close(v[i]->ws, 1000, "bye");
	cl_connect(&S, "slow", "?cursor=11", true);
	CHECK(run_until(s_open, 20000));
	run_for(500);
	/* Retention: the window now starts 100 events before the newest. */
	uint64_t oldest = published - 99;
	char k0[10], k1[10];
	bt_key_event(k0, 0);
	bt_key_event(k1, oldest);
	struct bt_db_batch *b = bt_db_batch_new();
	bt_db_batch_del_range(b, k0, sizeof k0, k1, sizeof k1);
	CHECK(bt_db_write(db, b) == 0);
	bt_db_batch_free(&b);
	pub_target = published + 1000;
	CHECK(run_until(published_all, 60000));
	cl_connect(&T, "cursor-old-2", "?cursor=3", false);
	bt_ws_resume(S.ws);
	CHECK(run_until(s_done, 60000));
	CHECKF(!strcmp(S.error, "ConsumerTooSlow"), "slow consumer got error '%s' (%llu events, last %llu, closed %d code %d)", S.error,
	       (unsigned long long)S.n, (unsigned long long)S.last, S.closed, S.close_code);
	CHECK(S.closed && S.bad == 0 && S.first == 12 && S.last < oldest);
	CHECKF(T.first == oldest && T.infos == 1 && !strcmp(T.info, "OutdatedCursor") && T.bad == 0,
	       "old cursor after retention: first %llu infos %d", (unsigned long long)T.first, T.infos);
	CHECK(A.last == pub_target && A.bad == 0);
	CHECK(fstat_sum(BT_STAT_SLOW_KICKS) == 1);
}

static bool a_caught_up(void)
{
	return published == pub_target && A.last == pub_target;
}

/* Issue 5.3: a seq in RocksDB that never reached the ring (a store killed inside its publish,
   a record too big for the ring).  A live consumer must get it from RocksDB, not skip it. */
static void test_ring_gap(void)
{
	uint64_t gaps = fstat_sum(BT_STAT_RING_GAPS);
	int bad = A.bad;
	skip_ring_seq = published + 5;
	pub_target = published + 20;
	CHECK(run_until(a_caught_up, 30000));
	CHECKF(A.bad == bad, "live consumer: %d seq jumps across the ring gap at %llu", A.bad - bad,
	       (unsigned long long)skip_ring_seq);
	CHECKF(fstat_sum(BT_STAT_RING_GAPS) > gaps, "ring_gaps %llu", (unsigned long long)fstat_sum(BT_STAT_RING_GAPS));
}

/* A WebSocket client on a raw socket, to see the close code on the wire (wslay-based clients
   turn the 1012 they receive into a protocol error 1002). */
static int raw_ws_open(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { 20, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	const char *req = "GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			  "Sec-WebSocket-Version: 13\r\n\r\n";
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 || write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	char h[2048];
	size_t n = 0;
	while (n + 1 < sizeof h && read(fd, h + n, 1) == 1) {
		n++;
		if (n >= 4 && !memcmp(h + n - 4, "\r\n\r\n", 4))
			break;
	}
	h[n] = 0;
	if (strncmp(h, "HTTP/1.1 101", 12) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int read_full(int fd, void *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)p + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* Reads frames until the close frame; returns its code, -1 on EOF/timeout. */
static int raw_ws_close_code(int fd)
{
	static uint8_t chunk[65536];
	for (;;) {
		uint8_t h[2], x[8];
		if (read_full(fd, h, 2) < 0)
			return -1;
		int opcode = h[0] & 0x0f;
		uint64_t len = h[1] & 0x7f;
		if (len == 126) {
			if (read_full(fd, x, 2) < 0)
				return -1;
			len = (uint64_t)x[0] << 8 | x[1];
		} else if (len == 127) {
			if (read_full(fd, x, 8) < 0)
				return -1;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | x[i];
		}
		uint8_t head[2] = { 0, 0 };
		uint64_t left = len, off = 0;
		while (left) {
			size_t c = left > sizeof chunk ? sizeof chunk : (size_t)left;
			if (read_full(fd, chunk, c) < 0)
				return -1;
			for (size_t i = 0; i < c && off + i < 2; i++)
				head[off + i] = chunk[i];
			off += c;
			left -= c;
		}
		if (opcode == 8)
			return len >= 2 ? (head[0] << 8 | head[1]) : 1005;
	}
}

static bool a_closed(void)
{
	return A.closed && T.closed;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof a;
	bind(fd, (struct sockaddr *)&a, sizeof a);
	getsockname(fd, (struct sockaddr *)&a, &l);
	close(fd);
	return ntohs(a.sin_port);
}

static bool fanout_ready(void)
{
	for (int i = 0; i < N_FANOUT; i++)
		if (atomic_load(&page(BT_ROLE_FANOUT, i)->pid) <= 0)
			return false;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

int main(int argc, char **argv)
{
	char bin[PATH_MAX];
	const char *env_bin = getenv("BT_FANOUT_BIN");
	if (env_bin) {
		snprintf(bin, sizeof bin, "%s", env_bin);
	} else {
		char self[PATH_MAX];
		snprintf(self, sizeof self, "%s", argv[0]);
		snprintf(bin, sizeof bin, "%s/../baton-fanout", dirname(self));
	}
	if (access(bin, X_OK) != 0) {
		fprintf(stderr, "FAIL: %s not found (build it, or set BT_FANOUT_BIN)\n", bin);
		CHECK(0);
		BT_TEST_END();
	}
	snprintf(dir, sizeof dir, "/tmp/bt-fanout-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof padbuf; i++)
		padbuf[i] = (uint8_t)(i * 31);

	/* The supervisor's layout with K=1, N=1. */
	struct bt_shm_layout lay;
	memset(&lay, 0, sizeof lay);
	int K = 1;
	lay.n_rings = 2 * K + 1;
	lay.rings[bt_pipe_ring_in(0)].kind = BT_RING_SPSC;
	lay.rings[bt_pipe_ring_in(0)].capacity = 1u << 16;
	lay.rings[bt_pipe_ring_in(0)].bell = bt_pipe_bell_verify(0);
	lay.rings[bt_pipe_ring_out(K, 0)].kind = BT_RING_SPSC;
	lay.rings[bt_pipe_ring_out(K, 0)].capacity = 1u << 16;
	lay.rings[bt_pipe_ring_out(K, 0)].bell = bt_pipe_bell_store();
	lay.rings[bt_pipe_ring_bcast(K)].kind = BT_RING_BCAST;
	lay.rings[bt_pipe_ring_bcast(K)].capacity = BCAST_CAP;
	lay.rings[bt_pipe_ring_bcast(K)].bell = bt_pipe_bell_fanout(K);
	lay.n_bells = (unsigned)K + 2;
	lay.n_pages = BT_PIPE_N_PAGES;
	char path[512];
	snprintf(path, sizeof path, "%s/baton-t.shm", dir);
	int rc = bt_shm_create(path, &lay, &shm);
	CHECKF(rc == 0, "bt_shm_create %d", rc);
	if (rc)
		BT_TEST_END();
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	sp->n_verify = 1;
	sp->n_fanout = N_FANOUT;
	atomic_store(&sp->pid, getpid());
	ring = bt_shm_ring(shm, bt_pipe_ring_bcast(K));
	atomic_store(&page(BT_ROLE_INGEST, 0)->pid, getpid());
	atomic_store(&page(BT_ROLE_STORE, 0)->pid, getpid());
	atomic_store(&page(BT_ROLE_VERIFY, 0)->pid, getpid());

	char dbdir[300];
	snprintf(dbdir, sizeof dbdir, "%s/db", dir);
	rc = bt_db_open_primary(dbdir, false, &db);
	CHECKF(rc == 0, "open primary %d", rc);
	if (rc)
		BT_TEST_END();
	for (uint64_t s = FIRST_SEQ; s < FIRST_SEQ + PRE_EVENTS; s++)
		if (publish_one(s) < 0) {
			CHECK(0);
			break;
		}
	pub_target = published;

	bt_ctl_context();
	pthread_t th;
	pthread_create(&th, NULL, fake_stages, NULL);

	port = free_port();
	mport = free_port();
	for (int i = 0; i < N_FANOUT; i++) {
		child[i] = fork();
		if (child[i] == 0) {
			char b[64];
			setenv("RELAY_SHM_DIR", dir, 1);
			setenv("RELAY_NAME", "t", 1);
			setenv("RELAY_DATA_DIR", dir, 1);
			snprintf(b, sizeof b, "127.0.0.1:%d", port);
			setenv("RELAY_API_BIND", b, 1);
			snprintf(b, sizeof b, "127.0.0.1:%d", mport);
			setenv("RELAY_METRICS_LISTEN", b, 1);
			snprintf(b, sizeof b, "%d", i);
			setenv("BATON_INDEX", b, 1);
			setenv("RELAY_HEARTBEAT_TIMEOUT", "2", 1);
			if (!getenv("RELAY_LOG_LEVEL"))
				setenv("RELAY_LOG_LEVEL", "warn", 1);
			execl(bin, bin, (char *)NULL);
			_exit(127);
		}
	}
	base = event_base_new();
	pub_ev = event_new(base, -1, EV_PERSIST, on_pub, NULL);
	struct timeval tv = { 0, 2000 };
	event_add(pub_ev, &tv);
	CHECK(run_until(fanout_ready, 20000));
	run_for(300); /* the other fanout binds too */

	test_http();
	/* A record nobody consumes in ring ingest->verify 0 while verify 0's progress stands still. */
	struct bt_ring *rin = bt_shm_ring(shm, bt_pipe_ring_in(0));
	void *slot;
	CHECK(bt_ring_claim(rin, BT_REC_FRAME, 16, &slot) == 0);
	memset(slot, 0, 16);
	bt_ring_commit(rin);
	uint64_t stuck_since = bt_now_ms();
	test_replay_live();
	test_too_slow();
	test_ring_gap();
	uint64_t waited = bt_now_ms() - stuck_since;
	if (waited < 11000)
		run_for((int)(11000 - waited));
	char *body;
	int st = http("GET", "/_health", NULL, resp, sizeof resp, &body);
	CHECKF(st == 503 && strstr(body, "stuck"), "health with a stuck ring -> %d %s", st, body);
	uint64_t rpos = bt_ring_tail(rin);
	uint32_t rtype;
	const void *rp;
	size_t rlen;
	CHECK(bt_ring_read(rin, &rpos, &rtype, &rp, &rlen) == 0);
	bt_ring_release(rin, rpos);
	st = http("GET", "/_health", NULL, resp, sizeof resp, &body);
	CHECKF(st == 200, "health after the ring drained -> %d %s", st, body);

	/* Shutdown: consumers are closed with 1012. */
	int raw = raw_ws_open();
	CHECK(raw >= 0);
	for (int i = 0; i < N_FANOUT; i++)
		kill(child[i], SIGTERM);
	CHECK(run_until(a_closed, 20000));
	int code = raw >= 0 ? raw_ws_close_code(raw) : -1;
	CHECKF(code == 1012, "close code on the wire %d", code);
	if (raw >= 0)
		close(raw);
	for (int i = 0; i < N_FANOUT; i++) {
		int status = 0;
		CHECK(waitpid(child[i], &status, 0) == child[i]);
		CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fanout %d exit status %#x", i, status);
	}

	atomic_store(&stop_thread, true);
	pthread_join(th, NULL);
	event_free(pub_ev);
	run_for(50);
	event_base_free(base);
	bt_db_close(&db);
	bt_shm_close(&shm);
	bt_buf_free(&fbuf);
	if (bt_t_fail == 0) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	} else {
		fprintf(stderr, "kept %s\n", dir);
	}
	BT_TEST_END();
}
