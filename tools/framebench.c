/*
 * NAME
 *	framebench - CPU per #commit frame of verify's checks, against one bare signature verify
 * DESCRIPTION
 *	framebench [--frames F] [--records R] [--rounds N] [--key k256|p256|mixed]
 *	Builds F really signed #commit frames in memory, each from its own account: a repo of R
 *	records (a multi-level MST: every node of it goes in the CAR, with the commit and the new
 *	record: R = 40 gives about 10 blocks), one create op, prevData the tree without the new
 *	key, so the Sync 1.1 inversion holds.  Then, N times over the F frames, runs what
 *	baton-verify runs on a #commit outside its event loop: ingest's bt_fh_peek, bt_fh_decode,
 *	DID/TID syntax, bt_car_parse (every block hash), the commit block, its unsigned bytes,
 *	bt_pubkey_verify, bt_mst_invert compared with prevData, and bt_fh_encode_noseq of the
 *	accept.  Times each step (CPU time of this thread) and, on the same signatures, a bare
 *	bt_pubkey_verify loop.  Prints one line:
 *	  frames=F blocks=B bytes=S frame_us=X verify_us=Y ratio=X/Y peek_us= decode_us= car_us=
 *	  commit_us= sig_us= mst_us= encode_us= mallocs=
 *	(mallocs: allocations per frame in the timed rounds, libraries included; the data plane
 *	should make none.)
 *	No ring, no kernel: the library part of verify's cost per event, repeatable on a busy
 *	machine (the stack's figures come from tests/bench.sh).
 * DIAGNOSTICS
 *	Exit 1 if a frame fails a check (a bug), 2 on a usage error.
 */
#include "bt_car.h"
#include "bt_cbor.h"
#include "bt_commit.h"
#include "bt_crypto.h"
#include "bt_fh.h"
#include "bt_mst.h"
#include "bt_syntax.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXR 4096

/* Allocations counted (the executable's malloc interposes libc's for every library), so the
   "no malloc per frame" rule is measured: mallocs= is per frame, over the timed rounds. */
static unsigned long n_alloc;
#ifndef __SANITIZE_ADDRESS__ /* ASan owns malloc: no count there (mallocs=0 means nothing then) */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
void *malloc(size_t n)
{
	n_alloc++;
	return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
	n_alloc++;
	return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
	n_alloc++;
	return __libc_realloc(p, n);
}
#endif
static const char S32[] = "234567abcdefghijklmnopqrstuvwxyz";

struct frame {
	uint8_t *p;
	size_t n;
	struct bt_pubkey *pub;
	size_t blocks;
};

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
	fprintf(stderr, "framebench: %s\n", m);
	exit(1);
}

static void tid(uint64_t v, char out[14])
{
	for (int i = 12; i >= 0; i--) {
		out[i] = S32[v & 31];
		v >>= 5;
	}
	out[13] = 0;
}

/* {text, $type, createdAt} */
static void record(struct bt_buf *b, unsigned a, unsigned i)
{
	char text[96];
	int n = snprintf(text, sizeof text, "framebench post %u of account %u", i, a);
	bt_buf_reset(b);
	if (bt_cbor_w_map(b, 3) || bt_cbor_w_str(b, "text") || bt_cbor_w_text(b, text, (size_t)n) ||
	    bt_cbor_w_str(b, "$type") || bt_cbor_w_str(b, "app.bsky.feed.post") || bt_cbor_w_str(b, "createdAt") ||
	    bt_cbor_w_str(b, "2026-12-01T00:00:00.000Z"))
		die("record");
}

static int commit(struct bt_buf *b, const char *did, const char *rev, const struct bt_cid *data, const uint8_t *sig)
{
	int rc = bt_cbor_w_map(b, sig ? 6 : 5);
	rc = rc ? rc : bt_cbor_w_str(b, "did");
	rc = rc ? rc : bt_cbor_w_str(b, did);
	rc = rc ? rc : bt_cbor_w_str(b, "rev");
	rc = rc ? rc : bt_cbor_w_str(b, rev);
	if (sig) {
		rc = rc ? rc : bt_cbor_w_str(b, "sig");
		rc = rc ? rc : bt_cbor_w_bytes(b, sig, 64);
	}
	rc = rc ? rc : bt_cbor_w_str(b, "data");
	rc = rc ? rc : bt_cbor_w_cid(b, data);
	rc = rc ? rc : bt_cbor_w_str(b, "prev");
	rc = rc ? rc : bt_cbor_w_null(b);
	rc = rc ? rc : bt_cbor_w_str(b, "version");
	rc = rc ? rc : bt_cbor_w_uint(b, 3);
	return rc;
}

static void build(struct frame *f, unsigned a, unsigned R, enum bt_key_type kt)
{
	static char keys[MAXR + 1][64];
	static const uint8_t *kp[MAXR + 1];
	static size_t kl[MAXR + 1];
	static struct bt_cid vals[MAXR + 1];
	struct bt_buf rec = { 0 }, tree = { 0 }, uns = { 0 }, com = { 0 }, car = { 0 }, fr = { 0 };
	char did[64], rev[14];
	snprintf(did, sizeof did, "did:plc:%c%c%c%cframebenchacct%06u", S32[a & 31], S32[(a >> 5) & 31],
		 S32[(a >> 10) & 31], S32[(a >> 15) & 31], a);
	for (unsigned i = 0; i <= R; i++) {
		char t[14];
		tid(((uint64_t)1700000000000000ull + (uint64_t)a * 100000u + i * 1000u) << 10 | 3u, t);
		kl[i] = (size_t)snprintf(keys[i], sizeof keys[i], "app.bsky.feed.post/%s", t);
		kp[i] = (const uint8_t *)keys[i];
		record(&rec, a, i);
		bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, rec.p, rec.len, &vals[i]);
	}
	tid(((uint64_t)1700000000000000ull + (uint64_t)a * 100000u + (R + 1) * 1000u) << 10 | 3u, rev);
	struct bt_cid prev_root, root, ccid;
	if (bt_mst_build_car(kp, kl, vals, R, NULL, &prev_root) || bt_mst_build_car(kp, kl, vals, R + 1, &tree, &root))
		die("mst");
	struct bt_privkey *sk;
	uint8_t sig[64];
	if (bt_privkey_generate(kt, &sk) || bt_privkey_public(sk, &f->pub))
		die("key");
	if (commit(&uns, did, rev, &root, NULL) || bt_privkey_sign(sk, uns.p, uns.len, sig) ||
	    commit(&com, did, rev, &root, sig))
		die("commit");
	bt_privkey_free(&sk);
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, com.p, com.len, &ccid);
	struct bt_car tc;
	bt_car_init(&tc, 0);
	if (bt_car_parse(&tc, tree.p, tree.len, NULL))
		die("tree car");
	record(&rec, a, R);
	if (bt_car_write_header(&car, &ccid) || bt_car_write_block(&car, &ccid, com.p, com.len))
		die("car");
	for (size_t i = 0; i < tc.n_blocks; i++)
		if (bt_car_write_block(&car, &tc.blocks[i].cid, tc.blocks[i].data, tc.blocks[i].len))
			die("car");
	if (bt_car_write_block(&car, &vals[R], rec.p, rec.len))
		die("car");
	f->blocks = tc.n_blocks + 2;
	bt_car_free(&tc);

	static struct bt_fh_msg m;
	memset(&m, 0, sizeof m);
	m.type = BT_FH_COMMIT;
	m.op = 1;
	m.did = (struct bt_bytes){ (const uint8_t *)did, strlen(did) };
	m.rev = (struct bt_bytes){ (const uint8_t *)rev, 13 };
	m.has_since = true;
	m.since = (struct bt_bytes){ (const uint8_t *)rev, 13 }; /* any TID: not checked here */
	m.time = (struct bt_bytes){ (const uint8_t *)"2026-12-01T00:00:00.000Z", 24 };
	m.commit = ccid;
	m.has_prev_data = true;
	m.prev_data = prev_root;
	m.blocks = (struct bt_bytes){ car.p, car.len };
	m.n_ops = 1;
	m.ops[0].action = (struct bt_bytes){ (const uint8_t *)"create", 6 };
	m.ops[0].path = (struct bt_bytes){ kp[R], kl[R] };
	m.ops[0].has_cid = true;
	m.ops[0].cid = vals[R];
	struct bt_buf tmp = { 0 };
	size_t seq_off;
	if (bt_fh_encode_noseq(&m, &tmp, &seq_off) || bt_fh_splice_seq(tmp.p, tmp.len, seq_off, 1000u + a, &fr))
		die("frame");
	f->p = malloc(fr.len);
	if (!f->p)
		die("oom");
	memcpy(f->p, fr.p, fr.len);
	f->n = fr.len;
	bt_buf_free(&rec);
	bt_buf_free(&tree);
	bt_buf_free(&uns);
	bt_buf_free(&com);
	bt_buf_free(&car);
	bt_buf_free(&fr);
	bt_buf_free(&tmp);
}

int main(int argc, char **argv)
{
	unsigned F = 256, R = 40, N = 8;
	const char *key = "mixed";
	static const struct option lo[] = { { "frames", 1, 0, 'f' }, { "records", 1, 0, 'r' }, { "rounds", 1, 0, 'n' },
					    { "key", 1, 0, 'k' }, { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'f')
			F = (unsigned)atoi(optarg);
		else if (c == 'r')
			R = (unsigned)atoi(optarg);
		else if (c == 'n')
			N = (unsigned)atoi(optarg);
		else if (c == 'k')
			key = optarg;
		else
			return 2;
	}
	if (!F || R < 1 || R > MAXR || !N ||
	    (strcmp(key, "k256") && strcmp(key, "p256") && strcmp(key, "mixed"))) {
		fprintf(stderr, "usage: framebench [--frames F] [--records R<=%d] [--rounds N] [--key k256|p256|mixed]\n",
			MAXR);
		return 2;
	}
	struct frame *fs = calloc(F, sizeof *fs);
	if (!fs)
		die("oom");
	size_t blocks = 0, bytes = 0;
	for (unsigned i = 0; i < F; i++) {
		enum bt_key_type kt = !strcmp(key, "k256") ? BT_KEY_K256 :
				      !strcmp(key, "p256") ? BT_KEY_P256 : (i & 1 ? BT_KEY_P256 : BT_KEY_K256);
		build(&fs[i], i, R, kt);
		blocks += fs[i].blocks;
		bytes += fs[i].n;
	}
	static struct bt_fh_msg msg;
	struct bt_car car;
	bt_car_init(&car, 0);
	struct bt_buf unsig = { 0 }, enc = { 0 };
	double t[8] = { 0 }, bare = 0;
	unsigned long alloc0 = 0;
	/* Unsigned bytes and signatures for the bare loop, copied out once. */
	uint8_t (*sigs)[64] = calloc(F, 64);
	struct bt_buf *uns = calloc(F, sizeof *uns);
	if (!sigs || !uns)
		die("oom");
	for (unsigned round = 0; round <= N; round++) {
		if (round == 1)
			alloc0 = n_alloc;
		for (unsigned i = 0; i < F; i++) {
			const struct frame *f = &fs[i];
			const char *why = NULL;
			struct bt_fh_peek pk;
			double t0 = cpu_s();
			if (bt_fh_peek(f->p, f->n, &pk))
				die("peek");
			double t1 = cpu_s();
			if (bt_fh_decode(f->p, f->n, &msg, &why) || !bt_syntax_did((const char *)msg.did.p, msg.did.n) ||
			    !bt_syntax_tid((const char *)msg.rev.p, msg.rev.n))
				die("decode");
			double t2 = cpu_s();
			if (bt_car_parse(&car, msg.blocks.p, msg.blocks.n, &why) || !bt_cid_eq(&car.root, &msg.commit))
				die(why ? why : "car");
			double t3 = cpu_s();
			const struct bt_car_block *blk = bt_car_get(&car, &car.root);
			struct bt_commit cm;
			bt_buf_reset(&unsig);
			if (!blk || bt_commit_decode(blk->data, blk->len, &cm, &why) || cm.version != 3 ||
			    bt_commit_unsigned(blk->data, blk->len, &unsig))
				die("commit");
			double t4 = cpu_s();
			if (bt_pubkey_verify(f->pub, unsig.p, unsig.len, cm.sig.p, cm.sig.n))
				die("signature");
			double t5 = cpu_s();
			struct bt_cid prev;
			if (bt_mst_invert(&car, &cm.data, msg.ops, msg.n_ops, &prev, &why) || !bt_cid_eq(&prev, &msg.prev_data))
				die(why ? why : "inversion");
			double t6 = cpu_s();
			size_t so;
			bt_buf_reset(&enc);
			if (bt_fh_encode_noseq(&msg, &enc, &so))
				die("encode");
			double t7 = cpu_s();
			if (round == 0) { /* warm-up round: not timed; keeps the bare loop's inputs */
				bt_buf_reset(&uns[i]);
				bt_buf_append(&uns[i], unsig.p, unsig.len);
				memcpy(sigs[i], cm.sig.p, 64);
				continue;
			}
			t[0] += t1 - t0;
			t[1] += t2 - t1;
			t[2] += t3 - t2;
			t[3] += t4 - t3;
			t[4] += t5 - t4;
			t[5] += t6 - t5;
			t[6] += t7 - t6;
		}
	}
	unsigned long allocs = n_alloc - alloc0;
	double b0 = cpu_s();
	for (unsigned round = 0; round < N; round++)
		for (unsigned i = 0; i < F; i++)
			if (bt_pubkey_verify(fs[i].pub, uns[i].p, uns[i].len, sigs[i], 64))
				die("bare signature");
	bare = cpu_s() - b0;
	double k = 1e6 / ((double)F * N);
	double total = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6];
	printf("frames=%u blocks=%.1f bytes=%.0f frame_us=%.2f verify_us=%.2f ratio=%.2f peek_us=%.2f decode_us=%.2f "
	       "car_us=%.2f commit_us=%.2f sig_us=%.2f mst_us=%.2f encode_us=%.2f mallocs=%.2f\n",
	       F, (double)blocks / F, (double)bytes / F, total * k, bare * k, total / bare, t[0] * k, t[1] * k,
	       t[2] * k, t[3] * k, t[4] * k, t[5] * k, t[6] * k, (double)allocs / ((double)F * N));
	for (unsigned i = 0; i < F; i++) {
		free(fs[i].p);
		bt_pubkey_free(&fs[i].pub);
		bt_buf_free(&uns[i]);
	}
	free(fs);
	free(sigs);
	free(uns);
	bt_car_free(&car);
	bt_buf_free(&unsig);
	bt_buf_free(&enc);
	bt_mst_thread_free();
	return 0;
}
