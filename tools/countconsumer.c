/*
 * NAME
 *	countconsumer - a firehose consumer that counts, times and (optionally) verifies frames
 * DESCRIPTION
 *	countconsumer --url ws://HOST:PORT/xrpc/com.atproto.sync.subscribeRepos[?cursor=N]
 *	              [--seconds S] [--idle S] [--count N] [--verify PLC_URL]
 *
 *	Connects with bt_ws, decodes every frame with bt_fh_decode and counts frames by type, checks
 *	that seq strictly increases, and records the latency of each #commit as its receive time minus
 *	the frame's `time` field (meaningful when the producer stamps `time` at creation, as fakepds
 *	does).  It stops after S seconds, after N commits, or after --idle seconds without a frame
 *	once at least one arrived, or on SIGTERM/SIGINT, and prints one line of key=value results on stdout:
 *	  frames commits other errors seq_first seq_last seq_order_errors rate_per_s lat_p50_ms
 *	  lat_p90_ms lat_p99_ms lat_max_ms [verified verify_failed chain_breaks inversion_failed]
 *	rate_per_s is commits / (last receive - first receive).
 *
 *	With --verify PLC_URL each #commit is also checked end to end like a relay would: CAR parses
 *	and its root is the commit, the commit decodes and matches repo and rev, the signature
 *	verifies under the #atproto key of the DID document fetched (blocking libcurl, cached) from
 *	PLC_URL/<did>, since/prevData chain onto the account's previous commit, and, for the
 *	inverting the ops on the new MST with bt_mst_invert (the nodes it needs must be in the CAR)
 *	gives prevData, as a relay with strict Sync 1.1 validation checks it.
 *	Meant for testing fakepds and for spot checks, not for speed.
 * DIAGNOSTICS
 *	Exit 0 when at least one frame arrived and (with --verify) nothing failed, 1 otherwise,
 *	2 on a usage error.  Failure reasons are printed on stderr (the first few).
 */
#include "bt_buf.h"
#include "bt_car.h"
#include "bt_cbor.h"
#include "bt_cid.h"
#include "bt_commit.h"
#include "bt_crypto.h"
#include "bt_did.h"
#include "bt_fh.h"
#include "bt_mst.h"
#include "bt_ws.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ident {
	char *did; /* owned; NULL = empty slot */
	struct bt_pubkey *key;
	char rev[16];
	bool has_state;
	struct bt_cid data;
};

static struct {
	const char *url, *plc;
	double seconds, idle;
	uint64_t max_count;
	struct event_base *base;
	struct event *timer;
	double t0, t_first, t_last;
	uint64_t frames, commits, other, errors, seq_first, seq_last, seq_order;
	bool have_seq;
	double *lat;
	size_t n_lat, cap_lat;
	uint64_t verified, vfail, chain_breaks, inv_fail;
	struct ident *tab;
	size_t tab_cap, tab_n;
	struct bt_car car;
	struct bt_buf uns, node, body;
	CURL *curl;
	int closed_code;
} g;

static struct bt_fh_msg msg;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "YYYY-MM-DDTHH:MM:SS[.frac]Z" -> seconds since the epoch, or -1. */
static double parse_time(const uint8_t *p, size_t n)
{
	char s[64];
	if (n < 20 || n >= sizeof s)
		return -1;
	memcpy(s, p, n);
	s[n] = 0;
	struct tm tm = { 0 };
	char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!e)
		return -1;
	double frac = 0;
	if (*e == '.') {
		double sc = 0.1;
		for (e++; *e >= '0' && *e <= '9'; e++, sc /= 10)
			frac += (*e - '0') * sc;
	}
	return (double)timegm(&tm) + frac;
}

static void fail(const char *what, const struct bt_fh_msg *m)
{
	g.vfail++;
	if (g.vfail <= 5)
		fprintf(stderr, "countconsumer: verify failed: %s (repo %.*s rev %.*s)\n", what, (int)m->did.n,
			(const char *)m->did.p, (int)m->rev.n, (const char *)m->rev.p);
}

static size_t hash_did(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return (size_t)h;
}

static struct ident *lookup(const uint8_t *p, size_t n)
{
	if ((g.tab_n + 1) * 2 > g.tab_cap) {
		size_t nc = g.tab_cap ? g.tab_cap * 2 : 1024;
		struct ident *nt = calloc(nc, sizeof *nt);
		if (!nt)
			return NULL;
		for (size_t i = 0; i < g.tab_cap; i++) {
			if (!g.tab[i].did)
				continue;
			size_t j = hash_did((uint8_t *)g.tab[i].did, strlen(g.tab[i].did)) & (nc - 1);
			while (nt[j].did)
				j = (j + 1) & (nc - 1);
			nt[j] = g.tab[i];
		}
		free(g.tab);
		g.tab = nt;
		g.tab_cap = nc;
	}
	size_t j = hash_did(p, n) & (g.tab_cap - 1);
	while (g.tab[j].did) {
		if (strlen(g.tab[j].did) == n && !memcmp(g.tab[j].did, p, n))
			return &g.tab[j];
		j = (j + 1) & (g.tab_cap - 1);
	}
	g.tab[j].did = strndup((const char *)p, n);
	if (!g.tab[j].did)
		return NULL;
	g.tab_n++;
	return &g.tab[j];
}

static size_t curl_write(char *p, size_t sz, size_t nm, void *arg)
{
	return bt_buf_append(arg, p, sz * nm) ? 0 : sz * nm;
}

static int resolve(struct ident *id)
{
	char url[700];
	snprintf(url, sizeof url, "%s/%s", g.plc, id->did);
	bt_buf_reset(&g.body);
	curl_easy_setopt(g.curl, CURLOPT_URL, url);
	curl_easy_setopt(g.curl, CURLOPT_WRITEFUNCTION, curl_write);
	curl_easy_setopt(g.curl, CURLOPT_WRITEDATA, &g.body);
	curl_easy_setopt(g.curl, CURLOPT_TIMEOUT, 5L);
	long code = 0;
	if (curl_easy_perform(g.curl) != CURLE_OK)
		return -1;
	curl_easy_getinfo(g.curl, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200)
		return -1;
	struct bt_identity ident;
	const char *why;
	if (bt_diddoc_parse((const char *)g.body.p, g.body.len, id->did, &ident, &why) < 0 || !ident.key) {
		bt_identity_clear(&ident);
		return -1;
	}
	id->key = ident.key;
	ident.key = NULL;
	bt_identity_clear(&ident);
	return 0;
}

/* Sync 1.1: inverting the ops on the new tree (the relay's own bt_mst_invert) must give prevData. */
static bool inversion_ok(const struct bt_fh_msg *m, const struct bt_cid *root)
{
	struct bt_cid prev;
	const char *why = NULL;
	int rc = bt_mst_invert(&g.car, root, m->ops, m->n_ops, &prev, &why);
	if (rc) {
		if (g.inv_fail < 5)
			fprintf(stderr, "countconsumer: inversion failed: %s (repo %.*s rev %.*s)\n", why ? why : "?",
				(int)m->did.n, (const char *)m->did.p, (int)m->rev.n, (const char *)m->rev.p);
		return false;
	}
	return bt_cid_eq(&prev, &m->prev_data);
}

static void verify_commit(const struct bt_fh_msg *m)
{
	const char *why = NULL;
	if (bt_car_parse(&g.car, m->blocks.p, m->blocks.n, &why) < 0)
		return fail(why ? why : "car", m);
	if (!bt_cid_eq(&g.car.root, &m->commit))
		return fail("car root is not the commit", m);
	const struct bt_car_block *cb = bt_car_get(&g.car, &m->commit);
	if (!cb)
		return fail("commit block missing", m);
	struct bt_commit c;
	if (bt_commit_decode(cb->data, cb->len, &c, &why) < 0)
		return fail(why ? why : "commit decode", m);
	if (c.version != 3 || c.did.n != m->did.n || memcmp(c.did.p, m->did.p, c.did.n) || c.rev.n != m->rev.n ||
	    memcmp(c.rev.p, m->rev.p, c.rev.n))
		return fail("commit did/rev/version mismatch", m);
	struct ident *id = lookup(m->did.p, m->did.n);
	if (!id)
		return fail("out of memory", m);
	if (!id->key && resolve(id) < 0)
		return fail("DID resolution", m);
	bt_buf_reset(&g.uns);
	if (bt_commit_unsigned(cb->data, cb->len, &g.uns) < 0)
		return fail("unsigned bytes", m);
	if (bt_pubkey_verify(id->key, g.uns.p, g.uns.len, c.sig.p, c.sig.n) < 0)
		return fail("signature", m);
	const struct bt_car_block *nb = bt_car_get(&g.car, &c.data);
	if (!nb)
		return fail("MST root block missing", m);
	for (size_t i = 0; i < m->n_ops; i++)
		if (m->ops[i].has_cid && !bt_car_get(&g.car, &m->ops[i].cid))
			return fail("record block missing", m);
	if (id->has_state) {
		if (!m->has_since || m->since.n != strlen(id->rev) || memcmp(m->since.p, id->rev, m->since.n) ||
		    !m->has_prev_data || !bt_cid_eq(&m->prev_data, &id->data))
			g.chain_breaks++;
	}
	if (m->has_prev_data && !inversion_ok(m, &c.data))
		g.inv_fail++;
	id->has_state = true;
	snprintf(id->rev, sizeof id->rev, "%.*s", (int)m->rev.n, (const char *)m->rev.p);
	id->data = c.data;
	g.verified++;
}

static void on_msg(struct bt_ws *ws, int opcode, const uint8_t *p, size_t n, void *arg)
{
	double t = now_s();
	const char *why = NULL;
	g.frames++;
	if (bt_fh_decode(p, n, &msg, &why) < 0) {
		g.errors++;
		if (g.errors <= 3)
			fprintf(stderr, "countconsumer: bad frame: %s\n", why ? why : "?");
		return;
	}
	if (msg.has_seq) {
		if (g.have_seq && msg.seq <= (int64_t)g.seq_last)
			g.seq_order++;
		if (!g.have_seq)
			g.seq_first = (uint64_t)msg.seq;
		g.have_seq = true;
		g.seq_last = (uint64_t)msg.seq;
	}
	if (msg.type != BT_FH_COMMIT) {
		g.other++;
		if (msg.type == BT_FH_ERROR)
			fprintf(stderr, "countconsumer: error frame %.*s\n", (int)msg.error.n, (const char *)msg.error.p);
		return;
	}
	if (!g.commits)
		g.t_first = t;
	g.t_last = t;
	g.commits++;
	double ft = parse_time(msg.time.p, msg.time.n);
	if (ft > 0) {
		if (g.n_lat == g.cap_lat) {
			size_t nc = g.cap_lat ? g.cap_lat * 2 : 65536;
			double *nl = realloc(g.lat, nc * sizeof *nl);
			if (nl)
				g.lat = nl, g.cap_lat = nc;
		}
		if (g.n_lat < g.cap_lat)
			g.lat[g.n_lat++] = t - ft;
	}
	if (g.plc)
		verify_commit(&msg);
	if (g.max_count && g.commits >= g.max_count)
		bt_ws_close(ws, 1000, "done");
}

static void on_close(struct bt_ws *ws, int code, const char *reason, void *arg)
{
	g.closed_code = code;
	if (code != 1000)
		fprintf(stderr, "countconsumer: connection closed %d %s\n", code, reason ? reason : "");
	event_base_loopbreak(g.base);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	double t = now_s();
	if ((g.seconds > 0 && t - g.t0 >= g.seconds) || (g.idle > 0 && g.frames && t - g.t_last >= g.idle &&
							     t - g.t0 >= g.idle))
		event_base_loopbreak(g.base);
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(g.base); /* SIGTERM/SIGINT: stop and print what arrived so far */
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double q)
{
	if (!g.n_lat)
		return 0;
	size_t i = (size_t)(q * (double)(g.n_lat - 1) + 0.5);
	return g.lat[i] * 1000.0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "url", 1, 0, 'u' },   { "seconds", 1, 0, 's' }, { "idle", 1, 0, 'i' },
					    { "count", 1, 0, 'c' }, { "verify", 1, 0, 'v' },  { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'u': g.url = optarg; break;
		case 's': g.seconds = atof(optarg); break;
		case 'i': g.idle = atof(optarg); break;
		case 'c': g.max_count = strtoull(optarg, NULL, 10); break;
		case 'v': g.plc = optarg; break;
		default: g.url = NULL; optind = argc; break;
		}
	}
	if (!g.url) {
		fprintf(stderr, "usage: countconsumer --url WS_URL [--seconds S] [--idle S] [--count N] "
				"[--verify PLC_URL]\n");
		return 2;
	}
	if (g.plc) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		g.curl = curl_easy_init();
		bt_car_init(&g.car, 0);
	}
	g.base = event_base_new();
	static const struct bt_ws_cbs cbs = { .on_msg = on_msg, .on_close = on_close };
	struct bt_ws_opts o = { .max_msg = 5000000, .user_agent = "countconsumer" };
	g.t0 = now_s();
	struct bt_ws *ws = bt_ws_connect(g.base, g.url, &cbs, NULL, &o);
	if (!ws) {
		fprintf(stderr, "countconsumer: bad url %s\n", g.url);
		return 2;
	}
	g.timer = event_new(g.base, -1, EV_PERSIST, on_timer, NULL);
	event_add(g.timer, &(struct timeval){ 0, 100000 });
	struct event *sigterm = evsignal_new(g.base, SIGTERM, on_term, NULL);
	struct event *sigint = evsignal_new(g.base, SIGINT, on_term, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_base_dispatch(g.base);
	event_free(sigterm);
	event_free(sigint);
	if (!g.closed_code) { /* stopped by the timer: close and let on_close run */
		event_del(g.timer);
		bt_ws_close(ws, 1000, "done");
		event_base_dispatch(g.base);
	}
	if (g.n_lat)
		qsort(g.lat, g.n_lat, sizeof *g.lat, cmp_d);
	double span = g.t_last - g.t_first;
	printf("frames=%" PRIu64 " commits=%" PRIu64 " other=%" PRIu64 " errors=%" PRIu64 " seq_first=%" PRIu64
	       " seq_last=%" PRIu64 " seq_order_errors=%" PRIu64 " span_s=%.3f rate_per_s=%.1f lat_p50_ms=%.2f"
	       " lat_p90_ms=%.2f lat_p99_ms=%.2f lat_max_ms=%.2f",
	       g.frames, g.commits, g.other, g.errors, g.seq_first, g.seq_last, g.seq_order, span,
	       span > 0 ? (double)(g.commits - 1) / span : 0.0, pct(0.5), pct(0.9), pct(0.99), pct(1.0));
	if (g.plc)
		printf(" verified=%" PRIu64 " verify_failed=%" PRIu64 " chain_breaks=%" PRIu64
		       " inversion_failed=%" PRIu64,
		       g.verified, g.vfail, g.chain_breaks, g.inv_fail);
	printf("\n");
	bool ok = g.frames > 0 && !g.errors && !g.seq_order && (!g.plc || (!g.vfail && !g.inv_fail && !g.chain_breaks));
	event_free(g.timer);
	event_base_free(g.base);
	free(g.lat);
	for (size_t i = 0; i < g.tab_cap; i++) {
		free(g.tab[i].did);
		bt_pubkey_free(&g.tab[i].key);
	}
	free(g.tab);
	bt_car_free(&g.car);
	bt_buf_free(&g.uns);
	bt_buf_free(&g.node);
	bt_buf_free(&g.body);
	if (g.curl) {
		curl_easy_cleanup(g.curl);
		curl_global_cleanup();
	}
	return ok ? 0 : 1;
}
