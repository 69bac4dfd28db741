/*
 * NAME
 *	baton-ingest - reads every upstream firehose and routes frames to verify
 * DESCRIPTION
 *	One libevent loop for all upstream WebSocket connections.  Each binary message is
 *	checked just enough to route it (bt_fh_peek: header, seq, DID), stamped with its host,
 *	upstream seq and the seq of the host's previous frame (the store chains verdicts with
 *	it, store/store_chain.c), and written to the ring of its DID's verify partition
 *	(FNV-1a(did) mod K).  A full ring, or the host's event rate limit (ingest_limits.c),
 *	pauses that connection (TCP backpressure reaches the PDS) until the ring drains or the
 *	limit has room; nothing is dropped or buffered without bound.
 *
 *	At start the committed cursors come from the store (ZeroMQ "hosts"); a host asks for
 *	subscribeRepos?cursor=<cursor>.  Connections are staggered at start and reconnect with
 *	exponential backoff and jitter, forever (a host is never forgotten).  An upstream
 *	FutureCursor resets the host to no cursor.
 *
 *	Never verifies signatures and never writes RocksDB.
 * DIAGNOSTICS
 *	Undecodable frames drop the connection (counted as bad_frames); #info frames are logged.
 */
#include "bt_ctl.h"
#include "bt_fetch.h"
#include "bt_fh.h"
#include "bt_host.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "bt_ws.h"
#include "ingest.h"

#include <errno.h>
#include <event2/dns.h>
#include <openssl/ssl.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HOSTS 100000

static struct event_base *base;
static struct evdns_base *dns; /* one resolver for every upstream */
static SSL_CTX *tls;            /* one verifying TLS context for every upstream */

/* SSRF guard: a public host must resolve to a public address (checked after DNS, before a
   byte is sent).  Only explicitly allowed localhost:PORT hosts skip it. */
static int public_only(const struct sockaddr *sa, int salen, void *arg)
{
	return bt_addr_public(sa) ? 0 : -1;
}
static struct ing_host **hosts;
static size_t n_hosts;
static struct event *ev_beat, *ev_retry;
static char store_ep[600];

struct ing_host *ing_host_find(const char *name)
{
	for (size_t i = 0; i < n_hosts; i++)
		if (!strcmp(hosts[i]->name, name))
			return hosts[i];
	return NULL;
}

static void connect_host(struct ing_host *h);

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
	connect_host(arg);
}

/* Backoff with ±25% jitter: 0.5 s, 1 s, 2 s, ... up to RELAY_RECONNECT_MAX. */
static void schedule(struct ing_host *h, uint64_t min_ms)
{
	uint64_t ms = 500u << (h->failures < 16 ? h->failures : 16);
	uint64_t max = (uint64_t)bt_cfg.reconnect_max * 1000u;
	if (ms > max)
		ms = max;
	ms = ms * 3 / 4 + (uint64_t)random() % (ms / 2 + 1);
	if (ms < min_ms)
		ms = min_ms;
	h->state = ING_WAIT;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	event_add(h->reconnect, &tv);
}

#define PEND_MAX (64u << 20)

/* The retry timer (on_retry) fires at the earliest time any paused host asked for. */
static uint64_t retry_due; /* CLOCK_MONOTONIC ms; 0 = not scheduled */

static void retry_in(uint64_t ms)
{
	uint64_t due = bt_now_ms() + ms;
	if (retry_due && evtimer_pending(ev_retry, NULL) && retry_due <= due)
		return;
	retry_due = due;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(ev_retry, &tv);
}

static int pend_add(struct ing_host *h, const uint8_t *p, size_t n)
{
	size_t need = h->pend_len + 4 + n;
	if (need > PEND_MAX)
		return -ENOBUFS;
	if (need > h->pend_cap) {
		size_t cap = h->pend_cap ? h->pend_cap : 65536;
		while (cap < need)
			cap *= 2;
		uint8_t *np = realloc(h->pend, cap);
		if (!np)
			return -ENOMEM;
		h->pend = np;
		h->pend_cap = cap;
	}
	uint32_t n32 = (uint32_t)n;
	memcpy(h->pend + h->pend_len, &n32, 4);
	memcpy(h->pend + h->pend_len + 4, p, n);
	h->pend_len = need;
	return 0;
}

/* Frames go into the rings quietly; each ring written since the last wake has its verify's
   bell rung once, by ev_wake, which runs after every read callback of the loop turn that
   queued it (a cross-core wakeup costs tens of microseconds: once per frame it was most of
   ingest's kernel time).  A frame is in the ring once committed; the bell only ends the
   reader's sleep (and verify polls on its beat as well). */
static bool wake_dirty[BT_MAX_VERIFY]; /* RELAY_VERIFY_PROCS is at most BT_MAX_VERIFY */
static struct event *ev_wake;

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	for (int k = 0; k < bt_proc.K; k++)
		if (wake_dirty[k]) {
			wake_dirty[k] = false;
			bt_ring_wake(bt_shm_ring(bt_proc.shm, bt_pipe_ring_in(k)));
		}
}

static void ring_commit(struct bt_ring *r, int k)
{
	bt_ring_commit_quiet(r);
	if (!wake_dirty[k]) {
		wake_dirty[k] = true;
		event_active(ev_wake, 0, 0);
	}
}

static bool push(struct ing_host *h, const uint8_t *p, size_t n, const struct bt_fh_peek *pk)
{
	int k = (int)(bt_hash_did((const char *)pk->did.p, pk->did.n) % (uint64_t)bt_proc.K);
	struct bt_ring *r = bt_shm_ring(bt_proc.shm, bt_pipe_ring_in(k));
	void *dst;
	int rc = bt_ring_claim(r, BT_REC_FRAME, sizeof(struct bt_rec_frame) + n, &dst);
	if (rc == -EAGAIN)
		return false;
	if (rc < 0) {
		BT_LOG_EVERY(BT_LOG_ERROR, "%s: frame of %zu bytes does not fit the ring: dropped", h->name, n);
		bt_stat_add(bt_proc.stats, BT_STAT_BAD_FRAMES, 1);
		return true;
	}
	struct bt_rec_frame *fr = dst;
	memset(fr, 0, sizeof *fr);
	fr->host_id = h->id;
	fr->useq = (uint64_t)pk->seq;
	fr->prev_useq = h->cursor;
	fr->flags = h->reset_next ? BT_FRAME_CHAIN_RESET : 0;
	fr->epoch = h->epoch;
	fr->recv_ms = bt_wall_ms();
	fr->frame_len = (uint32_t)n;
	fr->host_len = (uint16_t)strlen(h->name);
	memcpy(fr->host, h->name, fr->host_len);
	memcpy(fr + 1, p, n);
	ring_commit(r, k);
	h->cursor = (uint64_t)pk->seq;
	h->have_cursor = true;
	h->reset_next = false;
	ing_lim_took(h);
	bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_OUT, 1);
	return true;
}

static void on_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
	struct ing_host *h = arg;
	struct bt_fh_peek pk;
	bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_IN, 1);
	bt_stat_add(bt_proc.stats, BT_STAT_BYTES_IN, n);
	bt_hist_observe(bt_proc.stats, BT_HIST_EVENT_BYTES, n);
	bt_proc_progress(1);
	if (opcode != BT_WS_BINARY || bt_fh_peek(p, n, &pk) < 0) {
		bt_stat_add(bt_proc.stats, BT_STAT_BAD_FRAMES, 1);
		BT_LOG_EVERY(BT_LOG_WARN, "%s: undecodable frame: dropping the connection", h->name);
		bt_ws_close(ws, 1007, "bad frame");
		return;
	}
	if (pk.op == -1) {
		BT_WARN("%s: error frame %.*s", h->name, (int)pk.error.n, (const char *)pk.error.p);
		if (bt_bytes_eq_str(pk.error, "FutureCursor") && !h->reset_next) {
			/* The upstream's sequence restarted: its seqs are new numbers, so the next frame
			   opens a new chain epoch at the store (once per reset: until a frame of the new
			   epoch is pushed, a repeated FutureCursor is the same reset).  The store gives
			   the epoch before the reconnect (connect_host), so it is never given twice. */
			h->have_cursor = false;
			h->reset_next = true;
			h->epoch_pending = true;
		}
		bt_ws_close(ws, 1000, "error frame");
		return;
	}
	if (pk.type == BT_FH_INFO) {
		BT_INFO("%s: #info frame", h->name);
		return;
	}
	if (!pk.has_seq || pk.seq < 0) {
		bt_stat_add(bt_proc.stats, BT_STAT_BAD_FRAMES, 1);
		BT_LOG_EVERY(BT_LOG_WARN, "%s: frame without seq: dropping the connection", h->name);
		bt_ws_close(ws, 1007, "frame without seq");
		return;
	}
	h->failures = 0; /* a frame that decodes: the host works (a bad one keeps the backoff growing) */
	if (h->have_cursor && !h->reset_next && (uint64_t)pk.seq <= h->cursor) {
		/* The upstream repeated itself; these already have an outcome. */
		atomic_fetch_add_explicit(&bt_proc.stats->drops[BT_DROP_DUPLICATE], 1, memory_order_relaxed);
		return;
	}
	uint64_t wait = h->pend_len ? 0 : ing_lim_wait(h);
	if (h->pend_len || wait || !push(h, p, n, &pk)) {
		/* Ring full, over the host's rate limit (ingest_limits.c), or frames already held,
		   which go first: hold this one, stop reading. */
		if (pend_add(h, p, n) < 0) {
			/* Too much held: drop the connection; everything after the cursor comes again. */
			h->pend_len = 0;
			bt_ws_close(ws, 1011, "backlog");
			return;
		}
		bt_ws_pause(ws);
		if (!wait && !h->pend_len)
			bt_stat_add(bt_proc.stats, BT_STAT_RING_FULL, 1);
		retry_in(wait ? wait : 2);
	}
}

/* Paused hosts: push their held frames in order; resume reading once all are in. */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	bool still = false;
	uint64_t next = UINT64_MAX;
	retry_due = 0;
	for (size_t i = 0; i < n_hosts; i++) {
		struct ing_host *h = hosts[i];
		size_t off = 0;
		while (off < h->pend_len) {
			uint32_t n;
			memcpy(&n, h->pend + off, 4);
			const uint8_t *p = h->pend + off + 4;
			struct bt_fh_peek pk;
			if (bt_fh_peek(p, n, &pk) == 0) {
				uint64_t w = ing_lim_wait(h);
				if (w || !push(h, p, n, &pk)) {
					next = w && w < next ? w : !w && next > 2 ? 2 : next;
					break;
				}
			}
			off += 4 + n;
		}
		if (!h->pend_len)
			continue;
		memmove(h->pend, h->pend + off, h->pend_len - off);
		h->pend_len -= off;
		if (h->pend_len)
			still = true;
		else if (h->ws)
			bt_ws_resume(h->ws);
	}
	if (still)
		retry_in(next == UINT64_MAX ? 2 : next);
}

#define OFFLINE_AFTER 3 /* failed connects in a row before a host is reported offline */

/* Host status is the store's (it owns RocksDB): listHosts/getHostStatus show it.  An offline
   host is still retried with backoff, forever (lesson 16).  Changes are sent in one batch a
   second, so thousands of hosts failing at once cost one control round trip, not thousands. */
static json_t *status_batch;
static struct event *ev_status;

static void flush_status(evutil_socket_t fd, short what, void *arg)
{
	if (!status_batch || !json_array_size(status_batch))
		return;
	json_t *r = bt_ctl_call(store_ep, json_pack("{s:s,s:O}", "op", "hostStatus", "updates", status_batch), 1000);
	if (!r)
		BT_LOG_EVERY(BT_LOG_WARN, "could not record %zu host status changes (store not answering)",
			     json_array_size(status_batch));
	json_decref(r);
	json_array_clear(status_batch);
}

static void report_status(struct ing_host *h, const char *status)
{
	if (!status_batch)
		status_batch = json_array();
	json_array_append_new(status_batch, json_pack("{s:i,s:s}", "id", (int)h->id, "status", status));
	if (!evtimer_pending(ev_status, NULL)) {
		struct timeval tv = { 1, 0 };
		evtimer_add(ev_status, &tv);
	}
}

static void on_open(struct bt_ws *ws, void *arg)
{
	struct ing_host *h = arg;
	const char *server = bt_ws_resp_header(ws, "Server");
	if (server && strstr(server, "atproto-relay") && strcmp(h->name, bt_cfg.upstream_relay)) {
		BT_WARN("%s: upstream is a relay (Server: %s): refusing it", h->name, server);
		bt_ws_close(ws, 1008, "relay loop");
		return;
	}
	h->state = ING_OPEN;
	if (h->offline) {
		h->offline = false;
		report_status(h, "active");
	}
	bt_stat_add(bt_proc.stats, BT_STAT_CONNECTS, 1);
	BT_INFO("%s: subscribed (cursor %llu%s)", h->name, (unsigned long long)h->cursor,
		h->have_cursor ? "" : ", none");
}

static void host_free(struct ing_host *h)
{
	event_free(h->reconnect);
	free(h->pend);
	free(h);
}

static void on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	struct ing_host *h = arg;
	h->ws = NULL;
	if (h->blocked) {
		/* Its last callback: nothing refers to h any more (frames in the rings carry the host by
		   id and name, by value). */
		BT_INFO("%s: disconnected and removed (blocked)", h->name);
		host_free(h);
		return;
	}
	h->pend_len = 0; /* not pushed: they come again after the reconnect, from the cursor */
	bt_stat_add(bt_proc.stats, BT_STAT_DISCONNECTS, 1);
	/* Framing refused by bt_ws (reserved opcode, a frame or message over the limit, a ping
	   flood) is a bad frame too; 1007 was counted in on_msg.  Each backs the host off. */
	bool refused = code == 1002 || code == 1009 || (code == 1008 && reason && !strcmp(reason, "ping flood"));
	if (refused)
		bt_stat_add(bt_proc.stats, BT_STAT_BAD_FRAMES, 1);
	if (h->state != ING_OPEN || refused || code == 1007)
		h->failures++;
	if (h->failures >= OFFLINE_AFTER && !h->offline && !bt_proc_stop) {
		h->offline = true;
		report_status(h, "offline");
	}
	BT_INFO("%s: disconnected (%d %s); reconnecting", h->name, code, reason ? reason : "");
	if (!bt_proc_stop)
		schedule(h, 100);
}

static void connect_host(struct ing_host *h)
{
	if (h->ws || bt_proc_stop)
		return;
	if (h->epoch_pending) {
		/* One control round trip per upstream reset (rare): the store persists the new epoch
		   before we answer to it.  An ingest killed after this and before any frame of the
		   epoch is decided asks again and gets another, so two connections never share an
		   epoch (docs/chain.md).  Store not answering: try again later, not connected. */
		json_t *r = bt_ctl_call(store_ep, json_pack("{s:s,s:i}", "op", "allocEpoch", "id", (int)h->id), 2000);
		json_t *e = json_object_get(r, "epoch");
		if (!json_is_integer(e)) {
			BT_LOG_EVERY(BT_LOG_WARN, "%s: the store gave no chain epoch for the reset; retrying", h->name);
			json_decref(r);
			h->failures++;
			schedule(h, 1000);
			return;
		}
		h->epoch = (uint32_t)json_integer_value(e);
		h->epoch_pending = false;
		json_decref(r);
		BT_INFO("%s: upstream sequence reset: chain epoch %u", h->name, h->epoch);
	}
	char url[BT_HOST_MAX + 128];
	const char *authority = h->name;
	char local[BT_HOST_MAX + 16];
	if (h->insecure && !strncmp(h->name, "localhost:", 10)) {
		/* Loopback test hosts: connect to 127.0.0.1 explicitly (localhost may resolve to ::1 first). */
		snprintf(local, sizeof local, "127.0.0.1:%s", h->name + 10);
		authority = local;
	}
	if (h->have_cursor)
		snprintf(url, sizeof url, "%s://%s/xrpc/com.atproto.sync.subscribeRepos?cursor=%llu",
			 h->insecure ? "ws" : "wss", authority, (unsigned long long)h->cursor);
	else
		snprintf(url, sizeof url, "%s://%s/xrpc/com.atproto.sync.subscribeRepos", h->insecure ? "ws" : "wss",
			 authority);
	static const struct bt_ws_cbs cbs = { .on_open = on_open, .on_msg = on_msg, .on_close = on_close };
	struct bt_ws_opts o;
	memset(&o, 0, sizeof o);
	o.max_msg = (size_t)bt_cfg.max_frame_bytes;
	o.ping_interval_s = 30;
	o.idle_timeout_s = 300;
	o.user_agent = bt_cfg.user_agent;
	o.dns = dns;
	o.ssl_ctx = tls;
	if (!h->insecure)
		o.addr_check = public_only;
	h->state = ING_CONNECTING;
	h->ws = bt_ws_connect(base, url, &cbs, h, &o);
	if (!h->ws) {
		h->failures++;
		schedule(h, 100);
	}
}

struct ing_host **ing_hosts(size_t *n)
{
	*n = n_hosts;
	return hosts;
}

/* Lesson 5: a host removed (blocked, killed, under a banned domain) while its frames are in
   flight.  It leaves the table at once (no new lookups, no retries); its memory goes only
   after its connection's last callback. */
int ing_host_drop(const char *name, const char *status)
{
	size_t i;
	for (i = 0; i < n_hosts && strcmp(hosts[i]->name, name); i++)
		;
	if (i == n_hosts)
		return -ENOENT;
	struct ing_host *h = hosts[i];
	hosts[i] = hosts[--n_hosts];
	bt_stat_set(bt_proc.stats, BT_STAT_HOSTS, n_hosts);
	if (status)
		report_status(h, status);
	h->blocked = true;
	event_del(h->reconnect);
	if (h->ws)
		bt_ws_close(h->ws, 1008, "host blocked by the operator");
	else
		host_free(h);
	return 0;
}

void ing_host_connect_now(struct ing_host *h)
{
	h->failures = 0;
	if (!h->ws) {
		event_del(h->reconnect);
		connect_host(h);
	}
}

struct ing_host *ing_host_add(uint32_t id, const char *name, bool insecure, uint64_t cursor, bool have_cursor,
			      uint32_t epoch)
{
	struct ing_host *h = ing_host_find(name);
	if (h)
		return h;
	if (n_hosts >= MAX_HOSTS)
		return NULL;
	if (!hosts && !(hosts = calloc(MAX_HOSTS, sizeof *hosts)))
		return NULL;
	h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	h->id = id;
	snprintf(h->name, sizeof h->name, "%s", name);
	h->insecure = insecure;
	h->cursor = cursor;
	h->have_cursor = have_cursor;
	h->epoch = epoch;
	h->reconnect = evtimer_new(base, on_reconnect, h);
	ing_lim_init(h);
	hosts[n_hosts++] = h;
	bt_stat_set(bt_proc.stats, BT_STAT_HOSTS, n_hosts);
	return h;
}

json_t *ing_store_wait(const char *op)
{
	json_t *r = NULL;
	while (!bt_proc_stop && !(r = bt_ctl_call(store_ep, json_pack("{s:s}", "op", op), 2000))) {
		bt_proc_beat();
		BT_LOG_EVERY(BT_LOG_INFO, "waiting for the store to answer %s", op);
	}
	return r;
}

/* The committed hosts and cursors, from the store (retried until it answers). */
static void load_hosts(void)
{
	json_t *r = ing_store_wait("hosts");
	if (!r)
		return;
	json_t *arr = json_object_get(r, "hosts"), *it;
	size_t i, n = json_array_size(arr);
	json_array_foreach(arr, i, it)
	{
		const char *name = json_string_value(json_object_get(it, "host"));
		const char *status = json_string_value(json_object_get(it, "status"));
		if (!name || (status && !strcmp(status, "banned")))
			continue;
		char norm[BT_HOST_MAX];
		bool insecure;
		if (bt_host_normalize(name, bt_cfg.allow_insecure_hosts, norm, sizeof norm, &insecure, NULL) < 0 ||
		    ing_admit_domain_banned(norm))
			continue;
		uint64_t cur = (uint64_t)json_integer_value(json_object_get(it, "cursor"));
		uint32_t epoch = (uint32_t)json_integer_value(json_object_get(it, "epoch"));
		struct ing_host *h = ing_host_add((uint32_t)json_integer_value(json_object_get(it, "id")), norm,
						  insecure, cur, cur > 0, epoch);
		/* Lesson 9: stagger thousands of connects over a few seconds. */
		if (h)
			h->offline = status && !strcmp(status, "offline");
		if (h)
			ing_lim_from_json(h, it);
		if (h) {
			uint64_t spread = n > 1 ? (uint64_t)random() % (n * 5 < 5000 ? n * 5 : 5000) : 0;
			event_add(h->reconnect, &(struct timeval){ (time_t)(spread / 1000), (suseconds_t)(spread % 1000) * 1000 });
		}
	}
	json_decref(r);
	BT_INFO("%zu hosts loaded from the store", n_hosts);
}

static void on_ctl(void *arg, struct bt_ctl_req *req, json_t *msg)
{
	const char *op = json_string_value(json_object_get(msg, "op"));
	if (op && ing_admin_ctl(req, op, msg))
		return; /* ingest_admit.c: requestCrawl, block, unblock, bans, the crawl switch */
	if (op && !strcmp(op, "setLimits")) {
		ing_lim_ctl(req, msg);
		return;
	}
	if (op && !strcmp(op, "upstreams")) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n_hosts; i++)
			json_array_append_new(arr, json_pack("{s:s,s:i,s:b,s:I}", "host", hosts[i]->name, "id",
							     (int)hosts[i]->id, "connected",
							     hosts[i]->state == ING_OPEN, "cursor",
							     (json_int_t)hosts[i]->cursor));
		bt_ctl_reply(req, json_pack("{s:o}", "upstreams", arr));
		return;
	}
	bt_ctl_reply(req, json_pack("{s:b,s:s}", "ok", 0, "error", "UnknownOp"));
}

static void on_beat(evutil_socket_t fd, short what, void *arg)
{
	bt_proc_beat();
	if (bt_proc_stop)
		event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
	bt_proc_init(BT_ROLE_INGEST, argc, argv, "baton-ingest: subscribes to upstream firehoses (started by baton)");
	srandom((unsigned)getpid() ^ (unsigned)bt_now_ms());
	base = event_base_new();
	if (!base || !(dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS)))
		bt_die_config("cannot create the event loop or the DNS resolver");
	if (!(tls = SSL_CTX_new(TLS_client_method())) || SSL_CTX_set_default_verify_paths(tls) != 1)
		bt_die_config("cannot set up TLS");
	SSL_CTX_set_verify(tls, SSL_VERIFY_PEER, NULL);
	bt_params_ipc("store", store_ep, sizeof store_ep);
	ev_beat = event_new(base, -1, EV_PERSIST, on_beat, NULL);
	event_add(ev_beat, &(struct timeval){ 0, 200000 });
	ev_retry = evtimer_new(base, on_retry, NULL);
	ev_status = evtimer_new(base, flush_status, NULL);
	ev_wake = event_new(base, -1, 0, on_wake, NULL);
	ing_crawl_init(base);
	ing_admit_load();
	load_hosts();
	/* Configured hosts go through the same admission as the operator's requestCrawl (bans
	   apply; the crawl switch and the per-day limit do not). */
	char list[sizeof bt_cfg.hosts], *save = NULL;
	snprintf(list, sizeof list, "%s", bt_cfg.hosts);
	static const struct ing_crawl_opts configured = { .admin = true };
	for (char *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
		ing_crawl_request(NULL, t, &configured);
	if (bt_cfg.upstream_relay[0]) {
		/* Fanout past one machine: the one upstream is a relay (no describeServer probe). */
		static const struct ing_crawl_opts up = { .admin = true, .no_probe = true };
		ing_crawl_request(NULL, bt_cfg.upstream_relay, &up);
	}
	char ep[600];
	bt_params_ipc("ingest", ep, sizeof ep);
	struct bt_ctl_srv *ctl = bt_ctl_srv_new(base, ep, on_ctl, NULL);
	if (!ctl)
		bt_die_config("cannot bind %s", ep);
	event_base_dispatch(base);
	for (size_t i = 0; i < n_hosts; i++)
		if (hosts[i]->ws)
			bt_ws_close(hosts[i]->ws, 1001, "relay stopping");
	bt_ctl_srv_free(&ctl);
	bt_proc_exit(0);
}
