/*
 * NAME
 *	test_mst - MST key heights, tree building and Sync 1.1 inversion
 * DESCRIPTION
 *	vectors/interop/mst/key_heights.json: {key, height} pairs.
 *	vectors/interop/firehose/commit-proof-fixtures.json: the full trees
 *	before and after each commit are built and must have the fixture roots;
 *	a CAR holding only blocksInProof must invert to rootBeforeCommit, and
 *	corrupted ops (wrong prev, wrong cid, a dropped op, a missing block) must
 *	give an error or another root.  Random commits over example_keys.txt
 *	check inversion against building from scratch.  Every #commit with
 *	prevData in vectors/indigo/ files must invert to its prevData.
 * DIAGNOSTICS
 *	Prints failing cases; exits non-zero on failure.
 */
#include <errno.h>
#include <jansson.h>

#include "bt_car.h"
#include "bt_cbor.h"
#include "bt_commit.h"
#include "bt_mst.h"
#include "bt_test.h"

#define MAXK 4096

static const char *cstr(const struct bt_cid *c)
{
	static char s[4][BT_CID_STR_MAX];
	static int i;
	i = (i + 1) % 4;
	if (bt_cid_to_str(c, s[i], sizeof s[i]) < 0)
		strcpy(s[i], "?");
	return s[i];
}

/* Build the tree of keys (all with value v) into car (cleared first); returns root. */
static int build(const char **keys, size_t n, const struct bt_cid *v, struct bt_buf *car, struct bt_cid *root)
{
	static const uint8_t *kp[MAXK];
	static size_t kl[MAXK];
	static struct bt_cid vals[MAXK];
	if (n > MAXK)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		kp[i] = (const uint8_t *)keys[i];
		kl[i] = strlen(keys[i]);
		vals[i] = *v;
	}
	if (car)
		bt_buf_reset(car);
	return bt_mst_build_car(kp, kl, vals, n, car, root);
}

static void set_op(struct bt_fh_op *op, const char *action, const char *path, const struct bt_cid *cid,
		   const struct bt_cid *prev)
{
	memset(op, 0, sizeof *op);
	op->action = (struct bt_bytes){ (const uint8_t *)action, strlen(action) };
	op->path = (struct bt_bytes){ (const uint8_t *)path, strlen(path) };
	if (cid) {
		op->has_cid = true;
		op->cid = *cid;
	}
	if (prev) {
		op->has_prev = true;
		op->prev = *prev;
	}
}

static bool in_list(const char **l, size_t n, const char *k)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i], k))
			return true;
	return false;
}

/* Copy the blocks of full whose CIDs are in want[] (all of them when want is NULL) into out, minus skip. */
static void sub_car(const struct bt_car *full, const struct bt_cid *root, const struct bt_cid *want, size_t nw,
		    const struct bt_cid *skip, struct bt_buf *out)
{
	bt_buf_reset(out);
	bt_car_write_header(out, root);
	for (size_t i = 0; i < full->n_blocks; i++) {
		const struct bt_car_block *b = &full->blocks[i];
		bool keep = !want;
		for (size_t j = 0; want && j < nw; j++)
			keep |= bt_cid_eq(&want[j], &b->cid);
		if (skip && bt_cid_eq(skip, &b->cid))
			keep = false;
		if (keep)
			bt_car_write_block(out, &b->cid, b->data, b->len);
	}
}

static void test_heights(void)
{
	char path[512];
	json_error_t err;
	snprintf(path, sizeof path, "%s/interop/mst/key_heights.json", bt_vectors());
	json_t *arr = json_load_file(path, 0, &err);
	CHECKF(arr && json_is_array(arr), "load %s", path);
	size_t i;
	json_t *e;
	int n = 0;
	json_array_foreach(arr, i, e) {
		const char *k = json_string_value(json_object_get(e, "key"));
		int want = (int)json_integer_value(json_object_get(e, "height"));
		int got = bt_mst_key_height((const uint8_t *)k, strlen(k));
		CHECKF(got == want, "key '%s': %d != %d", k, got, want);
		n++;
	}
	CHECK(n >= 5);
	json_decref(arr);
}

static int invert_buf(const struct bt_buf *carb, const struct bt_cid *root, const struct bt_fh_op *ops, size_t n,
		      struct bt_cid *out, const char **why)
{
	struct bt_car car;
	bt_car_init(&car, 0);
	int rc = bt_car_parse(&car, carb->p, carb->len, why);
	if (!rc)
		rc = bt_mst_invert(&car, root, ops, n, out, why);
	bt_car_free(&car);
	return rc;
}

static void test_fixtures(void)
{
	char path[512];
	json_error_t err;
	snprintf(path, sizeof path, "%s/interop/firehose/commit-proof-fixtures.json", bt_vectors());
	json_t *arr = json_load_file(path, 0, &err);
	CHECKF(arr && json_is_array(arr), "load %s", path);
	if (!arr)
		return;
	static const char *before[MAXK], *after[MAXK], *adds[64], *dels[64];
	static struct bt_fh_op ops[128];
	static struct bt_cid proof[256];
	struct bt_buf full = { 0 }, part = { 0 };
	size_t fi;
	json_t *fx;
	int done = 0;
	json_array_foreach(arr, fi, fx) {
		const char *name = json_string_value(json_object_get(fx, "comment"));
		struct bt_cid leaf, want_before, want_after, got;
		bt_cid_from_str(json_string_value(json_object_get(fx, "leafValue")), &leaf);
		bt_cid_from_str(json_string_value(json_object_get(fx, "rootBeforeCommit")), &want_before);
		bt_cid_from_str(json_string_value(json_object_get(fx, "rootAfterCommit")), &want_after);
		size_t nb = 0, na = 0, nadd = 0, ndel = 0, np = 0, j;
		json_t *v;
		json_array_foreach(json_object_get(fx, "keys"), j, v) before[nb++] = json_string_value(v);
		json_array_foreach(json_object_get(fx, "adds"), j, v) adds[nadd++] = json_string_value(v);
		json_array_foreach(json_object_get(fx, "dels"), j, v) dels[ndel++] = json_string_value(v);
		json_array_foreach(json_object_get(fx, "blocksInProof"), j, v)
			bt_cid_from_str(json_string_value(v), &proof[np++]);
		for (size_t i = 0; i < nb; i++)
			if (!in_list(dels, ndel, before[i]))
				after[na++] = before[i];
		for (size_t i = 0; i < nadd; i++)
			after[na++] = adds[i];

		/* The builder reproduces both fixture roots. */
		CHECKF(build(before, nb, &leaf, NULL, &got) == 0 && bt_cid_eq(&got, &want_before), "%s: before %s",
		       name, cstr(&got));
		struct bt_cid root;
		CHECKF(build(after, na, &leaf, &full, &root) == 0 && bt_cid_eq(&root, &want_after), "%s: after %s",
		       name, cstr(&root));

		struct bt_car fc;
		bt_car_init(&fc, 0);
		CHECK(bt_car_parse(&fc, full.p, full.len, NULL) == 0);
		for (size_t i = 0; i < np; i++)
			CHECKF(bt_car_get(&fc, &proof[i]), "%s: proof block %zu not in the after tree", name, i);

		size_t nops = 0;
		for (size_t i = 0; i < nadd; i++)
			set_op(&ops[nops++], "create", adds[i], &leaf, NULL);
		for (size_t i = 0; i < ndel; i++)
			set_op(&ops[nops++], "delete", dels[i], NULL, &leaf);

		/* Only the proof blocks: exactly the old root. */
		const char *why = NULL;
		sub_car(&fc, &root, proof, np, NULL, &part);
		int rc = invert_buf(&part, &root, ops, nops, &got, &why);
		CHECKF(rc == 0 && bt_cid_eq(&got, &want_before), "%s: invert rc %d (%s) got %s want %s", name, rc,
		       why ? why : "", cstr(&got), cstr(&want_before));
		/* Full tree: the same. */
		sub_car(&fc, &root, NULL, 0, NULL, &part);
		rc = invert_buf(&part, &root, ops, nops, &got, &why);
		CHECKF(rc == 0 && bt_cid_eq(&got, &want_before), "%s: full invert rc %d", name, rc);

		/* Corruptions. */
		struct bt_cid bogus;
		bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, (const uint8_t *)"x", 1, &bogus);
		for (size_t o = 0; o < nops; o++) {
			struct bt_fh_op save = ops[o];
			if (ops[o].has_prev)
				ops[o].prev = bogus;
			else
				ops[o].cid = bogus;
			sub_car(&fc, &root, proof, np, NULL, &part);
			rc = invert_buf(&part, &root, ops, nops, &got, &why);
			CHECKF(rc != 0 || !bt_cid_eq(&got, &want_before), "%s: corrupted op %zu still inverts", name, o);
			ops[o] = save;
			/* Drop op o. */
			struct bt_fh_op fewer[128];
			size_t nf = 0;
			for (size_t i = 0; i < nops; i++)
				if (i != o)
					fewer[nf++] = ops[i];
			rc = invert_buf(&part, &root, fewer, nf, &got, &why);
			CHECKF(rc != 0 || !bt_cid_eq(&got, &want_before), "%s: dropped op %zu still inverts", name, o);
		}
		/* An extra op for a key that is not in the tree is an error. */
		set_op(&ops[nops], "create", "Z9/000000", &leaf, NULL);
		rc = invert_buf(&part, &root, ops, nops + 1, &got, &why);
		CHECKF(rc == -EINVAL || rc == -ENOENT, "%s: extra create gave %d", name, rc);
		/* Each proof block but the root is needed: dropping it gives "missing block". */
		for (size_t i = 0; i < np; i++) {
			if (bt_cid_eq(&proof[i], &root))
				continue;
			sub_car(&fc, &root, proof, np, &proof[i], &part);
			why = NULL;
			rc = invert_buf(&part, &root, ops, nops, &got, &why);
			if (rc == 0)
				CHECKF(bt_cid_eq(&got, &want_before), "%s: without block %zu wrong root", name, i);
			else
				CHECKF(rc == -ENOENT && why && !strcmp(why, "missing block"),
				       "%s: without block %zu: rc %d %s", name, i, rc, why ? why : "");
		}
		bt_car_free(&fc);
		done++;
	}
	CHECK(done == 6);
	bt_buf_free(&full);
	bt_buf_free(&part);
	json_decref(arr);
}

/* Deterministic xorshift. */
static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static void test_random(void)
{
	char path[512];
	size_t len;
	snprintf(path, sizeof path, "%s/interop/mst/example_keys.txt", bt_vectors());
	char *txt = bt_test_slurp(path, &len);
	CHECKF(txt, "load %s", path);
	if (!txt)
		return;
	static const char *all[MAXK], *before[MAXK];
	static struct bt_fh_op ops[64];
	size_t nall = 0;
	for (char *s = strtok(txt, "\n"); s && nall < MAXK; s = strtok(NULL, "\n"))
		if (*s)
			all[nall++] = s;
	CHECK(nall > 50);
	struct bt_cid vals[2];
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, (const uint8_t *)"\xa0", 1, &vals[0]);
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, (const uint8_t *)"\x80", 1, &vals[1]);
	struct bt_buf full = { 0 };
	int bad = 0;
	for (int round = 0; round < 300; round++) {
		/* before: a random subset (sometimes empty); ops: creates, deletes, updates. */
		size_t nb = 0, na = 0, nops = 0;
		size_t want = round % 10 == 0 ? 0 : rnd() % (round < 150 ? 30 : nall);
		bool inb[MAXK] = { false }, ina[MAXK] = { false };
		for (size_t i = 0; i < nall && nb < want; i++)
			if (rnd() % (nall / (want + 1) + 1) == 0)
				inb[i] = true, nb++;
		memcpy(ina, inb, sizeof ina);
		size_t nchg = 1 + rnd() % 8;
		bool upd[MAXK] = { false };
		for (size_t c = 0; c < nchg; c++) {
			size_t i = rnd() % nall;
			bool touched = false;
			for (size_t o = 0; o < nops; o++)
				touched |= ops[o].path.p == (const uint8_t *)all[i];
			if (touched)
				continue;
			if (!inb[i]) {
				set_op(&ops[nops++], "create", all[i], &vals[0], NULL);
				ina[i] = true;
			} else if (rnd() % 2) {
				set_op(&ops[nops++], "delete", all[i], NULL, &vals[0]);
				ina[i] = false;
			} else {
				set_op(&ops[nops++], "update", all[i], &vals[1], &vals[0]);
				upd[i] = true;
			}
		}
		/* After tree: values differ for updated keys, so build with per-key values. */
		static const uint8_t *kp[MAXK];
		static size_t kl[MAXK];
		static struct bt_cid kv[MAXK];
		nb = na = 0;
		for (size_t i = 0; i < nall; i++) {
			if (inb[i])
				before[nb++] = all[i];
			if (ina[i]) {
				kp[na] = (const uint8_t *)all[i];
				kl[na] = strlen(all[i]);
				kv[na] = vals[upd[i] ? 1 : 0];
				na++;
			}
		}
		struct bt_cid broot, aroot, got;
		build(before, nb, &vals[0], NULL, &broot);
		bt_buf_reset(&full);
		CHECK(bt_mst_build_car(kp, kl, kv, na, &full, &aroot) == 0);
		const char *why = NULL;
		int rc = invert_buf(&full, &aroot, ops, nops, &got, &why);
		if (rc || !bt_cid_eq(&got, &broot)) {
			bad++;
			fprintf(stderr, "random round %d: nb %zu na %zu nops %zu rc %d %s\n", round, nb, na, nops, rc,
				why ? why : "");
		}
	}
	CHECKF(bad == 0, "%d random rounds failed", bad);
	bt_buf_free(&full);
	free(txt);
}

/* Ops of a JSON #commit body into ops[]; returns the count. */
static size_t json_ops(json_t *body, struct bt_fh_op *ops)
{
	size_t n = 0, j;
	json_t *o;
	json_array_foreach(json_object_get(body, "ops"), j, o) {
		struct bt_fh_op *op = &ops[n++];
		memset(op, 0, sizeof *op);
		const char *a = json_string_value(json_object_get(o, "action"));
		const char *p = json_string_value(json_object_get(o, "path"));
		op->action = (struct bt_bytes){ (const uint8_t *)a, strlen(a) };
		op->path = (struct bt_bytes){ (const uint8_t *)p, strlen(p) };
		json_t *c = json_object_get(json_object_get(o, "cid"), "$link");
		json_t *pv = json_object_get(json_object_get(o, "prev"), "$link");
		if (c)
			op->has_cid = bt_cid_from_str(json_string_value(c), &op->cid) == 0;
		if (pv)
			op->has_prev = bt_cid_from_str(json_string_value(pv), &op->prev) == 0;
	}
	return n;
}

static void test_indigo(void)
{
	static const char *files[] = { "post_lifecycle.json", "rev_ordering.json", "deactivation.json",
				       "seq_ordering.json", "legacy.json", "post_lifecycle_legacy.json" };
	static struct bt_fh_op ops[BT_FH_MAX_OPS];
	int with_prev = 0;
	for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
		char path[512];
		json_error_t err;
		snprintf(path, sizeof path, "%s/indigo/%s", bt_vectors(), files[f]);
		json_t *doc = json_load_file(path, 0, &err);
		CHECKF(doc, "load %s", path);
		if (!doc)
			continue;
		size_t mi;
		json_t *m;
		json_array_foreach(json_object_get(doc, "messages"), mi, m) {
			json_t *body = json_object_get(json_object_get(m, "frame"), "body");
			json_t *pd = json_object_get(json_object_get(body, "prevData"), "$link");
			if (!pd)
				continue;
			with_prev++;
			struct bt_cid prev_data, got;
			bt_cid_from_str(json_string_value(pd), &prev_data);
			const char *b64 = json_string_value(json_object_get(json_object_get(body, "blocks"), "$bytes"));
			struct bt_buf carb = { 0 };
			CHECK(b64 && bt_base64_decode_buf(b64, strlen(b64), &carb) == 0);
			struct bt_car car;
			bt_car_init(&car, 0);
			const char *why = NULL;
			int rc = bt_car_parse(&car, carb.p, carb.len, &why);
			CHECKF(rc == 0, "%s #%zu: car %s", files[f], mi, why ? why : "");
			const struct bt_car_block *cb = rc ? NULL : bt_car_get(&car, &car.root);
			struct bt_commit cm;
			CHECKF(cb && bt_commit_decode(cb->data, cb->len, &cm, &why) == 0, "%s #%zu: commit", files[f], mi);
			if (cb) {
				size_t n = json_ops(body, ops);
				rc = bt_mst_invert(&car, &cm.data, ops, n, &got, &why);
				CHECKF(rc == 0 && bt_cid_eq(&got, &prev_data), "%s #%zu: rc %d (%s) got %s want %s", files[f],
				       mi, rc, why ? why : "", cstr(&got), cstr(&prev_data));
				/* Corrupt the first op's cid/prev: must not reproduce prevData. */
				struct bt_cid bogus;
				bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, (const uint8_t *)"y", 1, &bogus);
				if (ops[0].has_prev)
					ops[0].prev = bogus;
				else
					ops[0].cid = bogus;
				rc = bt_mst_invert(&car, &cm.data, ops, n, &got, &why);
				CHECKF(rc != 0 || !bt_cid_eq(&got, &prev_data), "%s #%zu: corrupted op inverts", files[f], mi);
			}
			bt_car_free(&car);
			bt_buf_free(&carb);
		}
		json_decref(doc);
	}
	CHECKF(with_prev >= 10, "only %d frames with prevData", with_prev);
}

static void test_hostile(void)
{
	/* Root not in the CAR, empty CAR-less root, garbage node. */
	struct bt_buf b = { 0 };
	struct bt_cid root, got;
	struct bt_car car;
	const char *why = NULL;
	static const uint8_t junk[] = { 0xa2, 0x61, 0x65, 0x80, 0x61, 0x6c, 0x01 };
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, junk, sizeof junk, &root);
	bt_car_init(&car, 0);
	bt_car_write_header(&b, &root);
	CHECK(bt_car_parse(&car, b.p, b.len, NULL) == 0);
	CHECK(bt_mst_invert(&car, &root, NULL, 0, &got, &why) == -ENOENT && !strcmp(why, "missing block"));
	bt_car_write_block(&b, &root, junk, sizeof junk);
	CHECK(bt_car_parse(&car, b.p, b.len, NULL) == 0);
	CHECK(bt_mst_invert(&car, &root, NULL, 0, &got, &why) == -EBADMSG);
	/* The empty tree with no ops is the empty node; inserting then removing returns to it. */
	bt_buf_reset(&b);
	CHECK(bt_mst_build_car(NULL, NULL, NULL, 0, &b, &root) == 0);
	CHECK(bt_car_parse(&car, b.p, b.len, NULL) == 0);
	CHECK(bt_mst_invert(&car, &root, NULL, 0, &got, &why) == 0 && bt_cid_eq(&got, &root));
	CHECK(!strcmp(cstr(&root), "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"));
	struct bt_fh_op op[2];
	/* Forward: create K then delete K, so the tree after is still empty. */
	set_op(&op[0], "create", "app.bsky.feed.post/abc", &root, NULL);
	set_op(&op[1], "delete", "app.bsky.feed.post/abc", NULL, &root);
	CHECK(bt_mst_invert(&car, &root, op, 2, &got, &why) == 0 && bt_cid_eq(&got, &root));
	CHECK(bt_mst_invert(&car, &root, op + 1, 1, &got, &why) == 0 && !bt_cid_eq(&got, &root));
	CHECK(bt_mst_invert(&car, &root, op, 1, &got, &why) == -EINVAL);
	op[1].has_prev = false;
	CHECK(bt_mst_invert(&car, &root, op + 1, 1, &got, &why) == -EINVAL);
	set_op(&op[0], "frobnicate", "a/b", &root, &root);
	CHECK(bt_mst_invert(&car, &root, op, 1, &got, &why) == -EINVAL);
	bt_car_free(&car);
	bt_buf_free(&b);
}

int main(void)
{
	test_heights();
	test_fixtures();
	test_random();
	test_indigo();
	test_hostile();
	bt_mst_thread_free();
	BT_TEST_END();
}
