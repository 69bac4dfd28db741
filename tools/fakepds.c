/*
 * NAME
 *	fakepds - a PDS + PLC directory simulator serving many hosts from one process
 * DESCRIPTION
 *	fakepds --port P [--hosts H] --accounts N --rate R --seconds S [--backlog B]
 *	        [--key k256|p256|mixed] [--records C] [--bind ADDR] [--seed X]
 *	        [--start-on-subscribe] [--start-on-signal] [--no-check] [--live [--log-max M]]
 *
 *	H simulated PDS hosts, host i listening on ADDR:P+i (the relay knows them as localhost:P+i),
 *	N did:plc accounts spread over them (account j lives on host j % H).  Every port serves
 *	(plain HTTP, bt_http + bt_ws on one libevent loop):
 *	  GET /xrpc/com.atproto.server.describeServer   liveness probe of requestCrawl
 *	  GET /<did>                                     PLC-format DID document of any account (so
 *	                                                 RELAY_PLC_HOST=http://127.0.0.1:P); its PDS is
 *	                                                 http://localhost:<port of the account's host>
 *	  GET /xrpc/com.atproto.sync.getRepoStatus?did=  {did, active, rev}
 *	  GET /_stats                                    emitter counters as JSON
 *	  WS  /xrpc/com.atproto.sync.subscribeRepos[?cursor=N]   this host's firehose, own seq 1, 2, ...
 *
 *	Every event is generated BEFORE serving (R*S + B of them; the time is printed), so generation
 *	is never part of a measurement.  Each account's repo is a real MST: all accounts start from
 *	the same tree of C records (likes, posts, follows, a profile; default 4000, about 7 layers),
 *	held as shared immutable nodes; each commit changes it copy-on-write: creates (a like, post or
 *	follow with a fresh TID key), updates of the profile or of an own record, deletes of an own
 *	record.  The frame's CAR holds the commit, the new record and every MST node the change wrote
 *	(the paths to the key, the split or merged halves) plus, for deletes, the path to the key in
 *	the new tree: about 10 blocks.  Fields: since = previous rev, prevData = previous MST root,
 *	ops with prev for updates and deletes.  Unless --no-check, every generated commit is inverted
 *	with bt_mst_invert (the relay's Sync 1.1 check) and must give prevData; if an inversion needs
 *	a node that was not written (a root that shrinks back), the old path to the key is added too.
 *	Commits are signed with bt_privkey_sign (secp256k1 or P-256 per account, --key mixed
 *	alternates).
 *
 *	--live (for long soaks; implied above 250000 events) generates each event when it falls due
 *	instead, without the self-check, keeping the last M frames (default 200000) for replay; memory
 *	stays flat.  --mst-cap is accepted and ignored (older callers).
 *
 *	Emission: event k is due at S*k/(R*S) seconds after the start (the first B at once; R = 0 and
 *	B > 0 is the peak mode: everything at once, paced only by the sockets).  When an event falls
 *	due its frame's `time` is overwritten in place with the current time (microseconds), so a
 *	consumer measures emit -> receive latency as its receive time minus `time`.  The start is the
 *	launch, or with --start-on-subscribe the moment every host has a subscriber, or with
 *	--start-on-signal the first SIGUSR1.  The log stays in memory: a cursor replays from it (cursor
 *	0 = from seq 1; ahead of the head: FutureCursor).  A subscriber without a cursor starts at the
 *	next due event, or at seq 1 when B > 0.  Each subscriber is paced by its output queue (paused
 *	at 4 MiB, resumed on drain).
 *
 *	Single-threaded; this is a tool, so it allocates freely while generating and not afterwards.
 * DIAGNOSTICS
 *	Start-up errors: message on stderr, exit 2 (a port in use says which).  On stderr:
 *	"fakepds: generated ..." (events, blocks per commit, seconds, CPU us per event),
 *	"fakepds: listening ...", "fakepds: all H hosts subscribed", "fakepds: started",
 *	"fakepds: done emitted=... seconds=... rate=... cpu_s=..." when the last event fell due.
 */
#include "bt_buf.h"
#include "bt_car.h"
#include "bt_cbor.h"
#include "bt_cid.h"
#include "bt_crypto.h"
#include "bt_fh.h"
#include "bt_http.h"
#include "bt_mst.h"
#include "bt_ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SUB_HIGH (4u << 20)
#define SUB_LOWAT (1u << 20)
#define OWN_KEYS 16        /* recent own records per account (targets of updates and deletes) */
#define TIME_LEN 27        /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
#define TIME_HOLE "2000-01-01T00:00:00.000000Z"

/* ---- persistent MST: immutable refcounted nodes shared between accounts ---- */

struct ent {
	const uint8_t *k; /* interned, never freed */
	uint32_t kn;
	struct bt_cid v;
};

struct node {
	uint32_t ref, n;
	uint64_t mark;      /* commit number that last wrote this node into a CAR */
	bool has_cid;       /* false = written by the current commit, not yet encoded */
	struct bt_cid cid;
	struct ent *e;      /* n */
	struct node *kid[]; /* n + 1: kid[i] lies left of e[i] */
};

struct own {
	const uint8_t *k;
	uint32_t kn;
	struct bt_cid v;
};

struct acct {
	char did[40];
	int host;
	struct bt_privkey *key;
	char mk[BT_MULTIKEY_MAX];
	char rev[14];
	struct node *root;
	int layer;
	struct bt_cid data;
	struct own own[OWN_KEYS];
	int n_own;
	const uint8_t *profile_k;
	uint32_t profile_kn;
	struct bt_cid profile_v;
	uint64_t count;
};

struct frame {
	uint8_t *p;
	uint32_t n, time_off;
	uint32_t host;
};

struct sub {
	struct bt_ws *ws;
	struct host *h;
	uint64_t next; /* next host seq to send */
	struct sub *prev_s, *next_s;
};

struct host {
	int idx, port;
	struct bt_http_server *http;
	uint32_t *ev;     /* global frame indexes of this host's events, in seq order */
	uint64_t n_ev, cap_ev;
	uint64_t head;    /* events due so far (host seqs 1..head) */
	struct sub *subs;
	int n_subs;
	bool dirty;
};

static struct {
	int port, n_hosts, n_acct, n_records;
	double rate, seconds;
	uint64_t backlog, n_ev, seed;
	const char *key, *bind;
	bool wait_sub, wait_sig, check, live;
	uint64_t log_max; /* --live: frames kept for replay (a ring) */
	char did_prefix[17];
	struct acct *acct;
	struct host *host;
	struct frame *fr;
	uint64_t emitted; /* events due so far, all hosts */
	uint64_t last_us; /* TID clock */
	uint64_t commit_no;
	double t_start, cpu_start, gen_s, gen_cpu;
	uint64_t blocks_total, extra_paths;
	bool done, started;
	int hosts_subscribed;
	int *dirty;
	int n_dirty;
	struct event_base *base;
	struct event *tick;
	struct bt_buf rec, uns, com, car, nodes, tmp, fr_buf, enc;
	struct bt_car chk;
	uint64_t rng;
} g;

static double now_s(int clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
	fprintf(stderr, "fakepds: %s\n", msg);
	exit(2);
}

static uint64_t rnd(void)
{
	/* xorshift64*: a fixed --seed gives the same workload every run */
	g.rng ^= g.rng >> 12;
	g.rng ^= g.rng << 25;
	g.rng ^= g.rng >> 27;
	return g.rng * 2685821657736338717ull;
}

static const char S32[] = "234567abcdefghijklmnopqrstuvwxyz";

static void tid_str(uint64_t v, char out[14])
{
	for (int i = 12; i >= 0; i--) {
		out[i] = S32[v & 31];
		v >>= 5;
	}
	out[13] = 0;
}

/* A fresh TID, strictly increasing across the whole process (so per account too). */
static uint64_t next_tid(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	if (us <= g.last_us)
		us = g.last_us + 1;
	g.last_us = us;
	return (us << 10) | 7u;
}

static void iso_time(char out[TIME_LEN + 1])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(out, TIME_LEN + 1, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + k, TIME_LEN + 1 - k, ".%06ldZ", ts.tv_nsec / 1000);
}

static void lowb32(const uint8_t *p, size_t nchars, char *out)
{
	for (size_t i = 0; i < nchars; i++) {
		size_t bit = i * 5, v = 0;
		for (int j = 0; j < 5; j++, bit++)
			v = (v << 1) | ((p[bit / 8] >> (7 - bit % 8)) & 1);
		out[i] = "abcdefghijklmnopqrstuvwxyz234567"[v];
	}
	out[nchars] = 0;
}

/* did:plc:<16 chars of a run nonce><8 chars = account index>. */
static void make_did(int i, char out[40])
{
	char suf[9];
	for (int k = 7, v = i; k >= 0; k--, v >>= 5)
		suf[k] = "abcdefghijklmnopqrstuvwxyz234567"[v & 31];
	suf[8] = 0;
	snprintf(out, 40, "did:plc:%s%s", g.did_prefix, suf);
}

static int did_index(const char *did)
{
	if (strncmp(did, "did:plc:", 8) || strlen(did) != 32 || memcmp(did + 8, g.did_prefix, 16))
		return -1;
	int v = 0;
	for (int k = 24; k < 32; k++) {
		const char *c = strchr("abcdefghijklmnopqrstuvwxyz234567", did[k]);
		if (!c || !did[k])
			return -1;
		v = (v << 5) | (int)(c - "abcdefghijklmnopqrstuvwxyz234567");
	}
	return v < g.n_acct ? v : -1;
}

/* Interned key bytes: live for the whole process (a few MiB at most). */
static const uint8_t *intern(const char *s, size_t n)
{
	static uint8_t *chunk;
	static size_t used, cap;
	if (used + n > cap) {
		cap = 1 << 20;
		chunk = malloc(cap);
		used = 0;
		if (!chunk)
			die("out of memory");
	}
	uint8_t *p = chunk + used;
	memcpy(p, s, n);
	used += n;
	return p;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		die("out of memory");
	return p;
}

static struct node *nd_new(uint32_t n)
{
	struct node *m = xmalloc(sizeof *m + (n + 1) * sizeof m->kid[0]);
	memset(m, 0, sizeof *m + (n + 1) * sizeof m->kid[0]);
	m->ref = 1;
	m->n = n;
	m->e = xmalloc((n ? n : 1) * sizeof *m->e);
	return m;
}

static struct node *nd_ref(struct node *m)
{
	if (m)
		m->ref++;
	return m;
}

static void nd_unref(struct node *m)
{
	/* depth is bounded by the tree height (each kid is one layer down) */
	if (!m || --m->ref)
		return;
	for (uint32_t i = 0; i <= m->n; i++)
		nd_unref(m->kid[i]);
	free(m->e);
	free(m);
}

/* NULL for a node with no keys and no subtree (consumes m). */
static struct node *nd_prune(struct node *m)
{
	if (m && m->n == 0 && !m->kid[0]) {
		nd_unref(m);
		return NULL;
	}
	return m;
}

static int keycmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	size_t m = an < bn ? an : bn;
	int r = m ? memcmp(a, b, m) : 0;
	return r ? r : (an < bn ? -1 : an > bn);
}

static uint32_t nd_find(const struct node *m, const uint8_t *k, size_t kn, bool *eq)
{
	uint32_t lo = 0, hi = m->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (keycmp(m->e[mid].k, m->e[mid].kn, k, kn) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*eq = lo < m->n && !keycmp(m->e[lo].k, m->e[lo].kn, k, kn);
	return lo;
}

/* A new node copying t's entries [from, from+n) and kids [from, from+n] (referenced). */
static struct node *nd_slice(const struct node *t, uint32_t from, uint32_t n)
{
	struct node *m = nd_new(n);
	if (n)
		memcpy(m->e, t->e + from, n * sizeof *m->e);
	for (uint32_t i = 0; i <= n; i++)
		m->kid[i] = nd_ref(t->kid[from + i]);
	return m;
}

/* Split subtree t (borrowed) by k (absent) into owned lo/hi; an untouched side is t itself. */
static void split(struct node *t, const uint8_t *k, size_t kn, struct node **lo, struct node **hi)
{
	*lo = *hi = NULL;
	if (!t)
		return;
	bool eq;
	uint32_t i = nd_find(t, k, kn, &eq);
	struct node *a, *b;
	split(t->kid[i], k, kn, &a, &b);
	if (!b && a == t->kid[i] && i == t->n) { /* k lies after everything in t */
		nd_unref(a);
		*lo = nd_ref(t);
		return;
	}
	if (!a && b == t->kid[i] && i == 0) { /* k lies before everything in t */
		nd_unref(b);
		*hi = nd_ref(t);
		return;
	}
	struct node *l = nd_slice(t, 0, i), *r = nd_slice(t, i, t->n - i);
	nd_unref(l->kid[i]);
	l->kid[i] = a;
	nd_unref(r->kid[0]);
	r->kid[0] = b;
	*lo = nd_prune(l);
	*hi = nd_prune(r);
}

/* Join adjacent subtrees a and b (borrowed); owned result. */
static struct node *merge(struct node *a, struct node *b)
{
	if (!a || !b)
		return nd_ref(a ? a : b);
	struct node *mid = merge(a->kid[a->n], b->kid[0]);
	struct node *m = nd_new(a->n + b->n);
	memcpy(m->e, a->e, a->n * sizeof *m->e);
	memcpy(m->e + a->n, b->e, b->n * sizeof *m->e);
	for (uint32_t i = 0; i < a->n; i++)
		m->kid[i] = nd_ref(a->kid[i]);
	m->kid[a->n] = mid;
	for (uint32_t i = 1; i <= b->n; i++)
		m->kid[a->n + i] = nd_ref(b->kid[i]);
	return m;
}

/* t (borrowed) with k (height h <= layer, absent) set to v; owned result. */
static struct node *insert(struct node *t, int layer, const uint8_t *k, size_t kn, int h, const struct bt_cid *v)
{
	if (!t) {
		struct node *m = nd_new(h == layer ? 1 : 0);
		if (h == layer)
			m->e[0] = (struct ent){ k, (uint32_t)kn, *v };
		else
			m->kid[0] = insert(NULL, layer - 1, k, kn, h, v);
		return m;
	}
	bool eq;
	uint32_t i = nd_find(t, k, kn, &eq);
	if (h < layer) {
		struct node *m = nd_slice(t, 0, t->n);
		struct node *c = insert(t->kid[i], layer - 1, k, kn, h, v);
		nd_unref(m->kid[i]);
		m->kid[i] = c;
		return m;
	}
	struct node *a, *b;
	split(t->kid[i], k, kn, &a, &b);
	struct node *m = nd_new(t->n + 1);
	memcpy(m->e, t->e, i * sizeof *m->e);
	m->e[i] = (struct ent){ k, (uint32_t)kn, *v };
	memcpy(m->e + i + 1, t->e + i, (t->n - i) * sizeof *m->e);
	for (uint32_t j = 0; j < i; j++)
		m->kid[j] = nd_ref(t->kid[j]);
	m->kid[i] = a;
	m->kid[i + 1] = b;
	for (uint32_t j = i + 1; j <= t->n; j++)
		m->kid[j + 1] = nd_ref(t->kid[j]);
	return m;
}

/* t (borrowed) without k (height h, present); owned result (NULL = empty). */
static struct node *remove_key(struct node *t, int layer, const uint8_t *k, size_t kn, int h)
{
	bool eq;
	uint32_t i = nd_find(t, k, kn, &eq);
	if (h == layer && !eq)
		die("deleting an absent key");
	if (h < layer) {
		struct node *m = nd_slice(t, 0, t->n);
		struct node *c = remove_key(t->kid[i], layer - 1, k, kn, h);
		nd_unref(m->kid[i]);
		m->kid[i] = c;
		return nd_prune(m);
	}
	struct node *mid = merge(t->kid[i], t->kid[i + 1]);
	struct node *m = nd_new(t->n - 1);
	memcpy(m->e, t->e, i * sizeof *m->e);
	memcpy(m->e + i, t->e + i + 1, (t->n - i - 1) * sizeof *m->e);
	for (uint32_t j = 0; j < i; j++)
		m->kid[j] = nd_ref(t->kid[j]);
	m->kid[i] = mid;
	for (uint32_t j = i + 2; j <= t->n; j++)
		m->kid[j - 1] = nd_ref(t->kid[j]);
	return nd_prune(m);
}

/* t (borrowed) with the value of k (height h, present) set to v; owned result. */
static struct node *update(struct node *t, int layer, const uint8_t *k, size_t kn, int h, const struct bt_cid *v)
{
	bool eq;
	uint32_t i = nd_find(t, k, kn, &eq);
	struct node *m = nd_slice(t, 0, t->n);
	if (h == layer) {
		if (!eq)
			die("updating an absent key");
		m->e[i].v = *v;
		return m;
	}
	struct node *c = update(t->kid[i], layer - 1, k, kn, h, v);
	nd_unref(m->kid[i]);
	m->kid[i] = c;
	return m;
}

/* Canonical DAG-CBOR of node m into g.enc (kids must have CIDs). */
static void nd_encode(const struct node *m)
{
	struct bt_buf *b = &g.enc;
	bt_buf_reset(b);
	int rc = bt_cbor_w_map(b, 2);
	rc = rc ? rc : bt_cbor_w_text(b, "e", 1);
	rc = rc ? rc : bt_cbor_w_array(b, m->n);
	for (uint32_t i = 0; !rc && i < m->n; i++) {
		const struct ent *e = &m->e[i];
		size_t p = 0;
		if (i)
			while (p < e->kn && p < m->e[i - 1].kn && e->k[p] == m->e[i - 1].k[p])
				p++;
		rc = bt_cbor_w_map(b, 4);
		rc = rc ? rc : bt_cbor_w_text(b, "k", 1);
		rc = rc ? rc : bt_cbor_w_bytes(b, e->k + p, e->kn - p);
		rc = rc ? rc : bt_cbor_w_text(b, "p", 1);
		rc = rc ? rc : bt_cbor_w_uint(b, p);
		rc = rc ? rc : bt_cbor_w_text(b, "t", 1);
		if (!rc)
			rc = m->kid[i + 1] ? bt_cbor_w_cid(b, &m->kid[i + 1]->cid) : bt_cbor_w_null(b);
		rc = rc ? rc : bt_cbor_w_text(b, "v", 1);
		rc = rc ? rc : bt_cbor_w_cid(b, &e->v);
	}
	rc = rc ? rc : bt_cbor_w_text(b, "l", 1);
	if (!rc)
		rc = m->kid[0] ? bt_cbor_w_cid(b, &m->kid[0]->cid) : bt_cbor_w_null(b);
	if (rc)
		die("node encoding failed");
}

/* Encode every node of m's subtree without a CID (the ones this commit wrote); each one's block
   goes to out (when non-NULL) and is marked with this commit's number. */
static void nd_seal(struct node *m, struct bt_buf *out)
{
	if (!m || m->has_cid)
		return;
	for (uint32_t i = 0; i <= m->n; i++)
		nd_seal(m->kid[i], out);
	nd_encode(m);
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, g.enc.p, g.enc.len, &m->cid);
	m->has_cid = true;
	m->mark = g.commit_no;
	if (out) {
		if (bt_car_write_block(out, &m->cid, g.enc.p, g.enc.len))
			die("out of memory");
		g.blocks_total++;
	}
}

/* Add the nodes on the search path of k that this commit has not written yet. */
static void add_path(struct node *t, const uint8_t *k, size_t kn, struct bt_buf *out)
{
	while (t) {
		if (t->mark != g.commit_no) {
			nd_encode(t);
			if (bt_car_write_block(out, &t->cid, g.enc.p, g.enc.len))
				die("out of memory");
			t->mark = g.commit_no;
			g.blocks_total++;
		}
		bool eq;
		uint32_t i = nd_find(t, k, kn, &eq);
		if (eq)
			return;
		t = t->kid[i];
	}
}

/* ---- the shared initial tree ---- */

struct bkey {
	const uint8_t *k;
	uint32_t kn;
	int h;
	struct bt_cid v;
};

static int bkey_cmp(const void *a, const void *b)
{
	const struct bkey *x = a, *y = b;
	return keycmp(x->k, x->kn, y->k, y->kn);
}

static struct node *build(const struct bkey *ks, size_t n, int layer)
{
	if (!n)
		return NULL;
	uint32_t cnt = 0;
	for (size_t i = 0; i < n; i++)
		cnt += ks[i].h == layer;
	struct node *m = nd_new(cnt);
	size_t start = 0, j = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && ks[i].h != layer)
			continue;
		m->kid[j] = build(ks + start, i - start, layer - 1);
		if (i < n) {
			m->e[j] = (struct ent){ ks[i].k, ks[i].kn, ks[i].v };
			j++;
		}
		start = i + 1;
	}
	return m;
}

static const char *const COLLS[] = { "app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.graph.follow",
				     "app.bsky.feed.repost" };

/* A record key: collection/<TID> (the initial tree uses TIDs of last year). */
static size_t make_key(int coll, uint64_t tid, char *out, size_t cap)
{
	char t[14];
	tid_str(tid, t);
	return (size_t)snprintf(out, cap, "%s/%s", COLLS[coll], t);
}

static struct node *initial_tree(int *layer_out, const uint8_t **prof_k, uint32_t *prof_kn, struct bt_cid *prof_v)
{
	size_t n = (size_t)g.n_records;
	struct bkey *ks = xmalloc((n + 1) * sizeof *ks);
	uint64_t us = (uint64_t)(time(NULL) - 365 * 86400) * 1000000u;
	char kb[80];
	int layer = 0;
	for (size_t i = 0; i <= n; i++) {
		size_t kn;
		if (i == n) {
			kn = (size_t)snprintf(kb, sizeof kb, "app.bsky.actor.profile/self");
		} else {
			us += 1 + rnd() % 20000000u;
			int c = (int)(rnd() % 10);
			kn = make_key(c < 6 ? 0 : c < 8 ? 1 : c < 9 ? 2 : 3, (us << 10) | (rnd() & 1023), kb, sizeof kb);
		}
		ks[i].k = intern(kb, kn);
		ks[i].kn = (uint32_t)kn;
		ks[i].h = bt_mst_key_height(ks[i].k, kn);
		uint8_t rec[40];
		snprintf((char *)rec, sizeof rec, "r%zu", i);
		bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, rec, strlen((char *)rec), &ks[i].v);
		if (ks[i].h > layer)
			layer = ks[i].h;
	}
	*prof_k = ks[n].k;
	*prof_kn = ks[n].kn;
	*prof_v = ks[n].v;
	qsort(ks, n + 1, sizeof *ks, bkey_cmp);
	for (size_t i = 1; i <= n; i++)
		if (!keycmp(ks[i - 1].k, ks[i - 1].kn, ks[i].k, ks[i].kn))
			die("duplicate key in the initial tree");
	struct node *t = build(ks, n + 1, layer);
	g.commit_no = 0;
	nd_seal(t, NULL);
	if (g.check) { /* the same keys through the project's own builder must give the same root */
		const uint8_t **kp = xmalloc((n + 1) * sizeof *kp);
		size_t *kl = xmalloc((n + 1) * sizeof *kl);
		struct bt_cid *kv = xmalloc((n + 1) * sizeof *kv), root;
		for (size_t i = 0; i <= n; i++)
			kp[i] = ks[i].k, kl[i] = ks[i].kn, kv[i] = ks[i].v;
		if (bt_mst_build_car(kp, kl, kv, n + 1, NULL, &root) || !bt_cid_eq(&root, &t->cid))
			die("initial tree differs from bt_mst_build_car");
		free(kp);
		free(kl);
		free(kv);
	}
	free(ks);
	*layer_out = layer;
	return t;
}

/* ---- commits ---- */

/* The commit map {did, rev, [sig,] data, prev, version} in canonical key order. */
static int encode_commit(const struct acct *a, const char *rev, const struct bt_cid *data, const uint8_t *sig,
			 struct bt_buf *b)
{
	int rc = bt_cbor_w_map(b, sig ? 6 : 5);
	rc = rc ? rc : bt_cbor_w_str(b, "did");
	rc = rc ? rc : bt_cbor_w_str(b, a->did);
	rc = rc ? rc : bt_cbor_w_str(b, "rev");
	rc = rc ? rc : bt_cbor_w_str(b, rev);
	if (sig) {
		rc = rc ? rc : bt_cbor_w_str(b, "sig");
		rc = rc ? rc : bt_cbor_w_bytes(b, sig, 64);
	}
	rc = rc ? rc : bt_cbor_w_str(b, "data");
	rc = rc ? rc : bt_cbor_w_cid(b, data);
	rc = rc ? rc : bt_cbor_w_str(b, "prev");
	rc = rc ? rc : bt_cbor_w_null(b);
	rc = rc ? rc : bt_cbor_w_str(b, "version");
	rc = rc ? rc : bt_cbor_w_uint(b, 3);
	return rc;
}

/* A realistic record of collection coll (canonical DAG-CBOR map key order) into g.rec. */
static int encode_record(const struct acct *a, int coll, const char *tm)
{
	struct bt_buf *b = &g.rec;
	char text[160], uri[120], cid[80];
	const struct acct *o = &g.acct[rnd() % (uint64_t)g.n_acct];
	struct bt_cid x;
	uint8_t seed[16];
	uint64_t r = rnd();
	memcpy(seed, &r, 8);
	memcpy(seed + 8, &a->count, 8);
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, seed, sizeof seed, &x);
	bt_cid_to_str(&x, cid, sizeof cid);
	char t[14];
	tid_str(((uint64_t)(time(NULL) - 3600) * 1000000u << 10) | (r & 1023), t);
	snprintf(uri, sizeof uri, "at://%s/app.bsky.feed.post/%s", o->did, t);
	int rc;
	if (coll == 1) { /* post {text, $type, langs, createdAt} */
		int tl = snprintf(text, sizeof text, "fakepds post %" PRIu64 " by %s: the quick brown fox %016" PRIx64,
				  a->count, a->did, r);
		rc = bt_cbor_w_map(b, 4);
		rc = rc ? rc : bt_cbor_w_str(b, "text");
		rc = rc ? rc : bt_cbor_w_text(b, text, (size_t)tl);
		rc = rc ? rc : bt_cbor_w_str(b, "$type");
		rc = rc ? rc : bt_cbor_w_str(b, COLLS[coll]);
		rc = rc ? rc : bt_cbor_w_str(b, "langs");
		rc = rc ? rc : bt_cbor_w_array(b, 1);
		rc = rc ? rc : bt_cbor_w_str(b, "en");
	} else if (coll == 2) { /* follow {$type, subject: did, createdAt} */
		rc = bt_cbor_w_map(b, 3);
		rc = rc ? rc : bt_cbor_w_str(b, "$type");
		rc = rc ? rc : bt_cbor_w_str(b, COLLS[coll]);
		rc = rc ? rc : bt_cbor_w_str(b, "subject");
		rc = rc ? rc : bt_cbor_w_str(b, o->did);
	} else if (coll == 4) { /* profile {$type, description, displayName} */
		int tl = snprintf(text, sizeof text, "profile %" PRIu64, a->count);
		rc = bt_cbor_w_map(b, 3);
		rc = rc ? rc : bt_cbor_w_str(b, "$type");
		rc = rc ? rc : bt_cbor_w_str(b, "app.bsky.actor.profile");
		rc = rc ? rc : bt_cbor_w_str(b, "description");
		rc = rc ? rc : bt_cbor_w_text(b, text, (size_t)tl);
		rc = rc ? rc : bt_cbor_w_str(b, "displayName");
		rc = rc ? rc : bt_cbor_w_text(b, a->did + 8, 24);
		return rc;
	} else { /* like / repost {$type, subject: {cid, uri}, createdAt} */
		rc = bt_cbor_w_map(b, 3);
		rc = rc ? rc : bt_cbor_w_str(b, "$type");
		rc = rc ? rc : bt_cbor_w_str(b, COLLS[coll]);
		rc = rc ? rc : bt_cbor_w_str(b, "subject");
		rc = rc ? rc : bt_cbor_w_map(b, 2);
		rc = rc ? rc : bt_cbor_w_str(b, "cid");
		rc = rc ? rc : bt_cbor_w_str(b, cid);
		rc = rc ? rc : bt_cbor_w_str(b, "uri");
		rc = rc ? rc : bt_cbor_w_str(b, uri);
	}
	rc = rc ? rc : bt_cbor_w_str(b, "createdAt");
	rc = rc ? rc : bt_cbor_w_str(b, tm);
	return rc;
}

enum { OP_CREATE, OP_UPDATE, OP_DELETE };

/* Generates the next #commit of account a as host seq `seq` into g.fr_buf; *time_off gets the
   offset of the frame's time string. */
static int gen_commit(struct acct *a, uint64_t seq, uint32_t *time_off)
{
	char rev[14], tm[TIME_LEN + 1], kb[80];
	g.commit_no++;
	tid_str(next_tid(), rev);
	iso_time(tm);
	bt_buf_reset(&g.rec);
	bt_buf_reset(&g.uns);
	bt_buf_reset(&g.com);
	bt_buf_reset(&g.car);
	bt_buf_reset(&g.nodes);
	bt_buf_reset(&g.tmp);
	bt_buf_reset(&g.fr_buf);

	/* The op: mostly creates (like, post, follow, repost), some updates and deletes. */
	uint64_t r = rnd() % 100;
	int op = r < 82 || !a->n_own ? OP_CREATE : r < 91 ? OP_UPDATE : OP_DELETE;
	int coll = 0;
	const uint8_t *k;
	uint32_t kn;
	struct bt_cid oldv, newv;
	int own_slot = -1;
	if (op == OP_CREATE) {
		uint64_t c = rnd() % 10;
		coll = c < 5 ? 0 : c < 8 ? 1 : c < 9 ? 2 : 3;
		kn = (uint32_t)make_key(coll, next_tid(), kb, sizeof kb);
		k = intern(kb, kn);
	} else if (op == OP_UPDATE && rnd() % 2) {
		coll = 4;
		k = a->profile_k;
		kn = a->profile_kn;
		oldv = a->profile_v;
	} else {
		own_slot = (int)(rnd() % (uint64_t)a->n_own);
		k = a->own[own_slot].k;
		kn = a->own[own_slot].kn;
		oldv = a->own[own_slot].v;
		coll = 0;
		for (int ci = 0; ci < 4; ci++)
			if (kn > strlen(COLLS[ci]) && !memcmp(k, COLLS[ci], strlen(COLLS[ci])) && k[strlen(COLLS[ci])] == '/')
				coll = ci;
	}
	int rc = 0;
	if (op != OP_DELETE) {
		if ((rc = encode_record(a, coll, tm)))
			return rc;
		bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, g.rec.p, g.rec.len, &newv);
	}

	/* The new tree (copy-on-write; the old one stays intact until it is released below). */
	int h = bt_mst_key_height(k, kn), layer = a->layer;
	struct node *t;
	if (op == OP_CREATE) {
		struct node *base = nd_ref(a->root);
		while (layer < h) { /* grow the root to the new key's layer */
			struct node *m = nd_new(0);
			m->kid[0] = base;
			base = m;
			layer++;
		}
		t = insert(base, layer, k, kn, h, &newv);
		nd_unref(base);
	} else if (op == OP_UPDATE) {
		t = update(a->root, layer, k, kn, h, &newv);
	} else {
		t = remove_key(a->root, layer, k, kn, h);
		while (t && t->n == 0) { /* trim the root to its highest key */
			struct node *c = nd_ref(t->kid[0]);
			nd_unref(t);
			t = c;
			layer--;
		}
		if (!t)
			die("a repo became empty");
	}
	nd_seal(t, &g.nodes);
	if (op == OP_DELETE)
		add_path(t, k, kn, &g.nodes);
	if (layer != a->layer) { /* the root changed height: inverting trims through the old root */
		g.extra_paths++;
		add_path(a->root, k, kn, &g.nodes);
	}
	struct bt_cid data = t->cid;

	uint8_t sig[64];
	if ((rc = encode_commit(a, rev, &data, NULL, &g.uns)))
		return rc;
	if ((rc = bt_privkey_sign(a->key, g.uns.p, g.uns.len, sig)))
		return rc;
	if ((rc = encode_commit(a, rev, &data, sig, &g.com)))
		return rc;
	struct bt_cid ccid;
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, g.com.p, g.com.len, &ccid);

	static struct bt_fh_msg m; /* large (ops[200]); reused */
	memset(&m, 0, offsetof(struct bt_fh_msg, ops));
	m.n_ops = 1;
	memset(&m.ops[0], 0, sizeof m.ops[0]);
	static const char *const act[] = { "create", "update", "delete" };
	m.ops[0].action = (struct bt_bytes){ (const uint8_t *)act[op], strlen(act[op]) };
	m.ops[0].path = (struct bt_bytes){ k, kn };
	m.ops[0].has_cid = op != OP_DELETE;
	m.ops[0].cid = newv;
	m.ops[0].has_prev = op != OP_CREATE;
	m.ops[0].prev = oldv;

	for (int pass = 0; pass < 2; pass++) {
		bt_buf_reset(&g.car);
		rc = bt_car_write_header(&g.car, &ccid);
		rc = rc ? rc : bt_car_write_block(&g.car, &ccid, g.com.p, g.com.len);
		if (op != OP_DELETE)
			rc = rc ? rc : bt_car_write_block(&g.car, &newv, g.rec.p, g.rec.len);
		rc = rc ? rc : bt_buf_append(&g.car, g.nodes.p, g.nodes.len);
		if (rc)
			return rc;
		if (!g.check)
			break;
		const char *why = NULL;
		struct bt_cid prev;
		if (bt_car_parse(&g.chk, g.car.p, g.car.len, &why) < 0)
			die("generated CAR does not parse");
		rc = bt_mst_invert(&g.chk, &data, m.ops, 1, &prev, &why);
		if (!rc && bt_cid_eq(&prev, &a->data))
			break;
		if (rc == -ENOENT && pass == 0) { /* add the old path to the key as well */
			g.extra_paths += 1000000; /* counted apart: a case the rule above does not cover */
			add_path(a->root, k, kn, &g.nodes);
			rc = 0;
			continue;
		}
		fprintf(stderr, "fakepds: self-check: inversion of a %s failed: %s\n", act[op],
			rc ? (why ? why : "?") : "wrong prevData");
		exit(2);
	}
	g.blocks_total += 1 + (op != OP_DELETE);

	m.type = BT_FH_COMMIT;
	m.op = 1;
	m.did = (struct bt_bytes){ (const uint8_t *)a->did, strlen(a->did) };
	m.rev = (struct bt_bytes){ (const uint8_t *)rev, 13 };
	m.has_since = true;
	m.since = (struct bt_bytes){ (const uint8_t *)a->rev, 13 };
	m.time = (struct bt_bytes){ (const uint8_t *)TIME_HOLE, TIME_LEN };
	m.commit = ccid;
	m.has_prev_data = true;
	m.prev_data = a->data;
	m.blocks = (struct bt_bytes){ g.car.p, g.car.len };
	size_t seq_off;
	if ((rc = bt_fh_encode_noseq(&m, &g.tmp, &seq_off)))
		return rc;
	if ((rc = bt_fh_splice_seq(g.tmp.p, g.tmp.len, seq_off, seq, &g.fr_buf)))
		return rc;
	const uint8_t *hole = memmem(g.fr_buf.p, g.fr_buf.len, TIME_HOLE, TIME_LEN);
	if (!hole)
		die("time field not found in the frame");
	*time_off = (uint32_t)(hole - g.fr_buf.p);

	/* Commit the account's new state. */
	nd_unref(a->root);
	a->root = t;
	a->layer = layer;
	a->data = data;
	memcpy(a->rev, rev, 14);
	a->count++;
	if (op == OP_CREATE) {
		int s = a->n_own < OWN_KEYS ? a->n_own++ : (int)(rnd() % OWN_KEYS);
		a->own[s] = (struct own){ k, kn, newv };
	} else if (op == OP_UPDATE && own_slot < 0) {
		a->profile_v = newv;
	} else if (op == OP_UPDATE) {
		a->own[own_slot].v = newv;
	} else {
		a->own[own_slot] = a->own[--a->n_own];
	}
	return 0;
}

/* Generates global event j (a random account's next commit) into its frame slot. */
static void gen_one(uint64_t j)
{
	struct acct *a = &g.acct[rnd() % (uint64_t)g.n_acct];
	struct host *h = &g.host[a->host];
	uint32_t toff;
	if (gen_commit(a, h->n_ev + 1, &toff))
		die("frame generation failed");
	struct frame *f = &g.fr[g.live ? j % g.log_max : j];
	free(f->p);
	*f = (struct frame){ xmalloc(g.fr_buf.len), (uint32_t)g.fr_buf.len, toff, (uint32_t)a->host };
	memcpy(f->p, g.fr_buf.p, g.fr_buf.len);
	if (h->n_ev == h->cap_ev) {
		h->cap_ev = h->cap_ev ? h->cap_ev * 2 : 64;
		h->ev = realloc(h->ev, h->cap_ev * sizeof *h->ev);
		if (!h->ev)
			die("out of memory");
	}
	h->ev[h->n_ev++] = (uint32_t)j;
}

static void generate(void)
{
	double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	const uint8_t *pk;
	uint32_t pkn;
	struct bt_cid pv;
	int layer;
	struct node *t0root = initial_tree(&layer, &pk, &pkn, &pv);
	char rev0[14];
	tid_str(((uint64_t)(time(NULL) - 86400) * 1000000u) << 10, rev0);
	for (int i = 0; i < g.n_acct; i++) {
		struct acct *a = &g.acct[i];
		a->root = nd_ref(t0root);
		a->layer = layer;
		a->data = t0root->cid;
		memcpy(a->rev, rev0, 14);
		a->profile_k = pk;
		a->profile_kn = pkn;
		a->profile_v = pv;
	}
	nd_unref(t0root);
	uint64_t slots = g.live ? g.log_max : g.n_ev;
	g.fr = calloc(slots ? slots : 1, sizeof *g.fr);
	if (!g.fr)
		die("out of memory");
	for (uint64_t j = 0; j < g.n_ev && !g.live; j++)
		gen_one(j);
	g.gen_s = now_s(CLOCK_MONOTONIC) - t0;
	g.gen_cpu = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
	if (g.live) {
		fprintf(stderr, "fakepds: generated nothing in advance (--live): %" PRIu64 " events as they fall due, "
				"tree of %d records, %d layers\n", g.n_ev, g.n_records + 1, layer + 1);
		return;
	}
	uint64_t bytes = 0;
	for (uint64_t j = 0; j < g.n_ev; j++)
		bytes += g.fr[j].n;
	fprintf(stderr,
		"fakepds: generated %" PRIu64 " events in %.2fs (CPU %.1f us/event incl. %s): %.1f blocks/commit, "
		"%.0f bytes/frame, tree of %d records, %d layers, old path added to %" PRIu64 "\n",
		g.n_ev, g.gen_s, g.n_ev ? g.gen_cpu * 1e6 / (double)g.n_ev : 0.0,
		g.check ? "self-check" : "no check", g.n_ev ? (double)g.blocks_total / (double)g.n_ev : 0.0,
		g.n_ev ? (double)bytes / (double)g.n_ev : 0.0, g.n_records + 1, layer + 1, g.extra_paths);
}

/* ---- serving ---- */

/* Sends due frames to s while its output queue is below SUB_HIGH. */
static void pump(struct sub *s)
{
	struct host *h = s->h;
	while (s->next <= h->head && bt_ws_outq(s->ws) < SUB_HIGH) {
		uint64_t j = h->ev[s->next - 1];
		if (g.live && j + g.log_max < g.emitted) { /* fell out of the replay ring: skip ahead */
			s->next++;
			continue;
		}
		const struct frame *f = &g.fr[g.live ? j % g.log_max : j];
		if (bt_ws_send(s->ws, BT_WS_BINARY, f->p, f->n) < 0)
			return;
		s->next++;
	}
}

static void mark_dirty(struct host *h)
{
	if (!h->dirty) {
		h->dirty = true;
		g.dirty[g.n_dirty++] = h->idx;
	}
}

static void start(void)
{
	if (g.started)
		return;
	g.started = true;
	g.t_start = now_s(CLOCK_MONOTONIC);
	g.cpu_start = now_s(CLOCK_PROCESS_CPUTIME_ID);
	fprintf(stderr, "fakepds: started\n");
	event_add(g.tick, &(struct timeval){ 0, 1000 }); /* no timer before the start: an idle tool costs nothing */
	event_active(g.tick, EV_TIMEOUT, 0);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	if (g.done || !g.started)
		return;
	double el = now_s(CLOCK_MONOTONIC) - g.t_start;
	uint64_t want = g.backlog + (uint64_t)(el * g.rate);
	if (want > g.n_ev || el >= g.seconds)
		want = g.n_ev;
	if (g.live && want > g.emitted + 64)
		want = g.emitted + 64; /* bounded generation per turn: HTTP (DID documents) is served between */
	if (g.emitted < want) {
		char tm[TIME_LEN + 1];
		if (g.live) {
			double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
			for (uint64_t j = g.emitted; j < want; j++)
				gen_one(j);
			g.gen_cpu += now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
		}
		iso_time(tm); /* one clock read per tick: the events of a tick fall due together */
		for (; g.emitted < want; g.emitted++) {
			struct frame *f = &g.fr[g.live ? g.emitted % g.log_max : g.emitted];
			memcpy(f->p + f->time_off, tm, TIME_LEN);
			struct host *h = &g.host[f->host];
			h->head++;
			mark_dirty(h);
		}
	}
	for (int i = 0; i < g.n_dirty; i++) {
		struct host *h = &g.host[g.dirty[i]];
		h->dirty = false;
		for (struct sub *s = h->subs; s; s = s->next_s)
			pump(s);
	}
	g.n_dirty = 0;
	if (g.emitted >= g.n_ev) {
		g.done = true;
		double e = now_s(CLOCK_MONOTONIC) - g.t_start;
		fprintf(stderr, "fakepds: done emitted=%" PRIu64 " seconds=%.3f rate=%.1f cpu_s=%.3f\n", g.emitted, e,
			(double)(g.emitted - (g.backlog < g.emitted ? g.backlog : g.emitted)) / (e > 0 ? e : 1),
			now_s(CLOCK_PROCESS_CPUTIME_ID) - g.cpu_start);
		event_del(g.tick);
	}
}

static void sub_on_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
	/* Consumers send nothing meaningful on the firehose. */
}

static void sub_on_drain(struct bt_ws *ws, void *arg)
{
	pump(arg);
}

static void sub_on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	struct sub *s = arg;
	struct host *h = s->h;
	if (s->prev_s)
		s->prev_s->next_s = s->next_s;
	else
		h->subs = s->next_s;
	if (s->next_s)
		s->next_s->prev_s = s->prev_s;
	h->n_subs--;
	free(s);
}

static void json_reply(struct bt_http_req *r, int status, const char *body)
{
	bt_http_respond(r, status, "application/json", body, strlen(body));
}

static void serve_did(struct bt_http_req *r, const char *path)
{
	char did[64];
	size_t k = 0;
	for (const char *p = path + 1; *p && k + 1 < sizeof did; p++) {
		if (p[0] == '%' && p[1] == '3' && (p[2] == 'A' || p[2] == 'a')) {
			did[k++] = ':';
			p += 2;
		} else {
			did[k++] = *p;
		}
	}
	did[k] = 0;
	int i = did_index(did);
	if (i < 0) {
		json_reply(r, 404, "{\"message\":\"DID not registered\"}");
		return;
	}
	const struct acct *a = &g.acct[i];
	char body[1400];
	int n = snprintf(body, sizeof body,
			 "{\"@context\":[\"https://www.w3.org/ns/did/v1\",\"https://w3id.org/security/multikey/v1\","
			 "\"https://w3id.org/security/suites/secp256k1-2019/v1\"],"
			 "\"id\":\"%s\",\"alsoKnownAs\":[\"at://u%d.fakepds.test\"],"
			 "\"verificationMethod\":[{\"id\":\"%s#atproto\",\"type\":\"Multikey\",\"controller\":\"%s\","
			 "\"publicKeyMultibase\":\"%s\"}],"
			 "\"service\":[{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
			 "\"serviceEndpoint\":\"http://localhost:%d\"}]}",
			 a->did, i, a->did, a->did, a->mk, g.host[a->host].port);
	bt_http_respond(r, 200, "application/did+ld+json", body, (size_t)n);
}

static void subscribe(struct host *h, struct bt_http_req *r)
{
	char cur[32];
	bool has_cursor = bt_http_req_param(r, "cursor", cur, sizeof cur) > 0;
	uint64_t cursor = has_cursor ? strtoull(cur, NULL, 10) : 0;
	struct sub *s = calloc(1, sizeof *s);
	if (!s) {
		json_reply(r, 500, "{\"error\":\"InternalServerError\"}");
		return;
	}
	static const struct bt_ws_cbs cbs = { .on_msg = sub_on_msg, .on_close = sub_on_close,
					      .on_drain = sub_on_drain };
	struct bt_ws_opts o = { .max_msg = 65536, .ping_interval_s = 30, .idle_timeout_s = 0,
				.drain_lowat = SUB_LOWAT, .server_hdr = "fakepds" };
	s->ws = bt_http_upgrade(r, &cbs, s, &o);
	if (!s->ws) {
		free(s);
		return;
	}
	s->h = h;
	s->next_s = h->subs;
	if (h->subs)
		h->subs->prev_s = s;
	h->subs = s;
	if (!h->n_subs++ && ++g.hosts_subscribed == g.n_hosts) {
		fprintf(stderr, "fakepds: all %d hosts subscribed\n", g.n_hosts);
		if (g.wait_sub)
			start();
	}
	if (has_cursor && cursor > h->head) {
		bt_buf_reset(&g.tmp);
		if (!bt_fh_encode_error(&g.tmp, "FutureCursor", "cursor is ahead of the newest event"))
			bt_ws_send(s->ws, BT_WS_BINARY, g.tmp.p, g.tmp.len);
		bt_ws_close(s->ws, 1008, "FutureCursor");
		s->next = UINT64_MAX;
		return;
	}
	s->next = has_cursor ? cursor + 1 : g.backlog ? 1 : h->head + 1;
	pump(s);
}

static void on_req(struct bt_http_req *r, void *arg)
{
	struct host *h = arg;
	const char *path = bt_http_req_path(r);
	char body[512];
	if (!strcmp(path, "/xrpc/com.atproto.sync.subscribeRepos")) {
		subscribe(h, r);
		return;
	}
	if (strcmp(bt_http_req_method(r), "GET")) {
		json_reply(r, 405, "{\"error\":\"MethodNotAllowed\"}");
		return;
	}
	if (!strcmp(path, "/xrpc/com.atproto.server.describeServer")) {
		snprintf(body, sizeof body,
			 "{\"did\":\"did:web:localhost%%3A%d\",\"availableUserDomains\":[\".fakepds.test\"],"
			 "\"inviteCodeRequired\":false}",
			 h->port);
		json_reply(r, 200, body);
	} else if (!strcmp(path, "/xrpc/com.atproto.sync.getRepoStatus")) {
		char did[64];
		int i = bt_http_req_param(r, "did", did, sizeof did) > 0 ? did_index(did) : -1;
		if (i < 0) {
			json_reply(r, 404, "{\"error\":\"RepoNotFound\",\"message\":\"no such repo\"}");
			return;
		}
		const struct acct *a = &g.acct[i];
		snprintf(body, sizeof body, "{\"did\":\"%s\",\"active\":true,\"rev\":\"%s\"}", a->did, a->rev);
		json_reply(r, 200, body);
	} else if (!strcmp(path, "/_stats")) {
		snprintf(body, sizeof body,
			 "{\"seq\":%" PRIu64 ",\"started\":%s,\"emitted\":%" PRIu64 ",\"events\":%" PRIu64
			 ",\"elapsed_s\":%.3f,\"done\":%s,\"subscribers\":%d,\"hosts_subscribed\":%d,"
			 "\"gen_s\":%.3f,\"gen_cpu_us_per_event\":%.1f,\"cpu_s\":%.3f}",
			 h->head, g.started ? "true" : "false", g.emitted, g.n_ev,
			 g.started ? now_s(CLOCK_MONOTONIC) - g.t_start : 0.0, g.done ? "true" : "false", h->n_subs,
			 g.hosts_subscribed, g.gen_s, g.n_ev ? g.gen_cpu * 1e6 / (double)g.n_ev : 0.0,
			 g.started ? now_s(CLOCK_PROCESS_CPUTIME_ID) - g.cpu_start : 0.0);
		json_reply(r, 200, body);
	} else if (!strncmp(path, "/did:", 5) || !strncmp(path, "/did%3", 6)) {
		serve_did(r, path);
	} else if (!strcmp(path, "/")) {
		json_reply(r, 200, "{\"fakepds\":true}");
	} else {
		json_reply(r, 404, "{\"error\":\"NotFound\"}");
	}
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(g.base);
}

static void on_usr1(evutil_socket_t fd, short what, void *arg)
{
	start();
}

static int listen_on(const char *addr, int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
	    listen(fd, 512) < 0) {
		int e = errno ? errno : EINVAL;
		close(fd);
		return -e;
	}
	return fd;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: fakepds --port P [--hosts H] --accounts N --rate R --seconds S [--backlog B]\n"
		"               [--key k256|p256|mixed] [--records C] [--bind ADDR] [--seed X]\n"
		"               [--start-on-subscribe] [--start-on-signal] [--no-check] [--live [--log-max M]]\n"
		"  H PDS hosts on ports P..P+H-1 (each also a PLC directory for every account), N accounts,\n"
		"  R*S + B pre-generated signed #commit events with real MST proofs: B at the start, then R/s.\n"
		"  Runs until SIGINT/SIGTERM.\n");
	exit(2);
}

int main(int argc, char **argv)
{
	g.n_hosts = 1;
	g.n_acct = 100;
	g.rate = 100;
	g.seconds = 10;
	g.key = "k256";
	g.bind = "127.0.0.1";
	g.n_records = 4000;
	g.check = true;
	g.seed = 1;
	static const struct option lo[] = { { "port", 1, 0, 'p' },    { "accounts", 1, 0, 'a' },
					    { "rate", 1, 0, 'r' },    { "seconds", 1, 0, 's' },
					    { "key", 1, 0, 'k' },     { "hosts", 1, 0, 'H' },
					    { "records", 1, 0, 'C' }, { "backlog", 1, 0, 'b' },
					    { "bind", 1, 0, 'B' },    { "help", 0, 0, 'h' },
					    { "seed", 1, 0, 'S' },    { "no-check", 0, 0, 'n' },
					    { "start-on-subscribe", 0, 0, 'W' },
					    { "start-on-signal", 0, 0, 'U' },
					    { "live", 0, 0, 'L' },    { "log-max", 1, 0, 'l' },
					    { "mst-cap", 1, 0, 'M' },
					    { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p': g.port = atoi(optarg); break;
		case 'a': g.n_acct = atoi(optarg); break;
		case 'r': g.rate = atof(optarg); break;
		case 's': g.seconds = atof(optarg); break;
		case 'k': g.key = optarg; break;
		case 'H': g.n_hosts = atoi(optarg); break;
		case 'C': g.n_records = atoi(optarg); break;
		case 'b': g.backlog = strtoull(optarg, NULL, 10); break;
		case 'B': g.bind = optarg; break;
		case 'S': g.seed = strtoull(optarg, NULL, 10); break;
		case 'n': g.check = false; break;
		case 'W': g.wait_sub = true; break;
		case 'U': g.wait_sig = true; break;
		case 'L': g.live = true; break;
		case 'M': break; /* accepted for old callers: the repos are real MSTs now (--records) */
		case 'l': g.log_max = strtoull(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (g.port <= 0 || g.n_hosts < 1 || g.port + g.n_hosts - 1 > 65535 || g.n_acct <= 0 ||
	    g.n_acct > (1 << 24) || g.rate < 0 || g.seconds < 0 || g.n_records < 1 || g.n_records > 10000000 ||
	    (strcmp(g.key, "k256") && strcmp(g.key, "p256") && strcmp(g.key, "mixed")))
		usage();
	double nev = g.rate * g.seconds + (double)g.backlog;
	if (!g.log_max)
		g.log_max = 200000;
	if (nev > (g.live ? 4e9 : 20e6))
		die("too many events (rate * seconds + backlog > 20000000)");
	g.n_ev = (uint64_t)nev;
	if (!g.live && g.n_ev > 250000) { /* ~5 KB a frame: more would not fit comfortably in memory */
		fprintf(stderr, "fakepds: %" PRIu64 " events are too many to pre-generate: --live\n", g.n_ev);
		g.live = true;
	}
	if (g.live)
		g.check = false; /* generation is on the clock: no self-check */
	g.rng = g.seed * 0x9E3779B97F4A7C15ull + 1;
	signal(SIGPIPE, SIG_IGN);

	/* Each host needs a listener and a connection or two: raise the descriptor limit. */
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* DID prefix: unique per run, so a relay's caches never see stale documents. */
	uint8_t seed[64], h[32];
	snprintf((char *)seed, sizeof seed, "%d/%ld/%d", g.port, (long)time(NULL), (int)getpid());
	bt_sha256(seed, strlen((char *)seed), h);
	lowb32(h, 16, g.did_prefix);

	g.acct = calloc((size_t)g.n_acct, sizeof *g.acct);
	g.host = calloc((size_t)g.n_hosts, sizeof *g.host);
	g.dirty = calloc((size_t)g.n_hosts, sizeof *g.dirty);
	if (!g.acct || !g.host || !g.dirty)
		die("out of memory");
	for (int i = 0; i < g.n_hosts; i++)
		g.host[i] = (struct host){ .idx = i, .port = g.port + i };
	for (int i = 0; i < g.n_acct; i++) {
		struct acct *a = &g.acct[i];
		make_did(i, a->did);
		a->host = i % g.n_hosts;
		enum bt_key_type t = !strcmp(g.key, "p256") || (!strcmp(g.key, "mixed") && (i & 1)) ? BT_KEY_P256
												   : BT_KEY_K256;
		struct bt_pubkey *pk = NULL;
		if (bt_privkey_generate(t, &a->key) < 0 || bt_privkey_public(a->key, &pk) < 0 ||
		    bt_pubkey_multikey(pk, a->mk, sizeof a->mk) < 0)
			die("key generation failed");
		bt_pubkey_free(&pk);
	}
	bt_car_init(&g.chk, 0);
	generate();

	g.base = event_base_new();
	if (!g.base)
		die("event base failed");
	struct bt_http_limits lim = { .server_hdr = "fakepds" };
	for (int i = 0; i < g.n_hosts; i++) {
		int fd = listen_on(g.bind, g.host[i].port);
		if (fd < 0) {
			fprintf(stderr, "fakepds: cannot listen on %s:%d: %s\n", g.bind, g.host[i].port, strerror(-fd));
			return 2;
		}
		g.host[i].http = bt_http_server_new(g.base, fd, &lim, on_req, &g.host[i]);
		if (!g.host[i].http)
			die("http server failed");
	}
	struct event *sigint = evsignal_new(g.base, SIGINT, on_signal, NULL);
	struct event *sigterm = evsignal_new(g.base, SIGTERM, on_signal, NULL);
	struct event *sigusr1 = evsignal_new(g.base, SIGUSR1, on_usr1, NULL);
	event_add(sigint, NULL);
	event_add(sigterm, NULL);
	event_add(sigusr1, NULL);
	g.tick = event_new(g.base, -1, EV_PERSIST, on_tick, NULL);
	fprintf(stderr,
		"fakepds: listening on %s:%d..%d hosts=%d accounts=%d events=%" PRIu64 " (backlog %" PRIu64
		") rate=%.1f seconds=%.1f key=%s did=did:plc:%s...\n",
		g.bind, g.port, g.port + g.n_hosts - 1, g.n_hosts, g.n_acct, g.n_ev, g.backlog, g.rate, g.seconds,
		g.key, g.did_prefix);
	if (!g.wait_sub && !g.wait_sig)
		start();
	event_base_dispatch(g.base);

	/* Close subscribers and let their close callbacks run so nothing leaks. */
	bool any = false;
	for (int i = 0; i < g.n_hosts; i++) {
		bt_http_server_free(&g.host[i].http);
		for (struct sub *s = g.host[i].subs; s; s = s->next_s, any = true)
			bt_ws_close(s->ws, 1001, "going away");
	}
	if (any)
		event_base_loopexit(g.base, &(struct timeval){ 1, 0 }), event_base_dispatch(g.base);
	event_free(g.tick);
	event_free(sigint);
	event_free(sigterm);
	event_free(sigusr1);
	event_base_free(g.base);
	for (uint64_t j = 0; j < (g.live ? g.log_max : g.n_ev); j++)
		free(g.fr[j].p);
	free(g.fr);
	for (int i = 0; i < g.n_hosts; i++)
		free(g.host[i].ev);
	for (int i = 0; i < g.n_acct; i++) {
		bt_privkey_free(&g.acct[i].key);
		nd_unref(g.acct[i].root);
	}
	free(g.acct);
	free(g.host);
	free(g.dirty);
	bt_car_free(&g.chk);
	bt_buf_free(&g.rec);
	bt_buf_free(&g.uns);
	bt_buf_free(&g.com);
	bt_buf_free(&g.car);
	bt_buf_free(&g.nodes);
	bt_buf_free(&g.tmp);
	bt_buf_free(&g.fr_buf);
	bt_buf_free(&g.enc);
	return 0;
}
