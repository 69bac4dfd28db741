/*
 * NAME
 *	bt_buf - growable byte buffer
 * DESCRIPTION
 *	Capacity doubles (minimum 256 bytes) so appends are amortised O(1).  Used
 *	by every process; a buffer belongs to one thread.
 * DIAGNOSTICS
 *	-ENOMEM when realloc fails or the size would overflow.
 */
#include "bt_buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bt_buf_reserve(struct bt_buf *b, size_t extra)
{
	if (extra > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	size_t need = b->len + extra;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	uint8_t *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int bt_buf_append(struct bt_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	int rc = bt_buf_reserve(b, n);
	if (rc)
		return rc;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

int bt_buf_putc(struct bt_buf *b, uint8_t c)
{
	int rc = bt_buf_reserve(b, 1);
	if (rc)
		return rc;
	b->p[b->len++] = c;
	return 0;
}

void bt_buf_reset(struct bt_buf *b)
{
	b->len = 0;
}

void bt_buf_free(struct bt_buf *b)
{
	if (!b)
		return;
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

int bt_bytes_eq_str(struct bt_bytes a, const char *s)
{
	size_t n = strlen(s);
	return a.n == n && (n == 0 || memcmp(a.p, s, n) == 0);
}
