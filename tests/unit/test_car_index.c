/*
 * NAME
 *	test_car_index - bt_car's CID index: every block found, misses, duplicates, collisions
 * DESCRIPTION
 *	Builds common/bt_car.c into the test twice over the same cases: once with its own slot
 *	hash, once with a slot hash that sends every CID to the same slot (BT_CAR_SLOT_HASH), so
 *	lookups walk one long probe run.  Checks, for CARs of 1, 7, 300 and 5000 blocks:
 *	1. every block is found by its CID, and the pointer is that block's bytes;
 *	2. CIDs not in the CAR (another digest, another codec) are not found;
 *	3. of two blocks with the same CID the first is returned (the linear lookup's contract);
 *	4. a reader reused for a smaller CAR finds nothing of the bigger one;
 *	5. after a parse that fails part-way the blocks split so far are still looked up right.
 * DIAGNOSTICS
 *	Prints "N passed, N failed".
 */
#include "bt_test.h"

#include <stdio.h>

#include "bt_car.h"

static bool collide;
static uint64_t real_hash(const struct bt_cid *c, uint64_t seed);
static uint64_t test_hash(const struct bt_cid *c, uint64_t seed)
{
	return collide ? 7 : real_hash(c, seed);
}
#define BT_CAR_SLOT_HASH test_hash
#include "../../common/bt_car.c"
static uint64_t real_hash(const struct bt_cid *c, uint64_t seed)
{
	return cid_hash(c, seed);
}

/* A CAR of n distinct raw blocks ("block i"), plus a copy of block 0 at the end if dup. */
static void make_car(struct bt_buf *b, size_t n, bool dup, struct bt_cid *cids)
{
	bt_buf_reset(b);
	char data[32];
	for (size_t i = 0; i < n; i++) {
		int k = snprintf(data, sizeof data, "block %zu", i);
		bt_cid_for_block(BT_CID_CODEC_RAW, (const uint8_t *)data, (size_t)k, &cids[i]);
	}
	bt_car_write_header(b, &cids[0]);
	for (size_t i = 0; i < n; i++) {
		int k = snprintf(data, sizeof data, "block %zu", i);
		bt_car_write_block(b, &cids[i], (const uint8_t *)data, (size_t)k);
	}
	if (dup)
		bt_car_write_block(b, &cids[0], (const uint8_t *)"block 0", 7);
}

static struct bt_cid cids[5000];

static void run(void)
{
	static const size_t sizes[] = { 1, 7, 300, 5000 };
	struct bt_car car;
	struct bt_buf b = { 0 };
	bt_car_init(&car, 0);
	for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
		size_t n = sizes[t];
		make_car(&b, n, true, cids);
		const char *why = NULL;
		CHECKF(bt_car_parse(&car, b.p, b.len, &why) == 0, "parse %zu: %s", n, why ? why : "");
		CHECK(car.n_blocks == n + 1);
		size_t found = 0;
		for (size_t i = 0; i < n; i++) {
			const struct bt_car_block *k = bt_car_get(&car, &cids[i]);
			char data[32];
			int dl = snprintf(data, sizeof data, "block %zu", i);
			if (k && k == &car.blocks[i] && k->len == (size_t)dl && !memcmp(k->data, data, (size_t)dl))
				found++;
		}
		CHECKF(found == n, "n=%zu collide=%d: %zu found", n, collide, found);
		/* the duplicate of block 0 is blocks[n]: the first one is returned */
		CHECK(bt_car_get(&car, &cids[0]) == &car.blocks[0]);
		/* misses: another digest; the same digest under another codec */
		struct bt_cid miss, other_codec;
		bt_cid_for_block(BT_CID_CODEC_RAW, (const uint8_t *)"absent", 6, &miss);
		CHECK(bt_car_get(&car, &miss) == NULL);
		bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, (const uint8_t *)"block 0", 7, &other_codec);
		CHECK(bt_car_get(&car, &other_codec) == NULL);
	}
	/* 4. reused for a smaller CAR: the 5000-block one's CIDs are gone */
	struct bt_cid big[3];
	memcpy(big, &cids[4000], sizeof big);
	make_car(&b, 3, false, cids);
	CHECK(bt_car_parse(&car, b.p, b.len, NULL) == 0);
	for (int i = 0; i < 3; i++) {
		CHECK(bt_car_get(&car, &big[i]) == NULL);
		CHECK(bt_car_get(&car, &cids[i]) == &car.blocks[i]);
	}
	/* 5. a block whose bytes do not match its CID after two good ones: the parse fails, the
	   two before it are still looked up (by a scan), nothing from the previous parse is */
	make_car(&b, 300, false, cids);
	CHECK(bt_car_parse(&car, b.p, b.len, NULL) == 0);
	make_car(&b, 3, false, cids);
	b.p[b.len - 1] ^= 1;
	CHECK(bt_car_parse(&car, b.p, b.len, NULL) == -EBADMSG);
	CHECK(car.n_blocks == 2);
	CHECK(bt_car_get(&car, &cids[0]) == &car.blocks[0]);
	CHECK(bt_car_get(&car, &cids[1]) == &car.blocks[1]);
	CHECK(bt_car_get(&car, &cids[2]) == NULL);
	bt_car_free(&car);
	bt_buf_free(&b);
}

int main(void)
{
	collide = false;
	run();
	collide = true;
	run();
	BT_TEST_END();
}
