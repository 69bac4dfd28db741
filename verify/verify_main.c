/*
 * NAME
 *	baton-verify - full validation of the frames of one partition of DIDs
 * DESCRIPTION
 *	Reads stamped frames from its ingest->verify ring and writes exactly one verdict per
 *	frame to its verify->store ring: accept (with the canonical re-encoded frame and the
 *	account's new state) or drop (with a named reason).  Checks, in order (protocol.md):
 *	decode; sizes; DID/TID syntax; CAR with every block hash; commit object; repo and rev
 *	equal the signed commit's; account active; rev newer than stored and not in the future;
 *	identity (DID document: key and PDS); the DID's PDS is the host the frame came from;
 *	the signature; the Sync 1.1 inversion of the ops to prevData.  since/prevData mismatches
 *	with the stored state are counted and passed on.
 *
 *	Waiting without blocking: a frame whose DID's identity is not known waits in a FIFO of
 *	that DID (and every later frame of the DID queues behind it, so per-DID order holds)
 *	while other DIDs go on.  A waiting frame stays in the input ring: the ring is released
 *	only up to the oldest frame without a verdict, so a kill -9 loses nothing (the store
 *	recognises verdicts given twice).  The ring's size bounds the waiting.
 *
 *	A signature or host mismatch with a cached identity re-resolves once before dropping.
 *	A did:plc signature that fails with the fresh key is then tried with the keys the account
 *	had before a rotation, from the PLC audit log, within a window that closes at the rotation
 *	(verify_ident.c, docs/identity.md).  Resolved identities are persisted by the store and
 *	taken from RocksDB when a DID enters the cache; #identity expires them in stream order.
 *	A resolver that is down (transport error, 5xx) is retried with backoff; frames wait.
 *	404 or an unusable document drops the DID's frames as no_identity.
 * DIAGNOSTICS
 *	Drop counters by reason in the stats page (batonctl status, /metrics).
 */
#include "bt_car.h"
#include "bt_commit.h"
#include "bt_db.h"
#include "bt_fetch.h"
#include "bt_log.h"
#include "bt_mst.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "bt_syntax.h"
#include "verify.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define JOBS 65536u             /* frames read but not answered, at most */
#define TURN 512                /* frames per loop turn, so callbacks interleave */
#define MAX_BLOCKS_BYTES 2000000
#define MAX_SYNC_BLOCKS_BYTES 10000 /* lexicon: #sync blocks hold just the signed commit */
#define FUTURE_MS (5 * 60 * 1000)
#define DROP_LOG_PER_S 20
#define DESYNC_STATUS "desynchronized"

struct bt_db *vfy_db;
static struct event_base *base;
static struct bt_ring *in, *out;
static struct bt_fetch *fetch;     /* did:plc: the operator's RELAY_PLC_HOST, wherever it is */
static struct bt_fetch *fetch_web; /* did:web: public addresses on 80/443 only (SSRF), unless insecure hosts are allowed */
static struct bt_fetch *fetch_web_public; /* PDS status checks: public addresses only, always */
static struct bt_fetch *fetch_local;      /* PDS status checks of localhost:PORT hosts (insecure mode) */
static struct vfy_job jobs[JOBS];
static uint64_t jhead, jtail;    /* jobs[jhead..jtail) are in flight, oldest first */
static uint64_t rpos;            /* next input record to read */
static struct bt_fh_msg msg;     /* decoded frame (large: static, reused) */
static struct bt_car car;
static struct bt_buf enc, unsig;
static struct event *ev_read, *ev_retry, *ev_beat, *ev_tick;
static struct bt_bell *bell; /* ingest rings it after writing our input ring */

/* Verdicts that found the output ring full, in order; they go first when it drains. */
struct ovf {
	struct ovf *next;
	uint64_t job;
	size_t len;
	uint8_t data[];
};
static struct ovf *ovf_head, *ovf_tail;

enum run { RUN_DONE, RUN_WAIT };

#define STATUS_RECHECK_MS 5000
static bool check_status(struct vfy_did *d, const struct bt_rec_frame *fr);

/* The frame being processed, in the stats page (outlives a crash).  Positions start at 0, so
   the marker stores pos + 1. */
static void mark(uint64_t start_pos)
{
	atomic_store_explicit(&bt_proc.stats->cur_pos, start_pos + 1, memory_order_relaxed);
}

static void unmark(void)
{
	atomic_store_explicit(&bt_proc.stats->cur_pos, 0, memory_order_relaxed);
}

/* At start: did the previous incarnation die inside a frame?  Twice on the same one means
   that frame is poison: it will be quarantined instead of crashing us a third time. */
static void crash_check(void)
{
	struct bt_stats_page *st = bt_proc.stats;
	uint64_t cur = atomic_load(&st->cur_pos);
	if (!cur)
		return;
	if (st->crash_pos == cur) {
		st->crash_count++;
	} else {
		st->crash_pos = cur;
		st->crash_count = 1;
	}
	BT_WARN("the previous verify[%d] died processing the frame at ring position %llu (%u time%s)",
		bt_proc.index, (unsigned long long)(cur - 1), st->crash_count, st->crash_count > 1 ? "s" : "");
	unmark();
}

static bool is_poison(uint64_t start_pos)
{
	return bt_proc.stats->crash_count >= 2 && bt_proc.stats->crash_pos == start_pos + 1;
}

/* Keep the frame for inspection under RELAY_DATA_DIR/quarantine and drop it. */
static void quarantine(uint64_t j);

struct vfy_job *vfy_job(uint64_t j)
{
	return &jobs[j & (JOBS - 1)];
}

uint64_t vfy_out_committed(void)
{
	return bt_ring_tail(out);
}

static void count_drop(enum bt_drop r)
{
	atomic_fetch_add_explicit(&bt_proc.stats->drops[r], 1, memory_order_relaxed);
	bt_stat_add(bt_proc.stats, BT_STAT_DROPPED, 1);
}

/* Release the input ring up to the oldest frame still without a verdict. */
static void release_done(void)
{
	uint64_t upto = 0;
	while (jhead != jtail && vfy_job(jhead)->done) {
		upto = vfy_job(jhead)->end_pos;
		jhead++;
	}
	if (upto)
		bt_ring_release(in, upto);
}

/* Records go into the output ring quietly and the store's bell rings once per loop turn
   (out_wake at the end of every callback that can write): a cross-core wakeup costs tens of
   microseconds, once per record it was most of verify's kernel time.  A record is visible to
   the store as soon as it is committed; the bell only ends its sleep, and its poll timer is
   the safety net, so a turn that forgot to ring would delay, never lose. */
static bool out_dirty;

static void out_commit(void)
{
	bt_ring_commit_quiet(out);
	out_dirty = true;
}

static void out_wake(void)
{
	if (out_dirty) {
		out_dirty = false;
		bt_ring_wake(out);
	}
}

static bool ring_put(const void *p, size_t n)
{
	void *dst;
	if (bt_ring_claim(out, BT_REC_VERDICT, n, &dst) < 0)
		return false;
	memcpy(dst, p, n);
	out_commit();
	return true;
}

bool vfy_out_put(uint32_t type, const void *p, size_t n)
{
	void *dst;
	if (ovf_head || bt_ring_claim(out, type, n, &dst) < 0)
		return false; /* never ahead of verdicts still waiting for room */
	memcpy(dst, p, n);
	out_commit();
	return true;
}

static void flush_ovf(void)
{
	while (ovf_head && ring_put(ovf_head->data, ovf_head->len)) {
		struct ovf *o = ovf_head;
		vfy_job(o->job)->done = true;
		if (vfy_job(o->job)->d)
			vfy_job(o->job)->d->out_end = bt_ring_head(out);
		ovf_head = o->next;
		if (!ovf_head)
			ovf_tail = NULL;
		free(o);
	}
	release_done();
	out_wake();
	if (ovf_head)
		event_add(ev_retry, &(struct timeval){ 0, 2000 });
	else
		event_active(ev_read, 0, 0);
}

static void drop(uint64_t j, const struct bt_bytes *did, enum bt_drop reason, const char *why);

/* Write the verdict for job j; the frame bytes (accept only) are in enc.  An accept too big for
   the output ring's largest record would be retried forever: it becomes a drop verdict
   too_big_verdict (which always fits) and -EMSGSIZE is returned. */
static int emit(uint64_t j, struct bt_rec_verdict *v, bool with_frame)
{
	const struct bt_rec_frame *fr = vfy_job(j)->fr;
	if (with_frame && sizeof *v + enc.len > bt_ring_max_record(out)) {
		struct bt_bytes did = { (const uint8_t *)v->did, v->did_len };
		char why[96];
		snprintf(why, sizeof why, "verdict of %zu bytes, the ring takes %zu", sizeof *v + enc.len,
			 bt_ring_max_record(out));
		drop(j, &did, BT_DROP_TOO_BIG_VERDICT, why);
		return -EMSGSIZE;
	}
	v->host_id = fr->host_id;
	v->useq = fr->useq;
	v->prev_useq = fr->prev_useq;
	v->recv_ms = fr->recv_ms;
	v->epoch = fr->epoch;
	if (fr->flags & BT_FRAME_CHAIN_RESET)
		v->flags |= BT_V_CHAIN_RESET;
	v->frame_len = with_frame ? (uint32_t)enc.len : 0;
	size_t n = sizeof *v + v->frame_len;
	if (!ovf_head) {
		void *dst;
		if (bt_ring_claim(out, BT_REC_VERDICT, n, &dst) == 0) {
			memcpy(dst, v, sizeof *v);
			if (with_frame)
				memcpy((uint8_t *)dst + sizeof *v, enc.p, enc.len);
			out_commit();
			vfy_job(j)->done = true;
			if (vfy_job(j)->d)
				vfy_job(j)->d->out_end = bt_ring_head(out);
			bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_OUT, 1);
			return 0;
		}
		bt_stat_add(bt_proc.stats, BT_STAT_RING_FULL, 1);
	}
	struct ovf *o = malloc(sizeof *o + n);
	if (!o)
		abort(); /* the bound is the input ring; running out of memory here is a bug */
	o->next = NULL;
	o->job = j;
	o->len = n;
	memcpy(o->data, v, sizeof *v);
	if (with_frame)
		memcpy(o->data + sizeof *v, enc.p, enc.len);
	if (ovf_tail)
		ovf_tail->next = o;
	else
		ovf_head = o;
	ovf_tail = o;
	if (vfy_job(j)->d)
		vfy_job(j)->d->out_end = UINT64_MAX; /* uncommitted until it is in the ring and past it */
	event_add(ev_retry, &(struct timeval){ 0, 2000 });
	return 0;
}

static void drop(uint64_t j, const struct bt_bytes *did, enum bt_drop reason, const char *why)
{
	struct bt_rec_verdict v;
	memset(&v, 0, sizeof v);
	v.reason = (uint16_t)reason;
	if (did && did->n < BT_DID_MAX) {
		v.did_len = (uint16_t)did->n;
		memcpy(v.did, did->p, did->n);
	}
	if (reason == BT_DROP_IDENTITY_TIMEOUT) {
		/* The relay's view of the account: it lost sync with it (the store may record it). */
		v.flags |= BT_V_HAS_STATUS;
		v.status_len = (uint8_t)strlen(DESYNC_STATUS);
		memcpy(v.status, DESYNC_STATUS, v.status_len);
	}
	count_drop(reason);
	/* Every drop is logged, up to DROP_LOG_PER_S a second for each reason (the counters have
	   the rest), so an operator can always see why a given account's commit went missing. */
	static uint64_t sec[BT_DROP__COUNT];
	static unsigned n_in_sec[BT_DROP__COUNT];
	uint64_t now_s = bt_now_ms() / 1000;
	if (sec[reason] != now_s) {
		sec[reason] = now_s;
		n_in_sec[reason] = 0;
	}
	if (n_in_sec[reason]++ < DROP_LOG_PER_S)
		BT_INFO("drop %s host=%u useq=%llu %.*s rev %.*s: %s", bt_drop_name(reason), vfy_job(j)->fr->host_id,
			(unsigned long long)vfy_job(j)->fr->useq, did ? (int)did->n : 0, did ? (const char *)did->p : "",
			did ? (int)msg.rev.n : 0, did && msg.rev.n ? (const char *)msg.rev.p : "", why ? why : "");
	emit(j, &v, false);
}

static bool bytes_eq(struct bt_bytes a, struct bt_bytes b)
{
	return a.n == b.n && (a.n == 0 || !memcmp(a.p, b.p, a.n));
}

static bool id_usable(const struct vfy_did *d)
{
	return d->ist == VI_OK && bt_now_ms() < d->id_expires_ms;
}

/* Ask for a fresh document before giving up on a signature or host mismatch, once per job. */
static enum run refetch_once(uint64_t j, struct vfy_did *d, enum bt_drop reason, const char *why)
{
	struct vfy_job *job = vfy_job(j);
	if (!job->re_resolved && bt_now_ms() - d->id_fetched_ms > 1000) {
		job->re_resolved = true;
		vfy_resolve(d);
		return RUN_WAIT;
	}
	drop(j, &msg.did, reason, why);
	return RUN_DONE;
}

/* The signature fails with the current key: a fresh document first (once), then, for did:plc,
   the keys the account had before a rotation (verify_ident.c).  True when a prior key vouches
   for the commit (the other checks go on); otherwise *r is RUN_WAIT or the commit is dropped. */
static bool sig_prior(uint64_t j, struct vfy_did *d, const struct bt_commit *c, enum run *r)
{
	struct vfy_job *job = vfy_job(j);
	if (!job->re_resolved && bt_now_ms() - d->id_fetched_ms > 1000) {
		*r = refetch_once(j, d, BT_DROP_BAD_SIG, "signature");
		return false;
	}
	switch (vfy_prior_key(d, job->fr, (const char *)c->rev.p, c->rev.n, unsig.p, unsig.len, c->sig.p, c->sig.n)) {
	case VFY_PRIOR_OK:
		return true;
	case VFY_PRIOR_WAIT:
		*r = RUN_WAIT;
		return false;
	default:
		drop(j, &msg.did, BT_DROP_BAD_SIG, "signature");
		*r = RUN_DONE;
		return false;
	}
}

/* Write an accept verdict for job j.  Returns false if it became a drop instead (the frame
   could not be re-encoded, or the verdict is too big for the output ring): the caller applies
   the frame to the DID's state only when this returns true, so verify's view never runs ahead
   of what the store will commit. */
static bool accept_frame(uint64_t j, struct vfy_did *d, enum bt_ev ev, uint8_t flags, const struct bt_commit *c)
{
	struct bt_rec_verdict v;
	memset(&v, 0, sizeof v);
	v.reason = BT_DROP_NONE;
	v.ev = (uint8_t)ev;
	v.flags = flags;
	v.did_len = d->did_len;
	memcpy(v.did, d->did, d->did_len);
	if (c) {
		v.rev_len = (uint8_t)c->rev.n;
		memcpy(v.rev, c->rev.p, c->rev.n);
		v.data_len = c->data.len;
		memcpy(v.data_cid, c->data.b, c->data.len);
		v.commit_len = msg.commit.len;
		memcpy(v.commit_cid, msg.commit.b, msg.commit.len);
	}
	if (ev == BT_EV_ACCOUNT && msg.has_status && msg.status.n <= BT_STATUS_MAX) {
		v.flags |= BT_V_HAS_STATUS;
		v.status_len = (uint8_t)msg.status.n;
		memcpy(v.status, msg.status.p, msg.status.n);
	}
	if (ev == BT_EV_ACCOUNT && msg.active)
		v.flags |= BT_V_ACTIVE;
	bt_buf_reset(&enc);
	size_t seq_off;
	if (bt_fh_encode_noseq(&msg, &enc, &seq_off) < 0 || seq_off == SIZE_MAX) {
		drop(j, &msg.did, BT_DROP_BAD_FRAME, "re-encoding failed");
		return false;
	}
	v.seq_off = (uint32_t)seq_off;
	if (emit(j, &v, true) < 0)
		return false;
	bt_stat_add(bt_proc.stats, BT_STAT_ACCEPTED, 1);
	return true;
}

/* #commit and #sync: everything up to (not including) the identity-dependent checks. */
static enum run check_repo_event(uint64_t j, struct vfy_did *d)
{
	const char *why = NULL;
	const struct bt_rec_frame *fr = vfy_job(j)->fr;
	bool is_commit = msg.type == BT_FH_COMMIT;
	if (msg.blocks.n > (is_commit ? MAX_BLOCKS_BYTES : MAX_SYNC_BLOCKS_BYTES) ||
	    (is_commit && (msg.rebase || msg.too_big))) {
		drop(j, &msg.did, BT_DROP_TOO_BIG, "blocks too big, or rebase/tooBig set");
		return RUN_DONE;
	}
	if (!bt_syntax_did((const char *)msg.did.p, msg.did.n) || !bt_syntax_tid((const char *)msg.rev.p, msg.rev.n)) {
		drop(j, &msg.did, BT_DROP_BAD_SYNTAX, "did or rev");
		return RUN_DONE;
	}
	if (bt_car_parse(&car, msg.blocks.p, msg.blocks.n, &why) < 0) {
		drop(j, &msg.did, BT_DROP_BAD_CAR, why);
		return RUN_DONE;
	}
	if (is_commit && !bt_cid_eq(&car.root, &msg.commit)) {
		drop(j, &msg.did, BT_DROP_BAD_COMMIT, "CAR root is not the commit");
		return RUN_DONE;
	}
	if (!is_commit)
		msg.commit = car.root;
	const struct bt_car_block *blk = bt_car_get(&car, &car.root);
	struct bt_commit c;
	if (!blk || bt_commit_decode(blk->data, blk->len, &c, &why) < 0 || c.version != 3) {
		drop(j, &msg.did, BT_DROP_BAD_COMMIT, why ? why : "missing commit block or version");
		return RUN_DONE;
	}
	if (!bytes_eq(c.did, msg.did) || !bytes_eq(c.rev, msg.rev)) {
		drop(j, &msg.did, BT_DROP_REPO_MISMATCH, "repo/rev differ from the signed commit");
		return RUN_DONE;
	}
	vfy_acct_load(d, vfy_db);
	size_t stored = strlen(d->rev);
	/* A #commit must be newer than the stored rev.  A #sync states the repo's current state:
	   it is forwarded when its rev is not older (@atproto/pds emits one with the first commit's
	   rev at every createAccount, and indigo forwards every #sync). */
	int cmp = stored ? vfy_rev_cmp((const char *)msg.rev.p, msg.rev.n, d->rev, stored) : 1;
	if (is_commit ? cmp <= 0 : cmp < 0) {
		drop(j, &msg.did, is_commit ? BT_DROP_REV_OLD : BT_DROP_SYNC_REV_OLD, d->rev);
		return RUN_DONE;
	}
	int64_t us = bt_tid_micros((const char *)msg.rev.p, msg.rev.n);
	if (us > 0 && (uint64_t)(us / 1000) > bt_wall_ms() + FUTURE_MS) {
		drop(j, &msg.did, BT_DROP_REV_FUTURE, "rev in the future");
		return RUN_DONE;
	}
	/* Identity-dependent checks. */
	if (!id_usable(d))
		return RUN_WAIT;
	if (!d->id.key) {
		drop(j, &msg.did, BT_DROP_NO_KEY, "no #atproto key");
		return RUN_DONE;
	}
	if (strlen(d->id.pds_host) != fr->host_len || memcmp(d->id.pds_host, fr->host, fr->host_len))
		return refetch_once(j, d, BT_DROP_WRONG_HOST, d->id.pds_host);
	bt_buf_reset(&unsig);
	if (bt_commit_unsigned(blk->data, blk->len, &unsig) < 0)
		return refetch_once(j, d, BT_DROP_BAD_SIG, "signature");
	if (bt_pubkey_verify(d->id.key, unsig.p, unsig.len, c.sig.p, c.sig.n) < 0) {
		enum run r;
		if (!sig_prior(j, d, &c, &r))
			return r;
	}
	if (!d->active) {
		/* A correctly signed commit from the account's own PDS, for an account we hold
		   inactive: ask that PDS (at most every STATUS_RECHECK_MS) before dropping, so a
		   missed #account cannot keep the account dark (lesson 15). */
		if (bt_now_ms() - d->status_checked_ms > STATUS_RECHECK_MS && check_status(d, fr))
			return RUN_WAIT;
		drop(j, &msg.did, BT_DROP_INACTIVE, d->status);
		return RUN_DONE;
	}
	/* Sync 1.1: undoing the ops on the new tree must give exactly prevData. */
	if (is_commit && msg.has_prev_data) {
		struct bt_cid prev;
		const char *iwhy = NULL;
		if (bt_mst_invert(&car, &c.data, msg.ops, msg.n_ops, &prev, &iwhy) < 0 ||
		    !bt_cid_eq(&prev, &msg.prev_data)) {
			if (!bt_cfg.lenient_sync_validation) {
				drop(j, &msg.did, BT_DROP_BAD_INVERSION, iwhy ? iwhy : "root differs from prevData");
				return RUN_DONE;
			}
			bt_stat_add(bt_proc.stats, BT_STAT_INVERSION_LENIENT, 1);
			BT_LOG_EVERY(BT_LOG_WARN, "%.*s: inversion failed (%s), passed on (lenient)", (int)msg.did.n,
				     (const char *)msg.did.p, iwhy ? iwhy : "root differs");
		}
	}
	uint8_t flags = 0;
	if (is_commit && stored) {
		bool since_ok = msg.has_since && msg.since.n == stored && !memcmp(msg.since.p, d->rev, stored);
		bool data_ok = !msg.has_prev_data || !d->data.len || bt_cid_eq(&msg.prev_data, &d->data);
		if (!since_ok || !data_ok) {
			flags |= BT_V_DISCONTINUITY;
			bt_stat_add(bt_proc.stats, BT_STAT_DISCONTINUITIES, 1);
		}
	}
	/* The accepted #commit or #sync is the account's new state: the next #commit chains from it. */
	if (accept_frame(j, d, is_commit ? BT_EV_COMMIT : BT_EV_SYNC, flags, &c)) {
		memcpy(d->rev, msg.rev.p, msg.rev.n);
		d->rev[msg.rev.n] = 0;
		d->data = c.data;
	}
	return RUN_DONE;
}

/* Decide job j (msg holds its decoded frame). */
/* RELAY_UPSTREAM_RELAY: the frames of the relay we serve are its verdicts already; pass each
   event on as it is (the commit's rev and data CID still go to the account state, for the sync
   endpoints), checking nothing but that it decodes. */
static enum run pass_through(uint64_t j, struct vfy_did *d)
{
	enum bt_ev ev;
	switch (msg.type) {
	case BT_FH_COMMIT: ev = BT_EV_COMMIT; break;
	case BT_FH_SYNC: ev = BT_EV_SYNC; break;
	case BT_FH_IDENTITY: ev = BT_EV_IDENTITY; break;
	case BT_FH_ACCOUNT: ev = BT_EV_ACCOUNT; break;
	default:
		drop(j, &msg.did, BT_DROP_UNKNOWN_TYPE, "type not forwarded");
		return RUN_DONE;
	}
	struct bt_commit c, *cp = NULL;
	if ((ev == BT_EV_COMMIT || ev == BT_EV_SYNC) && bt_car_parse(&car, msg.blocks.p, msg.blocks.n, NULL) == 0) {
		const struct bt_car_block *blk = bt_car_get(&car, ev == BT_EV_COMMIT ? &msg.commit : &car.root);
		if (blk && bt_commit_decode(blk->data, blk->len, &c, NULL) == 0)
			cp = &c;
	}
	if (accept_frame(j, d, ev, 0, cp) && ev == BT_EV_ACCOUNT) {
		d->active = msg.active;
		snprintf(d->status, sizeof d->status, "%.*s", msg.has_status ? (int)msg.status.n : 0,
			 msg.has_status ? (const char *)msg.status.p : "");
	}
	return RUN_DONE;
}

static enum run run_job(uint64_t j, struct vfy_did *d)
{
	const struct bt_rec_frame *fr = vfy_job(j)->fr;
	if (bt_cfg.fault_crash_did[0] && strlen(bt_cfg.fault_crash_did) == d->did_len &&
	    !memcmp(bt_cfg.fault_crash_did, d->did, d->did_len)) {
		BT_ERR("fault injection: crashing on a frame of %s", bt_cfg.fault_crash_did);
		abort();
	}
	if (d->desync && !id_usable(d) && d->ist != VI_FAILED &&
	    (msg.type == BT_FH_COMMIT || msg.type == BT_FH_SYNC || msg.type == BT_FH_ACCOUNT)) {
		/* Still unresolved after timing out: do not hold the ring again for this DID. */
		drop(j, &msg.did, BT_DROP_IDENTITY_TIMEOUT, "identity still unresolved (desynchronized)");
		if (d->ist != VI_RESOLVING)
			vfy_resolve(d);
		return RUN_DONE;
	}
	if (bt_cfg.upstream_relay[0])
		return pass_through(j, d);
	switch (msg.type) {
	case BT_FH_COMMIT:
	case BT_FH_SYNC:
		if (d->ist == VI_FAILED && bt_now_ms() < d->id_expires_ms) {
			drop(j, &msg.did, BT_DROP_NO_IDENTITY, "resolution failed");
			return RUN_DONE;
		}
		return check_repo_event(j, d);
	case BT_FH_IDENTITY:
		/* The document changed: resolve it again before the next commit.  A persisted identity
		   is loaded first so that it is expired here, in stream order, too. */
		vfy_acct_load(d, vfy_db);
		vfy_ident_seen(d, &msg.time);
		if (d->ist == VI_OK)
			d->id_expires_ms = 0;
		accept_frame(j, d, BT_EV_IDENTITY, 0, NULL);
		return RUN_DONE;
	case BT_FH_ACCOUNT:
		if (d->ist == VI_FAILED && bt_now_ms() < d->id_expires_ms) {
			drop(j, &msg.did, BT_DROP_NO_IDENTITY, "resolution failed");
			return RUN_DONE;
		}
		if (!id_usable(d))
			return RUN_WAIT;
		if (strlen(d->id.pds_host) != fr->host_len || memcmp(d->id.pds_host, fr->host, fr->host_len))
			return refetch_once(j, d, BT_DROP_WRONG_HOST, d->id.pds_host);
		vfy_acct_load(d, vfy_db);
		if (accept_frame(j, d, BT_EV_ACCOUNT, 0, NULL)) {
			d->active = msg.active;
			snprintf(d->status, sizeof d->status, "%.*s", msg.has_status ? (int)msg.status.n : 0,
				 msg.has_status ? (const char *)msg.status.p : "");
		}
		return RUN_DONE;
	default:
		drop(j, &msg.did, BT_DROP_UNKNOWN_TYPE, "type not forwarded");
		return RUN_DONE;
	}
}

/* Decode a frame into msg.  The fault hook RELAY_FAULT_CRASH_DECODE stands for a decoder bug:
   it aborts before the frame is parsed, so nothing about the frame (not even its DID) is known. */
static int decode_frame(const uint8_t *frame, size_t n, const char **why)
{
	if (bt_cfg.fault_crash_decode && bt_cfg.fault_crash_did[0] &&
	    memmem(frame, n, bt_cfg.fault_crash_did, strlen(bt_cfg.fault_crash_did))) {
		BT_ERR("fault injection: crashing while decoding a frame of %s", bt_cfg.fault_crash_did);
		abort();
	}
	return bt_fh_decode(frame, n, &msg, why);
}

static int decode_job(uint64_t j, const char **why)
{
	struct vfy_job *job = vfy_job(j);
	return decode_frame(job->frame, job->fr->frame_len, why);
}

void vfy_resume(struct vfy_did *d)
{
	while (d->wait_head != VFY_NONE) {
		uint64_t j = d->wait_head;
		enum run r = RUN_DONE;
		mark(vfy_job(j)->start_pos);
		if (decode_job(j, NULL) < 0)
			drop(j, NULL, BT_DROP_BAD_FRAME, "decode");
		else
			r = run_job(j, d);
		unmark();
		if (r == RUN_WAIT) {
			/* j stays at the head.  vfy_resolve may fail at once and resume d itself. */
			if (!d->checking && d->ist != VI_RESOLVING)
				vfy_resolve(d);
			out_wake(); /* verdicts of the jobs before j */
			return;
		}
		d->wait_head = vfy_job(j)->next;
		if (d->wait_head == VFY_NONE)
			d->wait_tail = VFY_NONE;
	}
	out_wake();
	release_done(); /* first, so the gauge does not count frames just decided */
	bt_stat_set(bt_proc.stats, BT_STAT_WAITING, jtail - jhead);
}

/* ---- account status, asked of the PDS ---- */

static void on_status(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct vfy_did *d = arg;
	d->checking = false;
	d->status_checked_ms = bt_now_ms();
	if (status == -ECANCELED)
		return;
	json_error_t je;
	json_t *j = status == 200 ? json_loadb(body, len, 0, &je) : NULL;
	if (json_is_true(json_object_get(j, "active"))) {
		BT_INFO("%.*s: inactive here, but its PDS says active: reactivated", (int)d->did_len, d->did);
		d->active = true;
		d->status[0] = 0;
	}
	json_decref(j);
	vfy_resume(d);
}

/* Start a getRepoStatus on the host the frame came from; false if it cannot start. */
static bool check_status(struct vfy_did *d, const struct bt_rec_frame *fr)
{
	if (d->checking)
		return true;
	char url[BT_HOST_MAX + BT_DID_MAX + 96];
	bool local = fr->host_len > 10 && !memcmp(fr->host, "localhost:", 10);
	if (local && !bt_cfg.allow_insecure_hosts)
		return false;
	snprintf(url, sizeof url, "%s%.*s/xrpc/com.atproto.sync.getRepoStatus?did=%.*s",
		 local ? "http://127.0.0.1:" : "https://", local ? (int)fr->host_len - 10 : (int)fr->host_len,
		 local ? fr->host + 10 : fr->host, (int)d->did_len, d->did);
	if (bt_fetch_get(local ? fetch_local : fetch_web_public, url, on_status, d) < 0)
		return false;
	d->checking = true;
	return true;
}

/* ---- identity resolution ---- */

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vfy_did *d = arg;
	d->ist = VI_NONE;
	vfy_resolve(d);
}

static void on_resolved(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct vfy_did *d = arg;
	if (status == -ECANCELED)
		return;
	uint64_t now = bt_now_ms();
	if (d->desync && (status == 200 || status == 404 || status == 410)) {
		BT_INFO("%.*s: the resolver answered (%d): no longer desynchronized", (int)d->did_len, d->did, status);
		d->desync = false;
	}
	if (status == 200) {
		const char *why = NULL;
		struct bt_identity id;
		char did[BT_DID_MAX];
		memcpy(did, d->did, d->did_len);
		did[d->did_len] = 0;
		if (bt_diddoc_parse(body, len, did, &id, &why) == 0) {
			bt_identity_clear(&d->id);
			d->id = id;
			d->ist = VI_OK;
			d->fails = 0;
			d->id_fetched_ms = now;
			d->id_expires_ms = now + (uint64_t)bt_cfg.identity_ttl * 1000u;
			vfy_ident_persist(d); /* ahead of the verdicts that use it */
		} else {
			BT_LOG_EVERY(BT_LOG_WARN, "DID document of %s unusable: %s", did, why ? why : "?");
			d->ist = VI_FAILED;
			d->id_expires_ms = now + 60000;
			bt_stat_add(bt_proc.stats, BT_STAT_RESOLVE_FAILS, 1);
		}
	} else if (status == 404 || status == 410) {
		d->ist = VI_FAILED;
		d->id_expires_ms = now + 60000;
		bt_stat_add(bt_proc.stats, BT_STAT_RESOLVE_FAILS, 1);
	} else {
		/* Resolver down or erroring: the frames wait; try again with backoff. */
		bt_stat_add(bt_proc.stats, BT_STAT_RESOLVE_FAILS, 1);
		unsigned f = d->fails < 5 ? d->fails : 5;
		d->fails++;
		BT_LOG_EVERY(BT_LOG_WARN, "resolving %.*s failed (%d); retrying", (int)d->did_len, d->did, status);
		struct timeval tv = { 1u << f, 0 };
		event_base_once(base, -1, EV_TIMEOUT, on_retry_timer, d, &tv);
		return;
	}
	vfy_resume(d);
}

void vfy_resolve(struct vfy_did *d)
{
	if (d->ist == VI_RESOLVING)
		return;
	char did[BT_DID_MAX], url[1024];
	memcpy(did, d->did, d->did_len);
	did[d->did_len] = 0;
	d->ist = VI_RESOLVING;
	struct bt_fetch *f = strncmp(did, "did:web:", 8) == 0 ? fetch_web : fetch;
	if (bt_did_resolve_url(did, bt_cfg.plc_host, url, sizeof url) < 0 ||
	    bt_fetch_get(f, url, on_resolved, d) < 0) {
		d->ist = VI_FAILED;
		d->id_expires_ms = bt_now_ms() + 60000;
		vfy_resume(d);
		return;
	}
	bt_stat_add(bt_proc.stats, BT_STAT_RESOLVES, 1);
}

static void quarantine(uint64_t j)
{
	const struct bt_rec_frame *fr = vfy_job(j)->fr;
	char dir[PATH_MAX], path[PATH_MAX + 64];
	snprintf(dir, sizeof dir, "%s/quarantine", bt_cfg.data_dir);
	mkdir(dir, 0755);
	snprintf(path, sizeof path, "%s/host%u-seq%llu.frame", dir, fr->host_id, (unsigned long long)fr->useq);
	FILE *f = fopen(path, "wb");
	if (f) {
		fwrite(vfy_job(j)->frame, 1, fr->frame_len, f);
		fclose(f);
	}
	BT_ERR("quarantined the frame at ring position %llu (host %u, upstream seq %llu) as %s",
	       (unsigned long long)vfy_job(j)->start_pos, fr->host_id, (unsigned long long)fr->useq, path);
	bt_stat_add(bt_proc.stats, BT_STAT_QUARANTINED, 1);
	bt_proc.stats->crash_count = 0;
	drop(j, NULL, BT_DROP_QUARANTINED, "crashed verify twice");
}

/* ---- the input side ---- */

/* Before the first frame: verdicts a predecessor left in the output ring must be committed and
   visible in our RocksDB view, or a frame could be checked against an older rev than the one
   the store is about to commit. */
static bool synced_with_store(void)
{
	static bool synced;
	if (synced)
		return true;
	if (!vfy_db || bt_ring_used(out) > 0)
		return false;
	if (bt_db_catch_up_gen(vfy_db, bt_proc_store_gen()) < 0)
		return false;
	synced = true;
	return true;
}

static void read_input(evutil_socket_t fd, short what, void *arg)
{
	if (!synced_with_store() || ovf_head)
		return;
	int n = 0;
	uint64_t now = bt_now_ms(); /* read time of this turn's frames (RELAY_IDENTITY_WAIT): one clock read */
	while (n < TURN && jtail - jhead < JOBS) {
		uint32_t type;
		const void *p;
		size_t len;
		uint64_t pos = rpos;
		if (bt_ring_read(in, &pos, &type, &p, &len) < 0)
			break;
		const struct bt_rec_frame *fr = p;
		uint64_t j = jtail;
		struct vfy_job *job = vfy_job(j);
		memset(job, 0, sizeof *job);
		job->start_pos = rpos;
		job->end_pos = pos;
		job->next = VFY_NONE;
		job->read_ms = now;
		if (type != BT_REC_FRAME || len < sizeof *fr || len - sizeof *fr < fr->frame_len ||
		    fr->host_len > BT_HOST_MAX) {
			BT_LOG_EVERY(BT_LOG_ERROR, "malformed record in the input ring (type %u, len %zu)", type, len);
			rpos = pos;
			jtail++;
			if (type == BT_REC_FRAME && len >= sizeof *fr) {
				/* Its host and upstream seq are readable: a drop verdict lets the store
				   chain past it, or the host's cursor would freeze here. */
				job->fr = fr;
				n++;
				bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_IN, 1);
				drop(j, NULL, BT_DROP_BAD_RECORD, "malformed input record");
			} else {
				job->done = true; /* nothing to chain it by; counted */
				count_drop(BT_DROP_BAD_RECORD);
			}
			continue;
		}
		job->fr = fr;
		job->frame = (const uint8_t *)(fr + 1);
		/* The crash marker goes up before decoding: a frame that crashes the decoder is
		   recognised by the next incarnation, and the third one quarantines it unread. */
		if (is_poison(job->start_pos)) {
			rpos = pos;
			jtail++;
			n++;
			bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_IN, 1);
			quarantine(j);
			continue;
		}
		mark(job->start_pos);
		const char *why = NULL;
		int rc = decode_frame(job->frame, fr->frame_len, &why);
		struct vfy_did *d = rc == 0 ? vfy_did_get((const char *)msg.did.p, msg.did.n, true) : NULL;
		if (rc == 0 && !d && msg.did.n > 0 && msg.did.n < BT_DID_MAX) {
			unmark();
			break; /* every cached DID is busy: wait for resolutions to finish */
		}
		rpos = pos;
		jtail++;
		n++;
		job->d = d;
		bt_stat_add(bt_proc.stats, BT_STAT_FRAMES_IN, 1);
		if (rc < 0 || !d) {
			drop(j, NULL, BT_DROP_BAD_FRAME, why ? why : "no did");
			unmark();
			continue;
		}
		if (d->wait_head != VFY_NONE) {
			unmark();
			vfy_did_wait(d, j); /* behind an earlier frame of the same DID */
			continue;
		}
		enum run r = run_job(j, d);
		unmark();
		if (r == RUN_WAIT) {
			vfy_did_wait(d, j);
			if (!d->checking)
				vfy_resolve(d);
		}
	}
	if (n)
		bt_proc_progress((uint64_t)n);
	out_wake();
	release_done(); /* first, so the gauge does not count frames just decided */
	bt_stat_set(bt_proc.stats, BT_STAT_WAITING, jtail - jhead);
	if (n == TURN)
		event_active(ev_read, 0, 0);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	flush_ovf();
}

/* Frames waiting longer than RELAY_IDENTITY_WAIT for their DID's resolution hold the input
   ring's release point, so after a ring's worth of traffic every DID of the partition would
   stop behind one DID whose resolver never answers.  Such a DID's waiting frames are dropped
   (identity_timeout: a verdict each, so the store chains past them) and the DID is marked
   desynchronized; resolution goes on in the background and its next success ends the mark.
   Jobs are in read order, so the scan stops at the first one younger than the limit. */
static void identity_timeouts(void)
{
	uint64_t now = bt_now_ms(), limit = (uint64_t)bt_cfg.identity_wait * 1000u;
	bool any = false;
	for (uint64_t j = jhead; j != jtail; j++) {
		struct vfy_job *job = vfy_job(j);
		if (now - job->read_ms < limit)
			break;
		struct vfy_did *d = job->d;
		/* Only the head of a DID's FIFO waiting on its resolver (a job in the overflow queue is
		   decided; a status check ends by itself, its fetch has a timeout). */
		if (job->done || !d || d->wait_head != j || d->checking || d->ist == VI_OK)
			continue;
		unsigned n = 0;
		d->desync = true;
		while (d->wait_head != VFY_NONE) {
			uint64_t w = d->wait_head;
			d->wait_head = vfy_job(w)->next;
			mark(vfy_job(w)->start_pos);
			if (decode_job(w, NULL) == 0)
				drop(w, &msg.did, BT_DROP_IDENTITY_TIMEOUT, "identity unresolved for RELAY_IDENTITY_WAIT");
			else
				drop(w, NULL, BT_DROP_IDENTITY_TIMEOUT, "identity unresolved for RELAY_IDENTITY_WAIT");
			unmark();
			n++;
		}
		d->wait_tail = VFY_NONE;
		BT_WARN("%.*s: unresolved for %llds: %u waiting frames dropped (identity_timeout); desynchronized until it resolves",
			(int)d->did_len, d->did, (long long)bt_cfg.identity_wait, n);
		any = true;
	}
	if (any) {
		out_wake();
		release_done();
		bt_stat_set(bt_proc.stats, BT_STAT_WAITING, jtail - jhead);
		event_active(ev_read, 0, 0);
	}
}

static void on_beat(evutil_socket_t fd, short what, void *arg)
{
	bt_proc_beat();
	if (bt_proc_stop) {
		event_base_loopbreak(base);
		return;
	}
	if (!vfy_db) {
		char path[PATH_MAX], sec[PATH_MAX];
		snprintf(path, sizeof path, "%s/db", bt_cfg.data_dir);
		snprintf(sec, sizeof sec, "%s/secondary/verify-%d", bt_cfg.data_dir, bt_proc.index);
		if (bt_db_open_secondary(path, sec, &vfy_db) == 0) {
			BT_INFO("reading account state from %s", path);
			event_active(ev_read, 0, 0);
		}
	}
	/* No periodic catch-up: replaying the store's WAL (every event) into our view cost a fifth
	   of verify's CPU.  This process is the only one deciding its DIDs, so after the start-up
	   sync its cache is authoritative; only an evicted DID reloads state (verify_cache.c). */
	identity_timeouts();
	out_wake(); /* a record committed by a callback without a turn end of its own */
	/* The bell is the fast path (run_loop); this is the safety net for a missed wakeup. */
	event_active(ev_read, 0, 0);
}

/* The event loop, and how it sleeps.  With nothing in flight but the input ring (no fetch, no
   overflowed verdict), the loop thread sleeps on the bell itself: ingest's futex wake is the
   one wakeup per batch.  (bt_bell_watch would add a thread, an eventfd write and read, an
   epoll wakeup and a handshake: three context switches per batch, most of verify's kernel
   time at a thousand frames a second.)  While a fetch is in flight its socket needs epoll,
   so the loop waits there instead, for at most RING_POLL_MS at a time, and looks at the
   bell after each wait.  Timers (beat, retries) run at the latest IDLE_WAIT_MS late. */
#define IDLE_WAIT_MS 20
#define RING_POLL_MS 1

static bool io_pending(void)
{
	return ovf_head || bt_fetch_inflight(fetch) || bt_fetch_inflight(fetch_web) ||
	       bt_fetch_inflight(fetch_web_public) || bt_fetch_inflight(fetch_local) || vfy_ident_inflight();
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static void run_loop(void)
{
	while (!bt_proc_stop) {
		uint32_t seen = bt_bell_value(bell);
		/* Ready callbacks, due timers and sockets, without blocking (read_input included:
		   it re-activates itself while the ring holds more than a turn). */
		if (event_base_loop(base, EVLOOP_NONBLOCK) < 0)
			break;
		if (event_base_got_break(base))
			break;
		if (bt_bell_value(bell) != seen) {
			event_active(ev_read, 0, 0);
			continue;
		}
		if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0)
			continue; /* activated by the last callbacks: run them first */
		if (io_pending()) {
			/* ev_tick bounds the epoll wait (a no-op callback). */
			event_add(ev_tick, &(struct timeval){ 0, RING_POLL_MS * 1000 });
			int rc = event_base_loop(base, EVLOOP_ONCE);
			event_del(ev_tick);
			if (rc < 0)
				break;
		} else {
			bt_bell_wait(bell, seen, IDLE_WAIT_MS);
		}
		if (bt_bell_value(bell) != seen)
			event_active(ev_read, 0, 0);
	}
}

int main(int argc, char **argv)
{
	bt_proc_init(BT_ROLE_VERIFY, argc, argv, "baton-verify: validates one partition of DIDs (started by baton)");
	in = bt_shm_ring(bt_proc.shm, bt_pipe_ring_in(bt_proc.index));
	out = bt_shm_ring(bt_proc.shm, bt_pipe_ring_out(bt_proc.K, bt_proc.index));
	rpos = bt_ring_tail(in); /* frames a predecessor read but did not answer come again */
	crash_check();
	base = event_base_new();
	struct bt_fetch_opts fo = { .max_conns = (int)bt_cfg.resolve_concurrency, .timeout_ms = 10000,
				    .max_body = 256 * 1024, .user_agent = bt_cfg.user_agent };
	fetch = bt_fetch_new(base, &fo);
	fo.public_only = !bt_cfg.allow_insecure_hosts;
	fetch_web = bt_fetch_new(base, &fo);
	fo.public_only = true;
	fetch_web_public = bt_fetch_new(base, &fo);
	fo.public_only = false;
	fetch_local = bt_fetch_new(base, &fo);
	if (!base || !fetch || !fetch_web || !fetch_web_public || !fetch_local)
		bt_die_config("cannot set up the event loop");
	vfy_cache_init((size_t)bt_cfg.identity_cache_size);
	vfy_ident_init(base);
	bt_car_init(&car, 0);
	ev_read = event_new(base, -1, 0, read_input, NULL);
	ev_retry = event_new(base, -1, 0, on_retry, NULL);
	ev_beat = event_new(base, -1, EV_PERSIST, on_beat, NULL);
	ev_tick = event_new(base, -1, 0, on_tick, NULL);
	event_add(ev_beat, &(struct timeval){ 0, 200000 });
	bell = bt_shm_bell(bt_proc.shm, bt_pipe_bell_verify(bt_proc.index));
	on_beat(-1, 0, NULL);
	event_active(ev_read, 0, 0); /* frames written before we started: no bell for them */
	run_loop();
	bt_fetch_free(&fetch);
	bt_fetch_free(&fetch_web);
	bt_fetch_free(&fetch_web_public);
	bt_fetch_free(&fetch_local);
	vfy_ident_free();
	event_free(ev_read);
	event_free(ev_retry);
	event_free(ev_beat);
	event_free(ev_tick);
	event_base_free(base);
	bt_car_free(&car);
	bt_buf_free(&enc);
	bt_buf_free(&unsig);
	bt_db_close(&vfy_db);
	bt_proc_exit(0);
}
