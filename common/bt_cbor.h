/*
 * NAME
 *	bt_cbor.h - DAG-CBOR pull reader and canonical writer
 * DESCRIPTION
 *	The reader walks a buffer one head at a time with libcbor's streaming
 *	decoder (cbor_stream_decode), never the allocating tree decoder; strings
 *	come back as pointers into the caller's buffer (zero copy).  It enforces the
 *	DAG-CBOR rules: no indefinite lengths, floats, undefined or other simple
 *	values, minimal integer and length encodings, tag 42 only, valid UTF-8 text.
 *	bt_cbor_skip() additionally checks map keys are text in canonical order
 *	(length first, then bytewise) without duplicates, and that tag 42 wraps a
 *	CID.  The writer appends canonical heads to a bt_buf via libcbor's
 *	cbor_encode_* functions; callers write map keys in canonical order.
 *	Reader and writer hold no global state; thread-safe on distinct objects.
 * DIAGNOSTICS
 *	-EBADMSG for malformed or non-DAG-CBOR input (including truncation),
 *	-E2BIG when nesting exceeds BT_CBOR_MAX_DEPTH, -ENOMEM from the writer.
 */
#ifndef BT_CBOR_H
#define BT_CBOR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_buf.h"
#include "bt_cid.h"

#define BT_CBOR_MAX_DEPTH 64

enum bt_cbor_type {
	BT_CBOR_UINT,
	BT_CBOR_NEGINT,
	BT_CBOR_BYTES,
	BT_CBOR_TEXT,
	BT_CBOR_ARRAY,
	BT_CBOR_MAP,
	BT_CBOR_TAG,
	BT_CBOR_FALSE,
	BT_CBOR_TRUE,
	BT_CBOR_NULL
};

/* One decoded head.  uint: u (and i when it fits); negint: i; bytes/text: p,n;
   array/map: n = count; tag: u. */
struct bt_cbor_item {
	enum bt_cbor_type type;
	uint64_t u;
	int64_t i;
	const uint8_t *p;
	size_t n;
};

struct bt_cbor_rd {
	const uint8_t *p, *end;
};

/* Start reading p[0..n); borrows p for the reader's lifetime. */
void bt_cbor_rd_init(struct bt_cbor_rd *r, const uint8_t *p, size_t n);
/* Read one head (for bytes/text also the payload, borrowed); 0 or <0. */
int bt_cbor_next(struct bt_cbor_rd *r, struct bt_cbor_item *it);
/* Skip one whole item, validating it fully (depth-bounded); 0 or <0. */
int bt_cbor_skip(struct bt_cbor_rd *r);
/* Read tag 42 + bytes(0x00 ‖ CIDv1) into out; 0 or <0. */
int bt_cbor_read_cid(struct bt_cbor_rd *r, struct bt_cid *out);
/* Read a CID link or null: *present says which; 0 or <0. */
int bt_cbor_read_cid_or_null(struct bt_cbor_rd *r, struct bt_cid *out, bool *present);
/* True when the two keys are in strict canonical order (a before b). */
bool bt_cbor_key_less(const uint8_t *a, size_t an, const uint8_t *b, size_t bn);

/* Writers: append one canonical head (and payload) to b; 0 or -ENOMEM. */
int bt_cbor_w_map(struct bt_buf *b, size_t n);
int bt_cbor_w_array(struct bt_buf *b, size_t n);
int bt_cbor_w_uint(struct bt_buf *b, uint64_t v);
int bt_cbor_w_int(struct bt_buf *b, int64_t v);
int bt_cbor_w_text(struct bt_buf *b, const void *p, size_t n);
int bt_cbor_w_str(struct bt_buf *b, const char *s);        /* NUL-terminated text */
int bt_cbor_w_bytes(struct bt_buf *b, const void *p, size_t n);
int bt_cbor_w_bool(struct bt_buf *b, bool v);
int bt_cbor_w_null(struct bt_buf *b);
int bt_cbor_w_cid(struct bt_buf *b, const struct bt_cid *c);

/* Decode any DAG-CBOR item in p[0..n) (exactly one, nothing after it) and
   append its canonical re-encoding (maps re-sorted) to out.  Test/tool helper:
   it mallocs per map. */
int bt_cbor_canonicalize(const uint8_t *p, size_t n, struct bt_buf *out);

/* Convert atproto JSON data-model text (objects, arrays, strings, integers,
   booleans, null, {"$link": cid}, {"$bytes": base64}) to canonical DAG-CBOR,
   appended to out.  For tools and tests (mallocs); floats with a fractional
   part are rejected (-EINVAL), bad JSON gives -EBADMSG. */
int bt_cbor_from_json(const char *json, size_t n, struct bt_buf *out);
/* Decode standard or URL-safe base64, padded or not, appending to out; 0 or <0. */
int bt_base64_decode_buf(const char *s, size_t n, struct bt_buf *out);

#endif
