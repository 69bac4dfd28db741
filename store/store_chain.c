/*
 * NAME
 *	store_chain - exactly-once bookkeeping of upstream frames, per host
 * DESCRIPTION
 *	Ingest stamps every frame with its upstream seq (useq) and the useq of the previous frame
 *	it read from the same host (prev; for the first frame of a connection, the cursor it
 *	asked for).  Verify gives every frame exactly one verdict, but verdicts of one host come
 *	back out of order, because the host's DIDs are spread over K verify processes and a frame
 *	may wait for a DID resolution.  Here the verdicts are chained back into upstream order:
 *
 *	  cursor    every frame with useq <= cursor has a committed verdict.  This is what ingest
 *	            asks the upstream for after a restart.
 *	  pending   prev -> useq of verdicts above the cursor.  When a verdict with prev <= cursor
 *	            arrives the cursor moves to it, then follows pending links as far as they go.
 *	  done      the same verdicts keyed by useq, so a re-delivered frame (after an ingest or
 *	            verify restart) is recognised and dropped as a duplicate.
 *
 *	Epochs.  When the upstream's sequence restarts (FutureCursor, a PDS whose sequencer began
 *	again at 1) ingest gives the host a new epoch (+1) and stamps it on every frame; the first
 *	frame of the new epoch carries the reset flag.  Useqs of two epochs are unrelated numbers,
 *	so every epoch has its own chain (cursor, pending, done), kept here as the host's ch[]:
 *	  - the current epoch (the highest whose reset is decided) gives ingest its resume cursor
 *	    (rec.cursor) and is never evicted;
 *	  - verdicts of an older epoch still in flight are real events: they are committed exactly
 *	    once against their own chain, which drains as they arrive (its pending links resolve;
 *	    what is left is one c/ key);
 *	  - verdicts of a newer epoch that overtake its reset frame wait in that epoch's chain,
 *	    not started, until the reset frame arrives and starts it at its useq;
 *	  - a reset verdict of an epoch already started is not a new reset: after a store kill
 *	    between its write and its ring release it is a plain duplicate (useq <= cursor).
 *	At most STO_CHAINS chains per host; making room evicts the lowest epoch other than the
 *	current one, whose later verdicts are reported STO_STALE (counted, never committed).
 *	Epochs are allocated by the store (sto_host_alloc_epoch, persisted before ingest connects
 *	with it), so two connections never share one: an ingest restarted after an upstream reset
 *	gets a new epoch even if the previous one's reset frame is still in flight, and that
 *	frame's chain starts whenever it arrives, even after the newer epoch's.
 *
 *	A duplicate whose prev is at or below the cursor proves everything up to it decided, so it
 *	moves the cursor (a chain frozen by a lost link heals when the upstream resends).  Links
 *	the cursor jumped over become "loose" entries (key LOOSE|useq), which only keep their
 *	frame's done mark until the cursor passes it.
 *
 *	Every change (c/ keys, p/ keys, the host record) is written in the same RocksDB batch as
 *	the events it accounts for, so a kill -9 of the store at any moment leaves the chains
 *	consistent with the event log.  Bounded: pending holds at most the frames in flight in
 *	the rings and verify's waiting queues (bounded by the ring sizes), over STO_CHAINS epochs.
 *	docs/chain.md has the rules and the tests that show them (tests/unit/test_chain.c).
 * DIAGNOSTICS
 *	None.
 */
#include "store.h"
#include "bt_log.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LOOSE (1ull << 63) /* pending key of a done mark without a link (upstream seqs are < 2^63) */

struct sto_host *sto_host_get(struct sto_hosts *hs, uint32_t id)
{
	return id < hs->n ? hs->v[id] : NULL;
}

struct sto_host *sto_host_find(struct sto_hosts *hs, const char *name, size_t n)
{
	for (uint32_t i = 1; i < hs->n; i++) {
		struct sto_host *h = hs->v[i];
		if (h && h->rec.host_len == n && memcmp(h->rec.host, name, n) == 0)
			return h;
	}
	return NULL;
}

uint32_t sto_host_epoch(const struct sto_host *h)
{
	return h->epoch;
}

uint32_t sto_host_alloc_epoch(struct sto_host *h, struct bt_db_batch *b)
{
	uint32_t e = h->rec.alloc_epoch > h->epoch ? h->rec.alloc_epoch : h->epoch;
	h->rec.alloc_epoch = e + 1;
	sto_host_flush(h, b);
	return e + 1;
}

size_t sto_host_pending(const struct sto_host *h)
{
	size_t n = 0;
	for (int i = 0; i < STO_CHAINS; i++)
		if (h->ch[i].used)
			n += h->ch[i].pending.n + h->ch[i].done.n;
	return n;
}

/* The lowest epoch with a chain (every host has at least its current one). */
static uint32_t lowest_epoch(const struct sto_host *h)
{
	uint32_t lo = h->epoch;
	for (int i = 0; i < STO_CHAINS; i++)
		if (h->ch[i].used && h->ch[i].epoch < lo)
			lo = h->ch[i].epoch;
	return lo;
}

static struct sto_chain *chain_of(struct sto_host *h, uint32_t epoch)
{
	for (int i = 0; i < STO_CHAINS; i++)
		if (h->ch[i].used && h->ch[i].epoch == epoch)
			return &h->ch[i];
	return NULL;
}

static void chain_init(struct sto_chain *c, uint32_t epoch, bool started, uint64_t cursor)
{
	bt_u64map_clear(&c->pending);
	bt_u64map_clear(&c->done);
	c->used = true;
	c->started = started;
	c->dirty = true;
	c->sweep = false;
	c->epoch = epoch;
	c->cursor = cursor;
}

/* A fresh chain for epoch; evicts the lowest epoch other than the current one if all are used. */
static struct sto_chain *chain_new(struct sto_host *h, uint32_t epoch, struct bt_db_batch *b)
{
	struct sto_chain *c = NULL;
	for (int i = 0; i < STO_CHAINS && !c; i++)
		if (!h->ch[i].used)
			c = &h->ch[i];
	for (int i = 0; i < STO_CHAINS && !c; i++) {
		struct sto_chain *o = &h->ch[i];
		if (o->epoch != h->epoch && (!c || o->epoch < c->epoch))
			c = o;
	}
	for (int i = 0; !c && i < STO_CHAINS; i++) /* unreachable while STO_CHAINS > 1 */
		c = &h->ch[i];
	if (c->used) {
		char k[18];
		if (c->pending.n)
			BT_WARN("host %u: evicting chain epoch %u with %zu links pending", h->rec.host_id, c->epoch,
				c->pending.n);
		for (size_t i = 0; i < c->pending.cap; i++)
			if (c->pending.keys[i] != UINT64_MAX)
				bt_db_batch_del(b, k, bt_key_pending(k, h->rec.host_id, c->epoch, c->pending.keys[i]));
		bt_db_batch_del(b, k, bt_key_chain(k, h->rec.host_id, c->epoch));
	}
	chain_init(c, epoch, false, 0);
	return c;
}

static void put_link(struct sto_host *h, struct sto_chain *c, uint64_t prev, uint64_t useq, struct bt_db_batch *b)
{
	char k[18];
	uint8_t v[8];
	uint64_t old;
	if (bt_u64map_get(&c->pending, prev, &old) && old != useq && !(prev & LOOSE)) {
		/* Two frames after the same prev (two connections of one epoch): keep the other's mark. */
		put_link(h, c, LOOSE | old, old, b);
		c->sweep = true;
	}
	bt_be64_put(v, useq);
	bt_u64map_put(&c->pending, prev, useq);
	bt_u64map_put(&c->done, useq, 1);
	bt_db_batch_put(b, k, bt_key_pending(k, h->rec.host_id, c->epoch, prev), v, 8);
}

static void del_link(struct sto_host *h, struct sto_chain *c, uint64_t prev, struct bt_db_batch *b)
{
	char k[18];
	bt_u64map_del(&c->pending, prev);
	bt_db_batch_del(b, k, bt_key_pending(k, h->rec.host_id, c->epoch, prev));
}

/* After the cursor jumped: drop links it can never follow (key below it) and marks at or below
   it; a jumped-over frame above the cursor keeps its mark as a loose entry. */
static void sweep(struct sto_host *h, struct sto_chain *c, struct bt_db_batch *b)
{
	static uint64_t *ks; /* scratch, grown as needed: no malloc per sweep */
	static size_t ks_cap;
	size_t n = 0, need = (c->pending.n + 1) * 2;
	if (need > ks_cap) {
		uint64_t *nk = realloc(ks, need * 2 * sizeof *nk);
		if (!nk)
			return; /* retried at the next advance */
		ks = nk;
		ks_cap = need * 2;
	}
	for (size_t i = 0; i < c->pending.cap; i++)
		if (c->pending.keys[i] != UINT64_MAX) {
			ks[2 * n] = c->pending.keys[i];
			ks[2 * n + 1] = c->pending.vals[i];
			n++;
		}
	bool loose_left = false;
	for (size_t i = 0; i < n; i++) {
		uint64_t key = ks[2 * i], u = ks[2 * i + 1];
		if (!(key & LOOSE) && key >= c->cursor)
			continue; /* a live link */
		if (u <= c->cursor) {
			del_link(h, c, key, b);
			bt_u64map_del(&c->done, u);
		} else if (!(key & LOOSE)) {
			del_link(h, c, key, b);
			put_link(h, c, LOOSE | u, u, b);
			loose_left = true;
		} else {
			loose_left = true;
		}
	}
	c->sweep = loose_left;
}

/* Every frame up to useq is decided: move the cursor there and along the pending links. */
static void advance(struct sto_host *h, struct sto_chain *c, uint64_t useq, struct bt_db_batch *b)
{
	c->cursor = useq;
	uint64_t next;
	while (bt_u64map_get(&c->pending, c->cursor, &next)) {
		del_link(h, c, c->cursor, b);
		bt_u64map_del(&c->done, next);
		if (next > c->cursor)
			c->cursor = next;
	}
	if (c->sweep)
		sweep(h, c, b);
	c->dirty = true;
	if (c->epoch == h->epoch) {
		h->rec.cursor = c->cursor;
		h->dirty = true;
	}
}

static bool seen(const struct sto_chain *c, uint64_t useq)
{
	return (c->started && useq <= c->cursor) || bt_u64map_get(&c->done, useq, NULL);
}

static int chain_take(struct sto_host *h, uint32_t epoch, uint64_t useq, uint64_t prev, bool reset, struct bt_db_batch *b)
{
	if (useq & LOOSE)
		return STO_STALE; /* not an upstream seq (they are non-negative int64) */
	struct sto_chain *c = chain_of(h, epoch);
	if (!c) {
		/* Eviction takes the lowest epoch, so one below every chain kept was evicted: its
		   verdicts were decided or given up long ago.  One between kept chains (or above) is
		   an epoch whose reset frame is still in flight, perhaps behind a newer epoch's (an
		   ingest restarted right after an upstream reset): its chain starts now. */
		if (epoch < lowest_epoch(h))
			return STO_STALE;
		c = chain_new(h, epoch, b);
	}
	if (reset) {
		if (c->started) {
			if (seen(c, useq))
				return STO_DUP; /* the reset was applied: a re-read, not a new reset */
			/* A second connection's first frame in the same epoch (ingest restarted before
			   the first reset was decided): its prev is of the old sequence, so no link. */
			put_link(h, c, LOOSE | useq, useq, b);
			c->sweep = true;
			return STO_NEW;
		}
		c->started = true;
		c->sweep = c->pending.n > 0;
		if (epoch > h->epoch)
			h->epoch = epoch;
		bt_u64map_del(&c->done, useq);
		advance(h, c, useq, b);
		return STO_NEW;
	}
	if (seen(c, useq)) {
		if (c->started && prev <= c->cursor && useq > c->cursor) {
			c->sweep = true;
			advance(h, c, useq, b);
		}
		return STO_DUP;
	}
	if (c->started && prev <= c->cursor)
		advance(h, c, useq, b);
	else
		put_link(h, c, prev, useq, b);
	return STO_NEW;
}

int sto_chain_take(struct sto_host *h, uint32_t epoch, uint64_t useq, uint64_t prev, bool reset,
		   struct bt_db_batch *b)
{
	int r = chain_take(h, epoch, useq, prev, reset, b);
	for (int i = 0; i < STO_CHAINS; i++)
		if (h->ch[i].dirty)
			h->dirty = true; /* flush_accounts writes the c/ keys with the host record */
	return r;
}

static struct sto_host *put_host(struct sto_hosts *hs, const struct bt_host_rec *rec)
{
	uint32_t id = rec->host_id;
	if (id >= hs->cap) {
		uint32_t ncap = hs->cap ? hs->cap : 64;
		while (ncap <= id)
			ncap *= 2;
		struct sto_host **nv = realloc(hs->v, ncap * sizeof *nv);
		if (!nv)
			return NULL;
		memset(nv + hs->cap, 0, (ncap - hs->cap) * sizeof *nv);
		hs->v = nv;
		hs->cap = ncap;
	}
	struct sto_host *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	h->rec = *rec;
	/* A v1 store kept one chain: epoch 0, its cursor in the host record. */
	chain_init(&h->ch[0], 0, true, rec->cursor);
	hs->v[id] = h;
	if (id >= hs->n)
		hs->n = id + 1;
	if (id > hs->last_id)
		hs->last_id = id;
	return h;
}

static int load_host(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct bt_host_rec rec;
	if (vn != sizeof rec)
		return 0;
	memcpy(&rec, v, sizeof rec);
	if (!put_host(arg, &rec))
		return -ENOMEM;
	return 0;
}

struct load_ctx {
	struct sto_hosts *hs;
	struct bt_db_batch *migrate; /* v1 p/ keys rewritten with their epoch */
	uint32_t last_host;          /* host whose c/ keys are being read (its implicit chain dropped) */
};

static int load_chain(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct load_ctx *lc = arg;
	if (kn != 10 || vn != 16)
		return 0;
	uint32_t id = bt_be32_get((const uint8_t *)k + 2), epoch = bt_be32_get((const uint8_t *)k + 6);
	struct sto_host *h = sto_host_get(lc->hs, id);
	if (!h)
		return 0;
	if (lc->last_host != id) {
		lc->last_host = id;
		for (int i = 0; i < STO_CHAINS; i++)
			h->ch[i].used = false;
		h->epoch = 0;
	}
	struct sto_chain *c = NULL;
	for (int i = 0; i < STO_CHAINS && !c; i++)
		if (!h->ch[i].used)
			c = &h->ch[i];
	if (!c)
		return 0; /* more than STO_CHAINS c/ keys: never written so */
	bool started = bt_be32_get((const uint8_t *)v + 8) & 1;
	chain_init(c, epoch, started, bt_be64_get((const uint8_t *)v));
	c->dirty = false;
	if (started && epoch >= h->epoch) {
		h->epoch = epoch;
		h->rec.cursor = c->cursor;
	}
	return 0;
}

static int load_pending(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct load_ctx *lc = arg;
	if ((kn != 14 && kn != 18) || vn != 8)
		return 0;
	struct sto_host *h = sto_host_get(lc->hs, bt_be32_get((const uint8_t *)k + 2));
	if (!h)
		return 0;
	uint32_t epoch = kn == 18 ? bt_be32_get((const uint8_t *)k + 6) : 0;
	uint64_t prev = bt_be64_get((const uint8_t *)k + kn - 8), useq = bt_be64_get((const uint8_t *)v);
	struct sto_chain *c = chain_of(h, epoch);
	if (!c)
		return 0;
	bt_u64map_put(&c->pending, prev, useq);
	bt_u64map_put(&c->done, useq, 1);
	if (prev & LOOSE)
		c->sweep = true;
	if (kn == 14) {
		char nk[18];
		bt_db_batch_put(lc->migrate, nk, bt_key_pending(nk, h->rec.host_id, 0, prev), v, 8);
		bt_db_batch_del(lc->migrate, k, kn);
		c->dirty = true; /* and write its c/ key */
	}
	return 0;
}

int sto_hosts_load(struct sto_hosts *hs, struct bt_db *db)
{
	memset(hs, 0, sizeof *hs);
	hs->n = 1; /* id 0 is never used */
	struct load_ctx lc = { .hs = hs, .migrate = bt_db_batch_new() };
	int rc = bt_db_scan(db, "h/", 2, "h/", 2, load_host, hs);
	if (rc == 0)
		rc = bt_db_scan(db, "c/", 2, "c/", 2, load_chain, &lc);
	if (rc == 0)
		rc = bt_db_scan(db, "p/", 2, "p/", 2, load_pending, &lc);
	if (rc == 0 && bt_db_batch_count(lc.migrate)) {
		for (uint32_t i = 1; i < hs->n; i++)
			if (hs->v[i])
				sto_host_flush(hs->v[i], lc.migrate);
		rc = bt_db_write(db, lc.migrate);
	}
	bt_db_batch_free(&lc.migrate);
	char buf[4];
	if (bt_db_get(db, "m/hostid", 8, buf, 4) == 4 && bt_be32_get((uint8_t *)buf) > hs->last_id)
		hs->last_id = bt_be32_get((uint8_t *)buf);
	return rc;
}

void sto_hosts_free(struct sto_hosts *hs)
{
	for (uint32_t i = 0; i < hs->n; i++) {
		struct sto_host *h = hs->v[i];
		if (!h)
			continue;
		for (int j = 0; j < STO_CHAINS; j++) {
			bt_u64map_free(&h->ch[j].pending);
			bt_u64map_free(&h->ch[j].done);
		}
		free(h);
	}
	free(hs->v);
	memset(hs, 0, sizeof *hs);
}

struct sto_host *sto_host_add(struct sto_hosts *hs, const char *name, size_t n, struct bt_db_batch *b)
{
	struct bt_host_rec rec;
	if (n >= sizeof rec.host)
		return NULL;
	memset(&rec, 0, sizeof rec);
	rec.version = 1;
	rec.host_id = hs->last_id + 1;
	rec.status = BT_HOST_ACTIVE;
	rec.created_ms = bt_wall_ms();
	rec.host_len = (uint16_t)n;
	memcpy(rec.host, name, n);
	struct sto_host *h = put_host(hs, &rec);
	if (!h)
		return NULL;
	uint8_t idb[4];
	bt_be32_put(idb, rec.host_id);
	bt_db_batch_put(b, "m/hostid", 8, idb, 4);
	char k[BT_HOST_MAX + 4];
	size_t kn = bt_key_hostname(k, sizeof k, name, n);
	bt_db_batch_put(b, k, kn, idb, 4);
	sto_host_flush(h, b);
	return h;
}

void sto_host_set_start(struct sto_host *h, uint64_t cursor, struct bt_db_batch *b)
{
	/* A new host has one chain, epoch 0, started at its creation (put_host). */
	struct sto_chain *c = chain_of(h, 0);
	if (!c || h->rec.n_events || h->epoch)
		return;
	c->cursor = cursor;
	c->dirty = true;
	h->rec.cursor = cursor;
	sto_host_flush(h, b);
}

void sto_host_flush(struct sto_host *h, struct bt_db_batch *b)
{
	char k[10];
	for (int i = 0; i < STO_CHAINS; i++) {
		struct sto_chain *c = &h->ch[i];
		if (!c->used || !c->dirty)
			continue;
		uint8_t v[16];
		bt_be64_put(v, c->cursor);
		bt_be32_put(v + 8, c->started ? 1u : 0u);
		bt_be32_put(v + 12, 0);
		bt_db_batch_put(b, k, bt_key_chain(k, h->rec.host_id, c->epoch), v, sizeof v);
		c->dirty = false;
	}
	bt_key_host(k, h->rec.host_id);
	bt_db_batch_put(b, k, 6, &h->rec, sizeof h->rec);
	h->dirty = false;
}
