/*
 * NAME
 *	bt_buf.h - growable byte buffer and borrowed byte slice
 * DESCRIPTION
 *	A bt_buf is owned by one thread and reused across frames: bt_buf_reset()
 *	keeps the allocation so the data plane does not malloc per frame once the
 *	buffer has grown to its working size.  A bt_bytes is a borrowed view into
 *	somebody else's memory; it never owns.
 * DIAGNOSTICS
 *	Functions that allocate return 0 or -ENOMEM.
 */
#ifndef BT_BUF_H
#define BT_BUF_H
#include <stddef.h>
#include <stdint.h>

struct bt_buf {
	uint8_t *p;
	size_t len, cap;
};

struct bt_bytes {
	const uint8_t *p;
	size_t n;
};

/* Make room for extra more bytes after len; 0 or -ENOMEM (b keeps its contents). */
int bt_buf_reserve(struct bt_buf *b, size_t extra);
/* Append a copy of p[0..n); borrows p.  0 or -ENOMEM. */
int bt_buf_append(struct bt_buf *b, const void *p, size_t n);
/* Append one byte.  0 or -ENOMEM. */
int bt_buf_putc(struct bt_buf *b, uint8_t c);
/* len = 0; keeps the memory for reuse. */
void bt_buf_reset(struct bt_buf *b);
/* Free the memory and zero the struct; accepts a zeroed buffer. */
void bt_buf_free(struct bt_buf *b);
/* True when the slice equals the NUL-terminated string s. */
int bt_bytes_eq_str(struct bt_bytes a, const char *s);

#endif
