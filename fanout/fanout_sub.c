/*
 * NAME
 *	fanout_sub - subscribeRepos consumers: cursor replay from RocksDB, then the live ring
 * DESCRIPTION
 *	Each consumer keeps `after`, the seq of the last event it was sent (initially its
 *	cursor).  A pump sends events while the connection's output queue is below a
 *	high-water mark:
 *	  - from the broadcast ring when the consumer holds a ring position (in_ring);
 *	  - otherwise it asks the ring for the first record with seq > after
 *	    (bt_bcast_seek); if the ring no longer holds it, it reads a bounded batch from
 *	    RocksDB ("e/" be64(after+1) onwards) and asks again.
 *	A consumer lapped by the ring (-EOVERFLOW) drops its ring position and continues
 *	from RocksDB at after+1, so it is never dropped while its position is inside the
 *	retention window.  A ring record with seq > after + 1 is a seq the ring lacks (docs/chain.md,
 *	"republish"): it is filled from RocksDB the same way and counted (RING_GAPS), never
 *	skipped.  Because both sources are addressed by seq and `after` only moves
 *	when a frame was queued, the switch in either direction has no gap and no duplicate;
 *	consecutive seqs sent to one consumer are asserted to strictly increase (lesson 6).
 *	on_drain resumes the pump; the fanout bell resumes every consumer.
 *
 *	Lesson 4: a consumer is only ever closed with bt_ws_close(); its memory is released in
 *	on_close, the last callback of the connection.
 *
 *	Single-threaded: everything here runs on the loop thread.  The data path does not
 *	malloc per frame: a live record is framed once per process into a shared, refcounted
 *	chunk (fanout_frame.c) that every consumer queues by reference (bt_ws_send_ref);
 *	RocksDB values are borrowed from the iterator and bt_ws_send copies them (replay).
 * DIAGNOSTICS
 *	cursor that is not a number: 400 InvalidRequest.  cursor > newest seq: error frame
 *	FutureCursor, close 1008.  cursor older than the window: #info OutdatedCursor, then
 *	the whole window.  A consumer that fell out of the window: error frame
 *	ConsumerTooSlow, close 1008, SLOW_KICKS.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>

#include "bt_buf.h"
#include "bt_db.h"
#include "bt_fh.h"
#include "bt_http.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "bt_ws.h"
#include "bt_ws_int.h"
#include "fanout.h"

#define SUB_MAGIC 0x46414e53u       /* "FANS" */
#define SUB_HIWAT ((size_t)8 << 20)  /* stop pumping above this many queued bytes */
#define SUB_LOWAT ((size_t)2 << 20)  /* on_drain below this */
#define DB_BATCH_EVENTS 512
#define DB_BATCH_BYTES ((size_t)4 << 20)
#define RETRY_MS 50
#define CATCH_UP_MIN_MS 20
#define LINGER_CHECK_MS 100
#define KICK_FLUSH_MS 30000 /* a kicked consumer gets this long to read its queue and the error */

struct fan_sub {
	uint32_t magic;
	struct bt_ws *ws;
	struct fan_sub *prev, *next;
	uint64_t after;     /* seq of the last event sent (or the starting cursor) */
	uint64_t pos;       /* ring position of the next record, when in_ring */
	bool in_ring;
	bool outdated_ok;   /* nothing sent yet after a cursor: an old cursor gets #info, not a kick */
	bool quiet_window;  /* cursor=0: the whole window without #info */
	bool closing;       /* bt_ws_close called (or the connection failed): pump no more */
	bool waiting;       /* waiting for the retry timer (database not ready) */
	bool close_pending; /* kicked: bt_ws_close once the error frame has left the queue */
	int close_code;
	const char *close_reason; /* static string */
	uint64_t close_deadline_ms;
	/* for /admin/consumers/list and the read deadline */
	char ip[64];
	char ua[160];
	uint64_t cursor;    /* the cursor asked for (has_cursor) */
	bool has_cursor;
	uint64_t since_ms;  /* wall clock of the connect */
	uint64_t acked_seen; /* bt_ws_acked at the last watch */
	uint64_t moved_ms;  /* monotonic: last watch that saw the output drain (or empty) */
	size_t lowat;       /* drain threshold set on the connection */
	bool handing;       /* being handed to another fanout: nothing more is queued (fanout_hand.c) */
};

static struct fan_sub *subs;
static unsigned n_subs;
static struct bt_buf ctl_buf; /* error/#info frames */
static struct event *retry_ev;
static struct event *linger_ev;
static uint64_t max_sent;

static void pump(struct fan_sub *s);

#define SUB_MIN_SHARE ((size_t)64 << 10) /* a consumer always gets at least this much queue */

/* The high-water mark of one consumer: its share of RELAY_CONSUMER_BUFFER_MB among the
   consumers of this process, at most SUB_HIWAT.  Above it, the pump stops; the consumer is
   resumed by on_drain and reads what it missed from the ring or RocksDB, so the output held
   for all consumers together stays within the budget (plus one event each). */
static size_t share(void)
{
	size_t budget = (size_t)bt_cfg.consumer_buffer_mb << 20;
	size_t sh = n_subs ? budget / n_subs : budget;
	if (sh > SUB_HIWAT)
		sh = SUB_HIWAT;
	return sh < SUB_MIN_SHARE ? SUB_MIN_SHARE : sh;
}

/* Keeps the connection's on_drain threshold below its share (a quarter of it, at most
   SUB_LOWAT), so a consumer held at its share is resumed when it has read. */
static void fit_lowat(struct fan_sub *s, size_t sh)
{
	size_t lw = sh / 4 < SUB_LOWAT ? sh / 4 : SUB_LOWAT;
	if (lw != s->lowat) {
		s->lowat = lw;
		bt_ws_set_drain_lowat(s->ws, lw);
	}
}

/* Closes a kicked consumer once its queue (ending with the error frame) has been written out.
   wslay sends a queued close frame ahead of queued data messages and nothing after it, so an
   immediate bt_ws_close would drop the error frame and the events before it. */
static void try_close(struct fan_sub *s)
{
	if (!s->close_pending)
		return;
	if (bt_ws_outq(s->ws) == 0 || bt_now_ms() >= s->close_deadline_ms) {
		s->close_pending = false;
		bt_ws_close(s->ws, s->close_code, s->close_reason);
		return;
	}
	if (!event_pending(linger_ev, EV_TIMEOUT, NULL)) {
		struct timeval tv = { 0, LINGER_CHECK_MS * 1000 };
		event_add(linger_ev, &tv);
	}
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
	for (struct fan_sub *s = subs, *nx; s; s = nx) {
		nx = s->next;
		try_close(s);
	}
}

/* Sends an error frame and closes with code after it (error and reason are static strings). */
static void kick(struct fan_sub *s, const char *error, const char *message, int code)
{
	bt_buf_reset(&ctl_buf);
	s->closing = true;
	s->close_pending = true;
	s->close_code = code;
	s->close_reason = error;
	s->close_deadline_ms = bt_now_ms() + KICK_FLUSH_MS;
	if (bt_fh_encode_error(&ctl_buf, error, message) < 0 ||
	    bt_ws_send(s->ws, BT_WS_BINARY, ctl_buf.p, ctl_buf.len) < 0)
		s->close_deadline_ms = 0; /* nothing to wait for */
	try_close(s);
}

static void sent(struct fan_sub *s, uint64_t seq, bool replay);
static void skip(struct fan_sub *s, uint64_t seq);

/* Queues one event frame (a copy); 0, or <0 when the connection is closing. */
static int send_event(struct fan_sub *s, uint64_t seq, const void *p, size_t n, bool replay)
{
	/* Lesson 6: the seqs one consumer sees strictly increase; a violation is a bug here. */
	assert(seq > s->after);
	if (bt_ws_send(s->ws, BT_WS_BINARY, p, n) < 0) {
		s->closing = true;
		return -EPIPE;
	}
	sent(s, seq, replay);
	return 0;
}

/* The live frames a pump has taken but not queued yet: adjacent frames of one chunk, queued
   as one reference by run_flush (before anything else is sent to the consumer). */
struct run {
	struct fan_frame f; /* f.n == 0: empty */
};

/* Queues the run; 0, or <0 when the connection is closing. */
static int run_flush(struct fan_sub *s, struct run *r)
{
	if (!r->f.n)
		return 0;
	struct fan_frame f = r->f;
	r->f.n = 0;
	fan_frame_ref(&f);
	int rc = bt_ws_send_ref(s->ws, f.p, f.n, fan_frame_release, f.chunk);
	if (rc < 0)
		fan_frame_release(f.p, f.n, f.chunk);
	if (rc == -EAGAIN) {
		/* wslay holds a message (run_add checked it did not; keep it correct anyway): send
		   copies of the run's frames one by one, behind it. */
		rc = 0;
		for (size_t o = 0; rc == 0 && o < f.n;) {
			const uint8_t *h = f.p + o;
			size_t hl = 2, n = h[1] & 0x7f;
			if (n == 126) {
				hl = 4;
				n = (size_t)h[2] << 8 | h[3];
			} else if (n == 127) {
				hl = 10;
				n = 0;
				for (int i = 0; i < 8; i++)
					n = n << 8 | h[2 + i];
			}
			rc = bt_ws_send(s->ws, BT_WS_BINARY, h + hl, n);
			o += hl + n;
		}
	}
	if (rc < 0) {
		s->closing = true;
		return -EPIPE;
	}
	return 0;
}

/* Takes a live event's shared frame for the consumer (queued with the run, by reference; a copy
   while wslay holds a message queued ahead of it); 0, or <0 when the connection is closing. */
static int send_frame(struct fan_sub *s, struct run *r, uint64_t seq, const struct fan_frame *f)
{
	assert(seq > s->after);
	if (r->f.n && !fan_frame_adjacent(&r->f, f) && run_flush(s, r) < 0)
		return -EPIPE;
	if (r->f.n) {
		r->f.n += f->n;
	} else if (bt_ws_send_ref_ok(s->ws)) {
		r->f = *f;
	} else if (bt_ws_send(s->ws, BT_WS_BINARY, f->p + f->hl, f->n - f->hl) < 0) {
		s->closing = true;
		return -EPIPE;
	}
	if (f->commit_ms) {
		uint64_t now = bt_wall_ms();
		bt_hist_observe(bt_proc.stats, BT_HIST_COMMIT_SEND_MS, now > f->commit_ms ? now - f->commit_ms : 0);
	}
	sent(s, seq, false);
	return 0;
}

/* Moves the consumer past an event it must not get (its account's takedown came later). */
static void skip(struct fan_sub *s, uint64_t seq)
{
	assert(seq > s->after);
	s->after = seq;
	bt_stat_add(bt_proc.stats, BT_STAT_TAKEDOWN_HIDDEN, 1);
}

static void sent(struct fan_sub *s, uint64_t seq, bool replay)
{
	s->after = seq;
	s->outdated_ok = false;
	s->quiet_window = false;
	bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_OUT, 1);
	if (replay)
		bt_stat_add(bt_proc.stats, BT_STAT_REPLAYED, 1);
	if (seq > max_sent) {
		max_sent = seq;
		bt_stat_set(bt_proc.stats, BT_STAT_LAST_SEQ, seq);
	}
}

static void arm_retry(struct fan_sub *s)
{
	s->waiting = true;
	if (!event_pending(retry_ev, EV_TIMEOUT, NULL)) {
		struct timeval tv = { 0, RETRY_MS * 1000 };
		event_add(retry_ev, &tv);
	}
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	fan_db_catch_up(0);
	for (struct fan_sub *s = subs, *nx; s; s = nx) {
		nx = s->next;
		if (s->waiting) {
			s->waiting = false;
			pump(s);
		}
	}
}

/* First event seq retained in RocksDB; 0 if there is none. */
static int first_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	if (kn == 10)
		*(uint64_t *)arg = bt_be64_get((const uint8_t *)k + 2);
	return 1;
}

static uint64_t db_oldest(void)
{
	uint64_t oldest = 0;
	char from[10];
	bt_key_event(from, 0);
	bt_db_scan(fan.db, from, sizeof from, "e/", 2, first_cb, &oldest);
	return oldest;
}

/* Newest committed seq: the ring's newest and the database's newest (the store writes first). */
static uint64_t newest_seq(void)
{
	uint64_t newest = bt_bcast_last_seq(fan.ring);
	if (fan.db) {
		char k[16];
		int kn = bt_db_last(fan.db, "e/", 2, k, sizeof k);
		if (kn == 10) {
			uint64_t d = bt_be64_get((uint8_t *)k + 2);
			if (d > newest)
				newest = d;
		}
	}
	return newest;
}

struct scan_ctx {
	struct fan_sub *s;
	unsigned n;
	size_t bytes;
	bool gap_checked;
	int err;
};

static int scan_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct scan_ctx *c = arg;
	struct fan_sub *s = c->s;
	if (kn != 10)
		return 0;
	uint64_t seq = bt_be64_get((const uint8_t *)k + 2);
	if (seq <= s->after)
		return 0;
	if (seq > s->after + 1 && !c->gap_checked) {
		/* A hole before this event: retention (the consumer's position left the window) or
		   a takedown / a seq never committed (normal).  Only the first matters. */
		c->gap_checked = true;
		uint64_t oldest = db_oldest();
		if (oldest && s->after + 1 < oldest) {
			if (s->outdated_ok) {
				bt_buf_reset(&ctl_buf);
				if (bt_fh_encode_info(&ctl_buf, "OutdatedCursor",
						      "cursor is older than the replay window; starting from its oldest event") == 0 &&
				    bt_ws_send(s->ws, BT_WS_BINARY, ctl_buf.p, ctl_buf.len) < 0) {
					s->closing = true;
					c->err = -EPIPE;
					return 1;
				}
				s->outdated_ok = false;
			} else if (!s->quiet_window) {
				bt_stat_add(bt_proc.stats, BT_STAT_SLOW_KICKS, 1);
				BT_LOG_EVERY(BT_LOG_INFO, "consumer %s fell out of the replay window at seq %llu (oldest %llu)",
					     bt_ws_peer(s->ws), (unsigned long long)s->after, (unsigned long long)oldest);
				kick(s, "ConsumerTooSlow", "position fell out of the replay window", 1008);
				c->err = -ETIMEDOUT;
				return 1;
			}
		}
	}
	struct bt_ev_hdr h;
	if (vn < sizeof h) {
		BT_LOG_EVERY(BT_LOG_ERROR, "event %llu: short record (%zu bytes), skipped", (unsigned long long)seq, vn);
		return 0;
	}
	memcpy(&h, v, sizeof h);
	if ((size_t)h.did_len + h.frame_len > vn - sizeof h) {
		BT_LOG_EVERY(BT_LOG_ERROR, "event %llu: bad lengths, skipped", (unsigned long long)seq);
		return 0;
	}
	if (!h.frame_len || fan_td_hidden(v + sizeof h, h.did_len, seq)) {
		/* erased, or not erased yet, after its account's takedown (fanout_takedown.c) */
		skip(s, seq);
		return ++c->n >= DB_BATCH_EVENTS;
	}
	if (send_event(s, seq, v + sizeof h + h.did_len, h.frame_len, true) < 0) {
		c->err = -EPIPE;
		return 1;
	}
	c->n++;
	c->bytes += h.frame_len;
	if (c->n >= DB_BATCH_EVENTS || c->bytes >= DB_BATCH_BYTES || bt_ws_outq(s->ws) >= share())
		return 1;
	return 0;
}

/* One bounded batch of events after s->after from RocksDB: number sent, 0 if none, <0 closed. */
static int db_batch(struct fan_sub *s, bool fresh)
{
	if (fan_db_ensure() < 0)
		return 0;
	fan_db_catch_up(fresh ? 0 : CATCH_UP_MIN_MS);
	struct scan_ctx c = { .s = s };
	char from[10];
	bt_key_event(from, s->after + 1);
	int rc = bt_db_scan(fan.db, from, sizeof from, "e/", 2, scan_cb, &c);
	if (c.err < 0)
		return c.err;
	if (rc < 0)
		return 0;
	return (int)c.n;
}

static void pump_run(struct fan_sub *s, struct run *run)
{
	bool db_fresh = false, skip_seek = false;
	size_t sh = share();
	fan_td_refresh();
	fit_lowat(s, sh);
	while (!s->closing && !s->handing) {
		/* The run taken so far is queued too, at its flush: count it (a run of adjacent live
		   frames can be a whole chunk of the ring, far over a consumer's share). */
		if (bt_ws_outq(s->ws) + run->f.n >= sh) {
			if (sh < SUB_HIWAT)
				bt_stat_add(bt_proc.stats, BT_STAT_BUDGET_HELD, 1);
			break;
		}
		if (s->in_ring) {
			uint64_t seq, next;
			uint32_t type;
			size_t len;
			int rc = bt_bcast_peek(fan.ring, &s->pos, &seq, &type, &len, &next);
			const struct fan_frame *f = NULL;
			if (rc == 0 && type == BT_REC_EVENT && seq == s->after + 1) {
				rc = fan_frame_get(fan.ring, s->pos, seq, len, &f);
				if (rc == -ENOMEM) {
					BT_LOG_EVERY(BT_LOG_ERROR, "out of memory for a %zu-byte record", len);
					arm_retry(s); /* the position stays; try again later */
					return;
				}
			}
			if (rc == -EAGAIN)
				return; /* live: the bell resumes us */
			if (rc < 0) {
				/* Lapped (or a corrupt record): continue from the database at after+1. */
				if (rc == -EOVERFLOW) {
					bt_stat_add(bt_proc.stats, BT_STAT_OVERRUNS, 1);
				} else {
					/* The database moves us past the bad record before the ring is asked again. */
					BT_LOG_EVERY(BT_LOG_WARN, "broadcast ring read: %d", rc);
					skip_seek = true;
				}
				s->in_ring = false;
				continue;
			}
			s->pos = next;
			if (type != BT_REC_EVENT || seq <= s->after)
				continue;
			if (seq > s->after + 1) {
				/* A seq the ring lacks: the store commits before it publishes, so it is in
				   RocksDB (a store killed inside a publish, a record too big for the ring).
				   Never skip it: send from the database from after+1, then come back. */
				bt_stat_add(bt_proc.stats, BT_STAT_RING_GAPS, 1);
				BT_LOG_EVERY(BT_LOG_WARN, "broadcast ring lacks seq %llu..%llu: filling from RocksDB",
					     (unsigned long long)s->after + 1, (unsigned long long)seq - 1);
				s->in_ring = false;
				skip_seek = true;
				db_fresh = true; /* with a catch-up first: the event may be just written */
				continue;
			}
			if (fan_td_hidden_frame(f->p + f->hl, f->n - f->hl, seq)) {
				skip(s, seq);
				continue;
			}
			if (send_frame(s, run, seq, f) < 0)
				return;
			continue;
		}
		/* Whatever comes next (RocksDB copies) is queued behind the live frames taken so far. */
		if (run_flush(s, run) < 0)
			return;
		uint64_t pos;
		int rc = skip_seek ? -ENOENT : bt_bcast_seek(fan.ring, s->after, &pos);
		skip_seek = false;
		/* -EAGAIN: nothing in the ring after `after`.  After a restart of the whole relay the
		   ring starts empty while RocksDB holds every earlier event: go there first. */
		if (rc == -EAGAIN && s->after < newest_seq())
			rc = -ENOENT;
		if (rc == 0 || rc == -EAGAIN) {
			s->pos = pos;
			s->in_ring = true;
			continue;
		}
		rc = db_batch(s, db_fresh);
		if (rc < 0)
			return;
		if (rc == 0) {
			if (!db_fresh && fan.db) {
				db_fresh = true; /* once more with a forced catch-up */
				continue;
			}
			/* The database does not show the events the ring lost yet (or is not open). */
			arm_retry(s);
			return;
		}
	}
}

static void pump(struct fan_sub *s)
{
	assert(s->magic == SUB_MAGIC);
	struct run run = { 0 };
	pump_run(s, &run);
	run_flush(s, &run);
}

static void on_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
	/* Consumers have nothing to say on this stream; ignore it. */
}

static void on_drain(struct bt_ws *ws, void *arg)
{
	struct fan_sub *s = arg;
	if (s->close_pending)
		try_close(s);
	else if (!s->waiting)
		pump(s);
}

static void on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	struct fan_sub *s = arg;
	assert(s->magic == SUB_MAGIC);
	if (s->prev)
		s->prev->next = s->next;
	else
		subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	n_subs--;
	bt_stat_set(bt_proc.stats, BT_STAT_CONSUMERS, n_subs);
	fan_bell_update();
	bt_stat_add(bt_proc.stats, BT_STAT_DISCONNECTS, 1);
	BT_DEBUG("consumer %s closed (%d %s) at seq %llu", bt_ws_peer(ws), code, reason ? reason : "",
		 (unsigned long long)s->after);
	s->magic = 0;
	free(s);
}

static int parse_u64(const char *p, uint64_t *out)
{
	if (!*p || strlen(p) > 19)
		return -EINVAL;
	uint64_t v = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v > (UINT64_C(1) << 62))
		return -ERANGE;
	*out = v;
	return 0;
}

/* The connection settings of every consumer (a new one, or one handed over). */
static const struct bt_ws_cbs sub_cbs = { .on_msg = on_msg, .on_close = on_close, .on_drain = on_drain };

static struct bt_ws_opts sub_opts(void)
{
	return (struct bt_ws_opts){ .max_msg = 65536, .ping_interval_s = 30, .idle_timeout_s = 120,
				    .drain_lowat = SUB_LOWAT, .server_hdr = fan.server_hdr };
}

/* Puts a connected consumer on the list (counted; the bell watch follows). */
static void sub_link(struct fan_sub *s)
{
	s->next = subs;
	if (subs)
		subs->prev = s;
	subs = s;
	n_subs++;
	bt_stat_set(bt_proc.stats, BT_STAT_CONSUMERS, n_subs);
	fan_bell_update();
}

void fan_sub_start(struct bt_http_req *req)
{
	if (!retry_ev)
		retry_ev = evtimer_new(fan.base, on_retry, NULL);
	if (!linger_ev)
		linger_ev = evtimer_new(fan.base, on_linger, NULL);
	if (!retry_ev || !linger_ev) {
		fan_xrpc_error(req, 503, "InternalServerError", "out of memory");
		return;
	}
	if (fan.stopping) {
		fan_xrpc_error(req, 503, "ServiceUnavailable", "restarting");
		return;
	}
	char cbuf[32];
	uint64_t cursor = 0;
	bool has_cursor = false;
	int n = bt_http_req_param(req, "cursor", cbuf, sizeof cbuf);
	if (n >= 0 && n > 0) {
		if (parse_u64(cbuf, &cursor) < 0) {
			fan_xrpc_error(req, 400, "InvalidRequest", "cursor must be a non-negative integer");
			return;
		}
		has_cursor = true;
	} else if (n == -ENOSPC) {
		fan_xrpc_error(req, 400, "InvalidRequest", "cursor must be a non-negative integer");
		return;
	}
	bool future = false;
	if (has_cursor && cursor > 0) {
		fan_db_ensure();
		fan_db_catch_up(0);
		future = cursor > newest_seq();
	}
	char ip[64];
	snprintf(ip, sizeof ip, "%s", bt_http_req_peer(req));
	char *colon = strrchr(ip, ':');
	if (colon && colon != ip)
		*colon = 0; /* "ip:port" -> "ip" ("[v6]:port" -> "[v6]") */
	if (bt_cfg.max_conns_per_ip > 0) {
		int64_t same = 0;
		for (struct fan_sub *o = subs; o; o = o->next)
			if (!strcmp(o->ip, ip))
				same++;
		if (same >= bt_cfg.max_conns_per_ip) {
			bt_stat_add(bt_proc.stats, BT_STAT_IP_REFUSED, 1);
			BT_LOG_EVERY(BT_LOG_INFO, "consumer from %s refused: %lld connections (RELAY_MAX_CONNS_PER_IP)", ip,
				     (long long)same);
			fan_xrpc_error(req, 429, "RateLimitExceeded", "too many subscribeRepos connections from this address");
			return;
		}
	}
	struct fan_sub *s = calloc(1, sizeof *s);
	if (!s) {
		fan_xrpc_error(req, 503, "InternalServerError", "out of memory");
		return;
	}
	s->magic = SUB_MAGIC;
	memcpy(s->ip, ip, sizeof s->ip);
	const char *ua = bt_http_req_header(req, "User-Agent");
	snprintf(s->ua, sizeof s->ua, "%s", ua ? ua : "");
	s->cursor = cursor;
	s->has_cursor = has_cursor;
	s->since_ms = bt_wall_ms();
	s->moved_ms = bt_now_ms();
	s->lowat = SUB_LOWAT;
	struct bt_ws_opts o = sub_opts();
	s->ws = bt_http_upgrade(req, &sub_cbs, s, &o);
	if (!s->ws) {
		free(s);
		return;
	}
	sub_link(s);
	bt_stat_add(bt_proc.stats, BT_STAT_CONNECTS, 1);

	if (future) {
		kick(s, "FutureCursor", "cursor is ahead of the newest event", 1008);
		return;
	}
	if (!has_cursor) {
		/* Live from now: everything after the newest committed seq, which is the ring's once
		   it has had a record.  A ring that never had one (a restart of the whole relay) says
		   0 while RocksDB holds the past: ask RocksDB then, or the first ring record would look
		   like a gap to fill from the beginning.  So a live connect costs no catch-up of the
		   view in steady state. */
		s->after = bt_bcast_last_seq(fan.ring);
		if (s->after == 0 && fan_db_ensure() == 0) {
			fan_db_catch_up(0);
			s->after = newest_seq();
		}
		uint64_t pos;
		int rc = bt_bcast_seek(fan.ring, s->after, &pos);
		if (rc == 0 || rc == -EAGAIN) {
			s->pos = pos;
			s->in_ring = true;
		}
	} else {
		s->after = cursor;
		s->outdated_ok = cursor > 0;
		s->quiet_window = cursor == 0;
		/* The broadcast ring may still hold events the store has already dropped from the
		   window: start at the window, whichever of the two would serve the cursor. */
		uint64_t oldest = 0;
		if (fan_db_ensure() == 0) {
			fan_db_catch_up(0);
			oldest = db_oldest();
		}
		if (oldest && cursor + 1 < oldest) {
			if (cursor > 0) {
				bt_buf_reset(&ctl_buf);
				if (bt_fh_encode_info(&ctl_buf, "OutdatedCursor",
						      "cursor is older than the replay window; starting from its oldest event") == 0)
					bt_ws_send(s->ws, BT_WS_BINARY, ctl_buf.p, ctl_buf.len);
			}
			s->after = oldest - 1;
			s->outdated_ok = false;
		}
	}
	BT_DEBUG("consumer %s from %s%llu", bt_ws_peer(s->ws), has_cursor ? "cursor " : "live after ",
		 (unsigned long long)s->after);
	pump(s);
}

/* ---- hand-over (fanout_hand.c moves the sockets) ---- */

void fan_sub_hand_all(void)
{
	for (struct fan_sub *s = subs; s; s = s->next)
		s->handing = true;
}

unsigned fan_sub_hand_step(int (*send_one)(int fd, json_t *state, void *arg), void *arg)
{
	unsigned left = 0;
	for (struct fan_sub *s = subs, *nx; s; s = nx) {
		nx = s->next;
		if (s->closing || s->close_pending)
			continue; /* closing anyway (a kick): not handed */
		if (bt_ws_outq(s->ws)) {
			left++; /* its queued frames go out first, from here */
			continue;
		}
		json_t *st = json_pack("{s:I,s:s,s:s,s:I,s:b,s:I,s:s}", "after", (json_int_t)s->after, "ip", s->ip, "ua",
				       s->ua, "cursor", (json_int_t)s->cursor, "has_cursor", s->has_cursor, "since_ms",
				       (json_int_t)s->since_ms, "peer", bt_ws_peer(s->ws));
		uint64_t after = s->after;
		int fd = bt_ws_detach(s->ws); /* on success on_close ran: s is gone */
		if (fd == -EAGAIN) {
			json_decref(st);
			left++;
			continue;
		}
		if (fd < 0) {
			json_decref(st);
			continue;
		}
		if (send_one(fd, st, arg) == 0) {
			bt_stat_add(bt_proc.stats, BT_STAT_HANDED_OUT, 1);
		} else {
			/* The socket is open but nobody took it: the consumer sees the TCP connection end
			   and resumes from its cursor (no close frame could be sent: detached). */
			BT_LOG_EVERY(BT_LOG_WARN, "hand-over of a consumer at seq %llu failed: connection dropped",
				     (unsigned long long)after);
		}
		close(fd);
		json_decref(st);
	}
	return left;
}

int fan_sub_adopt(int fd, json_t *st)
{
	if (!retry_ev)
		retry_ev = evtimer_new(fan.base, on_retry, NULL);
	if (!linger_ev)
		linger_ev = evtimer_new(fan.base, on_linger, NULL);
	struct fan_sub *s = calloc(1, sizeof *s);
	struct bufferevent *bev = s ? bufferevent_socket_new(fan.base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
	if (!s || !bev || !retry_ev || !linger_ev) {
		free(s);
		if (bev)
			bufferevent_free(bev);
		else
			close(fd);
		return -ENOMEM;
	}
	s->magic = SUB_MAGIC;
	snprintf(s->ip, sizeof s->ip, "%s", json_string_value(json_object_get(st, "ip")) ?: "");
	snprintf(s->ua, sizeof s->ua, "%s", json_string_value(json_object_get(st, "ua")) ?: "");
	s->cursor = (uint64_t)json_integer_value(json_object_get(st, "cursor"));
	s->has_cursor = json_is_true(json_object_get(st, "has_cursor"));
	s->since_ms = (uint64_t)json_integer_value(json_object_get(st, "since_ms"));
	s->after = (uint64_t)json_integer_value(json_object_get(st, "after"));
	s->moved_ms = bt_now_ms();
	s->lowat = SUB_LOWAT;
	struct bt_ws_opts o = sub_opts();
	s->ws = bt_ws_server_new(fan.base, bev, json_string_value(json_object_get(st, "peer")), &sub_cbs, s, &o);
	if (!s->ws) {
		free(s);
		return -ENOMEM;
	}
	sub_link(s);
	bt_stat_add(bt_proc.stats, BT_STAT_HANDED_IN, 1);
	if (s->after > max_sent) /* its events up to after were sent by the other fanout */
		max_sent = s->after;
	uint64_t pos;
	int rc = bt_bcast_seek(fan.ring, s->after, &pos);
	if (rc == 0 || rc == -EAGAIN) {
		s->pos = pos;
		s->in_ring = true;
	}
	pump(s);
	return 0;
}

void fan_sub_on_bell(void)
{
	for (struct fan_sub *s = subs, *nx; s; s = nx) {
		nx = s->next;
		if (!s->waiting)
			pump(s);
	}
}

void fan_sub_close_all(int code, const char *reason)
{
	for (struct fan_sub *s = subs; s; s = s->next) {
		if (!s->closing || s->close_pending) {
			s->closing = true;
			s->close_pending = false;
			bt_ws_close(s->ws, code, reason);
		}
	}
}

unsigned fan_sub_count(void)
{
	return n_subs;
}

void fan_sub_watch(void)
{
	static uint64_t last;
	uint64_t now = bt_now_ms();
	if (now - last < 1000)
		return;
	last = now;
	uint64_t limit = (uint64_t)bt_cfg.consumer_read_timeout * 1000u, queued = 0;
	for (struct fan_sub *s = subs, *nx; s; s = nx) {
		nx = s->next;
		size_t q = bt_ws_outq(s->ws), held;
		queued += q;
		/* Progress is what the peer acknowledged, not what we wrote: a peer that stops reading
		   while the kernel's send buffer (up to tcp_wmem's 4 MiB) still takes our writes is
		   not moving either. */
		uint64_t acked = bt_ws_acked(s->ws, &held);
		if (held == 0 || acked != s->acked_seen) {
			s->acked_seen = acked;
			s->moved_ms = now;
			continue;
		}
		if (s->closing || now - s->moved_ms < limit)
			continue;
		/* Its queue has not moved for the whole deadline: it answers pings (or not), but it
		   does not read.  A graceful close, dropped by bt_ws after its close timeout. */
		bt_stat_add(bt_proc.stats, BT_STAT_READ_TIMEOUTS, 1);
		BT_LOG_EVERY(BT_LOG_INFO, "consumer %s closed: %zu bytes queued, none read for %llds", bt_ws_peer(s->ws), q,
			     (long long)bt_cfg.consumer_read_timeout);
		s->closing = true;
		s->close_pending = false;
		bt_ws_close(s->ws, 1008, "ConsumerTooSlow");
	}
	bt_stat_set(bt_proc.stats, BT_STAT_QUEUED_BYTES, queued);
}

json_t *fan_sub_table(size_t max)
{
	json_t *arr = json_array();
	uint64_t newest = bt_bcast_last_seq(fan.ring);
	size_t n = 0;
	for (struct fan_sub *s = subs; s && n < max; s = s->next, n++) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:i}", "address", bt_ws_peer(s->ws),
				      "ip", s->ip, "userAgent", s->ua, "seq", (json_int_t)s->after, "lag",
				      (json_int_t)(newest > s->after ? newest - s->after : 0), "bytesQueued",
				      (json_int_t)bt_ws_outq(s->ws), "connectedAtMs", (json_int_t)s->since_ms, "live",
				      s->in_ring, "fanout", bt_proc.index);
		if (!o)
			continue;
		json_object_set_new(o, "cursor", s->has_cursor ? json_integer((json_int_t)s->cursor) : json_null());
		char ts[32];
		time_t t = (time_t)(s->since_ms / 1000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_object_set_new(o, "connectedAt", json_string(ts));
		json_array_append_new(arr, o);
	}
	return arr;
}

void fan_sub_fini(void)
{
	if (retry_ev)
		event_free(retry_ev);
	retry_ev = NULL;
	if (linger_ev)
		event_free(linger_ev);
	linger_ev = NULL;
	fan_frame_fini();
	bt_buf_free(&ctl_buf);
}
