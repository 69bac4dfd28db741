/*
 * NAME
 *	bt_cbor - DAG-CBOR pull reader over libcbor's streaming decoder, writer
 * DESCRIPTION
 *	bt_cbor_next() first checks the head byte itself (reserved or indefinite
 *	additional info, minimality, lengths against the remaining input, which
 *	also guards libcbor against absurd claimed sizes), then lets
 *	cbor_stream_decode() decode exactly that item and report it through the
 *	callbacks below.  Used by verify, store, fanout and the tools; no globals
 *	except the constant callback table.
 * DIAGNOSTICS
 *	-EBADMSG malformed or non-DAG-CBOR, -E2BIG too deep, -ENOMEM writer.
 */
#include "bt_cbor.h"

#include <cbor.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bt_cbor_rd_init(struct bt_cbor_rd *r, const uint8_t *p, size_t n)
{
	r->p = p;
	r->end = p + n;
}

/* ---- libcbor streaming callbacks: fill the item, flag what DAG-CBOR forbids ---- */

struct cb_ctx {
	struct bt_cbor_item *it;
	int bad;
};

#define CTX ((struct cb_ctx *)c)
static void cb_u8(void *c, uint8_t v) { CTX->it->type = BT_CBOR_UINT; CTX->it->u = v; }
static void cb_u16(void *c, uint16_t v) { CTX->it->type = BT_CBOR_UINT; CTX->it->u = v; }
static void cb_u32(void *c, uint32_t v) { CTX->it->type = BT_CBOR_UINT; CTX->it->u = v; }
static void cb_u64(void *c, uint64_t v) { CTX->it->type = BT_CBOR_UINT; CTX->it->u = v; }
static void cb_n8(void *c, uint8_t v) { CTX->it->type = BT_CBOR_NEGINT; CTX->it->u = v; }
static void cb_n16(void *c, uint16_t v) { CTX->it->type = BT_CBOR_NEGINT; CTX->it->u = v; }
static void cb_n32(void *c, uint32_t v) { CTX->it->type = BT_CBOR_NEGINT; CTX->it->u = v; }
static void cb_n64(void *c, uint64_t v) { CTX->it->type = BT_CBOR_NEGINT; CTX->it->u = v; }
static void cb_bytes(void *c, cbor_data p, size_t n) { CTX->it->type = BT_CBOR_BYTES; CTX->it->p = p; CTX->it->n = n; }
static void cb_text(void *c, cbor_data p, size_t n) { CTX->it->type = BT_CBOR_TEXT; CTX->it->p = p; CTX->it->n = n; }
static void cb_array(void *c, size_t n) { CTX->it->type = BT_CBOR_ARRAY; CTX->it->n = n; }
static void cb_map(void *c, size_t n) { CTX->it->type = BT_CBOR_MAP; CTX->it->n = n; }
static void cb_tag(void *c, uint64_t v) { CTX->it->type = BT_CBOR_TAG; CTX->it->u = v; }
static void cb_null(void *c) { CTX->it->type = BT_CBOR_NULL; }
static void cb_bool(void *c, bool v) { CTX->it->type = v ? BT_CBOR_TRUE : BT_CBOR_FALSE; }
static void cb_bad(void *c) { CTX->bad = 1; }
static void cb_badf(void *c, float v) { CTX->bad = 1; }
static void cb_badd(void *c, double v) { CTX->bad = 1; }
#undef CTX

/* libcbor 0.8 names: byte_string = definite, byte_string_start = indefinite;
   array_start/map_start = definite, indef_* = indefinite. */
static const struct cbor_callbacks cbs = {
	.uint8 = cb_u8, .uint16 = cb_u16, .uint32 = cb_u32, .uint64 = cb_u64,
	.negint8 = cb_n8, .negint16 = cb_n16, .negint32 = cb_n32, .negint64 = cb_n64,
	.byte_string_start = cb_bad, .byte_string = cb_bytes,
	.string = cb_text, .string_start = cb_bad,
	.indef_array_start = cb_bad, .array_start = cb_array,
	.indef_map_start = cb_bad, .map_start = cb_map,
	.tag = cb_tag,
	.float2 = cb_badf, .float4 = cb_badf, .float8 = cb_badd,
	.undefined = cb_bad, .null = cb_null, .boolean = cb_bool,
	.indef_break = cb_bad,
};

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t k;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0) {
			k = 1; cp = c & 0x1f; min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2; cp = c & 0x0f; min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3; cp = c & 0x07; min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

int bt_cbor_next(struct bt_cbor_rd *r, struct bt_cbor_item *it)
{
	if (r->p >= r->end)
		return -EBADMSG;
	size_t avail = (size_t)(r->end - r->p);
	uint8_t b0 = r->p[0];
	unsigned mt = b0 >> 5, ai = b0 & 31;
	if (ai >= 28)
		return -EBADMSG; /* reserved, or indefinite length / break */
	size_t hl = ai < 24 ? 1 : 1 + ((size_t)1 << (ai - 24));
	if (avail < hl)
		return -EBADMSG;
	uint64_t v = ai;
	if (ai >= 24) {
		v = 0;
		for (size_t k = 1; k < hl; k++)
			v = (v << 8) | r->p[k];
		if ((ai == 24 && v < 24) || (ai == 25 && v <= 0xff) || (ai == 26 && v <= 0xffff) ||
		    (ai == 27 && v <= 0xffffffffu))
			return -EBADMSG; /* not the shortest encoding */
	}
	size_t total = hl;
	switch (mt) {
	case 1:
		if (v > INT64_MAX)
			return -EBADMSG;
		break;
	case 2:
	case 3:
		if (v > avail - hl)
			return -EBADMSG;
		total = hl + (size_t)v;
		break;
	case 4:
		if (v > avail - hl)
			return -EBADMSG;
		break;
	case 5:
		if (v > (avail - hl) / 2)
			return -EBADMSG;
		break;
	case 6:
		if (v != 42)
			return -EBADMSG;
		break;
	case 7:
		if (ai < 20 || ai > 22)
			return -EBADMSG; /* only false, true, null */
		break;
	default:
		break;
	}
	memset(it, 0, sizeof *it);
	struct cb_ctx ctx = { .it = it, .bad = 0 };
	struct cbor_decoder_result res = cbor_stream_decode(r->p, total, &cbs, &ctx);
	if (res.status != CBOR_DECODER_FINISHED || ctx.bad || res.read != total)
		return -EBADMSG;
	switch (it->type) {
	case BT_CBOR_UINT:
		it->i = it->u > INT64_MAX ? INT64_MAX : (int64_t)it->u;
		break;
	case BT_CBOR_NEGINT:
		it->i = -1 - (int64_t)it->u;
		break;
	case BT_CBOR_TEXT:
		if (!utf8_ok(it->p, it->n))
			return -EBADMSG;
		break;
	default:
		break;
	}
	r->p += total;
	return 0;
}

bool bt_cbor_key_less(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	if (an != bn)
		return an < bn;
	return memcmp(a, b, an) < 0;
}

static int read_cid_body(struct bt_cbor_rd *r, struct bt_cid *out)
{
	struct bt_cbor_item it;
	int rc = bt_cbor_next(r, &it);
	if (rc)
		return rc;
	if (it.type != BT_CBOR_BYTES || it.n < 2 || it.p[0] != 0)
		return -EBADMSG;
	return bt_cid_parse(it.p + 1, it.n - 1, out);
}

int bt_cbor_read_cid(struct bt_cbor_rd *r, struct bt_cid *out)
{
	struct bt_cbor_item it;
	int rc = bt_cbor_next(r, &it);
	if (rc)
		return rc;
	if (it.type != BT_CBOR_TAG)
		return -EBADMSG;
	return read_cid_body(r, out);
}

int bt_cbor_read_cid_or_null(struct bt_cbor_rd *r, struct bt_cid *out, bool *present)
{
	if (r->p < r->end && r->p[0] == 0xf6) {
		r->p++;
		*present = false;
		return 0;
	}
	*present = true;
	return bt_cbor_read_cid(r, out);
}

/* Skip one item; strict = enforce canonical key order. */
static int skip_item(struct bt_cbor_rd *r, int depth, bool strict)
{
	struct bt_cbor_item it;
	if (depth > BT_CBOR_MAX_DEPTH)
		return -E2BIG;
	int rc = bt_cbor_next(r, &it);
	if (rc)
		return rc;
	switch (it.type) {
	case BT_CBOR_ARRAY:
		for (size_t k = 0; k < it.n; k++)
			if ((rc = skip_item(r, depth + 1, strict)))
				return rc;
		return 0;
	case BT_CBOR_MAP: {
		const uint8_t *prev = NULL;
		size_t prevn = 0;
		for (size_t k = 0; k < it.n; k++) {
			struct bt_cbor_item key;
			if ((rc = bt_cbor_next(r, &key)))
				return rc;
			if (key.type != BT_CBOR_TEXT)
				return -EBADMSG;
			if (strict && prev && !bt_cbor_key_less(prev, prevn, key.p, key.n))
				return -EBADMSG;
			prev = key.p;
			prevn = key.n;
			if ((rc = skip_item(r, depth + 1, strict)))
				return rc;
		}
		return 0;
	}
	case BT_CBOR_TAG: {
		struct bt_cid c;
		return read_cid_body(r, &c);
	}
	default:
		return 0;
	}
}

int bt_cbor_skip(struct bt_cbor_rd *r)
{
	return skip_item(r, 0, true);
}

/* ---- writer ---- */

#define HEAD_MAX 9

static int w_head(struct bt_buf *b, size_t (*enc)(size_t, unsigned char *, size_t), size_t v)
{
	int rc = bt_buf_reserve(b, HEAD_MAX);
	if (rc)
		return rc;
	size_t k = enc(v, b->p + b->len, HEAD_MAX);
	if (k == 0)
		return -ENOMEM;
	b->len += k;
	return 0;
}

int bt_cbor_w_map(struct bt_buf *b, size_t n)
{
	return w_head(b, cbor_encode_map_start, n);
}

int bt_cbor_w_array(struct bt_buf *b, size_t n)
{
	return w_head(b, cbor_encode_array_start, n);
}

int bt_cbor_w_uint(struct bt_buf *b, uint64_t v)
{
	int rc = bt_buf_reserve(b, HEAD_MAX);
	if (rc)
		return rc;
	b->len += cbor_encode_uint(v, b->p + b->len, HEAD_MAX);
	return 0;
}

int bt_cbor_w_int(struct bt_buf *b, int64_t v)
{
	if (v >= 0)
		return bt_cbor_w_uint(b, (uint64_t)v);
	int rc = bt_buf_reserve(b, HEAD_MAX);
	if (rc)
		return rc;
	b->len += cbor_encode_negint((uint64_t)(-1 - v), b->p + b->len, HEAD_MAX);
	return 0;
}

int bt_cbor_w_text(struct bt_buf *b, const void *p, size_t n)
{
	int rc = w_head(b, cbor_encode_string_start, n);
	return rc ? rc : bt_buf_append(b, p, n);
}

int bt_cbor_w_str(struct bt_buf *b, const char *s)
{
	return bt_cbor_w_text(b, s, strlen(s));
}

int bt_cbor_w_bytes(struct bt_buf *b, const void *p, size_t n)
{
	int rc = w_head(b, cbor_encode_bytestring_start, n);
	return rc ? rc : bt_buf_append(b, p, n);
}

int bt_cbor_w_bool(struct bt_buf *b, bool v)
{
	return bt_buf_putc(b, v ? 0xf5 : 0xf4);
}

int bt_cbor_w_null(struct bt_buf *b)
{
	return bt_buf_putc(b, 0xf6);
}

int bt_cbor_w_cid(struct bt_buf *b, const struct bt_cid *c)
{
	int rc = bt_buf_reserve(b, 2 + HEAD_MAX + 1 + c->len);
	if (rc)
		return rc;
	b->len += cbor_encode_tag(42, b->p + b->len, HEAD_MAX);
	b->len += cbor_encode_bytestring_start((size_t)c->len + 1, b->p + b->len, HEAD_MAX);
	b->p[b->len++] = 0;
	memcpy(b->p + b->len, c->b, c->len);
	b->len += c->len;
	return 0;
}

/* ---- canonicalize ---- */

struct centry {
	const uint8_t *k;
	size_t kn;
	const uint8_t *v, *vend;
};

static int centry_cmp(const void *a, const void *b)
{
	const struct centry *x = a, *y = b;
	if (x->kn != y->kn)
		return x->kn < y->kn ? -1 : 1;
	return memcmp(x->k, y->k, x->kn);
}

static int canon(struct bt_cbor_rd *r, struct bt_buf *out, int depth)
{
	struct bt_cbor_item it;
	if (depth > BT_CBOR_MAX_DEPTH)
		return -E2BIG;
	int rc = bt_cbor_next(r, &it);
	if (rc)
		return rc;
	switch (it.type) {
	case BT_CBOR_UINT:
		return bt_cbor_w_uint(out, it.u);
	case BT_CBOR_NEGINT:
		return bt_cbor_w_int(out, it.i);
	case BT_CBOR_BYTES:
		return bt_cbor_w_bytes(out, it.p, it.n);
	case BT_CBOR_TEXT:
		return bt_cbor_w_text(out, it.p, it.n);
	case BT_CBOR_FALSE:
		return bt_cbor_w_bool(out, false);
	case BT_CBOR_TRUE:
		return bt_cbor_w_bool(out, true);
	case BT_CBOR_NULL:
		return bt_cbor_w_null(out);
	case BT_CBOR_TAG: {
		struct bt_cid c;
		if ((rc = read_cid_body(r, &c)))
			return rc;
		return bt_cbor_w_cid(out, &c);
	}
	case BT_CBOR_ARRAY:
		if ((rc = bt_cbor_w_array(out, it.n)))
			return rc;
		for (size_t k = 0; k < it.n; k++)
			if ((rc = canon(r, out, depth + 1)))
				return rc;
		return 0;
	case BT_CBOR_MAP: {
		struct centry *e = it.n ? calloc(it.n, sizeof *e) : NULL;
		if (it.n && !e)
			return -ENOMEM;
		for (size_t k = 0; k < it.n && !rc; k++) {
			struct bt_cbor_item key;
			if ((rc = bt_cbor_next(r, &key)))
				break;
			if (key.type != BT_CBOR_TEXT) {
				rc = -EBADMSG;
				break;
			}
			e[k].k = key.p;
			e[k].kn = key.n;
			e[k].v = r->p;
			rc = skip_item(r, depth + 1, false);
			e[k].vend = r->p;
		}
		if (!rc && it.n)
			qsort(e, it.n, sizeof *e, centry_cmp);
		for (size_t k = 1; k < it.n && !rc; k++)
			if (centry_cmp(&e[k - 1], &e[k]) == 0)
				rc = -EBADMSG; /* duplicate key */
		if (!rc)
			rc = bt_cbor_w_map(out, it.n);
		for (size_t k = 0; k < it.n && !rc; k++) {
			struct bt_cbor_rd sub;
			bt_cbor_rd_init(&sub, e[k].v, (size_t)(e[k].vend - e[k].v));
			if (!(rc = bt_cbor_w_text(out, e[k].k, e[k].kn)))
				rc = canon(&sub, out, depth + 1);
		}
		free(e);
		return rc;
	}
	}
	return -EBADMSG;
}

int bt_cbor_canonicalize(const uint8_t *p, size_t n, struct bt_buf *out)
{
	struct bt_cbor_rd r;
	bt_cbor_rd_init(&r, p, n);
	int rc = canon(&r, out, 0);
	if (rc)
		return rc;
	return r.p == r.end ? 0 : -EBADMSG;
}

/* ---- JSON data model -> DAG-CBOR (tools and tests) ---- */

#include <jansson.h>
#include <math.h>

int bt_base64_decode_buf(const char *s, size_t n, struct bt_buf *out)
{
	uint32_t acc = 0;
	int bits = 0;
	while (n > 0 && s[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int v;
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '+' || c == '-')
			v = 62;
		else if (c == '/' || c == '_')
			v = 63;
		else
			return -EBADMSG;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			int rc = bt_buf_putc(out, (uint8_t)(acc >> bits));
			if (rc)
				return rc;
		}
		acc &= (1u << bits) - 1;
	}
	return bits >= 6 ? -EBADMSG : 0;
}

struct jkey {
	const char *k;
	size_t kn;
	json_t *v;
};

static int jkey_cmp(const void *a, const void *b)
{
	const struct jkey *x = a, *y = b;
	if (x->kn != y->kn)
		return x->kn < y->kn ? -1 : 1;
	return memcmp(x->k, y->k, x->kn);
}

static int from_json(json_t *j, struct bt_buf *out, int depth)
{
	if (depth > BT_CBOR_MAX_DEPTH)
		return -E2BIG;
	switch (json_typeof(j)) {
	case JSON_NULL:
		return bt_cbor_w_null(out);
	case JSON_TRUE:
		return bt_cbor_w_bool(out, true);
	case JSON_FALSE:
		return bt_cbor_w_bool(out, false);
	case JSON_INTEGER:
		return bt_cbor_w_int(out, (int64_t)json_integer_value(j));
	case JSON_REAL: {
		double d = json_real_value(j);
		if (d != floor(d) || fabs(d) > 9007199254740991.0)
			return -EINVAL;
		return bt_cbor_w_int(out, (int64_t)d);
	}
	case JSON_STRING:
		return bt_cbor_w_text(out, json_string_value(j), json_string_length(j));
	case JSON_ARRAY: {
		int rc = bt_cbor_w_array(out, json_array_size(j));
		for (size_t i = 0; i < json_array_size(j) && !rc; i++)
			rc = from_json(json_array_get(j, i), out, depth + 1);
		return rc;
	}
	case JSON_OBJECT: {
		size_t n = json_object_size(j);
		json_t *v;
		if (n == 1 && (v = json_object_get(j, "$link")) && json_is_string(v)) {
			struct bt_cid c;
			if (bt_cid_from_str(json_string_value(v), &c))
				return -EBADMSG;
			return bt_cbor_w_cid(out, &c);
		}
		if (n == 1 && (v = json_object_get(j, "$bytes")) && json_is_string(v)) {
			struct bt_buf tmp = { 0 };
			int rc = bt_base64_decode_buf(json_string_value(v), json_string_length(v), &tmp);
			if (!rc)
				rc = bt_cbor_w_bytes(out, tmp.p ? tmp.p : (const uint8_t *)"", tmp.len);
			bt_buf_free(&tmp);
			return rc;
		}
		struct jkey *e = n ? calloc(n, sizeof *e) : NULL;
		if (n && !e)
			return -ENOMEM;
		const char *k;
		size_t i = 0;
		json_object_foreach(j, k, v) {
			e[i].k = k;
			e[i].kn = strlen(k);
			e[i].v = v;
			i++;
		}
		if (n)
			qsort(e, n, sizeof *e, jkey_cmp);
		int rc = bt_cbor_w_map(out, n);
		for (i = 0; i < n && !rc; i++) {
			rc = bt_cbor_w_text(out, e[i].k, e[i].kn);
			if (!rc)
				rc = from_json(e[i].v, out, depth + 1);
		}
		free(e);
		return rc;
	}
	}
	return -EBADMSG;
}

int bt_cbor_from_json(const char *json, size_t n, struct bt_buf *out)
{
	json_error_t err;
	json_t *j = json_loadb(json, n, JSON_DECODE_ANY, &err);
	if (!j)
		return -EBADMSG;
	size_t start = out->len;
	int rc = from_json(j, out, 0);
	if (rc)
		out->len = start;
	json_decref(j);
	return rc;
}
