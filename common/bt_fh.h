/*
 * NAME
 *	bt_fh.h - firehose frames (com.atproto.sync.subscribeRepos)
 * DESCRIPTION
 *	A frame is two DAG-CBOR objects back to back: header {t, op} and body.
 *	bt_fh_decode() fills a bt_fh_msg with borrowed views into the frame (no
 *	malloc); unknown fields are skipped, an unknown t decodes as BT_FH_UNKNOWN.
 *	bt_fh_encode_noseq() writes a canonical frame with every lexicon-required
 *	field and leaves a hole for seq so the sequencer can splice its own number
 *	in later without re-encoding (bt_fh_splice_seq).  Used by verify, store,
 *	fanout; stateless, thread-safe on distinct objects.
 * DIAGNOSTICS
 *	-EBADMSG malformed frame (reason in *why), -E2BIG too many ops,
 *	-EINVAL a message that cannot be encoded, -ENOMEM.
 */
#ifndef BT_FH_H
#define BT_FH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_buf.h"
#include "bt_cid.h"

enum bt_fh_type { BT_FH_UNKNOWN, BT_FH_COMMIT, BT_FH_SYNC, BT_FH_IDENTITY, BT_FH_ACCOUNT, BT_FH_INFO, BT_FH_ERROR };

#define BT_FH_MAX_OPS 200

struct bt_fh_op {
	struct bt_bytes action, path;
	bool has_cid, has_prev;
	struct bt_cid cid, prev;
};

struct bt_fh_msg {
	enum bt_fh_type type;
	int op;
	struct bt_bytes t; /* raw header type string */
	bool has_seq;
	int64_t seq;
	struct bt_bytes did; /* #commit: repo; others: did */
	struct bt_bytes rev, since, time, handle, status, name, message, error;
	bool has_since, has_handle, has_status, has_message, active, rebase, too_big, has_prev_data;
	struct bt_cid commit, prev_data;
	struct bt_bytes blocks; /* CAR bytes, passed through byte for byte */
	struct bt_fh_op ops[BT_FH_MAX_OPS];
	size_t n_ops;
	struct bt_bytes blobs; /* raw encoded CBOR array of the blobs field (n = 0: none/null) */
};

struct bt_fh_peek {
	int op;
	enum bt_fh_type type;
	bool has_seq;
	int64_t seq;
	struct bt_bytes did, error, t;
};

/* Header + seq/did/repo/error only; borrows p.  Validates the whole frame's CBOR. */
int bt_fh_peek(const uint8_t *p, size_t n, struct bt_fh_peek *out);
/* Full decode; borrows p (out points into it); no malloc.  *why (may be NULL) gets a static reason. */
int bt_fh_decode(const uint8_t *p, size_t n, struct bt_fh_msg *out, const char **why);
/* Append the canonical frame for m to out without the seq value; *seq_off gets the absolute
   offset in out->p where the seq integer belongs (SIZE_MAX for #info and error frames, which
   carry no seq).  A missing time is stamped with the current UTC time.  Borrows m. */
int bt_fh_encode_noseq(const struct bt_fh_msg *m, struct bt_buf *out, size_t *seq_off);
/* Append p[0..seq_off) + cbor_uint(seq) + p[seq_off..n) to out; borrows p. */
int bt_fh_splice_seq(const uint8_t *p, size_t n, size_t seq_off, uint64_t seq, struct bt_buf *out);
/* Append an error frame (op -1) {error, message?}; message may be NULL. */
int bt_fh_encode_error(struct bt_buf *out, const char *error, const char *message);
/* Append an #info frame {name, message?} (no seq); message may be NULL. */
int bt_fh_encode_info(struct bt_buf *out, const char *name, const char *message);
/* "#commit" etc. for a type, NULL for UNKNOWN/ERROR. */
const char *bt_fh_type_name(enum bt_fh_type t);

#endif
