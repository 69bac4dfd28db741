/*
 * NAME
 *	fanout_frame - live events framed once, shared by every consumer's output queue
 * DESCRIPTION
 *	A live event is read out of the broadcast ring once per process, not once per consumer:
 *	the first consumer to reach it copies the record into a chunk, behind its WebSocket
 *	header (bt_ws_frame_header), and every consumer queues that same frame by reference
 *	(bt_ws_send_ref); the kernel's copy into each socket is the only per-consumer copy.
 *
 *	Chunks are CHUNK_SIZE bytes carved in order, frames back to back, so the frames of
 *	consecutive seqs are usually adjacent and a consumer queues a whole run of them as one
 *	reference (libevent allocates a chain of about 1 KiB per reference: one per frame would
 *	cost more than the copy it saves); a chunk is refcounted: one reference for
 *	the carving (while it is the current chunk), one per cache entry and one per queued
 *	frame (released by libevent once the bytes were written, or the connection freed).  An
 *	unreferenced chunk goes back to a small free list (FREE_MAX), so steady state allocates
 *	nothing per frame and maps nothing.  A frame too big for a chunk gets a chunk of its own.
 *
 *	The cache is direct-mapped by seq (CACHE_SLOTS): a consumer further behind than that, or
 *	a slot taken by another seq, frames the event again: correct, only slower.  A cached frame
 *	is the record the ring held under that seq, and a seq is published once (docs/ring.md).
 *
 *	Single-threaded: the loop thread only (libevent calls the release there too).
 * DIAGNOSTICS
 *	fan_frame_get returns bt_bcast_read's errors (-EOVERFLOW lapped, -EPROTO) or -ENOMEM.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bt_shm.h"
#include "bt_ws.h"
#include "fanout.h"

#define CHUNK_SIZE ((size_t)256 << 10)
#define FREE_MAX 64
#define CACHE_SLOTS 4096u /* power of two; pins at most this many recent frames */

struct fan_chunk {
	uint32_t refs;
	size_t cap, used;
	struct fan_chunk *next;  /* free list */
	uint8_t data[];
};

struct slot {
	uint64_t seq; /* 0 = empty */
	struct fan_frame f;
};

static struct fan_chunk *cur;   /* being carved; holds one reference */
static struct fan_chunk *free_list;
static unsigned n_free;
static struct slot cache[CACHE_SLOTS];

static void chunk_unref(struct fan_chunk *c)
{
	assert(c->refs > 0);
	if (--c->refs)
		return;
	if (c->cap == CHUNK_SIZE && n_free < FREE_MAX) {
		c->next = free_list;
		free_list = c;
		n_free++;
		return;
	}
	free(c);
}

void fan_frame_ref(const struct fan_frame *f)
{
	f->chunk->refs++;
}

void fan_frame_release(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	chunk_unref(arg);
}

/* Room for n bytes: the current chunk, a fresh one, or one of its own; NULL when out of memory. */
static struct fan_chunk *room(size_t n)
{
	if (cur && cur->cap - cur->used >= n)
		return cur;
	if (n > CHUNK_SIZE / 4) {
		struct fan_chunk *c = malloc(sizeof *c + n);
		if (!c)
			return NULL;
		c->refs = 0;
		c->cap = n;
		c->used = 0;
		return c;
	}
	struct fan_chunk *c = free_list;
	if (c) {
		free_list = c->next;
		n_free--;
	} else if (!(c = malloc(sizeof *c + CHUNK_SIZE))) {
		return NULL;
	}
	c->refs = 1; /* the carving's */
	c->cap = CHUNK_SIZE;
	c->used = 0;
	if (cur)
		chunk_unref(cur);
	cur = c;
	return c;
}

int fan_frame_get(struct bt_ring *ring, uint64_t pos, uint64_t seq, size_t len, const struct fan_frame **out)
{
	struct slot *sl = &cache[seq & (CACHE_SLOTS - 1)];
	if (sl->seq == seq) {
		*out = &sl->f;
		return 0;
	}
	uint8_t hdr[BT_WS_FRAME_HDR_MAX];
	size_t hl = bt_ws_frame_header(hdr, BT_WS_BINARY, len);
	struct fan_chunk *c = room(hl + len);
	if (!c)
		return -ENOMEM;
	uint8_t *p = c->data + c->used;
	uint64_t rpos = pos, rseq = 0;
	uint32_t type;
	size_t rlen = 0;
	int rc = bt_bcast_read(ring, &rpos, &rseq, &type, p + hl, len, &rlen);
	if (rc == 0 && (rseq != seq || rlen != len))
		rc = -EOVERFLOW; /* overwritten between the peek and the copy */
	if (rc < 0) {
		if (c != cur && c->refs == 0)
			free(c);
		return rc == -ENOSPC ? -EOVERFLOW : rc;
	}
	memcpy(p, hdr, hl);
	c->used += hl + len; /* unpadded: consecutive frames are adjacent, queued as one run */
	if (sl->seq)
		chunk_unref(sl->f.chunk);
	c->refs++;
	sl->seq = seq;
	sl->f = (struct fan_frame){ .chunk = c, .p = p, .n = hl + len, .hl = hl,
				    .commit_ms = bt_commit_log_ms(fan_store_page(), seq) };
	*out = &sl->f;
	return 0;
}

void fan_frame_fini(void)
{
	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		if (cache[i].seq)
			chunk_unref(cache[i].f.chunk);
		cache[i].seq = 0;
	}
	if (cur)
		chunk_unref(cur);
	cur = NULL;
	while (free_list) {
		struct fan_chunk *c = free_list;
		free_list = c->next;
		free(c);
	}
	n_free = 0;
}
