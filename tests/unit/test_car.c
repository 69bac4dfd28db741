/*
 * NAME
 *	test_car - CARv1 reader/writer and commit objects on captured frames
 * DESCRIPTION
 *	Uses vectors/indigo/firehose_commit_*.json and the #commit/#sync bodies of
 *	the indigo scenario files: every CAR parses, every block hash checks, the
 *	root is the message's commit, the commit block decodes with the frame's
 *	repo and rev, and its unsigned form drops exactly "sig".  Corruption and
 *	truncation are rejected.
 * DIAGNOSTICS
 *	Prints failing checks; exits non-zero on failure.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>

#include "bt_buf.h"
#include "bt_car.h"
#include "bt_cbor.h"
#include "bt_cid.h"
#include "bt_commit.h"
#include "bt_test.h"

static int n_bodies;

static bool str_eq(struct bt_bytes b, const char *s)
{
	return s && bt_bytes_eq_str(b, s);
}

/* strict: the scenario does not expect the frame to be dropped, so rev must match. */
static void check_body(const char *name, json_t *body, bool is_commit, bool strict)
{
	const char *b64 = json_string_value(json_object_get(json_object_get(body, "blocks"), "$bytes"));
	CHECKF(b64 != NULL, "%s blocks", name);
	if (!b64)
		return;
	struct bt_buf car_bytes = { 0 }, out = { 0 }, canon = { 0 };
	CHECK(bt_base64_decode_buf(b64, strlen(b64), &car_bytes) == 0);
	struct bt_car car;
	bt_car_init(&car, 0);
	const char *why = NULL;
	int rc = bt_car_parse(&car, car_bytes.p, car_bytes.len, &why);
	CHECKF(rc == 0, "%s: car parse %d %s", name, rc, why ? why : "");
	CHECK(car.n_roots == 1 && car.n_blocks >= 1);
	n_bodies++;

	const char *did = json_string_value(json_object_get(body, is_commit ? "repo" : "did"));
	const char *rev = json_string_value(json_object_get(body, "rev"));
	if (is_commit) {
		struct bt_cid want;
		const char *cs = json_string_value(json_object_get(json_object_get(body, "commit"), "$link"));
		CHECK(cs && bt_cid_from_str(cs, &want) == 0);
		CHECKF(bt_cid_eq(&car.root, &want), "%s root is the commit", name);
		/* every create op's record is in the CAR */
		json_t *ops = json_object_get(body, "ops"), *op;
		size_t i;
		json_array_foreach(ops, i, op) {
			const char *act = json_string_value(json_object_get(op, "action"));
			const char *oc = json_string_value(json_object_get(json_object_get(op, "cid"), "$link"));
			struct bt_cid c;
			if (act && !strcmp(act, "create") && oc && bt_cid_from_str(oc, &c) == 0) {
				const struct bt_car_block *blk = bt_car_get(&car, &c);
				CHECKF(blk != NULL, "%s: record block for op %zu", name, i);
			}
		}
	}
	const struct bt_car_block *cb = bt_car_get(&car, &car.root);
	CHECKF(cb != NULL, "%s commit block present", name);
	if (cb) {
		struct bt_commit cm;
		CHECKF(bt_commit_decode(cb->data, cb->len, &cm, &why) == 0, "%s commit decode", name);
		CHECKF(str_eq(cm.did, did), "%s did", name);
		CHECKF(!strict || str_eq(cm.rev, rev), "%s rev", name);
		CHECK(cm.version == 3);
		CHECK(cm.sig.n == 64);
		CHECK(!is_commit || bt_car_get(&car, &cm.data) != NULL); /* MST root is in the diff */
		CHECK(bt_commit_unsigned(cb->data, cb->len, &out) == 0);
		CHECK(out.len == cb->len - (1 + 3 + 2 + 64) && out.p[0] == (cb->data[0] - 1));
		CHECK(memmem(out.p, out.len, "\x63sig", 4) == NULL);
		CHECK(bt_cbor_canonicalize(out.p, out.len, &canon) == 0 && canon.len == out.len &&
		      !memcmp(canon.p, out.p, out.len));
		struct bt_commit cm2;
		CHECK(bt_commit_decode(out.p, out.len, &cm2, &why) < 0); /* no sig any more */
	}

	/* writer reproduces the captured bytes */
	struct bt_buf w = { 0 };
	CHECK(bt_car_write_header(&w, &car.root) == 0);
	for (size_t i = 0; i < car.n_blocks; i++)
		bt_car_write_block(&w, &car.blocks[i].cid, car.blocks[i].data, car.blocks[i].len);
	CHECKF(w.len == car_bytes.len && !memcmp(w.p, car_bytes.p, w.len), "%s writer bytes", name);
	bt_buf_free(&w);
	bt_buf_free(&car_bytes);
	bt_buf_free(&out);
	bt_buf_free(&canon);
	bt_car_free(&car);
}

static void corruption(const char *path)
{
	size_t len;
	char *js = bt_test_slurp(path, &len);
	json_error_t err;
	json_t *body = json_loads(js, 0, &err);
	free(js);
	const char *b64 = json_string_value(json_object_get(json_object_get(body, "blocks"), "$bytes"));
	struct bt_buf cb = { 0 };
	bt_base64_decode_buf(b64, strlen(b64), &cb);
	struct bt_car car;
	bt_car_init(&car, 0);
	CHECK(bt_car_parse(&car, cb.p, cb.len, NULL) == 0);
	/* block boundaries: a truncated CAR is valid exactly at them */
	size_t nb = car.n_blocks;
	size_t *ends = calloc(nb + 1, sizeof *ends);
	size_t *data_off = calloc(nb, sizeof *data_off), *data_len = calloc(nb, sizeof *data_len);
	for (size_t i = 0; i < nb; i++) {
		ends[i] = (size_t)(car.blocks[i].data + car.blocks[i].len - cb.p);
		data_off[i] = (size_t)(car.blocks[i].data - cb.p);
		data_len[i] = car.blocks[i].len;
	}
	int bad_trunc = 0;
	for (size_t k = 0; k < cb.len; k++) {
		int rc = bt_car_parse(&car, cb.p, k, NULL);
		bool boundary = false;
		for (size_t i = 0; i < nb; i++)
			if (k == ends[i])
				boundary = true;
		/* inside a block (CID or data) it must fail; at a block end it must succeed */
		bool inside = false;
		for (size_t i = 0; i < nb; i++)
			if (k > data_off[i] - 1 && k < ends[i])
				inside = true;
		if (inside && rc == 0)
			bad_trunc++;
		if (boundary && k >= ends[0] && rc != 0)
			bad_trunc++;
	}
	CHECKF(bad_trunc == 0, "truncation: %d wrong results", bad_trunc);
	/* one corrupted byte in any block fails the hash check */
	int undetected = 0;
	for (size_t i = 0; i < nb; i++) {
		size_t at = data_off[i] + data_len[i] / 2;
		cb.p[at] ^= 0x01;
		const char *why = NULL;
		if (bt_car_parse(&car, cb.p, cb.len, &why) != -EBADMSG || strcmp(why, "car block hash mismatch"))
			undetected++;
		cb.p[at] ^= 0x01;
	}
	CHECKF(undetected == 0, "%d corrupted blocks passed", undetected);
	/* a corrupted CID byte (in the digest) also fails */
	cb.p[data_off[0] - 1] ^= 0x80;
	CHECK(bt_car_parse(&car, cb.p, cb.len, NULL) < 0);
	cb.p[data_off[0] - 1] ^= 0x80;
	CHECK(bt_car_parse(&car, cb.p, cb.len, NULL) == 0);
	/* max_blocks bounds memory */
	struct bt_car small;
	bt_car_init(&small, 1);
	const char *why = NULL;
	CHECK(nb < 2 || bt_car_parse(&small, cb.p, cb.len, &why) == -E2BIG);
	bt_car_free(&small);
	bt_car_free(&small);
	/* header problems */
	static const uint8_t no_roots[] = { 0x0a, 0xa1, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01 };
	CHECK(bt_car_parse(&car, no_roots, sizeof no_roots, NULL) < 0);
	static const uint8_t empty[] = { 0x00 };
	CHECK(bt_car_parse(&car, empty, 0, NULL) < 0 && bt_car_parse(&car, empty, 1, NULL) < 0);
	free(ends);
	free(data_off);
	free(data_len);
	bt_buf_free(&cb);
	bt_car_free(&car);
	json_decref(body);
}

int main(void)
{
	char path[1024];
	const char *caps[] = { "4621317030", "4621317332", "4621332152", "4623075231" };
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/indigo/firehose_commit_%s.json", bt_vectors(), caps[i]);
		size_t len;
		char *js = bt_test_slurp(path, &len);
		CHECKF(js != NULL, "open %s", path);
		if (!js)
			continue;
		json_error_t err;
		json_t *body = json_loads(js, 0, &err);
		check_body(path, body, true, true);
		json_decref(body);
		free(js);
	}
	snprintf(path, sizeof path, "%s/indigo", bt_vectors());
	DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!strstr(de->d_name, ".json") || !strncmp(de->d_name, "firehose_commit", 15))
			continue;
		snprintf(path, sizeof path, "%s/indigo/%s", bt_vectors(), de->d_name);
		json_error_t err;
		json_t *j = json_load_file(path, 0, &err);
		json_t *msgs = json_object_get(j, "messages"), *m;
		size_t i;
		json_array_foreach(msgs, i, m) {
			json_t *fr = json_object_get(m, "frame");
			const char *t = json_string_value(json_object_get(json_object_get(fr, "header"), "t"));
			if (t && (!strcmp(t, "#commit") || !strcmp(t, "#sync")))
				check_body(de->d_name, json_object_get(fr, "body"), !strcmp(t, "#commit"),
					   !json_is_true(json_object_get(m, "drop")) &&
						   !json_is_true(json_object_get(m, "invalid")));
		}
		json_decref(j);
	}
	if (d)
		closedir(d);
	CHECKF(n_bodies >= 20, "bodies checked: %d", n_bodies);
	snprintf(path, sizeof path, "%s/indigo/firehose_commit_4621332152.json", bt_vectors());
	corruption(path);
	BT_TEST_END();
}
