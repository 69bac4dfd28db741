/*
 * NAME
 *	store_ident - the persisted identity cache ("i/" did), written for verify
 * DESCRIPTION
 *	verify may not write RocksDB, so it sends the identities it resolves down its verdict ring
 *	(struct bt_rec_identity), each ahead of the verdicts that used it; the store puts it under
 *	"i/" did in the batch being built.  An accepted #identity deletes the key in the batch that
 *	commits the #identity event, so the persisted cache follows the stream: a verify that
 *	starts over a backlog checks the frames before an #identity with the key that was current
 *	before it, and resolves afresh after it (docs/identity.md).  Both run inside the store's
 *	turn, on the one batch: a put and a later delete (or the reverse) of the same key in one
 *	batch apply in order.
 * DIAGNOSTICS
 *	A malformed record is skipped with a log line; it is a cache, nothing else depends on it.
 */
#include "bt_db.h"
#include "bt_log.h"
#include "store.h"

#include <string.h>

void sto_ident_take(const void *p, size_t len, struct bt_db_batch *b)
{
	const struct bt_rec_identity *r = p;
	if (len < sizeof *r || r->did_len == 0 || r->did_len >= BT_DID_MAX || r->key_len >= BT_KEY_STR_MAX ||
	    r->host_len >= BT_HOST_MAX) {
		BT_LOG_EVERY(BT_LOG_ERROR, "malformed identity record (len %zu)", len);
		return;
	}
	struct bt_ident_rec v;
	memset(&v, 0, sizeof v);
	v.version = 1;
	v.fetched_ms = r->fetched_ms;
	v.key_len = r->key_len;
	memcpy(v.key, r->key, r->key_len);
	v.host_len = r->host_len;
	memcpy(v.pds_host, r->pds_host, r->host_len);
	char k[BT_DID_MAX + 2];
	bt_db_batch_put(b, k, bt_key_ident(k, sizeof k, r->did, r->did_len), &v, sizeof v);
}

void sto_ident_purge(const char *did, size_t n, struct bt_db_batch *b)
{
	char k[BT_DID_MAX + 2];
	bt_db_batch_del(b, k, bt_key_ident(k, sizeof k, did, n));
}
