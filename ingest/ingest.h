/*
 * NAME
 *	ingest.h - the ingest process: upstream connections and host admission
 */
#ifndef INGEST_H
#define INGEST_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_limits.h"
#include "bt_pipe.h"

struct bt_ws;
struct event;

enum ing_state { ING_IDLE, ING_CONNECTING, ING_OPEN, ING_WAIT };

struct ing_host {
	uint32_t id;
	char name[BT_HOST_MAX];      /* "host" or "localhost:PORT" */
	bool insecure;               /* ws:// (allowed localhost only) */
	enum ing_state state;
	struct bt_ws *ws;
	uint64_t cursor;             /* last upstream seq pushed to a ring (or committed, at start) */
	bool have_cursor;
	bool reset_next;             /* the next frame starts a new chain (after FutureCursor) */
	uint32_t epoch;              /* chain epoch stamped on every frame: the store's at start, a new
	                                one from the store per upstream reset (docs/chain.md) */
	bool epoch_pending;          /* reset seen: ask the store for the new epoch before connecting */
	unsigned failures;           /* connects in a row that did not open */
	bool offline;                /* reported offline to the store (failures >= OFFLINE_AFTER) */
	bool blocked;                /* removed by an operator: freed once its connection has closed */
	struct event *reconnect;
	/* Frames that found their ring full, in arrival order ([u32 len][bytes]...), kept while the
	   socket is paused.  A paused socket may still deliver the few messages its framing layer
	   had already read, so this is a queue, bounded by PEND_MAX (over it: reconnect). */
	uint8_t *pend;
	size_t pend_len, pend_cap;
	/* Event rate limits (ingest_limits.c): over them the socket is paused like a full ring. */
	struct bt_limiter lim;
	int64_t account_limit;       /* the store's, for the rate formulas */
	int64_t rate_override[3];    /* per second, hour, day; 0 = from account_limit */
	bool rate_paused;            /* paused by the limiter (counted once per pause) */
};

/* ingest_crawl.c */
struct bt_ctl_req;
typedef struct json_t json_t;
struct ing_crawl_opts {
	bool admin;          /* /admin/pds/requestCrawl, RELAY_HOSTS: past the switch and the per-day limit */
	bool has_hint;
	uint64_t cursor_hint; /* a host never seen starts at subscribeRepos?cursor=cursor_hint */
	bool no_probe;        /* admin only (batonctl pull-hosts): register without the describeServer probe */
};
void ing_crawl_init(struct event_base *base);
void ing_crawl_request(struct bt_ctl_req *req, const char *hostname, const struct ing_crawl_opts *o);

/* ingest_admit.c: the admission state (bans, switch, per-day limit), loaded from the store */
void ing_admit_load(void);
bool ing_admit_domain_banned(const char *host);
bool ing_admit_blocked(const char *host);     /* domain or host ban */
/* The refusal of a normalised host before any probe (bans, switch, per-day limit): its error
   name, with *status and *message; NULL to go on.  known: ingest subscribes to it already. */
const char *ing_admit_check(const char *host, bool known, bool admin, int *status, const char **message);
void ing_admit_probe_started(void);           /* a probe of a host not known yet (reserves the limit) */
void ing_admit_probe_done(json_t *store_reply); /* ... has ended; the store's addHost reply or NULL */
/* Answers the control ops of ingest_admit.c and returns true; false if op is not one. */
bool ing_admin_ctl(struct bt_ctl_req *req, const char *op, json_t *msg);

/* ingest_limits.c */
typedef struct json_t json_t;
void ing_lim_init(struct ing_host *h);
void ing_lim_from_json(struct ing_host *h, json_t *it);  /* account_limit, rate_override of "hosts" */
/* 0 if the host may push one more frame now, else ms to wait (the pause is counted once). */
uint64_t ing_lim_wait(struct ing_host *h);
void ing_lim_took(struct ing_host *h);                   /* one frame pushed */
void ing_lim_ctl(struct bt_ctl_req *req, json_t *msg);  /* setLimits from the store */

/* ingest_main.c */
/* The store's reply to {op} (owned), retried every 2 s with heartbeats until it answers; NULL
   only when the process is stopping. */
json_t *ing_store_wait(const char *op);
struct ing_host *ing_host_add(uint32_t id, const char *name, bool insecure, uint64_t cursor, bool have_cursor,
			      uint32_t epoch);
struct ing_host *ing_host_find(const char *name);
void ing_host_connect_now(struct ing_host *h);
/* Disconnects the host and removes it from the table (status reported to the store unless NULL). */
int  ing_host_drop(const char *name, const char *status); /* 0, or -ENOENT */
struct ing_host **ing_hosts(size_t *n);  /* the table (borrowed; changes with add and drop) */
#endif
