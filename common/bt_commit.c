/*
 * NAME
 *	bt_commit - decode a repo commit and rebuild its signed bytes
 * DESCRIPTION
 *	Keys may come in any order on input (the signature covers the bytes as
 *	sent, so the original entries are copied rather than re-encoded).
 *	Unknown keys are skipped.  Used by verify.
 * DIAGNOSTICS
 *	-EBADMSG with a static reason in *why; -ENOMEM from the output buffer.
 */
#include "bt_commit.h"

#include <errno.h>
#include <string.h>

#include "bt_cbor.h"

#define FAIL(reason)                  \
	do {                          \
		if (why)              \
			*why = reason; \
		return -EBADMSG;      \
	} while (0)

static bool key_is(const struct bt_cbor_item *k, const char *s)
{
	size_t n = strlen(s);
	return k->n == n && memcmp(k->p, s, n) == 0;
}

int bt_commit_decode(const uint8_t *p, size_t n, struct bt_commit *c, const char **why)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it, k, v;
	unsigned seen = 0;
	memset(c, 0, sizeof *c);
	bt_cbor_rd_init(&r, p, n);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		FAIL("commit not a map");
	for (size_t i = 0; i < it.n; i++) {
		if (bt_cbor_next(&r, &k) || k.type != BT_CBOR_TEXT)
			FAIL("commit key");
		unsigned bit = 0;
		if (key_is(&k, "did")) {
			bit = 1;
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_TEXT)
				FAIL("commit did not text");
			c->did = (struct bt_bytes){ v.p, v.n };
		} else if (key_is(&k, "rev")) {
			bit = 2;
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_TEXT)
				FAIL("commit rev not text");
			c->rev = (struct bt_bytes){ v.p, v.n };
		} else if (key_is(&k, "sig")) {
			bit = 4;
			if (bt_cbor_next(&r, &v) || v.type != BT_CBOR_BYTES)
				FAIL("commit sig not bytes");
			c->sig = (struct bt_bytes){ v.p, v.n };
		} else if (key_is(&k, "data")) {
			bit = 8;
			if (bt_cbor_read_cid(&r, &c->data))
				FAIL("commit data not a cid");
		} else if (key_is(&k, "prev")) {
			bit = 16;
			if (bt_cbor_read_cid_or_null(&r, &c->prev, &c->has_prev))
				FAIL("commit prev not a cid or null");
		} else if (key_is(&k, "version")) {
			bit = 32;
			if (bt_cbor_next(&r, &v) || (v.type != BT_CBOR_UINT && v.type != BT_CBOR_NEGINT))
				FAIL("commit version not an integer");
			c->version = v.i;
		} else if (bt_cbor_skip(&r)) {
			FAIL("commit value");
		}
		if (seen & bit)
			FAIL("commit duplicate key");
		seen |= bit;
	}
	if (r.p != r.end)
		FAIL("commit trailing bytes");
	if ((seen & (1 | 2 | 4 | 8 | 32)) != (1 | 2 | 4 | 8 | 32))
		FAIL("commit missing did, rev, sig, data or version");
	return 0;
}

int bt_commit_unsigned(const uint8_t *p, size_t n, struct bt_buf *out)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it, k;
	int rc, sigs = 0;
	bt_cbor_rd_init(&r, p, n);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		return -EBADMSG;
	const uint8_t *body = r.p;
	/* First pass validates and counts "sig" entries; the second copies. */
	for (size_t i = 0; i < it.n; i++) {
		if (bt_cbor_next(&r, &k) || k.type != BT_CBOR_TEXT)
			return -EBADMSG;
		if (key_is(&k, "sig"))
			sigs++;
		if (bt_cbor_skip(&r))
			return -EBADMSG;
	}
	if (r.p != r.end || sigs != 1)
		return -EBADMSG;
	if ((rc = bt_cbor_w_map(out, it.n - 1)))
		return rc;
	bt_cbor_rd_init(&r, body, (size_t)(p + n - body));
	for (size_t i = 0; i < it.n; i++) {
		const uint8_t *start = r.p;
		bt_cbor_next(&r, &k);
		bool sig = key_is(&k, "sig");
		bt_cbor_skip(&r);
		if (!sig && (rc = bt_buf_append(out, start, (size_t)(r.p - start))))
			return rc;
	}
	return 0;
}
