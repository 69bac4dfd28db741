/*
 * NAME
 *	fakepds - a fast PDS + PLC directory simulator for benchmarks and tests
 * DESCRIPTION
 *	fakepds --port P --accounts N --rate R --seconds S [--key k256|p256|mixed]
 *	        [--log-max M] [--mst-cap C] [--backlog B] [--bind ADDR] [--start-on-subscribe]
 *
 *	Serves, on one plain-HTTP port (bt_http + bt_ws on libevent):
 *	  GET /xrpc/com.atproto.server.describeServer   liveness probe of requestCrawl
 *	  GET /<did>                                     PLC-format DID document (it is its own PLC:
 *	                                                 start the relay with RELAY_PLC_HOST=http://127.0.0.1:P)
 *	  GET /xrpc/com.atproto.sync.getRepoStatus?did=  {did, active, rev}
 *	  GET /_stats                                    emitter counters as JSON (for tests/bench.sh)
 *	  WS  /xrpc/com.atproto.sync.subscribeRepos[?cursor=N]
 *
 *	The firehose carries real signed #commit frames at R events/s for S seconds, round-robin over
 *	N did:plc accounts (with --start-on-subscribe the S seconds start when the first subscriber
 *	connects, so a relay that subscribes late still sees every event live), then stays up (serving replay and DID documents) until SIGINT/SIGTERM.
 *	Each commit creates one record (or, once an account holds C records, updates one of them in
 *	turn), so every account's MST stays a single leaf node {l: null, e: [...]}: record keys are
 *	TIDs chosen so that their MST height is 0.  The frame's CAR holds the commit, the MST node and
 *	the record; since = the previous rev, prevData = the previous MST root, ops carry prev for
 *	updates, so the Sync 1.1 inversion holds.  Commits are signed with bt_privkey_sign over the
 *	canonical DAG-CBOR of the unsigned commit.  The frame's `time` has microseconds, so a consumer
 *	can measure end-to-end latency as its receive time minus `time`.
 *
 *	Every emitted frame is kept in an in-memory log of the last M events for cursor replay
 *	(cursor inside the log: events with seq > cursor; older: #info OutdatedCursor and the whole
 *	log; ahead of the head: FutureCursor error and close).  --backlog B generates B events before
 *	serving, and then a subscriber without a cursor starts at the beginning of the log (a
 *	throughput test without the signing cost on the clock).  Each subscriber is paced by its
 *	output queue (paused at 4 MiB, resumed on drain), so a slow reader never grows memory.
 *
 *	Single-threaded; this is a tool, so it allocates per frame (the log owns each frame).
 * DIAGNOSTICS
 *	Start-up errors: message on stderr, exit 2.  A "fakepds: done ..." line on stderr when the
 *	emission ends (emitted count, seconds, achieved rate, CPU µs per generated event).
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

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SUB_HIGH (4u << 20)
#define SUB_LOWAT (1u << 20)
#define MAX_CAP 64
#define COLL "app.bsky.feed.post/"

struct acct {
	char did[40];
	struct bt_privkey *key;
	char mk[BT_MULTIKEY_MAX];
	char rev[14];
	bool has_rev;
	struct bt_cid data;
	int n;                 /* records in the tree */
	uint64_t count;        /* commits so far */
	char keys[MAX_CAP][40];
	struct bt_cid vals[MAX_CAP];
};

struct frame {
	uint8_t *p;
	size_t n;
};

struct sub {
	struct bt_ws *ws;
	uint64_t next; /* next seq to send */
	struct sub *prev_s, *next_s;
};

static struct {
	int port, n_acct, mst_cap;
	double rate, seconds;
	uint64_t log_max, backlog;
	const char *key, *bind;
	char did_prefix[17];
	struct acct *acct;
	struct frame *log;
	uint64_t head; /* last seq emitted (0 = none) */
	uint64_t emitted, next_acct;
	uint64_t last_us; /* TID clock */
	double t_start, cpu_start, gen_cpu;
	bool done, wait_sub, started;
	struct event_base *base;
	struct event *tick;
	struct bt_http_server *http;
	struct sub *subs;
	int n_subs;
	struct bt_buf rec, node, uns, com, car, tmp, fr;
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

static void iso_time(char out[40])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + k, 40 - k, ".%06ldZ", ts.tv_nsec / 1000);
}

static void lowb32(const uint8_t *p, size_t nbits_chars, char *out)
{
	/* nbits_chars characters of base32 from the bits of p (MSB first). */
	for (size_t i = 0; i < nbits_chars; i++) {
		size_t bit = i * 5, v = 0;
		for (int j = 0; j < 5; j++, bit++)
			v = (v << 1) | ((p[bit / 8] >> (7 - bit % 8)) & 1);
		out[i] = "abcdefghijklmnopqrstuvwxyz234567"[v];
	}
	out[nbits_chars] = 0;
}

/* did:plc:<16 chars from the port and a run nonce><8 chars = account index>. */
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

static int encode_node(const struct acct *a, struct bt_buf *b)
{
	/* {e: [{k, p, t, v}...], l: null}; keys in canonical order, prefix-compressed. */
	int rc = bt_cbor_w_map(b, 2);
	rc = rc ? rc : bt_cbor_w_str(b, "e");
	rc = rc ? rc : bt_cbor_w_array(b, (size_t)a->n);
	for (int i = 0; i < a->n && !rc; i++) {
		size_t p = 0, kl = strlen(a->keys[i]);
		if (i) {
			const char *x = a->keys[i - 1], *y = a->keys[i];
			while (x[p] && x[p] == y[p])
				p++;
		}
		rc = bt_cbor_w_map(b, 4);
		rc = rc ? rc : bt_cbor_w_str(b, "k");
		rc = rc ? rc : bt_cbor_w_bytes(b, a->keys[i] + p, kl - p);
		rc = rc ? rc : bt_cbor_w_str(b, "p");
		rc = rc ? rc : bt_cbor_w_uint(b, p);
		rc = rc ? rc : bt_cbor_w_str(b, "t");
		rc = rc ? rc : bt_cbor_w_null(b);
		rc = rc ? rc : bt_cbor_w_str(b, "v");
		rc = rc ? rc : bt_cbor_w_cid(b, &a->vals[i]);
	}
	rc = rc ? rc : bt_cbor_w_str(b, "l");
	rc = rc ? rc : bt_cbor_w_null(b);
	return rc;
}

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

/* Generates the next #commit of account a with sequence number seq into g.fr. */
static int gen_commit(struct acct *a, uint64_t seq)
{
	char rev[14], tm[40], path[40], text[128];
	for (;;) { /* a record key whose MST height is 0 keeps the tree a single leaf */
		tid_str(next_tid(), rev);
		snprintf(path, sizeof path, COLL "%s", rev);
		if (bt_mst_key_height((const uint8_t *)path, strlen(path)) == 0)
			break;
	}
	iso_time(tm);
	bt_buf_reset(&g.rec);
	bt_buf_reset(&g.node);
	bt_buf_reset(&g.uns);
	bt_buf_reset(&g.com);
	bt_buf_reset(&g.car);
	bt_buf_reset(&g.tmp);
	bt_buf_reset(&g.fr);
	int tl = snprintf(text, sizeof text, "fakepds post %" PRIu64 " by %s", a->count, a->did);
	/* record {text, $type, createdAt} */
	int rc = bt_cbor_w_map(&g.rec, 3);
	rc = rc ? rc : bt_cbor_w_str(&g.rec, "text");
	rc = rc ? rc : bt_cbor_w_text(&g.rec, text, (size_t)tl);
	rc = rc ? rc : bt_cbor_w_str(&g.rec, "$type");
	rc = rc ? rc : bt_cbor_w_str(&g.rec, "app.bsky.feed.post");
	rc = rc ? rc : bt_cbor_w_str(&g.rec, "createdAt");
	rc = rc ? rc : bt_cbor_w_str(&g.rec, tm);
	if (rc)
		return rc;
	struct bt_cid rcid, ncid, ccid, oldv;
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, g.rec.p, g.rec.len, &rcid);

	bool update = a->n >= g.mst_cap;
	int slot;
	if (update) {
		slot = (int)(a->count % (uint64_t)g.mst_cap);
		oldv = a->vals[slot];
	} else {
		slot = a->n++;
		snprintf(a->keys[slot], sizeof a->keys[slot], "%s", path);
	}
	a->vals[slot] = rcid;
	if ((rc = encode_node(a, &g.node)))
		return rc;
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, g.node.p, g.node.len, &ncid);

	uint8_t sig[64];
	if ((rc = encode_commit(a, rev, &ncid, NULL, &g.uns)))
		return rc;
	if ((rc = bt_privkey_sign(a->key, g.uns.p, g.uns.len, sig)))
		return rc;
	if ((rc = encode_commit(a, rev, &ncid, sig, &g.com)))
		return rc;
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, g.com.p, g.com.len, &ccid);

	rc = bt_car_write_header(&g.car, &ccid);
	rc = rc ? rc : bt_car_write_block(&g.car, &ccid, g.com.p, g.com.len);
	rc = rc ? rc : bt_car_write_block(&g.car, &ncid, g.node.p, g.node.len);
	rc = rc ? rc : bt_car_write_block(&g.car, &rcid, g.rec.p, g.rec.len);
	if (rc)
		return rc;

	static struct bt_fh_msg m; /* large (ops[200]); reused */
	memset(&m, 0, offsetof(struct bt_fh_msg, ops));
	m.type = BT_FH_COMMIT;
	m.op = 1;
	m.did = (struct bt_bytes){ (const uint8_t *)a->did, strlen(a->did) };
	m.rev = (struct bt_bytes){ (const uint8_t *)rev, 13 };
	m.has_since = a->has_rev;
	m.since = (struct bt_bytes){ (const uint8_t *)a->rev, a->has_rev ? 13 : 0 };
	m.time = (struct bt_bytes){ (const uint8_t *)tm, strlen(tm) };
	m.commit = ccid;
	m.has_prev_data = a->has_rev;
	m.prev_data = a->data;
	m.blocks = (struct bt_bytes){ g.car.p, g.car.len };
	m.n_ops = 1;
	memset(&m.ops[0], 0, sizeof m.ops[0]);
	const char *act = update ? "update" : "create";
	m.ops[0].action = (struct bt_bytes){ (const uint8_t *)act, strlen(act) };
	m.ops[0].path = (struct bt_bytes){ (const uint8_t *)a->keys[slot], strlen(a->keys[slot]) };
	m.ops[0].has_cid = true;
	m.ops[0].cid = rcid;
	m.ops[0].has_prev = update;
	if (update)
		m.ops[0].prev = oldv;
	size_t seq_off;
	if ((rc = bt_fh_encode_noseq(&m, &g.tmp, &seq_off)))
		return rc;
	if ((rc = bt_fh_splice_seq(g.tmp.p, g.tmp.len, seq_off, seq, &g.fr)))
		return rc;
	memcpy(a->rev, rev, 14);
	a->has_rev = true;
	a->data = ncid;
	a->count++;
	return 0;
}

static void send_info_outdated(struct sub *s);

/* Sends log frames to s while its output queue is below SUB_HIGH. */
static void pump(struct sub *s)
{
	uint64_t oldest = g.head > g.log_max ? g.head - g.log_max + 1 : 1;
	if (s->next < oldest) {
		send_info_outdated(s);
		s->next = oldest;
	}
	while (s->next <= g.head && bt_ws_outq(s->ws) < SUB_HIGH) {
		const struct frame *f = &g.log[s->next % g.log_max];
		if (bt_ws_send(s->ws, BT_WS_BINARY, f->p, f->n) < 0)
			return;
		s->next++;
	}
}

static void send_info_outdated(struct sub *s)
{
	bt_buf_reset(&g.tmp);
	if (!bt_fh_encode_info(&g.tmp, "OutdatedCursor", "cursor is older than the replay log"))
		bt_ws_send(s->ws, BT_WS_BINARY, g.tmp.p, g.tmp.len);
}

/* Generates one event and appends it to the log; 0 or <0. */
static int emit_one(void)
{
	struct acct *a = &g.acct[g.next_acct++ % (uint64_t)g.n_acct];
	uint64_t seq = g.head + 1;
	double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	int rc = gen_commit(a, seq);
	g.gen_cpu += now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
	if (rc)
		return rc;
	struct frame *f = &g.log[seq % g.log_max];
	free(f->p);
	f->p = malloc(g.fr.len);
	if (!f->p)
		return -ENOMEM;
	memcpy(f->p, g.fr.p, g.fr.len);
	f->n = g.fr.len;
	g.head = seq;
	g.emitted++;
	return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	if (g.done || !g.started)
		return;
	double el = now_s(CLOCK_MONOTONIC) - g.t_start;
	uint64_t want = (uint64_t)(el * g.rate) + g.backlog;
	if (el >= g.seconds)
		want = (uint64_t)(g.seconds * g.rate) + g.backlog;
	/* Bounded work per tick so the loop still serves HTTP when the CPU cannot keep up. */
	for (int k = 0; g.emitted < want && k < 2000; k++)
		if (emit_one() < 0) {
			fprintf(stderr, "fakepds: frame generation failed\n");
			break;
		}
	for (struct sub *s = g.subs; s; s = s->next_s)
		pump(s);
	if (el >= g.seconds && g.emitted >= want) {
		g.done = true;
		double live = (double)(g.emitted - g.backlog);
		fprintf(stderr,
			"fakepds: done emitted=%" PRIu64 " seconds=%.3f rate=%.1f gen_cpu_us_per_event=%.1f cpu_s=%.3f\n",
			g.emitted, el, live / (el > 0 ? el : 1), g.emitted ? g.gen_cpu * 1e6 / (double)g.emitted : 0.0,
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
	if (s->prev_s)
		s->prev_s->next_s = s->next_s;
	else
		g.subs = s->next_s;
	if (s->next_s)
		s->next_s->prev_s = s->prev_s;
	g.n_subs--;
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
			 a->did, i, a->did, a->did, a->mk, g.port);
	bt_http_respond(r, 200, "application/did+ld+json", body, (size_t)n);
}

static void on_req(struct bt_http_req *r, void *arg)
{
	const char *path = bt_http_req_path(r);
	char body[512];
	if (!strcmp(path, "/xrpc/com.atproto.sync.subscribeRepos")) {
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
		s->next_s = g.subs;
		if (g.subs)
			g.subs->prev_s = s;
		g.subs = s;
		g.n_subs++;
		if (!g.started) { /* --start-on-subscribe: the emission clock starts now */
			g.started = true;
			g.t_start = now_s(CLOCK_MONOTONIC);
			g.cpu_start = now_s(CLOCK_PROCESS_CPUTIME_ID);
		}
		if (has_cursor && cursor > g.head) {
			bt_buf_reset(&g.tmp);
			if (!bt_fh_encode_error(&g.tmp, "FutureCursor", "cursor is ahead of the newest event"))
				bt_ws_send(s->ws, BT_WS_BINARY, g.tmp.p, g.tmp.len);
			bt_ws_close(s->ws, 1008, "FutureCursor");
			s->next = UINT64_MAX;
			return;
		}
		if (has_cursor)
			s->next = cursor + 1;
		else
			s->next = g.backlog ? 1 : g.head + 1;
		if (has_cursor && cursor == 0)
			s->next = g.head > g.log_max ? g.head - g.log_max + 1 : 1;
		pump(s);
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
			 g.port);
		json_reply(r, 200, body);
	} else if (!strcmp(path, "/xrpc/com.atproto.sync.getRepoStatus")) {
		char did[64];
		int i = bt_http_req_param(r, "did", did, sizeof did) > 0 ? did_index(did) : -1;
		if (i < 0) {
			json_reply(r, 404, "{\"error\":\"RepoNotFound\",\"message\":\"no such repo\"}");
			return;
		}
		const struct acct *a = &g.acct[i];
		snprintf(body, sizeof body, "{\"did\":\"%s\",\"active\":true%s%s%s}", a->did,
			 a->has_rev ? ",\"rev\":\"" : "", a->has_rev ? a->rev : "", a->has_rev ? "\"" : "");
		json_reply(r, 200, body);
	} else if (!strcmp(path, "/_stats")) {
		snprintf(body, sizeof body,
			 "{\"seq\":%" PRIu64 ",\"started\":%s,\"emitted\":%" PRIu64 ",\"elapsed_s\":%.3f,\"done\":%s,\"subscribers\":%d,"
			 "\"gen_cpu_us_per_event\":%.1f,\"cpu_s\":%.3f}",
			 g.head, g.started ? "true" : "false", g.emitted, now_s(CLOCK_MONOTONIC) - g.t_start,
			 g.done ? "true" : "false", g.n_subs,
			 g.emitted ? g.gen_cpu * 1e6 / (double)g.emitted : 0.0,
			 now_s(CLOCK_PROCESS_CPUTIME_ID) - g.cpu_start);
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
		"usage: fakepds --port P --accounts N --rate R --seconds S [--key k256|p256|mixed]\n"
		"               [--log-max M] [--mst-cap C] [--backlog B] [--bind ADDR] [--start-on-subscribe]\n"
		"  A PDS + PLC simulator: R signed #commit events/s for S seconds over N did:plc accounts;\n"
		"  also serves the DID documents (use it as RELAY_PLC_HOST).  Runs until SIGINT/SIGTERM.\n");
	exit(2);
}

int main(int argc, char **argv)
{
	g.port = 0;
	g.n_acct = 100;
	g.rate = 100;
	g.seconds = 10;
	g.key = "k256";
	g.bind = "127.0.0.1";
	g.log_max = 200000;
	g.mst_cap = 8;
	static const struct option lo[] = { { "port", 1, 0, 'p' },    { "accounts", 1, 0, 'a' },
					    { "rate", 1, 0, 'r' },    { "seconds", 1, 0, 's' },
					    { "key", 1, 0, 'k' },     { "log-max", 1, 0, 'l' },
					    { "mst-cap", 1, 0, 'm' }, { "backlog", 1, 0, 'b' },
					    { "bind", 1, 0, 'B' },    { "help", 0, 0, 'h' },
					    { "start-on-subscribe", 0, 0, 'W' },
					    { 0, 0, 0, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p': g.port = atoi(optarg); break;
		case 'a': g.n_acct = atoi(optarg); break;
		case 'r': g.rate = atof(optarg); break;
		case 's': g.seconds = atof(optarg); break;
		case 'k': g.key = optarg; break;
		case 'l': g.log_max = strtoull(optarg, NULL, 10); break;
		case 'm': g.mst_cap = atoi(optarg); break;
		case 'b': g.backlog = strtoull(optarg, NULL, 10); break;
		case 'B': g.bind = optarg; break;
		case 'W': g.wait_sub = true; break;
		default: usage();
		}
	}
	if (g.port <= 0 || g.port > 65535 || g.n_acct <= 0 || g.n_acct > (1 << 24) || g.rate < 0 ||
	    g.seconds < 0 || g.log_max < 16 || g.mst_cap < 1 || g.mst_cap > MAX_CAP ||
	    (strcmp(g.key, "k256") && strcmp(g.key, "p256") && strcmp(g.key, "mixed")))
		usage();
	signal(SIGPIPE, SIG_IGN);

	/* DID prefix: unique per run, so a relay's caches never see stale documents. */
	uint8_t seed[32], h[32];
	snprintf((char *)seed, sizeof seed, "%d/%ld/%d", g.port, (long)time(NULL), (int)getpid());
	bt_sha256(seed, strlen((char *)seed), h);
	lowb32(h, 16, g.did_prefix);

	g.acct = calloc((size_t)g.n_acct, sizeof *g.acct);
	g.log = calloc(g.log_max, sizeof *g.log);
	if (!g.acct || !g.log)
		die("out of memory");
	for (int i = 0; i < g.n_acct; i++) {
		struct acct *a = &g.acct[i];
		make_did(i, a->did);
		enum bt_key_type t = !strcmp(g.key, "p256") || (!strcmp(g.key, "mixed") && (i & 1)) ? BT_KEY_P256
												   : BT_KEY_K256;
		struct bt_pubkey *pk = NULL;
		if (bt_privkey_generate(t, &a->key) < 0 || bt_privkey_public(a->key, &pk) < 0 ||
		    bt_pubkey_multikey(pk, a->mk, sizeof a->mk) < 0)
			die("key generation failed");
		bt_pubkey_free(&pk);
	}
	for (uint64_t i = 0; i < g.backlog; i++)
		if (emit_one() < 0)
			die("backlog generation failed");

	g.base = event_base_new();
	int fd = listen_on(g.bind, g.port);
	if (!g.base || fd < 0) {
		fprintf(stderr, "fakepds: cannot listen on %s:%d: %s\n", g.bind, g.port, strerror(fd < 0 ? -fd : 0));
		return 2;
	}
	struct bt_http_limits lim = { .server_hdr = "fakepds" };
	g.http = bt_http_server_new(g.base, fd, &lim, on_req, NULL);
	if (!g.http)
		die("http server failed");
	struct event *sigint = evsignal_new(g.base, SIGINT, on_signal, NULL);
	struct event *sigterm = evsignal_new(g.base, SIGTERM, on_signal, NULL);
	event_add(sigint, NULL);
	event_add(sigterm, NULL);
	g.tick = event_new(g.base, -1, EV_PERSIST, on_tick, NULL);
	event_add(g.tick, &(struct timeval){ 0, 1000 });
	g.t_start = now_s(CLOCK_MONOTONIC);
	g.cpu_start = now_s(CLOCK_PROCESS_CPUTIME_ID);
	g.started = !g.wait_sub;
	fprintf(stderr, "fakepds: listening on %s:%d accounts=%d rate=%.1f seconds=%.1f key=%s did=did:plc:%s...\n",
		g.bind, g.port, g.n_acct, g.rate, g.seconds, g.key, g.did_prefix);
	event_base_dispatch(g.base);

	bt_http_server_free(&g.http);
	/* Close subscribers and let their close callbacks run so nothing leaks. */
	for (struct sub *s = g.subs; s; s = s->next_s)
		bt_ws_close(s->ws, 1001, "going away");
	if (g.subs)
		event_base_loopexit(g.base, &(struct timeval){ 1, 0 }), event_base_dispatch(g.base);
	event_free(g.tick);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(g.base);
	for (uint64_t i = 0; i < g.log_max; i++)
		free(g.log[i].p);
	free(g.log);
	for (int i = 0; i < g.n_acct; i++)
		bt_privkey_free(&g.acct[i].key);
	free(g.acct);
	bt_buf_free(&g.rec);
	bt_buf_free(&g.node);
	bt_buf_free(&g.uns);
	bt_buf_free(&g.com);
	bt_buf_free(&g.car);
	bt_buf_free(&g.tmp);
	bt_buf_free(&g.fr);
	return 0;
}
