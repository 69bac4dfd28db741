/*
 * NAME
 *	fuzz_ws_frame.c - libFuzzer target: a peer's bytes into the WebSocket frame reader
 * DESCRIPTION
 *	The first byte picks the side and how the rest is cut into writes.  Server side (even):
 *	the bytes come from a client after the handshake (bt_ws_server_new on one end of a
 *	socketpair, as bt_http_upgrade hands a connection over).  Client side (odd): a valid
 *	101 answer to a fixed Sec-WebSocket-Key is sent first, so every byte after it is a
 *	frame from a server.  The callbacks echo messages and close on a message starting
 *	with 'c' (and pause reading, once, on one starting with 'p'), so queued writes, pongs and the close handshake run under the input too.
 * DIAGNOSTICS
 *	Crashes and sanitizer reports only.
 */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bt_ws.h"
#include "bt_ws_int.h"

static struct event_base *base;
static int closed, paused; /* paused: once per input, resumed at its end */

static void on_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	if (n && p[0] == 'c')
		bt_ws_close(ws, 1000, "c");
	else if (n && p[0] == 'p' && !paused)
		paused = 1, bt_ws_pause(ws);
	else
		bt_ws_send(ws, op, p, n);
}

static void on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	closed = 1;
}

static void run(int n)
{
	for (int i = 0; i < n; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
	static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
	if (!base) {
		base = event_base_new();
		signal(SIGPIPE, SIG_IGN);
		bt_ws_test_fixed_key = key;
	}
	if (size < 1 || size > 200000)
		return 0;
	int mode = data[0];
	data++, size--;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 0;
	static const struct bt_ws_cbs cbs = { NULL, on_msg, on_close, NULL };
	static const struct bt_ws_opts o = { .max_msg = 8192, .drain_lowat = 1024 };
	closed = paused = 0;
	struct bt_ws *ws;
	if (mode & 1) {
		ws = bt_ws_connect_fd(base, sv[1], "h", "/", &cbs, NULL, &o);
	} else {
		evutil_make_socket_nonblocking(sv[1]);
		struct bufferevent *bev = bufferevent_socket_new(base, sv[1], BEV_OPT_CLOSE_ON_FREE);
		if (!bev) {
			close(sv[0]);
			close(sv[1]);
			return 0;
		}
		ws = bt_ws_server_new(base, bev, "127.0.0.1:1", &cbs, NULL, &o);
	}
	if (!ws) {
		close(sv[0]);
		return 0;
	}
	char sink[65536];
	if (mode & 1) {
		run(2);
		while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0) /* the client's request */
			;
		if (send(sv[0], resp, sizeof resp - 1, MSG_DONTWAIT) < 0)
			size = 0;
		run(2);
	}
	/* writes of 1 << (mode >> 1 & 15) bytes: from a trickle of single bytes to 32 KiB at once */
	size_t chunk = (size_t)1 << ((mode >> 1) & 15);
	size_t off = 0;
	while (off < size && !closed) {
		size_t k = size - off < chunk ? size - off : chunk;
		ssize_t w = send(sv[0], data + off, k, MSG_DONTWAIT);
		if (w <= 0)
			break;
		off += (size_t)w;
		run(2);
		while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
			;
	}
	for (int i = 0; i < 8; i++) {
		run(1);
		while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
			;
	}
	if (!closed)
		bt_ws_resume(ws); /* a paused connection would never read the EOF; ws lives until on_close */
	close(sv[0]);
	for (int i = 0; i < 64 && !closed; i++)
		run(1);
	return 0;
}
