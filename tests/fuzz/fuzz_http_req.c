/*
 * NAME
 *	fuzz_http_req.c - libFuzzer target: bytes from a peer into the HTTP server (and the WebSocket upgrade)
 * DESCRIPTION
 *	Each input is written into one end of a socketpair whose other end the
 *	server adopts; the loop runs until the server has answered and the
 *	connection is gone.  Requests to /ws are upgraded, so the bytes after
 *	the request reach the server-side WebSocket framing.
 * DIAGNOSTICS
 *	Crashes and sanitizer reports only.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <event2/event.h>

#include "bt_http.h"
#include "bt_ws.h"

static struct event_base *base;
static struct bt_http_server *srv;
static int ws_open;

static void ws_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	bt_ws_send(ws, op, p, n);
	if (n && p[0] == 'c')
		bt_ws_close(ws, 1000, "c");
}

static void ws_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	ws_open--;
}

static void handler(struct bt_http_req *r, void *arg)
{
	static const struct bt_ws_cbs cbs = {NULL, ws_msg, ws_close, NULL};
	static const struct bt_ws_opts o = {.max_msg = 4096};
	char v[64];
	size_t bl;
	bt_http_req_body(r, &bl);
	bt_http_req_header(r, "host");
	bt_http_req_param(r, "cursor", v, sizeof v);
	if (!strcmp(bt_http_req_path(r), "/ws")) {
		if (bt_http_upgrade(r, &cbs, NULL, &o))
			ws_open++;
		return;
	}
	bt_http_respond(r, 200, "text/plain", bt_http_req_query(r), strlen(bt_http_req_query(r)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!base) {
		base = event_base_new();
		int lfd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		bind(lfd, (struct sockaddr *)&sa, sizeof sa);
		listen(lfd, 1);
		struct bt_http_limits lim = {.max_header = 2048, .max_body = 4096, .read_timeout_s = 1};
		srv = bt_http_server_new(base, lfd, &lim, handler, NULL);
	}
	if (size > 100000)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 0;
	if (bt_http_server_adopt(srv, sv[1]) != 0) {
		close(sv[0]);
		return 0;
	}
	size_t off = 0;
	char sink[65536];
	while (off < size) {
		ssize_t w = send(sv[0], data + off, size - off, MSG_DONTWAIT);
		if (w <= 0)
			break;
		off += (size_t)w;
		for (int i = 0; i < 4; i++)
			event_base_loop(base, EVLOOP_NONBLOCK);
	}
	shutdown(sv[0], SHUT_WR);
	for (int i = 0; i < 16; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
			;
	}
	close(sv[0]);
	for (int i = 0; i < 16; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	return 0;
}
