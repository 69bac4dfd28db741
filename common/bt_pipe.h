/*
 * NAME
 *	bt_pipe - the pipeline contract: segment layout, ring records, stats pages
 * DESCRIPTION
 *	Every stage includes this header to agree on which ring, bell and page is whose, and on
 *	the byte layout of the records that cross the rings.  With K verify and N fanout
 *	processes the segment holds:
 *
 *	  ring 0 .. K-1     SPSC  ingest   -> verify k   (raw frames,  struct bt_rec_frame)
 *	  ring K .. 2K-1    SPSC  verify k -> store      (verdicts,    struct bt_rec_verdict;
 *	                                                  resolved identities, struct bt_rec_identity)
 *	  ring 2K           BCAST store    -> fanout *   (committed frames, exactly as sent on the wire)
 *
 *	  bell 0            store waits on it (all K verdict rings ring it)
 *	  bell 1+k          verify k waits on it
 *	  bell K+1          every fanout waits on it
 *
 *	  page 0            supervisor (struct bt_sup_page)
 *	  page 1+slot       stats of one stage (struct bt_stats_page), slot from bt_pipe_slot()
 *
 *	Records are plain structs with fixed-width fields, checked by _Static_assert, followed by
 *	variable bytes.  Both ends are built from the same tree; the layout version in the
 *	segment header (bt_shm) changes whenever a record changes.
 */
#ifndef BT_PIPE_H
#define BT_PIPE_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BT_MAX_VERIFY 64
#define BT_MAX_FANOUT 32
#define BT_HOST_MAX 256
#define BT_DID_MAX 256
#define BT_REV_MAX 16
#define BT_STATUS_MAX 32

enum bt_role { BT_ROLE_SUPERVISOR, BT_ROLE_INGEST, BT_ROLE_VERIFY, BT_ROLE_STORE, BT_ROLE_FANOUT };
const char *bt_role_name(enum bt_role r);            /* "ingest", ... */

static inline unsigned bt_pipe_ring_in(int k) { return (unsigned)k; }
static inline unsigned bt_pipe_ring_out(int K, int k) { return (unsigned)(K + k); }
static inline unsigned bt_pipe_ring_bcast(int K) { return (unsigned)(2 * K); }
static inline unsigned bt_pipe_bell_store(void) { return 0; }
static inline unsigned bt_pipe_bell_verify(int k) { return 1u + (unsigned)k; }
static inline unsigned bt_pipe_bell_fanout(int K) { return 1u + (unsigned)K; }
/* Stats slot of a stage: ingest 0, store 1, verify 2.., fanout after the verifies. */
static inline unsigned bt_pipe_slot(enum bt_role r, int idx)
{
	switch (r) {
	case BT_ROLE_INGEST: return 0;
	case BT_ROLE_STORE: return 1;
	case BT_ROLE_VERIFY: return 2u + (unsigned)idx;
	case BT_ROLE_FANOUT: return 2u + BT_MAX_VERIFY + (unsigned)idx;
	default: return 2u + BT_MAX_VERIFY + BT_MAX_FANOUT;
	}
}
#define BT_PIPE_N_PAGES (1 + 3 + BT_MAX_VERIFY + BT_MAX_FANOUT)
static inline unsigned bt_pipe_page_of_slot(unsigned slot) { return 1u + slot; }

/* Ring record types */
enum { BT_REC_FRAME = 1, BT_REC_VERDICT = 2, BT_REC_EVENT = 3, BT_REC_IDENTITY = 4 };

/* ingest -> verify: one upstream frame, stamped.  Followed by frame_len bytes of the frame. */
#define BT_FRAME_CHAIN_RESET 1u  /* first frame after a cursor reset: starts a new host chain */
struct bt_rec_frame {
	uint32_t host_id;
	uint32_t flags;
	uint64_t useq;      /* upstream seq */
	uint64_t prev_useq; /* upstream seq of this host's previous frame (its resume cursor if first) */
	uint64_t recv_ms;   /* wall clock at ingest */
	uint32_t frame_len;
	uint16_t host_len;
	uint16_t pad;
	char host[BT_HOST_MAX]; /* "host" or "host:port", not NUL-terminated past host_len */
	uint32_t epoch;     /* the host's chain epoch: +1 at every upstream reset (docs/chain.md) */
	uint32_t pad2;
};
_Static_assert(sizeof(struct bt_rec_frame) == 304, "bt_rec_frame layout");
_Static_assert(offsetof(struct bt_rec_frame, epoch) == 296, "bt_rec_frame epoch");

/* Event types carried in verdicts and on the broadcast ring */
enum bt_ev { BT_EV_NONE, BT_EV_COMMIT, BT_EV_SYNC, BT_EV_IDENTITY, BT_EV_ACCOUNT };

/* Drop reasons: every frame that is not committed has exactly one. */
#define BT_DROPS(X)                                                       \
	X(NONE, "accepted")                                               \
	X(BAD_FRAME, "frame does not decode")                             \
	X(UNKNOWN_TYPE, "unknown or unforwarded message type")            \
	X(TOO_BIG, "size limit (frame, blocks, ops) or tooBig/rebase set") \
	X(BAD_CAR, "CAR does not parse or a block hash mismatches")       \
	X(BAD_COMMIT, "commit object missing or malformed")               \
	X(REPO_MISMATCH, "repo/did or rev differ from the signed commit") \
	X(BAD_SYNTAX, "DID or TID syntax")                                \
	X(REV_OLD, "rev not newer than the stored rev")                   \
	X(REV_FUTURE, "rev more than 5 minutes in the future")            \
	X(NO_IDENTITY, "DID could not be resolved")                       \
	X(NO_KEY, "DID document has no usable #atproto key")              \
	X(WRONG_HOST, "DID's PDS is not the host the frame came from")    \
	X(BAD_SIG, "signature does not verify")                           \
	X(BAD_INVERSION, "ops do not invert the new MST to prevData (Sync 1.1)") \
	X(INACTIVE, "account is not active")                              \
	X(DUPLICATE, "frame already has a verdict (re-delivery)")         \
	X(QUARANTINED, "frame crashed verify twice")                      \
	X(SYNC_REV_OLD, "#sync rev older than the stored rev")            \
	X(BAD_RECORD, "malformed record in the ingest->verify ring")      \
	X(TOO_BIG_VERDICT, "verdict larger than the verify->store ring's largest record") \
	X(IDENTITY_TIMEOUT, "DID unresolved for RELAY_IDENTITY_WAIT (account desynchronized)") \
	X(MALFORMED, "malformed ring record or a frame the store cannot splice (chained, never committed)") \
	X(STALE_EPOCH, "verdict of a chain epoch too old to be tracked (docs/chain.md)") \
	X(THROTTLED, "account over its host's account limit (#account throttled; RELAY_DEFAULT_ACCOUNT_LIMIT, changeLimits)") \
	X(TAKENDOWN, "account taken down by the relay's operator (/admin/repo/takeDown)")
enum bt_drop {
#define X(n, d) BT_DROP_##n,
	BT_DROPS(X)
#undef X
	BT_DROP__COUNT
};
const char *bt_drop_name(enum bt_drop d);  /* "bad_sig" */

/* verify -> store: the verdict on one frame.  Followed by frame_len bytes: for an accept, the
   canonical frame without its seq value, which goes at seq_off (bt_fh_splice_seq). */
#define BT_V_CHAIN_RESET 1u   /* copied from the frame */
#define BT_V_ACTIVE 2u        /* #account: active */
#define BT_V_DISCONTINUITY 4u /* since/prevData did not match the stored state (counted, passed on) */
#define BT_V_HAS_STATUS 8u
struct bt_rec_verdict {
	uint32_t host_id;
	uint16_t reason;    /* enum bt_drop; BT_DROP_NONE = accept */
	uint8_t ev;         /* enum bt_ev */
	uint8_t flags;
	uint64_t useq, prev_useq;
	uint64_t recv_ms;
	uint32_t seq_off, frame_len;
	uint16_t did_len;
	uint8_t rev_len, status_len, data_len, commit_len;
	uint8_t pad[2];
	char did[BT_DID_MAX];
	char rev[BT_REV_MAX];
	char status[BT_STATUS_MAX];
	uint8_t data_cid[64];   /* binary CID of the new MST root (commit/sync) */
	uint8_t commit_cid[64]; /* binary CID of the commit */
	uint32_t epoch;         /* copied from the frame */
	uint32_t pad2;
};
_Static_assert(sizeof(struct bt_rec_verdict) == 488, "bt_rec_verdict layout");
_Static_assert(offsetof(struct bt_rec_verdict, epoch) == 480, "bt_rec_verdict epoch");

/* Headroom of a verdict's frame over the upstream frame it came from (canonical re-encoding,
   the spliced seq); the start-up check of ring sizes (bt_proc_init) counts it. */
#define BT_VERDICT_SLACK 4096u

/* verify -> store: an identity verify resolved, written ahead of the verdicts that used it, so
   the store persists it ("i/" did) and the next verify incarnation starts warm.  An accepted
   #identity verdict deletes it again, in stream order (docs/identity.md).  No trailing bytes. */
#define BT_KEY_STR_MAX 64 /* multikey "z..." of a compressed K-256/P-256 key, with room */
struct bt_rec_identity {
	uint64_t fetched_ms;    /* wall clock of the resolution */
	uint16_t did_len;
	uint8_t key_len;        /* 0: the document has no usable #atproto key */
	uint8_t pad;
	uint16_t host_len;
	uint8_t pad2[2];
	char did[BT_DID_MAX];
	char key[BT_KEY_STR_MAX]; /* multikey "z..." */
	char pds_host[BT_HOST_MAX];
};
_Static_assert(sizeof(struct bt_rec_identity) == 592, "bt_rec_identity layout");

/* Stats page of one stage: single writer (the stage), read by the supervisor and /_health. */
#define BT_STATS(X)                                                                 \
	X(FRAMES_IN, "frames read from upstreams (ingest) or rings (verify, store)") \
	X(BYTES_IN, "bytes read")                                                   \
	X(FRAMES_OUT, "frames written to the next ring or to consumers")           \
	X(BAD_FRAMES, "upstream frames that did not decode (connection dropped)")   \
	X(RING_FULL, "times the next ring was full (backpressure)")                 \
	X(CONNECTS, "upstream or consumer connections opened")                      \
	X(DISCONNECTS, "upstream or consumer connections closed")                   \
	X(ACCEPTED, "verdicts: accepted")                                           \
	X(DROPPED, "verdicts: dropped (all reasons)")                               \
	X(DISCONTINUITIES, "since/prevData mismatches passed on")                   \
	X(INVERSION_LENIENT, "inversion failures passed on (RELAY_LENIENT_SYNC_VALIDATION)") \
	X(RESOLVES, "DID resolutions started")                                      \
	X(RESOLVE_FAILS, "DID resolutions failed")                                  \
	X(WAITING, "frames waiting for an identity now")                            \
	X(COMMITTED, "events committed to RocksDB")                                 \
	X(DUPLICATES, "verdicts recognised as re-deliveries")                       \
	X(BATCHES, "RocksDB write batches")                                         \
	X(LAST_SEQ, "last relay seq committed or sent")                             \
	X(CONSUMERS, "consumers connected now")                                     \
	X(REPLAYED, "events sent from RocksDB (replay)")                            \
	X(OVERRUNS, "times a reader fell behind the broadcast ring")                \
	X(SLOW_KICKS, "consumers closed for falling out of the window")             \
	X(HOSTS, "upstream hosts subscribed now")                                   \
	X(CRAWLS, "requestCrawl accepted")                                          \
	X(CRAWLS_REFUSED, "requestCrawl refused")                                   \
	X(QUARANTINED, "frames quarantined after crashing verify twice")            \
	X(SIG_PRIOR_KEY, "commits accepted with the account's key from before a rotation (PLC audit log)") \
	X(IDENTITY_LOADED, "identities taken from RocksDB instead of resolving (persisted cache)") \
	X(CHAIN_RESETS, "upstream chain resets applied (new epoch)")                \
	X(EMSGSIZE, "records too big for a ring (counted drop; a broadcast one is filled from RocksDB)") \
	X(RING_GAPS, "seqs missing on the broadcast ring, filled from RocksDB")      \
	X(REPUBLISHED, "events published again from RocksDB at store start")           \
	X(DB_OPENS, "times a store opened RocksDB in this relay run (read views reopen when it changes)") \
	X(HTTP_REFUSED, "requests answered 4xx, and connections that sent no request in time (fanout)") \
	X(READ_TIMEOUTS, "consumers closed because their output did not drain for RELAY_CONSUMER_READ_TIMEOUT") \
	X(IP_REFUSED, "consumer connections refused by RELAY_MAX_CONNS_PER_IP")                \
	X(BUDGET_HELD, "times a consumer's pump stopped at its share of RELAY_CONSUMER_BUFFER_MB") \
	X(QUEUED_BYTES, "bytes queued to consumers now") \
	X(RATE_PAUSES, "times a host's socket was paused by its event rate limit (ingest; frames wait, never dropped)") \
	X(THROTTLED_ACCOUNTS, "accounts throttled now by their host's account limit (store)") \
	X(TAKEDOWNS, "accounts taken down now (store)") \
	X(TAKEDOWN_GEN, "changes of the takedown list (store; a fanout reloads the list when it moves)") \
	X(TAKEDOWN_HIDDEN, "events of taken-down accounts skipped instead of sent (fanout)") \
	X(TAKEDOWN_ERASED, "events of taken-down accounts erased from RocksDB (store)") \
	X(HANDED_OUT, "consumer connections handed to another fanout, open, at a restart (fanout)") \
	X(HANDED_IN, "consumer connections taken over from another fanout (fanout)")
enum bt_stat {
#define X(n, d) BT_STAT_##n,
	BT_STATS(X)
#undef X
	BT_STAT__COUNT
};
const char *bt_stat_name(enum bt_stat s); /* "frames_in" */

/* Histograms in a stats page (one writer: the stage).  b[i] counts observations <= bound i and
   > bound i-1 (not cumulative; the exporter sums); the last bucket is +Inf.  Bounds: bt_hist_bounds. */
#define BT_HIST_BUCKETS 16
#define BT_HISTS(X)                                                                          \
	X(EMIT_COMMIT_MS, "ms from ingest receiving a frame to the store writing its event (store)") \
	X(COMMIT_SEND_MS, "ms from the store writing an event to its queueing to a live consumer (fanout)") \
	X(EVENT_BYTES, "bytes of an upstream frame (ingest)")
enum bt_hist_id {
#define X(n, d) BT_HIST_##n,
	BT_HISTS(X)
#undef X
	BT_HIST__COUNT
};
struct bt_hist {
	_Atomic uint64_t b[BT_HIST_BUCKETS];
	_Atomic uint64_t count, sum;
};
const char *bt_hist_name(enum bt_hist_id h);            /* "emit_commit_ms" */
const uint64_t *bt_hist_bounds(enum bt_hist_id h);      /* BT_HIST_BUCKETS - 1 finite upper bounds */

/* The store's recent commits (its page only): entry i % BT_COMMIT_LOG holds the last seq of a
   written batch and the wall-clock ms of the write; commit_n counts entries ever written.  The
   fanouts look a seq's commit time up here (COMMIT_SEND_MS).  Writer: seq = 0, ms, seq (release). */
#define BT_COMMIT_LOG 64
struct bt_commit_ent {
	_Atomic uint64_t seq, ms;
};

struct bt_stats_page {
	_Atomic uint64_t heartbeat_ms; /* CLOCK_MONOTONIC ms of the last loop turn */
	_Atomic int32_t pid;
	uint32_t role, index;
	uint32_t pad;
	_Atomic uint64_t progress;     /* grows whenever the stage consumes input */
	/* Crash bookkeeping (verify): the input position of the frame being processed, 0 between
	   frames.  It outlives the process, so the next incarnation knows which frame it died on. */
	_Atomic uint64_t cur_pos;
	uint64_t crash_pos;
	uint32_t crash_count;
	uint32_t pad2;
	_Atomic uint64_t counters[BT_STAT__COUNT];
	_Atomic uint64_t drops[BT_DROP__COUNT];
	struct bt_hist hist[BT_HIST__COUNT];
	_Atomic uint64_t commit_n;
	struct bt_commit_ent commits[BT_COMMIT_LOG];
	/* Fanout: the newest /admin/consumers/list generation this fanout asked for (the others
	   write their consumer tables for it: fanout_conslist.c) */
	_Atomic uint64_t list_req;
	/* the supervisor's reload generation this stage applied (bt_proc.c) */
	_Atomic uint32_t reload_seen;
};
_Static_assert(sizeof(struct bt_stats_page) <= 4096, "stats page fits a page");

struct bt_sup_page {
	_Atomic int32_t pid;
	uint32_t n_verify;
	_Atomic uint32_t n_fanout; /* fanouts the supervisor keeps running (batonctl scale changes it);
				      any of the BT_MAX_FANOUT slots may run one (docker-compose --scale) */
	_Atomic uint32_t fanout_wanted; /* bit i: the supervisor keeps a fanout running in slot i */
	_Atomic uint64_t started_ms;
	/* batonctl reload: "ENV=value\n" lines, every parameter reloaded so far; reload_gen is odd
	   while the supervisor rewrites them (a seqlock), even when they are whole. */
	_Atomic uint32_t reload_gen;
	char reload[3072];
	/* restarts of the stage of each slot (bt_pipe_slot) counted by the supervisor (0 when the
	   stages are started by others): for /metrics and /dash */
	_Atomic uint32_t restarts[2 + BT_MAX_VERIFY + BT_MAX_FANOUT];
};
_Static_assert(sizeof(struct bt_sup_page) <= 4096, "supervisor page fits a page");

static inline void bt_stat_add(struct bt_stats_page *p, enum bt_stat s, uint64_t v)
{
	atomic_fetch_add_explicit(&p->counters[s], v, memory_order_relaxed);
}
static inline void bt_stat_set(struct bt_stats_page *p, enum bt_stat s, uint64_t v)
{
	atomic_store_explicit(&p->counters[s], v, memory_order_relaxed);
}
static inline uint64_t bt_stat_get(const struct bt_stats_page *p, enum bt_stat s)
{
	return atomic_load_explicit(&p->counters[s], memory_order_relaxed);
}
/* Counts v in histogram h of page p (the page's writer only). */
void bt_hist_observe(struct bt_stats_page *p, enum bt_hist_id h, uint64_t v);
/* Store: records that every seq <= last_seq is written, at wall-clock ms. */
void bt_commit_log_push(struct bt_stats_page *p, uint64_t last_seq, uint64_t ms);
/* The i-th newest entry (0 = newest) of the store's commit log, whose entry count was n: its
   batch's last seq and wall-clock ms; false past the log's end or while the store overwrites it. */
bool bt_commit_log_at(const struct bt_stats_page *sp, uint64_t n, uint64_t i, uint64_t *seq, uint64_t *ms);
/* Wall-clock ms the store wrote seq (from its page sp), 0 when no longer (or not yet) logged. */
uint64_t bt_commit_log_ms(const struct bt_stats_page *sp, uint64_t seq);
uint64_t bt_now_ms(void);      /* CLOCK_MONOTONIC */
uint64_t bt_wall_ms(void);     /* CLOCK_REALTIME */
uint64_t bt_hash_did(const char *did, size_t n);      /* FNV-1a 64; partition = hash % K */
#endif
