/*
 * NAME
 *	store_acct - the store's account states in memory (DID -> struct bt_acct_rec)
 * DESCRIPTION
 *	Every accepted event rewrites its account's "a/" key in the batch that commits it, so the
 *	store needs the account's current state once per verdict.  Reading it from RocksDB per
 *	batch (and scanning the batch's accounts linearly) cost a point lookup per event at low
 *	rates and O(batch^2) compares at high ones; here the states live in a bounded table:
 *
 *	  - a lookup is O(1) (open addressing on a hash of the DID, the DID compared in full);
 *	  - a miss loads the state from RocksDB once (or a fresh one if the DID is new);
 *	  - a state changed by the current batch is on its "touched" list, and sto_accts_flush()
 *	    writes exactly those into the batch (write-through: RocksDB always holds what the
 *	    table holds once the batch is written; the store is the only writer of "a/" keys);
 *	  - when the table is full a CLOCK hand evicts a state not touched by the current batch
 *	    and not used since the hand last passed.  Capacity >= RELAY_COMMIT_BATCH + 1, so a
 *	    batch (at most one account per verdict) always finds one.
 *	A kill -9 loses only this cache: the batch that changed a state either was written (and
 *	RocksDB has it) or was not (and its verdicts are read again against RocksDB's state).
 *	The store retries a failed write until it succeeds, so a state changed in memory is never
 *	abandoned while the process lives.  Memory: cap slots of about 550 bytes, allocated once.
 * DIAGNOSTICS
 *	sto_accts_init() returns -ENOMEM.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct acct_slot {
	uint64_t hash;      /* of the DID; 0 = free slot */
	uint16_t did_len;
	bool touched;       /* changed by the batch being built: on the touched list */
	bool ref;           /* used since the CLOCK hand last passed */
	char did[BT_DID_MAX];
	struct bt_acct_rec rec;
};

static struct {
	struct acct_slot *slot; /* cap of them */
	uint32_t *idx;          /* hash index: slot number + 1, 0 = empty; imask + 1 entries */
	uint32_t *touched;      /* slot numbers touched by the current batch */
	size_t cap, used, n_touched, imask, hand;
	uint64_t hits, misses;
} at;

static uint64_t did_hash(const char *did, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix for the low bits */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)did[i]) * 0x100000001b3ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h ? h : 1;
}

int sto_accts_init(size_t cap, size_t batch_max)
{
	sto_accts_free();
	if (cap < batch_max + 1)
		cap = batch_max + 1;
	size_t ni = 16;
	while (ni < cap * 2)
		ni *= 2;
	at.slot = calloc(cap, sizeof *at.slot);
	at.idx = calloc(ni, sizeof *at.idx);
	at.touched = calloc(batch_max + 1, sizeof *at.touched);
	if (!at.slot || !at.idx || !at.touched) {
		sto_accts_free();
		return -ENOMEM;
	}
	at.cap = cap;
	at.imask = ni - 1;
	return 0;
}

void sto_accts_free(void)
{
	free(at.slot);
	free(at.idx);
	free(at.touched);
	memset(&at, 0, sizeof at);
}

/* Index position holding slot s (which is in the index). */
static size_t idx_pos(size_t s)
{
	size_t i = at.slot[s].hash & at.imask;
	while (at.idx[i] != s + 1)
		i = (i + 1) & at.imask;
	return i;
}

/* Removes slot s from the index: backward-shift deletion, no tombstones. */
static void idx_del(size_t s)
{
	size_t i = idx_pos(s);
	for (size_t j = (i + 1) & at.imask; at.idx[j]; j = (j + 1) & at.imask) {
		size_t home = at.slot[at.idx[j] - 1].hash & at.imask;
		/* Entry j may move to the hole at i unless its home lies cyclically in (i, j]. */
		if (((j - home) & at.imask) >= ((j - i) & at.imask)) {
			at.idx[i] = at.idx[j];
			i = j;
		}
	}
	at.idx[i] = 0;
}

/* A slot for a new state: a free one, else one the CLOCK hand evicts. */
static size_t slot_take(void)
{
	if (at.used < at.cap)
		return at.used++;
	for (;;) {
		size_t s = at.hand;
		at.hand = (at.hand + 1) % at.cap;
		struct acct_slot *a = &at.slot[s];
		if (a->touched)
			continue; /* its state goes into the current batch */
		if (a->ref) {
			a->ref = false;
			continue;
		}
		idx_del(s);
		return s;
	}
}

struct bt_acct_rec *sto_acct_get(struct bt_db *db, const char *did, size_t dn)
{
	if (dn > BT_DID_MAX)
		dn = BT_DID_MAX;
	uint64_t h = did_hash(did, dn);
	size_t i = h & at.imask;
	for (; at.idx[i]; i = (i + 1) & at.imask) {
		struct acct_slot *a = &at.slot[at.idx[i] - 1];
		if (a->hash == h && a->did_len == dn && !memcmp(a->did, did, dn)) {
			at.hits++;
			a->ref = true;
			if (!a->touched) {
				a->touched = true;
				at.touched[at.n_touched++] = at.idx[i] - 1;
			}
			return &a->rec;
		}
	}
	at.misses++;
	size_t s = slot_take();
	/* The eviction may have shifted index entries: find the free position again. */
	for (i = h & at.imask; at.idx[i]; i = (i + 1) & at.imask)
		;
	struct acct_slot *a = &at.slot[s];
	a->hash = h;
	a->did_len = (uint16_t)dn;
	memcpy(a->did, did, dn);
	a->ref = true;
	a->touched = true;
	at.touched[at.n_touched++] = (uint32_t)s;
	at.idx[i] = (uint32_t)s + 1;
	char k[BT_DID_MAX + 2];
	size_t kn = bt_key_acct(k, sizeof k, did, dn);
	if (!db || bt_db_get(db, k, kn, &a->rec, sizeof a->rec) != (int)sizeof a->rec) {
		memset(&a->rec, 0, sizeof a->rec);
		a->rec.version = 1;
		a->rec.flags = BT_ACCT_ACTIVE;
	}
	return &a->rec;
}

void sto_accts_flush(struct bt_db_batch *b)
{
	for (size_t i = 0; i < at.n_touched; i++) {
		struct acct_slot *a = &at.slot[at.touched[i]];
		char k[BT_DID_MAX + 2];
		size_t kn = bt_key_acct(k, sizeof k, a->did, a->did_len);
		bt_db_batch_put(b, k, kn, &a->rec, sizeof a->rec);
		a->touched = false;
	}
	at.n_touched = 0;
}

size_t sto_accts_size(void)
{
	return at.used;
}
