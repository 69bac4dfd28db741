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
 *	cursor and pending are written in the same RocksDB batch as the events they account for,
 *	so a kill -9 of the store at any moment leaves them consistent with the event log.
 *	Bounded: pending holds at most the frames in flight in the rings and verify's waiting
 *	queues, which are bounded by the ring sizes.
 * DIAGNOSTICS
 *	None.
 */
#include "store.h"
#include "bt_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

static int load_pending(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct sto_hosts *hs = arg;
	if (kn != 14 || vn != 8)
		return 0;
	struct sto_host *h = sto_host_get(hs, bt_be32_get((const uint8_t *)k + 2));
	if (!h)
		return 0;
	uint64_t prev = bt_be64_get((const uint8_t *)k + 6), useq = bt_be64_get((const uint8_t *)v);
	bt_u64map_put(&h->pending, prev, useq);
	bt_u64map_put(&h->done, useq, 1);
	return 0;
}

int sto_hosts_load(struct sto_hosts *hs, struct bt_db *db)
{
	memset(hs, 0, sizeof *hs);
	hs->n = 1; /* id 0 is never used */
	int rc = bt_db_scan(db, "h/", 2, "h/", 2, load_host, hs);
	if (rc == 0)
		rc = bt_db_scan(db, "p/", 2, "p/", 2, load_pending, hs);
	char buf[4];
	if (bt_db_get(db, "m/hostid", 8, buf, 4) == 4 && bt_be32_get((uint8_t *)buf) > hs->last_id)
		hs->last_id = bt_be32_get((uint8_t *)buf);
	return rc;
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

void sto_host_flush(struct sto_host *h, struct bt_db_batch *b)
{
	char k[6];
	bt_key_host(k, h->rec.host_id);
	bt_db_batch_put(b, k, sizeof k, &h->rec, sizeof h->rec);
	h->dirty = false;
}

bool sto_chain_seen(struct sto_host *h, uint64_t useq, bool reset)
{
	if (reset)
		return false;
	return useq <= h->rec.cursor || bt_u64map_get(&h->done, useq, NULL);
}

static void del_pending(struct sto_host *h, uint64_t prev, uint64_t useq, struct bt_db_batch *b)
{
	char k[14];
	bt_u64map_del(&h->pending, prev);
	bt_u64map_del(&h->done, useq);
	bt_db_batch_del(b, k, bt_key_pending(k, h->rec.host_id, prev));
}

void sto_chain_done(struct sto_host *h, uint64_t useq, uint64_t prev, bool reset, struct bt_db_batch *b)
{
	char k[14];
	if (reset) {
		/* The upstream's sequence restarted: forget the old chain. */
		for (size_t i = 0; i < h->pending.cap; i++)
			if (h->pending.keys[i] != UINT64_MAX)
				bt_db_batch_del(b, k, bt_key_pending(k, h->rec.host_id, h->pending.keys[i]));
		bt_u64map_clear(&h->pending);
		bt_u64map_clear(&h->done);
		h->rec.cursor = useq;
		h->dirty = true;
		return;
	}
	if (prev <= h->rec.cursor) {
		h->rec.cursor = useq;
		uint64_t next;
		while (bt_u64map_get(&h->pending, h->rec.cursor, &next)) {
			del_pending(h, h->rec.cursor, next, b);
			h->rec.cursor = next;
		}
		h->dirty = true;
		return;
	}
	uint8_t v[8];
	bt_be64_put(v, useq);
	bt_u64map_put(&h->pending, prev, useq);
	bt_u64map_put(&h->done, useq, 1);
	bt_db_batch_put(b, k, bt_key_pending(k, h->rec.host_id, prev), v, 8);
}
