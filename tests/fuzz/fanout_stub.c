/*
 * NAME
 *	fanout_stub.c - the fanout's HTTP routes without a running relay, for the fuzz targets
 * DESCRIPTION
 *	Stands in for fanout_main.c (linked with every other file of fanout/): the process
 *	state `fan`, a stats page, the parameters from the environment (RELAY_ADMIN_PASSWORD
 *	"fuzz") and a small primary RocksDB in a temporary directory holding one host
 *	(localhost:2583, id 1) and one account of it (did:plc:fuzzfuzzfuzzfuzzfuzzfuzz, a head
 *	and a rev), so a query's parameters reach the reads and the answers built from them.
 *	No control socket answers: a route that forwards to another stage gets 503 at once
 *	(the worker threads are not started), after its request has been validated.
 *	fuzz_fanout_request() writes one request into a socketpair the HTTP server adopted
 *	and runs the loop until the answer is read and the connection is gone.
 * DIAGNOSTICS
 *	Set-up failures abort: they are not findings.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <event2/event.h>

#include "bt_cid.h"
#include "bt_db.h"
#include "bt_http.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "fanout.h"
#include "fanout_stub.h"

struct fan fan;
static struct bt_stats_page stats;
static struct bt_http_server *srv;

int fan_db_ensure(void)
{
	return fan.db ? 0 : -ENOENT;
}

int fan_db_catch_up(uint64_t min_ms)
{
	return 0;
}

void fan_bell_update(void)
{
}

static char db_dir[] = "/tmp/baton-fuzz-db.XXXXXX";

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

/* At exit (libFuzzer ends with exit()): the temporary database goes. */
static void rm_db(void)
{
	bt_db_close(&fan.db);
	nftw(db_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void seed_db(void)
{
	if (!mkdtemp(db_dir) || bt_db_open_primary(db_dir, false, &fan.db) < 0)
		abort();
	atexit(rm_db);
	struct bt_host_rec h = { .version = 1, .host_id = 1, .status = BT_HOST_ACTIVE, .cursor = 42 };
	h.host_len = (uint16_t)snprintf(h.host, sizeof h.host, "localhost:2583");
	char k[BT_DID_MAX + 8];
	bt_db_put(fan.db, k, bt_key_host(k, 1), &h, sizeof h);
	uint8_t idb[4] = { 0, 0, 0, 1 };
	bt_db_put(fan.db, k, bt_key_hostname(k, sizeof k, h.host, h.host_len), idb, 4);
	static const char did[] = "did:plc:fuzzfuzzfuzzfuzzfuzzfuzz";
	struct bt_acct_rec a = { .version = 1, .host_id = 1, .flags = BT_ACCT_ACTIVE };
	struct bt_cid c;
	if (bt_cid_for_block(0x71, (const uint8_t *)"x", 1, &c) < 0)
		abort();
	a.head_len = c.len;
	memcpy(a.head_cid, c.b, c.len);
	a.rev_len = (uint8_t)snprintf(a.rev, sizeof a.rev, "3l2vbh4lrzs2c");
	bt_db_put(fan.db, k, bt_key_acct(k, sizeof k, did, sizeof did - 1), &a, sizeof a);
	/* a second account, deactivated, so listRepos has a page to turn and getRepo a refusal */
	static const char did2[] = "did:web:example.com";
	a.flags = 0;
	a.status_len = (uint8_t)snprintf(a.status, sizeof a.status, "deactivated");
	bt_db_put(fan.db, k, bt_key_acct(k, sizeof k, did2, sizeof did2 - 1), &a, sizeof a);
}

void fuzz_fanout_init(void)
{
	if (fan.base)
		return;
	signal(SIGPIPE, SIG_IGN);
	setenv("RELAY_ADMIN_PASSWORD", "fuzz", 1);
	setenv("RELAY_LOG_LEVEL", "error", 0);
	char *argv[] = { "fuzz", NULL };
	bt_params_load(1, argv, "fuzz", "fuzz target");
	bt_proc.stats = &stats;
	bt_proc.N = 1;
	fan.base = event_base_new();
	snprintf(fan.server_hdr, sizeof fan.server_hdr, "baton-fuzz");
	seed_db();
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (!fan.base || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1))
		abort();
	struct bt_http_limits lim = { .max_header = 8192, .max_body = 65536, .read_timeout_s = 1,
				      .server_hdr = fan.server_hdr };
	srv = bt_http_server_new(fan.base, lfd, &lim, fan_xrpc_handle, NULL);
	if (!srv)
		abort();
}

void fuzz_fanout_request(const void *req, size_t n)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return;
	if (bt_http_server_adopt(srv, sv[1]) != 0) {
		close(sv[0]);
		return;
	}
	const char *p = req;
	size_t off = 0;
	char sink[65536];
	while (off < n) {
		ssize_t w = send(sv[0], p + off, n - off, MSG_DONTWAIT);
		if (w <= 0)
			break;
		off += (size_t)w;
		for (int i = 0; i < 4; i++)
			event_base_loop(fan.base, EVLOOP_NONBLOCK);
	}
	shutdown(sv[0], SHUT_WR);
	for (int i = 0; i < 16; i++) {
		event_base_loop(fan.base, EVLOOP_NONBLOCK);
		while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
			;
	}
	close(sv[0]);
	for (int i = 0; i < 16; i++)
		event_base_loop(fan.base, EVLOOP_NONBLOCK);
}
