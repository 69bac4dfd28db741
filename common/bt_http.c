/*
 * NAME
 *	bt_http.c - HTTP/1.1 server on libevent bufferevents, http-parser for parsing
 * DESCRIPTION
 *	See bt_http.h for the contract.  Each connection owns one parser and
 *	one embedded request object that is reused for every request on that
 *	connection (no allocation per request once the buffers have grown).
 *	The parser is paused at the end of each message; the handler gets the
 *	request; parsing resumes only after the answer was queued, so pipelined
 *	requests are answered in order and memory stays bounded.  Bytes are
 *	parsed straight out of the bufferevent's input buffer, so any TCP split
 *	(header/body in separate segments, one byte at a time) is the same to
 *	the parser.
 *
 *	Lifetime: a connection whose peer vanished while its request is
 *	pending loses its bufferevent (socket closed, once) but keeps the
 *	struct until the request is answered.  Connections are unlinked from
 *	the server when it is freed.  Process: fanout; one event_base.
 * DIAGNOSTICS
 *	Errors are answered on the wire (400/408/413/431) and the connection
 *	closed; nothing is logged here.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "bt_http.h"
#include "bt_ws_int.h"

#define SRV_MAGIC 0x62746873u
#define CONN_MAGIC 0x62746863u
#define MAX_HEADERS 100
#define PARSE_CHUNK 16384

struct sbuf {
	char *p;
	size_t n, cap;
};

static int sbuf_add(struct sbuf *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 256;
		while (nc < b->n + n + 1)
			nc *= 2;
		char *np = realloc(b->p, nc);
		if (!np)
			return -ENOMEM;
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

struct conn;

struct bt_http_req {
	struct conn *c;
	const char *method;
	struct sbuf url, hdr, body;
	size_t hoff[MAX_HEADERS][2]; /* name, value offsets into hdr */
	int nhdr;
	char *path, *query;
	bool keep_alive, upgrade, head;
	const char *more_hdr; /* bt_http_req_add_headers (borrowed, static) */
};

enum { HS_NONE, HS_FIELD, HS_VALUE };

struct conn {
	unsigned magic;
	struct bt_http_server *srv; /* NULL once detached from a freed server */
	struct conn *next, *prev;
	struct bufferevent *bev;    /* NULL once the socket is closed */
	struct event *tmr, *kick;
	http_parser hp;
	struct bt_http_req req;
	char peer[64];
	size_t hbytes;
	int hstate, err_status, in_process;
	bool msg_started, pending, closing, freeme, peer_eof, served;
};

struct bt_http_server {
	unsigned magic;
	struct event_base *base;
	struct evconnlistener *lst;
	struct bt_http_limits lim;
	char *server_hdr;
	SSL_CTX *ssl_ctx;
	bt_http_handler_fn *h;
	void *arg;
	struct conn *conns;
	uint64_t refused; /* 4xx answers and connections timed out before a request */
};

static http_parser_settings settings;

/* ---- connection teardown ---- */

static void conn_unlink(struct conn *c)
{
	if (!c->srv)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	c->srv = NULL;
}

static void conn_close_socket(struct conn *c)
{
	if (c->bev) {
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (c->tmr)
		event_del(c->tmr);
	if (c->kick)
		event_del(c->kick);
}

static void conn_destroy(struct conn *c)
{
	assert(c->magic == CONN_MAGIC);
	conn_close_socket(c);
	conn_unlink(c);
	if (c->tmr)
		event_free(c->tmr);
	if (c->kick)
		event_free(c->kick);
	free(c->req.url.p);
	free(c->req.hdr.p);
	free(c->req.body.p);
	c->magic = 0;
	free(c);
}

/* Closes the socket now; frees the struct unless a request is pending or we are inside conn_process. */
static void conn_drop(struct conn *c)
{
	conn_close_socket(c);
	if (c->pending)
		return; /* freed by bt_http_respond */
	if (c->in_process)
		c->freeme = true;
	else
		conn_destroy(c);
}

/* ---- parser callbacks ---- */

static int hdr_budget(struct conn *c, size_t n)
{
	c->hbytes += n;
	if (c->srv && c->hbytes > c->srv->lim.max_header) {
		c->err_status = 431;
		return -1;
	}
	return 0;
}

static int on_begin(http_parser *p)
{
	struct conn *c = p->data;
	struct bt_http_req *r = &c->req;
	r->url.n = r->hdr.n = r->body.n = 0;
	r->nhdr = 0;
	r->path = r->query = NULL;
	r->keep_alive = r->upgrade = r->head = false;
	r->more_hdr = NULL;
	c->hbytes = 0;
	c->hstate = HS_NONE;
	c->msg_started = true;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	if (hdr_budget(c, n) || sbuf_add(&c->req.url, at, n))
		return -1;
	return 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	struct bt_http_req *r = &c->req;
	if (hdr_budget(c, n))
		return -1;
	if (c->hstate != HS_FIELD) {
		if (c->hstate == HS_VALUE && sbuf_add(&r->hdr, "", 1))
			return -1;
		if (r->nhdr >= MAX_HEADERS) {
			c->err_status = 431;
			return -1;
		}
		r->hoff[r->nhdr][0] = r->hdr.n;
		r->hoff[r->nhdr][1] = r->hdr.n; /* empty value until one arrives */
		r->nhdr++;
		c->hstate = HS_FIELD;
	}
	return sbuf_add(&r->hdr, at, n) ? -1 : 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	struct bt_http_req *r = &c->req;
	if (hdr_budget(c, n))
		return -1;
	if (c->hstate != HS_VALUE) {
		if (c->hstate != HS_FIELD || sbuf_add(&r->hdr, "", 1))
			return -1;
		r->hoff[r->nhdr - 1][1] = r->hdr.n;
		c->hstate = HS_VALUE;
	}
	return sbuf_add(&r->hdr, at, n) ? -1 : 0;
}

static int on_hdone(http_parser *p)
{
	struct conn *c = p->data;
	struct bt_http_req *r = &c->req;
	if (c->hstate == HS_FIELD) {
		/* a field without a value: make its value the empty string */
		if (sbuf_add(&r->hdr, "", 1))
			return -1;
		r->hoff[r->nhdr - 1][1] = r->hdr.n;
	}
	if (sbuf_add(&r->hdr, "", 1) || sbuf_add(&r->url, "", 0))
		return -1;
	if (c->srv && (p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->lim.max_body) {
		c->err_status = 413;
		return -1;
	}
	r->method = http_method_str((enum http_method)p->method);
	r->head = p->method == HTTP_HEAD;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	if (c->srv && c->req.body.n + n > c->srv->lim.max_body) {
		c->err_status = 413;
		return -1;
	}
	return sbuf_add(&c->req.body, at, n) ? -1 : 0;
}

static int on_complete(http_parser *p)
{
	struct conn *c = p->data;
	struct bt_http_req *r = &c->req;
	r->keep_alive = http_should_keep_alive(p) != 0;
	r->upgrade = p->upgrade != 0;
	if (sbuf_add(&r->body, "", 0))
		return -1;
	/* split the URL: path, query (fragment dropped) */
	if (sbuf_add(&r->url, "", 0))
		return -1;
	char *u = r->url.p;
	char *hash = strchr(u, '#');
	if (hash)
		*hash = 0;
	char *q = strchr(u, '?');
	if (q) {
		*q = 0;
		r->query = q + 1;
	} else {
		r->query = u + strlen(u); /* "" */
	}
	r->path = u;
	http_parser_pause(p, 1);
	return 0;
}

__attribute__((constructor)) static void init_settings(void)
{
	settings.on_message_begin = on_begin;
	settings.on_url = on_url;
	settings.on_header_field = on_hfield;
	settings.on_header_value = on_hvalue;
	settings.on_headers_complete = on_hdone;
	settings.on_body = on_body;
	settings.on_message_complete = on_complete;
}

/* ---- responses ---- */

const char *bt_http_status_text(int s)
{
	switch (s) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Unsupported Method";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Unknown";
	}
}

static void write_response(struct conn *c, int status, const char *ctype, const char *extra, const void *body,
			   size_t len, bool keep, bool head)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	c->served = true;
	if (status >= 400 && status < 500 && c->srv)
		c->srv->refused++;
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, bt_http_status_text(status));
	if (c->srv && c->srv->server_hdr)
		evbuffer_add_printf(out, "Server: %s\r\n", c->srv->server_hdr);
	if (ctype && *ctype)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
	evbuffer_add_printf(out, "Content-Length: %zu\r\nConnection: %s\r\n", len, keep ? "keep-alive" : "close");
	if (extra && *extra)
		evbuffer_add(out, extra, strlen(extra));
	if (c->req.more_hdr)
		evbuffer_add(out, c->req.more_hdr, strlen(c->req.more_hdr));
	evbuffer_add(out, "\r\n", 2);
	if (len && !head)
		evbuffer_add(out, body, len);
}

static void arm_timer(struct conn *c)
{
	int s = c->srv ? c->srv->lim.read_timeout_s : 30;
	struct timeval tv = {s, 0};
	event_add(c->tmr, &tv);
}

/* After an answer that ends the connection: stop reading, close once the output is flushed. */
static void conn_linger(struct conn *c)
{
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_enable(c->bev, EV_WRITE);
	arm_timer(c); /* a peer that never reads does not keep us */
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		event_active(c->kick, EV_TIMEOUT, 0);
}

static void error_respond(struct conn *c, int status)
{
	if (!c->bev)
		return;
	write_response(c, status, "text/plain", NULL, bt_http_status_text(status),
		       strlen(bt_http_status_text(status)), false, false);
	conn_linger(c);
}

static void conn_process(struct conn *c);

void bt_http_respond_hdr(struct bt_http_req *r, int status, const char *ctype, const char *extra_headers,
			 const void *body, size_t len)
{
	if (!r)
		return;
	struct conn *c = r->c;
	assert(c->magic == CONN_MAGIC);
	assert(c->pending);
	c->pending = false;
	if (!c->bev) { /* peer gone meanwhile */
		if (c->in_process)
			c->freeme = true;
		else
			conn_destroy(c);
		return;
	}
	bool keep = r->keep_alive && !r->upgrade && !c->peer_eof && c->srv;
	write_response(c, status, ctype, extra_headers, body, len, keep, r->head);
	if (!keep) {
		conn_linger(c);
		return;
	}
	arm_timer(c);
	if (!c->in_process)
		event_active(c->kick, EV_TIMEOUT, 0); /* parse the next pipelined request */
}

void bt_http_respond(struct bt_http_req *r, int status, const char *ctype, const void *body, size_t len)
{
	bt_http_respond_hdr(r, status, ctype, NULL, body, len);
}

/* ---- the parse loop ---- */

static void dispatch(struct conn *c)
{
	c->msg_started = false;
	c->pending = true;
	event_del(c->tmr);
	if (c->srv && c->srv->h)
		c->srv->h(&c->req, c->srv->arg);
	else
		bt_http_respond(&c->req, 503, "text/plain", "", 0);
}

static void conn_process(struct conn *c)
{
	c->in_process++;
	while (c->bev && !c->closing && !c->pending && !c->freeme) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		size_t avail = evbuffer_get_length(in);
		if (!avail)
			break;
		size_t n = avail < PARSE_CHUNK ? avail : PARSE_CHUNK;
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
		if (!p) {
			error_respond(c, 500);
			break;
		}
		size_t np = http_parser_execute(&c->hp, &settings, p, n);
		enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
		evbuffer_drain(in, np);
		if (e == HPE_PAUSED) {
			http_parser_pause(&c->hp, 0);
			dispatch(c);
			continue;
		}
		if (e != HPE_OK) {
			int st = c->err_status ? c->err_status : (e == HPE_HEADER_OVERFLOW ? 431 : 400);
			error_respond(c, st);
			break;
		}
		if (np < n) { /* should not happen without an error */
			error_respond(c, 400);
			break;
		}
	}
	if (c->bev && !c->closing && !c->pending && c->peer_eof && !c->freeme) {
		/* peer finished sending and nothing is pending: done */
		conn_close_socket(c);
		c->freeme = true;
	}
	c->in_process--;
	if (!c->in_process && c->freeme)
		conn_destroy(c);
}

static void read_cb(struct bufferevent *bev, void *ud)
{
	conn_process(ud);
}

static void write_cb(struct bufferevent *bev, void *ud)
{
	struct conn *c = ud;
	if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_drop(c);
}

static void event_cb(struct bufferevent *bev, short what, void *ud)
{
	struct conn *c = ud;
	if (what & BEV_EVENT_CONNECTED)
		return; /* TLS handshake done */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !c->closing) {
		/* half-close: answer what was already asked, then close */
		c->peer_eof = true;
		bufferevent_disable(bev, EV_READ);
		conn_process(c);
		return;
	}
	conn_drop(c);
}

static void kick_cb(evutil_socket_t fd, short what, void *ud)
{
	struct conn *c = ud;
	if (c->closing) {
		if (c->bev && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_drop(c);
		return;
	}
	conn_process(c);
}

static void tmr_cb(evutil_socket_t fd, short what, void *ud)
{
	struct conn *c = ud;
	if (c->closing || c->pending || !c->bev) {
		if (!c->pending)
			conn_drop(c);
		return;
	}
	if (c->msg_started) {
		error_respond(c, 408);
		return;
	}
	if (!c->served && c->srv)
		c->srv->refused++; /* connected and never sent a request */
	conn_drop(c); /* idle keep-alive connection */
}

/* ---- server ---- */

uint64_t bt_http_server_refused(const struct bt_http_server *s)
{
	return s ? s->refused : 0;
}

static void fmt_peer(const struct sockaddr *sa, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
		snprintf(out, cap, "%s:%u", ip, ntohs(s->sin_port));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
		snprintf(out, cap, "[%s]:%u", ip, ntohs(s->sin6_port));
	} else {
		snprintf(out, cap, "local:0");
	}
}

static int conn_start(struct bt_http_server *s, evutil_socket_t fd, const struct sockaddr *sa)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		evutil_closesocket(fd);
		return -ENOMEM;
	}
	c->magic = CONN_MAGIC;
	c->req.c = c;
	fmt_peer(sa, c->peer, sizeof c->peer);
	evutil_make_socket_nonblocking(fd);
	if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (s->ssl_ctx) {
		SSL *ssl = SSL_new(s->ssl_ctx);
		c->bev = ssl ? bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
							      BEV_OPT_CLOSE_ON_FREE)
			     : NULL;
		if (!c->bev && ssl)
			SSL_free(ssl);
		if (c->bev)
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!c->bev)
		evutil_closesocket(fd);
	c->tmr = event_new(s->base, -1, 0, tmr_cb, c);
	c->kick = event_new(s->base, -1, 0, kick_cb, c);
	if (!c->bev || !c->tmr || !c->kick) {
		conn_destroy(c);
		return -ENOMEM;
	}
	c->srv = s;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	http_parser_init(&c->hp, HTTP_REQUEST);
	c->hp.data = c;
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, s->lim.max_header + s->lim.max_body + PARSE_CHUNK);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	arm_timer(c);
	return 0;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *ud)
{
	conn_start(ud, fd, sa);
}

struct bt_http_server *bt_http_server_new(struct event_base *base, int listen_fd, const struct bt_http_limits *lim,
					  bt_http_handler_fn *h, void *arg)
{
	if (!base || listen_fd < 0 || !h)
		return NULL;
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	struct bt_http_server *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->magic = SRV_MAGIC;
	s->base = base;
	s->h = h;
	s->arg = arg;
	if (lim)
		s->lim = *lim;
	if (!s->lim.max_header)
		s->lim.max_header = 16384;
	if (!s->lim.max_body)
		s->lim.max_body = 1 << 20;
	if (s->lim.read_timeout_s <= 0)
		s->lim.read_timeout_s = 30;
	s->lim.server_hdr = NULL;
	if (lim && lim->server_hdr && !(s->server_hdr = strdup(lim->server_hdr))) {
		free(s);
		return NULL;
	}
	if (lim && lim->ssl_ctx) {
		SSL_CTX_up_ref(lim->ssl_ctx);
		s->ssl_ctx = lim->ssl_ctx;
	}
	evutil_make_socket_nonblocking(listen_fd);
	s->lst = evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE, -1, listen_fd);
	if (!s->lst) {
		if (s->ssl_ctx)
			SSL_CTX_free(s->ssl_ctx);
		free(s->server_hdr);
		free(s);
		return NULL;
	}
	return s;
}

int bt_http_server_adopt(struct bt_http_server *s, int fd)
{
	if (!s || fd < 0)
		return -EINVAL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	memset(&ss, 0, sizeof ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		ss.ss_family = AF_UNIX;
	return conn_start(s, fd, (struct sockaddr *)&ss);
}

void bt_http_server_free(struct bt_http_server **sp)
{
	if (!sp || !*sp)
		return;
	struct bt_http_server *s = *sp;
	assert(s->magic == SRV_MAGIC);
	evconnlistener_free(s->lst);
	while (s->conns) {
		struct conn *c = s->conns;
		conn_unlink(c);
		conn_close_socket(c);
		if (!c->pending && !c->in_process)
			conn_destroy(c);
	}
	if (s->ssl_ctx)
		SSL_CTX_free(s->ssl_ctx);
	free(s->server_hdr);
	s->magic = 0;
	free(s);
	*sp = NULL;
}

/* ---- request accessors ---- */

void bt_http_req_add_headers(struct bt_http_req *r, const char *lines)
{
	if (r)
		r->more_hdr = lines;
}

const char *bt_http_req_method(const struct bt_http_req *r)
{
	return r->method ? r->method : "";
}

const char *bt_http_req_path(const struct bt_http_req *r)
{
	return r->path ? r->path : "";
}

const char *bt_http_req_query(const struct bt_http_req *r)
{
	return r->query ? r->query : "";
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* url-decodes s[0..n) into out (cap, NUL-terminated); returns length or -ENOSPC. */
static int urldecode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			ch = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
			i += 2;
		}
		if (o + 1 >= cap)
			return -ENOSPC;
		if (out)
			out[o] = (char)ch;
		o++;
	}
	if (cap)
		out[o] = 0;
	return (int)o;
}

int bt_http_req_param(const struct bt_http_req *r, const char *name, char *out, size_t cap)
{
	const char *q = bt_http_req_query(r);
	char nb[256];
	while (*q) {
		size_t l = strcspn(q, "&;");
		const char *eq = memchr(q, '=', l);
		size_t nl = eq ? (size_t)(eq - q) : l;
		int dn = urldecode(q, nl, nb, sizeof nb);
		if (dn >= 0 && !strcmp(nb, name)) {
			if (!cap)
				return -ENOSPC;
			return eq ? urldecode(eq + 1, l - nl - 1, out, cap) : urldecode("", 0, out, cap);
		}
		q += l;
		if (*q)
			q++;
	}
	return -ENOENT;
}

const char *bt_http_req_header(const struct bt_http_req *r, const char *name)
{
	for (int i = 0; i < r->nhdr; i++)
		if (!strcasecmp(r->hdr.p + r->hoff[i][0], name))
			return r->hdr.p + r->hoff[i][1];
	return NULL;
}

const uint8_t *bt_http_req_body(const struct bt_http_req *r, size_t *len)
{
	if (len)
		*len = r->body.n;
	return r->body.p ? (const uint8_t *)r->body.p : (const uint8_t *)"";
}

const char *bt_http_req_peer(const struct bt_http_req *r)
{
	return r->c->peer;
}

/* ---- upgrade ---- */

struct bt_ws *bt_http_upgrade(struct bt_http_req *r, const struct bt_ws_cbs *cbs, void *arg,
			      const struct bt_ws_opts *o)
{
	struct conn *c = r->c;
	assert(c->magic == CONN_MAGIC && c->pending);
	const char *key = bt_http_req_header(r, "Sec-WebSocket-Key");
	const char *ver = bt_http_req_header(r, "Sec-WebSocket-Version");
	char acc[32];
	uint8_t raw[32];
	if (!c->bev || !c->srv) {
		bt_http_respond(r, 400, "text/plain", "", 0);
		return NULL;
	}
	if (strcmp(bt_http_req_method(r), "GET") != 0 || !r->upgrade ||
	    !bt_ws_has_token(bt_http_req_header(r, "Upgrade"), "websocket") ||
	    !bt_ws_has_token(bt_http_req_header(r, "Connection"), "upgrade") || !ver || strcmp(ver, "13") != 0 ||
	    !key || strlen(key) != 24 || EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18 ||
	    bt_ws_accept_key(key, acc, sizeof acc) != 0) {
		static const char msg[] = "expected a WebSocket upgrade";
		bt_http_respond_hdr(r, 400, "text/plain", "Sec-WebSocket-Version: 13\r\n", msg, sizeof msg - 1);
		return NULL;
	}
	struct evbuffer *out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				 "Sec-WebSocket-Accept: %s\r\n", acc);
	const char *sh = o && o->server_hdr ? o->server_hdr : c->srv->server_hdr;
	if (sh)
		evbuffer_add_printf(out, "Server: %s\r\n", sh);
	evbuffer_add(out, "\r\n", 2);
	struct bufferevent *bev = c->bev;
	struct event_base *base = c->srv->base;
	char peer[sizeof c->peer];
	memcpy(peer, c->peer, sizeof peer);
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_setwatermark(bev, EV_READ, 0, 0);
	c->bev = NULL;
	c->pending = false;
	conn_close_socket(c); /* timers only: bev already handed over */
	if (c->in_process)
		c->freeme = true;
	else
		conn_destroy(c);
	return bt_ws_server_new(base, bev, peer, cbs, arg, o);
}
