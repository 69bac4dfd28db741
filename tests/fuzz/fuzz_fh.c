/*
 * NAME
 *	fuzz_fh - libFuzzer target for firehose frames
 * DESCRIPTION
 *	peek + decode; whatever decodes is re-encoded, spliced and must decode
 *	again to the same type and seq.
 * DIAGNOSTICS
 *	Aborts on an invariant violation.
 */
#include <stdlib.h>

#include "bt_fh.h"

static struct bt_fh_msg m, m2;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bt_fh_peek pk;
	const char *why;
	(void)bt_fh_peek(data, size, &pk);
	if (bt_fh_decode(data, size, &m, &why) != 0)
		return 0;
	struct bt_buf enc = { 0 }, fr = { 0 };
	size_t off;
	if (bt_fh_encode_noseq(&m, &enc, &off) == 0) {
		if (off == SIZE_MAX) {
			if (bt_fh_decode(enc.p, enc.len, &m2, &why) != 0 || m2.type != m.type)
				abort();
		} else {
			if (bt_fh_splice_seq(enc.p, enc.len, off, 12345, &fr) != 0)
				abort();
			if (bt_fh_decode(fr.p, fr.len, &m2, &why) != 0 || m2.type != m.type || m2.seq != 12345 ||
			    m2.n_ops != m.n_ops)
				abort();
		}
	}
	bt_buf_free(&enc);
	bt_buf_free(&fr);
	return 0;
}
