/*
 * NAME
 *	fanout.h - internals of baton-fanout, shared by the fanout/ files only
 * DESCRIPTION
 *	One fanout process serves the public port (shared with the other N-1 fanouts through
 *	SO_REUSEPORT): subscribeRepos consumers (fanout_sub.c), the XRPC routes and
 *	requestCrawl forwarding (fanout_xrpc.c), the sync read queries (fanout_repo.c),
 *	/_health (fanout_health.c), /metrics on RELAY_METRICS_LISTEN (fanout_metrics.c).
 *	Everything runs on one libevent loop in one thread, except the requestCrawl workers,
 *	which only ever touch their own job and talk to the loop through pipes.
 *
 *	A consumer's position is the seq of the last event it was sent (`after`); it reads
 *	from the broadcast ring while the ring still holds after+1 and from the read-only
 *	RocksDB view otherwise.  docs/fanout.md explains why there is no gap or duplicate.
 * DIAGNOSTICS
 *	Start-up failures (bad bind address, port in use) exit 2.  Runtime errors are logged
 *	(rate-limited) and counted in the stage's stats page.
 */
#ifndef FANOUT_H
#define FANOUT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_pipe.h"

struct event_base;
struct bt_ring;
struct bt_db;
struct bt_http_req;
struct bt_http_server;
typedef struct json_t json_t;

/* The process-wide state: one per fanout process, owned by fanout_main.c. */
struct fan {
	struct event_base *base;
	struct bt_ring *ring;           /* broadcast ring (borrowed from bt_proc.shm) */
	struct bt_db *db;               /* secondary RocksDB view; NULL until the store created it */
	uint64_t db_caught_up_ms;       /* last bt_db_catch_up (monotonic ms) */
	struct bt_http_server *http;    /* NULL once shutting down */
	char server_hdr[512];
	bool stopping;
	uint64_t seen_seq;              /* last ring seq observed (for bt_proc_progress) */
};

extern struct fan fan;

/* ---- fanout_main.c ---- */
/* Opens the secondary RocksDB view if it is not open yet; 0 when open, <0 otherwise. */
int fan_db_ensure(void);
/* bt_db_catch_up at most every min_ms (0 = now); 0 or <0 (the view stays usable). */
int fan_db_catch_up(uint64_t min_ms);
/* Pauses the bell watch while there is no consumer, resumes it when there is one. */
void fan_bell_update(void);

/* Fanout slot i is in use: a process holds it, or the supervisor keeps one running there
   (its fanout_wanted bit: batonctl scale and drain change it).  wanted: the latter only. */
bool fan_slot_in_use(int i, bool *wanted);

/* Closes the public and metrics listeners (new connections go to the other fanouts). */
void fan_stop_listening(void);

/* ---- fanout_hand.c ---- */
/* The hand-over socket of this fanout's slot and the SIGHUP handler; 0 or <0. */
int fan_hand_init(void);
/* From the tick: after a SIGHUP, starts handing every consumer to another fanout. */
void fan_hand_tick(void);
void fan_hand_fini(void);
/* The exit code: 3 after a hand-over under compose (restart: on-failure), else 0. */
int fan_hand_exit_code(void);

/* ---- fanout_sub.c ---- */
/* Handles GET subscribeRepos: validates the cursor, upgrades, starts the consumer.  Ends req. */
void fan_sub_start(struct bt_http_req *req);
/* New events on the broadcast ring: pump every live consumer. */
void fan_sub_on_bell(void);
/* Closes every consumer with 1012 (shutdown). */
void fan_sub_close_all(int code, const char *reason);
/* Consumers still connected (their on_close has not run yet). */
unsigned fan_sub_count(void);
/* From the tick, at most once a second: closes consumers whose output did not drain for
   RELAY_CONSUMER_READ_TIMEOUT (READ_TIMEOUTS) and sets QUEUED_BYTES. */
void fan_sub_watch(void);
/* This process's consumers (at most max) as a JSON array for /admin/consumers/list (new reference). */
json_t *fan_sub_table(size_t max);
/* Hand-over (fanout_hand.c): _hand_all stops queueing to every consumer; _hand_step passes each
   whose output has drained to send_one(fd, state) (0 = taken; the fd is closed here either
   way) and returns how many still wait for their output; _adopt takes a handed socket (fd, taken)
   with its state and serves it from state.after on.  0 or <0. */
void fan_sub_hand_all(void);
unsigned fan_sub_hand_step(int (*send_one)(int fd, json_t *state, void *arg), void *arg);
int fan_sub_adopt(int fd, json_t *state);
/* Frees the shared read buffer (after the last consumer is gone). */
void fan_sub_fini(void);

/* ---- fanout_frame.c ---- */
struct fan_chunk;
/* One live event framed for WebSocket: p[0..n) is the frame, p[hl..n) the event's payload. */
struct fan_frame {
	struct fan_chunk *chunk;
	const uint8_t *p;
	size_t n, hl;
	uint64_t commit_ms; /* wall clock of the store's write (its commit log), 0 if unknown */
};
/* The frame of the ring record at pos (seq and len from bt_bcast_peek), framed on first use and
   shared afterwards; *out borrowed until the next call.  0, or bt_bcast_read's error, -ENOMEM. */
int fan_frame_get(struct bt_ring *ring, uint64_t pos, uint64_t seq, size_t len, const struct fan_frame **out);
/* Takes a reference for one queued copy of f; bt_ws_send_ref(.., fan_frame_release, f->chunk) gives it back. */
void fan_frame_ref(const struct fan_frame *f);
/* bt_ws_release_fn for frames queued with arg = f->chunk. */
void fan_frame_release(const void *data, size_t len, void *arg);
/* True when b starts right where a ends in the same chunk (one run, one reference). */
static inline bool fan_frame_adjacent(const struct fan_frame *a, const struct fan_frame *b)
{
	return a->chunk == b->chunk && a->p + a->n == b->p;
}
/* Drops the cache and the free chunks (at exit). */
void fan_frame_fini(void);

/* ---- fanout_xrpc.c ---- */
/* The HTTP handler for every request on the public port; borrows req until it answers it. */
void fan_xrpc_handle(struct bt_http_req *req, void *arg);
/* Starts the requestCrawl worker threads; 0 or <0. */
int fan_xrpc_init(void);
/* Stops the workers; pending requests are answered 503. */
void fan_xrpc_fini(void);
/* Answers req with a JSON body {"error":..,"message":..} (message may be NULL). */
void fan_xrpc_error(struct bt_http_req *req, int status, const char *error, const char *message);
/* Answers req with the JSON value j (takes j: its reference is released). */
void fan_xrpc_json(struct bt_http_req *req, int status, json_t *j);
/* Called on the loop thread with the reply of a control round trip (borrowed: freed after the
   call; NULL on timeout).  Must answer req. */
typedef void fan_ctl_done_fn(struct bt_http_req *req, json_t *reply, void *arg);
/* Sends msg (taken) to the control socket `what` ("ingest", "store", "sup") on a worker thread and
   calls done(req, reply, arg) on the loop.  0, or <0 (msg freed, done never called, req unanswered:
   the caller answers it; -EBUSY = too many round trips in flight). */
int fan_ctl_async(struct bt_http_req *req, const char *what, json_t *msg, int timeout_ms, fan_ctl_done_fn *done,
		  void *arg);
/* The usual done: a reply with "error" (or ok:false) becomes {error, message} with its "status"
   (default 400); NULL becomes 503; anything else is sent as the 200 JSON body.  what names the
   process in the 503 message. */
void fan_ctl_answer(struct bt_http_req *req, json_t *reply, const char *what);

/* ---- fanout_admin.c ---- */
/* Answers every /admin/ path: 403 AdminDisabled without RELAY_ADMIN_PASSWORD, 401 without the
   right credentials (HTTP Basic admin:<password>, or Authorization: Bearer <password>), 404 or
   405 for an unknown route or method, else the route's answer.  Ends req. */
void fan_admin_handle(struct bt_http_req *req, const char *path);
/* True when req carries the admin credentials (never when no password is set). */
bool fan_admin_authorized(const struct bt_http_req *req);

/* ---- fanout_conslist.c ---- */
/* GET /admin/consumers/list: every fanout's consumers (asked through shared memory).  Ends req. */
void fan_conslist_route(struct bt_http_req *req);
/* From the tick: writes this fanout's consumer table when another fanout asked for it. */
void fan_conslist_tick(void);

/* ---- fanout_repo.c ---- */
/* Answers the sync read query nsid (listHosts, getHostStatus, listRepos, getRepoStatus,
   getLatestCommit, getRepo) from the RocksDB view and returns true; false if nsid is not one. */
bool fan_repo_handle(struct bt_http_req *req, const char *nsid);
/* fanout_coll.c: listReposByCollection and /v1/listCollections (path with its /xrpc/); true if
   it answered. */
bool fan_coll_handle(struct bt_http_req *req, const char *path);

/* ---- fanout_takedown.c ---- */
/* Reloads the takedown list if the store changed it (cheap when it did not). */
void fan_td_refresh(void);
/* True when the event seq of did (a RocksDB record's DID) must not be sent: a takedown after it. */
bool fan_td_hidden(const char *did, size_t dn, uint64_t seq);
/* The same for a ring frame (its DID read from the frame only when seq is below a takedown). */
bool fan_td_hidden_frame(const uint8_t *p, size_t n, uint64_t seq);
/* GET /admin/repo/takedowns.  Ends req. */
void fan_td_route(struct bt_http_req *req);
void fan_td_fini(void);

/* ---- fanout_cov.c ---- */
struct fan_cov_host {
	char host[BT_HOST_MAX];
	uint32_t status;   /* enum bt_host_status */
	uint64_t last_ms;  /* wall clock of its last committed event, 0 = none */
	uint64_t n_events; /* events committed */
};
struct fan_cov {
	struct fan_cov_host *hosts; /* by n_events, most first */
	size_t n;
	unsigned active, recent;    /* RELAY_COVERAGE_LOOKBACK / RELAY_COVERAGE_WINDOW */
	uint64_t newest_ms;         /* newest last_ms of any host */
	uint64_t at_ms;             /* wall clock of the snapshot */
};
/* The host snapshot from the store's host records, refreshed at most once a second. */
const struct fan_cov *fan_cov_get(void);
/* 1 when coverage is below RELAY_COVERAGE_MIN_PERCENT, with the reason in why; 0 otherwise. */
int fan_cov_degraded(char *why, size_t cap);

/* ---- fanout_metrics.c ---- */
#define FAN_N_STAGES (3 + BT_MAX_VERIFY + BT_MAX_FANOUT)
struct fan_stage {
	enum bt_role role;
	int index;
	struct bt_stats_page *pg; /* NULL if the segment has no page for it */
};
/* Fills out[FAN_N_STAGES] with every stage (ingest, store, verify 0..K-1, fanout 0..N-1); returns
   how many. */
int fan_stages(struct fan_stage *out);
/* /proc/<pid>/stat: CPU seconds, resident bytes, start time (s since the epoch); 0 or -1. */
int fan_proc_stat(int pid, double *cpu_s, double *rss_b, double *start_s);
/* Answers GET/HEAD /metrics, /dash and /dash.json on the metrics listener; anything else 404. */
void fan_metrics_handle(struct bt_http_req *req, void *arg);
/* Answers /metrics (Prometheus text). */
void fan_metrics_respond(struct bt_http_req *req);
/* The store's stats page (commit log), NULL if absent. */
struct bt_stats_page *fan_store_page(void);

/* ---- fanout_dash.c ---- */
/* /dash: the operator dashboard (one self-contained HTML page).  Ends req. */
void fan_dash_page(struct bt_http_req *req);
/* /dash.json: what the dashboard shows, from the stats pages and the host records.  Ends req. */
void fan_dash_json(struct bt_http_req *req);

/* ---- fanout_health.c ---- */
/* Samples every stage's progress counter (from the 200 ms timer) for stuck-ring detection. */
void fan_health_sample(void);
/* Returns 1 when healthy, 0 with a reason written into why (cap bytes). */
int fan_health_check(char *why, size_t cap);
/* Answers /_health. */
void fan_health_respond(struct bt_http_req *req);

#endif
