/*
 * NAME
 *	bt_car - CARv1 reader and writer
 * DESCRIPTION
 *	Layout: varint(header length) header{roots, version} then repeated
 *	varint(len) CID data.  Blocks may be out of order or duplicated.  Used by
 *	verify (commit checks), store and the tools.
 * DIAGNOSTICS
 *	Negative errno codes; a static reason string through *why.
 */
#include "bt_car.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "bt_cbor.h"

#define DEFAULT_MAX_BLOCKS 100000

void bt_car_init(struct bt_car *car, size_t max_blocks)
{
	memset(car, 0, sizeof *car);
	car->max_blocks = max_blocks ? max_blocks : DEFAULT_MAX_BLOCKS;
}

void bt_car_free(struct bt_car *car)
{
	if (!car)
		return;
	free(car->blocks);
	free(car->idx);
	memset(car, 0, sizeof *car);
}

#define FAIL(code, reason)            \
	do {                          \
		if (why)              \
			*why = reason; \
		return code;          \
	} while (0)

static int parse_header(struct bt_car *car, const uint8_t *p, size_t n, const char **why)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it;
	bool have_version = false, have_roots = false;
	bt_cbor_rd_init(&r, p, n);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP)
		FAIL(-EBADMSG, "car header not a map");
	for (size_t k = 0; k < it.n; k++) {
		struct bt_cbor_item key, v;
		if (bt_cbor_next(&r, &key) || key.type != BT_CBOR_TEXT)
			FAIL(-EBADMSG, "car header key");
		if (key.n == 7 && !memcmp(key.p, "version", 7)) {
			if (have_version || bt_cbor_next(&r, &v) || v.type != BT_CBOR_UINT || v.u != 1)
				FAIL(-EBADMSG, "car version not 1");
			have_version = true;
		} else if (key.n == 5 && !memcmp(key.p, "roots", 5)) {
			if (have_roots || bt_cbor_next(&r, &v) || v.type != BT_CBOR_ARRAY || v.n == 0)
				FAIL(-EBADMSG, "car roots not a non-empty array");
			for (size_t j = 0; j < v.n; j++) {
				struct bt_cid c;
				if (bt_cbor_read_cid(&r, &c))
					FAIL(-EBADMSG, "car root not a cid");
				if (j == 0)
					car->root = c;
			}
			car->n_roots = v.n;
			have_roots = true;
		} else if (bt_cbor_skip(&r)) {
			FAIL(-EBADMSG, "car header value");
		}
	}
	if (r.p != r.end)
		FAIL(-EBADMSG, "car header trailing bytes");
	if (!have_version || !have_roots)
		FAIL(-EBADMSG, "car header missing version or roots");
	return 0;
}

static int build_index(struct bt_car *car, const char **why);

int bt_car_parse(struct bt_car *car, const uint8_t *p, size_t n, const char **why)
{
	uint64_t len;
	size_t off = 0;
	int k, rc;
	car->n_blocks = 0;
	car->indexed = false;
	car->n_roots = 0;
	car->root.len = 0;
	if (car->max_blocks == 0)
		car->max_blocks = DEFAULT_MAX_BLOCKS;
	if ((k = bt_varint_read(p, n, &len)) < 0)
		FAIL(-EBADMSG, "car header length");
	off = (size_t)k;
	if (len == 0 || len > n - off)
		FAIL(-EBADMSG, "car header truncated");
	if ((rc = parse_header(car, p + off, (size_t)len, why)))
		return rc;
	off += (size_t)len;
	while (off < n) {
		if ((k = bt_varint_read(p + off, n - off, &len)) < 0)
			FAIL(-EBADMSG, "car block length");
		off += (size_t)k;
		if (len == 0 || len > n - off)
			FAIL(-EBADMSG, "car block truncated");
		int cl = bt_cid_prefix_len(p + off, (size_t)len);
		if (cl < 0)
			FAIL(-EBADMSG, "car block cid");
		if (car->n_blocks == car->max_blocks)
			FAIL(-E2BIG, "car has too many blocks");
		if (car->n_blocks == car->cap) {
			size_t nc = car->cap ? car->cap * 2 : 16;
			if (nc > car->max_blocks)
				nc = car->max_blocks;
			struct bt_car_block *nb = realloc(car->blocks, nc * sizeof *nb);
			if (!nb)
				FAIL(-ENOMEM, "out of memory");
			car->blocks = nb;
			car->cap = nc;
		}
		struct bt_car_block *b = &car->blocks[car->n_blocks];
		bt_cid_parse(p + off, (size_t)cl, &b->cid);
		b->data = p + off + cl;
		b->len = (size_t)len - (size_t)cl;
		rc = bt_cid_check_block(&b->cid, b->data, b->len);
		if (rc == -ENOTSUP)
			FAIL(-EBADMSG, "car block hash not sha-256");
		if (rc)
			FAIL(-EBADMSG, "car block hash mismatch");
		car->n_blocks++;
		off += (size_t)len;
	}
	return build_index(car, why);
}

/* Slot hash of a CID: its last 16 bytes (the tail of a sha-256 digest for every block a parse
   accepts) mixed with the reader's seed.  Not cryptographic; the seed keeps a sender from
   choosing digests that pile into one probe run without knowing it. */
static uint64_t cid_hash(const struct bt_cid *c, uint64_t seed)
{
	uint64_t a = 0, b = 0;
	size_t n = c->len < 16 ? c->len : 16;
	const uint8_t *t = c->b + c->len - n;
	uint8_t buf[16] = { 0 };
	memcpy(buf, t, n);
	memcpy(&a, buf, 8);
	memcpy(&b, buf + 8, 8);
	uint64_t h = (a ^ seed) * 0x9e3779b97f4a7c15ull;
	h ^= h >> 29;
	h = (h ^ b ^ (seed >> 17) ^ c->len) * 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return h;
}

/* Tests replace the slot hash to force every CID into one probe run (test_car_index). */
#ifndef BT_CAR_SLOT_HASH
#define BT_CAR_SLOT_HASH cid_hash
#endif

/* Index blocks[0..n_blocks): the first of equal CIDs wins (bt_car_get's contract). */
static int build_index(struct bt_car *car, const char **why)
{
	size_t want = 16;
	while (want < car->n_blocks * 2)
		want <<= 1;
	if (want > car->idx_cap) {
		uint32_t *ni = realloc(car->idx, want * sizeof *ni);
		if (!ni)
			FAIL(-ENOMEM, "out of memory");
		car->idx = ni;
		car->idx_cap = want;
	}
	if (!car->idx_seed) {
		if (RAND_bytes((unsigned char *)&car->idx_seed, sizeof car->idx_seed) != 1)
			car->idx_seed = (uint64_t)(uintptr_t)car ^ 0x2545f4914f6cdd1dull;
		car->idx_seed |= 1;
	}
	car->idx_mask = want - 1;
	memset(car->idx, 0, want * sizeof *car->idx);
	for (size_t i = 0; i < car->n_blocks; i++) {
		const struct bt_cid *c = &car->blocks[i].cid;
		size_t s = (size_t)BT_CAR_SLOT_HASH(c, car->idx_seed) & car->idx_mask;
		for (;;) {
			uint32_t v = car->idx[s];
			if (!v) {
				car->idx[s] = (uint32_t)i + 1;
				break;
			}
			if (bt_cid_eq(&car->blocks[v - 1].cid, c))
				break; /* a duplicate: the first one stays */
			s = (s + 1) & car->idx_mask;
		}
	}
	car->indexed = true;
	return 0;
}

const struct bt_car_block *bt_car_get(const struct bt_car *car, const struct bt_cid *cid)
{
	if (!car->indexed) {
		/* A failed parse: whatever it split before failing, scanned. */
		for (size_t i = 0; i < car->n_blocks; i++)
			if (bt_cid_eq(&car->blocks[i].cid, cid))
				return &car->blocks[i];
		return NULL;
	}
	size_t s = (size_t)BT_CAR_SLOT_HASH(cid, car->idx_seed) & car->idx_mask;
	for (;;) {
		uint32_t v = car->idx[s];
		if (!v)
			return NULL; /* at most half the slots are used: a run always ends */
		if (bt_cid_eq(&car->blocks[v - 1].cid, cid))
			return &car->blocks[v - 1];
		s = (s + 1) & car->idx_mask;
	}
}

int bt_car_write_header(struct bt_buf *b, const struct bt_cid *root)
{
	uint8_t hdr[BT_CID_MAX + 32];
	struct bt_buf h = { 0 };
	int rc = bt_cbor_w_map(&h, 2);
	if (!rc)
		rc = bt_cbor_w_str(&h, "roots");
	if (!rc)
		rc = bt_cbor_w_array(&h, 1);
	if (!rc)
		rc = bt_cbor_w_cid(&h, root);
	if (!rc)
		rc = bt_cbor_w_str(&h, "version");
	if (!rc)
		rc = bt_cbor_w_uint(&h, 1);
	if (!rc) {
		int k = bt_varint_write(h.len, hdr);
		rc = bt_buf_append(b, hdr, (size_t)k);
	}
	if (!rc)
		rc = bt_buf_append(b, h.p, h.len);
	bt_buf_free(&h);
	return rc;
}

int bt_car_write_block(struct bt_buf *b, const struct bt_cid *cid, const uint8_t *data, size_t n)
{
	uint8_t v[10];
	int k = bt_varint_write((uint64_t)cid->len + n, v);
	int rc = bt_buf_append(b, v, (size_t)k);
	if (!rc)
		rc = bt_buf_append(b, cid->b, cid->len);
	if (!rc)
		rc = bt_buf_append(b, data, n);
	return rc;
}
