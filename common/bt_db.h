/*
 * NAME
 *	bt_db - the RocksDB key schema and a thin wrapper over its C API
 * DESCRIPTION
 *	The store process is the only writer (bt_db_open_primary); every other process that reads
 *	opens a secondary instance (bt_db_open_secondary) and calls bt_db_catch_up() before a read
 *	that must see recent writes.  Keys (big-endian integers so they sort):
 *
 *	  "m/seq"                        u64  last relay seq ever assigned (never reused)
 *	  "m/hostid"                     u32  last host id assigned
 *	  "e/" be64(seq)                 event: struct bt_ev_hdr + did + the frame as sent on the wire
 *	  "a/" did                       struct bt_acct_rec: account state
 *	  "h/" be32(host_id)             struct bt_host_rec: host, status, committed cursor
 *	  "n/" hostname                  be32 host_id
 *	  "i/" did                       struct bt_ident_rec: the identity verify last resolved (docs/identity.md)
 *	  "p/" be32(host_id) be32(epoch) be64(prev)
 *	                                 be64 useq: a frame with a verdict above its epoch's cursor,
 *	                                 waiting for the chain below it (see store/store_chain.c);
 *	                                 a v1 store wrote "p/" be32(host_id) be64(prev) (epoch 0),
 *	                                 migrated at load
 *	  "d/" domain                    empty: a banned domain and its subdomains (store/store_admin.c)
 *	  "m/crawl"                      be64 flags (1 = new crawls disabled), be64 per-day limit + 1
 *	                                 (0 = RELAY_NEW_HOSTS_PER_DAY_LIMIT), be64 UTC day, be64 new
 *	                                 hosts that day (store/store_admin.c)
 *	  "c/" be32(host_id) be32(epoch) be64 cursor, be32 flags (1 = started), be32 0: one chain
 *	                                 of the host (docs/chain.md); none in a v1 store (the
 *	                                 host record's cursor is epoch 0's)
 *	  "l/" be32(host_id)             struct bt_host_limits: account limit and count, rate
 *	                                 overrides (store/store_limits.c); absent = defaults, 0 accounts
 *	  "t/" be32(host_id) be64(serial) did
 *	                                 empty: an account throttled by its host's account limit, in
 *	                                 the order it was throttled (re-activated first-come first)
 *	  "k/" did                       struct bt_takedown_rec: an account taken down by the operator
 *	                                 (store/store_takedown.c); kept after a reversal
 *	  "m/erase"                      be64: the next event seq the takedown eraser reads
 *	  "y/" did \0 coll               be64 records of the collection the account holds (absent = 0)
 *	  "x/" coll \0 did               empty: the account holds the collection (DID order per
 *	                                 collection: listReposByCollection)
 *	  "y/" \0 coll                   be64 accounts holding the collection (listCollections)
 *	  "w/" did                       be64 gen (relay seq of the #sync), be32 fetches, be64 due
 *	                                 ms, be32 0: the account's counts await a recount from its
 *	                                 repo (store/store_coll.c, docs/fanout.md "Collection index")
 * DIAGNOSTICS
 *	Functions return 0 or a negative code and log RocksDB's message once.
 */
#ifndef BT_DB_H
#define BT_DB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_pipe.h"

struct bt_db;
struct rocksdb_writebatch_t;

/* Event record header, followed by did_len bytes of DID and frame_len bytes of frame. */
struct bt_ev_hdr {
	uint64_t time_ms;  /* wall clock when committed */
	uint32_t frame_len;
	uint16_t did_len;
	uint8_t ev;        /* enum bt_ev */
	uint8_t pad;
};
_Static_assert(sizeof(struct bt_ev_hdr) == 16, "bt_ev_hdr layout");

#define BT_ACCT_ACTIVE 1u
#define BT_ACCT_COUNTED 2u   /* counted in its host's account count (store_limits.c) */
#define BT_ACCT_THROTTLED 4u /* over its host's account limit: shown inactive, status "throttled";
                                BT_ACCT_ACTIVE and status stay the upstream's */
#define BT_ACCT_TAKENDOWN 8u /* taken down by the operator: shown inactive, status "takendown";
                                BT_ACCT_ACTIVE and status stay the upstream's */
struct bt_acct_rec {
	uint32_t version;  /* 1 */
	uint32_t host_id;
	uint32_t flags;    /* BT_ACCT_* */
	uint8_t rev_len, data_len, head_len, status_len;
	char rev[BT_REV_MAX];
	uint8_t data_cid[64];
	uint8_t head_cid[64];
	char status[BT_STATUS_MAX];
	uint64_t last_seq;
	uint64_t updated_ms;
};

/* A takedown ("k/" did).  Events of the account with a seq below `seq` leave replay: fanouts
   skip them, and the store erases them (an erased event keeps its key, with a bare header:
   did_len 0, frame_len 0). */
#define BT_TAKEDOWN_IN_FORCE 1u /* not reversed */
#define BT_TAKEDOWN_ERASED 2u   /* every event below seq is erased */
struct bt_takedown_rec {
	uint32_t version;  /* 1 */
	uint32_t flags;    /* BT_TAKEDOWN_* */
	uint64_t seq;      /* the relay-made #account takendown of the (last) takedown */
	uint64_t time_ms;  /* wall clock of the (last) takedown */
	uint64_t reversed_ms; /* of the last reversal, 0 = none */
};

/* A persisted identity: written by the store from a struct bt_rec_identity, deleted by an
   accepted #identity; read by verify through its secondary view. */
struct bt_ident_rec {
	uint32_t version;  /* 1 */
	uint8_t key_len;   /* 0: no usable #atproto key */
	uint8_t pad;
	uint16_t host_len;
	uint64_t fetched_ms; /* wall clock of the resolution */
	char key[BT_KEY_STR_MAX];
	char pds_host[BT_HOST_MAX];
};

enum bt_host_status { BT_HOST_ACTIVE, BT_HOST_IDLE, BT_HOST_OFFLINE, BT_HOST_THROTTLED, BT_HOST_BANNED };
struct bt_host_rec {
	uint32_t version;  /* 1 */
	uint32_t host_id;
	uint32_t status;   /* enum bt_host_status */
	uint32_t alloc_epoch; /* highest chain epoch ingest has been given (docs/chain.md); 0 in old records */
	uint64_t cursor;   /* committed resume cursor: every frame <= it has a verdict */
	uint64_t created_ms;
	uint64_t last_ms;  /* last frame committed */
	uint64_t n_events;
	uint16_t host_len;
	char host[BT_HOST_MAX];
};
const char *bt_host_status_name(uint32_t s);

/* A host's limits and account count (store/store_limits.c).  Written in the batch that counts
   a new account, so the count is exact across kill -9. */
struct bt_host_limits {
	uint32_t version;  /* 1 */
	uint32_t host_id;
	int64_t account_limit;
	uint64_t account_count;  /* accounts first seen from this host */
	uint64_t throttled;      /* of them, throttled now */
	uint64_t serial;         /* last "t/" serial given */
	int64_t rate[3];         /* per second, hour, day overrides; 0 = from the account limit */
};

int  bt_db_open_primary(const char *dir, bool sync_writes, struct bt_db **out);       /* returns owned */
int  bt_db_open_secondary(const char *dir, const char *sec_dir, struct bt_db **out); /* read-only view */
/* Primary: a full manual compaction (benchmarks: bytes per stored event after compaction). */
void bt_db_compact_all(struct bt_db *db);
int  bt_db_catch_up(struct bt_db *db);                    /* secondary: see the primary's latest writes */
/* Secondary: catch up with the primary opened the gen-th time in this relay run (the store's
   DB_OPENS counter).  A view that last saw another primary is opened afresh first: a RocksDB
   7.8 secondary that tailed a primary killed with -9 can go on missing some of the next
   primary's writes (e2e reseq saw listHosts stuck at a host cursor of 0 while m/seq was
   current).  1 if it was reopened, 0, or <0 (then try again later). */
int  bt_db_catch_up_gen(struct bt_db *db, uint64_t gen);
void bt_db_close(struct bt_db **db);
/* Get into a caller buffer: returns value length (may exceed cap: then only cap bytes copied),
   -ENOENT if absent, <0 on error. */
int  bt_db_get(struct bt_db *db, const void *k, size_t kn, void *buf, size_t cap);
/* Get into a malloc'd buffer (returns owned, caller frees with bt_db_free_value). */
int  bt_db_get_alloc(struct bt_db *db, const void *k, size_t kn, char **val, size_t *vn);
void bt_db_free_value(char *v);
int  bt_db_put(struct bt_db *db, const void *k, size_t kn, const void *v, size_t vn); /* single write */

struct bt_db_batch;
struct bt_db_batch *bt_db_batch_new(void);
void bt_db_batch_put(struct bt_db_batch *b, const void *k, size_t kn, const void *v, size_t vn);
void bt_db_batch_del(struct bt_db_batch *b, const void *k, size_t kn);
void bt_db_batch_del_range(struct bt_db_batch *b, const void *k0, size_t k0n, const void *k1, size_t k1n);
void bt_db_batch_clear(struct bt_db_batch *b);
size_t bt_db_batch_count(struct bt_db_batch *b);
int  bt_db_write(struct bt_db *db, struct bt_db_batch *b);   /* atomic; synced if sync_writes */
void bt_db_batch_free(struct bt_db_batch **b);

/* Iteration from a key, forward, while keys start with prefix. cb returns non-zero to stop. */
typedef int bt_db_iter_fn(void *arg, const char *k, size_t kn, const char *v, size_t vn);
int  bt_db_scan(struct bt_db *db, const void *from, size_t fn, const void *prefix, size_t pn,
		bt_db_iter_fn *cb, void *arg);
/* Last key with prefix (e.g. the newest event): returns key length, -ENOENT if none. */
int  bt_db_last(struct bt_db *db, const void *prefix, size_t pn, char *kout, size_t kcap);

/* Key builders: return the key length. */
size_t bt_key_event(char out[10], uint64_t seq);
size_t bt_key_acct(char *out, size_t cap, const char *did, size_t dn);
size_t bt_key_host(char out[6], uint32_t host_id);
size_t bt_key_hostname(char *out, size_t cap, const char *host, size_t hn);
size_t bt_key_pending(char out[18], uint32_t host_id, uint32_t epoch, uint64_t prev);
size_t bt_key_chain(char out[10], uint32_t host_id, uint32_t epoch);
size_t bt_key_ident(char *out, size_t cap, const char *did, size_t dn);
size_t bt_key_takedown(char *out, size_t cap, const char *did, size_t dn);
size_t bt_key_limits(char out[6], uint32_t host_id);
size_t bt_key_throttled(char *out, size_t cap, uint32_t host_id, uint64_t serial, const char *did, size_t dn);
void   bt_be64_put(uint8_t *p, uint64_t v);
uint64_t bt_be64_get(const uint8_t *p);
void   bt_be32_put(uint8_t *p, uint32_t v);
uint32_t bt_be32_get(const uint8_t *p);
#endif
