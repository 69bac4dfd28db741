/*
 * NAME
 *	test_db_secondary - a secondary view after the primary is killed and reopened
 * DESCRIPTION
 *	The store (the only RocksDB writer) can be killed at any moment; fanout and verify read
 *	through secondary views that must keep seeing what the next store writes.  A child
 *	process plays the store: it opens the primary, writes, and _exit(9)s without closing;
 *	the parent's secondary view must then see the writes of each later primary, through
 *	bt_db_catch_up_gen (which reopens a view that last saw another primary).  The RocksDB
 *	staleness that made the reopen necessary showed only intermittently in e2e reseq; this
 *	test shows the reopened view sees every write of a live and of a killed store.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bt_db.h"
#include "bt_test.h"

static char dir[256], sec[256];
static struct bt_db *view;

static void put_seq(struct bt_db_batch *b, uint64_t seq)
{
	uint8_t sb[8];
	for (int i = 0; i < 8; i++)
		sb[i] = (uint8_t)(seq >> (56 - 8 * i));
	bt_db_batch_put(b, "m/seq", 5, sb, 8);
}

static int seen(struct bt_db *v, const char *k, const char *want)
{
	char buf[64];
	int n = bt_db_get(v, k, strlen(k), buf, sizeof buf - 1);
	return n == (int)strlen(want) && !memcmp(buf, want, (size_t)n);
}

/* A store's life: open the primary, write batch `seq` (m/seq and h/1 = "cursor<seq>"), tell
   the parent, which opens or catches up its view while this store is alive, then write one
   more batch (seq + 1) and die without closing, as kill -9 does. */
static void store_life(uint64_t seq, bool early)
{
	int up[2], go[2];
	if (pipe(up) < 0 || pipe(go) < 0)
		exit(2);
	pid_t p = fork();
	if (p == 0) {
		struct bt_db *db;
		char c = 0;
		if (bt_db_open_primary(dir, true, &db) < 0)
			_exit(1);
		if (early && (write(up[1], &c, 1) != 1 || read(go[0], &c, 1) != 1))
			_exit(1);
		for (uint64_t s = seq; s <= seq + 1; s++) {
			struct bt_db_batch *b = bt_db_batch_new();
			char v[32];
			snprintf(v, sizeof v, "cursor%llu", (unsigned long long)s);
			put_seq(b, s);
			bt_db_batch_put(b, "h/1", 3, v, strlen(v));
			if (bt_db_write(db, b) < 0)
				_exit(1);
			bt_db_batch_free(&b);
			if (!early && s == seq && (write(up[1], &c, 1) != 1 || read(go[0], &c, 1) != 1))
				_exit(1);
		}
		_exit(9);
	}
	char c = 0, v[32];
	if (read(up[0], &c, 1) != 1)
		exit(2);
	if (!view) {
		CHECK(bt_db_open_secondary(dir, sec, &view) == 0);
		bt_db_catch_up_gen(view, seq);
	}
	else
		bt_db_catch_up_gen(view, seq);
	snprintf(v, sizeof v, "cursor%llu", (unsigned long long)seq);
	if (!early)
		CHECKF(view && seen(view, "h/1", v), "the view sees batch %llu of a live store", (unsigned long long)seq);
	if (write(go[1], &c, 1) != 1)
		exit(2);
	int st;
	waitpid(p, &st, 0);
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 9, "store life %llu", (unsigned long long)seq);
	close(up[0]), close(up[1]), close(go[0]), close(go[1]);
}

int main(void)
{
	char tmpl[] = "/tmp/test_db_secondary.XXXXXX";
	char *t = mkdtemp(tmpl);
	if (!t)
		return 2;
	snprintf(dir, sizeof dir, "%s/db", t);
	snprintf(sec, sizeof sec, "%s/sec", t);
	for (uint64_t s = 1; s <= 20; s += 2) {
		store_life(s, s == 1);
		char v[32];
		snprintf(v, sizeof v, "cursor%llu", (unsigned long long)s + 1);
		bt_db_catch_up_gen(view, s);
		CHECKF(seen(view, "h/1", v), "after store life %llu the view sees its last write", (unsigned long long)s);
	}
	bt_db_close(&view);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", t);
	if (system(cmd) != 0)
		return 2;
	BT_TEST_END();
}
