/*
 * NAME
 *	bt_shm.h - shared-memory segment: SPSC rings, broadcast ring, bells, stats pages
 * DESCRIPTION
 *	One segment file per relay instance (e.g. /dev/shm/baton-<name>), created by the
 *	supervisor with bt_shm_create() and attached MAP_SHARED by every stage with
 *	bt_shm_open().  It holds a header (magic + layout version, written last with a
 *	release store and checked first on attach), a table of rings, an array of bells
 *	(32-bit futex words) and fixed 4096-byte pages (stats/heartbeats, one writer each).
 *	The byte layout, the version marker and the memory-ordering rules are in
 *	docs/ring.md.
 *
 *	Concurrency: no locks in shared memory.  An SPSC ring has exactly one producer and
 *	one consumer (each may be any process; a killed one is simply restarted).  A
 *	broadcast ring has one writer that never waits and any number of readers that
 *	keep their own positions.  A struct bt_ring handle is process-local: one thread
 *	per role (producer side, consumer side) may use it at a time.
 * DIAGNOSTICS
 *	Functions return 0 or a positive count on success and a negative errno on failure:
 *	-ENOENT (no segment / record gone), -EPROTO (magic, version or layout mismatch,
 *	corrupt record), -EAGAIN (ring full / nothing new), -EMSGSIZE (record too big),
 *	-EOVERFLOW (broadcast reader lapped), -ENOSPC (caller buffer too small),
 *	-EINVAL (bad argument).  Nothing here logs or aborts on bad input.
 */
#ifndef BT_SHM_H
#define BT_SHM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

#define BT_SHM_MAX_RINGS 64
#define BT_SHM_MAX_BELLS 64
#define BT_SHM_PAGE_SIZE 4096
#define BT_SHM_MAGIC 0x4d485342u /* "BSHM" little-endian */
#define BT_SHM_VERSION 3u

/* Largest payload a ring of capacity cap accepts; a bigger claim/publish is -EMSGSIZE.
   A quarter of the ring (minus the biggest record header) so a record always fits in an
   empty ring, including the padding record at the wrap. */
#define BT_RING_MAX_RECORD(cap) ((size_t)(cap) / 4 - 16)
#define BT_RING_MIN_CAPACITY 256u
#define BT_RING_TYPE_PAD 0xffffffffu /* reserved record type: padding at the wrap */

enum bt_ring_kind { BT_RING_SPSC = 1, BT_RING_BCAST = 2 };

struct bt_shm_layout {
	unsigned n_rings;
	struct {
		enum bt_ring_kind kind;
		uint64_t capacity; /* bytes, power of two, >= BT_RING_MIN_CAPACITY */
		unsigned bell;     /* consumer's bell (SPSC) or the bell readers wait on (BCAST) */
	} rings[BT_SHM_MAX_RINGS];
	unsigned n_bells;
	unsigned n_pages;
};

struct bt_shm;
struct bt_ring;
struct bt_bell;
struct bt_bell_watch;

/* ---- segment ---- */

/* Creates or re-creates the segment at path (supervisor); borrows path and lay; *out returns owned.
   Built under a temporary name and renamed into place, so an attacher never sees a half-built
   segment; a previous segment at path is marked retired (see bt_shm_retired). */
int bt_shm_create(const char *path, const struct bt_shm_layout *lay, struct bt_shm **out);
/* Attaches an existing segment; borrows path; *out returns owned. -ENOENT, -EPROTO on magic/version/layout mismatch. */
int bt_shm_open(const char *path, struct bt_shm **out);
/* Unmaps and frees the handle; NULLs *s; accepts NULL. */
void bt_shm_close(struct bt_shm **s);
/* Removes the segment file (the mappings stay valid until closed); borrows path. */
int bt_shm_unlink(const char *path);
/* Returns 1 if the supervisor re-created the segment at its path since this one was made (re-attach). */
int bt_shm_retired(const struct bt_shm *s);
/* Ring idx; borrowed, valid until close; NULL if idx is out of range. */
struct bt_ring *bt_shm_ring(struct bt_shm *s, unsigned idx);
/* 4096-byte page idx (zeroed at creation); borrowed, valid until close; NULL if out of range. */
void *bt_shm_page(struct bt_shm *s, unsigned idx);
/* Number of rings / bells / pages in the segment. */
unsigned bt_shm_n_rings(const struct bt_shm *s);
unsigned bt_shm_n_bells(const struct bt_shm *s);
/* When the segment was created (CLOCK_REALTIME ns): tells one relay run's segment from the next. */
uint64_t bt_shm_created_ns(const struct bt_shm *s);
unsigned bt_shm_n_pages(const struct bt_shm *s);

/* ---- any ring ---- */

/* Kind of the ring (BT_RING_SPSC or BT_RING_BCAST). */
enum bt_ring_kind bt_ring_kind(const struct bt_ring *r);
/* Data capacity in bytes. */
uint64_t bt_ring_capacity(const struct bt_ring *r);
/* Largest payload this ring accepts (BT_RING_MAX_RECORD of its capacity). */
size_t bt_ring_max_record(const struct bt_ring *r);
/* The ring's bell (consumer's bell for SPSC, readers' bell for BCAST); borrowed. */
struct bt_bell *bt_ring_bell(struct bt_ring *r);

/* ---- SPSC ring: one producer process, one consumer process ---- */

/* Reserves len payload bytes; *payload borrows ring memory until commit. -EAGAIN if full, -EMSGSIZE
   if len > bt_ring_max_record, -EINVAL for type BT_RING_TYPE_PAD.  A new claim replaces an
   uncommitted one. */
int bt_ring_claim(struct bt_ring *r, uint32_t type, size_t len, void **payload);
/* Publishes the claimed record (release store of the head) and rings the consumer's bell. */
void bt_ring_commit(struct bt_ring *r);
/* Like bt_ring_commit but publishes only the first len bytes of the claim (len <= claimed). */
void bt_ring_commit_len(struct bt_ring *r, size_t len);
/* Publishes the claimed record without ringing the bell (batching: ring once with bt_ring_wake). */
void bt_ring_commit_quiet(struct bt_ring *r);
/* Rings the ring's bell (after a batch of bt_ring_commit_quiet). */
void bt_ring_wake(struct bt_ring *r);
/* First unreleased position (where a restarted consumer resumes). */
uint64_t bt_ring_tail(const struct bt_ring *r);
/* Position after the newest committed record. */
uint64_t bt_ring_head(const struct bt_ring *r);
/* Record at *pos; *pos advanced past it; *payload borrows ring memory until released.
   -EAGAIN if none, -EINVAL if *pos is not between tail and head, -EPROTO if corrupt. */
int bt_ring_read(struct bt_ring *r, uint64_t *pos, uint32_t *type, const void **payload, size_t *len);
/* Everything before pos may be overwritten (release store of the tail). */
void bt_ring_release(struct bt_ring *r, uint64_t pos);
/* Bytes between tail and head (for health/metrics). */
size_t bt_ring_used(const struct bt_ring *r);

/* ---- broadcast ring: one writer that never waits, many readers ---- */

/* Publishes a record with relay seq (> the last one); copies p; never blocks; rings the bell.
   -EMSGSIZE, -EINVAL (seq not increasing, PAD type, SPSC ring). */
int bt_bcast_publish(struct bt_ring *r, uint64_t seq, uint32_t type, const void *p, size_t n);
/* The same without ringing the bell: a writer publishing a batch rings it once, with
   bt_ring_wake, after the batch's last record (one wake of the readers, not one per record). */
int bt_bcast_publish_quiet(struct bt_ring *r, uint64_t seq, uint32_t type, const void *p, size_t n);
/* Writer side, at the start of a new writer (the previous one may have died inside a publish):
   sets the ring's last seq to that of the newest record actually below head, and returns it in
   *last_seq: the next publish must be *last_seq + 1, and whatever the dead writer committed
   after it must be published again (docs/chain.md, "republish").  -ENOENT if the ring was never
   written (*last_seq = 0), -EPROTO if it does not scan. */
int bt_bcast_recover(struct bt_ring *r, uint64_t *last_seq);
/* Fault injection for tests only (never set in production): a publish of this seq _exit(9)s
   between its last_seq store and its head store.  0 = off. */
extern uint64_t bt_bcast_fault_exit_seq;
/* Seq of the newest published record, 0 if none. */
uint64_t bt_bcast_last_seq(const struct bt_ring *r);
/* Position after the newest record (a new live reader starts here). */
uint64_t bt_bcast_head(const struct bt_ring *r);
/* Copies the record at *pos into buf (cap bytes) and advances *pos.  -ENOSPC if cap is too small
   (*len = size needed, *pos unchanged); -EAGAIN nothing new; -EOVERFLOW *pos was (or is being)
   overwritten; a torn copy is never returned (seqlock check after the copy). */
int bt_bcast_read(struct bt_ring *r, uint64_t *pos, uint64_t *seq, uint32_t *type, void *buf, size_t cap,
		  size_t *len);
/* Looks at the record at *pos without copying it: its seq, type, payload length and *next, the
   position after it (*pos is moved past padding only).  Same errors as bt_bcast_read except
   -ENOSPC.  The values were checked not to be overwritten when returned; the payload itself is
   not read (a reader that has it already, e.g. framed by another consumer, just moves to *next). */
int bt_bcast_peek(struct bt_ring *r, uint64_t *pos, uint64_t *seq, uint32_t *type, size_t *len, uint64_t *next);
/* Position of the first record with seq > after_seq: 0 and *pos set; -ENOENT if the ring no longer
   holds it (its oldest record has seq > after_seq + 1); -EAGAIN if after_seq >= last seq (*pos = head). */
int bt_bcast_seek(struct bt_ring *r, uint64_t after_seq, uint64_t *pos);

/* ---- bells: a 32-bit futex word per consumer, shared across processes ---- */

/* Bell idx; borrowed, valid until close; NULL if out of range. */
struct bt_bell *bt_shm_bell(struct bt_shm *s, unsigned idx);
/* Current value (acquire): read it, check the rings, then bt_bell_wait(b, value, ...). */
uint32_t bt_bell_value(const struct bt_bell *b);
/* Number of registered sleepers (metrics/tests). */
uint32_t bt_bell_sleepers(const struct bt_bell *b);
/* Increments the value; FUTEX_WAKE only if a sleeper is registered. */
void bt_bell_ring(struct bt_bell *b);
/* Sleeps until the value differs from seen (returns at once if it already does).
   0 woken/changed, -ETIMEDOUT, -EINTR (signal).  timeout_ms < 0 waits forever. */
int bt_bell_wait(struct bt_bell *b, uint32_t seen, int timeout_ms);
/* A thread that waits on the bell and wakes the loop through an eventfd; cb runs in the loop
   thread, coalesced (many rings, one callback), and once right after creation so the caller
   never misses work published before it.  Borrows base and b; returns owned, NULL on error. */
struct bt_bell_watch *bt_bell_watch_new(struct event_base *base, struct bt_bell *b, void (*cb)(void *arg),
					void *arg);
/* Pauses (paused != 0) or resumes the watch: while paused the thread does not wait on the bell
   (no wakeup per ring); resuming runs cb once at once, so nothing published meanwhile is missed.
   Call from the loop thread. */
void bt_bell_watch_pause(struct bt_bell_watch *w, int paused);
/* Stops and joins the thread, frees the watch; NULLs *w; accepts NULL.  Call from the loop thread. */
void bt_bell_watch_free(struct bt_bell_watch **w);

#endif
