/*
 * NAME
 *	benchdb - offline RocksDB helpers of the replay and storage benchmarks
 * DESCRIPTION
 *	benchdb stats   DB_DIR          events, frame bytes and on-disk SST bytes of a stopped relay's DB
 *	benchdb compact DB_DIR          full manual compaction (CompactRange over every key), then stats
 *	benchdb scan    DB_DIR          reads every "e/" event in seq order (bt_db_scan, the fanout's
 *	                                replay read) and prints the raw scan rate
 *	benchdb seed    DB_DIR N        grows the stored events to N by re-storing the events already
 *	                                there under new seqs
 *	DB_DIR is RELAY_DATA_DIR/db, with the relay stopped (the primary lock is taken).
 *
 *	seed writes exactly what baton-store's take_verdict/write_batch write for a committed event,
 *	through the same bt_db wrapper: key "e/" be64(seq), value struct bt_ev_hdr (time_ms now,
 *	frame_len, did_len, ev) + DID + the frame with the new seq spliced in (bt_fh_splice_seq on
 *	the frame re-encoded without its seq by bt_fh_encode_noseq, as verify makes it), and "m/seq"
 *	with each batch.  The source frames are the relay's own stored events (really signed, through
 *	the whole pipeline); each is checked to splice back to its stored bytes before it is used.
 *	Account and host records are not touched (a replay reads only "e/").
 *
 *	compact opens RocksDB directly with the options bt_db.c uses (LZ4, bloom 10, 64 MiB LRU), so
 *	the compaction writes SST files the way the store's own compactions do.
 *	Output is one line of key=value.
 * DIAGNOSTICS
 *	Exit 0, 1 on a RocksDB or format error (message on stderr), 2 on a usage error.
 */
#include "bt_buf.h"
#include "bt_db.h"
#include "bt_fh.h"

#include <inttypes.h>
#include <rocksdb/c.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct tally {
	uint64_t events, frame_bytes, value_bytes, last_seq, sum_check;
	/* seed: the pool of source events */
	size_t cap, n;
	struct src {
		uint8_t *noseq;
		size_t len, seq_off;
		char did[BT_DID_MAX];
		uint16_t did_len;
		uint8_t ev;
	} *pool;
	uint64_t bad;
};

static int scan_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct tally *t = arg;
	struct bt_ev_hdr h;
	if (kn != 10 || vn < sizeof h)
		return 0;
	memcpy(&h, v, sizeof h);
	t->events++;
	t->frame_bytes += h.frame_len;
	t->value_bytes += vn;
	t->last_seq = bt_be64_get((const uint8_t *)k + 2);
	/* touch the frame, as a sender would */
	if (vn > sizeof h + h.did_len)
		t->sum_check += (uint8_t)v[vn - 1];
	return 0;
}

static struct bt_fh_msg msg;

static int pool_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct tally *t = arg;
	scan_cb(arg, k, kn, v, vn);
	if (t->n >= t->cap)
		return 0;
	struct bt_ev_hdr h;
	memcpy(&h, v, sizeof h);
	if (vn != sizeof h + h.did_len + h.frame_len || h.did_len > BT_DID_MAX) {
		t->bad++;
		return 0;
	}
	const uint8_t *frame = (const uint8_t *)v + sizeof h + h.did_len;
	const char *why = NULL;
	struct bt_buf ns = { 0 }, back = { 0 };
	size_t off;
	if (bt_fh_decode(frame, h.frame_len, &msg, &why) < 0 || !msg.has_seq ||
	    bt_fh_encode_noseq(&msg, &ns, &off) < 0 || off == SIZE_MAX ||
	    bt_fh_splice_seq(ns.p, ns.len, off, (uint64_t)msg.seq, &back) < 0 || back.len != h.frame_len ||
	    memcmp(back.p, frame, h.frame_len)) {
		t->bad++; /* not reproducible byte for byte: not used */
		bt_buf_free(&ns);
		bt_buf_free(&back);
		return 0;
	}
	bt_buf_free(&back);
	struct src *s = &t->pool[t->n++];
	s->noseq = ns.p; /* owned by the pool */
	s->len = ns.len;
	s->seq_off = off;
	memcpy(s->did, v + sizeof h, h.did_len);
	s->did_len = h.did_len;
	s->ev = h.ev;
	return 0;
}

static int sst_bytes(const char *dir, uint64_t *out)
{
	char *err = NULL;
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_t *r = rocksdb_open_for_read_only(o, dir, 0, &err);
	if (err) {
		fprintf(stderr, "benchdb: open %s: %s\n", dir, err);
		rocksdb_free(err);
		rocksdb_options_destroy(o);
		return -1;
	}
	char *p = rocksdb_property_value(r, "rocksdb.total-sst-files-size");
	*out = p ? strtoull(p, NULL, 10) : 0;
	free(p);
	rocksdb_close(r);
	rocksdb_options_destroy(o);
	return 0;
}

static int do_stats(const char *dir, const char *extra)
{
	struct bt_db *db;
	if (bt_db_open_primary(dir, false, &db) < 0)
		return 1;
	struct tally t = { 0 };
	char from[10];
	bt_db_scan(db, from, bt_key_event(from, 0), "e/", 2, scan_cb, &t);
	bt_db_close(&db);
	uint64_t sst = 0;
	if (sst_bytes(dir, &sst) < 0)
		return 1;
	printf("%sevents=%" PRIu64 " frame_bytes=%" PRIu64 " value_bytes=%" PRIu64 " mean_frame=%.1f sst_bytes=%" PRIu64
	       " sst_per_event=%.1f last_seq=%" PRIu64 "\n",
	       extra, t.events, t.frame_bytes, t.value_bytes, t.events ? (double)t.frame_bytes / (double)t.events : 0, sst,
	       t.events ? (double)sst / (double)t.events : 0, t.last_seq);
	return 0;
}

static int do_compact(const char *dir)
{
	struct bt_db *db;
	if (bt_db_open_primary(dir, false, &db) < 0) /* the store's own options */
		return 1;
	double w0 = wall();
	bt_db_compact_all(db);
	double w = wall() - w0;
	bt_db_close(&db);
	char extra[64];
	snprintf(extra, sizeof extra, "compact_s=%.2f ", w);
	return do_stats(dir, extra);
}

static int do_scan(const char *dir)
{
	struct bt_db *db;
	if (bt_db_open_primary(dir, false, &db) < 0)
		return 1;
	struct tally t = { 0 };
	char from[10];
	double w0 = wall(), c0 = cpu();
	bt_db_scan(db, from, bt_key_event(from, 0), "e/", 2, scan_cb, &t);
	double w = wall() - w0, c = cpu() - c0;
	bt_db_close(&db);
	printf("events=%" PRIu64 " frame_bytes=%" PRIu64 " wall_s=%.3f cpu_s=%.3f scan_per_s=%.0f scan_per_cpu_s=%.0f\n",
	       t.events, t.frame_bytes, w, c, w > 0 ? (double)t.events / w : 0, c > 0 ? (double)t.events / c : 0);
	return 0;
}

static int do_seed(const char *dir, uint64_t target)
{
	struct bt_db *db;
	if (bt_db_open_primary(dir, false, &db) < 0)
		return 1;
	struct tally t = { .cap = 100000 };
	t.pool = calloc(t.cap, sizeof *t.pool);
	char from[10];
	bt_db_scan(db, from, bt_key_event(from, 0), "e/", 2, pool_cb, &t);
	uint8_t sb[8];
	uint64_t seq = 0;
	if (bt_db_get(db, "m/seq", 5, sb, 8) == 8)
		seq = bt_be64_get(sb);
	if (!t.n || seq < t.last_seq) {
		fprintf(stderr, "benchdb: no usable source events (%" PRIu64 " stored, %" PRIu64 " not reproducible)\n",
			t.events, t.bad);
		bt_db_close(&db);
		return 1;
	}
	uint64_t have = t.events, wrote = 0, bytes = 0;
	double w0 = wall();
	struct bt_db_batch *b = bt_db_batch_new();
	struct bt_buf ev = { 0 };
	for (uint64_t i = 0; have + wrote < target; i++) {
		const struct src *s = &t.pool[i % t.n];
		seq++;
		bt_buf_reset(&ev);
		struct bt_ev_hdr h = { .time_ms = now_ms(), .did_len = s->did_len, .ev = s->ev };
		bt_buf_append(&ev, &h, sizeof h);
		bt_buf_append(&ev, s->did, s->did_len);
		size_t at = ev.len;
		if (bt_fh_splice_seq(s->noseq, s->len, s->seq_off, seq, &ev) < 0) {
			fprintf(stderr, "benchdb: splice failed\n");
			return 1;
		}
		uint32_t flen = (uint32_t)(ev.len - at);
		memcpy(ev.p + offsetof(struct bt_ev_hdr, frame_len), &flen, sizeof flen);
		char k[10];
		bt_db_batch_put(b, k, bt_key_event(k, seq), ev.p, ev.len);
		bytes += flen;
		wrote++;
		if (bt_db_batch_count(b) >= 1000 || have + wrote == target) {
			bt_be64_put(sb, seq);
			bt_db_batch_put(b, "m/seq", 5, sb, 8);
			if (bt_db_write(db, b) < 0)
				return 1;
			bt_db_batch_clear(b);
		}
	}
	bt_db_batch_free(&b);
	bt_db_close(&db);
	printf("source_events=%" PRIu64 " pool=%zu not_reproducible=%" PRIu64 " seeded=%" PRIu64
	       " seeded_frame_bytes=%" PRIu64 " total=%" PRIu64 " last_seq=%" PRIu64 " seed_s=%.2f\n",
	       t.events, t.n, t.bad, wrote, bytes, have + wrote, seq, wall() - w0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "stats"))
		return do_stats(argv[2], "");
	if (argc >= 3 && !strcmp(argv[1], "compact"))
		return do_compact(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "scan"))
		return do_scan(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "seed"))
		return do_seed(argv[2], strtoull(argv[3], NULL, 10));
	fprintf(stderr, "usage: benchdb stats|compact|scan DB_DIR | benchdb seed DB_DIR N\n");
	return 2;
}
