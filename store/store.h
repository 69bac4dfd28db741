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

/* One upstream host and its resume chain (see store_chain.c). */
struct sto_host {
	struct bt_host_rec rec;     /* as persisted; rec.cursor is the committed resume cursor */
	struct bt_u64map pending;   /* prev useq -> useq: verdicts above the cursor */
	struct bt_u64map done;      /* useq -> 1: the same frames, by their own seq */
	bool dirty;                 /* rec must be written in the current batch */
};

struct sto_hosts {
	struct sto_host **v;
	uint32_t n, cap;            /* v[id] (ids are dense, from 1) */
	uint32_t last_id;
};

int  sto_hosts_load(struct sto_hosts *hs, struct bt_db *db);
struct sto_host *sto_host_get(struct sto_hosts *hs, uint32_t id);
struct sto_host *sto_host_find(struct sto_hosts *hs, const char *name, size_t n);
struct sto_host *sto_host_add(struct sto_hosts *hs, const char *name, size_t n, struct bt_db_batch *b);
/* The chain: is this frame already decided? */
bool sto_chain_seen(struct sto_host *h, uint64_t useq, bool reset);
/* Record a decided frame; writes the changes (host record, pending keys) into the batch. */
void sto_chain_done(struct sto_host *h, uint64_t useq, uint64_t prev, bool reset, struct bt_db_batch *b);
void sto_host_flush(struct sto_host *h, struct bt_db_batch *b);
/* store_ident.c: a struct bt_rec_identity from a verdict ring -> put "i/" did in the batch;
   an accepted #identity -> delete it in the batch (stream order). */
void sto_ident_take(const void *p, size_t len, struct bt_db_batch *b);
void sto_ident_purge(const char *did, size_t n, struct bt_db_batch *b);
#endif
