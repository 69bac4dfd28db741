/*
 * NAME
 *	test_ws.c - bt_ws client and server over real sockets on 127.0.0.1
 * DESCRIPTION
 *	Lesson 1: the client's handshake response and the server's handshake
 *	request, each followed by the first frames, split at every byte offset
 *	(two writes with a pause, TCP_NODELAY) and byte by byte, against raw
 *	blocking peers in a thread.  Lessons 3/4: many connections with
 *	ping/pong/close traffic, close from inside on_msg, closing another
 *	connection from a callback, the server closing every connection while
 *	they read, keepalive pings keeping an idle connection alive, teardown
 *	with ping timers pending; all under ASan.  Also: 1009 for a message
 *	over max_msg, failure status against a 404 server, pause/resume, wss
 *	with a self-signed certificate made here, handshake helpers.  bt_ws_send_ref: -EAGAIN
 *	while wslay still holds a message (no overtaking), shared frames then a close in order,
 *	-EPIPE after the close, -EINVAL on a client, each release exactly once, also when the
 *	peer resets with megabytes queued.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; exits non-zero on failure.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "bt_http.h"
#include "bt_ws.h"
#include "bt_ws_int.h"
#include "bt_test.h"

static atomic_int done, thread_fail;
static struct event_base *base;
static int rport; /* raw peer port */
static int hport; /* bt_http server port */

#define TFAIL(...)                                                                                                     \
	do {                                                                                                           \
		fprintf(stderr, "thread FAIL %s:%d: ", __FILE__, __LINE__);                                           \
		fprintf(stderr, __VA_ARGS__);                                                                          \
		fputc('\n', stderr);                                                                                   \
		atomic_fetch_add(&thread_fail, 1);                                                                     \
	} while (0)

static int listen_any(int *p)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 256))
		return -1;
	socklen_t sl = sizeof sa;
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	*p = ntohs(sa.sin_port);
	return fd;
}

static void set_sock(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int tcp_connect(int p)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	set_sock(fd);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
		close(fd);
		return -1;
	}
	return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w <= 0)
			return;
		c += w;
		n -= (size_t)w;
	}
}

/* Writes p split at k (two segments with a pause); k == 0: one byte at a time. */
static void write_split(int fd, const char *p, size_t n, size_t k)
{
	if (k == 0) {
		for (size_t i = 0; i < n; i++) {
			write_all(fd, p + i, 1);
			usleep(400);
		}
		return;
	}
	write_all(fd, p, k);
	usleep(1500);
	write_all(fd, p + k, n - k);
}

/* Reads until "\r\n\r\n"; returns the header length, leaves extra bytes after it in buf[hl..*n). */
static int read_head(int fd, char *buf, size_t cap, size_t *n)
{
	*n = 0;
	for (;;) {
		buf[*n] = 0;
		char *e = strstr(buf, "\r\n\r\n");
		if (e)
			return (int)(e - buf) + 4;
		if (*n >= cap - 1)
			return -1;
		ssize_t k = read(fd, buf + *n, cap - 1 - *n);
		if (k <= 0)
			return -1;
		*n += (size_t)k;
	}
}

static size_t frame(uint8_t *out, int op, const void *p, size_t n, const uint8_t *mask)
{
	size_t h = 0;
	out[h++] = (uint8_t)(0x80 | op);
	uint8_t mb = mask ? 0x80 : 0;
	if (n < 126) {
		out[h++] = (uint8_t)(mb | n);
	} else {
		out[h++] = mb | 126;
		out[h++] = (uint8_t)(n >> 8);
		out[h++] = (uint8_t)n;
	}
	if (mask) {
		memcpy(out + h, mask, 4);
		h += 4;
	}
	for (size_t i = 0; i < n; i++)
		out[h + i] = (uint8_t)(((const uint8_t *)p)[i] ^ (mask ? mask[i & 3] : 0));
	return h + n;
}

static void add_tv(struct event *e, long s, long us)
{
	struct timeval tv = {s, us};
	event_add(e, &tv);
}

static void poll_cb(evutil_socket_t fd, short w, void *arg)
{
	if (atomic_load(&done))
		event_base_loopbreak(base);
}

/* Runs the loop until done is set (by a thread or a callback), at most limit_s seconds. */
static void run_until_done(int limit_s)
{
	struct event *pe = event_new(base, -1, EV_PERSIST, poll_cb, NULL);
	event_add(pe, &(struct timeval){0, 5000});
	struct event *guard = event_new(base, -1, 0, poll_cb, NULL);
	struct timeval gt = {limit_s, 0};
	event_base_loopexit(base, &gt);
	event_base_dispatch(base);
	event_free(pe);
	event_free(guard);
}

/* ======== Lesson 1, client side: raw server, split response ======== */

static char big[300];
static int c1_total, c1_iter, c1_ok_msgs, c1_open, c1_bad;
static const char *c1_server_hdr_seen;
static char c1_srv[32];
static struct bt_ws_cbs c1_cbs;

static void *t_raw_server(void *a)
{
	int lfd = *(int *)a;
	char buf[8192];
	for (int it = 0; it < c1_total; it++) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			TFAIL("accept");
			break;
		}
		set_sock(fd);
		size_t n;
		int hl = read_head(fd, buf, sizeof buf, &n);
		char *kp = hl > 0 ? strcasestr(buf, "Sec-WebSocket-Key: ") : NULL;
		if (!kp || !strstr(buf, "GET /path?x=1 HTTP/1.1\r\n") || !strstr(buf, "User-Agent: bt-test\r\n")) {
			TFAIL("bad request: %s", buf);
			close(fd);
			continue;
		}
		char key[64] = {0}, acc[32];
		sscanf(kp + 19, "%63[^\r]", key);
		bt_ws_accept_key(key, acc, sizeof acc);
		char out[2048];
		int ol = snprintf(out, sizeof out,
				  "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
				  "Sec-WebSocket-Accept: %s\r\nServer: raw/1.0\r\n\r\n",
				  acc);
		ol += (int)frame((uint8_t *)out + ol, 2, "hello", 5, NULL);
		ol += (int)frame((uint8_t *)out + ol, 1, big, sizeof big, NULL);
		size_t k = it < c1_total - 1 ? (size_t)it + 1 : 0; /* last one: byte by byte */
		if (k >= (size_t)ol)
			k = (size_t)ol - 1;
		write_split(fd, out, (size_t)ol, k);
		/* wait for the client's close, answer it, wait for EOF */
		ssize_t r = read(fd, buf, sizeof buf);
		if (r > 0) {
			uint8_t cl[4];
			size_t cn = frame(cl, 8, "\x03\xe8", 2, NULL);
			write_all(fd, cl, cn);
			while (read(fd, buf, sizeof buf) > 0)
				;
		}
		close(fd);
	}
	return NULL;
}

static void c1_start(void);

static void c1_open_cb(struct bt_ws *ws, void *arg)
{
	c1_open++;
	const char *s = bt_ws_resp_header(ws, "server");
	if (s)
		snprintf(c1_srv, sizeof c1_srv, "%s", s);
	c1_server_hdr_seen = c1_srv;
}

static int c1_nmsg;
static void c1_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	if (c1_nmsg == 0 && op == BT_WS_BINARY && n == 5 && !memcmp(p, "hello", 5))
		c1_nmsg++;
	else if (c1_nmsg == 1 && op == BT_WS_TEXT && n == sizeof big && !memcmp(p, big, n)) {
		c1_nmsg++;
		bt_ws_close(ws, 1000, "bye"); /* close from inside on_msg */
		if (bt_ws_send(ws, BT_WS_BINARY, "x", 1) >= 0)
			c1_bad++;
	} else
		c1_bad++;
}

static void c1_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	if (c1_nmsg == 2 && code == 1000 && bt_ws_http_status(ws) == 101)
		c1_ok_msgs++;
	else
		fprintf(stderr, "c1 iter %d: nmsg %d code %d reason %s\n", c1_iter, c1_nmsg, code, reason);
	if (++c1_iter < c1_total)
		c1_start(); /* new connection from inside on_close */
	else
		atomic_store(&done, 1);
}

static void c1_start(void)
{
	char url[128];
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/path?x=1", rport);
	struct bt_ws_opts o = {.max_msg = 100000, .user_agent = "bt-test"};
	c1_nmsg = 0;
	if (!bt_ws_connect(base, url, &c1_cbs, NULL, &o))
		c1_bad++;
}

static void test_client_split(void)
{
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)('a' + i % 26);
	int lfd = listen_any(&rport);
	/* response (~150 bytes) + two frames (7 + 304): split at every offset, then byte by byte */
	c1_total = 150 + 7 + 304 + 1;
	c1_cbs = (struct bt_ws_cbs){c1_open_cb, c1_msg, c1_close, NULL};
	pthread_t t;
	atomic_store(&done, 0);
	pthread_create(&t, NULL, t_raw_server, &lfd);
	c1_start();
	run_until_done(120);
	CHECK(atomic_load(&done));
	pthread_join(t, NULL);
	close(lfd);
	CHECKF(c1_ok_msgs == c1_total, "%d of %d", c1_ok_msgs, c1_total);
	CHECK(c1_open == c1_total);
	CHECK(c1_bad == 0);
	CHECK(c1_server_hdr_seen && !strcmp(c1_srv, "raw/1.0"));
}

/* ======== HTTP server side, shared by the server tests ======== */

static struct bt_ws_opts srv_opts;
static struct bt_ws_cbs srv_cbs;
static int srv_upgrades, srv_closes, srv_fail;
static int srv_last_code;
static struct bt_ws *srv_conns[256];
static int nsrv;
static void (*sr_hook)(struct bt_ws *ws); /* test_send_ref: runs on each upgrade */

static void http_handler(struct bt_http_req *r, void *arg)
{
	if (!strcmp(bt_http_req_path(r), "/ws")) {
		struct bt_ws *ws = bt_http_upgrade(r, &srv_cbs, NULL, &srv_opts);
		if (ws) {
			srv_upgrades++;
			if (nsrv < 256)
				srv_conns[nsrv++] = ws;
			if (sr_hook)
				sr_hook(ws);
		}
		return;
	}
	bt_http_respond(r, 404, "text/plain", "no", 2);
}

static void srv_forget(struct bt_ws *ws)
{
	for (int i = 0; i < nsrv; i++)
		if (srv_conns[i] == ws)
			srv_conns[i] = NULL;
}

/* ======== Lesson 1, server side: raw client, split request ======== */

static int s1_total, s1_msgs_ok;

static void s1_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	char out[400];
	if (op == BT_WS_BINARY && n == 5 && !memcmp(p, "hello", 5)) {
		s1_msgs_ok++;
		memcpy(out, "ok:", 3);
		memcpy(out + 3, p, n);
		bt_ws_send(ws, BT_WS_BINARY, out, n + 3);
	} else if (op == BT_WS_TEXT && n == sizeof big && !memcmp(p, big, n)) {
		s1_msgs_ok++;
		bt_ws_close(ws, 1000, "done");
	} else {
		srv_fail++;
	}
}

static void s1_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	srv_closes++;
	srv_last_code = code;
	srv_forget(ws);
	if (code != 1000)
		fprintf(stderr, "s1 close %d %s\n", code, reason);
}

static void *t_raw_client(void *a)
{
	static const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
	char msg[1024];
	const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
	size_t ml = sizeof req - 1;
	memcpy(msg, req, ml);
	ml += frame((uint8_t *)msg + ml, 2, "hello", 5, mask);
	ml += frame((uint8_t *)msg + ml, 1, big, sizeof big, mask);
	char buf[4096];
	for (int it = 0; it < s1_total; it++) {
		int fd = tcp_connect(hport);
		size_t k = it < s1_total - 1 ? (size_t)it + 1 : 0;
		if (k >= ml)
			k = ml - 1;
		write_split(fd, msg, ml, k);
		size_t n;
		int hl = read_head(fd, buf, sizeof buf, &n);
		if (hl < 0 || strncmp(buf, "HTTP/1.1 101 ", 13) ||
		    !strstr(buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")) {
			TFAIL("iter %d: bad 101: %s", it, buf);
			close(fd);
			continue;
		}
		/* expect "ok:hello" then a close frame */
		memmove(buf, buf + hl, n - (size_t)hl);
		n -= (size_t)hl;
		while (n < 11 + 4) {
			ssize_t r = read(fd, buf + n, sizeof buf - n);
			if (r <= 0)
				break;
			n += (size_t)r;
		}
		if (n < 15 || (uint8_t)buf[0] != 0x82 || buf[1] != 8 || memcmp(buf + 2, "ok:hello", 8) ||
		    (uint8_t)buf[10] != 0x88)
			TFAIL("iter %d: bad frames (%zu bytes) %02x %02x %02x", it, n, (uint8_t)buf[0], (uint8_t)buf[1], (uint8_t)buf[2]);
		uint8_t cl[16];
		size_t cn = frame(cl, 8, "\x03\xe8", 2, mask);
		write_all(fd, cl, cn);
		while (read(fd, buf, sizeof buf) > 0)
			;
		close(fd);
	}
	atomic_store(&done, 1);
	return NULL;
}

static void test_server_split(void)
{
	srv_cbs = (struct bt_ws_cbs){NULL, s1_msg, s1_close, NULL};
	srv_opts = (struct bt_ws_opts){.max_msg = 100000, .server_hdr = "baton-test (atproto-relay)"};
	srv_closes = srv_upgrades = srv_fail = 0;
	s1_msgs_ok = 0;
	s1_total = 130 + 11 + 308 + 1;
	pthread_t t;
	atomic_store(&done, 0);
	pthread_create(&t, NULL, t_raw_client, NULL);
	run_until_done(120);
	CHECK(atomic_load(&done));
	pthread_join(t, NULL);
	/* the last close may still be in flight */
	atomic_store(&done, 0);
	for (int i = 0; i < 100 && srv_closes < s1_total; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	CHECKF(srv_upgrades == s1_total, "%d/%d", srv_upgrades, s1_total);
	CHECKF(srv_closes == s1_total, "%d/%d", srv_closes, s1_total);
	CHECKF(s1_msgs_ok == 2 * s1_total, "%d/%d", s1_msgs_ok, 2 * s1_total);
	CHECK(srv_fail == 0);
}

/* ======== Lessons 3/4: many connections, pings, closes ======== */

#define NCLI 40
static struct bt_ws *cli[NCLI];
static int cli_open, cli_closed, cli_msgs, cli_close_twice, cli_bad_code;
static int cli_closed_flag[NCLI];

static void st_srv_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	bt_ws_send(ws, op, p, n); /* echo */
}

static void st_srv_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	srv_closes++;
	srv_forget(ws);
}

static void st_cli_open(struct bt_ws *ws, void *arg)
{
	cli_open++;
	for (int i = 0; i < 5; i++)
		bt_ws_send(ws, BT_WS_BINARY, "0123456789", 10);
}

static void st_cli_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	intptr_t i = (intptr_t)arg;
	cli_msgs++;
	if (i % 4 == 1 && n == 10)
		bt_ws_close(ws, 1000, "client done"); /* close from inside on_msg */
	if (i % 4 == 2 && n == 10 && cli[i + 1])
		bt_ws_close(cli[i + 1], 4000, "closed by neighbour"); /* close another connection re-entrantly */
	if (i % 4 == 2)
		bt_ws_send(ws, BT_WS_TEXT, "more", 4);
}

static void st_cli_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	intptr_t i = (intptr_t)arg;
	if (cli_closed_flag[i]++)
		cli_close_twice++;
	if (code < 1000 || code == 1006)
		cli_bad_code++, fprintf(stderr, "client %d closed %d %s\n", (int)i, code, reason);
	cli[i] = NULL;
	cli_closed++;
	if (i + 1 < NCLI && cli[i + 1] && i % 8 == 0)
		bt_ws_send(cli[i + 1], BT_WS_BINARY, "from on_close", 13); /* another connection, inside on_close */
	if (cli_closed == NCLI)
		atomic_store(&done, 1);
}

static void st_kill_all(evutil_socket_t fd, short w, void *arg)
{
	/* server bursts to every connection, then closes them all while they are reading */
	char blob[3000];
	memset(blob, 'z', sizeof blob);
	for (int i = 0; i < nsrv; i++)
		if (srv_conns[i]) {
			for (int k = 0; k < 20; k++)
				bt_ws_send(srv_conns[i], BT_WS_BINARY, blob, sizeof blob);
			bt_ws_close(srv_conns[i], 1001, "going away");
			bt_ws_close(srv_conns[i], 1000, "twice is harmless");
		}
}

static void test_stress(void)
{
	srv_cbs = (struct bt_ws_cbs){NULL, st_srv_msg, st_srv_close, NULL};
	srv_opts = (struct bt_ws_opts){.max_msg = 100000, .ping_interval_s = 1, .idle_timeout_s = 3};
	srv_closes = srv_upgrades = 0;
	nsrv = 0;
	struct bt_ws_cbs cc = {st_cli_open, st_cli_msg, st_cli_close, NULL};
	struct bt_ws_opts co = {.ping_interval_s = 1, .idle_timeout_s = 3};
	char url[64];
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", hport);
	for (intptr_t i = 0; i < NCLI; i++) {
		cli[i] = bt_ws_connect(base, url, &cc, (void *)i, &co);
		CHECK(cli[i] != NULL);
	}
	/* let pings flow for a while (quiet connections stay alive), then kill everything */
	struct event *k = evtimer_new(base, st_kill_all, NULL);
	add_tv(k, 2, 500000);
	atomic_store(&done, 0);
	run_until_done(30);
	event_free(k);
	CHECK(atomic_load(&done));
	for (int i = 0; i < 50 && srv_closes < NCLI; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(2000);
	CHECKF(cli_open == NCLI, "%d", cli_open);
	CHECKF(cli_closed == NCLI, "%d", cli_closed);
	CHECK(cli_close_twice == 0);
	CHECK(cli_bad_code == 0);
	CHECKF(srv_closes == NCLI, "%d", srv_closes);
	CHECK(cli_msgs >= NCLI * 5 / 2);
}

/* ======== keepalive: a silent connection survives on pings; a deaf peer is dropped ======== */

static int ka_closed, ka_code;
static void ka_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	ka_closed++;
	ka_code = code;
	srv_forget(ws);
}

static struct bt_ws *ka_cli;
static void ka_cli_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	ka_cli = NULL;
}

static void *t_deaf(void *a)
{
	/* upgrades, then never reads: pings go unanswered */
	int fd = tcp_connect(hport);
	static const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
	write_all(fd, req, sizeof req - 1);
	char buf[512];
	while (!atomic_load(&done) && read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
	return NULL;
}

static void ka_stop(evutil_socket_t fd, short w, void *arg)
{
	atomic_store(&done, 1);
}

static void test_keepalive(void)
{
	srv_cbs = (struct bt_ws_cbs){NULL, NULL, ka_close, NULL};
	srv_opts = (struct bt_ws_opts){.ping_interval_s = 1, .idle_timeout_s = 2};
	nsrv = 0;
	ka_closed = 0;
	struct bt_ws_cbs cc = {NULL, NULL, ka_cli_close, NULL};
	char url[64];
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", hport);
	/* a bt_ws client that never sends data: its automatic pongs keep it alive */
	ka_cli = bt_ws_connect(base, url, &cc, NULL, &(struct bt_ws_opts){0});
	CHECK(ka_cli != NULL);
	struct event *k = evtimer_new(base, ka_stop, NULL);
	add_tv(k, 4, 0);
	atomic_store(&done, 0);
	run_until_done(10);
	CHECK(ka_closed == 0);
	/* a raw peer that does not read: closed by the idle timeout (pending ping timer torn down) */
	srv_opts.idle_timeout_s = 2;
	pthread_t t;
	atomic_store(&done, 0);
	pthread_create(&t, NULL, t_deaf, NULL);
	add_tv(k, 4, 0);
	run_until_done(10);
	atomic_store(&done, 1);
	pthread_join(t, NULL);
	event_free(k);
	CHECKF(ka_closed == 1 && ka_code == 1006, "closed %d code %d", ka_closed, ka_code);
	/* teardown with the client's and server's timers pending */
	CHECK(ka_cli != NULL);
	if (ka_cli)
		bt_ws_close(ka_cli, 1000, "bye");
	for (int i = 0; i < 200 && ka_closed < 2; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	CHECK(ka_closed == 2);
}

/* ======== max_msg, 404, pause ======== */

static int mm_cli_code, mm_srv_code, mm_done, mm_status;
static void mm_srv_close(struct bt_ws *ws, int code, const char *r, void *a)
{
	mm_srv_code = code;
	if (getenv("BT_DEBUG"))
		fprintf(stderr, "server close %d %s\n", code, r);
	srv_forget(ws);
}
static void mm_cli_open(struct bt_ws *ws, void *a)
{
	static char blob[2000];
	CHECK(bt_ws_send(ws, BT_WS_BINARY, blob, sizeof blob) == 0);
}
static void mm_cli_close(struct bt_ws *ws, int code, const char *r, void *a)
{
	mm_cli_code = code;
	if (getenv("BT_DEBUG"))
		fprintf(stderr, "client close %d %s status %d\n", code, r, bt_ws_http_status(ws));
	mm_status = bt_ws_http_status(ws);
	mm_done = 1;
	atomic_store(&done, 1);
}

static int pz_msgs, pz_paused_msgs;
static struct bt_ws *pz_cli;
static void pz_srv_open_burst(evutil_socket_t fd, short w, void *a)
{
	for (int i = 0; i < nsrv; i++)
		if (srv_conns[i])
			for (int k = 0; k < 3; k++)
				bt_ws_send(srv_conns[i], BT_WS_BINARY, "abc", 3);
}
static void pz_check(evutil_socket_t fd, short w, void *a)
{
	pz_paused_msgs = pz_msgs;
	bt_ws_resume(pz_cli);
}
static void pz_open(struct bt_ws *ws, void *a)
{
	bt_ws_pause(ws);
}
static void pz_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *a)
{
	if (++pz_msgs == 3)
		bt_ws_close(ws, 1000, "");
}

static void test_misc(void)
{
	char url[64];
	/* a message over max_msg: 1009 on both sides */
	srv_cbs = (struct bt_ws_cbs){NULL, NULL, mm_srv_close, NULL};
	srv_opts = (struct bt_ws_opts){.max_msg = 1000};
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", hport);
	struct bt_ws_cbs cc = {mm_cli_open, NULL, mm_cli_close, NULL};
	atomic_store(&done, 0);
	CHECK(bt_ws_connect(base, url, &cc, NULL, NULL) != NULL);
	run_until_done(10);
	for (int i = 0; i < 100 && !mm_srv_code; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	CHECKF(mm_cli_code == 1009, "%d", mm_cli_code);
	CHECKF(mm_srv_code == 1009, "%d", mm_srv_code);

	/* not a WebSocket endpoint: failure with the status */
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/nows", hport);
	cc = (struct bt_ws_cbs){NULL, NULL, mm_cli_close, NULL};
	atomic_store(&done, 0);
	mm_cli_code = 0;
	CHECK(bt_ws_connect(base, url, &cc, NULL, NULL) != NULL);
	run_until_done(10);
	CHECKF(mm_cli_code == 1006 && mm_status == 404, "code %d status %d", mm_cli_code, mm_status);

	/* connection refused: async failure, status 0 */
	int dead_port;
	int dfd = listen_any(&dead_port);
	close(dfd);
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/", dead_port);
	atomic_store(&done, 0);
	mm_cli_code = 0;
	mm_status = -1;
	CHECK(bt_ws_connect(base, url, &cc, NULL, NULL) != NULL);
	run_until_done(10);
	CHECK(mm_cli_code == 1006 && mm_status == 0);

	/* host name through the resolver */
	snprintf(url, sizeof url, "ws://localhost:%d/nows", hport);
	atomic_store(&done, 0);
	mm_cli_code = 0;
	CHECK(bt_ws_connect(base, url, &cc, NULL, NULL) != NULL);
	run_until_done(10);
	CHECKF(mm_cli_code == 1006 && mm_status == 404, "localhost: code %d status %d", mm_cli_code, mm_status);

	/* bad URLs */
	CHECK(bt_ws_connect(base, "http://x/", &cc, NULL, NULL) == NULL);
	CHECK(bt_ws_connect(base, "ws://x:99999/", &cc, NULL, NULL) == NULL);
	CHECK(bt_ws_connect(base, "ws://a b/", &cc, NULL, NULL) == NULL);
	CHECK(bt_ws_connect(base, "ws://u@h/", &cc, NULL, NULL) == NULL);
	CHECK(bt_ws_connect(base, "ws:///", &cc, NULL, NULL) == NULL);

	/* pause: nothing delivered while paused; resume delivers */
	srv_cbs = (struct bt_ws_cbs){NULL, NULL, mm_srv_close, NULL};
	srv_opts = (struct bt_ws_opts){0};
	nsrv = 0;
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", hport);
	cc = (struct bt_ws_cbs){pz_open, pz_msg, mm_cli_close, NULL};
	atomic_store(&done, 0);
	pz_cli = bt_ws_connect(base, url, &cc, NULL, NULL);
	struct event *e1 = evtimer_new(base, pz_srv_open_burst, NULL);
	struct event *e2 = evtimer_new(base, pz_check, NULL);
	add_tv(e1, 0, 100000);
	add_tv(e2, 0, 400000);
	run_until_done(10);
	event_free(e1);
	event_free(e2);
	CHECK(pz_paused_msgs == 0);
	CHECK(pz_msgs == 3);
}

/* ======== wss ======== */

static X509 *make_cert(EVP_PKEY **kp)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	X509_sign(x, k, EVP_sha256());
	*kp = k;
	return x;
}

static int tls_msgs;
static const char *tls_srvhdr;
static char tls_srv[64];
static void tls_open(struct bt_ws *ws, void *a)
{
	const char *s = bt_ws_resp_header(ws, "Server");
	snprintf(tls_srv, sizeof tls_srv, "%s", s ? s : "");
	tls_srvhdr = tls_srv;
	bt_ws_send(ws, BT_WS_TEXT, "over tls", 8);
}
static void tls_cli_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *a)
{
	if (n == 8 && !memcmp(p, "over tls", 8))
		tls_msgs++;
	if (tls_msgs == 1)
		bt_ws_send(ws, BT_WS_BINARY, "again", 5);
	if (n == 5 && !memcmp(p, "again", 5)) {
		tls_msgs++;
		bt_ws_close(ws, 1000, "tls done");
	}
}

static void test_wss(void)
{
	EVP_PKEY *k;
	X509 *x = make_cert(&k);
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
	CHECK(SSL_CTX_use_certificate(sctx, x) == 1);
	CHECK(SSL_CTX_use_PrivateKey(sctx, k) == 1);
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), x);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);

	int p;
	int lfd = listen_any(&p);
	struct bt_http_limits lim = {.server_hdr = "baton-tls", .ssl_ctx = sctx};
	struct bt_http_server *s = bt_http_server_new(base, lfd, &lim, http_handler, NULL);
	CHECK(s != NULL);
	srv_cbs = (struct bt_ws_cbs){NULL, st_srv_msg, mm_srv_close, NULL};
	srv_opts = (struct bt_ws_opts){0};
	nsrv = 0;
	char url[64];
	snprintf(url, sizeof url, "wss://127.0.0.1:%d/ws", p);
	struct bt_ws_cbs cc = {tls_open, tls_cli_msg, mm_cli_close, NULL};
	struct bt_ws_opts co = {.ssl_ctx = cctx};
	atomic_store(&done, 0);
	mm_cli_code = 0;
	CHECK(bt_ws_connect(base, url, &cc, NULL, &co) != NULL);
	run_until_done(10);
	CHECK(tls_msgs == 2);
	CHECKF(mm_cli_code == 1000, "%d", mm_cli_code);
	CHECK(tls_srvhdr && !strcmp(tls_srv, "baton-tls"));

	/* a client that does not trust the certificate fails */
	SSL_CTX *untrusting = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(untrusting, SSL_VERIFY_PEER, NULL);
	co.ssl_ctx = untrusting;
	atomic_store(&done, 0);
	mm_cli_code = 0;
	tls_msgs = 0;
	CHECK(bt_ws_connect(base, url, &cc, NULL, &co) != NULL);
	run_until_done(10);
	CHECK(mm_cli_code == 1006 && tls_msgs == 0);
	for (int i = 0; i < 50; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	bt_http_server_free(&s);
	SSL_CTX_free(untrusting);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* ======== bt_ws_send_ref: shared frames by reference, ordered with wslay's queue and the close ======== */

#define SR_BIG 300000 /* more than the 256 KiB wslay may put in the output buffer at once */
#define SR_N 10
static uint8_t sr_big[SR_BIG];
static uint8_t sr_frames[SR_N + 1][32];
static size_t sr_len[SR_N + 1];
static int sr_released, sr_bad_release, sr_stage, sr_queued, sr_eagain, sr_cli_order_bad, sr_cli_got;
static int sr_cli_code;
static uint8_t *sr_huge; /* for the abrupt-disconnect case */
static size_t sr_huge_n;

static void sr_release(const void *data, size_t len, void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	if (i == 1000) {
		if (data != sr_huge || len != sr_huge_n)
			sr_bad_release++;
	} else if (i > SR_N || data != sr_frames[i] || len != sr_len[i]) {
		sr_bad_release++;
	}
	sr_released++;
}

/* frame i carries "ref-<i>" (i == SR_N: "ref-early") */
static void sr_make(void)
{
	for (int i = 0; i <= SR_N; i++) {
		char pl[16];
		int n = i == SR_N ? snprintf(pl, sizeof pl, "ref-early") : snprintf(pl, sizeof pl, "ref-%d", i);
		size_t hl = bt_ws_frame_header(sr_frames[i], BT_WS_BINARY, (size_t)n);
		memcpy(sr_frames[i] + hl, pl, (size_t)n);
		sr_len[i] = hl + (size_t)n;
	}
	for (size_t i = 0; i < SR_BIG; i++)
		sr_big[i] = (uint8_t)(i * 7);
}

static void sr_srv_drain(struct bt_ws *ws, void *arg)
{
	if (sr_stage != 1)
		return;
	sr_stage = 2;
	for (int i = 0; i < SR_N; i++)
		if (bt_ws_send_ref(ws, sr_frames[i], sr_len[i], sr_release, (void *)(uintptr_t)i) == 0)
			sr_queued++;
	/* queued right behind the shared frames: must reach the peer after all of them */
	bt_ws_close(ws, 1000, "bye");
	CHECK(bt_ws_send_ref(ws, sr_frames[0], sr_len[0], sr_release, (void *)(uintptr_t)0) == -EPIPE);
}

static void sr_srv_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	srv_closes++;
	srv_last_code = code;
	srv_forget(ws);
}

static void sr_on_upgrade(struct bt_ws *ws)
{
	/* wslay keeps the tail of this message queued: a shared frame now would overtake it */
	CHECK(bt_ws_send(ws, BT_WS_BINARY, sr_big, SR_BIG) == 0);
	int rc = bt_ws_send_ref(ws, sr_frames[SR_N], sr_len[SR_N], sr_release, (void *)(uintptr_t)SR_N);
	if (rc == -EAGAIN) {
		sr_eagain++;
		CHECK(bt_ws_send(ws, BT_WS_BINARY, "ref-early", 9) == 0);
	} else if (rc == 0) {
		sr_queued++;
	}
	sr_stage = 1;
}

static void sr_cli_open(struct bt_ws *ws, void *arg)
{
	CHECK(bt_ws_send_ref(ws, sr_frames[0], sr_len[0], sr_release, NULL) == -EINVAL);
}

static void sr_cli_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	char want[16];
	int k = sr_cli_got++;
	if (k == 0) {
		if (n != SR_BIG || memcmp(p, sr_big, SR_BIG))
			sr_cli_order_bad++;
		return;
	}
	int wn = k == 1 ? snprintf(want, sizeof want, "ref-early") : snprintf(want, sizeof want, "ref-%d", k - 2);
	if (op != BT_WS_BINARY || n != (size_t)wn || memcmp(p, want, n))
		sr_cli_order_bad++;
}

static void sr_cli_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	sr_cli_code = code;
	atomic_store(&done, 1);
}

/* raw client: handshake, then drop the connection without reading what was queued for it */
static void *t_sr_abrupt(void *a)
{
	static const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
	int fd = tcp_connect(hport);
	int rcv = 4096;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	write_all(fd, req, sizeof req - 1);
	char buf[4096];
	size_t n;
	if (read_head(fd, buf, sizeof buf, &n) < 0)
		TFAIL("abrupt: no 101");
	usleep(100000);
	struct linger lg = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* RST */
	close(fd);
	return NULL;
}

static void sr_abrupt_upgrade(struct bt_ws *ws)
{
	/* header (10 bytes at this size) then a zero payload */
	CHECK(bt_ws_frame_header(sr_huge, BT_WS_BINARY, sr_huge_n - 10) == 10);
	if (bt_ws_send_ref(ws, sr_huge, sr_huge_n, sr_release, (void *)(uintptr_t)1000) == 0)
		sr_queued++;
}

static void test_send_ref(void)
{
	sr_make();
	uint8_t h[BT_WS_FRAME_HDR_MAX];
	CHECK(bt_ws_frame_header(h, BT_WS_BINARY, 125) == 2 && h[0] == 0x82 && h[1] == 125);
	CHECK(bt_ws_frame_header(h, BT_WS_BINARY, 126) == 4 && h[1] == 126 && h[2] == 0 && h[3] == 126);
	CHECK(bt_ws_frame_header(h, BT_WS_BINARY, 65536) == 10 && h[1] == 127 && h[7] == 1 && h[8] == 0 && h[9] == 0);

	srv_cbs = (struct bt_ws_cbs){NULL, st_srv_msg, sr_srv_close, sr_srv_drain};
	srv_opts = (struct bt_ws_opts){.max_msg = 100000, .drain_lowat = 1024};
	sr_hook = sr_on_upgrade;
	srv_closes = 0;
	nsrv = 0;
	atomic_store(&done, 0);
	char url[64];
	snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", hport);
	struct bt_ws_cbs cc = {sr_cli_open, sr_cli_msg, sr_cli_close, NULL};
	struct bt_ws_opts co = {.max_msg = 1000000};
	CHECK(bt_ws_connect(base, url, &cc, NULL, &co) != NULL);
	run_until_done(20);
	for (int i = 0; i < 100 && srv_closes < 1; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	CHECKF(sr_eagain == 1, "%d", sr_eagain);
	CHECKF(sr_queued == SR_N, "%d", sr_queued);
	CHECKF(sr_cli_got == SR_N + 2, "%d", sr_cli_got);
	CHECK(sr_cli_order_bad == 0);
	CHECKF(sr_cli_code == 1000, "%d", sr_cli_code);
	CHECKF(sr_released == SR_N, "%d", sr_released);
	CHECK(sr_bad_release == 0);

	/* a peer that goes away with megabytes queued by reference: each release still runs once */
	sr_huge_n = (size_t)4 << 20;
	sr_huge = calloc(1, sr_huge_n);
	sr_hook = sr_abrupt_upgrade;
	srv_cbs = (struct bt_ws_cbs){NULL, st_srv_msg, sr_srv_close, NULL};
	srv_closes = 0;
	sr_queued = sr_released = 0;
	pthread_t t;
	pthread_create(&t, NULL, t_sr_abrupt, NULL);
	for (int i = 0; i < 5000 && srv_closes < 1; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	pthread_join(t, NULL);
	CHECKF(srv_closes == 1, "%d", srv_closes);
	CHECKF(sr_queued == 1 && sr_released == 1, "%d %d", sr_queued, sr_released);
	CHECK(sr_bad_release == 0);
	sr_hook = NULL;
	free(sr_huge);
}

/* ======== pure helpers ======== */

static void test_helpers(void)
{
	char acc[32];
	CHECK(bt_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc, sizeof acc) == 0);
	CHECK(!strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
	CHECK(bt_ws_has_token("keep-alive, Upgrade", "upgrade"));
	CHECK(!bt_ws_has_token("keep-alive, Upgraded", "upgrade"));
	CHECK(!bt_ws_has_token(NULL, "upgrade"));
	struct bt_ws_resp r = {0};
	static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Empty:\r\n\r\n";
	CHECK(bt_ws_resp_parse(ok, sizeof ok - 1, &r) == 0);
	CHECK(r.status == 101 && r.nhdr == 4);
	CHECK(bt_ws_resp_get(&r, "x-empty") && !strcmp(bt_ws_resp_get(&r, "x-empty"), ""));
	CHECK(bt_ws_resp_check(&r, "dGhlIHNhbXBsZSBub25jZQ==") == 0);
	CHECK(bt_ws_resp_check(&r, "AAAAAAAAAAAAAAAAAAAAAA==") < 0);
	/* every prefix (a split response) is rejected as a complete block, never read past */
	for (size_t i = 0; i < sizeof ok - 1; i++) {
		char *cp = malloc(i ? i : 1);
		memcpy(cp, ok, i);
		CHECK(bt_ws_resp_parse(cp, i, &r) < 0);
		free(cp);
	}
	static const char *bad[] = {"HTTP/1.1 101\r\nUpgrade\r\n\r\n", "HTTP/1.1 10x OK\r\n\r\n",
				    "HTTP/1.1 101 OK\r\n folded: x\r\n\r\n", "HTTP/1.1 101 OK\r\nA: b\r\r\n\r\n",
				    "HTTX/1.1 101 OK\r\n\r\n"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECKF(bt_ws_resp_parse(bad[i], strlen(bad[i]), &r) < 0, "bad[%zu]", i);
	static const char s404[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
	CHECK(bt_ws_resp_parse(s404, sizeof s404 - 1, &r) == 0 && r.status == 404);
	CHECK(bt_ws_resp_check(&r, "dGhlIHNhbXBsZSBub25jZQ==") < 0);
	bt_ws_resp_clear(&r);
}

int main(void)
{
	base = event_base_new();
	test_helpers();
	test_client_split();
	int lfd = listen_any(&hport);
	struct bt_http_limits lim = {.server_hdr = "baton-test"};
	struct bt_http_server *s = bt_http_server_new(base, lfd, &lim, http_handler, NULL);
	CHECK(s != NULL);
	test_server_split();
	test_stress();
	test_keepalive();
	test_misc();
	test_wss();
	test_send_ref();
	bt_http_server_free(&s);
	CHECK(atomic_load(&thread_fail) == 0);
	event_base_free(base);
	BT_TEST_END();
}
