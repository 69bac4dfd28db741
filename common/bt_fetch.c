/*
 * NAME
 *	bt_fetch.c - asynchronous HTTP GET: libcurl multi_socket driven by a libevent loop
 * DESCRIPTION
 *	Used by verify (DID resolution) and ingest (host probes), one instance
 *	per event loop, never shared across threads.  libcurl tells us which
 *	sockets to watch (socket callback) and when to wake it (timer
 *	callback); we turn those into libevent events and feed activity back
 *	with curl_multi_socket_action, then reap finished transfers.
 *	User callbacks are only called from that reaping step (or from
 *	bt_fetch_free), never from inside a libcurl callback, so they may start
 *	new requests.  Each request owns its easy handle and its body buffer;
 *	both are freed right after the callback returns (lesson 11: a leaked
 *	response body per request cost a relay 240 MiB/hour).
 *	Socket watchers are kept on a list so the ones libcurl never asks us
 *	to remove (it may not, during curl_multi_cleanup) are still freed.
 * DIAGNOSTICS
 *	Statuses as in bt_fetch.h.  Nothing is logged here.
 */
#include "bt_fetch.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/event.h>

#define FETCH_MAGIC 0x46455443u /* "FETC" */
#define MAX_URL 4096

struct sockw {
	struct sockw *prev, *next;
	struct bt_fetch *f;
	curl_socket_t fd;
	struct event *ev;
};

struct req {
	struct req *prev, *next;
	struct bt_fetch *f;
	CURL *easy;
	bt_fetch_fn *cb;
	void *arg;
	char *body;
	size_t len, cap;
	bool too_big, blocked;
	char server[256];
};

struct bt_fetch {
	uint32_t magic;
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct req *reqs;    /* in flight */
	struct sockw *socks; /* watched sockets */
	size_t inflight;
	bool closing;
	int max_conns, timeout_ms;
	size_t max_body;
	bool public_only;
	char *ua;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- addresses -------------------------------------------------------- */

static bool v4_public(uint32_t a)
{
	static const struct {
		uint32_t net, mask;
	} bad[] = {
		{0x00000000, 0xff000000}, /* 0/8 this network */
		{0x0a000000, 0xff000000}, /* 10/8 */
		{0x64400000, 0xffc00000}, /* 100.64/10 CGNAT */
		{0x7f000000, 0xff000000}, /* 127/8 loopback */
		{0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local */
		{0xac100000, 0xfff00000}, /* 172.16/12 */
		{0xc0000000, 0xffffff00}, /* 192.0.0/24 IETF */
		{0xc0000200, 0xffffff00}, /* 192.0.2/24 TEST-NET-1 */
		{0xc0586300, 0xffffff00}, /* 192.88.99/24 6to4 relay */
		{0xc0a80000, 0xffff0000}, /* 192.168/16 */
		{0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
		{0xc6336400, 0xffffff00}, /* 198.51.100/24 TEST-NET-2 */
		{0xcb007100, 0xffffff00}, /* 203.0.113/24 TEST-NET-3 */
		{0xe0000000, 0xf0000000}, /* 224/4 multicast */
		{0xf0000000, 0xf0000000}, /* 240/4 reserved, broadcast */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if ((a & bad[i].mask) == bad[i].net)
			return false;
	return true;
}

bool bt_addr_public(const struct sockaddr *sa)
{
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		return v4_public(ntohl(s->sin_addr.s_addr));
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0) {
		uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
		return v4_public(a);
	}
	bool zero10 = true;
	for (int i = 0; i < 10; i++)
		zero10 &= b[i] == 0;
	if (zero10 && ((b[10] == 0 && b[11] == 0) || (b[10] == 0xff && b[11] == 0xff)))
		return false; /* ::, ::1, IPv4-compatible and leftovers of ::/96 */
	if ((b[0] & 0xe0) != 0x20)
		return false; /* only 2000::/3 is global unicast */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
		return false; /* 2001:db8::/32 documentation */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00)
		return false; /* 2001::/32 Teredo */
	if (b[0] == 0x20 && b[1] == 0x02)
		return false; /* 2002::/16 6to4 can reach private IPv4 */
	return true;
}

static curl_socket_t open_sock(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct req *r = clientp;
	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	if (r->f->public_only) {
		const struct sockaddr *sa = &a->addr;
		unsigned port = 0;
		if (sa->sa_family == AF_INET)
			port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
		else if (sa->sa_family == AF_INET6)
			port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
		if (!bt_addr_public(sa) || (port != 80 && port != 443)) {
			r->blocked = true;
			return CURL_SOCKET_BAD;
		}
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ---- request bodies and headers ----------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
	struct req *r = ud;
	size_t n = sz * nm;
	if (n > r->f->max_body || r->len > r->f->max_body - n) {
		r->too_big = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (r->len + n + 1 > r->cap) {
		size_t nc = r->cap ? r->cap : 4096;
		while (nc < r->len + n + 1)
			nc *= 2;
		if (nc > r->f->max_body + 1)
			nc = r->f->max_body + 1;
		char *nb = realloc(r->body, nc);
		if (!nb)
			return 0;
		r->body = nb;
		r->cap = nc;
	}
	memcpy(r->body + r->len, p, n);
	r->len += n;
	r->body[r->len] = 0;
	return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
	struct req *r = ud;
	size_t n = sz * nm;
	if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
		r->server[0] = 0; /* a new response (e.g. after 100 Continue) */
	} else if (n > 7 && strncasecmp(p, "server:", 7) == 0) {
		size_t i = 7, e = n;
		while (i < e && (p[i] == ' ' || p[i] == '\t'))
			i++;
		while (e > i && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' ' || p[e - 1] == '\t'))
			e--;
		size_t l = e - i < sizeof r->server - 1 ? e - i : sizeof r->server - 1;
		memcpy(r->server, p + i, l);
		r->server[l] = 0;
	}
	return n;
}

/* ---- completion ----------------------------------------------------- */

static void unlink_req(struct bt_fetch *f, struct req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		f->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	f->inflight--;
}

static void finish(struct req *r, int status)
{
	const char *body = r->body && !(status < 0) ? r->body : "";
	size_t len = status < 0 ? 0 : r->len;
	r->cb(r->arg, status, body, len, status < 0 ? "" : r->server);
	curl_easy_cleanup(r->easy);
	free(r->body);
	free(r);
}

static int map_err(struct req *r, CURLcode rc)
{
	if (r->too_big)
		return -EFBIG;
	if (r->blocked)
		return -EPERM;
	switch (rc) {
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static void reap(struct bt_fetch *f)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(f->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *e = m->easy_handle;
		CURLcode rc = m->data.result;
		struct req *r = NULL;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
		assert(r && r->easy == e);
		int status;
		if (rc == CURLE_OK) {
			long code = 0;
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
			status = code > 0 && code < 1000 ? (int)code : -EIO;
		} else {
			status = map_err(r, rc);
		}
		curl_multi_remove_handle(f->multi, e);
		unlink_req(f, r);
		finish(r, status);
	}
}

/* ---- libevent <-> libcurl glue ----------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct bt_fetch *f = arg;
	int running;
	curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	reap(f);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *ud)
{
	struct bt_fetch *f = ud;
	if (timeout_ms < 0) {
		evtimer_del(f->timer);
		return 0;
	}
	/* A zero timeout still goes through the loop: libcurl must not be re-entered from here. */
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	return evtimer_add(f->timer, &tv) == 0 ? 0 : -1;
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
	struct sockw *w = arg;
	struct bt_fetch *f = w->f;
	int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;
	/* w may be freed inside socket_action (CURL_POLL_REMOVE): do not touch it afterwards. */
	curl_multi_socket_action(f->multi, fd, flags, &running);
	reap(f);
}

static void sockw_free(struct bt_fetch *f, struct sockw *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		f->socks = w->next;
	if (w->next)
		w->next->prev = w->prev;
	if (w->ev)
		event_free(w->ev);
	free(w);
}

static int sock_cb(CURL *e, curl_socket_t s, int what, void *ud, void *sp)
{
	struct bt_fetch *f = ud;
	struct sockw *w = sp;
	if (what == CURL_POLL_REMOVE) {
		if (w) {
			curl_multi_assign(f->multi, s, NULL);
			sockw_free(f, w);
		}
		return 0;
	}
	if (!w) {
		w = calloc(1, sizeof *w);
		if (!w)
			return -1;
		w->f = f;
		w->fd = s;
		w->next = f->socks;
		if (f->socks)
			f->socks->prev = w;
		f->socks = w;
		curl_multi_assign(f->multi, s, w);
	}
	short ev = (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
	if (w->ev) {
		event_del(w->ev);
		if (event_assign(w->ev, f->base, s, ev, on_sock, w) != 0)
			return -1;
	} else {
		w->ev = event_new(f->base, s, ev, on_sock, w);
		if (!w->ev)
			return -1;
	}
	return event_add(w->ev, NULL) == 0 ? 0 : -1;
}

/* ---- public API ------------------------------------------------------- */

struct bt_fetch *bt_fetch_new(struct event_base *base, const struct bt_fetch_opts *o)
{
	assert(base);
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return NULL;
	struct bt_fetch *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->magic = FETCH_MAGIC;
	f->base = base;
	f->max_conns = o && o->max_conns > 0 ? o->max_conns : 16;
	f->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 10000;
	f->max_body = o && o->max_body > 0 ? o->max_body : 1 << 20;
	f->public_only = o ? o->public_only : false;
	f->ua = strdup(o && o->user_agent ? o->user_agent : "baton");
	f->multi = curl_multi_init();
	f->timer = evtimer_new(base, on_timer, f);
	if (!f->ua || !f->multi || !f->timer) {
		bt_fetch_free(&f);
		return NULL;
	}
	curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
	curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
	curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->max_conns);
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->max_conns);
	return f;
}

int bt_fetch_get(struct bt_fetch *f, const char *url, bt_fetch_fn *cb, void *arg)
{
	assert(f && f->magic == FETCH_MAGIC && cb);
	if (f->closing)
		return -ESHUTDOWN;
	if (!url || strnlen(url, MAX_URL) >= MAX_URL)
		return -EINVAL;
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->f = f;
	r->cb = cb;
	r->arg = arg;
	r->easy = curl_easy_init();
	if (!r->easy) {
		free(r);
		return -ENOMEM;
	}
	CURL *e = r->easy;
	/* Malformed URLs are only detected when the transfer starts: they complete as -EINVAL. */
	bool ok = curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_HEADERDATA, r) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_sock) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_USERAGENT, f->ua) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max_body) == CURLE_OK;
	if (!ok || curl_multi_add_handle(f->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		free(r);
		return -ENOMEM;
	}
	r->next = f->reqs;
	if (f->reqs)
		f->reqs->prev = r;
	f->reqs = r;
	f->inflight++;
	return 0;
}

size_t bt_fetch_inflight(const struct bt_fetch *f)
{
	assert(f && f->magic == FETCH_MAGIC);
	return f->inflight;
}

void bt_fetch_free(struct bt_fetch **fp)
{
	if (!fp || !*fp)
		return;
	struct bt_fetch *f = *fp;
	assert(f->magic == FETCH_MAGIC);
	f->closing = true;
	while (f->reqs) {
		struct req *r = f->reqs;
		curl_multi_remove_handle(f->multi, r->easy);
		unlink_req(f, r);
		finish(r, -ECANCELED);
	}
	if (f->multi)
		curl_multi_cleanup(f->multi);
	while (f->socks)
		sockw_free(f, f->socks);
	if (f->timer)
		event_free(f->timer);
	free(f->ua);
	f->magic = 0;
	free(f);
	*fp = NULL;
}
