/*
 * NAME
 *	bt_http.h - HTTP/1.1 server on libevent bufferevents (http-parser for parsing)
 * DESCRIPTION
 *	Serves the public port of fanout (XRPC, admin, /metrics, the
 *	subscribeRepos upgrade).  One listening fd per server, created by the
 *	caller (possibly with SO_REUSEPORT); the server takes it.  Keep-alive
 *	and pipelining: requests on one connection are parsed and handed to the
 *	handler one at a time, and the next one only after the previous one
 *	was answered, so answers are in order by construction.
 *
 *	Limits: header bytes (request line + header names and values),
 *	body bytes, and one read timeout per request (from its first byte, or
 *	from the end of the previous answer, to its last byte).  Over a
 *	limit: 431 (headers), 413 (body), 408 (timeout, silent close if no
 *	byte of a request arrived), 400 (malformed), then close.
 *
 *	Asynchronous answers: the handler may keep req and answer later from
 *	another callback.  req stays valid until bt_http_respond*() or
 *	bt_http_upgrade() is called on it, even if the peer goes away (the
 *	answer is then discarded) or the server is freed; so every request
 *	must be answered exactly once.  Single-threaded: everything runs on
 *	the server's event_base.  Do not free the server from inside its
 *	handler.  The process should ignore SIGPIPE; bt_http_server_new()
 *	sets SIGPIPE to SIG_IGN if it is still SIG_DFL.
 * DIAGNOSTICS
 *	bt_http_server_new() returns NULL (and closes nothing) on bad
 *	arguments or out of memory.  bt_http_req_param() returns the decoded
 *	length, -ENOENT if absent, -ENOSPC if it does not fit.
 */
#ifndef BT_HTTP_H
#define BT_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include "bt_ws.h"

struct event_base;
struct bt_http_server;
struct bt_http_req;

typedef void bt_http_handler_fn(struct bt_http_req *req, void *arg);

struct bt_http_limits {
	size_t max_header;      /* 0 = 16 KiB */
	size_t max_body;        /* 0 = 1 MiB */
	int read_timeout_s;     /* 0 = 30 */
	const char *server_hdr; /* Server header value (copied); NULL = none */
	/* additions */
	SSL_CTX *ssl_ctx;       /* serve TLS with this context (reference taken); NULL = plain TCP */
};

/* Starts serving listen_fd (takes it: closed by bt_http_server_free); borrows lim (copied); returns owned. */
struct bt_http_server *bt_http_server_new(struct event_base *base, int listen_fd, const struct bt_http_limits *lim,
					  bt_http_handler_fn *h, void *arg);
/* Closes the listener and every connection; pending requests stay valid until answered; NULLs *s. */
void bt_http_server_free(struct bt_http_server **s);
/* Requests answered 4xx (by the server or a handler) plus connections that sent no request
   before the read timeout, since the server started. */
uint64_t bt_http_server_refused(const struct bt_http_server *s);
/* Serves an already-accepted connected socket (takes fd); returns 0 or -errno (fd closed). */
int bt_http_server_adopt(struct bt_http_server *s, int fd);

const char *bt_http_req_method(const struct bt_http_req *r);  /* borrowed, e.g. "GET" */
const char *bt_http_req_path(const struct bt_http_req *r);    /* borrowed; without the query string */
const char *bt_http_req_query(const struct bt_http_req *r);   /* borrowed; raw query string or "" */
/* url-decoded query param into out (NUL-terminated); returns its length, <0 if absent (-ENOENT) or too long (-ENOSPC) */
int bt_http_req_param(const struct bt_http_req *r, const char *name, char *out, size_t cap);
const char *bt_http_req_header(const struct bt_http_req *r, const char *name); /* borrowed; case-insensitive, NULL if absent */
const uint8_t *bt_http_req_body(const struct bt_http_req *r, size_t *len);     /* borrowed; never NULL */
const char *bt_http_req_peer(const struct bt_http_req *r);                     /* borrowed; "ip:port" */

/* Header lines "Name: v\r\n"... (static or outliving the answer) added to whatever answers r
   (e.g. CORS on every answer of a route); replaces an earlier call. */
void bt_http_req_add_headers(struct bt_http_req *r, const char *lines);
/* Answers the request (exactly once; body borrowed/copied); adds Content-Length, Server, Connection. Ends req. */
void bt_http_respond(struct bt_http_req *r, int status, const char *ctype, const void *body, size_t len);
/* Same, with extra header lines "Name: v\r\n"... (borrowed). */
void bt_http_respond_hdr(struct bt_http_req *r, int status, const char *ctype, const char *extra_headers,
			 const void *body, size_t len);
/* RFC 6455 upgrade of this request (ends req); on a non-upgrade or bad request responds 400 itself and returns
   NULL; returns a server-side bt_ws owned by itself (freed after its on_close), or NULL if the peer is gone. */
struct bt_ws *bt_http_upgrade(struct bt_http_req *r, const struct bt_ws_cbs *cbs, void *arg,
			      const struct bt_ws_opts *o);
/* Reason phrase of an HTTP status code (borrowed, static). */
const char *bt_http_status_text(int status);

#endif
