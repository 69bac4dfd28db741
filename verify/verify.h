/*
 * NAME
 *	verify.h - the verify process: full validation of one partition of DIDs
 */
#ifndef VERIFY_H
#define VERIFY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bt_cid.h"
#include "bt_did.h"
#include "bt_fh.h"
#include "bt_pipe.h"

struct event_base;
struct bt_db;

/* A frame read from the input ring and not yet answered with a verdict in the output ring. */
struct vfy_job {
	uint64_t start_pos, end_pos;      /* input ring positions of this record */
	const struct bt_rec_frame *fr;    /* in the input ring: valid until released */
	const uint8_t *frame;
	struct vfy_did *d;                /* the frame's DID, NULL if it has none (bad frame) */
	uint64_t read_ms;                 /* when it was read from the ring */
	uint64_t next;                    /* next job waiting on the same DID, or VFY_NONE */
	bool done;
	bool re_resolved;                 /* this job already triggered a fresh resolution */
};
/* Job ids count every frame read (64 bits: never wrap, so no id ever equals VFY_NONE). */
#define VFY_NONE UINT64_MAX

enum vfy_ident_state { VI_NONE, VI_RESOLVING, VI_OK, VI_FAILED };

/* Everything verify knows about one DID: identity, chain state, and frames waiting on it. */
struct vfy_did {
	char did[BT_DID_MAX];
	uint16_t did_len;
	struct vfy_did *hnext, *lru_prev, *lru_next;
	/* identity */
	enum vfy_ident_state ist;
	struct bt_identity id;
	uint64_t id_fetched_ms, id_expires_ms, retry_ms;
	unsigned fails;
	/* chain state (from RocksDB, then kept up to date here) */
	bool acct_loaded, active;
	char rev[BT_REV_MAX + 1];
	struct bt_cid data;
	char status[BT_STATUS_MAX + 1];
	/* Lesson 15: before dropping a commit of an inactive account, ask its PDS (getRepoStatus). */
	bool checking;             /* a status check or an audit-log fetch is in flight; the DID's frames wait */
	uint64_t status_checked_ms;
	int64_t ident_ms;          /* latest #identity time seen in the stream (PDS clock, ms; verify_ident.c) */
	/* FIFO of jobs waiting on this DID (identity resolution, or behind one that is) */
	uint64_t wait_head, wait_tail;
	/* Output ring position after this DID's last verdict (UINT64_MAX while that verdict waits
	   in the overflow queue).  The store releases the ring only after its RocksDB write, so
	   while the ring's tail is below it the DID has uncommitted verdicts and RocksDB holds an
	   older state than this entry: it must not be evicted. */
	uint64_t out_end;
	/* Its frames waited RELAY_IDENTITY_WAIT for a resolution and were dropped: until one
	   succeeds, its new frames are dropped at once (identity_timeout), not held in the ring. */
	bool desync;
};

/* Order of two revs (TIDs: fixed length, base32-sortable; a shorter one sorts first):
   <0, 0, >0 as a is older than, equal to, newer than b. */
static inline int vfy_rev_cmp(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return an < bn ? -1 : 1;
	int c = memcmp(a, b, an);
	return (c > 0) - (c < 0);
}

/* A DID's hash for verify's own tables (cache buckets, eviction filter, audit slots).  Not
   bt_hash_did itself: ingest partitions by bt_hash_did % K, so within one verify its low bits
   are all alike (with K = 2 the lowest bit is fixed and half the buckets stay empty).  The
   murmur3 finalizer mixes every bit into every bit. */
static inline uint64_t vfy_did_hash(const char *did, size_t n)
{
	uint64_t h = bt_hash_did(did, n);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

/* verify_cache.c */
void vfy_cache_init(size_t cap);
struct vfy_did *vfy_did_get(const char *did, size_t n, bool create); /* touches LRU; NULL if full of busy entries */
void vfy_did_wait(struct vfy_did *d, uint64_t job);
bool vfy_did_busy(const struct vfy_did *d);
void vfy_acct_load(struct vfy_did *d, struct bt_db *db);

/* verify_ident.c: the persisted identity cache and the prior-key rule (docs/identity.md) */
enum vfy_prior { VFY_PRIOR_NO, VFY_PRIOR_OK, VFY_PRIOR_WAIT };
void vfy_ident_init(struct event_base *base);
void vfy_ident_free(void);
size_t vfy_ident_inflight(void);                          /* audit-log fetches in flight */
void vfy_ident_persist(const struct vfy_did *d);          /* after a resolution: to the store */
void vfy_ident_load(struct vfy_did *d, struct bt_db *db); /* a DID entering the cache: "i/" did */
void vfy_ident_seen(struct vfy_did *d, const struct bt_bytes *time); /* an accepted #identity's time */
/* The signature failed with the current key: does a key from before a rotation vouch for it?
   WAIT: the audit log is being fetched, d->checking is set and d is resumed later. */
enum vfy_prior vfy_prior_key(struct vfy_did *d, const struct bt_rec_frame *fr, const char *rev, size_t revn,
			     const uint8_t *msg, size_t n, const uint8_t *sig, size_t siglen);

/* verify_main.c */
bool vfy_out_put(uint32_t type, const void *p, size_t n); /* a non-verdict record; false if it cannot go now */
struct vfy_job *vfy_job(uint64_t j);
uint64_t vfy_out_committed(void);       /* the output ring's tail: verdicts before it are in RocksDB */
void vfy_resume(struct vfy_did *d);     /* run the DID's waiting jobs after a resolution */
void vfy_resolve(struct vfy_did *d);    /* start (or restart) resolving d */
extern struct bt_db *vfy_db;
#endif
