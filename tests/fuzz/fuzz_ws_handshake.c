/*
 * NAME
 *	fuzz_ws_handshake.c - libFuzzer target: a server's bytes into the WebSocket client
 * DESCRIPTION
 *	The input is parsed as a complete handshake response block, then
 *	written (in two pieces, split at a point taken from the input) into a
 *	client started on one end of a socketpair with a fixed
 *	Sec-WebSocket-Key, so valid responses reach the framing code too.
 * DIAGNOSTICS
 *	Crashes and sanitizer reports only.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <event2/event.h>

#include "bt_ws.h"
#include "bt_ws_int.h"

static struct event_base *base;
static int closed;

static void on_msg(struct bt_ws *ws, int op, const uint8_t *p, size_t n, void *arg)
{
	if (n && p[0] == 'c')
		bt_ws_close(ws, 1000, "c");
	else
		bt_ws_send(ws, op, p, n);
}

static void on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	bt_ws_http_status(ws);
	bt_ws_resp_header(ws, "server");
	closed = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!base) {
		base = event_base_new();
		signal(SIGPIPE, SIG_IGN);
		bt_ws_test_fixed_key = "dGhlIHNhbXBsZSBub25jZQ==";
	}
	if (size > 100000)
		return 0;
	struct bt_ws_resp r = {0};
	if (bt_ws_resp_parse((const char *)data, size, &r) == 0) {
		bt_ws_resp_check(&r, "dGhlIHNhbXBsZSBub25jZQ==");
		bt_ws_resp_get(&r, "Upgrade");
	}
	bt_ws_resp_clear(&r);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 0;
	static const struct bt_ws_cbs cbs = {NULL, on_msg, on_close, NULL};
	static const struct bt_ws_opts o = {.max_msg = 4096};
	closed = 0;
	struct bt_ws *ws = bt_ws_connect_fd(base, sv[1], "h", "/", &cbs, NULL, &o);
	if (!ws) {
		close(sv[0]);
		return 0;
	}
	size_t split = size ? data[0] % (size + 1) : 0;
	char sink[65536];
	if (split && send(sv[0], data, split, MSG_DONTWAIT) < 0)
		split = 0;
	for (int i = 0; i < 4; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	size_t off = split;
	while (off < size) {
		ssize_t w = send(sv[0], data + off, size - off, MSG_DONTWAIT);
		if (w <= 0)
			break;
		off += (size_t)w;
		for (int i = 0; i < 4; i++)
			event_base_loop(base, EVLOOP_NONBLOCK);
	}
	for (int i = 0; i < 8; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
			;
	}
	close(sv[0]);
	for (int i = 0; i < 64 && !closed; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	return 0;
}
