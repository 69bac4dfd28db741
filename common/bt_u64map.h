/*
 * NAME
 *	bt_u64map - open-addressing hash map from u64 to u64
 * DESCRIPTION
 *	Linear probing with backward-shift deletion (no tombstones), power-of-two table grown at
 *	70% load.  Key UINT64_MAX is reserved as the empty marker.  Single-threaded.
 */
#ifndef BT_U64MAP_H
#define BT_U64MAP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bt_u64map {
	uint64_t *keys, *vals;
	size_t cap, n;
};

int  bt_u64map_put(struct bt_u64map *m, uint64_t k, uint64_t v); /* insert or replace; -ENOMEM */
bool bt_u64map_get(const struct bt_u64map *m, uint64_t k, uint64_t *v);
bool bt_u64map_del(struct bt_u64map *m, uint64_t k);
void bt_u64map_clear(struct bt_u64map *m);                         /* keeps memory */
void bt_u64map_free(struct bt_u64map *m);
#endif
