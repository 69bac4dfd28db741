/*
 * NAME
 *	test_fanout_xrpc - baton-fanout as a real process: the sync read queries
 * DESCRIPTION
 *	Plays supervisor and store: creates a segment with the supervisor's layout (K=1, N=1),
 *	starts baton-fanout (next to this binary: <build>/baton-fanout, or $BT_FANOUT_BIN) before
 *	the database exists (503), then creates a primary RocksDB and writes host and account
 *	records exactly as store/store_chain.c and store/store_main.c do, and checks over HTTP:
 *	  - listHosts (order, seq, status, limit/cursor paging, bad limit/cursor);
 *	  - getHostStatus (normalised hostname, HostNotFound, missing param);
 *	  - listRepos (every account with a commit exactly once, in DID order, over pages of the
 *	    default and small limits; head CID strings, rev, active, status);
 *	  - getRepoStatus, getLatestCommit (each inactive status's error, RepoNotSynchronized,
 *	    RepoNotFound, InvalidRequest) and getRepo (302 Location https://, http://localhost);
 *	  - records written while the fanout runs are seen (catch-up), other methods stay 501;
 *	  - listReposByCollection (pages, cursor, bad params) and /v1/listCollections (all, c=, cursor).
 * DIAGNOSTICS
 *	Prints "N passed, N failed"; the temp dir is kept on failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "bt_cid.h"
#include "bt_db.h"
#include "bt_pipe.h"
#include "bt_shm.h"
#include "bt_test.h"

#define N_ACCTS 1203 /* plain active accounts: more than two default pages */

static char dir[256];
static int port;
static pid_t child = -1;
static struct bt_shm *shm;
static struct bt_db *db;

/* ---- the store's side ---- */

static uint32_t last_host_id;

/* As sto_host_add + sto_host_flush: n/<name> -> be32 id, h/<id> -> bt_host_rec, m/hostid. */
static uint32_t add_host(const char *name, uint32_t status, uint64_t cursor)
{
	struct bt_host_rec rec;
	memset(&rec, 0, sizeof rec);
	rec.version = 1;
	rec.host_id = ++last_host_id;
	rec.status = status;
	rec.cursor = cursor;
	rec.created_ms = bt_wall_ms();
	rec.host_len = (uint16_t)strlen(name);
	memcpy(rec.host, name, rec.host_len);
	struct bt_db_batch *b = bt_db_batch_new();
	uint8_t idb[4];
	bt_be32_put(idb, rec.host_id);
	bt_db_batch_put(b, "m/hostid", 8, idb, 4);
	char k[BT_HOST_MAX + 4];
	bt_db_batch_put(b, k, bt_key_hostname(k, sizeof k, name, rec.host_len), idb, 4);
	char hk[6];
	bt_db_batch_put(b, hk, bt_key_host(hk, rec.host_id), &rec, sizeof rec);
	int rc = bt_db_write(db, b);
	bt_db_batch_free(&b);
	CHECKF(rc == 0, "write host %s: %d", name, rc);
	return rec.host_id;
}

static void did_of(int i, char *out, size_t cap)
{
	snprintf(out, cap, "did:plc:acct%06d", i);
}

static void rev_of(int i, char *out)
{
	/* A TID-shaped rev (13 base32-sortable chars). */
	static const char a[] = "234567abcdefghijklmnopqrstuvwxyz";
	unsigned v = (unsigned)i * 2654435761u;
	memcpy(out, "3l", 2);
	for (int j = 2; j < 13; j++) {
		out[j] = a[v % 32];
		v = v / 32 + (unsigned)j * 7u;
	}
	out[13] = 0;
}

static void cid_of(int i, struct bt_cid *c)
{
	char blk[32];
	int n = snprintf(blk, sizeof blk, "commit-%d", i);
	bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, (const uint8_t *)blk, (size_t)n, c);
}

/* As apply_account + flush_accounts: a/<did> -> bt_acct_rec. */
static void put_acct(struct bt_db_batch *b, const char *did, uint32_t host_id, bool active, const char *status,
		     int commit)
{
	struct bt_acct_rec a;
	memset(&a, 0, sizeof a);
	a.version = 1;
	a.host_id = host_id;
	a.flags = active ? BT_ACCT_ACTIVE : 0;
	a.last_seq = 42;
	a.updated_ms = bt_wall_ms();
	if (commit >= 0) {
		char rev[14];
		rev_of(commit, rev);
		a.rev_len = 13;
		memcpy(a.rev, rev, 13);
		struct bt_cid c;
		cid_of(commit, &c);
		a.head_len = c.len;
		memcpy(a.head_cid, c.b, c.len);
		cid_of(commit + 1000000, &c);
		a.data_len = c.len;
		memcpy(a.data_cid, c.b, c.len);
	}
	if (status) {
		a.status_len = (uint8_t)strlen(status);
		memcpy(a.status, status, a.status_len);
	}
	char k[BT_DID_MAX + 2];
	bt_db_batch_put(b, k, bt_key_acct(k, sizeof k, did, strlen(did)), &a, sizeof a);
}

/* ---- a blocking HTTP/1.1 client ---- */

static char resp[1 << 21];

static int http_get(const char *path, char **bodyp)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { 20, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	char req[2048];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	size_t got = 0;
	ssize_t r;
	while (got + 1 < sizeof resp && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
		got += (size_t)r;
	resp[got] = 0;
	close(fd);
	int status = 0;
	if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
		return -1;
	char *b = strstr(resp, "\r\n\r\n");
	*bodyp = b ? b + 4 : resp + got;
	return status;
}

/* GET path, expecting status; returns the parsed JSON body (owned) or NULL. */
static json_t *get_json(const char *path, int want)
{
	char *body;
	int st = http_get(path, &body);
	CHECKF(st == want, "GET %s -> %d, want %d: %.200s", path, st, want, st > 0 ? body : "");
	CHECKF(strstr(resp, "\r\nContent-Type: application/json\r\n") != NULL, "GET %s: content type", path);
	json_error_t je;
	json_t *j = json_loads(body, 0, &je);
	CHECKF(j != NULL, "GET %s: body is not JSON: %.200s", path, body);
	return j;
}

/* GET path, expecting the XRPC error name with status. */
static void expect_error(const char *path, int want, const char *error)
{
	json_t *j = get_json(path, want);
	const char *e = json_string_value(json_object_get(j, "error"));
	CHECKF(e && !strcmp(e, error), "GET %s: error %s, want %s", path, e ? e : "(none)", error);
	json_decref(j);
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

/* ---- the tests ---- */

static uint32_t h_pds1, h_local, h_banned;

static void test_hosts(void)
{
	json_t *j = get_json("/xrpc/com.atproto.sync.listHosts", 200);
	json_t *hs = json_object_get(j, "hosts");
	CHECKF(json_array_size(hs) == 3, "listHosts: %zu hosts", json_array_size(hs));
	CHECK(json_object_get(j, "cursor") == NULL);
	if (json_array_size(hs) == 3) {
		json_t *h0 = json_array_get(hs, 0), *h1 = json_array_get(hs, 1), *h2 = json_array_get(hs, 2);
		CHECK(!strcmp(jstr(h0, "hostname"), "pds1.example.com"));
		CHECK(json_integer_value(json_object_get(h0, "seq")) == 1234);
		CHECK(!strcmp(jstr(h0, "status"), "active"));
		CHECK(!strcmp(jstr(h1, "hostname"), "localhost:5555"));
		CHECK(!strcmp(jstr(h1, "status"), "idle"));
		CHECK(json_integer_value(json_object_get(h1, "seq")) == 0);
		CHECK(!strcmp(jstr(h2, "hostname"), "banned.example.org"));
		CHECK(!strcmp(jstr(h2, "status"), "banned"));
		CHECK(json_integer_value(json_object_get(h2, "seq")) == 77);
	}
	json_decref(j);

	/* Paging. */
	j = get_json("/xrpc/com.atproto.sync.listHosts?limit=2", 200);
	hs = json_object_get(j, "hosts");
	CHECK(json_array_size(hs) == 2);
	char path[256];
	snprintf(path, sizeof path, "/xrpc/com.atproto.sync.listHosts?limit=2&cursor=%s", jstr(j, "cursor"));
	CHECKF(!strcmp(jstr(j, "cursor"), "2"), "listHosts cursor '%s'", jstr(j, "cursor"));
	json_decref(j);
	j = get_json(path, 200);
	hs = json_object_get(j, "hosts");
	CHECK(json_array_size(hs) == 1 && !strcmp(jstr(json_array_get(hs, 0), "hostname"), "banned.example.org"));
	CHECK(json_object_get(j, "cursor") == NULL);
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.listHosts?cursor=3", 200);
	CHECK(json_array_size(json_object_get(j, "hosts")) == 0 && json_object_get(j, "cursor") == NULL);
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.listHosts?cursor=4294967295", 200);
	CHECK(json_array_size(json_object_get(j, "hosts")) == 0);
	json_decref(j);

	expect_error("/xrpc/com.atproto.sync.listHosts?limit=0", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listHosts?limit=1001", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listHosts?limit=abc", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listHosts?limit=", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listHosts?cursor=x1", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listHosts?cursor=99999999999", 400, "InvalidRequest");
	j = get_json("/xrpc/com.atproto.sync.listHosts?limit=1000", 200);
	CHECK(json_array_size(json_object_get(j, "hosts")) == 3);
	json_decref(j);

	/* getHostStatus */
	j = get_json("/xrpc/com.atproto.sync.getHostStatus?hostname=pds1.example.com", 200);
	CHECK(!strcmp(jstr(j, "hostname"), "pds1.example.com"));
	CHECK(json_integer_value(json_object_get(j, "seq")) == 1234);
	CHECK(!strcmp(jstr(j, "status"), "active"));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.getHostStatus?hostname=https%3A%2F%2FPDS1.Example.COM%2F", 200);
	CHECK(!strcmp(jstr(j, "hostname"), "pds1.example.com"));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.getHostStatus?hostname=localhost:5555", 200);
	CHECK(!strcmp(jstr(j, "status"), "idle"));
	json_decref(j);
	expect_error("/xrpc/com.atproto.sync.getHostStatus?hostname=nope.example.com", 404, "HostNotFound");
	expect_error("/xrpc/com.atproto.sync.getHostStatus?hostname=10.0.0.1", 404, "HostNotFound");
	expect_error("/xrpc/com.atproto.sync.getHostStatus", 400, "InvalidRequest");
}

/* Accounts besides the N_ACCTS plain ones: did, active, status, has a commit. */
static const struct special {
	const char *did;
	bool active;
	const char *status;
	bool commit;
	const char *latest_error; /* getLatestCommit's error, NULL = 200 */
	int latest_status;
} specials[] = {
	{ "did:plc:zz-takendown", false, "takendown", true, "RepoTakendown", 403 },
	{ "did:plc:zz-suspended", false, "suspended", true, "RepoSuspended", 403 },
	{ "did:plc:zz-deactivated", false, "deactivated", true, "RepoDeactivated", 403 },
	{ "did:plc:zz-deleted", false, "deleted", true, "RepoDeleted", 403 },
	{ "did:plc:zz-throttled", false, "throttled", true, "RepoInactive", 403 },
	{ "did:plc:zz-nostatus", false, NULL, true, "RepoInactive", 403 },
	{ "did:plc:zz-identityonly", true, NULL, false, "RepoNotSynchronized", 404 },
	{ "did:web:zz.example.com", true, NULL, true, NULL, 200 },
};
#define N_SPECIAL (sizeof specials / sizeof *specials)

static void write_accounts(void)
{
	struct bt_db_batch *b = bt_db_batch_new();
	/* Written in a shuffled order: listRepos must still come out sorted. */
	for (int k = 0; k < N_ACCTS; k++) {
		int i = (int)(((unsigned)k * 7919u) % N_ACCTS);
		char did[64];
		did_of(i, did, sizeof did);
		put_acct(b, did, i % 2 ? h_local : h_pds1, true, NULL, i);
	}
	for (size_t s = 0; s < N_SPECIAL; s++)
		put_acct(b, specials[s].did, h_pds1, specials[s].active, specials[s].status,
			 specials[s].commit ? 5000 + (int)s : -1);
	/* Something that is not an account record must not break listRepos. */
	bt_db_batch_put(b, "a/did:plc:zz-garbage", 20, "xx", 2);
	int rc = bt_db_write(db, b);
	bt_db_batch_free(&b);
	CHECKF(rc == 0, "write accounts %d", rc);
}

/* Walks listRepos with the given limit (0 = default); checks every repo once, in order. */
static void walk_repos(int limit)
{
	char path[512], cursor[300] = "";
	int total = 0, pages = 0, bad = 0;
	char prev[300] = "";
	int plain = 0;
	size_t special_seen = 0;
	for (;;) {
		int n = snprintf(path, sizeof path, "/xrpc/com.atproto.sync.listRepos?");
		if (limit)
			n += snprintf(path + n, sizeof path - (size_t)n, "limit=%d&", limit);
		if (cursor[0])
			snprintf(path + n, sizeof path - (size_t)n, "cursor=%s", cursor);
		json_t *j = get_json(path, 200);
		if (!j)
			break;
		pages++;
		json_t *rs = json_object_get(j, "repos");
		size_t want_max = limit ? (size_t)limit : 500;
		CHECKF(json_is_array(rs) && json_array_size(rs) <= want_max, "page %d: %zu repos", pages,
		       json_array_size(rs));
		size_t i;
		json_t *r;
		json_array_foreach(rs, i, r) {
			const char *did = jstr(r, "did");
			if (strcmp(did, prev) <= 0)
				bad++;
			snprintf(prev, sizeof prev, "%s", did);
			total++;
			int idx;
			if (sscanf(did, "did:plc:acct%d", &idx) == 1) {
				plain++;
				char rev[14], cs[BT_CID_STR_MAX];
				struct bt_cid c;
				rev_of(idx, rev);
				cid_of(idx, &c);
				bt_cid_to_str(&c, cs, sizeof cs);
				if (strcmp(jstr(r, "rev"), rev) || strcmp(jstr(r, "head"), cs) ||
				    !json_is_true(json_object_get(r, "active")) || json_object_get(r, "status")) {
					if (bad < 3)
						fprintf(stderr, "repo %s: %s\n", did, json_dumps(r, JSON_COMPACT));
					bad++;
				}
				continue;
			}
			size_t s;
			for (s = 0; s < N_SPECIAL; s++)
				if (!strcmp(specials[s].did, did))
					break;
			if (s == N_SPECIAL || !specials[s].commit) {
				fprintf(stderr, "unexpected repo %s\n", did);
				bad++;
				continue;
			}
			special_seen++;
			bool active = json_is_true(json_object_get(r, "active"));
			const char *st = json_string_value(json_object_get(r, "status"));
			if (active != specials[s].active || (specials[s].status ? !st || strcmp(st, specials[s].status) : st != NULL) ||
			    strncmp(jstr(r, "head"), "bafyrei", 7) || strlen(jstr(r, "rev")) != 13) {
				fprintf(stderr, "repo %s: %s\n", did, json_dumps(r, JSON_COMPACT));
				bad++;
			}
		}
		const char *c = json_string_value(json_object_get(j, "cursor"));
		if (!c) {
			json_decref(j);
			break;
		}
		CHECKF(strcmp(c, cursor) != 0, "cursor did not move: %s", c);
		snprintf(cursor, sizeof cursor, "%s", c);
		json_decref(j);
		if (pages > 3000)
			break;
	}
	size_t want_special = 0;
	for (size_t s = 0; s < N_SPECIAL; s++)
		want_special += specials[s].commit;
	CHECKF(bad == 0, "listRepos limit %d: %d bad entries", limit, bad);
	CHECKF(plain == N_ACCTS && special_seen == want_special, "listRepos limit %d: %d plain, %zu special", limit,
	       plain, special_seen);
	CHECKF(total == N_ACCTS + (int)want_special, "listRepos limit %d: %d repos in %d pages", limit, total, pages);
	int min_pages = (total + (limit ? limit : 500) - 1) / (limit ? limit : 500);
	CHECKF(pages >= min_pages && pages <= min_pages + 1, "listRepos limit %d: %d pages", limit, pages);
}

static void test_repos(void)
{
	walk_repos(0);
	walk_repos(1000);
	walk_repos(97);
	walk_repos(1);

	json_t *j = get_json("/xrpc/com.atproto.sync.listRepos?limit=3&cursor=did:plc:acct000100", 200);
	json_t *rs = json_object_get(j, "repos");
	CHECK(json_array_size(rs) == 3 && !strcmp(jstr(json_array_get(rs, 0), "did"), "did:plc:acct000101"));
	CHECK(!strcmp(jstr(j, "cursor"), "did:plc:acct000103"));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.listRepos?cursor=did:zzz", 200);
	CHECK(json_array_size(json_object_get(j, "repos")) == 0 && json_object_get(j, "cursor") == NULL);
	json_decref(j);
	expect_error("/xrpc/com.atproto.sync.listRepos?limit=1001", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listRepos?limit=-1", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listRepos?cursor=", 400, "InvalidRequest");

	/* getRepoStatus */
	char path[512], rev[14], cs[BT_CID_STR_MAX];
	struct bt_cid c;
	rev_of(7, rev);
	cid_of(7, &c);
	bt_cid_to_str(&c, cs, sizeof cs);
	j = get_json("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:acct000007", 200);
	CHECK(!strcmp(jstr(j, "did"), "did:plc:acct000007"));
	CHECK(json_is_true(json_object_get(j, "active")) && json_object_get(j, "status") == NULL);
	CHECK(!strcmp(jstr(j, "rev"), rev));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.getRepoStatus?did=did%3Aplc%3Azz-takendown", 200);
	CHECK(json_is_false(json_object_get(j, "active")) && !strcmp(jstr(j, "status"), "takendown"));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:zz-identityonly", 200);
	CHECK(json_is_true(json_object_get(j, "active")) && json_object_get(j, "rev") == NULL);
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:zz-nostatus", 200);
	CHECK(json_is_false(json_object_get(j, "active")) && json_object_get(j, "status") == NULL);
	json_decref(j);
	expect_error("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:unknown", 404, "RepoNotFound");
	expect_error("/xrpc/com.atproto.sync.getRepoStatus?did=notadid", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.getRepoStatus", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:zz-garbage", 500, "InternalServerError");

	/* getLatestCommit */
	j = get_json("/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:acct000007", 200);
	CHECKF(!strcmp(jstr(j, "cid"), cs), "getLatestCommit cid %s want %s", jstr(j, "cid"), cs);
	CHECK(!strcmp(jstr(j, "rev"), rev));
	json_decref(j);
	for (size_t s = 0; s < N_SPECIAL; s++) {
		snprintf(path, sizeof path, "/xrpc/com.atproto.sync.getLatestCommit?did=%s", specials[s].did);
		if (specials[s].latest_error) {
			expect_error(path, specials[s].latest_status, specials[s].latest_error);
		} else {
			j = get_json(path, 200);
			CHECK(strlen(jstr(j, "cid")) > 50 && strlen(jstr(j, "rev")) == 13);
			json_decref(j);
		}
	}
	expect_error("/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:unknown", 404, "RepoNotFound");
	expect_error("/xrpc/com.atproto.sync.getLatestCommit?did=x", 400, "InvalidRequest");

	/* getRepo: a redirect to the account's host */
	char *body;
	int st = http_get("/xrpc/com.atproto.sync.getRepo?did=did:plc:acct000008", &body);
	CHECKF(st == 302, "getRepo -> %d", st);
	CHECKF(strstr(resp, "\r\nLocation: https://pds1.example.com/xrpc/com.atproto.sync.getRepo?did=did:plc:acct000008\r\n"),
	       "getRepo location: %.300s", resp);
	st = http_get("/xrpc/com.atproto.sync.getRepo?did=did:plc:acct000009&since=3l2222222222a", &body);
	CHECKF(st == 302, "getRepo -> %d", st);
	CHECKF(strstr(resp, "\r\nLocation: http://localhost:5555/xrpc/com.atproto.sync.getRepo?did=did:plc:acct000009"
			    "&since=3l2222222222a\r\n"),
	       "getRepo localhost location: %.300s", resp);
	expect_error("/xrpc/com.atproto.sync.getRepo?did=did:plc:unknown", 404, "RepoNotFound");
	expect_error("/xrpc/com.atproto.sync.getRepo?did=did:plc:zz-takendown", 403, "RepoTakendown");
	expect_error("/xrpc/com.atproto.sync.getRepo?did=did:plc:acct000009&since=bad!", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.getRepo", 400, "InvalidRequest");
}

/* Writes while the fanout runs are visible to the next query (the view catches up). */
static void test_catch_up(void)
{
	uint32_t h = add_host("late.example.net", BT_HOST_ACTIVE, 5);
	struct bt_db_batch *b = bt_db_batch_new();
	put_acct(b, "did:plc:late", h, true, NULL, 99);
	put_acct(b, "did:plc:acct000007", h_pds1, false, "takendown", 7); /* a takedown of a known account */
	CHECK(bt_db_write(db, b) == 0);
	bt_db_batch_free(&b);
	usleep(100 * 1000); /* longer than the view's catch-up interval */
	json_t *j = get_json("/xrpc/com.atproto.sync.getHostStatus?hostname=late.example.net", 200);
	CHECK(json_integer_value(json_object_get(j, "seq")) == 5);
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:late", 200);
	CHECK(json_is_true(json_object_get(j, "active")));
	json_decref(j);
	expect_error("/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:acct000007", 403, "RepoTakendown");
	char *body;
	int st = http_get("/xrpc/com.atproto.sync.getRepo?did=did:plc:late", &body);
	CHECK(st == 302 && strstr(resp, "\r\nLocation: https://late.example.net/"));
	j = get_json("/xrpc/com.atproto.sync.listHosts", 200);
	CHECK(json_array_size(json_object_get(j, "hosts")) == 4);
	json_decref(j);
}

/* The collection index as the store writes it (store/store_coll.c): x/ membership, y/ counts. */
static void test_collections(void)
{
	struct bt_db_batch *b = bt_db_batch_new();
	static const char *const dids[] = { "did:plc:c1", "did:plc:c2", "did:plc:c3" };
	for (int i = 0; i < 3; i++) {
		char k[128];
		int n = snprintf(k, sizeof k, "x/app.bsky.feed.post%c%s", 0, dids[i]);
		bt_db_batch_put(b, k, (size_t)n, "", 0);
	}
	uint8_t v[8];
	bt_be64_put(v, 3);
	bt_db_batch_put(b, "y/\0app.bsky.feed.post", 21, v, 8);
	bt_be64_put(v, 1);
	bt_db_batch_put(b, "y/\0app.bsky.graph.follow", 24, v, 8);
	bt_db_batch_put(b, "x/app.bsky.graph.follow\0did:plc:c2", 34, "", 0);
	CHECK(bt_db_write(db, b) == 0);
	bt_db_batch_free(&b);
	usleep(100 * 1000);
	json_t *j = get_json("/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.post&limit=2", 200);
	json_t *r = json_object_get(j, "repos");
	CHECK(json_array_size(r) == 2 && !strcmp(jstr(json_array_get(r, 0), "did"), "did:plc:c1") &&
	      !strcmp(jstr(json_array_get(r, 1), "did"), "did:plc:c2") && !strcmp(jstr(j, "cursor"), "did:plc:c2"));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.post&limit=2&cursor=did:plc:c2",
		     200);
	r = json_object_get(j, "repos");
	CHECK(json_array_size(r) == 1 && !strcmp(jstr(json_array_get(r, 0), "did"), "did:plc:c3") &&
	      !json_object_get(j, "cursor"));
	json_decref(j);
	j = get_json("/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.like", 200);
	CHECK(json_array_size(json_object_get(j, "repos")) == 0 && !json_object_get(j, "cursor"));
	json_decref(j);
	expect_error("/xrpc/com.atproto.sync.listReposByCollection", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listReposByCollection?collection=not-an-nsid", 400, "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.post&limit=0", 400,
		     "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.post&limit=2001", 400,
		     "InvalidRequest");
	expect_error("/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.post&cursor=nodid", 400,
		     "InvalidRequest");
	j = get_json("/v1/listCollections", 200);
	json_t *c = json_object_get(j, "collections");
	CHECK(json_object_size(c) == 2 && json_integer_value(json_object_get(c, "app.bsky.feed.post")) == 3 &&
	      json_integer_value(json_object_get(c, "app.bsky.graph.follow")) == 1 && !strcmp(jstr(j, "cursor"), ""));
	json_decref(j);
	j = get_json("/v1/listCollections?c=app.bsky.graph.follow&c=app.bsky.feed.like", 200);
	c = json_object_get(j, "collections");
	CHECK(json_object_size(c) == 1 && json_integer_value(json_object_get(c, "app.bsky.graph.follow")) == 1);
	json_decref(j);
	j = get_json("/v1/listCollections?cursor=app.bsky.feed.post", 200);
	c = json_object_get(j, "collections");
	CHECK(json_object_size(c) == 1 && json_object_get(c, "app.bsky.graph.follow"));
	json_decref(j);
}

static void test_others(void)
{
	expect_error("/xrpc/com.atproto.sync.getBlob?did=did:plc:acct000007&cid=x", 501, "MethodNotImplemented");
	expect_error("/xrpc/com.atproto.sync.listReposX", 501, "MethodNotImplemented");
	/* A query by POST. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { 20, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	const char *req = "POST /xrpc/com.atproto.sync.listRepos HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
			  "Content-Length: 0\r\n\r\n";
	char buf[1024] = "";
	if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
		ssize_t n = read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
	}
	close(fd);
	CHECKF(!strncmp(buf, "HTTP/1.1 405", 12), "POST listRepos: %.60s", buf);
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof a;
	bind(fd, (struct sockaddr *)&a, sizeof a);
	getsockname(fd, (struct sockaddr *)&a, &l);
	close(fd);
	return ntohs(a.sin_port);
}

static bool fanout_ready(void)
{
	struct bt_stats_page *p = bt_shm_page(shm, bt_pipe_page_of_slot(bt_pipe_slot(BT_ROLE_FANOUT, 0)));
	if (atomic_load(&p->pid) <= 0)
		return false;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

int main(int argc, char **argv)
{
	char bin[PATH_MAX];
	const char *env_bin = getenv("BT_FANOUT_BIN");
	if (env_bin) {
		snprintf(bin, sizeof bin, "%s", env_bin);
	} else {
		char self[PATH_MAX];
		snprintf(self, sizeof self, "%s", argv[0]);
		snprintf(bin, sizeof bin, "%s/../baton-fanout", dirname(self));
	}
	if (access(bin, X_OK) != 0) {
		fprintf(stderr, "FAIL: %s not found (build it, or set BT_FANOUT_BIN)\n", bin);
		CHECK(0);
		BT_TEST_END();
	}
	snprintf(dir, sizeof dir, "/tmp/bt-fanxrpc-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);

	/* The supervisor's layout with K=1, N=1. */
	struct bt_shm_layout lay;
	memset(&lay, 0, sizeof lay);
	int K = 1;
	lay.n_rings = 2 * K + 1;
	lay.rings[bt_pipe_ring_in(0)].kind = BT_RING_SPSC;
	lay.rings[bt_pipe_ring_in(0)].capacity = 1u << 16;
	lay.rings[bt_pipe_ring_in(0)].bell = bt_pipe_bell_verify(0);
	lay.rings[bt_pipe_ring_out(K, 0)].kind = BT_RING_SPSC;
	lay.rings[bt_pipe_ring_out(K, 0)].capacity = 1u << 16;
	lay.rings[bt_pipe_ring_out(K, 0)].bell = bt_pipe_bell_store();
	lay.rings[bt_pipe_ring_bcast(K)].kind = BT_RING_BCAST;
	lay.rings[bt_pipe_ring_bcast(K)].capacity = 1u << 16;
	lay.rings[bt_pipe_ring_bcast(K)].bell = bt_pipe_bell_fanout(K);
	lay.n_bells = (unsigned)K + 2;
	lay.n_pages = BT_PIPE_N_PAGES;
	char path[512];
	snprintf(path, sizeof path, "%s/baton-t.shm", dir);
	int rc = bt_shm_create(path, &lay, &shm);
	CHECKF(rc == 0, "bt_shm_create %d", rc);
	if (rc)
		BT_TEST_END();
	struct bt_sup_page *sp = bt_shm_page(shm, 0);
	sp->n_verify = 1;
	sp->n_fanout = 1;
	atomic_store(&sp->pid, getpid());

	port = free_port();
	child = fork();
	if (child == 0) {
		char b[64];
		setenv("RELAY_SHM_DIR", dir, 1);
		setenv("RELAY_NAME", "t", 1);
		setenv("RELAY_DATA_DIR", dir, 1);
		snprintf(b, sizeof b, "127.0.0.1:%d", port);
		setenv("RELAY_API_BIND", b, 1);
		setenv("RELAY_METRICS_LISTEN", "", 1); /* off */
		setenv("BATON_INDEX", "0", 1);
		if (!getenv("RELAY_LOG_LEVEL"))
			setenv("RELAY_LOG_LEVEL", "warn", 1);
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	bool ready = false;
	for (int i = 0; i < 2000 && !(ready = fanout_ready()); i++)
		usleep(10000);
	CHECK(ready);

	/* No database yet: the queries say so instead of "not found". */
	expect_error("/xrpc/com.atproto.sync.listHosts", 503, "ServiceUnavailable");
	expect_error("/xrpc/com.atproto.sync.getRepoStatus?did=did:plc:acct000001", 503, "ServiceUnavailable");
	/* Parameter errors do not need it. */
	expect_error("/xrpc/com.atproto.sync.listRepos?limit=0", 400, "InvalidRequest");

	char dbdir[300];
	snprintf(dbdir, sizeof dbdir, "%s/db", dir);
	rc = bt_db_open_primary(dbdir, false, &db);
	CHECKF(rc == 0, "open primary %d", rc);
	if (rc)
		BT_TEST_END();
	h_pds1 = add_host("pds1.example.com", BT_HOST_ACTIVE, 1234);
	h_local = add_host("localhost:5555", BT_HOST_IDLE, 0);
	h_banned = add_host("banned.example.org", BT_HOST_BANNED, 77);
	write_accounts();

	test_hosts();
	test_repos();
	test_catch_up();
	test_collections();
	test_others();

	kill(child, SIGTERM);
	int status = 0;
	CHECK(waitpid(child, &status, 0) == child);
	CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fanout exit status %#x", status);
	bt_db_close(&db);
	bt_shm_close(&shm);
	if (bt_t_fail == 0) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	} else {
		fprintf(stderr, "kept %s\n", dir);
	}
	BT_TEST_END();
}
