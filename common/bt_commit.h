/*
 * NAME
 *	bt_commit.h - the signed repository commit object
 * DESCRIPTION
 *	A commit is the DAG-CBOR map {did, version, data, rev, prev, sig}.
 *	bt_commit_decode() gives borrowed views into the block; bt_commit_unsigned()
 *	rebuilds the bytes that were signed (the same map without "sig", every
 *	other entry copied byte for byte).  Used by verify; no state.
 * DIAGNOSTICS
 *	-EBADMSG malformed or missing fields (reason in *why), -ENOMEM.
 */
#ifndef BT_COMMIT_H
#define BT_COMMIT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_buf.h"
#include "bt_cid.h"

struct bt_commit {
	struct bt_bytes did, rev, sig; /* borrowed from the block */
	int64_t version;
	struct bt_cid data;            /* MST root */
	bool has_prev;
	struct bt_cid prev;
};

/* Decode the commit block p[0..n); borrows p.  *why (may be NULL) gets a static reason. */
int bt_commit_decode(const uint8_t *p, size_t n, struct bt_commit *c, const char **why);
/* Append the signed bytes (map without "sig", count minus one) to out; borrows p. */
int bt_commit_unsigned(const uint8_t *p, size_t n, struct bt_buf *out);

#endif
