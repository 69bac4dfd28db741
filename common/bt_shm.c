/*
 * NAME
 *	bt_shm.c - shared-memory segment, SPSC ring, broadcast ring, bells, stats pages
 * DESCRIPTION
 *	The supervisor creates one segment per relay instance; every stage maps it
 *	MAP_SHARED.  The byte layout is drawn in docs/ring.md; the structs below carry
 *	_Static_asserts so the drawing and the code cannot drift apart silently.
 *
 *	Concurrency rules (see docs/ring.md for the full argument):
 *	- No locks anywhere in shared memory; C11 atomics with acquire/release, plus
 *	  seq_cst only for the Dekker-style sleeper handshake of the bells.
 *	- SPSC ring: the producer alone writes head and the record bytes past head; the
 *	  consumer alone writes tail.  Head is stored with release after the record bytes,
 *	  tail with release after the consumer is done with the released records.
 *	- Broadcast ring: one writer.  Before overwriting anything it raises `claim`
 *	  (the end of the region it is about to write) and only then writes; a reader
 *	  copies a record and afterwards checks `claim` (seqlock style), so a copy that
 *	  raced with an overwrite is reported as -EOVERFLOW instead of returned torn.
 *	  Record bytes are moved with relaxed 8-byte atomics so the race is defined.
 *	- A process killed at any instruction leaves the shared state consistent:
 *	  everything a reader may look at is published by one final store.
 *	Used by every process; nothing here allocates per record.
 * DIAGNOSTICS
 *	Negative errno values, see bt_shm.h.  Bugs in the caller (commit without a claim,
 *	releasing past the head) trip assertions.
 */
#include "bt_shm.h"

#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- shared-memory layout (docs/ring.md) ---- */

#define CACHE_PAIR 128 /* two cache lines: adjacent-line prefetch must not couple head and tail */
#define MAX_CAPACITY ((uint64_t)1 << 40)
#define MAX_PAGES 65536u

struct shm_ring_desc {
	uint32_t kind;
	uint32_t bell;
	uint64_t capacity;
	uint64_t ctl_off;  /* struct shm_ring_ctl, from segment start */
	uint64_t data_off; /* capacity bytes of records, from segment start */
};
_Static_assert(sizeof(struct shm_ring_desc) == 32, "ring descriptor is 32 bytes");

struct shm_hdr {
	uint32_t magic;           /* 0: BT_SHM_MAGIC, written just before version */
	_Atomic uint32_t version; /* 4: BT_SHM_VERSION, release-stored last */
	uint64_t size;            /* 8: total bytes of the segment file */
	uint32_t n_rings;         /* 16 */
	uint32_t n_bells;         /* 20 */
	uint32_t n_pages;         /* 24 */
	_Atomic uint32_t retired; /* 28: set when a newer segment replaced this one */
	uint64_t bells_off;       /* 32 */
	uint64_t pages_off;       /* 40 */
	uint64_t created_ns;      /* 48: CLOCK_REALTIME at creation (diagnostics) */
	uint64_t reserved;        /* 56 */
	struct shm_ring_desc rings[BT_SHM_MAX_RINGS]; /* 64 .. 2112 */
};
_Static_assert(offsetof(struct shm_hdr, version) == 4, "version at byte 4");
_Static_assert(offsetof(struct shm_hdr, rings) == 64, "ring table at byte 64");
_Static_assert(sizeof(struct shm_hdr) <= BT_SHM_PAGE_SIZE, "header fits its page");

struct shm_ring_ctl {
	/* 0: read-only after creation */
	uint32_t kind;
	uint32_t bell;
	uint64_t capacity;
	char pad0[CACHE_PAIR - 16];
	/* 128: producer/writer line */
	_Atomic uint64_t head;     /* position after the newest committed record */
	_Atomic uint64_t last_seq; /* BCAST: seq of the newest record */
	_Atomic uint64_t first_seq; /* BCAST: seq of the first record ever published (recover) */
	char pad1[CACHE_PAIR - 24];
	/* 256: consumer line (SPSC) / overwrite marks (BCAST, written by the writer) */
	_Atomic uint64_t tail;   /* SPSC: first unreleased position */
	_Atomic uint64_t claim;  /* BCAST: end of the region being written */
	_Atomic uint64_t oldest; /* BCAST: a record boundary at or after claim - capacity */
	char pad2[CACHE_PAIR - 24];
	char pad3[CACHE_PAIR];
};
_Static_assert(sizeof(struct shm_ring_ctl) == 512, "ring control block is 512 bytes");
_Static_assert(offsetof(struct shm_ring_ctl, head) == 128, "head at 128");
_Static_assert(offsetof(struct shm_ring_ctl, tail) == 256, "tail at 256");

struct bt_bell {
	_Atomic uint32_t value;    /* the futex word */
	_Atomic uint32_t sleepers; /* processes inside FUTEX_WAIT (or about to be) */
	char pad[64 - 8];
};
_Static_assert(sizeof(struct bt_bell) == 64, "a bell is one cache line");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "futex word is 32 bits");

#define SPSC_HDR 8  /* u32 len, u32 type */
#define BCAST_HDR 16 /* u32 len, u32 type, u64 seq */

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
static inline uint64_t align_page(uint64_t n) { return (n + BT_SHM_PAGE_SIZE - 1) & ~(uint64_t)(BT_SHM_PAGE_SIZE - 1); }

/* ---- process-local handles ---- */

struct bt_ring {
	struct shm_ring_ctl *ctl;
	uint8_t *data;
	struct bt_bell *bell;
	enum bt_ring_kind kind;
	uint64_t cap, mask;
	size_t max_rec;
	/* producer side */
	uint64_t cached_tail;
	uint64_t claim_rec; /* position of the claimed record's header */
	size_t claim_len;
	int claimed;
	/* consumer side */
	uint64_t cached_head;
};

struct bt_shm {
	uint8_t *base;
	size_t size;
	struct shm_hdr *hdr;
	unsigned n_rings;
	struct bt_ring rings[BT_SHM_MAX_RINGS];
};

/* ---- segment ---- */

static int valid_capacity(uint64_t c)
{
	return c >= BT_RING_MIN_CAPACITY && c <= MAX_CAPACITY && (c & (c - 1)) == 0;
}

/* Checks a mapped header against the file size; 0 or -EPROTO.  Never trusts the file. */
static int check_layout(const struct shm_hdr *h, uint64_t fsize)
{
	if (h->size != fsize || h->n_rings > BT_SHM_MAX_RINGS || h->n_bells > BT_SHM_MAX_BELLS ||
	    h->n_pages > MAX_PAGES)
		return -EPROTO;
	if (h->bells_off < BT_SHM_PAGE_SIZE || h->bells_off % 64 ||
	    h->bells_off + (uint64_t)h->n_bells * sizeof(struct bt_bell) > fsize)
		return -EPROTO;
	if (h->pages_off % BT_SHM_PAGE_SIZE || h->pages_off < BT_SHM_PAGE_SIZE ||
	    h->pages_off > fsize || (fsize - h->pages_off) / BT_SHM_PAGE_SIZE < h->n_pages)
		return -EPROTO;
	for (unsigned i = 0; i < h->n_rings; i++) {
		const struct shm_ring_desc *d = &h->rings[i];
		if ((d->kind != BT_RING_SPSC && d->kind != BT_RING_BCAST) || d->bell >= h->n_bells ||
		    !valid_capacity(d->capacity))
			return -EPROTO;
		if (d->ctl_off < BT_SHM_PAGE_SIZE || d->ctl_off % CACHE_PAIR ||
		    d->ctl_off + sizeof(struct shm_ring_ctl) > fsize)
			return -EPROTO;
		if (d->data_off < BT_SHM_PAGE_SIZE || d->data_off % 8 || d->data_off > fsize ||
		    fsize - d->data_off < d->capacity)
			return -EPROTO;
	}
	return 0;
}

/* Builds the process-local handle over a checked mapping; takes the mapping. */
static int attach(uint8_t *base, size_t size, struct bt_shm **out)
{
	struct bt_shm *s = calloc(1, sizeof(*s));
	if (!s) {
		munmap(base, size);
		return -ENOMEM;
	}
	s->base = base;
	s->size = size;
	s->hdr = (struct shm_hdr *)base;
	s->n_rings = s->hdr->n_rings;
	for (unsigned i = 0; i < s->n_rings; i++) {
		const struct shm_ring_desc *d = &s->hdr->rings[i];
		struct bt_ring *r = &s->rings[i];
		r->ctl = (struct shm_ring_ctl *)(base + d->ctl_off);
		r->data = base + d->data_off;
		r->bell = (struct bt_bell *)(base + s->hdr->bells_off) + d->bell;
		r->kind = (enum bt_ring_kind)d->kind;
		r->cap = d->capacity;
		r->mask = d->capacity - 1;
		r->max_rec = BT_RING_MAX_RECORD(d->capacity);
	}
	*out = s;
	return 0;
}

int bt_shm_create(const char *path, const struct bt_shm_layout *lay, struct bt_shm **out)
{
	*out = NULL;
	if (!path || !lay || lay->n_rings > BT_SHM_MAX_RINGS || lay->n_bells > BT_SHM_MAX_BELLS ||
	    lay->n_pages > MAX_PAGES)
		return -EINVAL;
	for (unsigned i = 0; i < lay->n_rings; i++) {
		if ((lay->rings[i].kind != BT_RING_SPSC && lay->rings[i].kind != BT_RING_BCAST) ||
		    !valid_capacity(lay->rings[i].capacity) || lay->rings[i].bell >= lay->n_bells)
			return -EINVAL;
	}
	/* header | ring control blocks | bells | pages | ring data (each page-aligned) */
	uint64_t off = BT_SHM_PAGE_SIZE;
	uint64_t ctl_off = off;
	off += align_page((uint64_t)lay->n_rings * sizeof(struct shm_ring_ctl));
	uint64_t bells_off = off;
	off += align_page((uint64_t)lay->n_bells * sizeof(struct bt_bell));
	uint64_t pages_off = off;
	off += (uint64_t)lay->n_pages * BT_SHM_PAGE_SIZE;
	uint64_t data_off[BT_SHM_MAX_RINGS];
	for (unsigned i = 0; i < lay->n_rings; i++) {
		data_off[i] = off;
		off += align_page(lay->rings[i].capacity);
	}
	uint64_t size = off;
	if (size > (uint64_t)SIZE_MAX / 2 || size > (uint64_t)LLONG_MAX)
		return -EINVAL;

	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* Reserve every page now: a full /dev/shm must fail here, not SIGBUS a stage later. */
	int rc = posix_fallocate(fd, 0, (off_t)size);
	if (rc) {
		close(fd);
		unlink(tmp);
		return -rc;
	}
	uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		close(fd);
		unlink(tmp);
		return rc;
	}
	close(fd);
	memset(base, 0, BT_SHM_PAGE_SIZE); /* the file is fresh (zeroed); be explicit for the header */

	struct shm_hdr *h = (struct shm_hdr *)base;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	h->size = size;
	h->n_rings = lay->n_rings;
	h->n_bells = lay->n_bells;
	h->n_pages = lay->n_pages;
	h->bells_off = bells_off;
	h->pages_off = pages_off;
	h->created_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	for (unsigned i = 0; i < lay->n_rings; i++) {
		struct shm_ring_desc *d = &h->rings[i];
		d->kind = lay->rings[i].kind;
		d->bell = lay->rings[i].bell;
		d->capacity = lay->rings[i].capacity;
		d->ctl_off = ctl_off + (uint64_t)i * sizeof(struct shm_ring_ctl);
		d->data_off = data_off[i];
		struct shm_ring_ctl *c = (struct shm_ring_ctl *)(base + d->ctl_off);
		c->kind = d->kind;
		c->bell = d->bell;
		c->capacity = d->capacity;
	}
	h->magic = BT_SHM_MAGIC;
	/* Publishes the whole layout: an attacher that reads this version sees every field above. */
	atomic_store_explicit(&h->version, BT_SHM_VERSION, memory_order_release);

	/* Swap it into place; tell stages still mapping the old segment that it is retired. */
	int oldfd = open(path, O_RDWR | O_CLOEXEC);
	if (rename(tmp, path) < 0) {
		rc = -errno;
		if (oldfd >= 0)
			close(oldfd);
		munmap(base, size);
		unlink(tmp);
		return rc;
	}
	if (oldfd >= 0) {
		struct stat st;
		if (fstat(oldfd, &st) == 0 && st.st_size >= BT_SHM_PAGE_SIZE) {
			void *ob = mmap(NULL, BT_SHM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, oldfd, 0);
			if (ob != MAP_FAILED) {
				struct shm_hdr *oh = ob;
				if (oh->magic == BT_SHM_MAGIC)
					atomic_store_explicit(&oh->retired, 1, memory_order_release);
				munmap(ob, BT_SHM_PAGE_SIZE);
			}
		}
		close(oldfd);
	}
	return attach(base, size, out);
}

int bt_shm_open(const char *path, struct bt_shm **out)
{
	*out = NULL;
	if (!path)
		return -EINVAL;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	if (st.st_size < BT_SHM_PAGE_SIZE || (uint64_t)st.st_size > (uint64_t)SIZE_MAX / 2) {
		close(fd);
		return -EPROTO;
	}
	size_t size = (size_t)st.st_size;
	uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int rc = base == MAP_FAILED ? -errno : 0;
	close(fd);
	if (rc)
		return rc;
	struct shm_hdr *h = (struct shm_hdr *)base;
	/* Version first (acquire): it was stored last, so everything else is complete once it matches. */
	if (atomic_load_explicit(&h->version, memory_order_acquire) != BT_SHM_VERSION ||
	    h->magic != BT_SHM_MAGIC || check_layout(h, size) < 0) {
		munmap(base, size);
		return -EPROTO;
	}
	return attach(base, size, out);
}

void bt_shm_close(struct bt_shm **sp)
{
	if (!sp || !*sp)
		return;
	struct bt_shm *s = *sp;
	munmap(s->base, s->size);
	free(s);
	*sp = NULL;
}

int bt_shm_unlink(const char *path)
{
	return unlink(path) < 0 ? -errno : 0;
}

int bt_shm_retired(const struct bt_shm *s)
{
	return atomic_load_explicit(&s->hdr->retired, memory_order_acquire) != 0;
}

struct bt_ring *bt_shm_ring(struct bt_shm *s, unsigned idx)
{
	return idx < s->n_rings ? &s->rings[idx] : NULL;
}

void *bt_shm_page(struct bt_shm *s, unsigned idx)
{
	if (idx >= s->hdr->n_pages)
		return NULL;
	return s->base + s->hdr->pages_off + (uint64_t)idx * BT_SHM_PAGE_SIZE;
}

unsigned bt_shm_n_rings(const struct bt_shm *s) { return s->n_rings; }
unsigned bt_shm_n_bells(const struct bt_shm *s) { return s->hdr->n_bells; }
uint64_t bt_shm_created_ns(const struct bt_shm *s) { return s->hdr->created_ns; }
unsigned bt_shm_n_pages(const struct bt_shm *s) { return s->hdr->n_pages; }

struct bt_bell *bt_shm_bell(struct bt_shm *s, unsigned idx)
{
	if (idx >= s->hdr->n_bells)
		return NULL;
	return (struct bt_bell *)(s->base + s->hdr->bells_off) + idx;
}

/* ---- any ring ---- */

enum bt_ring_kind bt_ring_kind(const struct bt_ring *r) { return r->kind; }
uint64_t bt_ring_capacity(const struct bt_ring *r) { return r->cap; }
size_t bt_ring_max_record(const struct bt_ring *r) { return r->max_rec; }
struct bt_bell *bt_ring_bell(struct bt_ring *r) { return r->bell; }

/* ---- SPSC ring ---- */

struct rec_hdr {
	uint32_t len;
	uint32_t type;
};
_Static_assert(sizeof(struct rec_hdr) == SPSC_HDR, "SPSC record header is 8 bytes");

int bt_ring_claim(struct bt_ring *r, uint32_t type, size_t len, void **payload)
{
	if (r->kind != BT_RING_SPSC || type == BT_RING_TYPE_PAD)
		return -EINVAL;
	if (len > r->max_rec)
		return -EMSGSIZE;
	uint64_t total = align8(SPSC_HDR + len);
	/* Only this process writes head: a relaxed load sees its own (or its dead predecessor's) value. */
	uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_relaxed);
	uint64_t idx = head & r->mask, to_end = r->cap - idx;
	uint64_t need = total <= to_end ? total : to_end + total;
	if (head + need - r->cached_tail > r->cap) {
		/* Acquire: the consumer finished reading what it released before we overwrite it. */
		r->cached_tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
		if (r->cached_tail > head || head - r->cached_tail > r->cap)
			return -EPROTO;
		if (head + need - r->cached_tail > r->cap)
			return -EAGAIN;
	}
	uint64_t rec = head;
	if (total > to_end) {
		/* Padding record to the end so the payload is contiguous; published with the record. */
		struct rec_hdr pad = {(uint32_t)(to_end - SPSC_HDR), BT_RING_TYPE_PAD};
		memcpy(r->data + idx, &pad, sizeof(pad));
		rec = head + to_end;
	}
	struct rec_hdr h = {(uint32_t)len, type};
	memcpy(r->data + (rec & r->mask), &h, sizeof(h));
	r->claim_rec = rec;
	r->claim_len = len;
	r->claimed = 1;
	*payload = r->data + (rec & r->mask) + SPSC_HDR;
	return 0;
}

static void commit(struct bt_ring *r, size_t len, int wake)
{
	assert(r->claimed && "bt_ring_commit without a claim");
	assert(len <= r->claim_len);
	if (len != r->claim_len) {
		uint32_t l = (uint32_t)len;
		memcpy(r->data + (r->claim_rec & r->mask), &l, sizeof(l));
	}
	r->claimed = 0;
	/* Publishes the padding record, the header and the payload written since the claim. */
	atomic_store_explicit(&r->ctl->head, r->claim_rec + align8(SPSC_HDR + len), memory_order_release);
	if (wake)
		bt_bell_ring(r->bell);
}

void bt_ring_commit(struct bt_ring *r) { commit(r, r->claim_len, 1); }
void bt_ring_commit_len(struct bt_ring *r, size_t len) { commit(r, len, 1); }
void bt_ring_commit_quiet(struct bt_ring *r) { commit(r, r->claim_len, 0); }
void bt_ring_wake(struct bt_ring *r) { bt_bell_ring(r->bell); }

uint64_t bt_ring_tail(const struct bt_ring *r)
{
	return atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
}

uint64_t bt_ring_head(const struct bt_ring *r)
{
	return atomic_load_explicit(&r->ctl->head, memory_order_acquire);
}

int bt_ring_read(struct bt_ring *r, uint64_t *pos, uint32_t *type, const void **payload, size_t *len)
{
	if (r->kind != BT_RING_SPSC)
		return -EINVAL;
	uint64_t p = *pos;
	if (p >= r->cached_head) /* Acquire: the record bytes before head are complete. */
		r->cached_head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
	uint64_t h = r->cached_head;
	if (p == h)
		return -EAGAIN;
	uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_relaxed);
	if (p > h || p < tail || h - p > r->cap || (p & 7))
		return -EINVAL;
	for (;;) {
		uint64_t idx = p & r->mask, to_end = r->cap - idx;
		struct rec_hdr rh;
		memcpy(&rh, r->data + idx, sizeof(rh));
		if (rh.type == BT_RING_TYPE_PAD) {
			if (rh.len != to_end - SPSC_HDR || h - p < to_end)
				return -EPROTO;
			p += to_end;
			if (p == h) { /* a pad is always committed with a record: corrupt, but harmless */
				*pos = p;
				return -EAGAIN;
			}
			continue;
		}
		uint64_t total = align8(SPSC_HDR + (uint64_t)rh.len);
		if (rh.len > r->max_rec || total > to_end || total > h - p)
			return -EPROTO;
		*type = rh.type;
		*payload = r->data + idx + SPSC_HDR;
		*len = rh.len;
		*pos = p + total;
		return 0;
	}
}

void bt_ring_release(struct bt_ring *r, uint64_t pos)
{
	assert(pos <= atomic_load_explicit(&r->ctl->head, memory_order_acquire) && "release past head");
	if (pos <= atomic_load_explicit(&r->ctl->tail, memory_order_relaxed))
		return;
	/* Publishes "done reading before pos": the producer may overwrite it after an acquire load. */
	atomic_store_explicit(&r->ctl->tail, pos, memory_order_release);
}

size_t bt_ring_used(const struct bt_ring *r)
{
	uint64_t t = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
	uint64_t h = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
	return h >= t ? (size_t)(h - t) : 0;
}

/* ---- broadcast ring ---- */

/* Record bytes are moved as relaxed 8-byte atomics: a reader may race with the writer by design
   (it then discards the copy), and atomics make that race well-defined. */
static inline _Atomic uint64_t *word(const struct bt_ring *r, uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(r->data + (pos & r->mask));
}

static inline void put_word(struct bt_ring *r, uint64_t pos, uint64_t v)
{
	atomic_store_explicit(word(r, pos), v, memory_order_relaxed);
}

static inline uint64_t get_word(const struct bt_ring *r, uint64_t pos)
{
	return atomic_load_explicit(word(r, pos), memory_order_relaxed);
}

static inline uint64_t hdr_word(uint32_t len, uint32_t type)
{
	struct rec_hdr h = {len, type};
	uint64_t w;
	memcpy(&w, &h, sizeof(w));
	return w;
}

static inline struct rec_hdr split_word(uint64_t w)
{
	struct rec_hdr h;
	memcpy(&h, &w, sizeof(h));
	return h;
}

/* True if the bytes at pos were overwritten or are being overwritten (call after the copy). */
static inline int lapped(const struct bt_ring *r, uint64_t pos)
{
	/* Pairs with the writer's release fence: if our copy saw any byte written after it raised
	   claim, this load sees the raised claim. */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&r->ctl->claim, memory_order_relaxed) > pos + r->cap;
}

static int bcast_put(struct bt_ring *r, uint64_t seq, uint32_t type, const void *p, size_t n, int ring)
{
	if (r->kind != BT_RING_BCAST || type == BT_RING_TYPE_PAD || seq == 0 || (n && !p))
		return -EINVAL;
	if (n > r->max_rec)
		return -EMSGSIZE;
	struct shm_ring_ctl *c = r->ctl;
	uint64_t last = atomic_load_explicit(&c->last_seq, memory_order_relaxed);
	if (seq <= last)
		return -EINVAL;
	uint64_t total = align8(BCAST_HDR + n);
	uint64_t head = atomic_load_explicit(&c->head, memory_order_relaxed);
	uint64_t idx = head & r->mask, to_end = r->cap - idx;
	uint64_t rec = total <= to_end ? head : head + to_end;
	uint64_t end = rec + total;

	if (end > r->cap) {
		/* Move `oldest` past every record this write will overwrite (our own, intact, bytes). */
		uint64_t lim = end - r->cap;
		uint64_t o = atomic_load_explicit(&c->oldest, memory_order_relaxed);
		while (o < lim) {
			if (o >= head || head - o > r->cap || (o & 7)) {
				o = head;
				break;
			}
			uint64_t oi = o & r->mask, ote = r->cap - oi;
			struct rec_hdr oh = split_word(get_word(r, o));
			uint64_t step = oh.type == BT_RING_TYPE_PAD ? ote : align8(BCAST_HDR + (uint64_t)oh.len);
			if (step > ote || step == 0) {
				o = head;
				break;
			}
			o += step;
		}
		atomic_store_explicit(&c->oldest, o, memory_order_release);
	}
	/* Raise claim before touching a byte (a dead predecessor may have raised it further). */
	if (atomic_load_explicit(&c->claim, memory_order_relaxed) < end)
		atomic_store_explicit(&c->claim, end, memory_order_relaxed);
	/* Orders the claim store before the record stores below (seqlock writer side). */
	atomic_thread_fence(memory_order_release);

	if (rec != head)
		put_word(r, head, hdr_word((uint32_t)(to_end - SPSC_HDR), BT_RING_TYPE_PAD));
	put_word(r, rec, hdr_word((uint32_t)n, type));
	put_word(r, rec + 8, seq);
	const uint8_t *src = p;
	uint64_t w = rec + BCAST_HDR;
	size_t i = 0;
	for (; i + 8 <= n; i += 8, w += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		put_word(r, w, v);
	}
	if (i < n) {
		uint64_t v = 0;
		memcpy(&v, src + i, n - i);
		put_word(r, w, v);
	}
	if (head == 0 && atomic_load_explicit(&c->first_seq, memory_order_relaxed) == 0)
		atomic_store_explicit(&c->first_seq, seq, memory_order_relaxed);
	atomic_store_explicit(&c->last_seq, seq, memory_order_relaxed);
	if (bt_bcast_fault_exit_seq && seq == bt_bcast_fault_exit_seq)
		_exit(9); /* fault injection for tests: the writer dies between last_seq and head */
	/* Publishes the record and last_seq. */
	atomic_store_explicit(&c->head, end, memory_order_release);
	if (ring)
		bt_bell_ring(r->bell);
	return 0;
}

int bt_bcast_publish(struct bt_ring *r, uint64_t seq, uint32_t type, const void *p, size_t n)
{
	return bcast_put(r, seq, type, p, n, 1);
}

int bt_bcast_publish_quiet(struct bt_ring *r, uint64_t seq, uint32_t type, const void *p, size_t n)
{
	return bcast_put(r, seq, type, p, n, 0);
}

uint64_t bt_bcast_fault_exit_seq;

int bt_bcast_recover(struct bt_ring *r, uint64_t *last_seq)
{
	if (r->kind != BT_RING_BCAST)
		return -EINVAL;
	struct shm_ring_ctl *c = r->ctl;
	uint64_t head = atomic_load_explicit(&c->head, memory_order_acquire);
	uint64_t p = atomic_load_explicit(&c->oldest, memory_order_acquire);
	uint64_t word = atomic_load_explicit(&c->last_seq, memory_order_relaxed), last = 0;
	int found = 0;
	if (p > head || head - p > r->cap || (p & 7))
		return -EPROTO;
	/* The writer is dead (we are its successor): nothing moves while we walk. */
	while (p < head) {
		uint64_t idx = p & r->mask, to_end = r->cap - idx;
		struct rec_hdr h = split_word(get_word(r, p));
		if (h.type == BT_RING_TYPE_PAD) {
			if (h.len != to_end - SPSC_HDR)
				return -EPROTO;
			p += to_end;
			continue;
		}
		uint64_t total = align8(BCAST_HDR + (uint64_t)h.len);
		if (h.len > r->max_rec || total > to_end || total > head - p)
			return -EPROTO;
		last = get_word(r, p + 8);
		found = 1;
		p += total;
	}
	if (!found) {
		/* No whole record below head: the first publish on this ring died, or a huge one
		   moved `oldest` past every record.  Resume at the seq being written (readers skip
		   a seq they have already seen); a ring never written has nothing to resume. */
		uint64_t first = atomic_load_explicit(&c->first_seq, memory_order_relaxed);
		if (head > 0 && word > 0)
			last = word - 1;
		else if (first > 0)
			last = first - 1;
		else {
			*last_seq = 0;
			return -ENOENT;
		}
	}
	atomic_store_explicit(&c->last_seq, last, memory_order_release);
	*last_seq = last;
	return 0;
}

uint64_t bt_bcast_last_seq(const struct bt_ring *r)
{
	return atomic_load_explicit(&r->ctl->last_seq, memory_order_acquire);
}

uint64_t bt_bcast_head(const struct bt_ring *r)
{
	return atomic_load_explicit(&r->ctl->head, memory_order_acquire);
}

int bt_bcast_peek(struct bt_ring *r, uint64_t *pos, uint64_t *seq, uint32_t *type, size_t *len, uint64_t *next)
{
	if (r->kind != BT_RING_BCAST)
		return -EINVAL;
	uint64_t p = *pos;
	uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
	for (;;) {
		if (p == head) {
			*pos = p;
			return -EAGAIN;
		}
		if (p > head || (p & 7))
			return -EINVAL;
		if (head - p > r->cap)
			return -EOVERFLOW;
		uint64_t idx = p & r->mask, to_end = r->cap - idx;
		struct rec_hdr h = split_word(get_word(r, p));
		if (h.type == BT_RING_TYPE_PAD) {
			if (lapped(r, p))
				return -EOVERFLOW;
			if (h.len != to_end - SPSC_HDR)
				return -EPROTO;
			p += to_end;
			*pos = p;
			continue;
		}
		uint64_t total = align8(BCAST_HDR + (uint64_t)h.len);
		uint64_t s = get_word(r, p + 8);
		/* The header words are only trusted once the seqlock check says nobody overwrote them. */
		if (lapped(r, p))
			return -EOVERFLOW;
		if (h.len > r->max_rec || total > to_end || total > head - p)
			return -EPROTO;
		*seq = s;
		*type = h.type;
		*len = h.len;
		*next = p + total;
		return 0;
	}
}

int bt_bcast_read(struct bt_ring *r, uint64_t *pos, uint64_t *seq, uint32_t *type, void *buf, size_t cap,
		  size_t *len)
{
	uint64_t s, next;
	uint32_t t;
	size_t n;
	int rc = bt_bcast_peek(r, pos, &s, &t, &n, &next);
	if (rc)
		return rc;
	uint64_t p = *pos; /* the record (bt_bcast_peek moved past any pad) */
	if (n > cap) {
		*len = n;
		return -ENOSPC;
	}
	uint8_t *dst = buf;
	uint64_t w = p + BCAST_HDR;
	size_t i = 0;
	for (; i + 8 <= n; i += 8, w += 8) {
		uint64_t v = get_word(r, w);
		memcpy(dst + i, &v, 8);
	}
	if (i < n) {
		uint64_t v = get_word(r, w);
		memcpy(dst + i, &v, n - i);
	}
	if (lapped(r, p)) /* the copy is only good if nobody overwrote it meanwhile */
		return -EOVERFLOW;
	*seq = s;
	*type = t;
	*len = n;
	*pos = next;
	return 0;
}

int bt_bcast_seek(struct bt_ring *r, uint64_t after_seq, uint64_t *pos)
{
	if (r->kind != BT_RING_BCAST)
		return -EINVAL;
	for (int attempt = 0; attempt < 16; attempt++) {
		/* Head before last_seq: last_seq was stored before head, so it covers every record < head. */
		uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
		uint64_t last = atomic_load_explicit(&r->ctl->last_seq, memory_order_relaxed);
		if (last <= after_seq) {
			*pos = head;
			return -EAGAIN;
		}
		uint64_t p = atomic_load_explicit(&r->ctl->oldest, memory_order_acquire);
		if (p > head || head - p > r->cap || (p & 7))
			continue; /* raced with the writer moving oldest: look again */
		int first = 1, restart = 0;
		while (p < head) {
			uint64_t idx = p & r->mask, to_end = r->cap - idx;
			struct rec_hdr h = split_word(get_word(r, p));
			uint64_t s = get_word(r, p + 8);
			if (lapped(r, p)) {
				restart = 1;
				break;
			}
			if (h.type == BT_RING_TYPE_PAD) {
				if (h.len != to_end - SPSC_HDR)
					return -EPROTO;
				p += to_end;
				continue;
			}
			uint64_t total = align8(BCAST_HDR + (uint64_t)h.len);
			if (h.len > r->max_rec || total > to_end || total > head - p)
				return -EPROTO;
			if (first && s > after_seq + 1)
				return -ENOENT;
			first = 0;
			if (s > after_seq) {
				*pos = p;
				return 0;
			}
			p += total;
		}
		if (!restart) {
			*pos = head;
			return -EAGAIN;
		}
	}
	return -ENOENT; /* the writer keeps lapping the scan: the reader catches up elsewhere */
}

/* ---- bells ---- */

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
	/* No FUTEX_PRIVATE_FLAG: the word lives in a MAP_SHARED file and waiters are other processes. */
	return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

uint32_t bt_bell_value(const struct bt_bell *b)
{
	return atomic_load_explicit(&b->value, memory_order_acquire);
}

uint32_t bt_bell_sleepers(const struct bt_bell *b)
{
	return atomic_load_explicit(&b->sleepers, memory_order_relaxed);
}

void bt_bell_ring(struct bt_bell *b)
{
	/* seq_cst RMW: releases what was published before (ring heads) and, with the seq_cst load
	   of sleepers, forms the Dekker pair with bt_bell_wait: either the waiter sees the new
	   value, or we see the waiter registered and wake it. */
	atomic_fetch_add_explicit(&b->value, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&b->sleepers, memory_order_seq_cst) > 0)
		futex(&b->value, FUTEX_WAKE, INT_MAX, NULL);
}

int bt_bell_wait(struct bt_bell *b, uint32_t seen, int timeout_ms)
{
	if (atomic_load_explicit(&b->value, memory_order_acquire) != seen)
		return 0;
	atomic_fetch_add_explicit(&b->sleepers, 1, memory_order_seq_cst);
	int rc = 0;
	if (atomic_load_explicit(&b->value, memory_order_seq_cst) == seen) {
		struct timespec ts, *tsp = NULL;
		if (timeout_ms >= 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
			tsp = &ts;
		}
		/* The kernel re-checks value == seen atomically with queueing us. */
		if (futex(&b->value, FUTEX_WAIT, seen, tsp) < 0) {
			if (errno == ETIMEDOUT)
				rc = -ETIMEDOUT;
			else if (errno == EINTR)
				rc = -EINTR;
			else if (errno != EAGAIN)
				rc = -errno;
		}
	}
	atomic_fetch_sub_explicit(&b->sleepers, 1, memory_order_relaxed);
	return rc;
}

struct bt_bell_watch {
	struct bt_bell *bell;
	int efd;
	pthread_t th;
	_Atomic int stop;
	/* 1 from the eventfd write until the loop's callback has run: meanwhile the thread does not
	   sleep on the bell, so producers find no sleeper and make no wake syscall.  One wakeup per
	   batch the loop drains, not one per record. */
	_Atomic uint32_t busy;
	/* 1 while paused: the thread sleeps on this word (process-private futex), not on the bell,
	   so a ring with no interested reader in this process costs it no wakeup at all. */
	_Atomic uint32_t paused;
	struct event *ev;
	void (*cb)(void *arg);
	void *arg;
};

/* Signal the loop, then wait (process-private futex on busy) until its callback has run. */
static void watch_signal(struct bt_bell_watch *w)
{
	uint64_t one = 1;
	atomic_store_explicit(&w->busy, 1, memory_order_release);
	if (write(w->efd, &one, sizeof(one)) < 0) {
		/* eventfd counter saturated: a wakeup is already pending */
	}
	struct timespec ts = { 1, 0 };
	while (atomic_load_explicit(&w->busy, memory_order_acquire) &&
	       !atomic_load_explicit(&w->stop, memory_order_acquire))
		syscall(SYS_futex, (uint32_t *)&w->busy, FUTEX_WAIT_PRIVATE, 1, &ts, NULL, 0);
}

static void *watch_thread(void *arg)
{
	struct bt_bell_watch *w = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals belong to the loop thread */
	uint32_t seen = bt_bell_value(w->bell);
	/* First callback at once: work published before the watch existed is not missed. */
	watch_signal(w);
	while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
		if (atomic_load_explicit(&w->paused, memory_order_acquire)) {
			struct timespec ts = { 1, 0 };
			syscall(SYS_futex, (uint32_t *)&w->paused, FUTEX_WAIT_PRIVATE, 1, &ts, NULL, 0);
			if (!atomic_load_explicit(&w->paused, memory_order_acquire) &&
			    !atomic_load_explicit(&w->stop, memory_order_acquire)) {
				/* Resumed: one callback at once, as at creation, so a record published
				   while paused (after the loop's last look at the ring) is not missed. */
				seen = bt_bell_value(w->bell);
				watch_signal(w);
			}
			continue;
		}
		/* Returns at once if the bell rang since `seen` (also while the loop was busy). */
		bt_bell_wait(w->bell, seen, 1000);
		uint32_t v = bt_bell_value(w->bell);
		if (v != seen && !atomic_load_explicit(&w->paused, memory_order_acquire)) {
			seen = v;
			watch_signal(w);
		}
	}
	return NULL;
}

static void watch_ready(evutil_socket_t fd, short what, void *arg)
{
	struct bt_bell_watch *w = arg;
	uint64_t n;
	if (read(fd, &n, sizeof(n)) == (ssize_t)sizeof(n) && n > 0)
		w->cb(w->arg); /* however many rings were counted: one callback */
	atomic_store_explicit(&w->busy, 0, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&w->busy, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

struct bt_bell_watch *bt_bell_watch_new(struct event_base *base, struct bt_bell *b, void (*cb)(void *arg),
					void *arg)
{
	if (!base || !b || !cb)
		return NULL;
	struct bt_bell_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->bell = b;
	w->cb = cb;
	w->arg = arg;
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0)
		goto fail;
	w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, watch_ready, w);
	if (!w->ev || event_add(w->ev, NULL) < 0)
		goto fail;
	if (pthread_create(&w->th, NULL, watch_thread, w) != 0)
		goto fail;
	return w;
fail:
	if (w->ev)
		event_free(w->ev);
	if (w->efd >= 0)
		close(w->efd);
	free(w);
	return NULL;
}

void bt_bell_watch_pause(struct bt_bell_watch *w, int paused)
{
	if (!w)
		return;
	uint32_t v = paused ? 1u : 0u;
	if (atomic_exchange_explicit(&w->paused, v, memory_order_acq_rel) == v)
		return;
	if (!paused)
		syscall(SYS_futex, (uint32_t *)&w->paused, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void bt_bell_watch_free(struct bt_bell_watch **wp)
{
	if (!wp || !*wp)
		return;
	struct bt_bell_watch *w = *wp;
	atomic_store_explicit(&w->stop, 1, memory_order_release);
	atomic_store_explicit(&w->paused, 0, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&w->paused, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	atomic_store_explicit(&w->busy, 0, memory_order_release);
	syscall(SYS_futex, (uint32_t *)&w->busy, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	/* Bumping the value (not just waking) closes the race with a thread about to FUTEX_WAIT;
	   other waiters on this bell see one spurious wakeup, which the bell contract allows. */
	bt_bell_ring(w->bell);
	pthread_join(w->th, NULL);
	event_free(w->ev);
	close(w->efd);
	free(w);
	*wp = NULL;
}
