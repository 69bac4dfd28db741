/*
 * NAME
 *	bt_pipe - names and small helpers of the pipeline contract (see bt_pipe.h)
 */
#include "bt_pipe.h"

#include <time.h>

const char *bt_role_name(enum bt_role r)
{
	static const char *n[] = { "supervisor", "ingest", "verify", "store", "fanout" };
	return (unsigned)r < 5 ? n[r] : "?";
}

/* The tables' names in lower case ("BAD_SIG" -> "bad_sig"), made once on first use.  Single-threaded
   callers only (each process asks from its one loop thread), or benign: every writer writes the same bytes. */
#define LOWER_MAX 32
static const char *lower(char (*out)[LOWER_MAX], unsigned i, const char *up)
{
	if (!out[i][0]) {
		unsigned k = 0;
		for (; up[k] && k < LOWER_MAX - 1; k++)
			out[i][k] = (char)(up[k] >= 'A' && up[k] <= 'Z' ? up[k] + 32 : up[k]);
		out[i][k] = 0;
	}
	return out[i];
}

const char *bt_drop_name(enum bt_drop d)
{
	static const char *n[] = {
#define X(name, doc) #name,
		BT_DROPS(X)
#undef X
	};
	static char low[BT_DROP__COUNT][LOWER_MAX];
	return (unsigned)d < BT_DROP__COUNT ? lower(low, (unsigned)d, n[d]) : "?";
}

const char *bt_stat_name(enum bt_stat s)
{
	static const char *n[] = {
#define X(name, doc) #name,
		BT_STATS(X)
#undef X
	};
	static char low[BT_STAT__COUNT][LOWER_MAX];
	return (unsigned)s < BT_STAT__COUNT ? lower(low, (unsigned)s, n[s]) : "?";
}

static uint64_t clock_ms(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t bt_now_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

uint64_t bt_wall_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

uint64_t bt_hash_did(const char *did, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)did[i];
		h *= 1099511628211ull;
	}
	return h;
}
