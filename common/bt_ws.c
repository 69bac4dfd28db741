/*
 * NAME
 *	bt_ws.c - WebSocket connections (client and server side) on libevent bufferevents
 * DESCRIPTION
 *	See bt_ws.h for the contract.  Structure: libevent callbacks (read,
 *	write, event, timers, kick) are the only entry points that may end a
 *	connection; each brackets its work with enter()/leave(), and the
 *	struct is freed by the outermost leave() once finish() has run
 *	on_close.  Public calls (send, close, pause, resume) only queue work
 *	and, when something must be reported, activate the kick event.
 *
 *	wslay writes into the bufferevent's output buffer (up to OUT_CAP
 *	bytes; the rest waits in wslay's queue) and reads from its input
 *	buffer, so the handshake bytes and the frames after them are parsed
 *	from the same buffer whatever the TCP split.  Process: ingest (client)
 *	and fanout (server); one event_base, one thread per connection.
 *
 *	bt_ws_send_ref (server side, data messages) bypasses wslay: the caller's complete frame is
 *	appended to the output buffer by reference, only when wslay holds nothing queued, so it can
 *	neither split a frame wslay is writing nor overtake a message queued before it.  A close
 *	is still queued only once wslay's queue is empty and so follows every such frame.
 * DIAGNOSTICS
 *	Failures are reported through on_close(code, reason); see bt_ws.h.
 */
#include <errno.h>
#include <unistd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <assert.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <wslay/wslay.h>

#include "bt_ws.h"
#include "bt_ws_int.h"

#define WS_MAGIC 0x62747773u
#define OUT_CAP (256u * 1024u)
#define DEFAULT_MAX_MSG 5000000u
#define CONNECT_TIMEOUT_S 30 /* client: connect and handshake together, whatever trickles in */
/* Pings answered while the peer reads nothing (our output is full): more than this is a flood
   (each asks wslay to queue a pong), and the connection ends with 1008 "ping flood". */
#define PING_BACKLOG_MAX 1024
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_DEAD };

const char *bt_ws_test_fixed_key;

struct bt_ws {
	unsigned magic;
	struct event_base *base;
	struct bufferevent *bev;
	wslay_event_context_ptr wctx;
	struct bt_ws_cbs cbs;
	void *arg;
	size_t max_msg, drain_lowat;
	int ping_s, idle_s;
	int state, depth;
	bool client, in_recv, paused, want_drain, freeme, closing_local, failed, close_tmr_on;
	int close_code;
	unsigned ping_backlog; /* pings received since our output last had room */
	char close_reason[128];
	bool close_pending; /* our close frame waits for the data queued before it */
	int pend_code;
	char pend_reason[128];
	int fail_code;
	char fail_reason[128];
	struct event *tick, *close_tmr, *kick;
	uint64_t last_rx_ms, last_ping_ms;
	uint64_t tx_bytes; /* server: bytes the socket took from the output buffer */
	char peer[64];
	/* client */
	char *host, *host_hdr, *path, *ua;
	char key[32];
	struct bt_ws_resp resp;
	SSL_CTX *own_ctx;
	struct evdns_base *own_dns;
	bt_ws_addr_check_fn *addr_check;
	void *addr_check_arg;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void ws_free(struct bt_ws *ws)
{
	assert(ws->magic == WS_MAGIC);
	if (ws->tick)
		event_free(ws->tick);
	if (ws->close_tmr)
		event_free(ws->close_tmr);
	if (ws->kick)
		event_free(ws->kick);
	if (ws->bev)
		bufferevent_free(ws->bev);
	if (ws->wctx)
		wslay_event_context_free(ws->wctx);
	bt_ws_resp_clear(&ws->resp);
	free(ws->host);
	free(ws->host_hdr);
	free(ws->path);
	free(ws->ua);
	if (ws->own_ctx)
		SSL_CTX_free(ws->own_ctx);
	if (ws->own_dns)
		evdns_base_free(ws->own_dns, 1);
	ws->magic = 0;
	free(ws);
}

static void enter(struct bt_ws *ws)
{
	ws->depth++;
}

static void leave(struct bt_ws *ws)
{
	assert(ws->depth > 0);
	if (--ws->depth == 0 && ws->freeme)
		ws_free(ws);
}

/* Ends the connection: closes the socket (once), stops timers, calls on_close; freed by the outer leave(). */
static void finish(struct bt_ws *ws, int code, const char *reason)
{
	assert(ws->depth > 0);
	if (ws->state == ST_DEAD)
		return;
	ws->state = ST_DEAD;
	if (ws->tick)
		event_del(ws->tick);
	if (ws->close_tmr)
		event_del(ws->close_tmr);
	if (ws->kick)
		event_del(ws->kick);
	if (ws->bev) {
		bufferevent_disable(ws->bev, EV_READ | EV_WRITE);
		bufferevent_setcb(ws->bev, NULL, NULL, NULL, NULL);
		bufferevent_free(ws->bev);
		ws->bev = NULL;
	}
	if (ws->cbs.on_close)
		ws->cbs.on_close(ws, code, reason ? reason : "", ws->arg);
	ws->freeme = true;
}

/* Records a failure to report from the event loop (never calls back synchronously). */
static void fail_later(struct bt_ws *ws, int code, const char *reason)
{
	if (ws->state == ST_DEAD || ws->failed)
		return;
	ws->failed = true;
	ws->fail_code = code;
	snprintf(ws->fail_reason, sizeof ws->fail_reason, "%.*s", (int)sizeof ws->fail_reason - 1, reason);
	if (ws->kick)
		event_active(ws->kick, EV_TIMEOUT, 0);
}

static void arm_close_timer(struct bt_ws *ws)
{
	if (ws->close_tmr_on || !ws->close_tmr)
		return;
	struct timeval tv = {BT_WS_CLOSE_TIMEOUT_S, 0};
	event_add(ws->close_tmr, &tv);
	ws->close_tmr_on = true;
	if (ws->bev)
		bufferevent_setwatermark(ws->bev, EV_WRITE, 0, 0);
}

/* ---- wslay glue ---- */

static ssize_t w_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
	struct bt_ws *ws = ud;
	if (ws->paused || !ws->bev || ws->failed) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	int n = evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	ws->last_rx_ms = now_ms();
	return n;
}

static ssize_t w_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct bt_ws *ws = ud;
	if (!ws->bev || ws->state == ST_DEAD) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	struct evbuffer *out = bufferevent_get_output(ws->bev);
	size_t have = evbuffer_get_length(out);
	if (have >= OUT_CAP) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	ws->ping_backlog = 0;
	if (len > OUT_CAP - have)
		len = OUT_CAP - have;
	if (evbuffer_add(out, data, len) != 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static int w_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
	if (RAND_bytes(buf, (int)len) != 1) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return 0;
}

static void w_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a, void *ud)
{
	struct bt_ws *ws = ud;
	if (a->opcode == WSLAY_PING && ws->bev &&
	    evbuffer_get_length(bufferevent_get_output(ws->bev)) >= OUT_CAP && ++ws->ping_backlog > PING_BACKLOG_MAX) {
		fail_later(ws, WSLAY_CODE_POLICY_VIOLATION, "ping flood");
		return;
	}
	if (a->opcode == WSLAY_CONNECTION_CLOSE) {
		if (!ws->close_code) {
			ws->close_code = a->status_code ? a->status_code : WSLAY_CODE_NO_STATUS_RCVD;
			size_t rl = a->msg_length > 2 ? a->msg_length - 2 : 0;
			if (rl > 123)
				rl = 123;
			if (rl)
				memcpy(ws->close_reason, a->msg + 2, rl);
			ws->close_reason[rl] = 0;
		}
		return;
	}
	if (a->opcode != WSLAY_TEXT_FRAME && a->opcode != WSLAY_BINARY_FRAME)
		return;
	if (ws->state != ST_OPEN || ws->closing_local || !ws->cbs.on_msg)
		return;
	ws->cbs.on_msg(ws, a->opcode, a->msg, a->msg_length, ws->arg);
}

/* Queues our pending close frame once the data queued before it has gone (wslay sends control frames
   ahead of data, so queueing it earlier would drop that data); returns true if it queued it. */
static bool queue_close(struct bt_ws *ws)
{
	if (!ws->close_pending || wslay_event_get_queued_msg_count(ws->wctx) != 0)
		return false;
	ws->close_pending = false;
	if (wslay_event_get_close_sent(ws->wctx))
		return false;
	size_t rl = strlen(ws->pend_reason);
	if (wslay_event_queue_close(ws->wctx, (uint16_t)ws->pend_code, (const uint8_t *)ws->pend_reason, rl) != 0 &&
	    !wslay_event_get_close_received(ws->wctx))
		fail_later(ws, ws->pend_code, ws->pend_reason);
	return true;
}

/* Sends what wslay has queued, unless this connection is inside wslay_event_recv (pump sends after it). */
static void flush(struct bt_ws *ws)
{
	if (ws->in_recv || ws->state != ST_OPEN || !ws->wctx)
		return;
	if (wslay_event_want_write(ws->wctx) && wslay_event_send(ws->wctx) != 0) {
		fail_later(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "write failed");
		return;
	}
	if (queue_close(ws) && wslay_event_want_write(ws->wctx) && wslay_event_send(ws->wctx) != 0)
		fail_later(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "write failed");
}

static void check_drain(struct bt_ws *ws)
{
	if (ws->state != ST_OPEN || !ws->want_drain || bt_ws_outq(ws) > ws->drain_lowat)
		return;
	ws->want_drain = false;
	if (ws->cbs.on_drain)
		ws->cbs.on_drain(ws, ws->arg);
}

/* Reads and writes what can be, then ends the connection once the close handshake is over. */
static void pump(struct bt_ws *ws)
{
	if (ws->state != ST_OPEN)
		return;
	if (!ws->paused && wslay_event_want_read(ws->wctx)) {
		ws->in_recv = true;
		int r = wslay_event_recv(ws->wctx);
		ws->in_recv = false;
		if (ws->state != ST_OPEN)
			return;
		if (r != 0) {
			finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "read failed");
			return;
		}
	}
	if (ws->failed) {
		finish(ws, ws->fail_code, ws->fail_reason);
		return;
	}
	if (wslay_event_want_write(ws->wctx) && wslay_event_send(ws->wctx) != 0) {
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "write failed");
		return;
	}
	if (ws->close_pending && queue_close(ws) && wslay_event_want_write(ws->wctx) &&
	    wslay_event_send(ws->wctx) != 0) {
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "write failed");
		return;
	}
	int sent = wslay_event_get_close_sent(ws->wctx);
	int rcvd = wslay_event_get_close_received(ws->wctx);
	if (sent && !ws->close_code) {
		ws->close_code = wslay_event_get_status_code_sent(ws->wctx);
		snprintf(ws->close_reason, sizeof ws->close_reason, "%s",
			 ws->close_code == WSLAY_CODE_MESSAGE_TOO_BIG ? "message too big"
			 : ws->close_code == WSLAY_CODE_PROTOCOL_ERROR ? "protocol error"
								       : "closed");
	}
	if (sent || rcvd || !wslay_event_get_read_enabled(ws->wctx))
		arm_close_timer(ws);
	if (sent && (rcvd || !wslay_event_get_read_enabled(ws->wctx)) &&
	    evbuffer_get_length(bufferevent_get_output(ws->bev)) == 0) {
		finish(ws, ws->close_code, ws->close_reason);
		return;
	}
}

/* ---- libevent callbacks ---- */

static void client_handshake(struct bt_ws *ws);
static int ws_open(struct bt_ws *ws);

static void read_cb(struct bufferevent *bev, void *ud)
{
	struct bt_ws *ws = ud;
	enter(ws);
	if (ws->state == ST_HANDSHAKE)
		client_handshake(ws);
	if (ws->state == ST_OPEN) {
		pump(ws);
		check_drain(ws);
	}
	leave(ws);
}

static void write_cb(struct bufferevent *bev, void *ud)
{
	struct bt_ws *ws = ud;
	enter(ws);
	if (ws->state == ST_OPEN) {
		pump(ws);
		check_drain(ws);
	}
	leave(ws);
}

static void send_request(struct bt_ws *ws)
{
	uint8_t raw[16];
	if (bt_ws_test_fixed_key) {
		snprintf(ws->key, sizeof ws->key, "%s", bt_ws_test_fixed_key);
	} else {
		if (RAND_bytes(raw, sizeof raw) != 1) {
			fail_later(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "no randomness");
			return;
		}
		EVP_EncodeBlock((unsigned char *)ws->key, raw, sizeof raw);
	}
	struct evbuffer *out = bufferevent_get_output(ws->bev);
	evbuffer_add_printf(out,
			    "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
			    ws->path, ws->host_hdr, ws->key);
	if (ws->ua)
		evbuffer_add_printf(out, "User-Agent: %s\r\n", ws->ua);
	evbuffer_add(out, "\r\n", 2);
	ws->state = ST_HANDSHAKE;
	bufferevent_enable(ws->bev, EV_READ | EV_WRITE);
	if (ws->paused)
		bufferevent_disable(ws->bev, EV_READ);
}

static void fmt_peer(const struct sockaddr *sa, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
		snprintf(out, cap, "%s:%u", ip, ntohs(s->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
		snprintf(out, cap, "[%s]:%u", ip, ntohs(s->sin6_port));
	} else {
		snprintf(out, cap, "local");
	}
}

static void on_connected(struct bt_ws *ws)
{
	evutil_socket_t fd = bufferevent_getfd(ws->bev);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		fmt_peer((struct sockaddr *)&ss, ws->peer, sizeof ws->peer);
		if (ws->addr_check && ws->addr_check((struct sockaddr *)&ss, (int)sl, ws->addr_check_arg) != 0) {
			finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "peer address refused");
			return;
		}
	}
	if (fd >= 0) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	send_request(ws);
}

static void conn_error_reason(struct bt_ws *ws, short what, char *buf, size_t cap)
{
	unsigned long e = bufferevent_get_openssl_error(ws->bev);
	int dns = bufferevent_socket_get_dns_error(ws->bev);
	if (e) {
		char eb[120];
		ERR_error_string_n(e, eb, sizeof eb);
		snprintf(buf, cap, "tls: %s", eb);
	} else if (dns) {
		snprintf(buf, cap, "dns: %s", evutil_gai_strerror(dns));
	} else if (what & BEV_EVENT_TIMEOUT) {
		snprintf(buf, cap, "timeout");
	} else if (what & BEV_EVENT_EOF) {
		snprintf(buf, cap, "connection closed by peer");
	} else {
		int err = EVUTIL_SOCKET_ERROR();
		snprintf(buf, cap, "socket: %s", err ? evutil_socket_error_to_string(err) : "error");
	}
}

static void event_cb(struct bufferevent *bev, short what, void *ud)
{
	struct bt_ws *ws = ud;
	enter(ws);
	if (what & BEV_EVENT_CONNECTED) {
		if (ws->state == ST_CONNECTING)
			on_connected(ws);
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		char reason[160];
		conn_error_reason(ws, what, reason, sizeof reason);
		if (ws->state == ST_CONNECTING) {
			/* Possibly still inside the resolver's callback: report from a clean frame. */
			bufferevent_disable(ws->bev, EV_READ | EV_WRITE);
			fail_later(ws, WSLAY_CODE_ABNORMAL_CLOSURE, reason);
		} else if (ws->state == ST_HANDSHAKE) {
			finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, reason);
		} else if (ws->state == ST_OPEN) {
			if (what & BEV_EVENT_EOF)
				pump(ws); /* deliver what arrived before the EOF */
			if (ws->state == ST_OPEN) {
				if (ws->close_code)
					finish(ws, ws->close_code, ws->close_reason);
				else
					finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, reason);
			}
		}
	}
	leave(ws);
}

static void kick_cb(evutil_socket_t fd, short what, void *ud)
{
	struct bt_ws *ws = ud;
	enter(ws);
	if (ws->failed && ws->state != ST_DEAD) {
		finish(ws, ws->fail_code, ws->fail_reason);
	} else if (ws->state == ST_HANDSHAKE) {
		client_handshake(ws);
		if (ws->state == ST_OPEN)
			pump(ws);
	} else if (ws->state == ST_OPEN) {
		pump(ws);
		check_drain(ws);
	}
	leave(ws);
}

static void close_tmr_cb(evutil_socket_t fd, short what, void *ud)
{
	struct bt_ws *ws = ud;
	enter(ws);
	if (ws->state == ST_CONNECTING || ws->state == ST_HANDSHAKE)
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "handshake timeout");
	else if (ws->state != ST_DEAD)
		finish(ws, ws->close_code ? ws->close_code : WSLAY_CODE_ABNORMAL_CLOSURE,
		       ws->close_code ? ws->close_reason : "close timeout");
	leave(ws);
}

static void tick_cb(evutil_socket_t fd, short what, void *ud)
{
	struct bt_ws *ws = ud;
	enter(ws);
	if (ws->state == ST_OPEN && !ws->paused) {
		uint64_t now = now_ms();
		uint64_t quiet = now - ws->last_rx_ms;
		if (ws->idle_s && quiet >= (uint64_t)ws->idle_s * 1000u) {
			finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "idle timeout");
		} else if (ws->ping_s && quiet >= (uint64_t)ws->ping_s * 1000u &&
			   now - ws->last_ping_ms >= (uint64_t)ws->ping_s * 1000u && !ws->closing_local &&
			   !wslay_event_get_close_sent(ws->wctx)) {
			struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"bt", 2};
			ws->last_ping_ms = now;
			if (wslay_event_queue_msg(ws->wctx, &m) == 0)
				pump(ws);
		}
	}
	leave(ws);
}

/* ---- opening ---- */

static struct bt_ws *ws_alloc(struct event_base *base, const struct bt_ws_cbs *cbs, void *arg,
			      const struct bt_ws_opts *o)
{
	/* a peer that vanished must not kill the process on write */
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	struct bt_ws *ws = calloc(1, sizeof *ws);
	if (!ws)
		return NULL;
	ws->magic = WS_MAGIC;
	ws->base = base;
	if (cbs)
		ws->cbs = *cbs;
	ws->arg = arg;
	ws->max_msg = o && o->max_msg ? o->max_msg : DEFAULT_MAX_MSG;
	ws->drain_lowat = o ? o->drain_lowat : 0;
	ws->ping_s = o && o->ping_interval_s > 0 ? o->ping_interval_s : 0;
	ws->idle_s = o && o->idle_timeout_s > 0 ? o->idle_timeout_s : 0;
	ws->kick = event_new(base, -1, 0, kick_cb, ws);
	ws->close_tmr = event_new(base, -1, 0, close_tmr_cb, ws);
	if (!ws->kick || !ws->close_tmr) {
		ws_free(ws);
		return NULL;
	}
	return ws;
}

/* Starts framing: wslay context, timers; state OPEN. */
static int ws_open(struct bt_ws *ws)
{
	struct wslay_event_callbacks wc = {w_recv, w_send, ws->client ? w_genmask : NULL, NULL, NULL, NULL, w_msg};
	int r = ws->client ? wslay_event_context_client_init(&ws->wctx, &wc, ws)
			   : wslay_event_context_server_init(&ws->wctx, &wc, ws);
	if (r != 0)
		return -ENOMEM;
	wslay_event_config_set_max_recv_msg_length(ws->wctx, ws->max_msg);
	event_del(ws->close_tmr); /* a client's handshake deadline */
	ws->state = ST_OPEN;
	ws->last_rx_ms = ws->last_ping_ms = now_ms();
	if (ws->ping_s || ws->idle_s) {
		int m = ws->ping_s && ws->idle_s ? (ws->ping_s < ws->idle_s ? ws->ping_s : ws->idle_s)
						 : (ws->ping_s ? ws->ping_s : ws->idle_s);
		/* a quarter of the shortest interval: a ping goes out well before the idle limit */
		long ms = (long)m * 250;
		struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
		ws->tick = event_new(ws->base, -1, EV_PERSIST, tick_cb, ws);
		if (!ws->tick)
			return -ENOMEM;
		event_add(ws->tick, &tv);
	}
	size_t lw = ws->drain_lowat < OUT_CAP / 2 ? ws->drain_lowat : OUT_CAP / 2;
	bufferevent_setwatermark(ws->bev, EV_WRITE, lw, 0);
	bufferevent_set_timeouts(ws->bev, NULL, NULL);
	return 0;
}

static void client_handshake(struct bt_ws *ws)
{
	struct evbuffer *in = bufferevent_get_input(ws->bev);
	struct evbuffer_ptr pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (pos.pos < 0) {
		if (evbuffer_get_length(in) > BT_WS_MAX_HANDSHAKE)
			finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "handshake response too long");
		return;
	}
	size_t n = (size_t)pos.pos + 4;
	if (n > BT_WS_MAX_HANDSHAKE) {
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "handshake response too long");
		return;
	}
	const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
	int r = p ? bt_ws_resp_parse(p, n, &ws->resp) : -ENOMEM;
	evbuffer_drain(in, n);
	if (r != 0) {
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "malformed handshake response");
		return;
	}
	if (ws->resp.status != 101) {
		char reason[64];
		snprintf(reason, sizeof reason, "handshake: HTTP %d", ws->resp.status);
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, reason);
		return;
	}
	if (bt_ws_resp_check(&ws->resp, ws->key) != 0) {
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "handshake: bad upgrade or Sec-WebSocket-Accept");
		return;
	}
	if (ws_open(ws) != 0) {
		finish(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "out of memory");
		return;
	}
	if (ws->cbs.on_open)
		ws->cbs.on_open(ws, ws->arg);
}

/* Counts what leaves the output buffer (written to the socket): bt_ws_tx_bytes. */
static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct bt_ws *ws = arg;
	ws->tx_bytes += info->n_deleted;
}

uint64_t bt_ws_tx_bytes(const struct bt_ws *ws)
{
	return ws ? ws->tx_bytes : 0;
}

uint64_t bt_ws_acked(const struct bt_ws *ws, size_t *held)
{
	*held = 0;
	if (!ws || !ws->bev)
		return 0;
	int unacked = 0;
	evutil_socket_t fd = bufferevent_getfd(ws->bev);
	/* SIOCOUTQ (= TIOCOUTQ): bytes in the send queue the peer has not acknowledged. */
	if (fd < 0 || ioctl(fd, TIOCOUTQ, &unacked) < 0 || unacked < 0)
		unacked = 0;
	*held = bt_ws_outq(ws) + (size_t)unacked;
	return ws->tx_bytes - (uint64_t)unacked;
}

void bt_ws_set_drain_lowat(struct bt_ws *ws, size_t lowat)
{
	if (!ws || ws->drain_lowat == lowat)
		return;
	ws->drain_lowat = lowat;
	if (ws->bev && ws->state == ST_OPEN) {
		size_t lw = lowat < OUT_CAP / 2 ? lowat : OUT_CAP / 2;
		bufferevent_setwatermark(ws->bev, EV_WRITE, lw, 0);
	}
	if (bt_ws_outq(ws) > lowat)
		ws->want_drain = true;
}

struct bt_ws *bt_ws_server_new(struct event_base *base, struct bufferevent *bev, const char *peer,
			       const struct bt_ws_cbs *cbs, void *arg, const struct bt_ws_opts *o)
{
	struct bt_ws *ws = ws_alloc(base, cbs, arg, o);
	if (!ws) {
		bufferevent_free(bev);
		return NULL;
	}
	ws->bev = bev;
	snprintf(ws->peer, sizeof ws->peer, "%s", peer ? peer : "");
	bufferevent_setcb(bev, read_cb, write_cb, event_cb, ws);
	evbuffer_add_cb(bufferevent_get_output(bev), out_cb, ws);
	if (ws_open(ws) != 0) {
		ws_free(ws);
		return NULL;
	}
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	/* Bytes after the request (first frames) may already sit in the input buffer. */
	event_active(ws->kick, EV_TIMEOUT, 0);
	return ws;
}

/* ---- URL and client start ---- */

static int parse_url(struct bt_ws *ws, const char *url, bool *tls, char *port, size_t pcap)
{
	const char *p;
	for (p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return -EINVAL;
	if (!strncasecmp(url, "ws://", 5)) {
		*tls = false;
		p = url + 5;
	} else if (!strncasecmp(url, "wss://", 6)) {
		*tls = true;
		p = url + 6;
	} else {
		return -EINVAL;
	}
	size_t alen = strcspn(p, "/?#");
	const char *rest = p + alen;
	const char *hs, *he, *ps = NULL;
	if (memchr(p, '@', alen))
		return -EINVAL;
	if (alen && p[0] == '[') {
		const char *rb = memchr(p, ']', alen);
		if (!rb)
			return -EINVAL;
		hs = p + 1;
		he = rb;
		if (rb + 1 < rest) {
			if (rb[1] != ':')
				return -EINVAL;
			ps = rb + 2;
		}
	} else {
		const char *c = memchr(p, ':', alen);
		hs = p;
		he = c ? c : rest;
		if (c)
			ps = c + 1;
	}
	if (he <= hs || he - hs > 253)
		return -EINVAL;
	unsigned long pn = *tls ? 443 : 80;
	if (ps) {
		if (ps >= rest || rest - ps > 5)
			return -EINVAL;
		pn = 0;
		for (const char *q = ps; q < rest; q++) {
			if (*q < '0' || *q > '9')
				return -EINVAL;
			pn = pn * 10 + (unsigned long)(*q - '0');
		}
		if (pn == 0 || pn > 65535)
			return -EINVAL;
	}
	snprintf(port, pcap, "%lu", pn);
	ws->host = strndup(hs, (size_t)(he - hs));
	ws->host_hdr = strndup(p, alen);
	size_t rl = strcspn(rest, "#");
	if (rl == 0 || rest[0] == '?') {
		ws->path = malloc(rl + 2);
		if (ws->path) {
			ws->path[0] = '/';
			memcpy(ws->path + 1, rest, rl);
			ws->path[rl + 1] = 0;
		}
	} else {
		ws->path = strndup(rest, rl);
	}
	if (!ws->host || !ws->host_hdr || !ws->path)
		return -ENOMEM;
	return 0;
}

struct bt_ws *bt_ws_connect(struct event_base *base, const char *url, const struct bt_ws_cbs *cbs, void *arg,
			    const struct bt_ws_opts *o)
{
	if (!base || !url)
		return NULL;
	struct bt_ws *ws = ws_alloc(base, cbs, arg, o);
	if (!ws)
		return NULL;
	ws->client = true;
	bool tls = false;
	char port[8];
	if (parse_url(ws, url, &tls, port, sizeof port) != 0)
		goto bad;
	if (o && o->user_agent && !(ws->ua = strdup(o->user_agent)))
		goto bad;
	if (o) {
		ws->addr_check = o->addr_check;
		ws->addr_check_arg = o->addr_check_arg;
	}
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	int sl = 0;
	bool is_ip4 = false, is_ip6 = false;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (evutil_inet_pton(AF_INET, ws->host, &s4->sin_addr) == 1) {
		is_ip4 = true;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)atoi(port));
		sl = sizeof *s4;
	} else if (evutil_inet_pton(AF_INET6, ws->host, &s6->sin6_addr) == 1) {
		is_ip6 = true;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)atoi(port));
		sl = sizeof *s6;
	}
	if (tls) {
		SSL_CTX *ctx = o ? o->ssl_ctx : NULL;
		if (!ctx) {
			ws->own_ctx = SSL_CTX_new(TLS_client_method());
			if (!ws->own_ctx)
				goto bad;
			SSL_CTX_set_default_verify_paths(ws->own_ctx);
			SSL_CTX_set_verify(ws->own_ctx, SSL_VERIFY_PEER, NULL);
			SSL_CTX_set_min_proto_version(ws->own_ctx, TLS1_2_VERSION);
			ctx = ws->own_ctx;
		}
		SSL *ssl = SSL_new(ctx);
		if (!ssl)
			goto bad;
		if (is_ip4 || is_ip6) {
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ws->host);
		} else {
			SSL_set_tlsext_host_name(ssl, ws->host);
			SSL_set1_host(ssl, ws->host);
		}
		ws->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
							 BEV_OPT_CLOSE_ON_FREE);
		if (!ws->bev) {
			SSL_free(ssl);
			goto bad;
		}
		bufferevent_openssl_set_allow_dirty_shutdown(ws->bev, 1);
	} else {
		ws->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
		if (!ws->bev)
			goto bad;
	}
	bufferevent_setcb(ws->bev, read_cb, write_cb, event_cb, ws);
	struct timeval to = {CONNECT_TIMEOUT_S, 0};
	bufferevent_set_timeouts(ws->bev, &to, &to);
	/* The read timeout restarts with every byte; this deadline does not (a trickled answer). */
	event_add(ws->close_tmr, &to);
	ws->state = ST_CONNECTING;
	int r;
	if (is_ip4 || is_ip6) {
		r = bufferevent_socket_connect(ws->bev, (struct sockaddr *)&ss, sl);
	} else {
		struct evdns_base *dns = o ? o->dns : NULL;
		if (!dns) {
			ws->own_dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
			if (!ws->own_dns)
				goto bad;
			dns = ws->own_dns;
		}
		r = bufferevent_socket_connect_hostname(ws->bev, dns, AF_UNSPEC, ws->host, atoi(port));
	}
	if (r != 0)
		fail_later(ws, WSLAY_CODE_ABNORMAL_CLOSURE, "connect failed");
	return ws;
bad:
	ws_free(ws);
	return NULL;
}

struct bt_ws *bt_ws_connect_fd(struct event_base *base, int fd, const char *host, const char *path_query,
			       const struct bt_ws_cbs *cbs, void *arg, const struct bt_ws_opts *o)
{
	struct bt_ws *ws = ws_alloc(base, cbs, arg, o);
	if (!ws) {
		evutil_closesocket(fd);
		return NULL;
	}
	ws->client = true;
	ws->host = strdup(host ? host : "localhost");
	ws->host_hdr = strdup(host ? host : "localhost");
	ws->path = strdup(path_query ? path_query : "/");
	if (o && o->user_agent)
		ws->ua = strdup(o->user_agent);
	evutil_make_socket_nonblocking(fd);
	ws->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!ws->host || !ws->host_hdr || !ws->path || !ws->bev) {
		if (!ws->bev)
			evutil_closesocket(fd);
		ws_free(ws);
		return NULL;
	}
	bufferevent_setcb(ws->bev, read_cb, write_cb, event_cb, ws);
	ws->state = ST_CONNECTING;
	enter(ws);
	on_connected(ws);
	ws->depth--; /* on_connected never finishes here without addr_check */
	if (ws->freeme) {
		ws_free(ws);
		return NULL;
	}
	return ws;
}

/* ---- public calls ---- */

int bt_ws_send(struct bt_ws *ws, int opcode, const void *p, size_t n)
{
	if (!ws)
		return -EINVAL;
	assert(ws->magic == WS_MAGIC);
	if (opcode != BT_WS_TEXT && opcode != BT_WS_BINARY)
		return -EINVAL;
	if (ws->state != ST_OPEN || ws->closing_local || ws->failed || wslay_event_get_close_sent(ws->wctx))
		return -EPIPE;
	struct wslay_event_msg m = {(uint8_t)opcode, p, n};
	int r = wslay_event_queue_msg(ws->wctx, &m);
	if (r == WSLAY_ERR_NO_MORE_MSG)
		return -EPIPE;
	if (r == WSLAY_ERR_NOMEM)
		return -ENOMEM;
	if (r != 0)
		return -EINVAL;
	flush(ws);
	if (bt_ws_outq(ws) > ws->drain_lowat)
		ws->want_drain = true;
	return 0;
}

size_t bt_ws_frame_header(uint8_t hdr[BT_WS_FRAME_HDR_MAX], int opcode, size_t n)
{
	hdr[0] = (uint8_t)(0x80u | ((unsigned)opcode & 0x0fu)); /* FIN, one frame per message */
	if (n < 126) {
		hdr[1] = (uint8_t)n;
		return 2;
	}
	if (n <= 0xffff) {
		hdr[1] = 126;
		hdr[2] = (uint8_t)(n >> 8);
		hdr[3] = (uint8_t)n;
		return 4;
	}
	hdr[1] = 127;
	for (int i = 0; i < 8; i++)
		hdr[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
	return 10;
}

int bt_ws_send_ref_ok(const struct bt_ws *ws)
{
	return ws && !ws->client && ws->state == ST_OPEN && !ws->closing_local && !ws->failed &&
	       !wslay_event_get_close_sent(ws->wctx) && wslay_event_get_queued_msg_count(ws->wctx) == 0;
}

int bt_ws_send_ref(struct bt_ws *ws, const void *frame, size_t n, bt_ws_release_fn *release, void *arg)
{
	if (!ws || !frame || n < 2 || !release)
		return -EINVAL;
	assert(ws->magic == WS_MAGIC);
	if (ws->client)
		return -EINVAL; /* a client's frames are masked per frame: nothing to share */
	if (ws->state != ST_OPEN || ws->closing_local || ws->failed || wslay_event_get_close_sent(ws->wctx))
		return -EPIPE;
	/* Whatever wslay still holds (a message written in part, a pong) goes first, and wslay may be
	   inside a frame in the output buffer: appending now could split it.  The caller sends a copy
	   through bt_ws_send instead, which keeps the order. */
	if (wslay_event_get_queued_msg_count(ws->wctx) != 0)
		return -EAGAIN;
	if (evbuffer_add_reference(bufferevent_get_output(ws->bev), frame, n, release, arg) != 0)
		return -ENOMEM;
	if (bt_ws_outq(ws) > ws->drain_lowat)
		ws->want_drain = true;
	return 0;
}

int bt_ws_detach(struct bt_ws *ws)
{
	if (!ws || ws->client || ws->state != ST_OPEN || ws->closing_local || ws->failed || ws->close_pending ||
	    !ws->bev || ws->depth)
		return -EPIPE;
	if (bt_ws_outq(ws) || evbuffer_get_length(bufferevent_get_input(ws->bev)))
		return -EAGAIN;
	int fd = dup(bufferevent_getfd(ws->bev));
	if (fd < 0)
		return -errno;
	enter(ws);
	finish(ws, 1012, "handed over"); /* our copy of the socket closes, nothing is sent */
	leave(ws);
	return fd;
}

size_t bt_ws_outq(const struct bt_ws *ws)
{
	if (!ws || ws->state == ST_DEAD)
		return 0;
	size_t n = ws->bev ? evbuffer_get_length(bufferevent_get_output(ws->bev)) : 0;
	if (ws->wctx)
		n += wslay_event_get_queued_msg_length(ws->wctx);
	return n;
}

void bt_ws_close(struct bt_ws *ws, int code, const char *reason)
{
	if (!ws)
		return;
	assert(ws->magic == WS_MAGIC);
	if (ws->state == ST_DEAD || ws->closing_local)
		return;
	ws->closing_local = true;
	if (!reason)
		reason = "";
	if (ws->state != ST_OPEN) {
		fail_later(ws, code ? code : WSLAY_CODE_NORMAL_CLOSURE, reason);
		return;
	}
	if (wslay_event_get_close_sent(ws->wctx))
		return;
	if (code < 1000 || code > 4999 || code == 1004 || code == 1005 || code == 1006 || code == 1015)
		code = WSLAY_CODE_NORMAL_CLOSURE;
	size_t rl = strlen(reason);
	if (rl > 123)
		rl = 123;
	if (!ws->close_code) {
		ws->close_code = code;
		memcpy(ws->close_reason, reason, rl);
		ws->close_reason[rl] = 0;
	}
	ws->close_pending = true;
	ws->pend_code = code;
	memcpy(ws->pend_reason, reason, rl);
	ws->pend_reason[rl] = 0;
	arm_close_timer(ws);
	flush(ws);
	event_active(ws->kick, EV_TIMEOUT, 0);
}

void bt_ws_pause(struct bt_ws *ws)
{
	if (!ws || ws->state == ST_DEAD)
		return;
	ws->paused = true;
	if (ws->bev && ws->state != ST_CONNECTING)
		bufferevent_disable(ws->bev, EV_READ);
}

void bt_ws_resume(struct bt_ws *ws)
{
	if (!ws || ws->state == ST_DEAD || !ws->paused)
		return;
	ws->paused = false;
	ws->last_rx_ms = now_ms();
	if (ws->bev && ws->state != ST_CONNECTING) {
		bufferevent_enable(ws->bev, EV_READ);
		event_active(ws->kick, EV_TIMEOUT, 0);
	}
}

const char *bt_ws_resp_header(const struct bt_ws *ws, const char *name)
{
	return ws ? bt_ws_resp_get(&ws->resp, name) : NULL;
}

int bt_ws_http_status(const struct bt_ws *ws)
{
	return ws ? ws->resp.status : 0;
}

const char *bt_ws_peer(const struct bt_ws *ws)
{
	return ws ? ws->peer : "";
}

void bt_ws_set_arg(struct bt_ws *ws, void *arg)
{
	if (ws)
		ws->arg = arg;
}

/* ---- handshake helpers ---- */

int bt_ws_accept_key(const char *key, char *out, size_t cap)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char buf[128];
	size_t kl = strlen(key);
	if (cap < 29 || kl == 0 || kl > sizeof buf - sizeof WS_GUID)
		return -EINVAL;
	memcpy(buf, key, kl);
	memcpy(buf + kl, WS_GUID, sizeof WS_GUID - 1);
	if (EVP_Digest(buf, kl + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
		return -EINVAL;
	EVP_EncodeBlock((unsigned char *)out, md, 20);
	return 0;
}

void bt_ws_resp_clear(struct bt_ws_resp *r)
{
	free(r->buf);
	memset(r, 0, sizeof *r);
}

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

int bt_ws_resp_parse(const char *p, size_t n, struct bt_ws_resp *r)
{
	bt_ws_resp_clear(r);
	if (n < 16 || memchr(p, 0, n))
		return -EINVAL;
	char *b = malloc(n + 1);
	if (!b)
		return -ENOMEM;
	memcpy(b, p, n);
	b[n] = 0;
	r->buf = b;
	char *end = b + n;
	char *eol = memmem(b, n, "\r\n", 2);
	if (!eol || eol - b < 12 || memcmp(b, "HTTP/1.", 7) != 0 || (b[7] != '0' && b[7] != '1') || b[8] != ' ')
		goto bad;
	for (int i = 9; i < 12; i++)
		if (b[i] < '0' || b[i] > '9')
			goto bad;
	if (eol - b > 12 && b[12] != ' ')
		goto bad;
	r->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
	char *line = eol + 2;
	for (;;) {
		if (line >= end)
			goto bad;
		eol = memmem(line, (size_t)(end - line), "\r\n", 2);
		if (!eol)
			goto bad;
		if (eol == line)
			break; /* empty line: end of headers */
		*eol = 0;
		if (strpbrk(line, "\r\n"))
			goto bad;
		char *colon = strchr(line, ':');
		if (!colon || colon == line || r->nhdr >= BT_WS_RESP_MAXHDR)
			goto bad;
		for (char *q = line; q < colon; q++)
			if (!is_tchar((unsigned char)*q))
				goto bad;
		*colon = 0;
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		char *ve = eol;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			*--ve = 0;
		r->name[r->nhdr] = line;
		r->value[r->nhdr] = v;
		r->nhdr++;
		line = eol + 2;
	}
	if (eol + 2 != end)
		goto bad;
	return 0;
bad:
	bt_ws_resp_clear(r);
	return -EINVAL;
}

const char *bt_ws_resp_get(const struct bt_ws_resp *r, const char *name)
{
	for (int i = 0; i < r->nhdr; i++)
		if (!strcasecmp(r->name[i], name))
			return r->value[i];
	return NULL;
}

int bt_ws_has_token(const char *v, const char *t)
{
	if (!v)
		return 0;
	size_t tl = strlen(t);
	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		size_t l = strcspn(v, ",");
		size_t e = l;
		while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e == tl && !strncasecmp(v, t, tl))
			return 1;
		v += l;
	}
	return 0;
}

int bt_ws_resp_check(const struct bt_ws_resp *r, const char *key)
{
	char want[32];
	const char *acc = bt_ws_resp_get(r, "Sec-WebSocket-Accept");
	if (r->status != 101 || !bt_ws_has_token(bt_ws_resp_get(r, "Upgrade"), "websocket") ||
	    !bt_ws_has_token(bt_ws_resp_get(r, "Connection"), "upgrade") || !acc)
		return -EPROTO;
	if (bt_ws_accept_key(key, want, sizeof want) != 0 || strcmp(acc, want) != 0)
		return -EPROTO;
	return 0;
}
