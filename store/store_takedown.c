/*
 * NAME
 *	store_takedown - account takedowns by the relay's operator, and the erasing of their events
 * DESCRIPTION
 *	takeDown {did} (indigo's /admin/repo/takeDown, forwarded by a fanout), in ONE batch: the
 *	account's state gets BT_ACCT_TAKENDOWN (shown inactive with status "takendown"; the
 *	upstream's active flag and status are kept underneath), a relay-made #account {active:
 *	false, status: "takendown"} is sequenced, "k/" did records that event's seq T, and the
 *	account leaves the collection index (store_coll.c; a reversal has it recounted).  From
 *	then on every event of the account is dropped (BT_DROP_TAKENDOWN; an upstream #account
 *	still updates the kept state).  indigo forwards a taken-down account's #identity and
 *	re-emits its #account; baton forwards neither, so nothing of the account follows T.
 *
 *	The account's events below T leave replay, which indigo does not do:
 *	  - at once: every fanout skips them, on the ring and from RocksDB
 *	    (fanout/fanout_takedown.c), having reloaded the k/ records when BT_STAT_TAKEDOWN_GEN
 *	    moved (the store moves it after the batch is written, before it answers);
 *	  - then for good: the store erases them from RocksDB, ERASE_STEP events per step between
 *	    turns (sto_td_step): each value becomes a bare header (did_len 0, frame_len 0), so the
 *	    seq stays (the replay window's start, and every consumer's cursor, keep their meaning)
 *	    while the frame and the DID are gone.  One pass over the window serves every takedown
 *	    not yet erased; a new takedown restarts the pass.  The pass position ("m/erase") is
 *	    written with each step's tombstones, so a killed store resumes where it was.
 *	The #account at T itself stays: a consumer replaying from 0 learns of the takedown.
 *
 *	reverseTakedown {did}: the flag goes and a relay-made #account with the state kept
 *	underneath is sequenced (active: true unless the PDS said otherwise, or the host's
 *	account limit throttles it).  k/ stays, without BT_TAKEDOWN_IN_FORCE: the events below T
 *	stay out of replay.  Both are idempotent and persisted; a restart changes nothing.
 * DIAGNOSTICS
 *	Replies {error: InvalidRequest} (not a DID), {error: AccountNotFound, status: 404} (a DID
 *	the relay never saw, as indigo), {error: StoreFailed}.
 */
#include "bt_ctl.h"
#include "bt_db.h"
#include "bt_did.h"
#include "bt_log.h"
#include "bt_proc.h"
#include "store.h"

#include <stdlib.h>
#include <string.h>

#define ERASE_STEP 1000   /* events read per step */
#define ERASE_JOBS 4096   /* takedowns one pass serves; the others wait for the next pass */

static struct bt_db *tdb;

/* The takedowns not erased yet, sorted by DID (RocksDB's key order) for bsearch. */
struct job {
	char did[BT_DID_MAX];
	uint16_t dn;
	uint64_t seq;
};
static struct job *jobs;
static size_t n_jobs;
static uint64_t jobs_max_seq;   /* the pass ends past the highest T */
static uint64_t erase_next;     /* next event seq the pass reads */
static uint64_t n_in_force;

static int load_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	(void)arg;
	struct bt_takedown_rec r;
	if (kn <= 2 || kn - 2 > BT_DID_MAX || vn != sizeof r)
		return 0;
	memcpy(&r, v, sizeof r);
	if (r.flags & BT_TAKEDOWN_IN_FORCE)
		n_in_force++;
	if (!(r.flags & BT_TAKEDOWN_ERASED) && n_jobs < ERASE_JOBS) {
		struct job *j = &jobs[n_jobs++];
		j->dn = (uint16_t)(kn - 2);
		memcpy(j->did, k + 2, j->dn);
		j->seq = r.seq;
		if (r.seq > jobs_max_seq)
			jobs_max_seq = r.seq;
	}
	return 0;
}

/* The k/ records again: the takedowns in force, and the ones the pass must erase. */
static void load(void)
{
	n_jobs = 0;
	jobs_max_seq = 0;
	n_in_force = 0;
	bt_db_scan(tdb, "k/", 2, "k/", 2, load_cb, NULL);
	bt_stat_set(bt_proc.stats, BT_STAT_TAKEDOWNS, n_in_force);
}

void sto_td_init(struct bt_db *db)
{
	tdb = db;
	jobs = calloc(ERASE_JOBS, sizeof *jobs);
	if (!jobs)
		bt_die_config("out of memory for the takedown eraser");
	uint8_t b[8];
	if (bt_db_get(db, "m/erase", 7, b, 8) == 8)
		erase_next = bt_be64_get(b);
	load();
	bt_stat_add(bt_proc.stats, BT_STAT_TAKEDOWN_GEN, 1); /* a restarted store: fanouts reload */
}

static int did_cmp(const char *a, size_t an, const char *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	return c ? c : (an > bn) - (an < bn);
}

static const struct job *job_find(const char *did, size_t dn)
{
	size_t lo = 0, hi = n_jobs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = did_cmp(jobs[mid].did, jobs[mid].dn, did, dn);
		if (c == 0)
			return &jobs[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

bool sto_td_verdict(const struct bt_rec_verdict *v)
{
	if (!v->did_len)
		return false;
	struct bt_acct_rec *a = sto_acct_get(tdb, v->did, v->did_len);
	if (!(a->flags & BT_ACCT_TAKENDOWN))
		return false;
	if (v->ev == BT_EV_ACCOUNT) {
		/* The upstream's state, shown again after a reversal. */
		a->flags = (v->flags & BT_V_ACTIVE) ? (a->flags | BT_ACCT_ACTIVE) : (a->flags & ~BT_ACCT_ACTIVE);
		a->status_len = (v->flags & BT_V_HAS_STATUS) ? v->status_len : 0;
		memcpy(a->status, v->status, a->status_len);
		a->updated_ms = bt_wall_ms();
	}
	return true;
}

/* One pass step: erases the jobs' events among the next ERASE_STEP, in one write with the new
   pass position; at the pass's end the jobs are marked erased (and the next ones loaded). */
struct erase_scan {
	struct bt_db_batch *b;
	unsigned n;
	uint64_t last, erased;
	bool end; /* reached jobs_max_seq */
};

static int erase_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct erase_scan *es = arg;
	struct bt_ev_hdr h;
	if (kn != 10 || vn < sizeof h)
		return 0;
	uint64_t seq = bt_be64_get((const uint8_t *)k + 2);
	if (seq >= jobs_max_seq) {
		es->end = true;
		return 1;
	}
	es->last = seq;
	memcpy(&h, v, sizeof h);
	if (h.did_len && h.did_len <= vn - sizeof h) {
		const struct job *j = job_find(v + sizeof h, h.did_len);
		if (j && seq < j->seq) {
			h.did_len = 0;
			h.frame_len = 0;
			bt_db_batch_put(es->b, k, kn, &h, sizeof h);
			es->erased++;
		}
	}
	return ++es->n >= ERASE_STEP;
}

bool sto_td_step(void)
{
	if (!n_jobs)
		return false;
	struct erase_scan es = { .b = bt_db_batch_new() };
	char from[10];
	bt_key_event(from, erase_next);
	int rc = bt_db_scan(tdb, from, sizeof from, "e/", 2, erase_cb, &es);
	if (rc < 0) {
		bt_db_batch_free(&es.b);
		return true; /* tried again next step */
	}
	bool done = es.end || es.n < ERASE_STEP; /* past the last T, or no more events */
	if (done) {
		for (size_t i = 0; i < n_jobs; i++) {
			char k[BT_DID_MAX + 2];
			size_t kn = bt_key_takedown(k, sizeof k, jobs[i].did, jobs[i].dn);
			struct bt_takedown_rec r;
			if (bt_db_get(tdb, k, kn, &r, sizeof r) != (int)sizeof r || r.seq != jobs[i].seq)
				continue;
			r.flags |= BT_TAKEDOWN_ERASED;
			bt_db_batch_put(es.b, k, kn, &r, sizeof r);
		}
	}
	uint64_t next = done ? 0 : es.last + 1; /* the next pass (if any) starts from the oldest */
	uint8_t nb[8];
	bt_be64_put(nb, next);
	bt_db_batch_put(es.b, "m/erase", 7, nb, 8);
	rc = bt_db_write(tdb, es.b);
	bt_db_batch_free(&es.b);
	if (rc < 0)
		return true;
	erase_next = next;
	bt_stat_add(bt_proc.stats, BT_STAT_TAKEDOWN_ERASED, es.erased);
	if (done) {
		BT_INFO("takedowns: erase pass done (%zu accounts)", n_jobs);
		load();
	}
	return n_jobs > 0;
}

/* The request's DID, or NULL (answered). */
static const char *req_did(struct bt_ctl_req *req, json_t *msg, size_t *dn)
{
	const char *did = json_string_value(json_object_get(msg, "did"));
	*dn = did ? strlen(did) : 0;
	if (!did || *dn > BT_DID_MAX || !bt_did_valid(did, *dn)) {
		bt_ctl_reply(req, json_pack("{s:s,s:s}", "error", "InvalidRequest", "message", "did is not a valid DID"));
		return NULL;
	}
	char k[BT_DID_MAX + 2];
	struct bt_acct_rec a;
	if (bt_db_get(tdb, k, bt_key_acct(k, sizeof k, did, *dn), &a, sizeof a) < 0) {
		/* the batch is written between turns: RocksDB holds every account the relay has */
		bt_ctl_reply(req, json_pack("{s:s,s:s,s:i}", "error", "AccountNotFound", "message", "account not found",
					    "status", 404));
		return NULL;
	}
	return did;
}

static void take_down(struct bt_ctl_req *req, json_t *msg)
{
	size_t dn;
	const char *did = req_did(req, msg, &dn);
	if (!did)
		return;
	struct bt_acct_rec *a = sto_acct_get(tdb, did, dn);
	char k[BT_DID_MAX + 2];
	size_t kn = bt_key_takedown(k, sizeof k, did, dn);
	struct bt_takedown_rec r = { 0 };
	bt_db_get(tdb, k, kn, &r, sizeof r);
	bool existed = a->flags & BT_ACCT_TAKENDOWN;
	if (!existed) {
		uint64_t seq = sto_emit_account(did, dn, false, "takendown", 9);
		if (!seq) {
			bt_ctl_reply(req, json_pack("{s:s,s:i}", "error", "StoreFailed", "status", 500));
			return;
		}
		a->flags |= BT_ACCT_TAKENDOWN;
		a->last_seq = seq;
		a->updated_ms = bt_wall_ms();
		r = (struct bt_takedown_rec){ .version = 1, .flags = BT_TAKEDOWN_IN_FORCE, .seq = seq,
					      .time_ms = bt_wall_ms(), .reversed_ms = r.reversed_ms };
		struct bt_db_batch *b = sto_batch();
		bt_db_batch_put(b, k, kn, &r, sizeof r);
		sto_coll_drop_account(did, dn, b); /* out of listReposByCollection (store_coll.c) */
		uint8_t zero[8] = { 0 };
		bt_db_batch_put(b, "m/erase", 7, zero, 8); /* a new pass, from the oldest event */
		sto_write_now();
		erase_next = 0;
		load();
		bt_stat_add(bt_proc.stats, BT_STAT_TAKEDOWN_GEN, 1);
		BT_INFO("%.*s: taken down at seq %llu", (int)dn, did, (unsigned long long)seq);
	}
	bt_ctl_reply(req, json_pack("{s:b,s:I,s:b}", "ok", 1, "seq", (json_int_t)r.seq, "existed", existed));
}

static void reverse(struct bt_ctl_req *req, json_t *msg)
{
	size_t dn;
	const char *did = req_did(req, msg, &dn);
	if (!did)
		return;
	struct bt_acct_rec *a = sto_acct_get(tdb, did, dn);
	bool was = a->flags & BT_ACCT_TAKENDOWN;
	uint64_t seq = 0;
	if (was) {
		bool throttled = a->flags & BT_ACCT_THROTTLED;
		bool active = (a->flags & BT_ACCT_ACTIVE) && !throttled;
		seq = throttled ? sto_emit_account(did, dn, false, "throttled", 9)
				: sto_emit_account(did, dn, active, a->status, a->status_len);
		if (!seq) {
			bt_ctl_reply(req, json_pack("{s:s,s:i}", "error", "StoreFailed", "status", 500));
			return;
		}
		a->flags &= ~BT_ACCT_TAKENDOWN;
		a->last_seq = seq;
		a->updated_ms = bt_wall_ms();
		char k[BT_DID_MAX + 2];
		size_t kn = bt_key_takedown(k, sizeof k, did, dn);
		struct bt_takedown_rec r;
		if (bt_db_get(tdb, k, kn, &r, sizeof r) == (int)sizeof r) {
			r.flags &= ~BT_TAKEDOWN_IN_FORCE;
			r.reversed_ms = bt_wall_ms();
			bt_db_batch_put(sto_batch(), k, kn, &r, sizeof r);
		}
		/* its records are unknown since the takedown dropped its commits: counted again */
		sto_coll_mark_recount(did, dn, seq, sto_batch());
		sto_write_now();
		load();
		bt_stat_add(bt_proc.stats, BT_STAT_TAKEDOWN_GEN, 1);
		BT_INFO("%.*s: takedown reversed at seq %llu", (int)dn, did, (unsigned long long)seq);
	}
	bt_ctl_reply(req, json_pack("{s:b,s:I,s:b}", "ok", 1, "seq", (json_int_t)seq, "existed", was));
}

bool sto_td_ctl(struct bt_ctl_req *req, const char *op, json_t *msg)
{
	if (!strcmp(op, "takeDown"))
		take_down(req, msg);
	else if (!strcmp(op, "reverseTakedown"))
		reverse(req, msg);
	else
		return false;
	return true;
}
