/*
 * NAME
 *	bt_db - RocksDB wrapper and key schema (see bt_db.h)
 * DESCRIPTION
 *	One RocksDB instance under RELAY_DATA_DIR/db.  Options are set once here: a small LRU
 *	block cache, bloom filters for point lookups of accounts, and the WAL kept so secondaries
 *	can tail it.
 */
#include "bt_db.h"
#include "bt_log.h"

#include <errno.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bt_db {
	rocksdb_t *db;
	rocksdb_options_t *opt;
	rocksdb_readoptions_t *ro;
	rocksdb_readoptions_t *ro_events; /* long sequential scans of e/: readahead, no block cache */
	rocksdb_writeoptions_t *wo;
	bool secondary;
	char dir[512], sec_dir[512]; /* a secondary's paths, to reopen it */
	uint64_t gen;                /* the primary's DB_OPENS it last caught up with (0: not yet) */
};

struct bt_db_batch {
	rocksdb_writebatch_t *wb;
};

const char *bt_host_status_name(uint32_t s)
{
	static const char *n[] = { "active", "idle", "offline", "throttled", "banned" };
	return s < 5 ? n[s] : "unknown";
}

static rocksdb_options_t *make_options(void)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_increase_parallelism(o, 2);
	rocksdb_options_set_max_open_files(o, 512);
	rocksdb_options_set_compression(o, rocksdb_lz4_compression);
	rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
	rocksdb_filterpolicy_t *fp = rocksdb_filterpolicy_create_bloom(10);
	rocksdb_block_based_options_set_filter_policy(t, fp);
	rocksdb_cache_t *c = rocksdb_cache_create_lru(64u << 20);
	rocksdb_block_based_options_set_block_cache(t, c);
	rocksdb_options_set_block_based_table_factory(o, t);
	rocksdb_block_based_options_destroy(t);
	rocksdb_cache_destroy(c);
	return o;
}

static struct bt_db *wrap(rocksdb_t *r, rocksdb_options_t *o, bool sync, bool secondary)
{
	struct bt_db *db = calloc(1, sizeof *db);
	if (!db)
		return NULL;
	db->db = r;
	db->opt = o;
	db->ro = rocksdb_readoptions_create();
	/* Replay reads events in seq order, each once: 2 MiB readahead and no block-cache fill
	   halve the CPU per event of a scan (2.3-2.5 us against 5.6-5.8 us per 1.4 KB event). */
	db->ro_events = rocksdb_readoptions_create();
	rocksdb_readoptions_set_readahead_size(db->ro_events, 2u << 20);
	rocksdb_readoptions_set_fill_cache(db->ro_events, 0);
	db->wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(db->wo, sync);
	db->secondary = secondary;
	return db;
}

int bt_db_open_primary(const char *dir, bool sync_writes, struct bt_db **out)
{
	char *err = NULL;
	rocksdb_options_t *o = make_options();
	rocksdb_t *r = rocksdb_open(o, dir, &err);
	if (err) {
		BT_ERR("rocksdb open %s: %s", dir, err);
		rocksdb_free(err);
		rocksdb_options_destroy(o);
		return -EIO;
	}
	*out = wrap(r, o, sync_writes, false);
	return *out ? 0 : -ENOMEM;
}

int bt_db_open_secondary(const char *dir, const char *sec_dir, struct bt_db **out)
{
	char *err = NULL;
	rocksdb_options_t *o = make_options();
	rocksdb_options_set_max_open_files(o, -1); /* required for secondaries */
	/* A catch-up that finds a new MANIFEST loads the new tables' handlers on this many threads,
	   created and joined on every such catch-up (16 by default: thread stacks mapped and
	   unmapped, ~25% of a busy fanout's CPU in profiles).  One = inline, no thread. */
	rocksdb_options_set_max_file_opening_threads(o, 1);
	rocksdb_options_set_create_if_missing(o, 0);
	rocksdb_t *r = rocksdb_open_as_secondary(o, dir, sec_dir, &err);
	if (err) {
		BT_LOG_EVERY(BT_LOG_INFO, "rocksdb open secondary %s: %s (the store creates it; retrying)", dir, err);
		rocksdb_free(err);
		rocksdb_options_destroy(o);
		return -EIO;
	}
	*out = wrap(r, o, false, true);
	if (!*out)
		return -ENOMEM;
	snprintf((*out)->dir, sizeof (*out)->dir, "%s", dir);
	snprintf((*out)->sec_dir, sizeof (*out)->sec_dir, "%s", sec_dir);
	return 0;
}

void bt_db_compact_all(struct bt_db *db)
{
	rocksdb_compact_range(db->db, NULL, 0, NULL, 0);
}

int bt_db_catch_up(struct bt_db *db)
{
	if (!db->secondary)
		return 0;
	char *err = NULL;
	rocksdb_try_catch_up_with_primary(db->db, &err);
	if (err) {
		BT_LOG_EVERY(BT_LOG_WARN, "rocksdb catch up: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return 0;
}

int bt_db_catch_up_gen(struct bt_db *db, uint64_t gen)
{
	if (!db->secondary)
		return 0;
	if (gen == db->gen || db->gen == 0) {
		db->gen = gen;
		return bt_db_catch_up(db);
	}
	char *err = NULL;
	rocksdb_t *r = rocksdb_open_as_secondary(db->opt, db->dir, db->sec_dir, &err);
	if (err) {
		BT_LOG_EVERY(BT_LOG_WARN, "rocksdb reopen secondary %s: %s (keeping the old view)", db->dir, err);
		rocksdb_free(err);
		return -EIO;
	}
	rocksdb_close(db->db);
	db->db = r;
	db->gen = gen;
	BT_INFO("the store reopened %s: read view opened afresh", db->dir);
	return 1;
}

void bt_db_close(struct bt_db **pdb)
{
	struct bt_db *db = *pdb;
	if (!db)
		return;
	rocksdb_close(db->db);
	rocksdb_options_destroy(db->opt);
	rocksdb_readoptions_destroy(db->ro);
	rocksdb_readoptions_destroy(db->ro_events);
	rocksdb_writeoptions_destroy(db->wo);
	free(db);
	*pdb = NULL;
}

int bt_db_get(struct bt_db *db, const void *k, size_t kn, void *buf, size_t cap)
{
	char *err = NULL;
	rocksdb_pinnableslice_t *s = rocksdb_get_pinned(db->db, db->ro, k, kn, &err);
	if (err) {
		BT_LOG_EVERY(BT_LOG_ERROR, "rocksdb get: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	if (!s)
		return -ENOENT;
	size_t n;
	const char *v = rocksdb_pinnableslice_value(s, &n);
	memcpy(buf, v, n < cap ? n : cap);
	rocksdb_pinnableslice_destroy(s);
	return (int)n;
}

int bt_db_get_alloc(struct bt_db *db, const void *k, size_t kn, char **val, size_t *vn)
{
	char *err = NULL;
	*val = rocksdb_get(db->db, db->ro, k, kn, vn, &err);
	if (err) {
		BT_LOG_EVERY(BT_LOG_ERROR, "rocksdb get: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return *val ? 0 : -ENOENT;
}

void bt_db_free_value(char *v)
{
	if (v)
		rocksdb_free(v);
}

int bt_db_put(struct bt_db *db, const void *k, size_t kn, const void *v, size_t vn)
{
	char *err = NULL;
	rocksdb_put(db->db, db->wo, k, kn, v, vn, &err);
	if (err) {
		BT_ERR("rocksdb put: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return 0;
}

struct bt_db_batch *bt_db_batch_new(void)
{
	struct bt_db_batch *b = calloc(1, sizeof *b);
	if (b)
		b->wb = rocksdb_writebatch_create();
	return b;
}

void bt_db_batch_put(struct bt_db_batch *b, const void *k, size_t kn, const void *v, size_t vn)
{
	rocksdb_writebatch_put(b->wb, k, kn, v, vn);
}

void bt_db_batch_del(struct bt_db_batch *b, const void *k, size_t kn)
{
	rocksdb_writebatch_delete(b->wb, k, kn);
}

void bt_db_batch_del_range(struct bt_db_batch *b, const void *k0, size_t k0n, const void *k1, size_t k1n)
{
	rocksdb_writebatch_delete_range(b->wb, k0, k0n, k1, k1n);
}

void bt_db_batch_clear(struct bt_db_batch *b)
{
	rocksdb_writebatch_clear(b->wb);
}

size_t bt_db_batch_count(struct bt_db_batch *b)
{
	return (size_t)rocksdb_writebatch_count(b->wb);
}

int bt_db_write(struct bt_db *db, struct bt_db_batch *b)
{
	char *err = NULL;
	rocksdb_write(db->db, db->wo, b->wb, &err);
	if (err) {
		BT_ERR("rocksdb write: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return 0;
}

void bt_db_batch_free(struct bt_db_batch **pb)
{
	if (!*pb)
		return;
	rocksdb_writebatch_destroy((*pb)->wb);
	free(*pb);
	*pb = NULL;
}

int bt_db_scan(struct bt_db *db, const void *from, size_t fn, const void *prefix, size_t pn,
	       bt_db_iter_fn *cb, void *arg)
{
	bool events = pn >= 2 && !memcmp(prefix, "e/", 2);
	rocksdb_iterator_t *it = rocksdb_create_iterator(db->db, events ? db->ro_events : db->ro);
	int rc = 0;
	for (rocksdb_iter_seek(it, from, fn); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kn, vn;
		const char *k = rocksdb_iter_key(it, &kn);
		if (kn < pn || memcmp(k, prefix, pn) != 0)
			break;
		const char *v = rocksdb_iter_value(it, &vn);
		if ((rc = cb(arg, k, kn, v, vn)) != 0)
			break;
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (err) {
		BT_LOG_EVERY(BT_LOG_ERROR, "rocksdb scan: %s", err);
		rocksdb_free(err);
		rc = -EIO;
	}
	rocksdb_iter_destroy(it);
	return rc < 0 ? rc : 0;
}

int bt_db_last(struct bt_db *db, const void *prefix, size_t pn, char *kout, size_t kcap)
{
	/* Seek just past the prefix range, then step back one key. */
	char end[64];
	if (pn + 1 > sizeof end)
		return -EINVAL;
	memcpy(end, prefix, pn);
	end[pn] = (char)0xff;
	rocksdb_iterator_t *it = rocksdb_create_iterator(db->db, db->ro);
	rocksdb_iter_seek_for_prev(it, end, pn + 1);
	int rc = -ENOENT;
	if (rocksdb_iter_valid(it)) {
		size_t kn;
		const char *k = rocksdb_iter_key(it, &kn);
		if (kn >= pn && memcmp(k, prefix, pn) == 0) {
			memcpy(kout, k, kn < kcap ? kn : kcap);
			rc = (int)kn;
		}
	}
	rocksdb_iter_destroy(it);
	return rc;
}

void bt_be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

uint64_t bt_be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void bt_be32_put(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

uint32_t bt_be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

size_t bt_key_event(char out[10], uint64_t seq)
{
	out[0] = 'e';
	out[1] = '/';
	bt_be64_put((uint8_t *)out + 2, seq);
	return 10;
}

/* "<c>/" did, cut to cap. */
static size_t did_key(char c, char *out, size_t cap, const char *did, size_t dn)
{
	if (dn + 2 > cap)
		dn = cap - 2;
	out[0] = c;
	out[1] = '/';
	memcpy(out + 2, did, dn);
	return dn + 2;
}

size_t bt_key_acct(char *out, size_t cap, const char *did, size_t dn)
{
	return did_key('a', out, cap, did, dn);
}

size_t bt_key_ident(char *out, size_t cap, const char *did, size_t dn)
{
	return did_key('i', out, cap, did, dn);
}

size_t bt_key_takedown(char *out, size_t cap, const char *did, size_t dn)
{
	return did_key('k', out, cap, did, dn);
}

size_t bt_key_host(char out[6], uint32_t host_id)
{
	out[0] = 'h';
	out[1] = '/';
	bt_be32_put((uint8_t *)out + 2, host_id);
	return 6;
}

size_t bt_key_hostname(char *out, size_t cap, const char *host, size_t hn)
{
	if (hn + 2 > cap)
		hn = cap - 2;
	out[0] = 'n';
	out[1] = '/';
	memcpy(out + 2, host, hn);
	return hn + 2;
}

size_t bt_key_pending(char out[18], uint32_t host_id, uint32_t epoch, uint64_t prev)
{
	out[0] = 'p';
	out[1] = '/';
	bt_be32_put((uint8_t *)out + 2, host_id);
	bt_be32_put((uint8_t *)out + 6, epoch);
	bt_be64_put((uint8_t *)out + 10, prev);
	return 18;
}

size_t bt_key_chain(char out[10], uint32_t host_id, uint32_t epoch)
{
	out[0] = 'c';
	out[1] = '/';
	bt_be32_put((uint8_t *)out + 2, host_id);
	bt_be32_put((uint8_t *)out + 6, epoch);
	return 10;
}

size_t bt_key_limits(char out[6], uint32_t host_id)
{
	out[0] = 'l';
	out[1] = '/';
	bt_be32_put((uint8_t *)out + 2, host_id);
	return 6;
}

size_t bt_key_throttled(char *out, size_t cap, uint32_t host_id, uint64_t serial, const char *did, size_t dn)
{
	if (dn + 14 > cap)
		dn = cap - 14;
	out[0] = 't';
	out[1] = '/';
	bt_be32_put((uint8_t *)out + 2, host_id);
	bt_be64_put((uint8_t *)out + 6, serial);
	memcpy(out + 14, did, dn);
	return dn + 14;
}
