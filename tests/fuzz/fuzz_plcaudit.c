/*
 * NAME
 *	fuzz_plcaudit - libFuzzer target for bt_plc_audit_parse and bt_iso8601_ms
 * DESCRIPTION
 *	The whole input is parsed as the audit log of did:plc:rotationtestaccountqwxyz (the DID of
 *	the seeds); the first line also goes through bt_iso8601_ms.  A parsed history must be
 *	self-consistent: at most BT_PLC_HIST_MAX intervals, oldest first, each closed at or before
 *	the next one's start (a tombstone leaves a gap), only the last one open (and not after a tombstone), NUL-terminated hosts; and
 *	the prior-key rule must never accept an open interval.  Any crash, sanitizer report or leak
 *	is a finding.
 * DIAGNOSTICS
 *	Aborts on an inconsistent result so libFuzzer reports it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bt_plcaudit.h"

#define DID "did:plc:rotationtestaccountqwxyz"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bt_plc_hist h;
	const char *why = NULL;
	if (bt_plc_audit_parse((const char *)data, size, DID, &h, &why) == 0) {
		if (h.n > BT_PLC_HIST_MAX)
			abort();
		for (unsigned i = 0; i < h.n; i++) {
			const struct bt_plc_key *k = &h.k[i];
			if (!memchr(k->pds_host, 0, sizeof k->pds_host) || k->to_ms < k->from_ms)
				abort();
			bool last = i + 1 == h.n;
			/* the next interval starts where this one ends, or later: a tombstone (then a
			   later operation, which only a malformed log has) leaves a span with no key */
			if (!last && k->to_ms > h.k[i + 1].from_ms)
				abort();
			if ((k->to_ms == BT_PLC_OPEN) != (last && !h.tombstoned))
				abort();
			struct bt_plc_ask a = { .rev_us = k->from_ms * 1000, .now_ms = k->from_ms,
						.grace_ms = INT64_MAX / 4, .host = k->pds_host };
			if (k->to_ms == BT_PLC_OPEN && bt_plc_prior_ok(k, &a))
				abort();
		}
		bt_plc_hist_clear(&h);
	} else if (!why || h.n != 0) {
		abort();
	}
	char line[128];
	size_t n = 0;
	while (n < size && n < sizeof line - 1 && data[n] != '\n')
		n++;
	memcpy(line, data, n);
	line[n] = 0;
	int64_t ms = bt_iso8601_ms(line);
	if (ms < -1)
		abort();
	return 0;
}
