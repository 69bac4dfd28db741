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

const char *bt_hist_name(enum bt_hist_id h)
{
	static const char *n[] = {
#define X(name, doc) #name,
		BT_HISTS(X)
#undef X
	};
	static char low[BT_HIST__COUNT][LOWER_MAX];
	return (unsigned)h < BT_HIST__COUNT ? lower(low, (unsigned)h, n[h]) : "?";
}

static const uint64_t ms_bounds[BT_HIST_BUCKETS - 1] = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
							  10000, 30000, 60000 };
static const uint64_t byte_bounds[BT_HIST_BUCKETS - 1] = { 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
							    131072, 262144, 524288, 1048576, 2097152, 5242880 };

const uint64_t *bt_hist_bounds(enum bt_hist_id h)
{
	return h == BT_HIST_EVENT_BYTES ? byte_bounds : ms_bounds;
}

void bt_hist_observe(struct bt_stats_page *p, enum bt_hist_id h, uint64_t v)
{
	if (!p || (unsigned)h >= BT_HIST__COUNT)
		return;
	const uint64_t *b = bt_hist_bounds(h);
	unsigned i = 0;
	while (i < BT_HIST_BUCKETS - 1 && v > b[i])
		i++;
	struct bt_hist *x = &p->hist[h];
	atomic_fetch_add_explicit(&x->b[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&x->sum, v, memory_order_relaxed);
	atomic_fetch_add_explicit(&x->count, 1, memory_order_relaxed);
}

void bt_commit_log_push(struct bt_stats_page *p, uint64_t last_seq, uint64_t ms)
{
	uint64_t n = atomic_load_explicit(&p->commit_n, memory_order_relaxed);
	struct bt_commit_ent *e = &p->commits[n % BT_COMMIT_LOG];
	atomic_store_explicit(&e->seq, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&e->ms, ms, memory_order_relaxed);
	atomic_store_explicit(&e->seq, last_seq, memory_order_release);
	atomic_store_explicit(&p->commit_n, n + 1, memory_order_release);
}

bool bt_commit_log_at(const struct bt_stats_page *sp, uint64_t n, uint64_t i, uint64_t *seq, uint64_t *ms)
{
	if (i >= BT_COMMIT_LOG || i >= n)
		return false;
	const struct bt_commit_ent *e = &sp->commits[(n - 1 - i) % BT_COMMIT_LOG];
	uint64_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
	*ms = atomic_load_explicit(&e->ms, memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	uint64_t s2 = atomic_load_explicit(&e->seq, memory_order_relaxed);
	*seq = s1;
	return s1 && s1 == s2; /* else being overwritten: too old to trust */
}

uint64_t bt_commit_log_ms(const struct bt_stats_page *sp, uint64_t seq)
{
	if (!sp || !seq)
		return 0;
	uint64_t n = atomic_load_explicit(&sp->commit_n, memory_order_acquire);
	uint64_t found = 0, s1, ms;
	/* Newest first: the oldest batch whose last seq is >= seq wrote it. */
	for (uint64_t i = 0; bt_commit_log_at(sp, n, i, &s1, &ms) && s1 >= seq; i++)
		found = ms;
	return found;
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
