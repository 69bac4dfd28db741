/*
 * NAME
 *	bt_car.h - CARv1 reader (and a small writer for tools and tests)
 * DESCRIPTION
 *	bt_car_parse() splits a CARv1 byte string into its header root and blocks,
 *	checking every block's sha-256 against its CID.  Blocks are borrowed
 *	slices of the input; the blocks[] array is owned by the bt_car and reused
 *	across parses, growing up to max_blocks entries, so a warmed-up reader does
 *	not allocate per frame.  Each parse indexes the blocks by CID (a small
 *	open-addressing table, also reused), so bt_car_get is O(1) per lookup (the
 *	MST walk asks once per node).  One bt_car per thread.
 * DIAGNOSTICS
 *	-EBADMSG malformed CAR or hash mismatch (*why names the reason),
 *	-E2BIG more than max_blocks blocks, -ENOMEM.
 */
#ifndef BT_CAR_H
#define BT_CAR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_buf.h"
#include "bt_cid.h"

struct bt_car_block {
	struct bt_cid cid;
	const uint8_t *data;
	size_t len;
};

struct bt_car {
	struct bt_cid root; /* first root */
	size_t n_roots;
	struct bt_car_block *blocks;
	size_t n_blocks, cap, max_blocks;
	/* Index of blocks[] by CID, rebuilt by each parse: open addressing, linear probing,
	   slot = 1 + block index (0 empty), idx_mask + 1 slots in use (a power of two, at least
	   twice n_blocks).  The array is reused across parses like blocks[]. */
	uint32_t *idx;
	size_t idx_cap, idx_mask;
	bool indexed; /* idx describes blocks[] (false after a failed parse: lookups scan) */
	uint64_t idx_seed; /* per reader, random: crafted CIDs cannot aim at one slot */
};

/* Prepare an empty reader; max_blocks bounds memory (0 = 100000). */
void bt_car_init(struct bt_car *car, size_t max_blocks);
/* Parse p[0..n); borrows p (blocks point into it); reuses blocks[].  *why (may be NULL) gets a static reason. */
int bt_car_parse(struct bt_car *car, const uint8_t *p, size_t n, const char **why);
/* The first block whose CID equals cid, borrowed from car, or NULL; O(1) (the index). */
const struct bt_car_block *bt_car_get(const struct bt_car *car, const struct bt_cid *cid);
/* Free blocks[] and zero the struct; accepts a zeroed struct. */
void bt_car_free(struct bt_car *car);
/* Append a CARv1 header {roots: [root], version: 1} to b. */
int bt_car_write_header(struct bt_buf *b, const struct bt_cid *root);
/* Append one block (varint length, CID, data) to b; borrows data. */
int bt_car_write_block(struct bt_buf *b, const struct bt_cid *cid, const uint8_t *data, size_t n);

#endif
