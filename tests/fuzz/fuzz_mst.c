/*
 * NAME
 *	fuzz_mst - libFuzzer target for the Sync 1.1 MST inversion (bt_mst_invert)
 * DESCRIPTION
 *	The input encodes up to 8 ops and a set of blocks; block CIDs are computed here so that
 *	mutated MST nodes pass the CAR hash check and reach the MST parser.
 */
#include <stdint.h>
#include <string.h>
#include "bt_car.h"
#include "bt_mst.h"
static const char *acts[] = { "create", "update", "delete", "zap" };
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	/* first byte: op count; then per op: action byte, key len byte, key bytes, 2 cid selector bytes; rest: CAR */
	static struct bt_car car;
	static int init;
	if (!init) { bt_car_init(&car, 1000); init = 1; }
	if (n < 1) return 0;
	size_t nops = d[0] % 8, off = 1;
	struct bt_fh_op ops[8];
	memset(ops, 0, sizeof ops);
	size_t k = 0;
	for (; k < nops && off + 2 < n; k++) {
		ops[k].action.p = (const uint8_t *)acts[d[off] & 3];
		ops[k].action.n = strlen(acts[d[off] & 3]);
		size_t kl = d[off + 1] % 24;
		off += 2;
		if (off + kl > n) break;
		ops[k].path.p = d + off; ops[k].path.n = kl; off += kl;
		ops[k].has_cid = ops[k].has_prev = 1;
	}
	/* rest: blocks as 2-byte length + bytes; CIDs computed here so the fuzzer reaches the MST parser */
	static struct bt_buf b;
	bt_buf_reset(&b);
	struct bt_cid first; int have = 0;
	size_t o = off;
	while (o + 2 <= n) {
		size_t bl = ((size_t)d[o] << 8 | d[o + 1]) % 2048; o += 2;
		if (o + bl > n) bl = n - o;
		struct bt_cid c; bt_cid_for_block(0x71, d + o, bl, &c);
		if (!have) { bt_car_write_header(&b, &c); first = c; have = 1; }
		bt_car_write_block(&b, &c, d + o, bl); o += bl;
	}
	if (!have) return 0;
	(void)first;
	if (bt_car_parse(&car, b.p, b.len, NULL)) return 0;
	for (size_t i = 0; i < k; i++) {
		ops[i].cid = car.blocks[(i * 7) % (car.n_blocks ? car.n_blocks : 1)].cid;
		ops[i].prev = ops[i].cid;
		if (!car.n_blocks) { ops[i].cid = car.root; ops[i].prev = car.root; }
	}
	struct bt_cid out; const char *why;
	bt_mst_invert(&car, &car.root, ops, k, &out, &why);
	for (size_t i = 0; i < car.n_blocks; i++)
		bt_mst_invert(&car, &car.blocks[i].cid, ops, k, &out, &why);
	return 0;
}
