/*
 * NAME
 *	baton-fanout - consumers, cursor replay and the public HTTP port (one of N)
 * DESCRIPTION
 *	Starts through bt_proc_init, listens on RELAY_API_BIND with SO_REUSEPORT so the N
 *	fanout processes share the port (and on RELAY_METRICS_LISTEN for /metrics, the same way), and runs one libevent loop: the HTTP server
 *	(fanout_xrpc.c), the consumers (fanout_sub.c), a bell watch on the broadcast ring
 *	(paused while there is no consumer) and a 200 ms timer that stamps the heartbeat, samples the pipeline for /_health,
 *	opens the read-only RocksDB view once the store has created it, and notices
 *	bt_proc_stop.  On stop: the listener closes, every consumer is closed with 1012 and
 *	the process exits when the last one is gone (or after the close timeout).
 *
 *	The RocksDB view is a secondary instance: "<data_dir>/db" opened with its own
 *	directory "<data_dir>/secondary/fanout-<index>".  It is caught up with the primary
 *	before reads that must see recent events, at most every few milliseconds.
 * DIAGNOSTICS
 *	A bad RELAY_API_BIND or a port that cannot be bound: exit 2.  A missing database is
 *	not an error: live consumers are served from the ring while it is retried.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "bt_ctl.h"
#include "bt_db.h"
#include "bt_http.h"
#include "bt_lock.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_pipe.h"
#include "bt_proc.h"
#include "bt_shm.h"
#include "bt_ws.h"
#include "fanout.h"

struct fan fan;

static struct event *tick_ev;
static struct bt_http_server *metrics_http; /* RELAY_METRICS_LISTEN, NULL when off */
static struct bt_bell_watch *bell;
static uint64_t stop_deadline_ms;
static uint64_t db_next_try_ms;
static bool db_missing_logged;

/* Creates the shared listening socket; exits 2 on failure (configuration error). */
static int listen_public(const char *env, const char *bind_s)
{
	char host[256], port[16];
	int pn = bt_lock_parse_bind(bind_s, host, sizeof host, port, sizeof port);
	if (pn < 0)
		bt_die_config("%s=%s: expected [host]:port", env, bind_s);
	/* SO_REUSEPORT would let us join another relay's fanouts on the public port: its supervisor
	   holds the port lock (bt_lock.h), ours does when it is the holder. */
	pid_t owner = pn && !strcmp(env, "RELAY_API_BIND") ? bt_lock_port_holder(pn) : 0;
	pid_t ours = (pid_t)atomic_load(&((struct bt_sup_page *)bt_shm_page(bt_proc.shm, 0))->pid);
	if (owner > 0 && owner != ours)
		bt_die_config("%s %s: port %d is served by another baton (pid %d), not by this relay's "
			      "supervisor (pid %d)", env, bind_s, pn, (int)owner, (int)ours);
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = host[0] ? AF_UNSPEC : AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc != 0 || !res)
		bt_die_config("%s=%s: %s", env, bind_s, gai_strerror(rc));
	int fd = -1, err = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		bt_die_config("cannot listen on %s: %s", bind_s, strerror(err));
	return fd;
}

int fan_db_ensure(void)
{
	if (fan.db)
		return 0;
	char dir[700], sec[760], cur[720];
	snprintf(dir, sizeof dir, "%s/db", bt_cfg.data_dir);
	snprintf(cur, sizeof cur, "%s/CURRENT", dir);
	if (access(cur, F_OK) != 0) {
		/* The store creates the database; until then only the ring is served. */
		if (!db_missing_logged) {
			BT_INFO("waiting for the store to create %s", dir);
			db_missing_logged = true;
		}
		return -ENOENT;
	}
	snprintf(sec, sizeof sec, "%s/secondary", bt_cfg.data_dir);
	mkdir(sec, 0755);
	snprintf(sec, sizeof sec, "%s/secondary/fanout-%d", bt_cfg.data_dir, bt_proc.index);
	mkdir(sec, 0755);
	int rc = bt_db_open_secondary(dir, sec, &fan.db);
	if (rc < 0) {
		fan.db = NULL;
		return rc;
	}
	fan.db_caught_up_ms = bt_now_ms();
	BT_INFO("opened %s read-only", dir);
	return 0;
}

int fan_db_catch_up(uint64_t min_ms)
{
	if (!fan.db)
		return -ENOENT;
	uint64_t now = bt_now_ms();
	if (min_ms && now - fan.db_caught_up_ms < min_ms)
		return 0;
	fan.db_caught_up_ms = now;
	return bt_db_catch_up_gen(fan.db, bt_proc_store_gen()) < 0 ? -EIO : 0;
}

/* Observing the ring move is this stage's input (stuck-pipeline detection); from the tick,
   so a process with no consumer needs no wakeup per record. */
static void note_progress(void)
{
	uint64_t last = bt_bcast_last_seq(fan.ring);
	if (last > fan.seen_seq) {
		bt_proc_progress(last - fan.seen_seq);
		fan.seen_seq = last;
	}
}

static void on_bell(void *arg)
{
	fan_sub_on_bell();
}

void fan_bell_update(void)
{
	/* Only consumers read the ring live: with none, the watch sleeps and the store's bell
	   rings cost this process nothing.  Resuming calls on_bell once. */
	bt_bell_watch_pause(bell, fan_sub_count() == 0);
}

void fan_stop_listening(void)
{
	bt_http_server_free(&fan.http);
	bt_http_server_free(&metrics_http);
}

static void begin_stop(void)
{
	fan.stopping = true;
	BT_INFO("stopping: closing %u consumers", fan_sub_count());
	bt_http_server_free(&fan.http);
	bt_http_server_free(&metrics_http);
	fan_sub_close_all(1012, "service restart");
	stop_deadline_ms = bt_now_ms() + (BT_WS_CLOSE_TIMEOUT_S + 2) * 1000u;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	bt_proc_beat();
	bt_stat_set(bt_proc.stats, BT_STAT_HTTP_REFUSED, bt_http_server_refused(fan.http));
	uint64_t now = bt_now_ms();
	if (bt_proc_stop && !fan.stopping)
		begin_stop();
	if (!fan.stopping && bt_shm_retired(bt_proc.shm)) {
		/* The supervisor re-created the segment: exit and be restarted attached to the new one. */
		BT_WARN("the shared-memory segment was re-created; exiting");
		begin_stop();
	}
	if (fan.stopping) {
		if (fan_sub_count() == 0 || now >= stop_deadline_ms)
			event_base_loopbreak(fan.base);
		return;
	}
	fan_hand_tick(); /* SIGHUP: hand our consumers to another fanout (fanout_hand.c) */
	fan_health_sample();
	note_progress();
	fan_sub_watch();
	fan_conslist_tick();
	if (!fan.db && now >= db_next_try_ms) {
		db_next_try_ms = now + 500;
		if (fan_db_ensure() == 0)
			fan_sub_on_bell(); /* consumers waiting for the database */
	}
}

int main(int argc, char **argv)
{
	bt_proc_init(BT_ROLE_FANOUT, argc, argv, "fanout: subscribeRepos consumers, replay and the public HTTP port");
	/* Output queues grow and shrink by megabytes all the time (libevent chains, frame chunks):
	   with glibc's defaults the heap top is trimmed and re-faulted, and big blocks are mmapped
	   and unmapped, page by page (native_set_pte in profiles).  Keep freed memory for reuse;
	   the resident size stays bounded by the consumers' high-water marks. */
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	mallopt(M_MMAP_THRESHOLD, 16 << 20);
	evthread_use_pthreads();
	fan.base = event_base_new();
	if (!fan.base)
		bt_die_config("event_base_new failed");
	fan.ring = bt_shm_ring(bt_proc.shm, bt_pipe_ring_bcast(bt_proc.K));
	if (!fan.ring || bt_ring_kind(fan.ring) != BT_RING_BCAST)
		bt_die_config("segment has no broadcast ring at %u", bt_pipe_ring_bcast(bt_proc.K));
	snprintf(fan.server_hdr, sizeof fan.server_hdr, "%s", bt_cfg.user_agent);
	fan.seen_seq = bt_bcast_last_seq(fan.ring);
	bt_ctl_context(); /* created here, before the requestCrawl workers share it */

	int lfd = listen_public("RELAY_API_BIND", bt_cfg.api_bind);
	struct bt_http_limits lim = { .max_header = 16384, .max_body = 65536, .read_timeout_s = 30,
				      .server_hdr = fan.server_hdr };
	fan.http = bt_http_server_new(fan.base, lfd, &lim, fan_xrpc_handle, NULL);
	if (!fan.http)
		bt_die_config("cannot start the HTTP server");
	if (bt_cfg.metrics_listen[0]) {
		/* every fanout shares it (SO_REUSEPORT): each answers the same page from shared memory */
		struct bt_http_limits ml = { .max_header = 8192, .max_body = 0, .read_timeout_s = 30,
					     .server_hdr = fan.server_hdr };
		metrics_http = bt_http_server_new(fan.base, listen_public("RELAY_METRICS_LISTEN", bt_cfg.metrics_listen),
						  &ml, fan_metrics_handle, NULL);
		if (!metrics_http)
			bt_die_config("cannot start the metrics listener");
	}
	int hrc = fan_hand_init();
	if (hrc < 0)
		BT_WARN("no hand-over socket (%d): a restart of this fanout closes its consumers", hrc);
	if (fan_xrpc_init() < 0)
		bt_die_config("cannot start the requestCrawl workers");
	fan_db_ensure();
	bell = bt_bell_watch_new(fan.base, bt_shm_bell(bt_proc.shm, bt_pipe_bell_fanout(bt_proc.K)), on_bell, NULL);
	if (!bell)
		bt_die_config("cannot watch the fanout bell");
	fan_bell_update();
	tick_ev = event_new(fan.base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tv = { 0, 200000 };
	event_add(tick_ev, &tv);
	BT_INFO("serving %s", bt_cfg.api_bind);
	bt_proc_beat(); /* start-up (the RocksDB open) took a while; the timer beats from now on */

	event_base_dispatch(fan.base);

	if (!fan.stopping)
		begin_stop();
	bt_bell_watch_free(&bell);
	event_free(tick_ev);
	fan_xrpc_fini();
	fan_sub_fini();
	fan_td_fini();
	int code = fan_hand_exit_code();
	fan_hand_fini();
	bt_db_close(&fan.db);
	if (fan_sub_count() == 0)
		event_base_free(fan.base); /* otherwise connections still reference it; the exit reclaims all */
	bt_proc_exit(code);
	return 0;
}
