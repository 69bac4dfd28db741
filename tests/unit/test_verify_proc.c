/*
 * NAME
 *	test_verify_proc.c - baton-verify as a real process between hand-written rings
 * DESCRIPTION
 *	The test plays supervisor, ingest and store around one real baton-verify (built next to
 *	this test: ../baton-verify): it creates a segment (K=1, small 64 KiB rings so a record's
 *	bound is 16 KiB), a RocksDB for verify's read-only view, writes records into the
 *	ingest->verify ring and reads the verdicts from the verify->store ring, releasing them as
 *	the store would.  #identity frames need no DID resolution, so no PLC is involved.
 *	Ordered simple -> complex:
 *	1. a valid frame gets an accept verdict and the input ring is released;
 *	2. malformed input records: one whose header is readable (frame_len past the record)
 *	   gets a drop verdict bad_record with its host and upstream seq, so the store can chain
 *	   it; one too short to carry a header (and one of a foreign type) is counted
 *	   (drops.bad_record) without a verdict; the next frame still flows;
 *	3. a frame whose verdict would exceed the verify->store ring's largest record (an
 *	   #identity with a 16,000-byte handle: its input record fits, its verdict does not) gets
 *	   a drop verdict too_big_verdict instead of being retried forever;
 *	4. a frame that crashes verify inside decoding (fault hook RELAY_FAULT_CRASH_DECODE):
 *	   verify dies on it twice (the test restarts it, as the supervisor would), the third
 *	   incarnation quarantines it (drop verdict quarantined, file under data/quarantine) and
 *	   the frames after it flow.
 *	Waits are bounded (a missing verdict is a failure after 20 s, never a hang).
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; the temp dir (verify's log in verify.log) is kept on failure.
 */
#include "bt_db.h"
#include "bt_fh.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_shm.h"
#include "bt_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define RING_CAP (64u * 1024u)
#define POISON_DID "did:plc:poisonpoisonpoisonpoison"

static char tmp[PATH_MAX], verify_bin[PATH_MAX];
static struct bt_shm *shm;
static struct bt_ring *in, *out;
static struct bt_stats_page *vst;
static struct bt_db *db;
static pid_t child;
static uint64_t opos; /* next verdict to read */

static void start_verify(void)
{
	child = fork();
	if (child == 0) {
		char log[PATH_MAX + 16];
		snprintf(log, sizeof log, "%s/verify.log", tmp);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		execl(verify_bin, "baton-verify", (char *)NULL);
		_exit(127);
	}
}

/* Reap the child if it died; true if it did. */
static bool verify_died(void)
{
	int st;
	if (child > 0 && waitpid(child, &st, WNOHANG) == child) {
		child = 0;
		return true;
	}
	return false;
}

static void stop_verify(void)
{
	if (child > 0) {
		kill(child, SIGTERM);
		waitpid(child, NULL, 0);
		child = 0;
	}
}

/* An #identity frame of did with a handle of handle_len bytes (0: none), upstream seq. */
static void identity_frame(struct bt_buf *b, const char *did, size_t handle_len, uint64_t seq)
{
	static char handle[20000];
	struct bt_fh_msg *m = calloc(1, sizeof *m);
	m->type = BT_FH_IDENTITY;
	m->op = 1;
	m->did = (struct bt_bytes){ (const uint8_t *)did, strlen(did) };
	m->time = (struct bt_bytes){ (const uint8_t *)"2026-01-01T00:00:00.000Z", 24 };
	if (handle_len) {
		memset(handle, 'h', handle_len);
		memcpy(handle + handle_len - 5, ".test", 5);
		m->handle = (struct bt_bytes){ (const uint8_t *)handle, handle_len };
		m->has_handle = true;
	}
	struct bt_buf nos = { 0 };
	size_t off;
	bt_buf_reset(b);
	if (bt_fh_encode_noseq(m, &nos, &off) == 0)
		bt_fh_splice_seq(nos.p, nos.len, off, seq, b);
	bt_buf_free(&nos);
	free(m);
}

/* Write one input record: a bt_rec_frame header (host 7) and frame bytes; rec_len / type
   override the record's real length and type (malformed records). */
static void put_record(uint32_t type, uint64_t useq, const uint8_t *frame, size_t flen, size_t rec_len,
		       uint32_t claimed_len)
{
	void *p;
	size_t n = rec_len ? rec_len : sizeof(struct bt_rec_frame) + flen;
	int rc = bt_ring_claim(in, type, n, &p);
	CHECKF(rc == 0, "claim %zu: %d", n, rc);
	if (rc)
		return;
	struct bt_rec_frame fr;
	memset(&fr, 0, sizeof fr);
	fr.host_id = 7;
	fr.useq = useq;
	fr.prev_useq = useq - 1;
	fr.recv_ms = bt_wall_ms();
	fr.frame_len = claimed_len ? claimed_len : (uint32_t)flen;
	fr.host_len = 14;
	memcpy(fr.host, "localhost:9999", 14);
	memcpy(p, &fr, n < sizeof fr ? n : sizeof fr);
	if (n > sizeof fr)
		memcpy((uint8_t *)p + sizeof fr, frame, n - sizeof fr < flen ? n - sizeof fr : flen);
	bt_ring_commit(in);
}

static void put_identity(const char *did, size_t handle_len, uint64_t useq)
{
	struct bt_buf b = { 0 };
	identity_frame(&b, did, handle_len, useq);
	put_record(BT_REC_FRAME, useq, b.p, b.len, 0, 0);
	bt_buf_free(&b);
}

/* Next verdict (copied out, ring released as the store does); false after 20 s.  restart:
   restart verify whenever it dies meanwhile (counted in *deaths). */
static bool next_verdict(struct bt_rec_verdict *v, bool restart, int *deaths)
{
	for (int i = 0; i < 2000; i++) {
		uint32_t type;
		const void *p;
		size_t len;
		if (bt_ring_read(out, &opos, &type, &p, &len) == 0) {
			CHECK(type == BT_REC_VERDICT && len >= sizeof *v);
			memcpy(v, p, sizeof *v);
			bt_ring_release(out, opos);
			return true;
		}
		if (verify_died()) {
			if (deaths)
				(*deaths)++;
			if (!restart)
				return false;
			start_verify();
		}
		usleep(10000);
	}
	return false;
}

static uint64_t drops(enum bt_drop r)
{
	return atomic_load(&vst->drops[r]);
}

/* Waits (bounded) until verify has released the input ring up to its head. */
static bool input_released(void)
{
	for (int i = 0; i < 2000; i++) {
		if (bt_ring_tail(in) == bt_ring_head(in))
			return true;
		usleep(10000);
	}
	return false;
}

static void test_accept(void)
{
	put_identity("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 0, 1);
	struct bt_rec_verdict v;
	bool got = next_verdict(&v, false, NULL);
	CHECK(got);
	CHECKF(got && v.reason == BT_DROP_NONE && v.ev == BT_EV_IDENTITY && v.useq == 1 && v.host_id == 7,
	       "reason %u ev %u useq %llu", v.reason, v.ev, (unsigned long long)v.useq);
	CHECK(input_released());
}

static void test_malformed(void)
{
	uint64_t before = drops(BT_DROP_BAD_RECORD);
	struct bt_buf b = { 0 };
	identity_frame(&b, "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", 0, 2);
	/* Header readable, frame_len claims more than the record holds. */
	put_record(BT_REC_FRAME, 2, b.p, b.len, 0, (uint32_t)b.len + 100);
	/* Too short for a header: nothing to chain. */
	put_record(BT_REC_FRAME, 3, b.p, b.len, 12, 0);
	/* A foreign record type. */
	put_record(77, 4, b.p, b.len, 0, 0);
	bt_buf_free(&b);
	put_identity("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", 0, 5);
	struct bt_rec_verdict v;
	bool got = next_verdict(&v, false, NULL);
	CHECKF(got && v.reason == BT_DROP_BAD_RECORD && v.useq == 2 && v.prev_useq == 1 && v.host_id == 7,
	       "got %d reason %s useq %llu", got, got ? bt_drop_name(v.reason) : "-", (unsigned long long)v.useq);
	got = next_verdict(&v, false, NULL);
	CHECKF(got && v.reason == BT_DROP_NONE && v.useq == 5, "got %d reason %s useq %llu", got,
	       got ? bt_drop_name(v.reason) : "-", (unsigned long long)v.useq);
	CHECKF(drops(BT_DROP_BAD_RECORD) - before == 3, "drops.bad_record +%llu",
	       (unsigned long long)(drops(BT_DROP_BAD_RECORD) - before));
	CHECK(input_released());
}

static void test_too_big_verdict(void)
{
	/* Input record 296 + ~16,000 bytes fits the 16,368-byte bound; the verdict, 480 + the
	   re-encoded frame, does not. */
	put_identity("did:plc:cccccccccccccccccccccccc", 15900, 6);
	put_identity("did:plc:cccccccccccccccccccccccc", 0, 7);
	struct bt_rec_verdict v;
	bool got = next_verdict(&v, false, NULL);
	CHECKF(got && v.reason == BT_DROP_TOO_BIG_VERDICT && v.useq == 6, "got %d reason %s useq %llu", got,
	       got ? bt_drop_name(v.reason) : "-", (unsigned long long)v.useq);
	got = next_verdict(&v, false, NULL);
	CHECKF(got && v.reason == BT_DROP_NONE && v.useq == 7, "got %d reason %s useq %llu", got,
	       got ? bt_drop_name(v.reason) : "-", (unsigned long long)v.useq);
	CHECK(drops(BT_DROP_TOO_BIG_VERDICT) == 1);
	CHECK(input_released());
}

static void test_decode_crash(void)
{
	put_identity(POISON_DID, 0, 8);
	put_identity("did:plc:dddddddddddddddddddddddd", 0, 9);
	struct bt_rec_verdict v;
	int deaths = 0;
	bool got = next_verdict(&v, true, &deaths);
	CHECKF(got && v.reason == BT_DROP_QUARANTINED && v.useq == 8, "got %d reason %s useq %llu", got,
	       got ? bt_drop_name(v.reason) : "-", (unsigned long long)v.useq);
	CHECKF(deaths == 2, "verify died %d times on the poison frame, want 2", deaths);
	got = next_verdict(&v, true, &deaths);
	CHECKF(got && v.reason == BT_DROP_NONE && v.useq == 9, "got %d reason %s useq %llu", got,
	       got ? bt_drop_name(v.reason) : "-", (unsigned long long)v.useq);
	char qdir[PATH_MAX + 32];
	snprintf(qdir, sizeof qdir, "%s/data/quarantine", tmp);
	int files = 0;
	DIR *dd = opendir(qdir);
	for (struct dirent *e; dd && (e = readdir(dd));)
		files += e->d_name[0] != '.';
	if (dd)
		closedir(dd);
	CHECKF(files == 1, "%d files under data/quarantine", files);
	CHECK(input_released());
}

int main(int argc, char **argv)
{
	char self[PATH_MAX];
	if (!realpath(argv[0], self))
		return 1;
	snprintf(verify_bin, sizeof verify_bin, "%s/../baton-verify", dirname(self));
	snprintf(tmp, sizeof tmp, "/tmp/bt-test-verify-XXXXXX");
	if (!mkdtemp(tmp))
		return 1;
	char p[PATH_MAX + 64];
	setenv("RELAY_DATA_DIR", (snprintf(p, sizeof p, "%s/data", tmp), p), 1);
	setenv("RELAY_SHM_DIR", tmp, 1);
	setenv("RELAY_NAME", "vtest", 1);
	setenv("RELAY_PLC_HOST", "http://127.0.0.1:9", 1);
	setenv("RELAY_ALLOW_INSECURE_HOSTS", "true", 1);
	setenv("RELAY_FAULT_CRASH_DID", POISON_DID, 1);
	setenv("RELAY_FAULT_CRASH_DECODE", "true", 1);
	setenv("BATON_INDEX", "0", 1);
	char *av[] = { "test_verify_proc", NULL };
	bt_params_load(1, av, "test_verify_proc", "test");
	mkdir(bt_cfg.data_dir, 0755);
	snprintf(p, sizeof p, "%s/secondary", bt_cfg.data_dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/db", bt_cfg.data_dir);
	CHECK(bt_db_open_primary(p, false, &db) == 0);

	struct bt_shm_layout lay;
	memset(&lay, 0, sizeof lay);
	lay.rings[0] = (typeof(lay.rings[0])){ BT_RING_SPSC, RING_CAP, bt_pipe_bell_verify(0) };
	lay.rings[1] = (typeof(lay.rings[0])){ BT_RING_SPSC, RING_CAP, bt_pipe_bell_store() };
	lay.rings[2] = (typeof(lay.rings[0])){ BT_RING_BCAST, RING_CAP, bt_pipe_bell_fanout(1) };
	lay.n_rings = 3;
	lay.n_bells = 3;
	lay.n_pages = BT_PIPE_N_PAGES;
	char path[PATH_MAX];
	bt_params_shm_path(path, sizeof path);
	if (bt_shm_create(path, &lay, &shm) < 0) {
		CHECK(!"bt_shm_create");
		BT_TEST_END();
	}
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	sp->n_verify = 1;
	sp->n_fanout = 1;
	atomic_store(&sp->pid, (int32_t)getpid());
	in = bt_shm_ring(shm, bt_pipe_ring_in(0));
	out = bt_shm_ring(shm, bt_pipe_ring_out(1, 0));
	vst = bt_shm_page(shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_VERIFY, 0)));
	opos = bt_ring_tail(out);

	start_verify();
	test_accept();
	test_malformed();
	test_too_big_verdict();
	test_decode_crash();
	stop_verify();

	bt_db_close(&db);
	bt_shm_close(&shm);
	bt_shm_unlink(path);
	if (!bt_t_fail) {
		char cmd[PATH_MAX + 16];
		snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmp);
	} else {
		fprintf(stderr, "temp dir kept: %s\n", tmp);
	}
	BT_TEST_END();
}
