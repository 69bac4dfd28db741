/*
 * NAME
 *	verify_cache - per-DID state of one verify process, bounded, LRU-evicted
 * DESCRIPTION
 *	A chained hash table of struct vfy_did with an LRU list.  At the bound
 *	(RELAY_IDENTITY_CACHE_SIZE) the least recently used entry that has no waiting jobs and no
 *	resolution in flight is evicted; its chain state is reloaded from RocksDB (read-only
 *	secondary) when the DID comes back.  Single-threaded (the verify event loop).
 */
#include "bt_db.h"
#include "bt_log.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

static struct vfy_did **buckets;
static size_t n_buckets, n_entries, cap_entries;
static struct vfy_did lru; /* sentinel: lru.lru_next = most recent */
static bool evicted;       /* an entry was evicted since the view last caught up */
static uint64_t caught_up_ms;

void vfy_cache_init(size_t cap)
{
	cap_entries = cap;
	n_buckets = 1;
	while (n_buckets < cap)
		n_buckets <<= 1;
	buckets = calloc(n_buckets, sizeof *buckets);
	if (!buckets)
		abort();
	lru.lru_next = lru.lru_prev = &lru;
}

static void lru_unlink(struct vfy_did *d)
{
	d->lru_prev->lru_next = d->lru_next;
	d->lru_next->lru_prev = d->lru_prev;
}

static void lru_front(struct vfy_did *d)
{
	d->lru_next = lru.lru_next;
	d->lru_prev = &lru;
	lru.lru_next->lru_prev = d;
	lru.lru_next = d;
}

bool vfy_did_busy(const struct vfy_did *d)
{
	return d->wait_head != VFY_NONE || d->ist == VI_RESOLVING || d->checking;
}

static void evict_one(void)
{
	for (struct vfy_did *d = lru.lru_prev; d != &lru; d = d->lru_prev) {
		if (vfy_did_busy(d))
			continue;
		struct vfy_did **pp = &buckets[bt_hash_did(d->did, d->did_len) & (n_buckets - 1)];
		while (*pp != d)
			pp = &(*pp)->hnext;
		*pp = d->hnext;
		lru_unlink(d);
		bt_identity_clear(&d->id);
		free(d);
		n_entries--;
		evicted = true;
		return;
	}
}

struct vfy_did *vfy_did_get(const char *did, size_t n, bool create)
{
	if (n == 0 || n >= BT_DID_MAX)
		return NULL;
	size_t b = bt_hash_did(did, n) & (n_buckets - 1);
	for (struct vfy_did *d = buckets[b]; d; d = d->hnext)
		if (d->did_len == n && !memcmp(d->did, did, n)) {
			lru_unlink(d);
			lru_front(d);
			return d;
		}
	if (!create)
		return NULL;
	if (n_entries >= cap_entries)
		evict_one();
	if (n_entries >= cap_entries)
		return NULL;
	struct vfy_did *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	memcpy(d->did, did, n);
	d->did_len = (uint16_t)n;
	d->wait_head = d->wait_tail = VFY_NONE;
	d->active = true;
	d->hnext = buckets[b];
	buckets[b] = d;
	lru_front(d);
	n_entries++;
	return d;
}

void vfy_did_wait(struct vfy_did *d, uint32_t job)
{
	vfy_job(job)->next = VFY_NONE;
	if (d->wait_head == VFY_NONE)
		d->wait_head = job;
	else
		vfy_job(d->wait_tail)->next = job;
	d->wait_tail = job;
}

void vfy_acct_load(struct vfy_did *d, struct bt_db *db)
{
	if (d->acct_loaded)
		return;
	d->acct_loaded = true;
	if (!db)
		return;
	/* Once entries have been evicted, a DID may come back whose latest state the store
	   committed after our view last caught up: catch up first, at most every 2 s.  So an
	   evicted DID is checked against state at most 2 s old; being the least recently used,
	   an evicted DID has normally not been seen for far longer than that. */
	if (evicted && bt_now_ms() - caught_up_ms > 2000) {
		bt_db_catch_up(db);
		caught_up_ms = bt_now_ms();
		evicted = false;
	}
	/* The persisted identity, unless one is known already.  Not while evictions may have left
	   the view behind (an evicted DID's #identity may have deleted it since): then resolve. */
	if (!evicted)
		vfy_ident_load(d, db);
	char k[BT_DID_MAX + 2];
	struct bt_acct_rec a;
	size_t kn = bt_key_acct(k, sizeof k, d->did, d->did_len);
	if (bt_db_get(db, k, kn, &a, sizeof a) != (int)sizeof a)
		return;
	if (a.rev_len <= BT_REV_MAX) {
		memcpy(d->rev, a.rev, a.rev_len);
		d->rev[a.rev_len] = 0;
	}
	if (a.data_len && bt_cid_parse(a.data_cid, a.data_len, &d->data) < 0)
		d->data.len = 0;
	d->active = a.flags & BT_ACCT_ACTIVE;
	if (a.status_len <= BT_STATUS_MAX) {
		memcpy(d->status, a.status, a.status_len);
		d->status[a.status_len] = 0;
	}
}
