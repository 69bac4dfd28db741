/*
 * NAME
 *	bt_u64map - open-addressing u64 -> u64 map (see bt_u64map.h)
 */
#include "bt_u64map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY UINT64_MAX

static size_t slot_of(const struct bt_u64map *m, uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return (size_t)k & (m->cap - 1);
}

static int grow(struct bt_u64map *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 16;
	uint64_t *nk = malloc(ncap * sizeof *nk), *nv = malloc(ncap * sizeof *nv);
	if (!nk || !nv) {
		free(nk);
		free(nv);
		return -ENOMEM;
	}
	memset(nk, 0xff, ncap * sizeof *nk);
	struct bt_u64map old = *m;
	m->keys = nk;
	m->vals = nv;
	m->cap = ncap;
	m->n = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.keys[i] != EMPTY)
			bt_u64map_put(m, old.keys[i], old.vals[i]);
	free(old.keys);
	free(old.vals);
	return 0;
}

int bt_u64map_put(struct bt_u64map *m, uint64_t k, uint64_t v)
{
	if (k == EMPTY)
		return -EINVAL;
	if ((m->n + 1) * 10 > m->cap * 7 && grow(m) < 0)
		return -ENOMEM;
	size_t i = slot_of(m, k);
	while (m->keys[i] != EMPTY && m->keys[i] != k)
		i = (i + 1) & (m->cap - 1);
	if (m->keys[i] == EMPTY)
		m->n++;
	m->keys[i] = k;
	m->vals[i] = v;
	return 0;
}

bool bt_u64map_get(const struct bt_u64map *m, uint64_t k, uint64_t *v)
{
	if (!m->cap || k == EMPTY)
		return false;
	for (size_t i = slot_of(m, k); m->keys[i] != EMPTY; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] == k) {
			if (v)
				*v = m->vals[i];
			return true;
		}
	return false;
}

bool bt_u64map_del(struct bt_u64map *m, uint64_t k)
{
	if (!m->cap || k == EMPTY)
		return false;
	size_t i = slot_of(m, k);
	while (m->keys[i] != k) {
		if (m->keys[i] == EMPTY)
			return false;
		i = (i + 1) & (m->cap - 1);
	}
	/* Backward-shift: pull later members of the probe run into the hole. */
	size_t j = i;
	for (;;) {
		j = (j + 1) & (m->cap - 1);
		if (m->keys[j] == EMPTY)
			break;
		size_t home = slot_of(m, m->keys[j]);
		/* Move j to i if its home is not cyclically within (i, j]. */
		bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!between) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			i = j;
		}
	}
	m->keys[i] = EMPTY;
	m->n--;
	return true;
}

void bt_u64map_clear(struct bt_u64map *m)
{
	if (m->cap)
		memset(m->keys, 0xff, m->cap * sizeof *m->keys);
	m->n = 0;
}

void bt_u64map_free(struct bt_u64map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof *m);
}
