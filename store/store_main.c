/*
 * NAME
 *	baton-store - sequences, persists and publishes verdicts
 * DESCRIPTION
 *	The only RocksDB writer.  Its loop reads verdicts from the K verify->store rings, and
 *	for up to RELAY_COMMIT_BATCH of them builds ONE write batch holding, for each accepted
 *	frame, its event under a fresh relay seq and the account's new state (kept in memory,
 *	store_acct.c, written through); for every verdict, accepted or dropped, the host's
 *	resume chain (store_chain.c, only the hosts the batch touched); and the last seq.
 *	Group commit: writes start at most once per RELAY_COMMIT_WINDOW_US (each pays a WAL
 *	sync); a small batch waits out the rest of the window for more verdicts (turn()).
 *	Only after that batch is written (synced if RELAY_SYNC_WRITES) are the events published
 *	to the broadcast ring and the input records released.  Hence:
 *	  - killed before the write: nothing happened; the verdicts are read again;
 *	  - killed after the write, before or inside the publish: at start the events the
 *	    broadcast ring lacks, after the last record actually below its head, are published
 *	    again from RocksDB (republish_tail, bt_bcast_recover);
 *	  - killed after the publish, before the release: the verdicts are read again and
 *	    recognised as duplicates by the host chain.
 *	Relay seq is never reused: it is persisted in the batch that uses it.  Every verdict is
 *	chained (store_chain.c, per host and epoch) before it is decided, so a drop of any kind,
 *	including the store's own (a failed splice, a malformed record), moves the host's cursor.
 *	docs/chain.md has the rules and their tests; RELAY_FAULT_STORE_EXIT injects the kills.
 *
 *	Control (ZeroMQ, docs/ctl.md): hosts, addHost, hostStatus, and the admission state of
 *	store_admin.c; used by ingest, which owns upstream connections but may not write RocksDB;
 *	changeLimits (store_limits.c: per-host account limits, whose throttled accounts get
 *	relay-made #account events in the batch); takeDown and reverseTakedown (store_takedown.c,
 *	which also erases taken-down accounts' events from RocksDB between turns).
 * DIAGNOSTICS
 *	A RocksDB write failure is retried with backoff and reported by /_health (no progress);
 *	the verdicts stay in their rings meanwhile.
 */
#include "bt_ctl.h"
#include "bt_db.h"
#include "bt_fh.h"
#include "bt_lock.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 10000

static struct bt_db *db;
static struct sto_hosts hosts;
static struct bt_db_batch *batch;
static uint64_t last_seq;
static struct bt_ring *bcast;

/* One accepted event of the batch being built, waiting for its publish. */
struct pend_ev {
	uint64_t seq;
	size_t off, len; /* frame bytes in evbuf */
	uint64_t recv_ms; /* ingest's wall clock (EMIT_COMMIT_MS) */
};
static struct pend_ev evs[2 * MAX_BATCH]; /* a verdict may add a relay-made #account */
static size_t n_evs;
static bool reset_in_batch; /* the batch being built applied a chain reset */

/* RELAY_FAULT_STORE_EXIT (fault injection for tests, never in production): _exit(9) at a chosen
   point, so a test can show what a kill -9 there does.  Each point names a relay seq or an
   event that never repeats once committed, so the restarted store does not die again. */
static struct {
	uint64_t after_write_seq;   /* after the write of the batch that commits this seq */
	uint64_t after_publish_seq; /* after this seq's publish, before the ring release */
	bool after_reset_write;     /* after the write of a batch that applies a chain reset */
	uint64_t splice_fail_useq;  /* the accepted verdict of this upstream seq (epoch 0) fails its splice */
	bool before_write_drop;     /* before the write of the first batch holding a drop (once: a marker file) */
} fault;

static void fault_exit(const char *what)
{
	BT_WARN("RELAY_FAULT_STORE_EXIT: exiting at %s", what);
	_exit(9);
}

static void fault_after_write(void)
{
	bool hit = (fault.after_write_seq && last_seq >= fault.after_write_seq &&
		    last_seq - n_evs < fault.after_write_seq) ||
		   (fault.after_reset_write && reset_in_batch);
	reset_in_batch = false;
	if (hit)
		fault_exit("after_write");
}

static bool fault_splice_fail(const struct bt_rec_verdict *v)
{
	return fault.splice_fail_useq && v->useq == fault.splice_fail_useq && v->epoch == 0;
}

static void fault_parse(void)
{
	char list[sizeof bt_cfg.fault_store_exit], *save = NULL;
	snprintf(list, sizeof list, "%s", bt_cfg.fault_store_exit);
	const char *f = bt_cfg.fault_store_exit;
	if (!*f)
		return;
	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		unsigned long long n = 0;
		if (sscanf(t, "after_write_seq:%llu", &n) == 1)
			fault.after_write_seq = n;
		else if (sscanf(t, "after_publish_seq:%llu", &n) == 1)
			fault.after_publish_seq = n;
		else if (sscanf(t, "in_publish_seq:%llu", &n) == 1)
			bt_bcast_fault_exit_seq = n;
		else if (!strcmp(t, "after_reset_write"))
			fault.after_reset_write = true;
		else if (!strcmp(t, "before_write_drop"))
			fault.before_write_drop = true;
		else if (sscanf(t, "splice_fail_useq:%llu", &n) == 1)
			fault.splice_fail_useq = n;
		else
			bt_die_config("RELAY_FAULT_STORE_EXIT: unknown point %s", t);
	}
	BT_WARN("RELAY_FAULT_STORE_EXIT=%s: fault injection for tests", f);
}
static struct bt_buf evbuf; /* the batch's event values, reused: no malloc per frame */

/* Hosts touched by the current batch (each verdict touches at most one): only these are
   flushed, not every host the relay knows. */
static struct sto_host *touched_hosts[MAX_BATCH];
static size_t n_touched_hosts;

static void host_touched(struct sto_host *h)
{
	if (h && h->dirty && !h->listed && n_touched_hosts < MAX_BATCH) {
		h->listed = true;
		touched_hosts[n_touched_hosts++] = h;
	}
}

/* The relay's own account status for a DID whose identity it could not resolve in time
   (verify's identity_timeout): inactive until its next verified #commit or #sync. */
#define DESYNC "desynchronized"

static void apply_account(const struct bt_rec_verdict *v, uint64_t seq)
{
	struct bt_acct_rec *a = sto_acct_get(db, v->did, v->did_len);
	a->host_id = v->host_id;
	a->last_seq = seq;
	a->updated_ms = bt_wall_ms();
	if (v->ev == BT_EV_COMMIT || v->ev == BT_EV_SYNC) {
		if (a->status_len == sizeof DESYNC - 1 && !memcmp(a->status, DESYNC, sizeof DESYNC - 1)) {
			/* A verified commit of an account desynchronized by the relay: in sync again. */
			a->flags |= BT_ACCT_ACTIVE;
			a->status_len = 0;
		}
		a->rev_len = v->rev_len;
		memcpy(a->rev, v->rev, v->rev_len);
		a->data_len = v->data_len;
		memcpy(a->data_cid, v->data_cid, v->data_len);
		a->head_len = v->commit_len;
		memcpy(a->head_cid, v->commit_cid, v->commit_len);
	} else if (v->ev == BT_EV_ACCOUNT) {
		a->flags = (v->flags & BT_V_ACTIVE) ? (a->flags | BT_ACCT_ACTIVE) : (a->flags & ~BT_ACCT_ACTIVE);
		a->status_len = (v->flags & BT_V_HAS_STATUS) ? v->status_len : 0;
		memcpy(a->status, v->status, a->status_len);
	}
}

/* The store's drop counters are exact across kill -9: a batch's drops are counted on the side
   and written in the batch itself (m/drops, with the segment they belong to), and reach the
   stats page only once the write succeeded.  A store killed before the write re-reads the same
   verdicts and counts them again, once; one killed after it reloads the totals from RocksDB. */
struct drop_tally {
	uint64_t segment; /* bt_shm_created_ns of the relay run these counts belong to */
	uint64_t dropped, duplicates;
	uint64_t drops[BT_DROP__COUNT];
};
static struct drop_tally pend_drops; /* this batch's, not yet written */

static void count_drop(enum bt_drop why)
{
	pend_drops.dropped++;
	pend_drops.drops[why < BT_DROP__COUNT ? why : BT_DROP_MALFORMED]++;
}

/* The totals after this batch, as written with it. */
static void tally_put(void)
{
	struct bt_stats_page *st = bt_proc.stats;
	if (!pend_drops.dropped && !pend_drops.duplicates)
		return; /* the totals written last still hold (or, of another run, load as zero) */
	struct drop_tally t = { .segment = bt_shm_created_ns(bt_proc.shm) };
	t.dropped = bt_stat_get(st, BT_STAT_DROPPED) + pend_drops.dropped;
	t.duplicates = bt_stat_get(st, BT_STAT_DUPLICATES) + pend_drops.duplicates;
	for (int i = 0; i < BT_DROP__COUNT; i++)
		t.drops[i] = atomic_load_explicit(&st->drops[i], memory_order_relaxed) + pend_drops.drops[i];
	bt_db_batch_put(batch, "m/drops", 7, &t, sizeof t);
}

static void tally_written(void)
{
	struct bt_stats_page *st = bt_proc.stats;
	bt_stat_add(st, BT_STAT_DROPPED, pend_drops.dropped);
	bt_stat_add(st, BT_STAT_DUPLICATES, pend_drops.duplicates);
	for (int i = 0; i < BT_DROP__COUNT; i++)
		atomic_fetch_add_explicit(&st->drops[i], pend_drops.drops[i], memory_order_relaxed);
	memset(&pend_drops, 0, sizeof pend_drops);
}

/* At start: this relay run's totals as last written (a restarted store), else zero. */
static void tally_load(void)
{
	struct bt_stats_page *st = bt_proc.stats;
	struct drop_tally t;
	if (bt_db_get(db, "m/drops", 7, &t, sizeof t) != (int)sizeof t || t.segment != bt_shm_created_ns(bt_proc.shm))
		return;
	bt_stat_set(st, BT_STAT_DROPPED, t.dropped);
	bt_stat_set(st, BT_STAT_DUPLICATES, t.duplicates);
	for (int i = 0; i < BT_DROP__COUNT; i++)
		atomic_store_explicit(&st->drops[i], t.drops[i], memory_order_relaxed);
}

/* Chains one verdict (store_chain.c): true if it is new and must be decided now. */
static bool chain_verdict(const struct bt_rec_verdict *v)
{
	struct bt_stats_page *st = bt_proc.stats;
	struct sto_host *h = sto_host_get(&hosts, v->host_id);
	if (!h) {
		BT_LOG_EVERY(BT_LOG_WARN, "verdict for unknown host id %u", v->host_id);
		return true;
	}
	uint32_t was = sto_host_epoch(h);
	int r = sto_chain_take(h, v->epoch, v->useq, v->prev_useq, v->flags & BT_V_CHAIN_RESET, batch);
	host_touched(h);
	switch (r) {
	case STO_DUP:
		pend_drops.duplicates++;
		pend_drops.drops[BT_DROP_DUPLICATE]++;
		return false;
	case STO_STALE:
		BT_LOG_EVERY(BT_LOG_WARN, "%.*s: verdict of stale epoch %u (current %u), useq %llu: dropped",
			     (int)h->rec.host_len, h->rec.host, v->epoch, was, (unsigned long long)v->useq);
		count_drop(BT_DROP_STALE_EPOCH);
		return false;
	default:
		if (sto_host_epoch(h) != was) {
			BT_INFO("%.*s: chain reset to epoch %u at useq %llu", (int)h->rec.host_len, h->rec.host,
				sto_host_epoch(h), (unsigned long long)v->useq);
			bt_stat_add(st, BT_STAT_CHAIN_RESETS, 1);
			reset_in_batch = true;
		}
		return true;
	}
}

/* Puts one event (seq spliced in at seq_off) into the batch under the next relay seq, for the
   publish after the write: the seq, or 0 if the splice failed (nothing added). */
uint64_t sto_commit_frame(const char *did, size_t dn, uint8_t ev, const uint8_t *frame, size_t n, size_t seq_off,
			  bool fail)
{
	if (n_evs >= sizeof evs / sizeof evs[0])
		return 0; /* cannot happen: at most two events per verdict (store_limits.c) */
	uint64_t seq = last_seq + 1;
	/* value = bt_ev_hdr + did + frame with the seq spliced in, built in place in evbuf,
	   which also keeps the frame for the publish after the write (one copy in all). */
	size_t start = evbuf.len;
	struct bt_ev_hdr eh = { .time_ms = bt_wall_ms(), .did_len = (uint16_t)dn, .ev = ev };
	bt_buf_append(&evbuf, &eh, sizeof eh);
	bt_buf_append(&evbuf, did, dn);
	size_t at = evbuf.len;
	if (fail || bt_fh_splice_seq(frame, n, seq_off, seq, &evbuf) < 0) {
		evbuf.len = start;
		return 0;
	}
	last_seq = seq;
	uint32_t flen = (uint32_t)(evbuf.len - at); /* evbuf + start need not be aligned: memcpy */
	memcpy(evbuf.p + start + offsetof(struct bt_ev_hdr, frame_len), &flen, sizeof flen);
	char k[10];
	bt_db_batch_put(batch, k, bt_key_event(k, seq), evbuf.p + start, evbuf.len - start);
	evs[n_evs].seq = seq;
	evs[n_evs].off = at;
	evs[n_evs].len = evbuf.len - at;
	evs[n_evs].recv_ms = 0; /* relay-made: no upstream emit time (take_verdict sets it) */
	n_evs++;
	return seq;
}

/* Decide one verdict into the batch.  Every verdict is chained first, so whatever happens to
   it below (committed, dropped, a splice that fails) its host's cursor moves past it. */
static void take_verdict(const struct bt_rec_verdict *v, const uint8_t *frame)
{
	struct bt_stats_page *st = bt_proc.stats;
	bt_stat_add(st, BT_STAT_FRAMES_IN, 1);
	if (!chain_verdict(v))
		return;
	struct sto_host *h = sto_host_get(&hosts, v->host_id);
	bool accepted = v->reason == BT_DROP_NONE && v->ev != BT_EV_NONE;
	enum bt_drop lim = !accepted		   ? BT_DROP_NONE
			   : sto_td_verdict(v) ? BT_DROP_TAKENDOWN /* store_takedown.c */
					       : sto_limits_verdict(v, batch);
	if (lim != BT_DROP_NONE) {
		count_drop(lim); /* taken down, or over its host's account limit (store_limits.c) */
	} else if (accepted) {
		uint64_t seq = sto_commit_frame(v->did, v->did_len, v->ev, frame, v->frame_len, v->seq_off, fault_splice_fail(v));
		if (!seq) {
			BT_LOG_EVERY(BT_LOG_ERROR, "splice failed for %.*s (useq %llu): dropped", (int)v->did_len, v->did,
				     (unsigned long long)v->useq);
			count_drop(BT_DROP_MALFORMED);
			return;
		}
		evs[n_evs - 1].recv_ms = v->recv_ms; /* emit->commit histogram */
		apply_account(v, seq);
		/* the collection index (store_coll.c), from the frame as committed (seq spliced in) */
		sto_coll_verdict(v, evbuf.p + evs[n_evs - 1].off, evs[n_evs - 1].len, seq, batch);
		if (v->ev == BT_EV_IDENTITY)
			sto_ident_purge(v->did, v->did_len, batch); /* the persisted identity ends here */
		if (h) {
			h->rec.last_ms = bt_wall_ms();
			h->rec.n_events++;
			h->dirty = true;
			host_touched(h);
		}
		bt_stat_add(st, BT_STAT_COMMITTED, 1);
	} else {
		count_drop(v->reason < BT_DROP__COUNT ? (enum bt_drop)v->reason : BT_DROP_MALFORMED);
		if (v->reason == BT_DROP_IDENTITY_TIMEOUT && v->did_len) {
			/* getRepoStatus shows it (and a restarted verify asks the PDS before trusting it). */
			struct bt_acct_rec *a = sto_acct_get(db, v->did, v->did_len);
			a->flags &= ~BT_ACCT_ACTIVE;
			a->status_len = sizeof DESYNC - 1;
			memcpy(a->status, DESYNC, sizeof DESYNC - 1);
			a->updated_ms = bt_wall_ms();
		}
	}
}

static void flush_accounts(void)
{
	sto_accts_flush(batch);
	sto_limits_flush(batch);
	sto_coll_flush(batch);
	for (size_t i = 0; i < n_touched_hosts; i++) {
		struct sto_host *h = touched_hosts[i];
		h->listed = false;
		if (h->dirty)
			sto_host_flush(h, batch);
	}
	n_touched_hosts = 0;
}

/* Write the batch, retrying until RocksDB takes it (a failure here must not lose verdicts). */
static void write_batch(void)
{
	uint8_t sb[8];
	bt_be64_put(sb, last_seq);
	bt_db_batch_put(batch, "m/seq", 5, sb, 8);
	tally_put();
	if (fault.before_write_drop && pend_drops.dropped) {
		/* The same verdicts come again after the restart: a marker in the data dir makes it once. */
		char m[PATH_MAX];
		snprintf(m, sizeof m, "%s/fault-before-write-drop.done", bt_cfg.data_dir);
		int fd = open(m, O_CREAT | O_EXCL | O_WRONLY, 0600);
		if (fd >= 0) {
			close(fd);
			fault_exit("before_write_drop");
		}
		fault.before_write_drop = false;
	}
	int delay = 10;
	while (bt_db_write(db, batch) < 0) {
		if (bt_proc_stop)
			bt_proc_exit(1);
		bt_proc_beat();
		usleep((useconds_t)delay * 1000);
		delay = delay < 2000 ? delay * 2 : 2000;
	}
	bt_db_batch_clear(batch);
	tally_written();
	bt_stat_add(bt_proc.stats, BT_STAT_BATCHES, 1);
	bt_stat_set(bt_proc.stats, BT_STAT_LAST_SEQ, last_seq);
}

/* Puts one committed event on the broadcast ring, without waking the fanouts (the caller rings
   once after its last record).  One too big for it is counted and left to
   the fanouts, which fill any seq missing on the ring from RocksDB (fanout_sub.c). */
static void publish_one(uint64_t seq, const void *p, size_t n)
{
	int rc = bt_bcast_publish_quiet(bcast, seq, BT_REC_EVENT, p, n);
	if (fault.after_publish_seq && seq == fault.after_publish_seq)
		fault_exit("after_publish_seq"); /* also in a republish: seq is on the ring, it fires once */
	if (rc == 0) {
		bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_OUT, 1);
		return;
	}
	if (rc == -EMSGSIZE)
		bt_stat_add(bt_proc.stats, BT_STAT_EMSGSIZE, 1);
	BT_LOG_EVERY(BT_LOG_ERROR, "broadcast publish of seq %llu (%zu bytes): %d; fanouts read it from RocksDB",
		     (unsigned long long)seq, n, rc);
}

static void publish(void)
{
	if (n_evs) {
		/* written: the latency histogram and the commit log the fanouts time their sends by */
		uint64_t ms = bt_wall_ms();
		for (size_t i = 0; i < n_evs; i++)
			if (evs[i].recv_ms) /* 0: relay-made */
				bt_hist_observe(bt_proc.stats, BT_HIST_EMIT_COMMIT_MS,
						ms > evs[i].recv_ms ? ms - evs[i].recv_ms : 0);
		bt_commit_log_push(bt_proc.stats, evs[n_evs - 1].seq, ms);
	}
	for (size_t i = 0; i < n_evs; i++)
		publish_one(evs[i].seq, evbuf.p + evs[i].off, evs[i].len);
	if (n_evs)
		bt_ring_wake(bcast); /* one wake of the fanouts per batch */
	n_evs = 0;
	bt_buf_reset(&evbuf);
}

/* Between turns (a control op): writes what was put into the batch and publishes its events. */
struct bt_db_batch *sto_batch(void)
{
	return batch;
}

void sto_write_now(void)
{
	flush_accounts();
	write_batch();
	publish();
}

/* Reads verdicts into the batch, round robin over the K rings, until limit or all are empty. */
static size_t gather(int K, uint64_t pos[], size_t got, size_t limit)
{
	bool more = true;
	/* One verdict per ring per pass, so no verify partition starves. */
	while (more && got < limit) {
		more = false;
		for (int k = 0; k < K && got < limit; k++) {
			struct bt_ring *r = bt_shm_ring(bt_proc.shm, bt_pipe_ring_out(K, k));
			uint32_t type;
			const void *p;
			size_t len;
			if (bt_ring_read(r, &pos[k], &type, &p, &len) < 0)
				continue;
			more = true;
			got++;
			if (type == BT_REC_IDENTITY) {
				sto_ident_take(p, len, batch);
				continue;
			}
			const struct bt_rec_verdict *v = p;
			if (type != BT_REC_VERDICT || len < sizeof *v || len - sizeof *v < v->frame_len ||
			    v->did_len > BT_DID_MAX || v->rev_len > BT_REV_MAX || v->status_len > BT_STATUS_MAX ||
			    v->data_len > 64 || v->commit_len > 64) {
				BT_LOG_EVERY(BT_LOG_ERROR, "malformed record in verdict ring %d (type %u len %zu)", k,
					     type, len);
				bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_IN, 1);
				/* Its header still names the frame: chain it (a counted drop), so the host's
				   cursor does not freeze on it.  Without a header there is nothing to chain. */
				if (type == BT_REC_VERDICT && len >= sizeof *v && chain_verdict(v))
					count_drop(BT_DROP_MALFORMED);
				else if (type != BT_REC_VERDICT || len < sizeof *v)
					count_drop(BT_DROP_MALFORMED);
				continue;
			}
			take_verdict(v, (const uint8_t *)(v + 1));
		}
	}
	return got;
}

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t last_write_us; /* CLOCK_MONOTONIC start of the last batch write */

/* One turn: read up to commit_batch verdicts over all rings, commit, publish, release.
   Group commit: each write pays a WAL sync (RELAY_SYNC_WRITES), so writes start at most once
   per RELAY_COMMIT_WINDOW_US.  A batch that is not full when the previous write started less
   than that ago sleeps out the rest (one sleep, not a wait per bell ring) and reads again;
   an event thus waits at most one window, and after a quiet spell the first is written at
   once.  The verdicts stay unreleased in their rings all the while (the crash contract is
   the same as for a batch read in one pass). */
static size_t turn(void)
{
	int K = bt_proc.K;
	uint64_t pos[BT_MAX_VERIFY];
	size_t limit = (size_t)bt_cfg.commit_batch;
	for (int k = 0; k < K; k++)
		pos[k] = bt_ring_tail(bt_shm_ring(bt_proc.shm, bt_pipe_ring_out(K, k)));
	size_t got = gather(K, pos, 0, limit);
	if (!got)
		return 0;
	uint64_t now = mono_us(), due = last_write_us + (uint64_t)bt_cfg.commit_window_us;
	if (got < limit && now < due) {
		struct timespec ts = { .tv_nsec = (long)(due - now) * 1000 };
		nanosleep(&ts, NULL);
		got = gather(K, pos, got, limit);
		now = mono_us();
	}
	last_write_us = now;
	flush_accounts();
	write_batch();
	fault_after_write();
	publish();
	for (int k = 0; k < K; k++)
		bt_ring_release(bt_shm_ring(bt_proc.shm, bt_pipe_ring_out(K, k)), pos[k]);
	bt_proc_progress(got);
	return got;
}

/* Events committed but not yet on the broadcast ring (a kill between write and publish, or
   inside a publish): from the last record actually below the ring's head, never from its
   last_seq word, which a kill between its store and the head's names a record no reader
   will ever see (docs/chain.md, "republish").  A ring that never had a record is a new
   segment: every stage started afresh, and consumers replay from RocksDB. */
static void republish_tail(void)
{
	uint64_t ring_last;
	int rc = bt_bcast_recover(bcast, &ring_last);
	if (rc == -ENOENT || ring_last >= last_seq)
		return;
	if (rc < 0) {
		BT_WARN("broadcast ring does not scan (%d): fanouts fill from RocksDB", rc);
		return;
	}
	BT_INFO("republishing events %llu..%llu", (unsigned long long)ring_last + 1, (unsigned long long)last_seq);
	for (uint64_t s = ring_last + 1; s <= last_seq; s++) {
		char k[10], *v;
		size_t vn;
		if (bt_db_get_alloc(db, k, bt_key_event(k, s), &v, &vn) < 0)
			continue;
		struct bt_ev_hdr eh;
		if (vn >= sizeof eh) {
			memcpy(&eh, v, sizeof eh);
			size_t at = sizeof eh + eh.did_len;
			if (eh.frame_len && at + eh.frame_len <= vn) { /* 0: erased (store_takedown.c) */
				publish_one(s, v + at, eh.frame_len);
				bt_stat_add(bt_proc.stats, BT_STAT_REPUBLISHED, 1);
			}
		}
		bt_db_free_value(v);
	}
	bt_ring_wake(bcast);
}

/* Drop events older than the replay window, a bounded step at a time. */
struct ret_scan {
	uint64_t cutoff_ms, first_kept;
	unsigned n;
};

static int ret_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct ret_scan *rs = arg;
	struct bt_ev_hdr eh;
	if (kn != 10 || vn < sizeof eh)
		return 0;
	memcpy(&eh, v, sizeof eh);
	rs->first_kept = bt_be64_get((const uint8_t *)k + 2);
	if (eh.time_ms >= rs->cutoff_ms || ++rs->n >= 100000)
		return 1;
	return 0;
}

static void retention(void)
{
	struct ret_scan rs = { .cutoff_ms = bt_wall_ms() - (uint64_t)bt_cfg.replay_window * 1000u };
	char from[10];
	bt_key_event(from, 0);
	bt_db_scan(db, from, 10, "e/", 2, ret_cb, &rs);
	if (rs.first_kept > 1 && rs.n > 0) {
		char to[10];
		bt_key_event(to, rs.first_kept);
		struct bt_db_batch *b = bt_db_batch_new();
		bt_db_batch_del_range(b, from, 10, to, 10);
		if (bt_db_write(db, b) == 0)
			BT_INFO("retention: dropped %u events before seq %llu", rs.n, (unsigned long long)rs.first_kept);
		bt_db_batch_free(&b);
	}
}

static json_t *host_json(const struct sto_host *h)
{
	uint32_t alloc = h->rec.alloc_epoch > sto_host_epoch(h) ? h->rec.alloc_epoch : sto_host_epoch(h);
	json_t *o = json_pack("{s:i,s:s#,s:I,s:s,s:I,s:I,s:I}", "id", (int)h->rec.host_id, "host", h->rec.host,
			      (int)h->rec.host_len, "cursor", (json_int_t)h->rec.cursor, "status",
			      bt_host_status_name(h->rec.status), "events", (json_int_t)h->rec.n_events, "epoch",
			      (json_int_t)sto_host_epoch(h), "alloc_epoch", (json_int_t)alloc);
	sto_limits_json(h, o);
	return o;
}

static void on_ctl(void *arg, struct bt_ctl_req *req, json_t *msg)
{
	const char *op = json_string_value(json_object_get(msg, "op"));
	if (op && sto_admin_ctl(db, &hosts, req, op, msg))
		return; /* store_admin.c: bans, the crawl switch, the per-day limit */
	if (op && sto_td_ctl(req, op, msg))
		return; /* store_takedown.c: takeDown, reverseTakedown */
	if (op && !strcmp(op, "changeLimits")) {
		sto_limits_change(req, msg);
		return;
	}
	if (op && !strcmp(op, "hosts")) {
		json_t *arr = json_array();
		for (uint32_t i = 1; i < hosts.n; i++)
			if (hosts.v[i])
				json_array_append_new(arr, host_json(hosts.v[i]));
		bt_ctl_reply(req, json_pack("{s:o,s:I}", "hosts", arr, "last_seq", (json_int_t)last_seq));
		return;
	}
	if (op && !strcmp(op, "allocEpoch")) {
		/* Ingest saw the upstream's sequence restart: a new chain epoch, written before the
		   reply, so an ingest restarted before any frame of it is decided never reuses it. */
		struct sto_host *h = sto_host_get(&hosts, (uint32_t)json_integer_value(json_object_get(msg, "id")));
		if (!h) {
			bt_ctl_reply(req, json_pack("{s:s}", "error", "HostNotFound"));
			return;
		}
		struct bt_db_batch *b = bt_db_batch_new();
		uint32_t e = sto_host_alloc_epoch(h, b);
		int rc = bt_db_write(db, b);
		bt_db_batch_free(&b);
		bt_ctl_reply(req, rc == 0 ? json_pack("{s:I}", "epoch", (json_int_t)e)
					  : json_pack("{s:s}", "error", "StoreFailed"));
		return;
	}
	if (op && !strcmp(op, "addHost")) {
		const char *name = json_string_value(json_object_get(msg, "hostname"));
		if (!name || !*name || strlen(name) >= BT_HOST_MAX) {
			bt_ctl_reply(req, json_pack("{s:s}", "error", "BadHostname"));
			return;
		}
		struct sto_host *h = sto_host_find(&hosts, name, strlen(name));
		bool existed = h != NULL;
		if (!h) {
			json_t *refusal;
			int counted = sto_admin_new_host(db, msg, &refusal); /* the per-day limit */
			if (counted < 0) {
				bt_ctl_reply(req, refusal);
				return;
			}
			struct bt_db_batch *b = bt_db_batch_new();
			h = sto_host_add(&hosts, name, strlen(name), b);
			if (h)
				sto_admin_host_added(db, h, msg, counted, b); /* cursorHint, today's count */
			if (!h || bt_db_write(db, b) < 0) {
				bt_db_batch_free(&b);
				bt_ctl_reply(req, json_pack("{s:s}", "error", "StoreFailed"));
				return;
			}
			bt_db_batch_free(&b);
			BT_INFO("host %s added as id %u", name, h->rec.host_id);
		} else if (h->rec.status == BT_HOST_OFFLINE || h->rec.status == BT_HOST_IDLE) {
			h->rec.status = BT_HOST_ACTIVE;
			struct bt_db_batch *b = bt_db_batch_new();
			sto_host_flush(h, b);
			bt_db_write(db, b);
			bt_db_batch_free(&b);
		}
		json_t *r = host_json(h);
		json_object_set_new(r, "existed", json_boolean(existed));
		json_object_set_new(r, "new_today", json_integer((json_int_t)sto_admin_new_today(db)));
		bt_ctl_reply(req, r);
		return;
	}
	if (op && !strcmp(op, "hostStatus")) {
		/* One change {id, status} or a batch {updates: [{id, status}, ...]}, in one write. */
		json_t *ups = json_object_get(msg, "updates"), *one = NULL;
		if (!ups)
			ups = one = json_pack("[O]", msg);
		struct bt_db_batch *b = bt_db_batch_new();
		size_t i, done = 0;
		json_t *u;
		json_array_foreach(ups, i, u)
		{
			struct sto_host *h = sto_host_get(&hosts, (uint32_t)json_integer_value(json_object_get(u, "id")));
			const char *st = json_string_value(json_object_get(u, "status"));
			int code = -1;
			for (uint32_t c = 0; st && c < 5; c++)
				if (!strcmp(st, bt_host_status_name(c)))
					code = (int)c;
			if (!h || code < 0)
				continue;
			h->rec.status = (uint32_t)code;
			sto_host_flush(h, b);
			done++;
		}
		json_decref(one);
		int rc = done ? bt_db_write(db, b) : 0;
		bt_db_batch_free(&b);
		bt_ctl_reply(req, rc == 0 && done ? json_pack("{s:b,s:i}", "ok", 1, "updated", (int)done)
						   : json_pack("{s:s}", "error", rc < 0 ? "StoreFailed" : "BadRequest"));
		return;
	}
	bt_ctl_reply(req, json_pack("{s:s}", "error", "UnknownOp"));
}

int main(int argc, char **argv)
{
	bt_proc_init(BT_ROLE_STORE, argc, argv, "baton-store: the single RocksDB writer (started by baton)");
	char path[PATH_MAX], holder[PATH_MAX + 600], me[32];
	/* The single writer: a second store on this directory (another relay, or a previous store
	   of ours still exiting after its supervisor died) makes this one wait, then exit 2. */
	snprintf(path, sizeof path, "%s/store.lock", bt_cfg.data_dir);
	snprintf(me, sizeof me, "pid=%d", (int)getpid());
	int lock = bt_lock_file_wait(path, me, (unsigned)bt_cfg.attach_wait * 1000u, bt_proc_beat, holder, sizeof holder);
	if (lock == -EAGAIN)
		bt_die_config("RELAY_DATA_DIR %s is in use by another baton-store (%s, holding %s)", bt_cfg.data_dir,
			      holder[0] ? holder : "pid unknown", path);
	if (lock < 0)
		bt_die_config("cannot lock %s: %s", path, strerror(-lock));
	snprintf(path, sizeof path, "%s/db", bt_cfg.data_dir);
	if (bt_db_open_primary(path, bt_cfg.sync_writes, &db) < 0)
		bt_die_config("cannot open RocksDB at %s", path);
	char sb[8];
	if (bt_db_get(db, "m/seq", 5, sb, 8) == 8)
		last_seq = bt_be64_get((uint8_t *)sb);
	tally_load();
	if (sto_hosts_load(&hosts, db) < 0)
		bt_die_config("cannot load hosts from %s", path);
	if (sto_accts_init((size_t)bt_cfg.store_account_cache, (size_t)bt_cfg.commit_batch) < 0)
		bt_die_config("cannot allocate %lld account states (RELAY_STORE_ACCOUNT_CACHE)",
			      (long long)bt_cfg.store_account_cache);
	sto_limits_init(db, &hosts);
	sto_td_init(db);
	if (sto_coll_init(db, &hosts, true) < 0)
		bt_die_config("cannot start the collection recount thread");
	batch = bt_db_batch_new();
	bcast = bt_shm_ring(bt_proc.shm, bt_pipe_ring_bcast(bt_proc.K));
	fault_parse();
	uint64_t in_publish = bt_bcast_fault_exit_seq;
	bt_bcast_fault_exit_seq = 0; /* a republished seq must not trip in_publish_seq again */
	republish_tail();
	bt_bcast_fault_exit_seq = in_publish;
	bt_stat_set(bt_proc.stats, BT_STAT_LAST_SEQ, last_seq);
	bt_stat_set(bt_proc.stats, BT_STAT_HOSTS, hosts.n - 1);
	bt_stat_add(bt_proc.stats, BT_STAT_DB_OPENS, 1); /* read views reopen (bt_db_catch_up_gen) */
	BT_INFO("store open at %s: last seq %llu, %u hosts", path, (unsigned long long)last_seq, hosts.n - 1);

	char ep[PATH_MAX];
	bt_params_ipc("store", ep, sizeof ep);
	struct bt_ctl_srv *ctl = bt_ctl_srv_new(NULL, ep, on_ctl, NULL);
	if (!ctl)
		bt_die_config("cannot bind %s", ep);

	struct bt_bell *bell = bt_shm_bell(bt_proc.shm, bt_pipe_bell_store());
	/* Retention runs every window/4, between 1 s and 60 s. */
	uint64_t ret_every = (uint64_t)bt_cfg.replay_window * 250u;
	ret_every = ret_every < 1000 ? 1000 : ret_every > 60000 ? 60000 : ret_every;
	uint64_t next_retention = bt_now_ms() + (ret_every < 10000 ? ret_every : 10000), next_erase = 0;
	while (!bt_proc_stop) {
		bt_proc_beat();
		uint32_t seen = bt_bell_value(bell);
		size_t n = turn();
		sto_coll_tick(); /* recounts of the collection index (store_coll.c) */
		bt_ctl_srv_poll(ctl);
		/* Erasing taken-down accounts' events: a bounded step between turns, at most every 10 ms. */
		if (bt_now_ms() >= next_erase && sto_td_step())
			next_erase = bt_now_ms() + 10;
		if (bt_now_ms() > next_retention) {
			retention();
			next_retention = bt_now_ms() + ret_every;
		}
		if (n == 0)
			bt_bell_wait(bell, seen, 20);
	}
	bt_ctl_srv_free(&ctl);
	sto_coll_fini();
	bt_db_batch_free(&batch);
	sto_accts_free();
	bt_db_close(&db);
	bt_proc_exit(0);
}
