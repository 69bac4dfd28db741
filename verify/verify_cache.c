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
#include "bt_proc.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

static struct vfy_did **buckets;
static size_t n_buckets, n_entries, cap_entries;
static struct vfy_did lru; /* sentinel: lru.lru_next = most recent */
/* DIDs evicted since the RocksDB view last caught up, as a 2-bit-per-DID filter (a false
   positive costs one extra catch-up).  Only such a DID can come back with a state newer than
   the view's: an evicted DID had all its verdicts committed (vfy_did_busy), so a catch-up
   after its eviction sees its latest state. */
#define EVICTED_BITS (1u << 16)
static uint64_t evicted_since[EVICTED_BITS / 64];
static unsigned n_evicted_since;

static void evicted_mark(const char *did, size_t n)
{
	uint64_t h = vfy_did_hash(did, n);
	evicted_since[(h % EVICTED_BITS) / 64] |= 1ull << (h % 64);
	h >>= 32;
	evicted_since[(h % EVICTED_BITS) / 64] |= 1ull << (h % 64);
	n_evicted_since++;
}

static bool evicted_test(const char *did, size_t n)
{
	if (!n_evicted_since)
		return false;
	uint64_t h = vfy_did_hash(did, n), h2 = h >> 32;
	return (evicted_since[(h % EVICTED_BITS) / 64] >> (h % 64) & 1) &&
	       (evicted_since[(h2 % EVICTED_BITS) / 64] >> (h2 % 64) & 1);
}

static size_t did_bucket(const char *did, size_t n)
{
	return (size_t)(vfy_did_hash(did, n) & (n_buckets - 1));
}

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
	return d->wait_head != VFY_NONE || d->ist == VI_RESOLVING || d->checking || d->out_end > vfy_out_committed();
}

static void evict_one(void)
{
	for (struct vfy_did *d = lru.lru_prev; d != &lru; d = d->lru_prev) {
		if (vfy_did_busy(d))
			continue;
		struct vfy_did **pp = &buckets[did_bucket(d->did, d->did_len)];
		while (*pp != d)
			pp = &(*pp)->hnext;
		*pp = d->hnext;
		lru_unlink(d);
		evicted_mark(d->did, d->did_len);
		bt_identity_clear(&d->id);
		free(d);
		n_entries--;
		return;
	}
}

struct vfy_did *vfy_did_get(const char *did, size_t n, bool create)
{
	if (n == 0 || n >= BT_DID_MAX)
		return NULL;
	size_t b = did_bucket(did, n);
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

void vfy_did_wait(struct vfy_did *d, uint64_t job)
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
	/* A DID evicted since the view last caught up may have had its last verdicts committed
	   after that: catch up first (never throttled: a stale view would accept a re-sent
	   commit twice, or a deactivated account).  A DID not evicted since is current in the
	   view: this process alone decides it. */
	bool stale = evicted_test(d->did, d->did_len);
	if (stale && bt_db_catch_up_gen(db, bt_proc_store_gen()) >= 0) {
		memset(evicted_since, 0, sizeof evicted_since);
		n_evicted_since = 0;
		stale = false;
	}
	/* The persisted identity, unless one is known already.  Not while the view may be behind
	   for this DID (its #identity may have deleted the record since): then resolve. */
	if (!stale)
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
