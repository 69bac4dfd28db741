/*
 * NAME
 *	test_fetch - bt_fetch against a real HTTP server on 127.0.0.1
 * DESCRIPTION
 *	An evhttp server on the same event loop serves 200s, 404s, big bodies
 *	(with and without Content-Length) and a path that never answers.  The
 *	tests check statuses, bodies, the Server header, max_body, timeouts,
 *	refused connections, the public_only address filter, cancellation by
 *	bt_fetch_free, callbacks that start new requests, and 500 requests with
 *	many in flight.  Run under ASan/LeakSanitizer: a leaked response body
 *	fails the run (lesson 11).  A safety timer stops a stuck loop; it is a
 *	hang guard, not a timing assertion.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; exits non-zero on any failure.
 */
#include "bt_test.h"

#include "bt_fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static struct event_base *base;
static int port;
static int hangs;      /* /hang requests received */
static int hang_want;  /* break the loop when this many arrived */
static int pending;    /* callbacks still expected */
static bool in_get;    /* set while inside bt_fetch_get */
static bool cb_inside; /* a callback ran inside bt_fetch_get */

#define BIG 65536

static void serve(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req);
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Server", "fake-pds/1.0 (atproto-relay)");
	if (strcmp(uri, "/ok") == 0) {
		evbuffer_add_printf(b, "hello world");
		evhttp_send_reply(req, 200, "OK", b);
	} else if (strncmp(uri, "/n/", 3) == 0) {
		evbuffer_add_printf(b, "n%s", uri + 3);
		evhttp_send_reply(req, 200, "OK", b);
	} else if (strcmp(uri, "/big") == 0) {
		char *p = malloc(BIG);
		memset(p, 'x', BIG);
		evbuffer_add(b, p, BIG);
		free(p);
		evhttp_send_reply(req, 200, "OK", b);
	} else if (strcmp(uri, "/chunked") == 0) {
		evhttp_send_reply_start(req, 200, "OK");
		for (int i = 0; i < 16; i++) {
			char chunk[4096];
			memset(chunk, 'y', sizeof chunk);
			evbuffer_add(b, chunk, sizeof chunk);
			evhttp_send_reply_chunk(req, b);
		}
		evhttp_send_reply_end(req);
	} else if (strcmp(uri, "/empty") == 0) {
		evhttp_send_reply(req, 204, "No Content", NULL);
	} else if (strcmp(uri, "/hang") == 0) {
		hangs++; /* never answered; freed with its connection */
		if (hang_want && hangs >= hang_want)
			event_base_loopbreak(base);
	} else {
		evbuffer_add_printf(b, "{\"error\":\"NotFound\"}");
		evhttp_send_reply(req, 404, "Not Found", b);
	}
	evbuffer_free(b);
}

static void guard(evutil_socket_t fd, short w, void *arg)
{
	fprintf(stderr, "loop guard fired\n");
	event_base_loopbreak(base);
}

/* Runs the loop until `pending` reaches zero (callbacks break it) or the guard fires. */
static void run(void)
{
	struct event *g = evtimer_new(base, guard, NULL);
	struct timeval tv = {60, 0};
	evtimer_add(g, &tv);
	if (pending > 0 || hang_want)
		event_base_dispatch(base);
	event_free(g);
}

struct res {
	int calls, status;
	char body[128];
	size_t len;
	char server[128];
	int id;
};

static void on_res(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct res *r = arg;
	if (in_get)
		cb_inside = true;
	r->calls++;
	r->status = status;
	r->len = len;
	snprintf(r->body, sizeof r->body, "%.*s", (int)(len < 100 ? len : 100), body);
	snprintf(r->server, sizeof r->server, "%s", server);
	if (--pending == 0)
		event_base_loopbreak(base);
}

static int get(struct bt_fetch *f, const char *path, struct res *r)
{
	char url[256];
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
	in_get = true;
	int rc = bt_fetch_get(f, url, on_res, r);
	in_get = false;
	if (rc == 0)
		pending++;
	return rc;
}

static void test_basic(void)
{
	struct bt_fetch_opts o = {.max_conns = 4, .timeout_ms = 20000, .max_body = 10000, .user_agent = "baton-test"};
	struct bt_fetch *f = bt_fetch_new(base, &o);
	CHECK(f != NULL);
	if (!f)
		return;
	struct res ok = {0}, nf = {0}, big = {0}, chunked = {0}, empty = {0}, bad = {0};
	CHECK(get(f, "/ok", &ok) == 0);
	CHECK(get(f, "/nothing-here", &nf) == 0);
	CHECK(get(f, "/big", &big) == 0);
	CHECK(get(f, "/chunked", &chunked) == 0);
	CHECK(get(f, "/empty", &empty) == 0);
	in_get = true;
	CHECK(bt_fetch_get(f, "gopher://127.0.0.1/x", on_res, &bad) == 0);
	in_get = false;
	pending++;
	CHECK(bt_fetch_inflight(f) == 6);
	CHECK(ok.calls == 0); /* never from inside bt_fetch_get */
	run();
	CHECK(!cb_inside);
	CHECK(bt_fetch_inflight(f) == 0);
	CHECK(ok.calls == 1 && ok.status == 200 && ok.len == 11 && strcmp(ok.body, "hello world") == 0);
	CHECK(strcmp(ok.server, "fake-pds/1.0 (atproto-relay)") == 0);
	CHECK(nf.calls == 1 && nf.status == 404 && strstr(nf.body, "NotFound") != NULL);
	CHECKF(big.calls == 1 && big.status == -EFBIG, "big: %d", big.status);
	CHECK(big.len == 0 && big.server[0] == 0);
	CHECKF(chunked.calls == 1 && chunked.status == -EFBIG, "chunked: %d", chunked.status);
	CHECK(empty.calls == 1 && empty.status == 204 && empty.len == 0 && empty.body[0] == 0);
	CHECKF(bad.calls == 1 && bad.status == -EINVAL, "gopher: %d", bad.status);
	bt_fetch_free(&f);
	CHECK(f == NULL);
	bt_fetch_free(&f);
	bt_fetch_free(NULL);

	/* A body exactly at max_body is fine. */
	struct bt_fetch_opts o2 = {.max_conns = 2, .timeout_ms = 20000, .max_body = BIG};
	f = bt_fetch_new(base, &o2);
	struct res exact = {0};
	CHECK(f && get(f, "/big", &exact) == 0);
	run();
	CHECK(exact.calls == 1 && exact.status == 200 && exact.len == BIG);
	bt_fetch_free(&f);
}

static void test_errors(void)
{
	/* Timeout: the server never answers. */
	struct bt_fetch_opts o = {.max_conns = 2, .timeout_ms = 300, .max_body = 1000};
	struct bt_fetch *f = bt_fetch_new(base, &o);
	struct res hang = {0}, refused = {0}, blocked = {0}, dns = {0};
	CHECK(f && get(f, "/hang", &hang) == 0);
	run();
	CHECKF(hang.calls == 1 && hang.status == -ETIMEDOUT, "hang: %d", hang.status);

	/* Connection refused: a port that was just free. */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	CHECK(bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &al) == 0);
	close(s);
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", ntohs(a.sin_port));
	CHECK(bt_fetch_get(f, url, on_res, &refused) == 0);
	pending++;
	CHECK(bt_fetch_get(f, "http://does-not-exist.invalid/x", on_res, &dns) == 0);
	pending++;
	run();
	CHECKF(refused.calls == 1 && refused.status == -ECONNREFUSED, "refused: %d", refused.status);
	CHECKF(dns.calls == 1 && dns.status < 0, "dns: %d", dns.status);
	bt_fetch_free(&f);

	/* public_only: loopback is refused after DNS, before connecting. */
	struct bt_fetch_opts op = {.timeout_ms = 5000, .public_only = true};
	f = bt_fetch_new(base, &op);
	int before = hangs;
	CHECK(f && get(f, "/ok", &blocked) == 0);
	run();
	CHECKF(blocked.calls == 1 && blocked.status == -EPERM, "blocked: %d", blocked.status);
	CHECK(hangs == before);
	bt_fetch_free(&f);

	/* Long URLs are refused synchronously and the callback never runs. */
	struct bt_fetch *g = bt_fetch_new(base, NULL);
	char *lu = malloc(5000);
	memset(lu, 'a', 4999);
	lu[4999] = 0;
	memcpy(lu, "http://", 7);
	struct res never = {0};
	CHECK(g && bt_fetch_get(g, lu, on_res, &never) == -EINVAL);
	CHECK(g && bt_fetch_inflight(g) == 0);
	free(lu);
	bt_fetch_free(&g);
	CHECK(never.calls == 0);
}

static void test_cancel(void)
{
	struct bt_fetch_opts o = {.max_conns = 8, .timeout_ms = 60000};
	struct bt_fetch *f = bt_fetch_new(base, &o);
	struct res r[3] = {{0}};
	hangs = 0;
	hang_want = 3;
	for (int i = 0; i < 3; i++)
		CHECK(f && get(f, "/hang", &r[i]) == 0);
	run(); /* until the server has seen all three */
	hang_want = 0;
	CHECK(hangs == 3);
	CHECK(bt_fetch_inflight(f) == 3);
	bt_fetch_free(&f);
	for (int i = 0; i < 3; i++)
		CHECKF(r[i].calls == 1 && r[i].status == -ECANCELED, "%d: calls %d status %d", i, r[i].calls,
		       r[i].status);
	CHECK(pending == 0);
	pending = 0;
}

/* 500 requests, each answered with its own id; every callback once, with its own body. */
#define MANY 500
static struct res many[MANY];
static struct bt_fetch *chain_f;
static int chained;

static void on_chain(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct res *r = arg;
	r->calls++;
	r->status = status;
	snprintf(r->body, sizeof r->body, "%.*s", (int)len, body);
	/* Start a follow-up request from inside the callback. */
	if (chained < 20 && status == 200) {
		chained++;
		struct res *nr = &many[MANY - 1 - chained];
		char url[128];
		snprintf(url, sizeof url, "http://127.0.0.1:%d/n/%d", port, nr->id);
		if (bt_fetch_get(chain_f, url, on_res, nr) == 0)
			pending++;
	}
	if (--pending == 0)
		event_base_loopbreak(base);
}

static void test_many(void)
{
	struct bt_fetch_opts o = {.max_conns = 16, .timeout_ms = 60000, .max_body = 4096};
	struct bt_fetch *f = bt_fetch_new(base, &o);
	chain_f = f;
	if (!f)
		return;
	size_t peak = 0;
	memset(many, 0, sizeof many);
	for (int i = 0; i < MANY; i++)
		many[i].id = i;
	/* The first 20 start a chained request each for the last 20 slots. */
	for (int i = 0; i < MANY - 21; i++) {
		char url[128];
		snprintf(url, sizeof url, "http://127.0.0.1:%d/n/%d", port, i);
		in_get = true;
		int rc = bt_fetch_get(f, url, i < 20 ? on_chain : on_res, &many[i]);
		in_get = false;
		CHECK(rc == 0);
		if (rc == 0)
			pending++;
		if (bt_fetch_inflight(f) > peak)
			peak = bt_fetch_inflight(f);
	}
	CHECK(peak == MANY - 21);
	run();
	CHECK(!cb_inside);
	int good = 0;
	for (int i = 0; i < MANY - 1; i++) {
		char want[32];
		snprintf(want, sizeof want, "n%d", i);
		good += many[i].calls == 1 && many[i].status == 200 && strcmp(many[i].body, want) == 0;
	}
	CHECKF(good == MANY - 1, "good %d", good);
	CHECK(chained == 20);
	CHECK(bt_fetch_inflight(f) == 0);
	bt_fetch_free(&f);
}

static void test_addr(void)
{
	const char *pub[] = {"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"};
	const char *priv[] = {"127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254",
			      "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
			      "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2001:db8::1",
			      "ff02::1", "64:ff9b::7f00:1"};
	for (size_t i = 0; i < sizeof pub / sizeof pub[0] + sizeof priv / sizeof priv[0]; i++) {
		bool want = i < sizeof pub / sizeof pub[0];
		const char *s = want ? pub[i] : priv[i - sizeof pub / sizeof pub[0]];
		struct sockaddr_storage ss = {0};
		if (strchr(s, ':')) {
			struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
			a6->sin6_family = AF_INET6;
			inet_pton(AF_INET6, s, &a6->sin6_addr);
		} else {
			struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
			a4->sin_family = AF_INET;
			inet_pton(AF_INET, s, &a4->sin_addr);
		}
		CHECKF(bt_addr_public((struct sockaddr *)&ss) == want, "%s", s);
	}
	CHECK(!bt_addr_public(NULL));
}

int main(void)
{
	base = event_base_new();
	struct evhttp *http = evhttp_new(base);
	struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
	CHECK(bs != NULL);
	if (!bs)
		BT_TEST_END();
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&a, &al);
	port = ntohs(a.sin_port);
	evhttp_set_gencb(http, serve, NULL);

	test_addr();
	test_basic();
	test_errors();
	test_cancel();
	test_many();

	evhttp_free(http);
	event_base_free(base);
	BT_TEST_END();
}
