/*
 * NAME
 *	bt_limits - per-host limits (indigo's semantics): account limits, event rates, trusted domains
 * DESCRIPTION
 *	A host has an account limit L (RELAY_DEFAULT_ACCOUNT_LIMIT for a new host, or
 *	RELAY_TRUSTED_ACCOUNT_LIMIT if its name matches RELAY_TRUSTED_DOMAINS) and three event
 *	rate limits derived from it as indigo's relay does:
 *	  per second  RELAY_HOST_EVENTS_PER_SECOND + L/1000   (trusted: 5,000)
 *	  per hour    RELAY_HOST_EVENTS_PER_HOUR   + L        (trusted: 50,000,000)
 *	  per day     RELAY_HOST_EVENTS_PER_DAY    + 10*L     (trusted: 500,000,000)
 *	An operator may set L, and (a baton extension) any of the three rates, per host
 *	(changeLimits, docs/ops.md "Limits").  The store persists them ("l/" key, bt_db.h);
 *	ingest enforces the rates with struct bt_limiter, a sliding-window counter per window
 *	(the previous window's count weighted by how much of it still overlaps, plus the
 *	current one's, as indigo's slidingwindow limiter): over a limit ingest pauses that
 *	host's socket until the window has room, so frames wait in the kernel, never dropped.
 *	Pure functions of their arguments and bt_cfg; no allocation.
 */
#ifndef BT_LIMITS_H
#define BT_LIMITS_H
#include <stdbool.h>
#include <stdint.h>

#define BT_TRUSTED_PER_SECOND 5000
#define BT_TRUSTED_PER_HOUR 50000000
#define BT_TRUSTED_PER_DAY 500000000

/* Event limits of one host: events per second, hour and day. */
struct bt_rates {
	int64_t max[3];
};

/* True if host ("name" or "name:port", lowercase) matches an entry of the comma-separated
   list: "x.y" exactly, "*.y" any name ending in ".y". */
bool bt_host_trusted_in(const char *host, const char *list);
bool bt_host_trusted(const char *host);               /* against RELAY_TRUSTED_DOMAINS */
int64_t bt_default_account_limit(const char *host);  /* trusted or default */
/* indigo's formula for account limit L; an override > 0 replaces the computed value. */
void bt_rates_for(int64_t account_limit, bool trusted, const int64_t override[3], struct bt_rates *out);

struct bt_window {
	uint64_t size_ms, start_ms; /* current window: [start, start + size), aligned to size */
	uint64_t cur, prev;         /* events in the current and the previous window */
	int64_t max;
};
struct bt_limiter {
	struct bt_window w[3];
};
void bt_limiter_init(struct bt_limiter *l, const struct bt_rates *r);
/* New maxima, counts kept (a raised limit lets more through at once). */
void bt_limiter_set(struct bt_limiter *l, const struct bt_rates *r);
/* 0 if one more event fits every window at now_ms, else the milliseconds (>= 1) after which it
   is worth asking again. */
uint64_t bt_limiter_wait(struct bt_limiter *l, uint64_t now_ms);
/* Counts one event at now_ms (after a wait of 0). */
void bt_limiter_take(struct bt_limiter *l, uint64_t now_ms);
#endif
