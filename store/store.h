/*
 * NAME
 *	store.h - the store process: the only RocksDB writer
 */
#ifndef STORE_H
#define STORE_H
#include <stdbool.h>
#include <stdint.h>

#include "bt_db.h"
#include "bt_u64map.h"

#include <jansson.h>

/* Chains kept per host: the current epoch and up to STO_CHAINS-1 others (older ones still
   draining, or a newer one whose reset verdict has not arrived).  docs/chain.md. */
#define STO_CHAINS 4

/* The exactly-once chain of one upstream sequence (one epoch) of a host (see store_chain.c). */
struct sto_chain {
	bool used;
	bool started;               /* its first frame (reset, or the host's creation) is decided */
	bool dirty;                 /* c/ key must be written in the current batch */
	bool sweep;                 /* may hold links the cursor jumped over (see sweep()) */
	uint32_t epoch;
	uint64_t cursor;            /* every frame of this epoch with useq <= cursor is decided */
	struct bt_u64map pending;   /* prev useq -> useq: verdicts above the cursor */
	struct bt_u64map done;      /* useq -> 1: the same frames, by their own seq */
};

/* One upstream host and its resume chains. */
struct sto_host {
	struct bt_host_rec rec;     /* as persisted; rec.cursor = cursor of the current epoch */
	uint32_t epoch;             /* current epoch: the highest started one; drives rec.cursor */
	struct sto_chain ch[STO_CHAINS];
	bool dirty;                 /* rec must be written in the current batch */
	bool listed;                /* on the store's list of hosts touched by the current batch */
};

struct sto_hosts {
	struct sto_host **v;
	uint32_t n, cap;            /* v[id] (ids are dense, from 1) */
	uint32_t last_id;
};

/* Outcome of one verdict for the chain. */
enum { STO_NEW, STO_DUP, STO_STALE };

int  sto_hosts_load(struct sto_hosts *hs, struct bt_db *db);
void sto_hosts_free(struct sto_hosts *hs);
struct sto_host *sto_host_get(struct sto_hosts *hs, uint32_t id);
struct sto_host *sto_host_find(struct sto_hosts *hs, const char *name, size_t n);
struct sto_host *sto_host_add(struct sto_hosts *hs, const char *name, size_t n, struct bt_db_batch *b);
/* A host just added (no verdict yet) starts at cursor instead of 0 (requestCrawl's cursorHint):
   its chain and record are written into b. */
void sto_host_set_start(struct sto_host *h, uint64_t cursor, struct bt_db_batch *b);
/* store_admin.c: the admission state (docs/ctl.md).  sto_admin_ctl answers the op and returns
   true if it is one of its own.  Around addHost of a new host: sto_admin_new_host says whether
   it counts against today's limit (1), not (0), or is refused (-1, *refusal is the reply);
   sto_admin_host_added applies the cursor hint and the count into b. */
struct bt_ctl_req;
typedef struct json_t json_t;
bool sto_admin_ctl(struct bt_db *db, struct sto_hosts *hs, struct bt_ctl_req *req, const char *op, json_t *msg);
int  sto_admin_new_host(struct bt_db *db, json_t *msg, json_t **refusal);
void sto_admin_host_added(struct bt_db *db, struct sto_host *h, json_t *msg, int counted, struct bt_db_batch *b);
uint64_t sto_admin_new_today(struct bt_db *db);
/* Decides one verdict of (epoch, useq, prev, reset) and records it in the chains, writing the
   changes (c/ and p/ keys) into b: STO_NEW (commit or count it now: it is chained already),
   STO_DUP (already decided: a re-delivery), STO_STALE (its epoch is no longer tracked). */
int  sto_chain_take(struct sto_host *h, uint32_t epoch, uint64_t useq, uint64_t prev, bool reset,
		    struct bt_db_batch *b);
/* Writes the host record and the chains changed since the last flush into b. */
void sto_host_flush(struct sto_host *h, struct bt_db_batch *b);
/* store_ident.c: a struct bt_rec_identity from a verdict ring -> put "i/" did in the batch;
   an accepted #identity -> delete it in the batch (stream order). */
void sto_ident_take(const void *p, size_t len, struct bt_db_batch *b);
void sto_ident_purge(const char *did, size_t n, struct bt_db_batch *b);
/* Current epoch (the one ingest resumes), and the links still pending over all epochs. */
uint32_t sto_host_epoch(const struct sto_host *h);
/* A new epoch for the host's next upstream reset, above every epoch given before; the host
   record is written into b (the caller writes b before telling ingest). */
uint32_t sto_host_alloc_epoch(struct sto_host *h, struct bt_db_batch *b);
size_t sto_host_pending(const struct sto_host *h);

/* store_acct.c: account states in memory, written through with each batch.  Capacity is raised
   to batch_max + 1 (a batch touches at most one account per verdict, at most batch_max). */
int  sto_accts_init(size_t cap, size_t batch_max);
void sto_accts_free(void);
/* The DID's state, loaded from db on a miss (a fresh active one if absent); marks it touched:
   the caller may change it, and sto_accts_flush() writes it into the batch. */
struct bt_acct_rec *sto_acct_get(struct bt_db *db, const char *did, size_t dn);
/* Puts every state touched since the last flush into b. */
void sto_accts_flush(struct bt_db_batch *b);
size_t sto_accts_size(void);

/* store_main.c, for store_limits.c: an event made by the relay into the current batch (the
   next relay seq, or 0), and a write + publish of the batch between turns. */
uint64_t sto_commit_frame(const char *did, size_t dn, uint8_t ev, const uint8_t *frame, size_t n, size_t seq_off,
			  bool fail);
void sto_write_now(void);
struct bt_db_batch *sto_batch(void); /* the batch being built */
/* store_limits.c: a relay-made #account {did, active, status (if inactive and sn)} into the
   current batch: its seq, or 0. */
uint64_t sto_emit_account(const char *did, size_t dn, bool active, const char *status, size_t sn);

/* store_limits.c: per-host account limits and counts (docs/ops.md "Limits").  _verdict is
   called for an accepted verdict before it is committed: BT_DROP_NONE (commit it), or
   BT_DROP_THROTTLED (its account is over its host's limit: counted as such; a newly throttled
   account gets a relay-made #account throttled in the batch first). */
struct bt_rec_verdict;

struct bt_ctl_req;
void sto_limits_init(struct bt_db *db, struct sto_hosts *hs);
enum bt_drop sto_limits_verdict(const struct bt_rec_verdict *v, struct bt_db_batch *b);
void sto_limits_flush(struct bt_db_batch *b);
void sto_limits_json(const struct sto_host *h, json_t *o);
/* changeLimits {hostname, repo_limit?, per_second?, per_hour?, per_day?}: persisted, throttled
   accounts re-activated up to the new limit (each a relay-made #account), pushed to ingest. */
void sto_limits_change(struct bt_ctl_req *req, json_t *msg);

/* store_takedown.c: takedowns by the operator (docs/ops.md "Takedowns").  _verdict: an accepted
   verdict of a taken-down account is dropped (true; BT_DROP_TAKENDOWN), an upstream #account
   still updating the state kept underneath.  _ctl answers takeDown / reverseTakedown (true if op
   is one of them; called between turns).  _step erases a bounded number of events of taken-down
   accounts from RocksDB (between turns): true while work remains. */
void sto_td_init(struct bt_db *db);
bool sto_td_verdict(const struct bt_rec_verdict *v);
bool sto_td_ctl(struct bt_ctl_req *req, const char *op, json_t *msg);
bool sto_td_step(void);

/* store_coll.c: the collection index (docs/fanout.md "Collection index").  _init starts the
   recount fetch thread when recount is set (the unit test runs without); _verdict is called for
   each committed verdict after its account state (seq: its relay seq; frame[0..n) as committed)
   and puts what is not counts (the recount mark) into b; _flush writes the batch's counts into
   b and forgets them (flush_accounts); _tick, between turns, starts recounts and applies their
   results in batches of their own. */
struct bt_rec_verdict;
int  sto_coll_init(struct bt_db *db, struct sto_hosts *hs, bool recount);
void sto_coll_fini(void);
void sto_coll_verdict(const struct bt_rec_verdict *v, const uint8_t *frame, size_t n, uint64_t seq,
		      struct bt_db_batch *b);
void sto_coll_flush(struct bt_db_batch *b);
void sto_coll_tick(void);
/* Removes every collection of the account (and its recount mark), for takedowns: written into
   b now, which the caller writes in stream order (the store's batch, sto_batch(), from a
   verdict or a control op; or its own between turns). */
void sto_coll_drop_account(const char *did, size_t dn, struct bt_db_batch *b);
/* Marks the account for a recount from its repo (a reversed takedown), gen = seq, into b. */
void sto_coll_mark_recount(const char *did, size_t dn, uint64_t seq, struct bt_db_batch *b);
/* Replaces all the account's counts with counts[i] of colls[i] (NUL-terminated NSIDs), into b,
   and deletes its recount mark: a recount's result. */
void sto_coll_replace(const char *did, size_t dn, const char *const *colls, const uint64_t *counts, size_t n,
		      struct bt_db_batch *b);
#endif
