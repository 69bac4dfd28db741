/*
 * NAME
 *	store_coll - the collection index: which accounts hold records of which collection
 * DESCRIPTION
 *	Kept by the store from the ops of every accepted #commit, for the fanouts'
 *	com.atproto.sync.listReposByCollection and /v1/listCollections (fanout_coll.c).  Keys
 *	(common/bt_db.h):
 *
 *	  "y/" did \0 coll   be64 records of coll the account holds (absent = 0)
 *	  "x/" coll \0 did   empty: the account holds coll (a page = a prefix scan, DID order)
 *	  "y/" \0 coll       be64 accounts holding coll
 *	  "w/" did           struct recount_key: the account's counts are unknown (a #sync)
 *
 *	Counting: create +1, delete -1 (never below 0), update 0.  A count going 0 -> 1 adds the
 *	x/ key and one account to the collection; 1 -> 0 deletes both keys and takes the account
 *	off.  An accepted #account deleted removes every count of the account (so does
 *	sto_coll_drop_account, for takedowns).  The counts of one batch are kept in a pending
 *	map (the batch is not readable before it is written, and several commits of a batch
 *	may touch one key), loaded from RocksDB on first use and written by sto_coll_flush()
 *	into the batch.
 *
 *	A #sync replaces the repo: its counts are unknown, so the account is marked for a
 *	recount ("w/" did, in the batch of the #sync).  sto_coll_tick(), between the store's
 *	turns, hands at most COLL_INFLIGHT marked accounts at a time (a new one at most every
 *	COLL_START_MS) to one fetch thread, which GETs com.atproto.sync.getRepo from the
 *	account's host (bounded body and time), parses the CAR, walks the MST and counts the
 *	records per collection; it writes nothing.  Its result comes back through a locked
 *	list; the tick applies it in a batch of its own (all the account's counts replaced,
 *	the mark deleted) only if the repo's rev is the one the store last committed for the
 *	account (otherwise a commit the relay has or has not yet seen would count twice or
 *	never), and the mark is still the one it fetched for.  A failed fetch or another rev
 *	is tried again with backoff, at most COLL_TRIES times; a repo too big is given up.
 *	Only the store's loop thread touches RocksDB and the pending map.
 * DIAGNOSTICS
 *	Malformed ops and collections that are not NSIDs are skipped.  Recount failures are
 *	logged (rate-limited); a recount given up leaves the counts as they were.
 */
#include "bt_car.h"
#include "bt_cbor.h"
#include "bt_commit.h"
#include "bt_db.h"
#include "bt_fetch.h"
#include "bt_fh.h"
#include "bt_log.h"
#include "bt_mst.h"
#include "bt_params.h"
#include "bt_syntax.h"
#include "store.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COLL_MAX 317            /* NSID length limit */
#define COLL_INFLIGHT 4         /* recounts fetching at once */
#define COLL_START_MS 100       /* at most one new recount started this often */
#define COLL_TRIES 8            /* fetches of one recount before it is given up */
#define COLL_SCAN 64            /* "w/" keys looked at per tick */
#define COLL_REPO_MAX (64u << 20) /* getRepo body */
#define COLL_TIMEOUT_MS 60000
#define COLL_REPO_COLLS 4096    /* distinct collections in one fetched repo */
#define KEY_MAX (2 + BT_DID_MAX + 1 + COLL_MAX + 1)

static struct bt_db *db;
static struct sto_hosts *hosts;

/* ---- the pending map: the batch's counts, by RocksDB "y/" key ---- */

enum { E_ACCT, E_TOTAL, E_HEAD };
struct pent {
	uint32_t koff, klen; /* key bytes in keys */
	uint16_t dlen;       /* E_ACCT: DID length */
	uint8_t kind;
	uint32_t next;       /* E_ACCT: next entry of the same DID + 1; E_HEAD: first + 1 */
	uint64_t cnt, orig;  /* now; as last written (x/ exists iff orig > 0) */
};
static struct pent *ents;
static size_t n_ents, cap_ents;
static uint32_t *slots; /* entry index + 1, 0 empty; power of two */
static size_t n_slots;
static struct bt_buf keys;
static bool load_failed; /* a RocksDB read error: logged once per batch */

static uint64_t hash(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

static bool grow(void)
{
	if (n_ents + 1 > cap_ents) {
		size_t c = cap_ents ? cap_ents * 2 : 1024;
		struct pent *e = realloc(ents, c * sizeof *e);
		if (!e)
			return false;
		ents = e;
		cap_ents = c;
	}
	if ((n_ents + 1) * 2 > n_slots) {
		size_t ns = n_slots ? n_slots * 2 : 2048;
		uint32_t *s = calloc(ns, sizeof *s);
		if (!s)
			return false;
		for (size_t i = 0; i < n_ents; i++) {
			size_t j = hash(keys.p + ents[i].koff, ents[i].klen) & (ns - 1);
			while (s[j])
				j = (j + 1) & (ns - 1);
			s[j] = (uint32_t)i + 1;
		}
		free(slots);
		slots = s;
		n_slots = ns;
	}
	return true;
}

static uint64_t db_count(const char *k, size_t kn)
{
	uint8_t v[8];
	int n = bt_db_get(db, k, kn, v, sizeof v);
	if (n == 8)
		return bt_be64_get(v);
	if (n != -ENOENT && !load_failed) {
		load_failed = true;
		BT_LOG_EVERY(BT_LOG_ERROR, "collection index: read of a count failed (%d): counted from 0", n);
	}
	return 0;
}

/* The entry of key k (loaded from RocksDB on a miss), or NULL when out of memory. */
static struct pent *get_ent(const char *k, size_t kn, uint8_t kind, size_t dlen)
{
	if (n_slots) {
		size_t j = hash(k, kn) & (n_slots - 1);
		for (; slots[j]; j = (j + 1) & (n_slots - 1)) {
			struct pent *e = &ents[slots[j] - 1];
			if (e->klen == kn && !memcmp(keys.p + e->koff, k, kn))
				return e;
		}
	}
	if (!grow() || bt_buf_append(&keys, k, kn) < 0) {
		BT_LOG_EVERY(BT_LOG_ERROR, "collection index: out of memory");
		return NULL;
	}
	struct pent *e = &ents[n_ents];
	*e = (struct pent){ .koff = (uint32_t)(keys.len - kn), .klen = (uint32_t)kn, .dlen = (uint16_t)dlen,
			    .kind = kind };
	e->cnt = e->orig = kind == E_HEAD ? 0 : db_count(k, kn);
	size_t j = hash(k, kn) & (n_slots - 1);
	while (slots[j])
		j = (j + 1) & (n_slots - 1);
	slots[j] = (uint32_t)++n_ents;
	return e;
}

static void pend_reset(void)
{
	n_ents = 0;
	if (slots)
		memset(slots, 0, n_slots * sizeof *slots);
	bt_buf_reset(&keys);
	load_failed = false;
}

/* "y/" did \0 coll into k: the length, or 0 if too long. */
static size_t acct_key(char *k, const char *did, size_t dn, const char *coll, size_t cn)
{
	if (dn == 0 || dn > BT_DID_MAX || cn > COLL_MAX)
		return 0;
	memcpy(k, "y/", 2);
	memcpy(k + 2, did, dn);
	k[2 + dn] = 0;
	memcpy(k + 3 + dn, coll, cn);
	return 3 + dn + cn;
}

/* The account's entry for coll, chained to the DID's head (so a drop finds it). */
static struct pent *acct_ent(const char *did, size_t dn, const char *coll, size_t cn)
{
	char k[KEY_MAX];
	size_t kn = acct_key(k, did, dn, coll, cn);
	if (!kn)
		return NULL;
	size_t had = n_ents;
	struct pent *e = get_ent(k, kn, E_ACCT, dn);
	if (!e || n_ents == had)
		return e;
	uint32_t idx = (uint32_t)(e - ents);
	struct pent *h = get_ent(k, 2 + dn, E_HEAD, dn); /* "y/" did: never written */
	if (!h)
		return &ents[idx];
	ents[idx].next = h->next;
	h->next = idx + 1;
	return &ents[idx];
}

/* Sets an account's count of a collection, keeping the collection's account count. */
static void set_count(struct pent *e, uint64_t v)
{
	uint64_t old = e->cnt;
	e->cnt = v;
	if ((old == 0) == (v == 0))
		return;
	char k[KEY_MAX];
	size_t cn = e->klen - 3 - e->dlen;
	memcpy(k, "y/", 2);
	k[2] = 0;
	memcpy(k + 3, keys.p + e->koff + 3 + e->dlen, cn);
	struct pent *t = get_ent(k, 3 + cn, E_TOTAL, 0); /* may move ents: e is stale after it */
	if (!t)
		return;
	if (v)
		t->cnt++;
	else if (t->cnt)
		t->cnt--;
}

static void add_count(const char *did, size_t dn, const char *coll, size_t cn, int d)
{
	struct pent *e = acct_ent(did, dn, coll, cn);
	if (!e)
		return;
	uint64_t v = e->cnt;
	if (d > 0)
		v++;
	else if (d < 0 && v)
		v--;
	set_count(e, v);
}

struct drop_scan {
	const char *did;
	size_t dn;
};

static int drop_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct drop_scan *ds = arg;
	if (kn <= 3 + ds->dn)
		return 0;
	struct pent *e = acct_ent(ds->did, ds->dn, k + 3 + ds->dn, kn - 3 - ds->dn);
	if (e)
		set_count(e, 0);
	return 0;
}

/* Every count of the account to 0, in the pending map. */
static void drop_pending(const char *did, size_t dn)
{
	if (dn == 0 || dn > BT_DID_MAX)
		return;
	char p[BT_DID_MAX + 3];
	memcpy(p, "y/", 2);
	memcpy(p + 2, did, dn);
	p[2 + dn] = 0;
	struct drop_scan ds = { did, dn };
	bt_db_scan(db, p, 3 + dn, p, 3 + dn, drop_cb, &ds);
	/* ... and those only the batch has (created in it, or loaded by the scan above) */
	struct pent *h = get_ent(p, 2 + dn, E_HEAD, dn);
	for (uint32_t i = h ? h->next : 0; i; i = ents[i - 1].next)
		set_count(&ents[i - 1], 0);
}

static void write_pending(struct bt_db_batch *b)
{
	for (size_t i = 0; i < n_ents; i++) {
		struct pent *e = &ents[i];
		const char *k = (const char *)keys.p + e->koff;
		if (e->kind == E_HEAD)
			continue;
		if (e->kind == E_TOTAL) {
			if (e->cnt == e->orig)
				continue;
			if (e->cnt) {
				uint8_t v[8];
				bt_be64_put(v, e->cnt);
				bt_db_batch_put(b, k, e->klen, v, 8);
			} else {
				bt_db_batch_del(b, k, e->klen);
			}
			e->orig = e->cnt;
			continue;
		}
		if (e->cnt == e->orig)
			continue;
		/* "x/" coll \0 did */
		char x[KEY_MAX];
		size_t cn = e->klen - 3 - e->dlen;
		memcpy(x, "x/", 2);
		memcpy(x + 2, k + 3 + e->dlen, cn);
		x[2 + cn] = 0;
		memcpy(x + 3 + cn, k + 2, e->dlen);
		size_t xn = 3 + cn + e->dlen;
		if (e->cnt) {
			uint8_t v[8];
			bt_be64_put(v, e->cnt);
			bt_db_batch_put(b, k, e->klen, v, 8);
			if (!e->orig)
				bt_db_batch_put(b, x, xn, "", 0);
		} else {
			bt_db_batch_del(b, k, e->klen);
			bt_db_batch_del(b, x, xn);
		}
		e->orig = e->cnt;
	}
}

/* ---- the recount mark ("w/" did) ---- */

struct recount_key {
	uint8_t gen[8];   /* be64: the relay seq of the #sync (a newer #sync supersedes a fetch) */
	uint8_t tries[4]; /* be32 fetches done */
	uint8_t due[8];   /* be64 wall-clock ms before which it is not fetched again */
	uint8_t pad[4];
};
_Static_assert(sizeof(struct recount_key) == 24, "recount_key layout");

static size_t mark_key(char *k, const char *did, size_t dn)
{
	memcpy(k, "w/", 2);
	memcpy(k + 2, did, dn);
	return 2 + dn;
}

static void mark_put(struct bt_db_batch *b, const char *did, size_t dn, uint64_t gen, uint32_t tries, uint64_t due)
{
	struct recount_key r;
	memset(&r, 0, sizeof r);
	bt_be64_put(r.gen, gen);
	r.tries[0] = (uint8_t)(tries >> 24);
	r.tries[1] = (uint8_t)(tries >> 16);
	r.tries[2] = (uint8_t)(tries >> 8);
	r.tries[3] = (uint8_t)tries;
	bt_be64_put(r.due, due);
	char k[BT_DID_MAX + 2];
	bt_db_batch_put(b, k, mark_key(k, did, dn), &r, sizeof r);
}

static bool mark_get(const char *did, size_t dn, uint64_t *gen, uint32_t *tries, uint64_t *due)
{
	struct recount_key r;
	char k[BT_DID_MAX + 2];
	if (bt_db_get(db, k, mark_key(k, did, dn), &r, sizeof r) != (int)sizeof r)
		return false;
	*gen = bt_be64_get(r.gen);
	*tries = (uint32_t)r.tries[0] << 24 | (uint32_t)r.tries[1] << 16 | (uint32_t)r.tries[2] << 8 | r.tries[3];
	*due = bt_be64_get(r.due);
	return true;
}

/* ---- the hooks ---- */

static struct bt_fh_msg msg; /* big: one, reused */

/* The collection of an op path "coll/rkey": its length, 0 if it has none that is an NSID. */
static size_t path_coll(const uint8_t *p, size_t n)
{
	const uint8_t *s = memchr(p, '/', n);
	size_t cn = s ? (size_t)(s - p) : 0;
	if (!cn || cn > COLL_MAX || !bt_syntax_nsid((const char *)p, cn))
		return 0;
	return cn;
}

void sto_coll_verdict(const struct bt_rec_verdict *v, const uint8_t *frame, size_t n, uint64_t seq,
		      struct bt_db_batch *b)
{
	if (v->ev == BT_EV_ACCOUNT) {
		if (!(v->flags & BT_V_ACTIVE) && (v->flags & BT_V_HAS_STATUS) && v->status_len == 7 &&
		    !memcmp(v->status, "deleted", 7)) {
			drop_pending(v->did, v->did_len);
			char k[BT_DID_MAX + 2];
			bt_db_batch_del(b, k, mark_key(k, v->did, v->did_len)); /* nothing left to recount */
		}
		return;
	}
	if (v->ev == BT_EV_SYNC) {
		if (v->did_len && v->did_len <= BT_DID_MAX)
			mark_put(b, v->did, v->did_len, seq, 0, 0);
		return;
	}
	if (v->ev != BT_EV_COMMIT)
		return;
	const char *why = NULL;
	if (bt_fh_decode(frame, n, &msg, &why) < 0 || msg.type != BT_FH_COMMIT) {
		BT_LOG_EVERY(BT_LOG_WARN, "collection index: commit of %.*s does not decode (%s)", (int)v->did_len,
			     v->did, why ? why : "?");
		return;
	}
	for (size_t i = 0; i < msg.n_ops; i++) {
		const struct bt_fh_op *op = &msg.ops[i];
		size_t cn = path_coll(op->path.p, op->path.n);
		if (!cn)
			continue;
		int d = bt_bytes_eq_str(op->action, "create") ? 1 : bt_bytes_eq_str(op->action, "delete") ? -1 : 0;
		if (d)
			add_count(v->did, v->did_len, (const char *)op->path.p, cn, d);
	}
}

void sto_coll_flush(struct bt_db_batch *b)
{
	write_pending(b);
	pend_reset();
}

void sto_coll_drop_account(const char *did, size_t dn, struct bt_db_batch *b)
{
	drop_pending(did, dn);
	write_pending(b);
	if (dn && dn <= BT_DID_MAX) {
		char k[BT_DID_MAX + 2];
		bt_db_batch_del(b, k, mark_key(k, did, dn));
	}
}

void sto_coll_mark_recount(const char *did, size_t dn, uint64_t seq, struct bt_db_batch *b)
{
	if (dn && dn <= BT_DID_MAX)
		mark_put(b, did, dn, seq, 0, 0);
}

void sto_coll_replace(const char *did, size_t dn, const char *const *colls, const uint64_t *counts, size_t n,
		      struct bt_db_batch *b)
{
	drop_pending(did, dn);
	for (size_t i = 0; i < n; i++) {
		struct pent *e = acct_ent(did, dn, colls[i], strlen(colls[i]));
		if (e)
			set_count(e, counts[i]);
	}
	write_pending(b);
	if (dn && dn <= BT_DID_MAX) {
		char k[BT_DID_MAX + 2];
		bt_db_batch_del(b, k, mark_key(k, did, dn));
	}
}

/* ---- the fetch thread ---- */

struct coll_n {
	char name[COLL_MAX + 1];
	uint64_t n;
};

struct job {
	struct job *next;
	char did[BT_DID_MAX + 1];
	size_t dn;
	uint64_t gen;
	bool local;
	char url[BT_HOST_MAX + BT_DID_MAX + 96];
	/* result */
	int status;          /* HTTP status or <0; 200 and rc 0: counted */
	int rc;              /* parse/walk result */
	const char *why;
	char rev[BT_REV_MAX + 1];
	struct coll_n *colls;
	size_t n_colls;
};

static pthread_t thr;
static bool thr_started;
static int req_pipe[2] = { -1, -1 };
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static struct job *done_head;
static struct job *inflight[COLL_INFLIGHT];
static struct event_base *tbase;
static struct bt_fetch *f_public, *f_local;
static struct bt_car tcar; /* the thread's CAR reader */

struct walk {
	const struct bt_car *car;
	struct job *j;
	size_t visits, max_visits;
	size_t last; /* index of the last collection hit */
};

static int count_key(struct walk *w, const uint8_t *k, size_t kn)
{
	size_t cn = path_coll(k, kn);
	if (!cn)
		return 0;
	struct job *j = w->j;
	if (w->last < j->n_colls && strlen(j->colls[w->last].name) == cn && !memcmp(j->colls[w->last].name, k, cn)) {
		j->colls[w->last].n++;
		return 0;
	}
	for (size_t i = 0; i < j->n_colls; i++)
		if (strlen(j->colls[i].name) == cn && !memcmp(j->colls[i].name, k, cn)) {
			j->colls[i].n++;
			w->last = i;
			return 0;
		}
	if (j->n_colls >= COLL_REPO_COLLS)
		return -E2BIG;
	if (j->n_colls % 64 == 0) {
		struct coll_n *c = realloc(j->colls, (j->n_colls + 64) * sizeof *c);
		if (!c)
			return -ENOMEM;
		j->colls = c;
	}
	memcpy(j->colls[j->n_colls].name, k, cn);
	j->colls[j->n_colls].name[cn] = 0;
	j->colls[j->n_colls].n = 1;
	w->last = j->n_colls++;
	return 0;
}

static int rd_key(struct bt_cbor_rd *r, char want)
{
	struct bt_cbor_item it;
	if (bt_cbor_next(r, &it) || it.type != BT_CBOR_TEXT || it.n != 1 || it.p[0] != (uint8_t)want)
		return -EBADMSG;
	return 0;
}

/* Counts every key of the subtree at cid (depth bounded by the key heights, visits by the
   CAR's blocks: a node shared by many parents cannot make the walk explode). */
static int walk(struct walk *w, const struct bt_cid *cid, int depth)
{
	if (depth > 130 || ++w->visits > w->max_visits)
		return -EBADMSG;
	const struct bt_car_block *blk = bt_car_get(w->car, cid);
	if (!blk)
		return -ENOENT;
	struct bt_cbor_rd r;
	struct bt_cbor_item it;
	bt_cbor_rd_init(&r, blk->data, blk->len);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP || it.n != 2 || rd_key(&r, 'e') || bt_cbor_next(&r, &it) ||
	    it.type != BT_CBOR_ARRAY)
		return -EBADMSG;
	size_t n = it.n;
	uint8_t key[BT_MST_MAX_KEY];
	size_t kn = 0;
	for (size_t i = 0; i < n; i++) {
		struct bt_cbor_item kb, pv;
		struct bt_cid t, val;
		bool has_t;
		if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP || it.n != 4 || rd_key(&r, 'k') ||
		    bt_cbor_next(&r, &kb) || kb.type != BT_CBOR_BYTES || rd_key(&r, 'p') || bt_cbor_next(&r, &pv) ||
		    pv.type != BT_CBOR_UINT || pv.u > kn || pv.u + kb.n > BT_MST_MAX_KEY || rd_key(&r, 't') ||
		    bt_cbor_read_cid_or_null(&r, &t, &has_t) || rd_key(&r, 'v') || bt_cbor_read_cid(&r, &val))
			return -EBADMSG;
		if (kb.n)
			memcpy(key + pv.u, kb.p, kb.n);
		kn = (size_t)pv.u + kb.n;
		int rc = count_key(w, key, kn);
		if (rc == 0 && has_t)
			rc = walk(w, &t, depth + 1);
		if (rc)
			return rc;
	}
	struct bt_cid l;
	bool has_l;
	if (rd_key(&r, 'l') || bt_cbor_read_cid_or_null(&r, &l, &has_l))
		return -EBADMSG;
	return has_l ? walk(w, &l, depth + 1) : 0;
}

/* The CAR of a whole repo: rev and counts into j. */
static int count_repo(struct job *j, const uint8_t *p, size_t n)
{
	int rc = bt_car_parse(&tcar, p, n, &j->why);
	if (rc < 0)
		return rc;
	const struct bt_car_block *cb = bt_car_get(&tcar, &tcar.root);
	if (!cb) {
		j->why = "no commit block";
		return -ENOENT;
	}
	struct bt_commit c;
	if ((rc = bt_commit_decode(cb->data, cb->len, &c, &j->why)) < 0)
		return rc;
	if (c.rev.n > BT_REV_MAX || c.did.n != j->dn || memcmp(c.did.p, j->did, j->dn)) {
		j->why = "commit of another repo";
		return -EBADMSG;
	}
	memcpy(j->rev, c.rev.p, c.rev.n);
	j->rev[c.rev.n] = 0;
	struct walk w = { .car = &tcar, .j = j, .max_visits = tcar.n_blocks };
	rc = walk(&w, &c.data, 0);
	if (rc < 0 && !j->why)
		j->why = rc == -ENOENT ? "missing mst block" : rc == -E2BIG ? "too many collections" : "bad mst node";
	return rc;
}

static void job_done(struct job *j)
{
	pthread_mutex_lock(&done_mu);
	j->next = done_head;
	done_head = j;
	pthread_mutex_unlock(&done_mu);
}

static void on_repo(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct job *j = arg;
	j->status = status;
	if (status == 200)
		j->rc = count_repo(j, (const uint8_t *)body, len);
	job_done(j);
}

static void on_req(evutil_socket_t fd, short what, void *arg)
{
	struct job *j;
	while (read(fd, &j, sizeof j) == (ssize_t)sizeof j) {
		if (!j) {
			event_base_loopbreak(tbase);
			return;
		}
		if (bt_fetch_get(j->local ? f_local : f_public, j->url, on_repo, j) < 0) {
			j->status = -EIO;
			job_done(j);
		}
	}
}

static void *thread_main(void *arg)
{
	struct event *ev = event_new(tbase, req_pipe[0], EV_READ | EV_PERSIST, on_req, NULL);
	if (ev && event_add(ev, NULL) == 0)
		event_base_dispatch(tbase);
	bt_fetch_free(&f_public); /* callbacks of what is in flight run now, -ECANCELED */
	bt_fetch_free(&f_local);
	if (ev)
		event_free(ev);
	bt_car_free(&tcar);
	return NULL;
}

/* ---- the tick: start recounts, apply their results ---- */

static uint64_t next_start_ms;
static char scan_from[BT_DID_MAX + 2]; /* "w/" key to scan on from */
static size_t scan_from_n;

static bool is_inflight(const char *did, size_t dn)
{
	for (int i = 0; i < COLL_INFLIGHT; i++)
		if (inflight[i] && inflight[i]->dn == dn && !memcmp(inflight[i]->did, did, dn))
			return true;
	return false;
}

static uint64_t backoff_ms(uint32_t tries)
{
	uint64_t ms = 1000u << (tries < 9 ? tries : 9);
	return ms > 300000 ? 300000 : ms;
}

static void write_own(struct bt_db_batch *b)
{
	if (bt_db_batch_count(b) && bt_db_write(db, b) < 0)
		BT_LOG_EVERY(BT_LOG_ERROR, "collection index: recount write failed");
}

static void apply(struct job *j)
{
	uint64_t gen, due;
	uint32_t tries;
	if (!mark_get(j->did, j->dn, &gen, &tries, &due) || gen != j->gen)
		return; /* the account was deleted, or a newer #sync asks again */
	struct bt_db_batch *b = bt_db_batch_new();
	tries++;
	bool ok = j->status == 200 && j->rc == 0;
	bool rev_ok = false;
	if (ok) {
		struct bt_acct_rec a;
		char k[BT_DID_MAX + 2];
		if (bt_db_get(db, k, bt_key_acct(k, sizeof k, j->did, j->dn), &a, sizeof a) == (int)sizeof a &&
		    a.rev_len <= BT_REV_MAX)
			rev_ok = strlen(j->rev) == a.rev_len && !memcmp(j->rev, a.rev, a.rev_len);
	}
	if (ok && (rev_ok || tries >= COLL_TRIES)) {
		const char *names[COLL_REPO_COLLS];
		uint64_t counts[COLL_REPO_COLLS];
		for (size_t i = 0; i < j->n_colls; i++) {
			names[i] = j->colls[i].name;
			counts[i] = j->colls[i].n;
		}
		sto_coll_replace(j->did, j->dn, names, counts, j->n_colls, b);
		pend_reset();
		if (!rev_ok)
			BT_LOG_EVERY(BT_LOG_WARN, "recount of %s: rev %s still not the relay's after %u fetches: applied",
				     j->did, j->rev, tries);
	} else if (j->status == -EFBIG || tries >= COLL_TRIES) {
		BT_LOG_EVERY(BT_LOG_WARN, "recount of %s given up after %u fetches (%d%s%s)", j->did, tries,
			     j->status == 200 ? j->rc : j->status, j->why ? ": " : "", j->why ? j->why : "");
		char k[BT_DID_MAX + 2];
		bt_db_batch_del(b, k, mark_key(k, j->did, j->dn));
	} else {
		if (!ok)
			BT_LOG_EVERY(BT_LOG_INFO, "recount of %s: fetch failed (%d%s%s); retrying", j->did,
				     j->status == 200 ? j->rc : j->status, j->why ? ": " : "", j->why ? j->why : "");
		mark_put(b, j->did, j->dn, gen, tries, bt_wall_ms() + (ok ? 500u : backoff_ms(tries)));
	}
	write_own(b);
	bt_db_batch_free(&b);
}

struct pick {
	uint64_t now;
	char did[BT_DID_MAX + 1];
	size_t dn;
	uint64_t gen;
	unsigned seen;
	char last[BT_DID_MAX + 2];
	size_t last_n;
	bool found;
};

static int pick_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct pick *p = arg;
	if (kn == scan_from_n && !memcmp(k, scan_from, kn))
		return 0;
	if (++p->seen > COLL_SCAN)
		return 1;
	if (kn > sizeof p->last)
		return 0;
	memcpy(p->last, k, kn);
	p->last_n = kn;
	struct recount_key r;
	size_t dn = kn - 2;
	if (vn != sizeof r || dn == 0 || dn > BT_DID_MAX || is_inflight(k + 2, dn))
		return 0;
	memcpy(&r, v, sizeof r);
	if (bt_be64_get(r.due) > p->now)
		return 0;
	memcpy(p->did, k + 2, dn);
	p->did[dn] = 0;
	p->dn = dn;
	p->gen = bt_be64_get(r.gen);
	p->found = true;
	return 1;
}

/* Starts the next due recount, if a slot is free. */
static void start_one(void)
{
	int slot = -1;
	for (int i = 0; i < COLL_INFLIGHT && slot < 0; i++)
		if (!inflight[i])
			slot = i;
	if (slot < 0)
		return;
	struct pick p = { .now = bt_wall_ms() };
	if (!scan_from_n) {
		memcpy(scan_from, "w/", 2);
		scan_from_n = 2;
	}
	bt_db_scan(db, scan_from, scan_from_n, "w/", 2, pick_cb, &p);
	if (p.last_n) {
		memcpy(scan_from, p.last, p.last_n);
		scan_from_n = p.last_n;
	}
	if (p.seen <= COLL_SCAN && !p.found)
		scan_from_n = 0; /* reached the end: from the start next time */
	if (!p.found)
		return;
	struct bt_acct_rec a;
	char k[BT_DID_MAX + 2];
	struct sto_host *h = NULL;
	if (bt_db_get(db, k, bt_key_acct(k, sizeof k, p.did, p.dn), &a, sizeof a) == (int)sizeof a)
		h = sto_host_get(hosts, a.host_id);
	bool local = h && h->rec.host_len > 10 && !memcmp(h->rec.host, "localhost:", 10);
	if (!h || !h->rec.host_len || h->rec.host_len >= BT_HOST_MAX || (local && !bt_cfg.allow_insecure_hosts)) {
		struct bt_db_batch *b = bt_db_batch_new();
		bt_db_batch_del(b, k, mark_key(k, p.did, p.dn)); /* no host to ask */
		write_own(b);
		bt_db_batch_free(&b);
		return;
	}
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		return;
	memcpy(j->did, p.did, p.dn + 1);
	j->dn = p.dn;
	j->gen = p.gen;
	j->local = local;
	/* DIDs are [a-zA-Z0-9._:%-]: nothing to escape in a query */
	snprintf(j->url, sizeof j->url, "%s%.*s/xrpc/com.atproto.sync.getRepo?did=%s",
		 local ? "http://127.0.0.1:" : "https://", local ? (int)h->rec.host_len - 10 : (int)h->rec.host_len,
		 local ? h->rec.host + 10 : h->rec.host, j->did);
	if (write(req_pipe[1], &j, sizeof j) != (ssize_t)sizeof j) {
		free(j);
		return;
	}
	inflight[slot] = j;
}

static void job_free(struct job *j)
{
	free(j->colls);
	free(j);
}

void sto_coll_tick(void)
{
	if (!thr_started)
		return;
	pthread_mutex_lock(&done_mu);
	struct job *d = done_head;
	done_head = NULL;
	pthread_mutex_unlock(&done_mu);
	while (d) {
		struct job *nx = d->next;
		for (int i = 0; i < COLL_INFLIGHT; i++)
			if (inflight[i] == d)
				inflight[i] = NULL;
		apply(d);
		job_free(d);
		d = nx;
	}
	uint64_t now = bt_now_ms();
	if (now >= next_start_ms) {
		next_start_ms = now + COLL_START_MS;
		start_one();
	}
}

int sto_coll_init(struct bt_db *d, struct sto_hosts *hs, bool recount)
{
	db = d;
	hosts = hs;
	if (!recount)
		return 0;
	if (pipe2(req_pipe, O_CLOEXEC) < 0)
		return -errno;
	fcntl(req_pipe[0], F_SETFL, fcntl(req_pipe[0], F_GETFL) | O_NONBLOCK);
	tbase = event_base_new();
	struct bt_fetch_opts fo = { .max_conns = COLL_INFLIGHT, .timeout_ms = COLL_TIMEOUT_MS,
				    .max_body = COLL_REPO_MAX, .user_agent = bt_cfg.user_agent, .public_only = true };
	f_public = tbase ? bt_fetch_new(tbase, &fo) : NULL;
	fo.public_only = false;
	f_local = tbase ? bt_fetch_new(tbase, &fo) : NULL;
	if (!tbase || !f_public || !f_local)
		return -ENOMEM;
	bt_car_init(&tcar, 1u << 21);
	int rc = pthread_create(&thr, NULL, thread_main, NULL);
	if (rc)
		return -rc;
	thr_started = true;
	return 0;
}

void sto_coll_fini(void)
{
	if (thr_started) {
		struct job *none = NULL;
		if (write(req_pipe[1], &none, sizeof none) == (ssize_t)sizeof none)
			pthread_join(thr, NULL);
		thr_started = false;
		pthread_mutex_lock(&done_mu);
		struct job *d = done_head;
		done_head = NULL;
		pthread_mutex_unlock(&done_mu);
		while (d) {
			struct job *nx = d->next;
			job_free(d);
			d = nx;
		}
		memset(inflight, 0, sizeof inflight);
	}
	if (tbase)
		event_base_free(tbase);
	tbase = NULL;
	for (int i = 0; i < 2; i++)
		if (req_pipe[i] >= 0) {
			close(req_pipe[i]);
			req_pipe[i] = -1;
		}
	free(ents);
	free(slots);
	ents = NULL;
	slots = NULL;
	n_ents = cap_ents = n_slots = 0;
	bt_buf_free(&keys);
}
