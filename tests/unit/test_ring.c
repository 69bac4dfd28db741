/*
 * NAME
 *	test_ring.c - single-process tests of bt_shm: segment, SPSC ring, broadcast ring, bells
 * DESCRIPTION
 *	Layout validation, attach checks (missing file, bad magic, bad version, truncated or
 *	garbage file), retirement on re-create; SPSC fill to full, wrap with padding, every
 *	record size, hold-then-release, oversize claims, restart of either side; broadcast
 *	publish/read, overrun, seek, small buffers; bells and the libevent bell watch.
 *	The multi-process tests live in test_ring_procs.c.
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; exits non-zero on failure.  Segments are created under
 *	/dev/shm (or $BT_SHM_DIR) and removed at the end.
 */
#include "bt_proc.h"
#include "bt_shm.h"
#include "bt_test.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

static char seg_path[256];

static const char *mkpath(const char *tag)
{
	const char *dir = getenv("BT_SHM_DIR");
	snprintf(seg_path, sizeof(seg_path), "%s/bt-test-ring-%ld-%s", dir ? dir : "/dev/shm", (long)getpid(),
		 tag);
	return seg_path;
}

/* Deterministic payload byte i of record n. */
static uint8_t pat(uint64_t n, size_t i) { return (uint8_t)(n * 131 + i * 7 + (n >> 8)); }

static int check_pat(const void *p, size_t len, uint64_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		if (b[i] != pat(n, i))
			return 0;
	return 1;
}

static void fill_pat(void *p, size_t len, uint64_t n)
{
	uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		b[i] = pat(n, i);
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static struct bt_shm_layout one_ring(enum bt_ring_kind kind, uint64_t cap)
{
	struct bt_shm_layout lay = {0};
	lay.n_rings = 1;
	lay.rings[0].kind = kind;
	lay.rings[0].capacity = cap;
	lay.rings[0].bell = 0;
	lay.n_bells = 1;
	lay.n_pages = 2;
	return lay;
}

static void test_layout_and_open(void)
{
	struct bt_shm *s = NULL, *s2 = NULL;
	const char *path = mkpath("seg");
	struct bt_shm_layout lay = one_ring(BT_RING_SPSC, 3000); /* not a power of two */
	CHECK(bt_shm_create(path, &lay, &s) == -EINVAL && !s);
	lay = one_ring(BT_RING_SPSC, 128); /* below the minimum */
	CHECK(bt_shm_create(path, &lay, &s) == -EINVAL);
	lay = one_ring(BT_RING_SPSC, 4096);
	lay.rings[0].bell = 1; /* no such bell */
	CHECK(bt_shm_create(path, &lay, &s) == -EINVAL);
	lay = one_ring((enum bt_ring_kind)7, 4096);
	CHECK(bt_shm_create(path, &lay, &s) == -EINVAL);
	lay.n_rings = BT_SHM_MAX_RINGS + 1;
	CHECK(bt_shm_create(path, &lay, &s) == -EINVAL);

	bt_shm_unlink(path);
	CHECK(bt_shm_open(path, &s) == -ENOENT && !s);

	/* a real layout: two SPSC rings, one broadcast ring, 3 bells, 4 pages */
	memset(&lay, 0, sizeof(lay));
	lay.n_rings = 3;
	lay.rings[0].kind = BT_RING_SPSC, lay.rings[0].capacity = 4096, lay.rings[0].bell = 0;
	lay.rings[1].kind = BT_RING_SPSC, lay.rings[1].capacity = 1 << 16, lay.rings[1].bell = 1;
	lay.rings[2].kind = BT_RING_BCAST, lay.rings[2].capacity = 1 << 20, lay.rings[2].bell = 2;
	lay.n_bells = 3;
	lay.n_pages = 4;
	CHECK(bt_shm_create(path, &lay, &s) == 0 && s);
	CHECK(bt_shm_open(path, &s2) == 0 && s2);
	if (!s || !s2)
		return;
	CHECK(bt_shm_n_rings(s2) == 3 && bt_shm_n_bells(s2) == 3 && bt_shm_n_pages(s2) == 4);
	CHECK(bt_ring_kind(bt_shm_ring(s2, 2)) == BT_RING_BCAST);
	CHECK(bt_ring_capacity(bt_shm_ring(s2, 1)) == 1 << 16);
	CHECK(bt_ring_max_record(bt_shm_ring(s2, 0)) == BT_RING_MAX_RECORD(4096));
	CHECK(bt_shm_ring(s2, 3) == NULL && bt_shm_page(s2, 4) == NULL && bt_shm_bell(s2, 3) == NULL);
	CHECK(bt_ring_bell(bt_shm_ring(s2, 1)) == bt_shm_bell(s2, 1));
	/* pages are zeroed, distinct, 4096 bytes, and shared between mappings */
	int zero = 1;
	for (unsigned i = 0; i < 4; i++) {
		unsigned char *pg = bt_shm_page(s, i);
		for (int j = 0; j < BT_SHM_PAGE_SIZE; j++)
			zero &= pg[j] == 0;
		memset(pg, (int)(i + 1), BT_SHM_PAGE_SIZE);
	}
	CHECK(zero);
	for (unsigned i = 0; i < 4; i++) {
		unsigned char *pg = bt_shm_page(s2, i);
		CHECK(pg[0] == i + 1 && pg[BT_SHM_PAGE_SIZE - 1] == i + 1);
	}
	/* rings are shared: produce on one mapping, consume on the other */
	void *pl;
	CHECK(bt_ring_claim(bt_shm_ring(s, 1), 42, 5, &pl) == 0);
	memcpy(pl, "hello", 5);
	bt_ring_commit(bt_shm_ring(s, 1));
	uint64_t pos = bt_ring_tail(bt_shm_ring(s2, 1));
	uint32_t type;
	const void *rp;
	size_t len;
	CHECK(bt_ring_read(bt_shm_ring(s2, 1), &pos, &type, &rp, &len) == 0 && type == 42 && len == 5 &&
	      memcmp(rp, "hello", 5) == 0);
	CHECK(bt_ring_read(bt_shm_ring(s2, 0), &pos, &type, &rp, &len) != 0); /* other ring is empty */
	CHECK(!bt_shm_retired(s2));

	/* re-create: the old segment is marked retired, the new one is fresh */
	struct bt_shm *s3 = NULL;
	CHECK(bt_shm_create(path, &lay, &s3) == 0);
	CHECK(bt_shm_retired(s) && bt_shm_retired(s2) && !bt_shm_retired(s3));
	CHECK(s3 && bt_ring_head(bt_shm_ring(s3, 1)) == 0 && bt_ring_head(bt_shm_ring(s, 1)) > 0);
	bt_shm_close(&s3);
	bt_shm_close(&s2);
	bt_shm_close(&s);
	CHECK(s == NULL);
	bt_shm_close(&s); /* accepts NULL */
	bt_shm_close(NULL);

	/* version mismatch (byte 4), magic mismatch (byte 0), truncation, garbage */
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	uint32_t v = BT_SHM_VERSION + 1, orig;
	CHECK(pread(fd, &orig, 4, 4) == 4 && orig == BT_SHM_VERSION);
	CHECK(pwrite(fd, &v, 4, 4) == 4);
	CHECK(bt_shm_open(path, &s) == -EPROTO && !s);
	CHECK(pwrite(fd, &orig, 4, 4) == 4);
	CHECK(bt_shm_open(path, &s) == 0);
	bt_shm_close(&s);
	uint32_t m = 0x12345678, om;
	CHECK(pread(fd, &om, 4, 0) == 4 && om == BT_SHM_MAGIC);
	CHECK(pwrite(fd, &m, 4, 0) == 4);
	CHECK(bt_shm_open(path, &s) == -EPROTO);
	CHECK(pwrite(fd, &om, 4, 0) == 4);
	CHECK(bt_shm_open(path, &s) == 0);
	bt_shm_close(&s);
	struct stat st;
	CHECK(fstat(fd, &st) == 0);
	CHECK(ftruncate(fd, st.st_size - 4096) == 0);
	CHECK(bt_shm_open(path, &s) == -EPROTO);
	CHECK(ftruncate(fd, 100) == 0);
	CHECK(bt_shm_open(path, &s) == -EPROTO);
	unsigned char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rnd();
	CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, junk, sizeof(junk), 0) == (ssize_t)sizeof(junk));
	CHECK(bt_shm_open(path, &s) == -EPROTO);
	/* right magic and version but a ring table pointing outside the file */
	CHECK(pwrite(fd, &om, 4, 0) == 4 && pwrite(fd, &orig, 4, 4) == 4);
	CHECK(bt_shm_open(path, &s) == -EPROTO && !s);
	close(fd);
	bt_shm_unlink(path);
}

static void test_spsc_basic(void)
{
	const char *path = mkpath("spsc");
	struct bt_shm_layout lay = one_ring(BT_RING_SPSC, 4096);
	struct bt_shm *s = NULL;
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	if (!s)
		return;
	struct bt_ring *r = bt_shm_ring(s, 0);
	void *pl;
	uint32_t type;
	const void *rp;
	size_t len;
	uint64_t pos = 0;

	CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == -EAGAIN);
	CHECK(bt_ring_used(r) == 0);
	/* oversize, pad type, exactly max */
	size_t max = bt_ring_max_record(r);
	CHECK(max == 4096 / 4 - 16);
	CHECK(bt_ring_claim(r, 1, max + 1, &pl) == -EMSGSIZE);
	CHECK(bt_ring_claim(r, 1, 1 << 30, &pl) == -EMSGSIZE);
	CHECK(bt_ring_claim(r, BT_RING_TYPE_PAD, 8, &pl) == -EINVAL);
	CHECK(bt_bcast_publish(r, 1, 1, "x", 1) == -EINVAL); /* not a broadcast ring */
	CHECK(bt_ring_claim(r, 9, max, &pl) == 0);
	fill_pat(pl, max, 9);
	bt_ring_commit(r);
	CHECK(bt_ring_head(r) == 8 + max);
	CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == 0 && type == 9 && len == max && check_pat(rp, len, 9));
	CHECK(pos == 8 + max);
	bt_ring_release(r, pos);
	CHECK(bt_ring_tail(r) == pos && bt_ring_used(r) == 0);

	/* fill to full: 100-byte payloads are 112-byte records */
	uint64_t start = bt_ring_head(r);
	int n = 0;
	while (bt_ring_claim(r, 2, 100, &pl) == 0) {
		fill_pat(pl, 100, (uint64_t)n);
		bt_ring_commit(r);
		n++;
		if (n > 100)
			break;
	}
	/* from head 1016 the records run to 4096 (27 fit), one pad, then up to the tail at 1016 (9 more) */
	CHECKF(n == 36, "n=%d", n);
	CHECK(bt_ring_claim(r, 2, 100, &pl) == -EAGAIN);
	CHECK(bt_ring_used(r) <= 4096);
	uint64_t head_full = bt_ring_head(r);
	CHECKF(head_full == start + 27 * 112 + (4096 - start - 27 * 112) + 9 * 112, "head=%llu",
	       (unsigned long long)head_full);

	/* hold several records unreleased: the producer cannot overwrite them */
	const void *held[3];
	for (int i = 0; i < 3; i++) {
		CHECK(bt_ring_read(r, &pos, &type, &held[i], &len) == 0 && len == 100);
		CHECK(check_pat(held[i], 100, (uint64_t)i));
	}
	CHECK(bt_ring_claim(r, 2, 100, &pl) == -EAGAIN); /* nothing released yet */
	for (int i = 3; i < n; i++) {
		CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == 0 && len == 100 && check_pat(rp, 100, (uint64_t)i));
	}
	CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == -EAGAIN);
	CHECK(pos == head_full);
	CHECK(check_pat(held[0], 100, 0) && check_pat(held[2], 100, 2));
	bt_ring_release(r, pos);
	CHECK(bt_ring_used(r) == 0);
	CHECK(bt_ring_claim(r, 2, 100, &pl) == 0);
	bt_ring_commit(r);

	/* commit_len shrinks a claim */
	uint64_t h0 = bt_ring_head(r);
	CHECK(bt_ring_claim(r, 3, 200, &pl) == 0);
	memcpy(pl, "abc", 3);
	bt_ring_commit_len(r, 3);
	CHECK(bt_ring_head(r) == h0 + 16);
	CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == 0 && type == 2);
	CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == 0 && type == 3 && len == 3 && !memcmp(rp, "abc", 3));
	/* a bogus position is refused, not followed */
	uint64_t bogus = pos + 4;
	CHECK(bt_ring_read(r, &bogus, &type, &rp, &len) == -EINVAL); /* past the head */
	bogus = 0;
	CHECK(bt_ring_read(r, &bogus, &type, &rp, &len) == -EINVAL); /* below the released tail */
	bt_ring_release(r, pos);
	bt_shm_close(&s);
	bt_shm_unlink(path);
}

static void test_spsc_wrap(void)
{
	const char *path = mkpath("wrap");
	struct bt_shm_layout lay = one_ring(BT_RING_SPSC, 1024);
	struct bt_shm *s = NULL;
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	if (!s)
		return;
	struct bt_ring *r = bt_shm_ring(s, 0);
	void *pl;
	uint32_t type;
	const void *rp;
	size_t len;
	uint64_t pos = 0;
	/* 5 records of 200 bytes (len 192) end at 1000; the 6th needs a 24-byte pad first */
	for (int i = 0; i < 5; i++) {
		CHECK(bt_ring_claim(r, 1, 192, &pl) == 0);
		fill_pat(pl, 192, (uint64_t)i);
		bt_ring_commit(r);
		CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == 0 && check_pat(rp, 192, (uint64_t)i));
		bt_ring_release(r, pos);
	}
	CHECK(bt_ring_head(r) == 1000);
	CHECK(bt_ring_claim(r, 1, 192, &pl) == 0);
	CHECK((uint8_t *)pl - (uint8_t *)rp < 0); /* placed at the start of the data area */
	fill_pat(pl, 192, 5);
	bt_ring_commit(r);
	CHECK(bt_ring_head(r) == 1024 + 200);
	CHECK(bt_ring_used(r) == 224);
	CHECK(bt_ring_read(r, &pos, &type, &rp, &len) == 0 && type == 1 && len == 192 && check_pat(rp, 192, 5));
	CHECK(pos == 1224);
	bt_ring_release(r, pos);

	/* an exact fit at the end needs no pad: head 1224 -> records of 200 up to 2024, then 24 left */
	bt_shm_close(&s);
	bt_shm_unlink(path);
}

/* Single-threaded producer/consumer with every size from 0 to max, across many wraps. */
static void test_spsc_sizes(void)
{
	const char *path = mkpath("sizes");
	struct bt_shm_layout lay = one_ring(BT_RING_SPSC, 4096);
	struct bt_shm *s = NULL;
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	if (!s)
		return;
	struct bt_ring *r = bt_shm_ring(s, 0);
	size_t max = bt_ring_max_record(r);
	uint64_t wn = 0, rn = 0, pos = 0;
	int bad = 0, fulls = 0;
	const uint64_t N = 200000;
	while (rn < N) {
		/* produce a burst */
		int burst = (int)(rnd() % 40);
		for (int i = 0; i < burst && wn < N; i++) {
			size_t len = wn < 2 * (max + 1) ? (size_t)(wn % (max + 1)) : (size_t)(rnd() % (max + 1));
			void *pl;
			int rc = bt_ring_claim(r, (uint32_t)(wn & 0xffff), len, &pl);
			if (rc == -EAGAIN) {
				fulls++;
				break;
			}
			if (rc != 0) {
				bad++;
				break;
			}
			if (len >= 8)
				memcpy(pl, &len, sizeof(len));
			for (size_t j = len >= 8 ? 8 : 0; j < len; j++)
				((uint8_t *)pl)[j] = pat(wn, j);
			bt_ring_commit(r);
			wn++;
		}
		/* consume some, release in chunks */
		int take = (int)(rnd() % 40);
		for (int i = 0; i < take; i++) {
			uint32_t type;
			const void *rp;
			size_t len;
			int rc = bt_ring_read(r, &pos, &type, &rp, &len);
			if (rc == -EAGAIN)
				break;
			if (rc != 0 || type != (rn & 0xffff)) {
				bad++;
				break;
			}
			if (len >= 8) {
				size_t l2;
				memcpy(&l2, rp, sizeof(l2));
				bad += l2 != len;
			}
			for (size_t j = len >= 8 ? 8 : 0; j < len; j++)
				bad += ((const uint8_t *)rp)[j] != pat(rn, j);
			rn++;
		}
		if (rnd() % 3 == 0)
			bt_ring_release(r, pos);
		if (bad)
			break;
	}
	bt_ring_release(r, pos);
	CHECKF(bad == 0, "bad=%d at record %llu", bad, (unsigned long long)rn);
	CHECK(rn == N && wn == N);
	CHECK(fulls > 0);
	CHECK(bt_ring_head(r) > 100 * 4096); /* wrapped many times */
	CHECK(bt_ring_used(r) == 0);
	bt_shm_close(&s);
	bt_shm_unlink(path);
}

/* Either side restarting: an uncommitted claim is invisible; unreleased records are read again. */
static void test_spsc_restart(void)
{
	const char *path = mkpath("restart");
	struct bt_shm_layout lay = one_ring(BT_RING_SPSC, 4096);
	struct bt_shm *prod = NULL, *cons = NULL;
	CHECK(bt_shm_create(path, &lay, &prod) == 0);
	CHECK(bt_shm_open(path, &cons) == 0);
	if (!prod || !cons)
		return;
	void *pl;
	uint32_t type;
	const void *rp;
	size_t len;
	CHECK(bt_ring_claim(bt_shm_ring(prod, 0), 1, 10, &pl) == 0);
	memcpy(pl, "committed!", 10);
	bt_ring_commit(bt_shm_ring(prod, 0));
	CHECK(bt_ring_claim(bt_shm_ring(prod, 0), 2, 10, &pl) == 0);
	memcpy(pl, "half-writ", 9);
	bt_shm_close(&prod); /* producer "dies" between claim and commit */
	uint64_t pos = bt_ring_tail(bt_shm_ring(cons, 0));
	CHECK(bt_ring_read(bt_shm_ring(cons, 0), &pos, &type, &rp, &len) == 0 && type == 1 && len == 10);
	CHECK(bt_ring_read(bt_shm_ring(cons, 0), &pos, &type, &rp, &len) == -EAGAIN);
	CHECK(bt_shm_open(path, &prod) == 0); /* restarted producer continues at head */
	CHECK(bt_ring_claim(bt_shm_ring(prod, 0), 3, 4, &pl) == 0);
	memcpy(pl, "next", 4);
	bt_ring_commit(bt_shm_ring(prod, 0));
	CHECK(bt_ring_read(bt_shm_ring(cons, 0), &pos, &type, &rp, &len) == 0 && type == 3 && len == 4 &&
	      !memcmp(rp, "next", 4));
	/* consumer "dies" without releasing: a new one resumes from the tail and sees both again */
	bt_shm_close(&cons);
	CHECK(bt_shm_open(path, &cons) == 0);
	pos = bt_ring_tail(bt_shm_ring(cons, 0));
	CHECK(pos == 0);
	CHECK(bt_ring_read(bt_shm_ring(cons, 0), &pos, &type, &rp, &len) == 0 && type == 1);
	bt_ring_release(bt_shm_ring(cons, 0), pos);
	bt_shm_close(&cons);
	CHECK(bt_shm_open(path, &cons) == 0);
	pos = bt_ring_tail(bt_shm_ring(cons, 0));
	CHECK(bt_ring_read(bt_shm_ring(cons, 0), &pos, &type, &rp, &len) == 0 && type == 3);
	bt_shm_close(&cons);
	bt_shm_close(&prod);
	bt_shm_unlink(path);
}

static void test_bcast(void)
{
	const char *path = mkpath("bcast");
	struct bt_shm_layout lay = one_ring(BT_RING_BCAST, 4096);
	struct bt_shm *s = NULL;
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	if (!s)
		return;
	struct bt_ring *r = bt_shm_ring(s, 0);
	uint8_t buf[2048], src[2048];
	uint64_t pos = 0, seq;
	uint32_t type;
	size_t len;
	void *pl;
	CHECK(bt_bcast_last_seq(r) == 0 && bt_bcast_head(r) == 0);
	CHECK(bt_bcast_read(r, &pos, &seq, &type, buf, sizeof(buf), &len) == -EAGAIN);
	CHECK(bt_bcast_seek(r, 0, &pos) == -EAGAIN && pos == 0);
	CHECK(bt_ring_claim(r, 1, 1, &pl) == -EINVAL); /* not an SPSC ring */
	CHECK(bt_bcast_publish(r, 0, 1, "x", 1) == -EINVAL);
	CHECK(bt_bcast_publish(r, 1, BT_RING_TYPE_PAD, "x", 1) == -EINVAL);
	CHECK(bt_bcast_publish(r, 1, 1, src, bt_ring_max_record(r) + 1) == -EMSGSIZE);

	/* in-step reader sees every record; sizes vary, including 0 and max */
	size_t max = bt_ring_max_record(r);
	int bad = 0;
	for (uint64_t sq = 1; sq <= 3000; sq++) {
		size_t n = sq % 5 == 0 ? max : sq % 7 == 0 ? 0 : (size_t)(rnd() % (max + 1));
		fill_pat(src, n, sq);
		if (bt_bcast_publish(r, sq, (uint32_t)(sq % 4), src, n) != 0)
			bad++;
		int rc = bt_bcast_read(r, &pos, &seq, &type, buf, sizeof(buf), &len);
		if (rc != 0 || seq != sq || type != sq % 4 || len != n || !check_pat(buf, n, sq))
			bad++;
	}
	CHECK(bad == 0);
	CHECK(bt_bcast_last_seq(r) == 3000 && pos == bt_bcast_head(r));
	CHECK(bt_bcast_publish(r, 3000, 1, "x", 1) == -EINVAL); /* seq must increase */
	CHECK(bt_bcast_publish(r, 2999, 1, "x", 1) == -EINVAL);

	/* seek into the window: first record with seq > after */
	for (uint64_t after = 2997; after < 3000; after++) { /* at least 3 max-size records fit */
		uint64_t p;
		CHECK(bt_bcast_seek(r, after, &p) == 0);
		CHECK(bt_bcast_read(r, &p, &seq, &type, buf, sizeof(buf), &len) == 0 && seq == after + 1);
	}
	uint64_t p = 12345;
	CHECK(bt_bcast_seek(r, 3000, &p) == -EAGAIN && p == bt_bcast_head(r));
	CHECK(bt_bcast_seek(r, 5000, &p) == -EAGAIN && p == bt_bcast_head(r));
	CHECK(bt_bcast_seek(r, 10, &p) == -ENOENT); /* long gone */
	CHECK(bt_bcast_seek(r, 0, &p) == -ENOENT);

	/* the oldest record still held is reachable; one before it is not */
	uint64_t lo = 0;
	for (uint64_t after = 2999; after > 0; after--) {
		if (bt_bcast_seek(r, after, &p) != 0) {
			lo = after;
			break;
		}
	}
	CHECK(lo > 2900 && lo < 2999);
	CHECK(bt_bcast_seek(r, lo + 1, &p) == 0);
	CHECK(bt_bcast_read(r, &p, &seq, &type, buf, sizeof(buf), &len) == 0 && seq == lo + 2);

	/* peek: the same records as read, without copying; next is where read would leave pos */
	{
		uint64_t pp, rp, nx;
		int pbad = 0, nrec = 0;
		CHECK(bt_bcast_seek(r, lo + 1, &pp) == 0);
		rp = pp;
		for (;;) {
			uint64_t ps, rs;
			uint32_t pt, rt;
			size_t pl2, rl;
			int prc = bt_bcast_peek(r, &pp, &ps, &pt, &pl2, &nx);
			int rrc = bt_bcast_read(r, &rp, &rs, &rt, buf, sizeof(buf), &rl);
			if (prc != rrc) {
				pbad++;
				break;
			}
			if (prc != 0)
				break;
			if (ps != rs || pt != rt || pl2 != rl || nx != rp)
				pbad++;
			pp = nx;
			nrec++;
		}
		CHECK(pbad == 0 && nrec >= 1);
		CHECK(bt_bcast_peek(r, &pp, &seq, &type, &len, &nx) == -EAGAIN && pp == bt_bcast_head(r));
	}

	/* small buffer: -ENOSPC with the size needed, position unchanged */
	fill_pat(src, 700, 3001);
	CHECK(bt_bcast_publish(r, 3001, 5, src, 700) == 0);
	uint64_t before = pos;
	CHECK(bt_bcast_read(r, &pos, &seq, &type, buf, 100, &len) == -ENOSPC && len == 700 && pos == before);
	CHECK(bt_bcast_read(r, &pos, &seq, &type, buf, sizeof(buf), &len) == 0 && len == 700 && seq == 3001 &&
	      check_pat(buf, 700, 3001));

	/* overrun: a reader parked at an old position is lapped and told so */
	uint64_t slow = pos;
	for (uint64_t sq = 3002; sq < 3100; sq++)
		CHECK(bt_bcast_publish(r, sq, 1, src, 100) == 0);
	{
		uint64_t sp = slow, nx;
		CHECK(bt_bcast_peek(r, &sp, &seq, &type, &len, &nx) == -EOVERFLOW);
	}
	CHECK(bt_bcast_read(r, &slow, &seq, &type, buf, sizeof(buf), &len) == -EOVERFLOW);
	/* recovery: seek past what we had (3001) is gone, so -ENOENT; seek from a recent seq works */
	CHECK(bt_bcast_seek(r, 3001, &slow) == -ENOENT);
	CHECK(bt_bcast_seek(r, 3090, &slow) == 0);
	CHECK(bt_bcast_read(r, &slow, &seq, &type, buf, sizeof(buf), &len) == 0 && seq == 3091);
	/* a position that is just past a lap boundary by a few bytes is still detected */
	uint64_t h = bt_bcast_head(r), q = h - 4096 - 8;
	CHECK(bt_bcast_read(r, &q, &seq, &type, buf, sizeof(buf), &len) == -EOVERFLOW);
	q = h + 8;
	CHECK(bt_bcast_read(r, &q, &seq, &type, buf, sizeof(buf), &len) == -EINVAL);
	bt_shm_close(&s);
	bt_shm_unlink(path);
}

static struct bt_bell *g_bell;
static _Atomic int g_done;
static int g_cb_count;
static struct event_base *g_base;

static void *ringer(void *arg)
{
	(void)arg;
	for (int i = 0; i < 1000; i++)
		bt_bell_ring(g_bell);
	atomic_store(&g_done, 1);
	bt_bell_ring(g_bell); /* the callback caused by this ring sees g_done */
	return NULL;
}

static void on_bell(void *arg)
{
	g_cb_count++;
	if (atomic_load(&g_done))
		event_base_loopbreak(g_base);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
	event_base_loopbreak(g_base);
}

static void *sleeper(void *arg)
{
	struct bt_bell *b = arg;
	uint32_t v = bt_bell_value(b);
	int rc = bt_bell_wait(b, v, -1);
	return (void *)(intptr_t)(rc == 0 && bt_bell_value(b) != v ? 1 : 2);
}

static void test_bells(void)
{
	const char *path = mkpath("bells");
	struct bt_shm_layout lay = one_ring(BT_RING_SPSC, 4096);
	lay.n_bells = 2;
	struct bt_shm *s = NULL;
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	if (!s)
		return;
	struct bt_bell *b = bt_shm_bell(s, 1);
	uint32_t v = bt_bell_value(b);
	CHECK(v == 0 && bt_bell_sleepers(b) == 0);
	bt_bell_ring(b);
	CHECK(bt_bell_value(b) == v + 1);
	CHECK(bt_bell_wait(b, v, -1) == 0); /* value differs: returns at once */
	CHECK(bt_bell_wait(b, v + 1, 20) == -ETIMEDOUT);
	CHECK(bt_bell_sleepers(b) == 0);
	/* commit rings the consumer's bell (bell 0 here) */
	struct bt_bell *b0 = bt_shm_bell(s, 0);
	uint32_t v0 = bt_bell_value(b0);
	void *pl;
	CHECK(bt_ring_claim(bt_shm_ring(s, 0), 1, 1, &pl) == 0);
	bt_ring_commit_quiet(bt_shm_ring(s, 0));
	CHECK(bt_bell_value(b0) == v0);
	bt_ring_wake(bt_shm_ring(s, 0));
	CHECK(bt_bell_value(b0) == v0 + 1);
	CHECK(bt_ring_claim(bt_shm_ring(s, 0), 1, 1, &pl) == 0);
	bt_ring_commit(bt_shm_ring(s, 0));
	CHECK(bt_bell_value(b0) == v0 + 2);

	/* a thread asleep in bt_bell_wait is woken (no timing asserted) */
	pthread_t th;
	CHECK(pthread_create(&th, NULL, sleeper, b) == 0);
	while (bt_bell_sleepers(b) == 0)
		usleep(1000);
	bt_bell_ring(b);
	void *res;
	pthread_join(th, &res);
	CHECK((intptr_t)res == 1);

	/* bell watch: first callback at once, then coalesced callbacks for 1001 rings */
	g_base = event_base_new();
	g_bell = b;
	int fired = 0;
	struct event *wd = evtimer_new(g_base, on_watchdog, &fired);
	struct timeval tv = {30, 0};
	evtimer_add(wd, &tv);
	struct bt_bell_watch *w = bt_bell_watch_new(g_base, b, on_bell, NULL);
	CHECK(w != NULL);
	event_base_loop(g_base, EVLOOP_ONCE);
	CHECK(g_cb_count == 1); /* the initial callback, before any ring */
	pthread_t rt;
	CHECK(pthread_create(&rt, NULL, ringer, NULL) == 0);
	event_base_dispatch(g_base);
	pthread_join(rt, NULL);
	CHECK(!fired);
	CHECKF(g_cb_count >= 2 && g_cb_count <= 1002, "callbacks=%d", g_cb_count);

	/* paused: the thread leaves the bell (no sleeper registered, so a ring makes no wake
	   syscall) and rings cause no callback; resuming calls back once at once */
	bt_bell_watch_pause(w, 1);
	for (int i = 0; i < 5000 && bt_bell_sleepers(b) != 0; i++) {
		bt_bell_ring(b); /* wakes the thread out of its bell wait, into the pause */
		event_base_loop(g_base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	CHECK(bt_bell_sleepers(b) == 0);
	int before_pause = g_cb_count;
	for (int i = 0; i < 100; i++)
		bt_bell_ring(b);
	for (int i = 0; i < 100; i++) {
		event_base_loop(g_base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	/* a callback already signalled before the pause took effect may still run: at most one */
	CHECKF(g_cb_count - before_pause <= 1, "callbacks while paused: %d", g_cb_count - before_pause);
	CHECK(bt_bell_sleepers(b) == 0);
	int paused_count = g_cb_count;
	atomic_store(&g_done, 1);
	bt_bell_watch_pause(w, 0);
	event_base_dispatch(g_base); /* on_bell breaks the loop (g_done); the watchdog bounds it */
	CHECK(!fired);
	CHECKF(g_cb_count == paused_count + 1, "%d %d", g_cb_count, paused_count);
	bt_bell_watch_free(&w);
	CHECK(w == NULL);
	bt_bell_watch_free(&w);
	event_free(wd);
	event_base_free(g_base);
	bt_shm_close(&s);
	bt_shm_unlink(path);
}

/* Reads every record after *pos; 1 if their seqs are exactly from..to, each once. */
static int reads_exactly(struct bt_ring *r, uint64_t *pos, uint64_t from, uint64_t to)
{
	uint64_t seq, want = from;
	uint32_t type;
	uint8_t buf[64];
	size_t len;
	while (bt_bcast_read(r, pos, &seq, &type, buf, sizeof buf, &len) == 0) {
		if (seq != want)
			return 0;
		want++;
	}
	return want == to + 1;
}

/* A writer that publishes 1..n in a child process which _exit(9)s inside the publish of die. */
static int child_publishes(const char *path, uint64_t first, uint64_t n, uint64_t die)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct bt_shm *cs;
		if (bt_shm_open(path, &cs) < 0)
			_exit(1);
		struct bt_ring *cr = bt_shm_ring(cs, 0);
		bt_bcast_fault_exit_seq = die;
		for (uint64_t sq = first; sq <= n; sq++)
			bt_bcast_publish(cr, sq, 1, &sq, 8);
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Issue 5.3: the store killed between a publish's last_seq and head stores.  Its successor
   must publish that seq again (baton-store's republish_tail), or live readers skip it. */
static void test_bcast_kill_in_publish(void)
{
	const char *path = mkpath("bkill");
	struct bt_shm_layout lay = one_ring(BT_RING_BCAST, 4096);
	struct bt_shm *s;
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	struct bt_ring *r = bt_shm_ring(s, 0);
	uint64_t from = 99, pos = 0; /* a live reader at the start */
	CHECK(bt_bcast_recover(r, &from) == -ENOENT && from == 0); /* never written: nothing to redo */
	CHECK(child_publishes(path, 1, 6, 5) == 9);
	CHECK(bt_bcast_last_seq(r) == 5); /* the word names a record no reader will ever see */
#ifdef OLD_REPUBLISH /* the rule before the fix: from the last_seq word */
	from = bt_bcast_last_seq(r);
#else
	CHECK(bt_bcast_recover(r, &from) == 0);
#endif
	CHECKF(from == 4, "republish after %llu", (unsigned long long)from);
	/* The successor republishes what RocksDB holds after it (1..5), then goes on with 6. */
	for (uint64_t sq = from + 1; sq <= 6; sq++)
		CHECK(bt_bcast_publish(r, sq, 1, &sq, 8) == 0);
	CHECK(reads_exactly(r, &pos, 1, 6));
	uint64_t p2;
	CHECK(bt_bcast_seek(r, 4, &p2) == 0 && reads_exactly(r, &p2, 5, 6));
	bt_shm_close(&s);
	bt_shm_unlink(path);

	/* The very first publish on a ring dies: resume at its seq. */
	CHECK(bt_shm_create(path, &lay, &s) == 0);
	r = bt_shm_ring(s, 0);
	pos = 0;
	CHECK(child_publishes(path, 7, 7, 7) == 9);
	CHECK(bt_bcast_recover(r, &from) == 0 && from == 6);
	for (uint64_t sq = 7; sq <= 8; sq++)
		CHECK(bt_bcast_publish(r, sq, 1, &sq, 8) == 0);
	CHECK(reads_exactly(r, &pos, 7, 8));
	/* A clean restart: the last record below head. */
	CHECK(bt_bcast_recover(r, &from) == 0 && from == 8);
	/* After the ring wrapped many times. */
	static uint8_t big[200];
	for (uint64_t sq = 9; sq <= 2000; sq++)
		bt_bcast_publish(r, sq, 1, big, (size_t)(sq % 200));
	CHECK(bt_bcast_recover(r, &from) == 0 && from == 2000);
	bt_shm_close(&s);
	bt_shm_unlink(path);
}

/* Issue 5.6: every size limit against the others at start, exit 2 (the supervisor's check). */
static int limits_exit(uint64_t frame, uint64_t ring, uint64_t bcast)
{
	pid_t pid = fork();
	if (pid == 0) {
		bt_cfg.max_frame_bytes = (int64_t)frame;
		bt_proc_check_limits(ring, bcast);
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_limits(void)
{
	CHECK(limits_exit(5000000, 64u << 20, 256u << 20) == 0); /* the defaults */
	CHECK(limits_exit(5000000, 32u << 20, 32u << 20) == 0);
	CHECK(limits_exit(5000000, 32u << 20, 16u << 20) == 2);  /* broadcast records are 4 MiB */
	CHECK(limits_exit(16777216, 64u << 20, 256u << 20) == 2); /* a 16 MiB frame + header > 16 MiB */
	size_t max = BT_RING_MAX_RECORD(32u << 20);
	CHECK(limits_exit(max - sizeof(struct bt_rec_verdict) - BT_VERDICT_SLACK, 32u << 20, 32u << 20) == 0);
	CHECK(limits_exit(max - sizeof(struct bt_rec_verdict) - BT_VERDICT_SLACK + 1, 32u << 20, 32u << 20) == 2);
}

int main(void)
{
	test_layout_and_open();
	test_spsc_basic();
	test_spsc_wrap();
	test_spsc_sizes();
	test_spsc_restart();
	test_bcast();
	test_bcast_kill_in_publish();
	test_limits();
	test_bells();
	BT_TEST_END();
}
