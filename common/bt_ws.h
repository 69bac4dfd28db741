/*
 * NAME
 *	bt_ws.h - WebSocket connections (client and server side) on libevent bufferevents
 * DESCRIPTION
 *	One struct bt_ws per connection, framing by wslay's event API.  Used by
 *	ingest (client: one libevent loop for every upstream host) and fanout
 *	(server side, created by bt_http_upgrade()).
 *
 *	Concurrency: a connection belongs to one event_base and one thread.
 *	Every write (data, ping, automatic pong, close) goes through the one
 *	wslay context of the connection and lands in the bufferevent's output
 *	buffer in order, so frames (and TLS records) never interleave; the one
 *	exception, bt_ws_send_ref (server-side data frames shared by reference),
 *	appends only while wslay holds nothing, so it keeps that order too.  Only
 *	this module closes the socket, exactly once, when the bufferevent is
 *	freed.  Timers (keepalive, idle, close) are freed with the connection.
 *
 *	Callbacks may call bt_ws_send()/bt_ws_close() on the same or any other
 *	connection.  Those never call back synchronously: a failure found
 *	while sending is reported later from the event loop, and on_close is
 *	always called from the event loop, exactly once, as the last callback;
 *	the struct is freed right after on_close returns (never under a
 *	callback still running on the stack).
 *
 *	The process should ignore SIGPIPE; creating a connection sets SIGPIPE
 *	to SIG_IGN if it is still SIG_DFL.  bt_ws_pause() stops reading the
 *	socket; a few messages wslay had already read may still arrive.
 *
 *	Messages are delivered whole (wslay buffers fragments up to max_msg).
 *	Binary and text messages reach on_msg; ping/pong/close are handled
 *	here (pong automatically, by wslay, through the same queue).
 * DIAGNOSTICS
 *	bt_ws_send() returns a negative errno value: -EPIPE when the
 *	connection is closing or closed, -ENOMEM, -EINVAL.  Connection
 *	failures arrive as on_close(code, reason): the close code received or
 *	sent (1009 for a message over max_msg, 1002 for a protocol error),
 *	1008 "ping flood" for a peer that sends over 1024 pings while reading
 *	none of our pongs (our output full), 1006 "handshake timeout" for a
 *	client whose connect and handshake took over 30 s in all (a trickled
 *	answer is not held forever),
 *	1006 when the connection ended without a close handshake (DNS, TCP,
 *	TLS failures, a non-101 handshake answer, a bad Sec-WebSocket-Accept,
 *	reset or EOF); reason is a short human-readable string.  A client
 *	gets the handshake's HTTP status from bt_ws_http_status().
 */
#ifndef BT_WS_H
#define BT_WS_H
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct event_base;
struct evdns_base;
struct sockaddr;
struct bt_ws;

/* Opcodes for bt_ws_send() and on_msg (RFC 6455). */
#define BT_WS_TEXT 0x1
#define BT_WS_BINARY 0x2

/* Seconds a graceful close waits for the peer's close frame before dropping the socket. */
#define BT_WS_CLOSE_TIMEOUT_S 5
/* Longest handshake (request or response header block) accepted. */
#define BT_WS_MAX_HANDSHAKE 16384

struct bt_ws_cbs {
	void (*on_open)(struct bt_ws *ws, void *arg);                                         /* client: handshake done (not called on the server side) */
	void (*on_msg)(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg); /* whole message; p borrowed */
	void (*on_close)(struct bt_ws *ws, int code, const char *reason, void *arg);         /* last callback, exactly once; ws is freed right after it returns */
	void (*on_drain)(struct bt_ws *ws, void *arg);                                        /* output queue fell to drain_lowat or below */
};

/* Decides whether the connected peer address is acceptable (SSRF guard); returns 0 to accept. */
typedef int bt_ws_addr_check_fn(const struct sockaddr *sa, int salen, void *arg);

struct bt_ws_opts {
	size_t max_msg;         /* e.g. 5000000; larger message: close 1009; 0 = 5000000 */
	int ping_interval_s;    /* ping after this much silence (30); 0 = off */
	int idle_timeout_s;     /* close if nothing (incl. pong) received for this long (e.g. 90); 0 = off */
	size_t drain_lowat;     /* on_drain threshold in bytes */
	SSL_CTX *ssl_ctx;       /* client: used for wss:// (NULL = make a default verifying one); borrowed, refcounted by SSL */
	const char *user_agent; /* client User-Agent (copied) */
	const char *server_hdr; /* server: Server header in the 101 response */
	/* additions */
	struct evdns_base *dns;             /* client: resolver for host names (borrowed); NULL = a private one per connection */
	bt_ws_addr_check_fn *addr_check;    /* client: called once connected, before anything is sent in clear; NULL = any */
	void *addr_check_arg;
};

/* Starts a client connection to ws:// or wss://host[:port]/path?query; borrows url, cbs and o (copied);
   returns owned-by-itself (freed after on_close), or NULL only for a malformed URL or out of memory.
   Every later failure arrives as on_close, from the event loop. */
struct bt_ws *bt_ws_connect(struct event_base *base, const char *url, const struct bt_ws_cbs *cbs, void *arg,
			    const struct bt_ws_opts *o);
/* Queues one message (copies p); returns 0, or <0 if closing/closed. */
int bt_ws_send(struct bt_ws *ws, int opcode, const void *p, size_t n);
/* Longest WebSocket frame header (no mask: server to client). */
#define BT_WS_FRAME_HDR_MAX 10
/* Writes the header of an unmasked, unfragmented frame of opcode carrying n bytes; returns its length. */
size_t bt_ws_frame_header(uint8_t hdr[BT_WS_FRAME_HDR_MAX], int opcode, size_t n);
/* Called once a frame queued by bt_ws_send_ref has been written or dropped (data as passed). */
typedef void bt_ws_release_fn(const void *data, size_t len, void *arg);
/* Server side: queues one or more complete frames (each a header from bt_ws_frame_header and its
   payload, back to back) by reference,
   without a copy, so one buffer can be shared by many connections.  0: queued, release(frame, n, arg)
   is called exactly once later (from the event loop, or when the connection is freed); the frame
   must stay unchanged until then.  -EAGAIN: something is still queued in wslay ahead of it (send a
   copy with bt_ws_send, which keeps the order); -EPIPE closing; -EINVAL (client side); -ENOMEM.
   On any error release is not called. */
int bt_ws_send_ref(struct bt_ws *ws, const void *frame, size_t n, bt_ws_release_fn *release, void *arg);
/* True when bt_ws_send_ref would queue now (server side, open, nothing held in wslay); it stays
   true until something else is sent or closed on this connection. */
int bt_ws_send_ref_ok(const struct bt_ws *ws);
/* Bytes queued (wslay queue + bufferevent output). */
size_t bt_ws_outq(const struct bt_ws *ws);
/* Server side: bytes written to the socket so far (a peer that reads makes it grow). */
uint64_t bt_ws_tx_bytes(const struct bt_ws *ws);
/* Server side: bytes the peer has acknowledged (written to the socket minus what the kernel still
   holds unacknowledged: it stops growing when the peer stops reading and its window closes);
   *held = bytes queued here and in the kernel's send queue. */
uint64_t bt_ws_acked(const struct bt_ws *ws, size_t *held);
/* Server side, for a hand-over to another process: when nothing is queued (wslay and output
   buffer empty: every byte sent is in the kernel) and nothing unread waits in the input buffer,
   returns a duplicate of the socket (the caller passes it on and closes it) and ends this
   connection without a close frame: on_close(1012, "handed over") is called before it returns
   and ws is freed.  -EAGAIN: output still queued or input unread (try later); -EPIPE: not an
   open server connection, or inside one of its callbacks.  A partial frame the peer sent and
   wslay already read would be lost: consumers of a firehose send only control frames. */
int bt_ws_detach(struct bt_ws *ws);
/* Changes the on_drain threshold (bytes) of an open connection. */
void bt_ws_set_drain_lowat(struct bt_ws *ws, size_t lowat);
/* Graceful close (reason borrowed, cut at 123 bytes); on_close follows later, bounded by BT_WS_CLOSE_TIMEOUT_S.
   Calling it again, or after the peer started closing, does nothing. */
void bt_ws_close(struct bt_ws *ws, int code, const char *reason);
/* Stops reading the socket (TCP backpressure): no on_msg until bt_ws_resume(). */
void bt_ws_pause(struct bt_ws *ws);
/* Resumes reading; messages already buffered are delivered from the event loop. */
void bt_ws_resume(struct bt_ws *ws);
/* Client: header of the handshake response (case-insensitive name, borrowed), NULL if absent. */
const char *bt_ws_resp_header(const struct bt_ws *ws, const char *name);
/* Client: HTTP status of the handshake response (101 on success), 0 if none was received. */
int bt_ws_http_status(const struct bt_ws *ws);
/* "ip:port" of the peer (borrowed), "" while unknown. */
const char *bt_ws_peer(const struct bt_ws *ws);
/* Sets the user pointer handed to callbacks (e.g. after bt_http_upgrade). */
void bt_ws_set_arg(struct bt_ws *ws, void *arg);

#endif
