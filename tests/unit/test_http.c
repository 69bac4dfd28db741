/*
 * NAME
 *	test_http.c - bt_http server over real sockets on 127.0.0.1
 * DESCRIPTION
 *	Lesson 2: a POST with headers and body split at every byte offset
 *	(two writes with a pause, TCP_NODELAY) and byte by byte; pipelined
 *	requests (one answered asynchronously) answered in order; limits
 *	(413, 431, 400); keep-alive; query parameters; a peer that vanishes
 *	while its request is pending; server teardown with a pending request.
 *	The raw client runs in a thread with blocking sockets; the server runs
 *	in the main thread's event loop.
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

#include "bt_http.h"
#include "bt_test.h"

static atomic_int done;
static atomic_int thread_fail;
static int port;
static struct event_base *base;
static struct bt_http_req *held[8];
static int nheld;
static int handled;

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
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 128))
		return -1;
	socklen_t sl = sizeof sa;
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	*p = ntohs(sa.sin_port);
	return fd;
}

static int tcp_connect(int p)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
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

struct reader {
	int fd;
	char buf[1 << 16];
	size_t n;
};

/* Reads one response: returns status, copies body (NUL-terminated) and the header block; -1 on EOF/timeout. */
static int read_resp(struct reader *r, char *body, size_t cap, char *hdrs, size_t hcap)
{
	for (;;) {
		r->buf[r->n] = 0;
		char *e = strstr(r->buf, "\r\n\r\n");
		if (e) {
			size_t hl = (size_t)(e - r->buf) + 4;
			const char *cl = strcasestr(r->buf, "Content-Length:");
			size_t blen = cl && cl < e ? strtoul(cl + 15, NULL, 10) : 0;
			if (r->n >= hl + blen) {
				int st = atoi(r->buf + 9);
				size_t c = blen < cap - 1 ? blen : cap - 1;
				memcpy(body, r->buf + hl, c);
				body[c] = 0;
				if (hdrs) {
					size_t h = hl < hcap - 1 ? hl : hcap - 1;
					memcpy(hdrs, r->buf, h);
					hdrs[h] = 0;
				}
				memmove(r->buf, r->buf + hl + blen, r->n - hl - blen);
				r->n -= hl + blen;
				return st;
			}
		}
		if (r->n >= sizeof r->buf - 1)
			return -1;
		ssize_t k = read(r->fd, r->buf + r->n, sizeof r->buf - 1 - r->n);
		if (k <= 0)
			return -1;
		r->n += (size_t)k;
	}
}

static void slow_cb(evutil_socket_t fd, short w, void *arg)
{
	struct bt_http_req *r = arg;
	bt_http_respond(r, 200, "text/plain", "slow", 4);
}

static void handler(struct bt_http_req *r, void *arg)
{
	handled++;
	const char *path = bt_http_req_path(r);
	if (!strcmp(path, "/slow")) {
		event_base_once(base, -1, EV_TIMEOUT, slow_cb, r, &(struct timeval){0, 30000});
		return;
	}
	if (!strcmp(path, "/hold")) {
		if (nheld < 8)
			held[nheld++] = r;
		return;
	}
	char q[64] = "", out[4096];
	size_t bl;
	const uint8_t *b = bt_http_req_body(r, &bl);
	if (bt_http_req_param(r, "q", q, sizeof q) < 0)
		strcpy(q, "-");
	const char *h = bt_http_req_header(r, "x-test");
	int n = snprintf(out, sizeof out, "%s %s q=%s h=%s b=%.*s", bt_http_req_method(r), path, q, h ? h : "-",
			 (int)bl, (const char *)b);
	bt_http_respond_hdr(r, 200, "text/plain", "X-Extra: 1\r\n", out, (size_t)n);
}

static void poll_cb(evutil_socket_t fd, short w, void *arg)
{
	if (atomic_load(&done))
		event_base_loopbreak(base);
}

/* Runs the loop until the thread sets done (or 60 s). */
static void run_until_done(void *(*fn)(void *))
{
	pthread_t t;
	atomic_store(&done, 0);
	pthread_create(&t, NULL, fn, NULL);
	struct event *pe = event_new(base, -1, EV_PERSIST, poll_cb, NULL);
	event_add(pe, &(struct timeval){0, 5000});
	struct event *guard = event_new(base, -1, 0, poll_cb, NULL);
	event_add(guard, &(struct timeval){60, 0});
	event_base_dispatch(base);
	event_free(pe);
	event_free(guard);
	CHECK(atomic_load(&done));
	pthread_join(t, NULL);
}

static const char post_req[] = "POST /echo?q=a%20b+c&z=1 HTTP/1.1\r\nHost: x\r\nX-Test: hello\r\n"
			       "Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world";
static const char post_want[] = "POST /echo q=a b c h=hello b=hello world";

static void *t_split(void *a)
{
	size_t len = sizeof post_req - 1;
	char body[4096];
	for (size_t k = 1; k < len; k++) {
		int fd = tcp_connect(port);
		struct reader *r = calloc(1, sizeof *r);
		r->fd = fd;
		write_all(fd, post_req, k);
		usleep(1500);
		write_all(fd, post_req + k, len - k);
		int st = read_resp(r, body, sizeof body, NULL, 0);
		if (st != 200 || strcmp(body, post_want))
			TFAIL("split %zu: status %d body '%s'", k, st, body);
		/* keep-alive: a second request on the same connection */
		write_all(fd, post_req, len);
		st = read_resp(r, body, sizeof body, NULL, 0);
		if (st != 200 || strcmp(body, post_want))
			TFAIL("split %zu second: status %d", k, st);
		close(fd);
		free(r);
	}
	/* byte by byte, slowly */
	int fd = tcp_connect(port);
	struct reader *r = calloc(1, sizeof *r);
	r->fd = fd;
	for (size_t i = 0; i < len; i++) {
		write_all(fd, post_req + i, 1);
		usleep(300);
	}
	int st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 200 || strcmp(body, post_want))
		TFAIL("bytewise: status %d body '%s'", st, body);
	close(fd);
	free(r);
	/* chunked body, split */
	static const char chunked[] = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
				      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
	for (size_t k = 1; k < sizeof chunked - 1; k += 7) {
		fd = tcp_connect(port);
		r = calloc(1, sizeof *r);
		r->fd = fd;
		write_all(fd, chunked, k);
		usleep(1000);
		write_all(fd, chunked + k, sizeof chunked - 1 - k);
		st = read_resp(r, body, sizeof body, NULL, 0);
		if (st != 200 || strcmp(body, "POST /echo q=- h=- b=hello world"))
			TFAIL("chunked split %zu: %d '%s'", k, st, body);
		close(fd);
		free(r);
	}
	atomic_store(&done, 1);
	return NULL;
}

static void *t_pipeline(void *a)
{
	char body[4096], hdrs[4096];
	int fd = tcp_connect(port);
	struct reader *r = calloc(1, sizeof *r);
	r->fd = fd;
	static const char reqs[] = "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
				   "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
				   "POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
				   "GET /four?q=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	write_all(fd, reqs, sizeof reqs - 1);
	int st = read_resp(r, body, sizeof body, hdrs, sizeof hdrs);
	if (st != 200 || strcmp(body, "GET /one q=- h=- b="))
		TFAIL("pipe 1: %d '%s'", st, body);
	if (!strstr(hdrs, "Server: baton-test\r\n") || !strstr(hdrs, "X-Extra: 1\r\n") ||
	    !strstr(hdrs, "Connection: keep-alive\r\n"))
		TFAIL("pipe 1 headers: %s", hdrs);
	st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 200 || strcmp(body, "slow"))
		TFAIL("pipe 2: %d '%s'", st, body);
	st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 200 || strcmp(body, "POST /three q=- h=- b=abc"))
		TFAIL("pipe 3: %d '%s'", st, body);
	st = read_resp(r, body, sizeof body, hdrs, sizeof hdrs);
	if (st != 200 || strcmp(body, "GET /four q=4 h=- b=") || !strstr(hdrs, "Connection: close"))
		TFAIL("pipe 4: %d '%s'", st, body);
	char x;
	if (read(fd, &x, 1) != 0)
		TFAIL("pipe: connection not closed after Connection: close");
	close(fd);

	/* pipelined, split at every offset across a boundary */
	for (size_t k = 1; k < sizeof reqs - 1; k += 5) {
		fd = tcp_connect(port);
		r->fd = fd;
		r->n = 0;
		write_all(fd, reqs, k);
		usleep(1000);
		write_all(fd, reqs + k, sizeof reqs - 1 - k);
		const char *want[] = {"GET /one q=- h=- b=", "slow", "POST /three q=- h=- b=abc",
				      "GET /four q=4 h=- b="};
		for (int i = 0; i < 4; i++) {
			st = read_resp(r, body, sizeof body, NULL, 0);
			if (st != 200 || strcmp(body, want[i]))
				TFAIL("pipe split %zu #%d: %d '%s'", k, i, st, body);
		}
		close(fd);
	}
	free(r);
	atomic_store(&done, 1);
	return NULL;
}

static void *t_limits(void *a)
{
	char body[4096];
	struct reader *r = calloc(1, sizeof *r);
	/* body over the limit by Content-Length */
	r->fd = tcp_connect(port);
	static const char big[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";
	write_all(r->fd, big, sizeof big - 1);
	int st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 413)
		TFAIL("413: got %d", st);
	close(r->fd);
	/* chunked body over the limit */
	r->fd = tcp_connect(port);
	r->n = 0;
	static const char bigc[] = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
	write_all(r->fd, bigc, sizeof bigc - 1);
	char chunk[600];
	memset(chunk, 'a', sizeof chunk);
	memcpy(chunk, "200\r\n", 5);
	memcpy(chunk + 5 + 0x200, "\r\n", 2);
	for (int i = 0; i < 3; i++)
		write_all(r->fd, chunk, 5 + 0x200 + 2);
	st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 413)
		TFAIL("413 chunked: got %d", st);
	close(r->fd);
	/* headers over the limit */
	r->fd = tcp_connect(port);
	r->n = 0;
	write_all(r->fd, "GET / HTTP/1.1\r\n", 16);
	char line[300];
	memset(line, 'b', sizeof line);
	memcpy(line, "X-Pad: ", 7);
	memcpy(line + sizeof line - 2, "\r\n", 2);
	for (int i = 0; i < 10; i++)
		write_all(r->fd, line, sizeof line);
	st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 431)
		TFAIL("431: got %d", st);
	close(r->fd);
	/* garbage */
	r->fd = tcp_connect(port);
	r->n = 0;
	write_all(r->fd, "HELLO\x01\x02 there\r\n\r\n", 17);
	st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 400)
		TFAIL("400: got %d", st);
	close(r->fd);
	/* a peer that vanishes while its request is pending */
	r->fd = tcp_connect(port);
	r->n = 0;
	write_all(r->fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", 31);
	usleep(50000);
	close(r->fd);
	/* a request that is held until the server is freed */
	r->fd = tcp_connect(port);
	r->n = 0;
	write_all(r->fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", 31);
	usleep(50000);
	free(r);
	atomic_store(&done, 1);
	return NULL;
}

static int fd2;
static void *t_timeout(void *a)
{
	char body[256];
	struct reader *r = calloc(1, sizeof *r);
	r->fd = tcp_connect(port);
	write_all(r->fd, "GET / HTTP/1.1\r\nHo", 18);
	int st = read_resp(r, body, sizeof body, NULL, 0);
	if (st != 408)
		TFAIL("408: got %d", st);
	close(r->fd);
	free(r);
	atomic_store(&done, 1);
	return NULL;
}

int main(void)
{
	base = event_base_new();
	int lfd = listen_any(&port);
	CHECK(lfd >= 0);
	struct bt_http_limits lim = {.max_header = 2048, .max_body = 1024, .read_timeout_s = 5,
				     .server_hdr = "baton-test"};
	struct bt_http_server *s = bt_http_server_new(base, lfd, &lim, handler, NULL);
	CHECK(s != NULL);

	run_until_done(t_split);
	run_until_done(t_pipeline);
	handled = 0;
	nheld = 0;
	run_until_done(t_limits);
	CHECK(nheld == 2);
	/* let the server notice the first held peer went away */
	event_base_loopexit(base, &(struct timeval){0, 100000});
	event_base_dispatch(base);
	/* answering a request whose peer vanished is harmless */
	if (nheld >= 1)
		bt_http_respond(held[0], 200, "text/plain", "late", 4);
	bt_http_server_free(&s);
	CHECK(s == NULL);
	/* answered after the server is gone: still valid, discarded */
	if (nheld >= 2)
		bt_http_respond(held[1], 200, "text/plain", "late", 4);
	bt_http_server_free(&s); /* NULL is fine */

	/* read timeout: 408 for a half-sent request */
	lfd = listen_any(&port);
	lim.read_timeout_s = 1;
	s = bt_http_server_new(base, lfd, &lim, handler, NULL);
	run_until_done(t_timeout);
	bt_http_server_free(&s);
	(void)fd2;

	CHECK(atomic_load(&thread_fail) == 0);
	event_base_free(base);
	BT_TEST_END();
}
