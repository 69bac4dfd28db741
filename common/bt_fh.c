/*
 * NAME
 *	bt_fh - firehose frame decode/encode
 * DESCRIPTION
 *	Decoding accepts body keys in any order (we re-encode canonically
 *	anyway) but rejects duplicates of known keys, wrong value types and
 *	trailing bytes.  Encoding writes keys in canonical DAG-CBOR order
 *	(length, then bytes); the orders below are spelled out per type.
 * DIAGNOSTICS
 *	-EBADMSG / -E2BIG / -EINVAL / -ENOMEM; decode reasons are static strings.
 */
#include "bt_fh.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bt_cbor.h"

#define FAIL(code, reason)             \
	do {                           \
		if (why)               \
			*why = reason; \
		return code;           \
	} while (0)

static bool key_is(const struct bt_cbor_item *k, const char *s)
{
	size_t n = strlen(s);
	return k->n == n && memcmp(k->p, s, n) == 0;
}

static const char *const type_names[] = {
	[BT_FH_COMMIT] = "#commit", [BT_FH_SYNC] = "#sync", [BT_FH_IDENTITY] = "#identity",
	[BT_FH_ACCOUNT] = "#account", [BT_FH_INFO] = "#info",
};

const char *bt_fh_type_name(enum bt_fh_type t)
{
	if (t >= BT_FH_COMMIT && t <= BT_FH_INFO)
		return type_names[t];
	return NULL;
}

/* Header {t, op}: sets op, t, type. */
static int read_header(struct bt_cbor_rd *r, int *op, struct bt_bytes *t, enum bt_fh_type *type,
		       const char **why)
{
	struct bt_cbor_item it, k, v;
	bool have_op = false, have_t = false;
	*type = BT_FH_UNKNOWN;
	t->p = NULL;
	t->n = 0;
	if (bt_cbor_next(r, &it) || it.type != BT_CBOR_MAP)
		FAIL(-EBADMSG, "header not a map");
	for (size_t i = 0; i < it.n; i++) {
		if (bt_cbor_next(r, &k) || k.type != BT_CBOR_TEXT)
			FAIL(-EBADMSG, "header key");
		if (key_is(&k, "op")) {
			if (have_op || bt_cbor_next(r, &v) || (v.type != BT_CBOR_UINT && v.type != BT_CBOR_NEGINT))
				FAIL(-EBADMSG, "header op");
			if (v.i != 1 && v.i != -1)
				FAIL(-EBADMSG, "header op not 1 or -1");
			*op = (int)v.i;
			have_op = true;
		} else if (key_is(&k, "t")) {
			if (have_t || bt_cbor_next(r, &v) || v.type != BT_CBOR_TEXT)
				FAIL(-EBADMSG, "header t");
			*t = (struct bt_bytes){ v.p, v.n };
			have_t = true;
		} else if (bt_cbor_skip(r)) {
			FAIL(-EBADMSG, "header value");
		}
	}
	if (!have_op)
		FAIL(-EBADMSG, "header without op");
	if (*op == -1) {
		*type = BT_FH_ERROR;
		return 0;
	}
	if (!have_t)
		FAIL(-EBADMSG, "header without t");
	for (int ty = BT_FH_COMMIT; ty <= BT_FH_INFO; ty++)
		if (bt_bytes_eq_str(*t, type_names[ty]))
			*type = (enum bt_fh_type)ty;
	return 0;
}

int bt_fh_peek(const uint8_t *p, size_t n, struct bt_fh_peek *out)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it, k, v;
	memset(out, 0, sizeof *out);
	bt_cbor_rd_init(&r, p, n);
	int rc = read_header(&r, &out->op, &out->t, &out->type, NULL);
	if (rc)
		return rc;
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		return -EBADMSG;
	for (size_t i = 0; i < it.n; i++) {
		if (bt_cbor_next(&r, &k) || k.type != BT_CBOR_TEXT)
			return -EBADMSG;
		struct bt_bytes *dst = NULL;
		if (key_is(&k, "seq")) {
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_UINT)
				return -EBADMSG;
			out->has_seq = true;
			out->seq = v.i;
			continue;
		}
		if (key_is(&k, "error"))
			dst = &out->error;
		else if (key_is(&k, out->type == BT_FH_COMMIT ? "repo" : "did"))
			dst = &out->did;
		if (dst) {
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_TEXT)
				return -EBADMSG;
			*dst = (struct bt_bytes){ v.p, v.n };
		} else if (bt_cbor_skip(&r)) {
			return -EBADMSG;
		}
	}
	return r.p == r.end ? 0 : -EBADMSG;
}

static int read_text(struct bt_cbor_rd *r, struct bt_bytes *out)
{
	struct bt_cbor_item v;
	if (bt_cbor_next(r, &v) || v.type != BT_CBOR_TEXT)
		return -EBADMSG;
	*out = (struct bt_bytes){ v.p, v.n };
	return 0;
}

/* Text or null; *has says which. */
static int read_text_opt(struct bt_cbor_rd *r, struct bt_bytes *out, bool *has)
{
	if (r->p < r->end && r->p[0] == 0xf6) {
		r->p++;
		*has = false;
		return 0;
	}
	*has = true;
	return read_text(r, out);
}

static int read_bool(struct bt_cbor_rd *r, bool *out)
{
	struct bt_cbor_item v;
	if (bt_cbor_next(r, &v) || (v.type != BT_CBOR_TRUE && v.type != BT_CBOR_FALSE))
		return -EBADMSG;
	*out = v.type == BT_CBOR_TRUE;
	return 0;
}

static int read_op(struct bt_cbor_rd *r, struct bt_fh_op *op, const char **why)
{
	struct bt_cbor_item it, k;
	unsigned seen = 0;
	memset(op, 0, sizeof *op);
	if (bt_cbor_next(r, &it) || it.type != BT_CBOR_MAP)
		FAIL(-EBADMSG, "op not a map");
	for (size_t i = 0; i < it.n; i++) {
		unsigned bit = 0;
		int bad = 0;
		if (bt_cbor_next(r, &k) || k.type != BT_CBOR_TEXT)
			FAIL(-EBADMSG, "op key");
		if (key_is(&k, "action")) {
			bit = 1;
			bad = read_text(r, &op->action);
		} else if (key_is(&k, "path")) {
			bit = 2;
			bad = read_text(r, &op->path);
		} else if (key_is(&k, "cid")) {
			bit = 4;
			bad = bt_cbor_read_cid_or_null(r, &op->cid, &op->has_cid);
		} else if (key_is(&k, "prev")) {
			bit = 8;
			bad = bt_cbor_read_cid_or_null(r, &op->prev, &op->has_prev);
		} else {
			bad = bt_cbor_skip(r);
		}
		if (bad)
			FAIL(-EBADMSG, "op field has the wrong type");
		if (seen & bit)
			FAIL(-EBADMSG, "op duplicate key");
		seen |= bit;
	}
	if ((seen & 3) != 3)
		FAIL(-EBADMSG, "op without action or path");
	return 0;
}

enum {
	F_SEQ = 1 << 0, F_DID = 1 << 1, F_REV = 1 << 2, F_SINCE = 1 << 3, F_TIME = 1 << 4,
	F_HANDLE = 1 << 5, F_STATUS = 1 << 6, F_NAME = 1 << 7, F_MESSAGE = 1 << 8, F_ERROR = 1 << 9,
	F_ACTIVE = 1 << 10, F_REBASE = 1 << 11, F_TOOBIG = 1 << 12, F_COMMIT = 1 << 13,
	F_PREVDATA = 1 << 14, F_BLOCKS = 1 << 15, F_OPS = 1 << 16, F_BLOBS = 1 << 17,
};

int bt_fh_decode(const uint8_t *p, size_t n, struct bt_fh_msg *m, const char **why)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it, k, v;
	unsigned seen = 0;
	int rc;
	/* The ops array is large; only clear what precedes it. */
	memset(m, 0, offsetof(struct bt_fh_msg, ops));
	m->n_ops = 0;
	m->blobs = (struct bt_bytes){ NULL, 0 };
	bt_cbor_rd_init(&r, p, n);
	if ((rc = read_header(&r, &m->op, &m->t, &m->type, why)))
		return rc;
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		FAIL(-EBADMSG, "body not a map");
	const char *did_key = m->type == BT_FH_COMMIT ? "repo" : "did";
	for (size_t i = 0; i < it.n; i++) {
		unsigned bit = 0;
		int bad = 0;
		memset(&v, 0, sizeof v);
		if (bt_cbor_next(&r, &k) || k.type != BT_CBOR_TEXT)
			FAIL(-EBADMSG, "body key");
		if (key_is(&k, "seq")) {
			bit = F_SEQ;
			bad = bt_cbor_next(&r, &v) || v.type != BT_CBOR_UINT || v.u > INT64_MAX;
			m->seq = v.i;
			m->has_seq = !bad;
		} else if (key_is(&k, did_key)) {
			bit = F_DID;
			bad = read_text(&r, &m->did);
		} else if (key_is(&k, "rev")) {
			bit = F_REV;
			bad = read_text(&r, &m->rev);
		} else if (key_is(&k, "since")) {
			bit = F_SINCE;
			bad = read_text_opt(&r, &m->since, &m->has_since);
		} else if (key_is(&k, "time")) {
			bit = F_TIME;
			bad = read_text(&r, &m->time);
		} else if (key_is(&k, "handle")) {
			bit = F_HANDLE;
			bad = read_text_opt(&r, &m->handle, &m->has_handle);
		} else if (key_is(&k, "status")) {
			bit = F_STATUS;
			bad = read_text_opt(&r, &m->status, &m->has_status);
		} else if (key_is(&k, "name")) {
			bit = F_NAME;
			bad = read_text(&r, &m->name);
		} else if (key_is(&k, "message")) {
			bit = F_MESSAGE;
			bad = read_text_opt(&r, &m->message, &m->has_message);
		} else if (key_is(&k, "error")) {
			bit = F_ERROR;
			bad = read_text(&r, &m->error);
		} else if (key_is(&k, "active")) {
			bit = F_ACTIVE;
			bad = read_bool(&r, &m->active);
		} else if (key_is(&k, "rebase")) {
			bit = F_REBASE;
			bad = read_bool(&r, &m->rebase);
		} else if (key_is(&k, "tooBig")) {
			bit = F_TOOBIG;
			bad = read_bool(&r, &m->too_big);
		} else if (key_is(&k, "commit")) {
			bit = F_COMMIT;
			bad = bt_cbor_read_cid(&r, &m->commit);
		} else if (key_is(&k, "prevData")) {
			bit = F_PREVDATA;
			bad = bt_cbor_read_cid_or_null(&r, &m->prev_data, &m->has_prev_data);
		} else if (key_is(&k, "blocks")) {
			bit = F_BLOCKS;
			bad = bt_cbor_next(&r, &v) || v.type != BT_CBOR_BYTES;
			m->blocks = (struct bt_bytes){ v.p, v.n };
		} else if (key_is(&k, "ops")) {
			bit = F_OPS;
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_ARRAY)
				FAIL(-EBADMSG, "ops not an array");
			if (v.n > BT_FH_MAX_OPS)
				FAIL(-E2BIG, "too many ops");
			for (size_t j = 0; j < v.n; j++)
				if ((rc = read_op(&r, &m->ops[j], why)))
					return rc;
			m->n_ops = v.n;
		} else if (key_is(&k, "blobs")) {
			bit = F_BLOBS;
			const uint8_t *start = r.p;
			if (r.p < r.end && r.p[0] == 0xf6) {
				r.p++; /* null: treated as no blobs */
			} else {
				bad = r.p >= r.end || (r.p[0] >> 5) != 4 || bt_cbor_skip(&r);
				if (!bad && r.p - start > 1)
					m->blobs = (struct bt_bytes){ start, (size_t)(r.p - start) };
			}
		} else {
			bad = bt_cbor_skip(&r);
		}
		if (bad)
			FAIL(-EBADMSG, "body field has the wrong type");
		if (seen & bit)
			FAIL(-EBADMSG, "body duplicate key");
		seen |= bit;
	}
	if (r.p != r.end)
		FAIL(-EBADMSG, "trailing bytes after body");
	unsigned need = 0;
	switch (m->type) {
	case BT_FH_COMMIT:
		need = F_SEQ | F_DID | F_REV | F_COMMIT | F_BLOCKS | F_OPS;
		break;
	case BT_FH_SYNC:
		need = F_SEQ | F_DID | F_REV | F_BLOCKS;
		break;
	case BT_FH_IDENTITY:
		need = F_SEQ | F_DID;
		break;
	case BT_FH_ACCOUNT:
		need = F_SEQ | F_DID | F_ACTIVE;
		break;
	case BT_FH_INFO:
		need = F_NAME;
		break;
	case BT_FH_ERROR:
		need = F_ERROR;
		break;
	case BT_FH_UNKNOWN:
		break;
	}
	if ((seen & need) != need)
		FAIL(-EBADMSG, "required field missing");
	return 0;
}

/* ---- encode ---- */

static int w_key(struct bt_buf *b, const char *k)
{
	return bt_cbor_w_str(b, k);
}

static int w_bytes_text(struct bt_buf *b, struct bt_bytes s)
{
	return bt_cbor_w_text(b, s.p ? s.p : (const uint8_t *)"", s.n);
}

static int w_header(struct bt_buf *b, const char *t)
{
	int rc = bt_cbor_w_map(b, 2);
	if (!rc)
		rc = w_key(b, "t");
	if (!rc)
		rc = bt_cbor_w_str(b, t);
	if (!rc)
		rc = w_key(b, "op");
	if (!rc)
		rc = bt_cbor_w_int(b, 1);
	return rc;
}

/* Key "seq" and remember where its value goes. */
static int w_seq_hole(struct bt_buf *b, size_t *seq_off)
{
	int rc = w_key(b, "seq");
	*seq_off = b->len;
	return rc;
}

static int w_time(struct bt_buf *b, struct bt_bytes t)
{
	if (t.p)
		return w_bytes_text(b, t);
	char s[40];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	k += (size_t)snprintf(s + k, sizeof s - k, ".%03ldZ", ts.tv_nsec / 1000000);
	return bt_cbor_w_text(b, s, k);
}

static int w_op(struct bt_buf *b, const struct bt_fh_op *op)
{
	/* canonical order: cid, path, prev, action */
	int rc = bt_cbor_w_map(b, 3 + (op->has_prev ? 1 : 0));
	if (!rc)
		rc = w_key(b, "cid");
	if (!rc)
		rc = op->has_cid ? bt_cbor_w_cid(b, &op->cid) : bt_cbor_w_null(b);
	if (!rc)
		rc = w_key(b, "path");
	if (!rc)
		rc = w_bytes_text(b, op->path);
	if (!rc && op->has_prev) {
		rc = w_key(b, "prev");
		if (!rc)
			rc = bt_cbor_w_cid(b, &op->prev);
	}
	if (!rc)
		rc = w_key(b, "action");
	if (!rc)
		rc = w_bytes_text(b, op->action);
	return rc;
}

static int enc_commit(const struct bt_fh_msg *m, struct bt_buf *b, size_t *seq_off)
{
	/* ops rev seq repo time blobs since blocks commit rebase tooBig prevData */
	int rc = w_header(b, "#commit");
	if (!rc)
		rc = bt_cbor_w_map(b, 11 + (m->has_prev_data ? 1 : 0));
	if (!rc)
		rc = w_key(b, "ops");
	if (!rc)
		rc = bt_cbor_w_array(b, m->n_ops);
	for (size_t i = 0; i < m->n_ops && !rc; i++)
		rc = w_op(b, &m->ops[i]);
	if (!rc)
		rc = w_key(b, "rev");
	if (!rc)
		rc = w_bytes_text(b, m->rev);
	if (!rc)
		rc = w_seq_hole(b, seq_off);
	if (!rc)
		rc = w_key(b, "repo");
	if (!rc)
		rc = w_bytes_text(b, m->did);
	if (!rc)
		rc = w_key(b, "time");
	if (!rc)
		rc = w_time(b, m->time);
	if (!rc)
		rc = w_key(b, "blobs");
	if (!rc)
		rc = m->blobs.n ? bt_buf_append(b, m->blobs.p, m->blobs.n) : bt_cbor_w_array(b, 0);
	if (!rc)
		rc = w_key(b, "since");
	if (!rc)
		rc = m->has_since ? w_bytes_text(b, m->since) : bt_cbor_w_null(b);
	if (!rc)
		rc = w_key(b, "blocks");
	if (!rc)
		rc = bt_cbor_w_bytes(b, m->blocks.p ? m->blocks.p : (const uint8_t *)"", m->blocks.n);
	if (!rc)
		rc = w_key(b, "commit");
	if (!rc)
		rc = bt_cbor_w_cid(b, &m->commit);
	if (!rc)
		rc = w_key(b, "rebase");
	if (!rc)
		rc = bt_cbor_w_bool(b, m->rebase);
	if (!rc)
		rc = w_key(b, "tooBig");
	if (!rc)
		rc = bt_cbor_w_bool(b, m->too_big);
	if (!rc && m->has_prev_data) {
		rc = w_key(b, "prevData");
		if (!rc)
			rc = bt_cbor_w_cid(b, &m->prev_data);
	}
	return rc;
}

static int enc_sync(const struct bt_fh_msg *m, struct bt_buf *b, size_t *seq_off)
{
	/* did rev seq time blocks */
	int rc = w_header(b, "#sync");
	if (!rc)
		rc = bt_cbor_w_map(b, 5);
	if (!rc)
		rc = w_key(b, "did");
	if (!rc)
		rc = w_bytes_text(b, m->did);
	if (!rc)
		rc = w_key(b, "rev");
	if (!rc)
		rc = w_bytes_text(b, m->rev);
	if (!rc)
		rc = w_seq_hole(b, seq_off);
	if (!rc)
		rc = w_key(b, "time");
	if (!rc)
		rc = w_time(b, m->time);
	if (!rc)
		rc = w_key(b, "blocks");
	if (!rc)
		rc = bt_cbor_w_bytes(b, m->blocks.p ? m->blocks.p : (const uint8_t *)"", m->blocks.n);
	return rc;
}

static int enc_identity(const struct bt_fh_msg *m, struct bt_buf *b, size_t *seq_off)
{
	/* did seq time handle? */
	int rc = w_header(b, "#identity");
	if (!rc)
		rc = bt_cbor_w_map(b, 3 + (m->has_handle ? 1 : 0));
	if (!rc)
		rc = w_key(b, "did");
	if (!rc)
		rc = w_bytes_text(b, m->did);
	if (!rc)
		rc = w_seq_hole(b, seq_off);
	if (!rc)
		rc = w_key(b, "time");
	if (!rc)
		rc = w_time(b, m->time);
	if (!rc && m->has_handle) {
		rc = w_key(b, "handle");
		if (!rc)
			rc = w_bytes_text(b, m->handle);
	}
	return rc;
}

static int enc_account(const struct bt_fh_msg *m, struct bt_buf *b, size_t *seq_off)
{
	/* did seq time active status? */
	int rc = w_header(b, "#account");
	if (!rc)
		rc = bt_cbor_w_map(b, 4 + (m->has_status ? 1 : 0));
	if (!rc)
		rc = w_key(b, "did");
	if (!rc)
		rc = w_bytes_text(b, m->did);
	if (!rc)
		rc = w_seq_hole(b, seq_off);
	if (!rc)
		rc = w_key(b, "time");
	if (!rc)
		rc = w_time(b, m->time);
	if (!rc)
		rc = w_key(b, "active");
	if (!rc)
		rc = bt_cbor_w_bool(b, m->active);
	if (!rc && m->has_status) {
		rc = w_key(b, "status");
		if (!rc)
			rc = w_bytes_text(b, m->status);
	}
	return rc;
}

/* #info / error body: {first, message?} (first = "name" or "error"). */
static int enc_named(struct bt_buf *b, const char *first, const void *v, size_t vn, const void *msg,
		     size_t msgn)
{
	int rc = bt_cbor_w_map(b, 1 + (msg ? 1 : 0));
	if (!rc)
		rc = w_key(b, first);
	if (!rc)
		rc = bt_cbor_w_text(b, v, vn);
	if (!rc && msg) {
		rc = w_key(b, "message");
		if (!rc)
			rc = bt_cbor_w_text(b, msg, msgn);
	}
	return rc;
}

static int w_error_header(struct bt_buf *b)
{
	int rc = bt_cbor_w_map(b, 1);
	if (!rc)
		rc = w_key(b, "op");
	if (!rc)
		rc = bt_cbor_w_int(b, -1);
	return rc;
}

int bt_fh_encode_noseq(const struct bt_fh_msg *m, struct bt_buf *out, size_t *seq_off)
{
	size_t start = out->len;
	int rc;
	*seq_off = SIZE_MAX;
	switch (m->type) {
	case BT_FH_COMMIT:
		if (m->n_ops > BT_FH_MAX_OPS || !m->commit.len)
			return -EINVAL;
		rc = enc_commit(m, out, seq_off);
		break;
	case BT_FH_SYNC:
		rc = enc_sync(m, out, seq_off);
		break;
	case BT_FH_IDENTITY:
		rc = enc_identity(m, out, seq_off);
		break;
	case BT_FH_ACCOUNT:
		rc = enc_account(m, out, seq_off);
		break;
	case BT_FH_INFO:
		rc = w_header(out, "#info");
		if (!rc)
			rc = enc_named(out, "name", m->name.p ? m->name.p : (const uint8_t *)"", m->name.n,
				       m->has_message ? (m->message.p ? m->message.p : (const uint8_t *)"") : NULL,
				       m->message.n);
		break;
	case BT_FH_ERROR:
		rc = w_error_header(out);
		if (!rc)
			rc = enc_named(out, "error", m->error.p ? m->error.p : (const uint8_t *)"", m->error.n,
				       m->has_message ? (m->message.p ? m->message.p : (const uint8_t *)"") : NULL,
				       m->message.n);
		break;
	default:
		return -EINVAL;
	}
	if (rc) {
		out->len = start;
		*seq_off = SIZE_MAX;
	}
	return rc;
}

int bt_fh_splice_seq(const uint8_t *p, size_t n, size_t seq_off, uint64_t seq, struct bt_buf *out)
{
	if (seq_off > n)
		return -EINVAL;
	int rc = bt_buf_reserve(out, n + 9);
	if (!rc)
		rc = bt_buf_append(out, p, seq_off);
	if (!rc)
		rc = bt_cbor_w_uint(out, seq);
	if (!rc)
		rc = bt_buf_append(out, p + seq_off, n - seq_off);
	return rc;
}

int bt_fh_encode_error(struct bt_buf *out, const char *error, const char *message)
{
	int rc = w_error_header(out);
	if (!rc)
		rc = enc_named(out, "error", error, strlen(error), message, message ? strlen(message) : 0);
	return rc;
}

int bt_fh_encode_info(struct bt_buf *out, const char *name, const char *message)
{
	int rc = w_header(out, "#info");
	if (!rc)
		rc = enc_named(out, "name", name, strlen(name), message, message ? strlen(message) : 0);
	return rc;
}
