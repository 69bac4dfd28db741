/*
 * NAME
 *	test_cbor - DAG-CBOR reader/writer, CID strings, data-model fixtures
 * DESCRIPTION
 *	Golden fixtures from vectors/interop/data-model and syntax/cid_*, plus
 *	hand-made invalid encodings and truncation at every offset.
 * DIAGNOSTICS
 *	Prints failing checks; exits non-zero on failure.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "bt_buf.h"
#include "bt_cbor.h"
#include "bt_cid.h"
#include "bt_test.h"

static int canon_ok(const uint8_t *p, size_t n)
{
	struct bt_buf b = { 0 };
	int rc = bt_cbor_canonicalize(p, n, &b);
	bt_buf_free(&b);
	return rc;
}

static int skip_all(const uint8_t *p, size_t n)
{
	struct bt_cbor_rd r;
	bt_cbor_rd_init(&r, p, n);
	int rc = bt_cbor_skip(&r);
	if (rc)
		return rc;
	return r.p == r.end ? 0 : -EBADMSG;
}

#define BAD(...)                                                              \
	do {                                                                  \
		static const uint8_t in_[] = { __VA_ARGS__ };                 \
		CHECKF(skip_all(in_, sizeof in_) < 0, "skip accepted %s", #__VA_ARGS__); \
		CHECKF(canon_ok(in_, sizeof in_) < 0, "canon accepted %s", #__VA_ARGS__); \
	} while (0)

#define GOOD(...)                                                             \
	do {                                                                  \
		static const uint8_t in_[] = { __VA_ARGS__ };                 \
		CHECKF(skip_all(in_, sizeof in_) == 0, "skip rejected %s", #__VA_ARGS__); \
	} while (0)

static void test_fixtures(void)
{
	char path[512];
	snprintf(path, sizeof path, "%s/interop/data-model/data-model-fixtures.json", bt_vectors());
	json_error_t err;
	json_t *arr = json_load_file(path, 0, &err);
	CHECKF(arr && json_is_array(arr), "load %s", path);
	if (!arr)
		return;
	size_t i;
	json_t *e;
	int count = 0;
	json_array_foreach(arr, i, e) {
		const char *b64 = json_string_value(json_object_get(e, "cbor_base64"));
		const char *cidstr = json_string_value(json_object_get(e, "cid"));
		struct bt_buf raw = { 0 }, out = { 0 }, fromj = { 0 };
		CHECK(bt_base64_decode_buf(b64, strlen(b64), &raw) == 0);
		/* decode + canonical re-encode gives the same bytes */
		CHECKF(bt_cbor_canonicalize(raw.p, raw.len, &out) == 0, "fixture %zu", i);
		CHECKF(out.len == raw.len && memcmp(out.p, raw.p, raw.len) == 0, "fixture %zu round trip", i);
		CHECKF(skip_all(raw.p, raw.len) == 0, "fixture %zu strict skip", i);
		/* CID of the bytes */
		struct bt_cid c, want;
		char s[BT_CID_STR_MAX];
		bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, raw.p, raw.len, &c);
		CHECK(bt_cid_to_str(&c, s, sizeof s) > 0);
		CHECKF(strcmp(s, cidstr) == 0, "fixture %zu cid %s != %s", i, s, cidstr);
		CHECK(bt_cid_from_str(cidstr, &want) == 0 && bt_cid_eq(&c, &want));
		CHECK(bt_cid_check_block(&want, raw.p, raw.len) == 0);
		/* the JSON form encodes to the same bytes */
		char *js = json_dumps(json_object_get(e, "json"), JSON_ENCODE_ANY | JSON_COMPACT);
		CHECKF(bt_cbor_from_json(js, strlen(js), &fromj) == 0, "fixture %zu from json", i);
		CHECKF(fromj.len == raw.len && memcmp(fromj.p, raw.p, raw.len) == 0, "fixture %zu json bytes", i);
		free(js);
		/* truncation at every offset fails, never crashes */
		int trunc_ok = 1;
		for (size_t k = 0; k < raw.len; k++)
			if (canon_ok(raw.p, k) == 0 || skip_all(raw.p, k) == 0)
				trunc_ok = 0;
		CHECKF(trunc_ok, "fixture %zu: some truncation accepted", i);
		/* one flipped bit anywhere: never a crash (result may be valid) */
		for (size_t k = 0; k < raw.len; k++) {
			raw.p[k] ^= 0x20;
			(void)canon_ok(raw.p, raw.len);
			raw.p[k] ^= 0x20;
		}
		bt_buf_free(&raw);
		bt_buf_free(&out);
		bt_buf_free(&fromj);
		count++;
	}
	CHECK(count >= 3);
	json_decref(arr);
}

/* data-model-valid.json: every entry encodes and round-trips.  data-model-invalid.json
   is mostly about record semantics ($type, blob shape), which DAG-CBOR itself allows;
   the parts that apply to CBOR are floats and non-object top levels checked here. */
static void test_valid_invalid(void)
{
	char path[512];
	json_error_t err;
	snprintf(path, sizeof path, "%s/interop/data-model/data-model-valid.json", bt_vectors());
	json_t *arr = json_load_file(path, 0, &err);
	CHECK(arr != NULL);
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		struct bt_buf b = { 0 }, c = { 0 };
		char *js = json_dumps(json_object_get(e, "json"), JSON_ENCODE_ANY | JSON_COMPACT);
		CHECKF(bt_cbor_from_json(js, strlen(js), &b) == 0, "valid %zu", i);
		CHECK(bt_cbor_canonicalize(b.p, b.len, &c) == 0 && c.len == b.len && !memcmp(c.p, b.p, b.len));
		free(js);
		bt_buf_free(&b);
		bt_buf_free(&c);
	}
	json_decref(arr);
	snprintf(path, sizeof path, "%s/interop/data-model/data-model-invalid.json", bt_vectors());
	arr = json_load_file(path, 0, &err);
	CHECK(arr != NULL);
	int floats = 0;
	json_array_foreach(arr, i, e) {
		const char *note = json_string_value(json_object_get(e, "note"));
		if (!note || strcmp(note, "float") != 0)
			continue;
		struct bt_buf b = { 0 };
		char *js = json_dumps(json_object_get(e, "json"), JSON_ENCODE_ANY | JSON_COMPACT);
		CHECK(bt_cbor_from_json(js, strlen(js), &b) < 0);
		free(js);
		bt_buf_free(&b);
		floats++;
	}
	CHECK(floats == 1);
	json_decref(arr);
}

static void test_cid_strings(void)
{
	char path[512];
	const char *names[2] = { "valid", "invalid" };
	for (int v = 0; v < 2; v++) {
		snprintf(path, sizeof path, "%s/interop/syntax/cid_syntax_%s.txt", bt_vectors(), names[v]);
		FILE *f = fopen(path, "r");
		CHECKF(f != NULL, "open %s", path);
		if (!f)
			continue;
		char line[4096];
		int tested = 0;
		while (fgets(line, sizeof line, f)) {
			size_t n = strlen(line);
			while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
				line[--n] = 0;
			if (n == 0 || line[0] == '#')
				continue;
			struct bt_cid c;
			int rc = bt_cid_from_str(line, &c);
			if (v == 1) {
				CHECKF(rc < 0, "invalid cid accepted: '%s'", line);
				tested++;
			} else if (line[0] == 'b') {
				/* only base32 multibase is supported (all atproto CIDs use it) */
				char s[BT_CID_STR_MAX];
				CHECKF(rc == 0, "valid cid rejected: %s", line);
				CHECK(bt_cid_to_str(&c, s, sizeof s) > 0 && strcmp(s, line) == 0);
				tested++;
			} else {
				CHECKF(rc < 0, "non-base32 multibase accepted: %s", line);
			}
		}
		CHECK(tested >= 2);
		fclose(f);
	}
	struct bt_cid c;
	char s[BT_CID_STR_MAX];
	CHECK(bt_cid_from_str("", &c) < 0);
	CHECK(bt_cid_from_str("b", &c) < 0);
	CHECK(bt_cid_from_str("bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq", &c) == 0);
	CHECK(c.len == 36 && bt_cid_codec(&c) == 0x71);
	CHECK(bt_cid_to_str(&c, s, 10) == -ENOSPC);
	CHECK(bt_cid_from_str("bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabw", &c) < 0); /* short digest */
	CHECK(bt_cid_from_str("bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwqa", &c) < 0);
	CHECK(bt_cid_from_str("Bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq", &c) < 0);
	/* binary parse: version 0 and trailing bytes rejected */
	static const uint8_t v0[] = { 0x00, 0x71, 0x12, 0x01, 0xaa };
	CHECK(bt_cid_parse(v0, sizeof v0, &c) < 0);
	static const uint8_t okc[] = { 0x01, 0x55, 0x00, 0x01, 0xaa };
	CHECK(bt_cid_parse(okc, sizeof okc, &c) == 0);
	CHECK(bt_cid_parse(okc, sizeof okc - 1, &c) < 0);
	static const uint8_t nonmin[] = { 0x81, 0x00, 0x55, 0x00, 0x01, 0xaa };
	CHECK(bt_cid_parse(nonmin, sizeof nonmin, &c) < 0);
	CHECK(bt_cid_check_block(&c, (const uint8_t *)"x", 1) == -ENOTSUP);
}

static void test_reader_rules(void)
{
	GOOD(0x00);
	GOOD(0x17);
	GOOD(0x18, 0x18);
	GOOD(0x20);
	GOOD(0xf4);
	GOOD(0xf5);
	GOOD(0xf6);
	GOOD(0x80);
	GOOD(0xa0);
	GOOD(0x40);
	GOOD(0x60);
	GOOD(0xa2, 0x61, 0x62, 0x01, 0x62, 0x61, 0x61, 0x02);       /* {"b":1,"aa":2} length first */
	static const uint8_t wrong_order[] = { 0xa2, 0x62, 0x61, 0x61, 0x02, 0x61, 0x62, 0x01 };
	CHECK(skip_all(wrong_order, sizeof wrong_order) < 0);       /* {"aa":2,"b":1} */
	BAD(0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02);              /* duplicate key */
	BAD(0xa1, 0x01, 0x02);                                      /* integer key */
	BAD(0x9f, 0xff);                                            /* indefinite array */
	BAD(0xbf, 0xff);                                            /* indefinite map */
	BAD(0x5f, 0x41, 0x00, 0xff);                                /* indefinite bytes */
	BAD(0x7f, 0x61, 0x61, 0xff);                                /* indefinite text */
	BAD(0xff);                                                  /* break */
	BAD(0xf9, 0x3c, 0x00);                                      /* half float */
	BAD(0xfa, 0x3f, 0x80, 0x00, 0x00);                          /* single float */
	BAD(0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0);                    /* double 1.0 */
	BAD(0xf7);                                                  /* undefined */
	BAD(0xe0);                                                  /* simple 0 */
	BAD(0xf8, 0x20);                                            /* simple 32 */
	BAD(0x18, 0x05);                                            /* non-minimal uint */
	BAD(0x19, 0x00, 0x10);
	BAD(0x1a, 0x00, 0x00, 0xff, 0xff);
	BAD(0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff);
	BAD(0x38, 0x01);                                            /* non-minimal negint */
	BAD(0x58, 0x01, 0xaa);                                      /* non-minimal bytes length */
	BAD(0x98, 0x01, 0x00);                                      /* non-minimal array length */
	BAD(0x1c);                                                  /* reserved ai */
	BAD(0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0);                       /* negint below int64 */
	BAD(0xc0, 0x60);                                            /* tag 0 */
	BAD(0xd8, 0x2b, 0x40);                                      /* tag 43 */
	BAD(0xd8, 0x2a, 0x60);                                      /* tag 42 over text */
	BAD(0xd8, 0x2a, 0x42, 0x01, 0x71);                          /* tag 42 without 0x00 */
	BAD(0xd8, 0x2a, 0x45, 0x00, 0x01, 0x55, 0x00, 0x02);        /* tag 42, cid digest short */
	GOOD(0xd8, 0x2a, 0x46, 0x00, 0x01, 0x55, 0x00, 0x01, 0xaa);
	BAD(0x62, 0xc3, 0x28);                                      /* invalid utf-8 */
	BAD(0x62, 0xc0, 0x80);                                      /* overlong */
	BAD(0x63, 0xed, 0xa0, 0x80);                                /* surrogate */
	BAD(0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);  /* huge length */
	BAD(0x7a, 0x7f, 0xff, 0xff, 0xff, 0x61);
	BAD(0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00);  /* huge count */
	BAD(0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
	BAD(0x00, 0x00);                                            /* trailing data */

	/* depth bomb: 100 nested arrays */
	uint8_t deep[101];
	memset(deep, 0x81, 100);
	deep[100] = 0x00;
	struct bt_cbor_rd r;
	bt_cbor_rd_init(&r, deep, sizeof deep);
	CHECK(bt_cbor_skip(&r) == -E2BIG);
	CHECK(canon_ok(deep, sizeof deep) == -E2BIG);
	bt_cbor_rd_init(&r, deep + 50, sizeof deep - 50);
	CHECK(bt_cbor_skip(&r) == 0);

	/* canonicalize re-sorts what skip rejects */
	static const uint8_t unsorted[] = { 0xa2, 0x62, 0x61, 0x61, 0x02, 0x61, 0x62, 0x01 };
	static const uint8_t sorted[] = { 0xa2, 0x61, 0x62, 0x01, 0x62, 0x61, 0x61, 0x02 };
	struct bt_buf b = { 0 };
	CHECK(bt_cbor_canonicalize(unsorted, sizeof unsorted, &b) == 0);
	CHECK(b.len == sizeof sorted && !memcmp(b.p, sorted, sizeof sorted));
	bt_buf_free(&b);
	CHECK(b.p == NULL && b.cap == 0);
}

static void test_writer(void)
{
	struct bt_buf b = { 0 };
	int64_t ints[] = { 0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL, INT64_MAX,
			   -1, -24, -25, -256, -257, -65537, INT64_MIN };
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		bt_buf_reset(&b);
		CHECK(bt_cbor_w_int(&b, ints[i]) == 0);
		struct bt_cbor_rd r;
		struct bt_cbor_item it;
		bt_cbor_rd_init(&r, b.p, b.len);
		CHECKF(bt_cbor_next(&r, &it) == 0 && it.i == ints[i] && r.p == r.end, "int %lld",
		       (long long)ints[i]);
	}
	bt_buf_reset(&b);
	CHECK(bt_cbor_w_uint(&b, UINT64_MAX) == 0 && b.len == 9 && b.p[0] == 0x1b);
	bt_buf_reset(&b);
	struct bt_cid c;
	bt_cid_for_block(BT_CID_CODEC_RAW, (const uint8_t *)"hello", 5, &c);
	CHECK(bt_cbor_w_map(&b, 5) == 0);
	bt_cbor_w_str(&b, "a");
	bt_cbor_w_cid(&b, &c);
	bt_cbor_w_str(&b, "b");
	bt_cbor_w_bytes(&b, "\x01\x02", 2);
	bt_cbor_w_str(&b, "c");
	bt_cbor_w_bool(&b, true);
	bt_cbor_w_str(&b, "d");
	bt_cbor_w_null(&b);
	bt_cbor_w_str(&b, "ee");
	bt_cbor_w_array(&b, 2);
	bt_cbor_w_text(&b, "xyz", 3);
	bt_cbor_w_bool(&b, false);
	CHECK(skip_all(b.p, b.len) == 0);
	struct bt_cbor_rd r;
	struct bt_cbor_item it;
	struct bt_cid got;
	bt_cbor_rd_init(&r, b.p, b.len);
	CHECK(bt_cbor_next(&r, &it) == 0 && it.type == BT_CBOR_MAP && it.n == 5);
	CHECK(bt_cbor_next(&r, &it) == 0 && it.type == BT_CBOR_TEXT && it.n == 1 && it.p[0] == 'a');
	CHECK(bt_cbor_read_cid(&r, &got) == 0 && bt_cid_eq(&got, &c));
	CHECK(bt_cbor_next(&r, &it) == 0 && it.type == BT_CBOR_TEXT);
	CHECK(bt_cbor_next(&r, &it) == 0 && it.type == BT_CBOR_BYTES && it.n == 2 && it.p[1] == 2);
	CHECK(bt_cbor_next(&r, &it) == 0);
	CHECK(bt_cbor_next(&r, &it) == 0 && it.type == BT_CBOR_TRUE);
	CHECK(bt_cbor_next(&r, &it) == 0);
	bool present = true;
	CHECK(bt_cbor_read_cid_or_null(&r, &got, &present) == 0 && !present);
	CHECK(bt_cbor_next(&r, &it) == 0);
	CHECK(bt_cbor_next(&r, &it) == 0 && it.type == BT_CBOR_ARRAY && it.n == 2);
	CHECK(bt_cbor_skip(&r) == 0 && bt_cbor_skip(&r) == 0 && r.p == r.end);
	CHECK(bt_cbor_next(&r, &it) < 0); /* end of input */
	bt_buf_free(&b);
	bt_buf_free(&b); /* twice is fine */
}

int main(void)
{
	test_fixtures();
	test_valid_invalid();
	test_cid_strings();
	test_reader_rules();
	test_writer();
	BT_TEST_END();
}
