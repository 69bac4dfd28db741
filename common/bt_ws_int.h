/*
 * NAME
 *	bt_ws_int.h - internals shared by bt_http.c and bt_ws.c (and their tests)
 * DESCRIPTION
 *	Not for use outside common/ and tests/.  The HTTP server hands an
 *	upgraded connection's bufferevent to bt_ws_server_new(); the
 *	handshake helpers are pure functions, fuzzed directly.
 * DIAGNOSTICS
 *	Functions return a negative errno value on failure.
 */
#ifndef BT_WS_INT_H
#define BT_WS_INT_H
#include <stddef.h>
#include "bt_ws.h"

struct bufferevent;

/* Computes Sec-WebSocket-Accept for key (borrowed) into out (>= 29 bytes); returns 0 or -EINVAL. */
int bt_ws_accept_key(const char *key, char *out, size_t cap);
/* Takes bev (handshake done, 101 already queued) as a server-side connection; borrows cbs/o; peer copied.
   Returns NULL on out of memory (bev freed). */
struct bt_ws *bt_ws_server_new(struct event_base *base, struct bufferevent *bev, const char *peer,
			       const struct bt_ws_cbs *cbs, void *arg, const struct bt_ws_opts *o);

/* A parsed handshake response: status and up to BT_WS_RESP_MAXHDR headers pointing into buf (owned). */
#define BT_WS_RESP_MAXHDR 64
struct bt_ws_resp {
	int status;
	int nhdr;
	char *buf;
	const char *name[BT_WS_RESP_MAXHDR];
	const char *value[BT_WS_RESP_MAXHDR];
};
/* Parses one complete response header block p[0..n) (ending in CRLFCRLF); borrows p; fills r (r->buf owned,
   release with bt_ws_resp_clear). Returns 0 or -EINVAL / -ENOMEM. */
int bt_ws_resp_parse(const char *p, size_t n, struct bt_ws_resp *r);
/* Releases r->buf and resets r. */
void bt_ws_resp_clear(struct bt_ws_resp *r);
/* Header of r (case-insensitive), NULL if absent. */
const char *bt_ws_resp_get(const struct bt_ws_resp *r, const char *name);
/* Checks a 101 response against the key sent: status, Upgrade, Connection, Sec-WebSocket-Accept.
   Returns 0 or -EPROTO. */
int bt_ws_resp_check(const struct bt_ws_resp *r, const char *key);
/* True if the comma-separated header value v contains token t (case-insensitive). */
int bt_ws_has_token(const char *v, const char *t);
/* Starts a client on an already connected fd (takes it), as bt_ws_connect would after TCP connect.
   host and path_query borrowed.  For tests and fuzzing; ws:// only. */
struct bt_ws *bt_ws_connect_fd(struct event_base *base, int fd, const char *host, const char *path_query,
			       const struct bt_ws_cbs *cbs, void *arg, const struct bt_ws_opts *o);
/* Test hook: when non-NULL, clients send this Sec-WebSocket-Key instead of a random one. */
extern const char *bt_ws_test_fixed_key;

#endif
