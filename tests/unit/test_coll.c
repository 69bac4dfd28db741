/*
 * NAME
 *	test_coll - the store's collection index (store/store_coll.c), on a real RocksDB
 * DESCRIPTION
 *	Drives the index the way baton-store does: per batch, sto_coll_verdict for each committed
 *	verdict (real #commit frames, encoded and seq-spliced as the store commits them),
 *	sto_coll_flush into the batch, write; then reads the keys back.  Checks:
 *	  - create +1, update 0, delete -1 (never below 0), also several commits of one batch on
 *	    one key; x/ membership and the y/ \0 account count follow the 0 <-> 1 edges;
 *	  - deleting an account's last record of a collection removes its membership; a record
 *	    created and deleted in one batch leaves no key;
 *	  - an #account deleted (and sto_coll_drop_account) removes all of the account's keys and
 *	    its recount mark, even counts only the same batch holds;
 *	  - a #sync puts the recount mark (its gen = the relay seq); sto_coll_replace replaces all
 *	    counts and deletes the mark;
 *	  - the recount walk (count_repo) counts the records of a whole repo CAR (a multi-layer
 *	    MST built by bt_mst_build_car under a commit block) per collection, and refuses a
 *	    commit of another DID and a CAR missing a node.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; the temp dir is kept on failure.
 */
#include "../../store/store_coll.c"
#include "bt_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* store_chain.c's, for the recount's host lookup (not reached: the thread is not started). */
struct sto_host *sto_host_get(struct sto_hosts *hs, uint32_t id)
{
	return NULL;
}

static struct bt_db *tdb;
static struct bt_db_batch *b;
static char dir[256];
static uint64_t seq;
static struct bt_buf frame;

static void set(struct bt_bytes *x, const char *s)
{
	x->p = (const uint8_t *)s;
	x->n = strlen(s);
}

/* One accepted #commit of did with ops "create:coll/rkey" ..., into the batch. */
static void commit(const char *did, int n, const char *const *ops)
{
	static struct bt_fh_msg m;
	memset(&m, 0, sizeof m);
	struct bt_cid c;
	bt_cid_for_block(0x71, (const uint8_t *)"c", 1, &c);
	m.type = BT_FH_COMMIT;
	set(&m.did, did);
	set(&m.rev, "3lhhvfanmos22");
	set(&m.time, "2025-02-06T01:05:27.125Z");
	m.commit = c;
	set(&m.blocks, "\x01");
	static char acts[BT_FH_MAX_OPS][8];
	for (int i = 0; i < n; i++) {
		const char *colon = strchr(ops[i], ':');
		snprintf(acts[i], sizeof acts[i], "%.*s", (int)(colon - ops[i]), ops[i]);
		set(&m.ops[i].action, acts[i]);
		set(&m.ops[i].path, colon + 1);
		if (acts[i][0] != 'd') {
			m.ops[i].has_cid = true;
			m.ops[i].cid = c;
		}
		if (acts[i][0] != 'c') {
			m.ops[i].has_prev = true;
			m.ops[i].prev = c;
		}
	}
	m.n_ops = (size_t)n;
	struct bt_buf enc = { 0 };
	size_t off;
	CHECK(bt_fh_encode_noseq(&m, &enc, &off) == 0);
	bt_buf_reset(&frame);
	CHECK(bt_fh_splice_seq(enc.p, enc.len, off, ++seq, &frame) == 0);
	bt_buf_free(&enc);
	struct bt_rec_verdict v;
	memset(&v, 0, sizeof v);
	v.ev = BT_EV_COMMIT;
	v.did_len = (uint16_t)strlen(did);
	memcpy(v.did, did, v.did_len);
	sto_coll_verdict(&v, frame.p, frame.len, seq, b);
}

static void account(const char *did, bool active, const char *status, uint8_t ev)
{
	struct bt_rec_verdict v;
	memset(&v, 0, sizeof v);
	v.ev = ev;
	v.did_len = (uint16_t)strlen(did);
	memcpy(v.did, did, v.did_len);
	v.flags = (uint8_t)((active ? BT_V_ACTIVE : 0) | (status ? BT_V_HAS_STATUS : 0));
	if (status) {
		v.status_len = (uint8_t)strlen(status);
		memcpy(v.status, status, v.status_len);
	}
	sto_coll_verdict(&v, NULL, 0, ++seq, b);
}

static void write_batch(void)
{
	sto_coll_flush(b);
	CHECK(bt_db_write(tdb, b) == 0);
	bt_db_batch_clear(b);
}

/* The account's count of coll (-1: no y/ key; -2: the y/ key but no x/ key or the reverse). */
static int64_t count(const char *did, const char *coll)
{
	char k[600], x[600];
	int kn = snprintf(k, sizeof k, "y/%s%c%s", did, 0, coll);
	int xn = snprintf(x, sizeof x, "x/%s%c%s", coll, 0, did);
	uint8_t v[8];
	int n = bt_db_get(tdb, k, (size_t)kn, v, sizeof v);
	char e[1];
	int xr = bt_db_get(tdb, x, (size_t)xn, e, sizeof e);
	if (n == -ENOENT)
		return xr == -ENOENT ? -1 : -2;
	if (n != 8 || xr != 0)
		return -2;
	return (int64_t)bt_be64_get(v);
}

static int64_t accounts(const char *coll)
{
	char k[400];
	int kn = snprintf(k, sizeof k, "y/%c%s", 0, coll);
	uint8_t v[8];
	int n = bt_db_get(tdb, k, (size_t)kn, v, sizeof v);
	return n == 8 ? (int64_t)bt_be64_get(v) : n == -ENOENT ? 0 : -2;
}

static bool marked(const char *did, uint64_t *gen)
{
	uint32_t tries;
	uint64_t due;
	return mark_get(did, strlen(did), gen, &tries, &due);
}

static int scan_n(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	(*(int *)arg)++;
	return 0;
}

/* Keys under prefix. */
static int keys_under(const char *p, size_t pn)
{
	int n = 0;
	bt_db_scan(tdb, p, pn, p, pn, scan_n, &n);
	return n;
}

#define POST "app.bsky.feed.post"
#define LIKE "app.bsky.feed.like"
#define FOLLOW "app.bsky.graph.follow"
static const char A[] = "did:plc:aaaa", B[] = "did:plc:bbbb", C[] = "did:plc:cccc";

static void test_counting(void)
{
	/* two commits of one batch on one key */
	commit(A, 2, (const char *const[]){ "create:" POST "/1", "create:" LIKE "/1" });
	commit(A, 1, (const char *const[]){ "create:" POST "/2" });
	commit(B, 1, (const char *const[]){ "create:" POST "/1" });
	write_batch();
	CHECK(count(A, POST) == 2 && count(A, LIKE) == 1 && count(B, POST) == 1);
	CHECK(accounts(POST) == 2 && accounts(LIKE) == 1 && accounts(FOLLOW) == 0);
	/* update: no change; a malformed path is skipped */
	commit(A, 2, (const char *const[]){ "update:" POST "/1", "create:notacollection" });
	write_batch();
	CHECK(count(A, POST) == 2 && accounts(POST) == 2);
	/* delete one, then the last: membership goes */
	commit(A, 1, (const char *const[]){ "delete:" POST "/1" });
	write_batch();
	CHECK(count(A, POST) == 1 && accounts(POST) == 2);
	commit(A, 1, (const char *const[]){ "delete:" POST "/2" });
	write_batch();
	CHECKF(count(A, POST) == -1, "count %lld", (long long)count(A, POST));
	CHECK(accounts(POST) == 1 && count(B, POST) == 1);
	/* a delete of what the index never counted stays at 0 */
	commit(A, 1, (const char *const[]){ "delete:" POST "/9" });
	write_batch();
	CHECK(count(A, POST) == -1 && accounts(POST) == 1);
	/* created and deleted in one batch: no key at all */
	commit(C, 1, (const char *const[]){ "create:" FOLLOW "/1" });
	commit(C, 1, (const char *const[]){ "delete:" FOLLOW "/1" });
	write_batch();
	CHECK(count(C, FOLLOW) == -1 && accounts(FOLLOW) == 0);
	CHECK(keys_under("y/\0" FOLLOW, 3 + strlen(FOLLOW)) == 0);
	/* the last account of a collection leaves: its y/ \0 key goes */
	commit(A, 1, (const char *const[]){ "delete:" LIKE "/1" });
	write_batch();
	CHECK(accounts(LIKE) == 0 && keys_under("y/\0" LIKE, 3 + strlen(LIKE)) == 0);
}

static void test_account_delete(void)
{
	commit(B, 2, (const char *const[]){ "create:" LIKE "/1", "create:" FOLLOW "/1" });
	write_batch();
	CHECK(count(B, POST) == 1 && count(B, LIKE) == 1 && count(B, FOLLOW) == 1);
	/* a deactivation changes nothing */
	account(B, false, "deactivated", BT_EV_ACCOUNT);
	write_batch();
	CHECK(count(B, LIKE) == 1);
	/* deleted, in the batch that also created a new collection for it and marked it */
	account(B, true, NULL, BT_EV_SYNC);
	commit(B, 1, (const char *const[]){ "create:app.example.thing/1" });
	account(B, false, "deleted", BT_EV_ACCOUNT);
	write_batch();
	uint64_t gen;
	CHECK(count(B, POST) == -1 && count(B, LIKE) == -1 && count(B, FOLLOW) == -1 &&
	      count(B, "app.example.thing") == -1 && !marked(B, &gen));
	CHECK(keys_under("y/did:plc:bbbb", 14) == 0 && accounts(POST) == 0 && accounts(LIKE) == 0 &&
	      accounts(FOLLOW) == 0 && accounts("app.example.thing") == 0);
	CHECK(keys_under("x/", 2) == 0 && keys_under("y/", 2) == 0);
	/* sto_coll_drop_account, between turns (the takedown's way) */
	commit(C, 2, (const char *const[]){ "create:" POST "/1", "create:" POST "/2" });
	write_batch();
	CHECK(count(C, POST) == 2 && accounts(POST) == 1);
	sto_coll_drop_account(C, strlen(C), b);
	CHECK(bt_db_write(tdb, b) == 0);
	bt_db_batch_clear(b);
	write_batch(); /* the store's next flush writes nothing wrong */
	CHECK(count(C, POST) == -1 && accounts(POST) == 0 && keys_under("y/", 2) == 0);
}

static void test_recount(void)
{
	commit(A, 3, (const char *const[]){ "create:" POST "/1", "create:" LIKE "/1", "create:" LIKE "/2" });
	commit(C, 1, (const char *const[]){ "create:" LIKE "/1" });
	write_batch();
	account(A, true, NULL, BT_EV_SYNC);
	uint64_t want = seq, gen = 0;
	write_batch();
	CHECK(marked(A, &gen) && gen == want);
	CHECK(count(A, POST) == 1 && count(A, LIKE) == 2); /* unknown until the recount: kept */
	const char *const colls[] = { LIKE, FOLLOW };
	const uint64_t counts[] = { 5, 7 };
	sto_coll_replace(A, strlen(A), colls, counts, 2, b);
	pend_reset();
	CHECK(bt_db_write(tdb, b) == 0);
	bt_db_batch_clear(b);
	CHECK(count(A, POST) == -1 && count(A, LIKE) == 5 && count(A, FOLLOW) == 7 && !marked(A, &gen));
	CHECK(accounts(POST) == 0 && accounts(LIKE) == 2 && accounts(FOLLOW) == 1);
	/* counting goes on from the recount */
	commit(A, 1, (const char *const[]){ "delete:" FOLLOW "/1" });
	write_batch();
	CHECK(count(A, FOLLOW) == 6);
}

/* A commit block {did, rev, sig, data, prev, version} over the MST root. */
static void commit_block(struct bt_buf *o, const char *did, const struct bt_cid *data)
{
	bt_cbor_w_map(o, 6);
	bt_cbor_w_str(o, "did");
	bt_cbor_w_str(o, did);
	bt_cbor_w_str(o, "rev");
	bt_cbor_w_str(o, "3lhhvfanmos22");
	bt_cbor_w_str(o, "sig");
	bt_cbor_w_bytes(o, "0123456789012345678901234567890123456789012345678901234567890123", 64);
	bt_cbor_w_str(o, "data");
	bt_cbor_w_cid(o, data);
	bt_cbor_w_str(o, "prev");
	bt_cbor_w_null(o);
	bt_cbor_w_str(o, "version");
	bt_cbor_w_uint(o, 3);
}

static void test_walk(void)
{
	enum { N = 600 };
	static char kb[N][64];
	const uint8_t *ks[N];
	size_t lens[N];
	struct bt_cid vals[N];
	size_t want[3] = { 0 };
	const char *cs[3] = { POST, LIKE, FOLLOW };
	for (int i = 0; i < N; i++) {
		int c = (i * 7) % 3 == 0 ? 0 : i % 5 == 0 ? 2 : 1;
		want[c]++;
		lens[i] = (size_t)snprintf(kb[i], sizeof kb[i], "%s/3l%010d", cs[c], i);
		ks[i] = (const uint8_t *)kb[i];
		bt_cid_for_block(0x71, ks[i], lens[i], &vals[i]);
	}
	struct bt_buf tree = { 0 }, car = { 0 }, cb = { 0 };
	struct bt_cid root, ccid;
	CHECK(bt_mst_build_car(ks, lens, vals, N, &tree, &root) == 0);
	struct bt_car t;
	bt_car_init(&t, 0);
	CHECK(bt_car_parse(&t, tree.p, tree.len, NULL) == 0);
	CHECK(t.n_blocks > 20); /* several layers */
	commit_block(&cb, A, &root);
	bt_cid_for_block(0x71, cb.p, cb.len, &ccid);
	bt_car_write_header(&car, &ccid);
	bt_car_write_block(&car, &ccid, cb.p, cb.len);
	for (size_t i = 0; i < t.n_blocks; i++)
		bt_car_write_block(&car, &t.blocks[i].cid, t.blocks[i].data, t.blocks[i].len);
	bt_car_init(&tcar, 0);
	struct job j = { .dn = strlen(A) };
	memcpy(j.did, A, j.dn + 1);
	CHECKF(count_repo(&j, car.p, car.len) == 0, "%s", j.why ? j.why : "");
	CHECK(!strcmp(j.rev, "3lhhvfanmos22") && j.n_colls == 3);
	for (size_t i = 0; i < j.n_colls; i++)
		for (int c = 0; c < 3; c++)
			if (!strcmp(j.colls[i].name, cs[c]))
				CHECKF(j.colls[i].n == want[c], "%s: %llu, want %zu", cs[c], (unsigned long long)j.colls[i].n,
				       want[c]);
	free(j.colls);
	/* another DID's repo */
	struct job j2 = { .dn = strlen(B) };
	memcpy(j2.did, B, j2.dn + 1);
	CHECK(count_repo(&j2, car.p, car.len) < 0);
	free(j2.colls);
	/* a node missing */
	struct bt_buf car2 = { 0 };
	bt_car_write_header(&car2, &ccid);
	bt_car_write_block(&car2, &ccid, cb.p, cb.len);
	for (size_t i = 0; i + 1 < t.n_blocks; i++)
		bt_car_write_block(&car2, &t.blocks[i].cid, t.blocks[i].data, t.blocks[i].len);
	struct job j3 = { .dn = strlen(A) };
	memcpy(j3.did, A, j3.dn + 1);
	CHECK(count_repo(&j3, car2.p, car2.len) == -ENOENT);
	free(j3.colls);
	bt_car_free(&t);
	bt_car_free(&tcar);
	bt_buf_free(&tree);
	bt_buf_free(&car);
	bt_buf_free(&car2);
	bt_buf_free(&cb);
	bt_mst_thread_free();
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/bt_test_coll.XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	char path[300];
	snprintf(path, sizeof path, "%s/db", dir);
	CHECK(bt_db_open_primary(path, false, &tdb) == 0);
	b = bt_db_batch_new();
	CHECK(sto_coll_init(tdb, NULL, false) == 0);
	test_counting();
	test_account_delete();
	test_recount();
	test_walk();
	sto_coll_fini();
	bt_db_batch_free(&b);
	bt_db_close(&tdb);
	bt_buf_free(&frame);
	if (!bt_t_fail) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	} else {
		fprintf(stderr, "kept %s\n", dir);
	}
	BT_TEST_END();
}
