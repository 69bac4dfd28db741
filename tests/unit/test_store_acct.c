/*
 * NAME
 *	test_store_acct - the store's in-memory account states (store/store_acct.c), on a real RocksDB
 * DESCRIPTION
 *	Drives the table the way baton-store does: per batch, sto_acct_get for each verdict's DID
 *	(changing the state), sto_accts_flush into the batch, write.  Checks:
 *	  - a miss loads the state RocksDB holds; a DID RocksDB lacks starts fresh and active;
 *	  - within a batch a DID is one state (the same pointer), written once by the flush;
 *	  - a table much smaller than the set of DIDs (eviction on every miss) still gives every
 *	    DID its latest state, in memory or reloaded: evicted states were written through;
 *	  - a state touched by the batch being built is never evicted, even when the batch
 *	    touches as many DIDs as the table holds less one;
 *	  - the hash index survives churn (backward-shift deletion): random access over many
 *	    DIDs agrees with a plain array kept beside it.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; the temp dir is kept on failure.
 */
#include "../../store/store_acct.c"
#include "bt_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct bt_db *db;
static struct bt_db_batch *b;
static char dir[256];

/* DIDs of different tests never overlap: each test passes its own range. */
static size_t did_of(char *out, unsigned i)
{
	return (size_t)snprintf(out, 64, "did:plc:test%08u", i);
}

static void commit(void)
{
	sto_accts_flush(b);
	CHECK(bt_db_write(db, b) == 0);
	bt_db_batch_clear(b);
}

static void test_load_and_fresh(void)
{
	CHECK(sto_accts_init(16, 4) == 0);
	struct bt_acct_rec r = { .version = 1, .host_id = 7, .last_seq = 41 };
	char k[80], d[64];
	size_t dn = did_of(d, 1);
	CHECK(bt_db_put(db, k, bt_key_acct(k, sizeof k, d, dn), &r, sizeof r) == 0);
	struct bt_acct_rec *a = sto_acct_get(db, d, dn);
	CHECK(a && a->host_id == 7 && a->last_seq == 41);
	a->last_seq = 42;
	CHECK(sto_acct_get(db, d, dn) == a); /* one state per DID in a batch */
	char d2[64];
	size_t d2n = did_of(d2, 2);
	struct bt_acct_rec *f = sto_acct_get(db, d2, d2n);
	CHECK(f && f != a && f->version == 1 && (f->flags & BT_ACCT_ACTIVE) && f->last_seq == 0);
	sto_accts_flush(b);
	CHECK(bt_db_batch_count(b) == 2); /* each touched DID once */
	CHECK(bt_db_write(db, b) == 0);
	bt_db_batch_clear(b);
	struct bt_acct_rec got;
	CHECK(bt_db_get(db, k, bt_key_acct(k, sizeof k, d, dn), &got, sizeof got) == (int)sizeof got &&
	      got.last_seq == 42);
	sto_accts_flush(b);
	CHECK(bt_db_batch_count(b) == 0); /* nothing touched since */
	sto_accts_free();
}

/* Many more DIDs than slots, random order, with a model array of the expected last_seq. */
static void test_eviction_write_through(void)
{
	enum { N = 500, CAP = 8, BATCH = 7, ROUNDS = 400 };
	static uint64_t model[N];
	memset(model, 0, sizeof model);
	CHECK(sto_accts_init(CAP, BATCH) == 0);
	CHECK(at.cap == CAP);
	uint64_t seq = 1000;
	unsigned bad = 0, moved = 0;
	srand(7);
	for (int round = 0; round < ROUNDS; round++) {
		/* A batch touching BATCH distinct DIDs (all slots but one are pinned by it). */
		struct bt_acct_rec *ptr[BATCH];
		unsigned ids[BATCH];
		for (int j = 0; j < BATCH; j++) {
			unsigned id;
			bool dup;
			do {
				id = (unsigned)rand() % (round < ROUNDS / 2 ? N : 20); /* later: a hot set, hits */
				dup = false;
				for (int q = 0; q < j; q++)
					dup |= ids[q] == id;
			} while (dup);
			ids[j] = id;
			char d[64];
			size_t dn = did_of(d, 1000 + id);
			struct bt_acct_rec *a = sto_acct_get(db, d, dn);
			if (a->last_seq != model[id]) {
				bad++;
				fprintf(stderr, "round %d id %u: got %llu want %llu (hits %llu misses %llu)\n", round, id,
					(unsigned long long)a->last_seq, (unsigned long long)model[id],
					(unsigned long long)at.hits, (unsigned long long)at.misses);
			}
			a->last_seq = model[id] = ++seq;
			ptr[j] = a;
		}
		/* Every state of this batch is still in place (none evicted by a later miss). */
		for (int j = 0; j < BATCH; j++) {
			char d[64];
			size_t dn = did_of(d, 1000 + ids[j]);
			if (sto_acct_get(db, d, dn) != ptr[j] || ptr[j]->last_seq != model[ids[j]])
				moved++;
		}
		commit();
	}
	CHECKF(bad == 0, "%u states differ from the last one written", bad);
	CHECKF(moved == 0, "%u touched states were evicted inside their batch", moved);
	CHECK(at.misses > at.hits / 4 && at.hits > 0); /* both paths were exercised */
	/* RocksDB holds every DID's last state (write-through). */
	unsigned stale = 0;
	for (unsigned id = 0; id < N; id++) {
		if (!model[id])
			continue;
		char d[64], k[80];
		size_t dn = did_of(d, 1000 + id);
		struct bt_acct_rec got;
		if (bt_db_get(db, k, bt_key_acct(k, sizeof k, d, dn), &got, sizeof got) != (int)sizeof got ||
		    got.last_seq != model[id])
			stale++;
	}
	CHECKF(stale == 0, "%u DIDs with a stale a/ key", stale);
	sto_accts_free();
}

/* A capacity below the batch bound is raised: the batch always finds a slot. */
static void test_capacity_floor(void)
{
	CHECK(sto_accts_init(16, 100) == 0);
	CHECK(at.cap == 101);
	for (unsigned id = 0; id < 100; id++) {
		char d[64];
		size_t dn = did_of(d, 10000 + id);
		if (!sto_acct_get(db, d, dn))
			CHECK(0);
	}
	commit();
	sto_accts_free();
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/test_store_acct.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	CHECK(bt_db_open_primary(dir, false, &db) == 0);
	b = bt_db_batch_new();
	test_load_and_fresh();
	test_eviction_write_through();
	test_capacity_floor();
	bt_db_batch_free(&b);
	bt_db_close(&db);
	if (!bt_t_fail) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		if (system(cmd) != 0)
			return 1;
	}
	BT_TEST_END();
}
