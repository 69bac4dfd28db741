/*
 * NAME
 *	test_fh - firehose frame decode/encode
 * DESCRIPTION
 *	Frames are built from the indigo JSON vectors (captured #commit bodies and
 *	scenario files) with bt_cbor_from_json, decoded, re-encoded without seq,
 *	spliced, and compared byte for byte with an independent canonical encoding
 *	of the normalised JSON (required fields added, blobs null -> []).  Also
 *	hand-built frames of every type, truncation and wrong types.
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
#include "bt_fh.h"
#include "bt_test.h"

static struct bt_fh_msg msg, msg2; /* large: keep off the stack */

static int frame_from_json(json_t *header, json_t *body, struct bt_buf *out)
{
	char *h = json_dumps(header, JSON_COMPACT);
	char *b = json_dumps(body, JSON_COMPACT);
	int rc = bt_cbor_from_json(h, strlen(h), out);
	if (!rc)
		rc = bt_cbor_from_json(b, strlen(b), out);
	free(h);
	free(b);
	return rc;
}

static bool eq(struct bt_bytes b, json_t *s)
{
	return json_is_string(s) && bt_bytes_eq_str(b, json_string_value(s));
}

/* The body as baton must emit it. */
static json_t *normalise(const char *t, json_t *body)
{
	json_t *n = json_deep_copy(body);
	if (!strcmp(t, "#commit")) {
		json_object_del(n, "prev");
		if (!json_is_array(json_object_get(n, "blobs")))
			json_object_set_new(n, "blobs", json_array());
		if (!json_object_get(n, "tooBig"))
			json_object_set_new(n, "tooBig", json_false());
		if (!json_object_get(n, "rebase"))
			json_object_set_new(n, "rebase", json_false());
		if (!json_object_get(n, "since"))
			json_object_set_new(n, "since", json_null());
	}
	return n;
}

static int n_frames;

static void check_frame(const char *name, json_t *header, json_t *body, bool drop_field)
{
	const char *t = json_string_value(json_object_get(header, "t"));
	struct bt_buf f = { 0 }, enc = { 0 }, spliced = { 0 }, want = { 0 };
	json_t *in = json_deep_copy(body);
	if (drop_field) {
		json_object_del(in, "tooBig");
		json_object_del(in, "rebase");
	}
	CHECK(frame_from_json(header, in, &f) == 0);
	const char *why = NULL;
	int rc = bt_fh_decode(f.p, f.len, &msg, &why);
	CHECKF(rc == 0, "%s %s: decode %d %s", name, t, rc, why ? why : "");
	if (rc)
		goto out;
	n_frames++;
	CHECK(msg.op == 1 && eq(msg.t, json_object_get(header, "t")));
	CHECK(!strcmp(bt_fh_type_name(msg.type), t));
	CHECK(msg.has_seq && msg.seq == json_integer_value(json_object_get(body, "seq")));
	CHECK(eq(msg.did, json_object_get(body, msg.type == BT_FH_COMMIT ? "repo" : "did")));
	CHECK(eq(msg.time, json_object_get(body, "time")));
	if (msg.type == BT_FH_COMMIT || msg.type == BT_FH_SYNC) {
		CHECK(eq(msg.rev, json_object_get(body, "rev")));
		struct bt_buf car = { 0 };
		const char *b64 = json_string_value(json_object_get(json_object_get(body, "blocks"), "$bytes"));
		bt_base64_decode_buf(b64, strlen(b64), &car);
		/* blocks are a borrowed slice of the frame, byte for byte */
		CHECK(msg.blocks.n == car.len && !memcmp(msg.blocks.p, car.p, car.len));
		CHECK(msg.blocks.p > f.p && msg.blocks.p < f.p + f.len);
		bt_buf_free(&car);
	}
	if (msg.type == BT_FH_COMMIT) {
		json_t *ops = json_object_get(body, "ops");
		CHECK(msg.n_ops == json_array_size(ops));
		for (size_t i = 0; i < msg.n_ops && i < json_array_size(ops); i++) {
			json_t *o = json_array_get(ops, i);
			CHECK(eq(msg.ops[i].action, json_object_get(o, "action")));
			CHECK(eq(msg.ops[i].path, json_object_get(o, "path")));
			CHECK(msg.ops[i].has_cid == json_is_object(json_object_get(o, "cid")));
		}
		json_t *since = json_object_get(body, "since");
		CHECK(msg.has_since == json_is_string(since) && (!msg.has_since || eq(msg.since, since)));
		CHECK(msg.has_prev_data == (json_object_get(body, "prevData") != NULL));
		CHECK(!msg.too_big && !msg.rebase);
	}
	if (msg.type == BT_FH_ACCOUNT) {
		CHECK(msg.active == json_is_true(json_object_get(body, "active")));
		CHECK(msg.has_status == (json_object_get(body, "status") != NULL));
	}
	if (msg.type == BT_FH_IDENTITY)
		CHECK(msg.has_handle == (json_object_get(body, "handle") != NULL));

	/* peek agrees */
	struct bt_fh_peek pk;
	CHECK(bt_fh_peek(f.p, f.len, &pk) == 0);
	CHECK(pk.type == msg.type && pk.has_seq && pk.seq == msg.seq && pk.did.p == msg.did.p &&
	      pk.did.n == msg.did.n);

	/* encode without seq, splice, compare with the independent canonical encoding */
	size_t seq_off = 0;
	CHECK(bt_cbor_w_null(&enc) == 0); /* encoding appends: offsets are absolute */
	CHECK(bt_fh_encode_noseq(&msg, &enc, &seq_off) == 0);
	CHECK(seq_off > 1 && seq_off < enc.len);
	CHECK(bt_fh_splice_seq(enc.p + 1, enc.len - 1, seq_off - 1, (uint64_t)msg.seq, &spliced) == 0);
	json_t *norm = normalise(t, body);
	CHECK(frame_from_json(header, norm, &want) == 0);
	CHECKF(spliced.len == want.len && !memcmp(spliced.p, want.p, want.len), "%s %s: canonical bytes",
	       name, t);
	if (drop_field)
		CHECK(memmem(spliced.p, spliced.len, "\x66tooBig\xf4", 8) != NULL);
	json_decref(norm);
	/* decoded again: the same message */
	CHECK(bt_fh_decode(spliced.p, spliced.len, &msg2, &why) == 0);
	CHECK(msg2.type == msg.type && msg2.seq == msg.seq && msg2.n_ops == msg.n_ops &&
	      msg2.blocks.n == msg.blocks.n);

	/* truncation at every offset: error, never a crash */
	int accepted = 0;
	for (size_t k = 0; k < f.len; k += (f.len > 4000 ? 7 : 1))
		if (bt_fh_decode(f.p, k, &msg2, NULL) == 0 || bt_fh_peek(f.p, k, &pk) == 0)
			accepted++;
	CHECKF(accepted == 0, "%s: %d truncations accepted", name, accepted);
out:
	json_decref(in);
	bt_buf_free(&f);
	bt_buf_free(&enc);
	bt_buf_free(&spliced);
	bt_buf_free(&want);
}

static void vectors(void)
{
	char path[1024];
	const char *caps[] = { "4621317030", "4621317332", "4621332152", "4623075231" };
	json_t *ch = json_pack("{s:s, s:i}", "t", "#commit", "op", 1);
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/indigo/firehose_commit_%s.json", bt_vectors(), caps[i]);
		json_error_t err;
		json_t *body = json_load_file(path, 0, &err);
		CHECKF(body != NULL, "load %s", path);
		if (!body)
			continue;
		json_object_set_new(body, "seq", json_integer(4621317030LL + i));
		check_frame(path, ch, body, false);
		check_frame(path, ch, body, true); /* input without tooBig/rebase */
		json_decref(body);
	}
	json_decref(ch);
	snprintf(path, sizeof path, "%s/indigo", bt_vectors());
	DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!strstr(de->d_name, ".json"))
			continue;
		snprintf(path, sizeof path, "%s/indigo/%s", bt_vectors(), de->d_name);
		json_error_t err;
		json_t *j = json_load_file(path, 0, &err);
		json_t *msgs = json_object_get(j, "messages"), *m;
		size_t i;
		json_array_foreach(msgs, i, m) {
			json_t *fr = json_object_get(m, "frame");
			check_frame(de->d_name, json_object_get(fr, "header"), json_object_get(fr, "body"), false);
		}
		json_decref(j);
	}
	if (d)
		closedir(d);
	CHECKF(n_frames >= 40, "frames: %d", n_frames);
}

static void set(struct bt_bytes *b, const char *s)
{
	b->p = (const uint8_t *)s;
	b->n = strlen(s);
}

/* Encode m, splice seq, decode into msg2. */
static int round_trip(const struct bt_fh_msg *m, uint64_t seq, struct bt_buf *frame)
{
	struct bt_buf enc = { 0 };
	size_t off;
	int rc = bt_fh_encode_noseq(m, &enc, &off);
	if (!rc) {
		if (off == SIZE_MAX)
			rc = bt_buf_append(frame, enc.p, enc.len);
		else
			rc = bt_fh_splice_seq(enc.p, enc.len, off, seq, frame);
	}
	if (!rc) {
		struct bt_cbor_rd r;
		bt_cbor_rd_init(&r, frame->p, frame->len);
		/* output is strict DAG-CBOR: header and body pass the validating skip */
		if (bt_cbor_skip(&r) || bt_cbor_skip(&r) || r.p != r.end)
			rc = -EBADMSG;
	}
	if (!rc)
		rc = bt_fh_decode(frame->p, frame->len, &msg2, NULL);
	bt_buf_free(&enc);
	return rc;
}

static void every_type(void)
{
	struct bt_buf fr = { 0 };
	struct bt_fh_msg *m = calloc(1, sizeof *m);
	struct bt_cid c1, c2;
	bt_cid_for_block(0x71, (const uint8_t *)"a", 1, &c1);
	bt_cid_for_block(0x71, (const uint8_t *)"b", 1, &c2);

	/* #commit with prevData, an update op with prev, a delete op, blobs */
	m->type = BT_FH_COMMIT;
	set(&m->did, "did:plc:abc");
	set(&m->rev, "3lhhvfanmos22");
	set(&m->since, "3lhhvfafwmq2r");
	m->has_since = true;
	set(&m->time, "2025-02-06T01:05:27.125Z");
	m->commit = c1;
	m->prev_data = c2;
	m->has_prev_data = true;
	set(&m->blocks, "\x01\x02\x03");
	m->n_ops = 2;
	set(&m->ops[0].action, "update");
	set(&m->ops[0].path, "app.bsky.feed.post/3lhhvfanmos22");
	m->ops[0].has_cid = m->ops[0].has_prev = true;
	m->ops[0].cid = c1;
	m->ops[0].prev = c2;
	set(&m->ops[1].action, "delete");
	set(&m->ops[1].path, "app.bsky.feed.post/3lhhvfafwmq2r");
	struct bt_buf blobs = { 0 };
	bt_cbor_w_array(&blobs, 1);
	bt_cbor_w_cid(&blobs, &c2);
	m->blobs = (struct bt_bytes){ blobs.p, blobs.len };
	CHECK(round_trip(m, 77, &fr) == 0);
	CHECK(msg2.type == BT_FH_COMMIT && msg2.seq == 77 && msg2.n_ops == 2);
	CHECK(msg2.has_prev_data && bt_cid_eq(&msg2.prev_data, &c2) && bt_cid_eq(&msg2.commit, &c1));
	CHECK(msg2.ops[0].has_prev && bt_cid_eq(&msg2.ops[0].prev, &c2) && !msg2.ops[1].has_cid);
	CHECK(msg2.blobs.n == blobs.len && !memcmp(msg2.blobs.p, blobs.p, blobs.len));
	CHECK(msg2.blocks.n == 3 && bt_bytes_eq_str(msg2.since, "3lhhvfafwmq2r"));
	/* no time: stamped with the current time */
	bt_buf_reset(&fr);
	m->time = (struct bt_bytes){ NULL, 0 };
	CHECK(round_trip(m, 78, &fr) == 0 && msg2.time.n == 24 && msg2.time.p[23] == 'Z');
	/* too many ops */
	m->n_ops = BT_FH_MAX_OPS + 1;
	size_t off;
	bt_buf_reset(&fr);
	CHECK(bt_fh_encode_noseq(m, &fr, &off) == -EINVAL && fr.len == 0);

	/* #sync */
	memset(m, 0, sizeof *m);
	m->type = BT_FH_SYNC;
	set(&m->did, "did:web:example.com");
	set(&m->rev, "3lhhvfanmos22");
	set(&m->time, "2025-02-06T01:05:27.125Z");
	set(&m->blocks, "car");
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 1, &fr) == 0 && msg2.type == BT_FH_SYNC && bt_bytes_eq_str(msg2.did, "did:web:example.com") &&
	      msg2.blocks.n == 3 && bt_bytes_eq_str(msg2.rev, "3lhhvfanmos22"));
	/* #identity with and without handle */
	m->type = BT_FH_IDENTITY;
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 2, &fr) == 0 && msg2.type == BT_FH_IDENTITY && !msg2.has_handle);
	set(&m->handle, "alice.example.com");
	m->has_handle = true;
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 3, &fr) == 0 && msg2.has_handle && bt_bytes_eq_str(msg2.handle, "alice.example.com"));
	/* #account */
	m->type = BT_FH_ACCOUNT;
	m->active = false;
	set(&m->status, "takendown");
	m->has_status = true;
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 4, &fr) == 0 && msg2.type == BT_FH_ACCOUNT && !msg2.active && msg2.has_status &&
	      bt_bytes_eq_str(msg2.status, "takendown") && msg2.seq == 4);
	m->active = true;
	m->has_status = false;
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 5, &fr) == 0 && msg2.active && !msg2.has_status);
	/* #info: no seq */
	m->type = BT_FH_INFO;
	set(&m->name, "OutdatedCursor");
	set(&m->message, "too old");
	m->has_message = true;
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 0, &fr) == 0 && msg2.type == BT_FH_INFO && !msg2.has_seq &&
	      bt_bytes_eq_str(msg2.name, "OutdatedCursor") && bt_bytes_eq_str(msg2.message, "too old"));
	/* error frame */
	m->type = BT_FH_ERROR;
	set(&m->error, "FutureCursor");
	bt_buf_reset(&fr);
	CHECK(round_trip(m, 0, &fr) == 0 && msg2.type == BT_FH_ERROR && msg2.op == -1 &&
	      bt_bytes_eq_str(msg2.error, "FutureCursor"));
	m->type = BT_FH_UNKNOWN;
	CHECK(bt_fh_encode_noseq(m, &fr, &off) == -EINVAL);

	/* helpers */
	bt_buf_reset(&fr);
	CHECK(bt_fh_encode_error(&fr, "ConsumerTooSlow", NULL) == 0);
	CHECK(bt_fh_decode(fr.p, fr.len, &msg2, NULL) == 0 && msg2.type == BT_FH_ERROR &&
	      bt_bytes_eq_str(msg2.error, "ConsumerTooSlow") && !msg2.has_message);
	static const uint8_t err_frame[] = { 0xa1, 0x62, 'o', 'p', 0x20, 0xa1, 0x65, 'e', 'r', 'r', 'o', 'r',
					     0x61, 'X' };
	struct bt_fh_peek pk;
	CHECK(bt_fh_peek(err_frame, sizeof err_frame, &pk) == 0 && pk.op == -1 && pk.type == BT_FH_ERROR &&
	      pk.error.n == 1 && pk.error.p[0] == 'X');
	bt_buf_reset(&fr);
	CHECK(bt_fh_encode_info(&fr, "OutdatedCursor", "m") == 0);
	CHECK(bt_fh_decode(fr.p, fr.len, &msg2, NULL) == 0 && msg2.type == BT_FH_INFO && msg2.has_message);
	bt_buf_reset(&fr);
	CHECK(bt_fh_splice_seq((const uint8_t *)"ab", 2, 3, 1, &fr) == -EINVAL);
	CHECK(bt_fh_splice_seq((const uint8_t *)"ab", 2, 1, 24, &fr) == 0 && fr.len == 4 &&
	      !memcmp(fr.p, "a\x18\x18" "b", 4));
	bt_buf_free(&fr);
	bt_buf_free(&blobs);
	free(m);
}

/* Hand-made bad frames: wrong types, unknown t, trailing data, too many ops. */
static void bad_frames(void)
{
	struct bt_buf f = { 0 };
	const char *why = NULL;
	struct {
		const char *h, *b;
		int want; /* 0 ok, <0 error */
		enum bt_fh_type type;
	} cases[] = {
		{ "{\"t\":\"#identity\",\"op\":1}", "{\"did\":\"did:plc:a\",\"seq\":1,\"time\":\"x\"}", 0, BT_FH_IDENTITY },
		{ "{\"t\":\"#identity\",\"op\":1}", "{\"did\":\"did:plc:a\",\"seq\":\"1\"}", -EBADMSG, 0 },
		{ "{\"t\":\"#identity\",\"op\":1}", "{\"did\":5,\"seq\":1}", -EBADMSG, 0 },
		{ "{\"t\":\"#identity\",\"op\":1}", "{\"seq\":1}", -EBADMSG, 0 },
		{ "{\"t\":\"#identity\",\"op\":1}", "{\"did\":\"d\",\"seq\":-1}", -EBADMSG, 0 },
		{ "{\"t\":\"#identity\",\"op\":1}", "[1]", -EBADMSG, 0 },
		{ "{\"t\":\"#identity\",\"op\":2}", "{}", -EBADMSG, 0 },
		{ "{\"op\":1}", "{}", -EBADMSG, 0 },
		{ "{\"t\":7,\"op\":1}", "{}", -EBADMSG, 0 },
		{ "{\"t\":\"#labels\",\"op\":1}", "{\"seq\":1,\"x\":[1,{\"a\":null}]}", 0, BT_FH_UNKNOWN },
		{ "{\"t\":\"#account\",\"op\":1}", "{\"did\":\"d\",\"seq\":1,\"active\":1}", -EBADMSG, 0 },
		{ "{\"t\":\"#account\",\"op\":1}", "{\"did\":\"d\",\"seq\":1,\"active\":true,\"extra\":{\"k\":[]}}", 0, BT_FH_ACCOUNT },
		{ "{\"t\":\"#commit\",\"op\":1}", "{\"repo\":\"d\",\"seq\":1,\"rev\":\"r\",\"ops\":[],\"blocks\":\"notbytes\",\"commit\":null}", -EBADMSG, 0 },
		{ "{\"t\":\"#commit\",\"op\":1}", "{\"repo\":\"d\",\"seq\":1,\"rev\":\"r\",\"ops\":[{\"path\":\"p\"}],\"blocks\":{\"$bytes\":\"AA\"},\"commit\":{\"$link\":\"bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq\"}}", -EBADMSG, 0 },
		{ "{\"t\":\"#commit\",\"op\":1}", "{\"repo\":\"d\",\"seq\":1,\"rev\":\"r\",\"ops\":[],\"blocks\":{\"$bytes\":\"AA\"},\"commit\":{\"$link\":\"bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq\"},\"blobs\":{}}", -EBADMSG, 0 },
		{ "{\"t\":\"#commit\",\"op\":1}", "{\"repo\":\"d\",\"seq\":1,\"rev\":\"r\",\"ops\":[],\"blocks\":{\"$bytes\":\"AA\"},\"commit\":{\"$link\":\"bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq\"},\"blobs\":null,\"tooBig\":true}", 0, BT_FH_COMMIT },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bt_buf_reset(&f);
		CHECK(bt_cbor_from_json(cases[i].h, strlen(cases[i].h), &f) == 0);
		CHECK(bt_cbor_from_json(cases[i].b, strlen(cases[i].b), &f) == 0);
		int rc = bt_fh_decode(f.p, f.len, &msg, &why);
		CHECKF(rc == cases[i].want, "case %zu: rc %d (%s)", i, rc, why ? why : "");
		if (rc == 0)
			CHECKF(msg.type == cases[i].type, "case %zu type", i);
		if (cases[i].want == 0) {
			/* trailing byte */
			bt_buf_putc(&f, 0x00);
			CHECKF(bt_fh_decode(f.p, f.len, &msg, &why) < 0, "case %zu trailing", i);
		}
	}
	CHECK(msg.too_big); /* the last case */
	/* 201 ops */
	bt_buf_reset(&f);
	const char *h = "{\"t\":\"#commit\",\"op\":1}";
	bt_cbor_from_json(h, strlen(h), &f);
	bt_cbor_w_map(&f, 1);
	bt_cbor_w_str(&f, "ops");
	bt_cbor_w_array(&f, 201);
	for (int i = 0; i < 201; i++) {
		bt_cbor_w_map(&f, 2);
		bt_cbor_w_str(&f, "path");
		bt_cbor_w_str(&f, "a/b");
		bt_cbor_w_str(&f, "action");
		bt_cbor_w_str(&f, "create");
	}
	CHECK(bt_fh_decode(f.p, f.len, &msg, &why) == -E2BIG);
	/* floats / indefinite inside the body */
	static const uint8_t flt[] = { 0xa2, 0x61, 't', 0x63, '#', 'x', 'y', 0x62, 'o', 'p', 0x01,
				       0xa1, 0x61, 'a', 0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0 };
	CHECK(bt_fh_decode(flt, sizeof flt, &msg, &why) < 0);
	static const uint8_t indef[] = { 0xa2, 0x61, 't', 0x63, '#', 'x', 'y', 0x62, 'o', 'p', 0x01,
					 0xbf, 0xff };
	CHECK(bt_fh_decode(indef, sizeof indef, &msg, &why) < 0);
	struct bt_fh_peek pk;
	CHECK(bt_fh_peek(indef, sizeof indef, &pk) < 0);
	bt_buf_free(&f);
}

int main(void)
{
	vectors();
	every_type();
	bad_frames();
	BT_TEST_END();
}
