/*
 * NAME
 *	fuzz_car - libFuzzer target for the CAR reader and commit decoder
 * DESCRIPTION
 *	Parses the input as a CAR, decodes the whole input and every block that
 *	passed its hash check as a commit, and rebuilds the unsigned bytes.  The
 *	CID index must agree with a linear scan (first block of equal CIDs) for
 *	every block's CID and the root, after good and failed parses alike.
 * DIAGNOSTICS
 *	Crashes only on memory errors or undefined behaviour.
 */
#include <stdlib.h>
#include <string.h>

#include "bt_car.h"
#include "bt_commit.h"

static struct bt_car car;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (car.max_blocks == 0)
		bt_car_init(&car, 1000);
	const char *why;
	(void)bt_car_parse(&car, data, size, &why);
	/* The commit decoder on the raw input, and on any block found. */
	struct bt_commit c;
	struct bt_buf out = { 0 };
	if (bt_commit_decode(data, size, &c, &why) == 0)
		(void)bt_commit_unsigned(data, size, &out);
	(void)bt_commit_unsigned(data, size, &out);
	for (size_t i = 0; i <= car.n_blocks; i++) {
		const struct bt_cid *want = i < car.n_blocks ? &car.blocks[i].cid : &car.root;
		const struct bt_car_block *first = NULL;
		for (size_t j = 0; j < car.n_blocks && !first; j++)
			if (bt_cid_eq(&car.blocks[j].cid, want))
				first = &car.blocks[j];
		if (bt_car_get(&car, want) != first)
			abort();
	}
	for (size_t i = 0; i < car.n_blocks; i++)
		if (bt_commit_decode(car.blocks[i].data, car.blocks[i].len, &c, &why) == 0)
			(void)bt_commit_unsigned(car.blocks[i].data, car.blocks[i].len, &out);
	bt_buf_free(&out);
	return 0;
}
