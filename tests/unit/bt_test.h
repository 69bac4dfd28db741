/*
 * NAME
 *	bt_test.h - the smallest unit-test harness
 * DESCRIPTION
 *	CHECK(cond) counts a pass or prints the failing line and counts a failure.
 *	Each test binary ends with BT_TEST_END(), which prints "N passed, N failed"
 *	and exits non-zero when anything failed.  bt_vectors() gives the path of
 *	../shared/vectors (override with BT_VECTORS).
 */
#ifndef BT_TEST_H
#define BT_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bt_t_pass, bt_t_fail;

#define CHECK(cond)                                                              \
	do {                                                                     \
		if (cond) {                                                      \
			bt_t_pass++;                                             \
		} else {                                                         \
			bt_t_fail++;                                             \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                \
	} while (0)

#define CHECKF(cond, ...)                                                        \
	do {                                                                     \
		if (cond) {                                                      \
			bt_t_pass++;                                             \
		} else {                                                         \
			bt_t_fail++;                                             \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                            \
			fputc('\n', stderr);                                     \
		}                                                                \
	} while (0)

#define BT_TEST_END()                                                            \
	do {                                                                     \
		printf("%d passed, %d failed\n", bt_t_pass, bt_t_fail);          \
		return bt_t_fail ? 1 : 0;                                        \
	} while (0)

static inline const char *bt_vectors(void)
{
	const char *v = getenv("BT_VECTORS");
	return v ? v : "../shared/vectors";
}

/* Read a whole file into a malloc'd NUL-terminated buffer; *len gets its size. */
static inline char *bt_test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b) {
		b[n] = 0;
		if (len)
			*len = (size_t)n;
	}
	return b;
}
#endif
