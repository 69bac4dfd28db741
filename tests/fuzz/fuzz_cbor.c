/*
 * NAME
 *	fuzz_cbor - libFuzzer target for the DAG-CBOR reader
 * DESCRIPTION
 *	Runs the validating skip, canonicalize, and checks that anything
 *	canonicalize accepts is a fixed point (canonical output re-canonicalizes
 *	to itself and passes the strict skip).
 * DIAGNOSTICS
 *	Aborts on an invariant violation.
 */
#include <stdlib.h>
#include <string.h>

#include "bt_cbor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bt_cbor_rd r;
	bt_cbor_rd_init(&r, data, size);
	(void)bt_cbor_skip(&r);
	struct bt_buf a = { 0 }, b = { 0 };
	if (bt_cbor_canonicalize(data, size, &a) == 0) {
		if (bt_cbor_canonicalize(a.p, a.len, &b) != 0 || b.len != a.len || memcmp(a.p, b.p, a.len))
			abort();
		bt_cbor_rd_init(&r, a.p, a.len);
		if (bt_cbor_skip(&r) != 0 || r.p != r.end)
			abort();
	}
	bt_buf_free(&a);
	bt_buf_free(&b);
	return 0;
}
