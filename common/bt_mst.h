/*
 * NAME
 *	bt_mst.h - Merkle Search Tree helpers and Sync 1.1 inversion
 * DESCRIPTION
 *	Key heights (fanout 4: leading zero bits of sha-256(key) / 2).
 *
 *	bt_mst_invert() takes the CAR of a #commit (the commit, the new MST nodes
 *	along the changed paths, new records), the new MST root (the commit's
 *	data) and the ops, applies the inverse of every op (last op first:
 *	create -> delete the key, update -> set the key back to op.prev,
 *	delete -> insert the key with op.prev) to the partial tree and returns
 *	the root CID of the resulting tree, which the caller compares with the
 *	message's prevData.  Subtrees that are not in the CAR stay bare CIDs and
 *	are only opened when an inversion really needs them (then the call
 *	fails with "missing block").  Changed nodes are re-encoded canonically
 *	({e: [{k, p, t, v}], l}, mandatory prefix compression); empty
 *	intermediate nodes are pruned and the root is trimmed to the height of
 *	its highest key; the empty tree is the empty node {e: [], l: null}.
 *	Create and update ops are checked against the tree: the key must hold
 *	op.cid.  Recursion is bounded by the key height (at most 128 layers).
 *
 *	Memory: the tree lives in a per-thread arena that is reset, not freed,
 *	between calls, so a warmed-up thread does not malloc per frame.
 *	bt_mst_thread_free() releases it (call it when a worker thread exits).
 *
 *	bt_mst_build_car() builds a complete tree from scratch for tools and
 *	tests (it uses the same arena and encoder).
 * DIAGNOSTICS
 *	0 on success; -ENOENT a node needed for the inversion is not in the CAR
 *	(*why "missing block"); -EBADMSG a malformed or non-canonical MST node;
 *	-EINVAL ops that do not match the tree (deleting an absent key, wrong
 *	op.cid, an op without its prev, unknown action); -E2BIG the arena limit
 *	or a key longer than BT_MST_MAX_KEY; -ENOMEM.  *why (may be NULL) gets a
 *	static reason.
 */
#ifndef BT_MST_H
#define BT_MST_H
#include <stddef.h>
#include <stdint.h>

#include "bt_buf.h"
#include "bt_car.h"
#include "bt_cid.h"
#include "bt_fh.h"

#define BT_MST_MAX_KEY 1024
#define BT_MST_ARENA_MAX (64u << 20)

/* Height of key in the MST: leading zero bits of sha256(key) / 2; borrows key. */
int bt_mst_key_height(const uint8_t *key, size_t n);

/* Invert ops on the tree rooted at root whose nodes are in car; *prev_root_out gets the
   root CID of the tree before the commit.  Borrows car, root, ops; uses the thread's arena. */
int bt_mst_invert(const struct bt_car *car, const struct bt_cid *root, const struct bt_fh_op *ops,
		  size_t n_ops, struct bt_cid *prev_root_out, const char **why);

/* Build the canonical tree of n keys (any order, no duplicates) with values vals; append a
   CARv1 (header root = tree root, then every node block) to car_out when it is non-NULL and
   set *root_out.  Borrows keys, lens, vals.  Tool/test helper; uses the thread's arena. */
int bt_mst_build_car(const uint8_t *const *keys, const size_t *lens, const struct bt_cid *vals, size_t n,
		     struct bt_buf *car_out, struct bt_cid *root_out);

/* Free this thread's MST arena and encode buffer; safe to call more than once. */
void bt_mst_thread_free(void);

#endif
