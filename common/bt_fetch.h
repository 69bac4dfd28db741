/*
 * NAME
 *	bt_fetch.h - asynchronous HTTP GET: libcurl multi_socket driven by a libevent loop
 * DESCRIPTION
 *	verify resolves DIDs with it, ingest probes hosts (describeServer,
 *	getRepoStatus).  One struct bt_fetch per event loop; no threads, all
 *	callbacks run on the loop.  Requests beyond max_conns connections wait
 *	inside libcurl.  Redirects are not followed (a 3xx is returned as its
 *	status) so that every hop can be checked by the caller.
 *	With public_only set, every connection (after DNS) must go to a public
 *	address on port 80 or 443, otherwise the request fails with -EPERM:
 *	the SSRF rule of the relay.
 * DIAGNOSTICS
 *	Callback status: the HTTP status, or a negative errno value:
 *	-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH (DNS), -EFBIG (body over
 *	max_body), -EPERM (address refused by public_only), -EINVAL (bad URL),
 *	-ECANCELED (bt_fetch_free), -EIO (anything else).
 */
#ifndef BT_FETCH_H
#define BT_FETCH_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;

struct bt_fetch_opts {
	int max_conns;          /* total connections (0: 16) */
	int timeout_ms;         /* whole request, queueing in libcurl included (0: 10000) */
	size_t max_body;        /* bytes (0: 1 MiB) */
	const char *user_agent; /* NULL: "baton" */
	bool public_only;       /* refuse non-public addresses and ports other than 80/443 */
};
struct bt_fetch;

/* status: HTTP status or <0 (see DIAGNOSTICS).  body (never NULL, NUL-terminated, "" on errors) and
   server (the response's Server header value or "") are borrowed for the call only. */
typedef void bt_fetch_fn(void *arg, int status, const char *body, size_t len, const char *server);

/* Creates a fetcher on base (borrowed, must outlive it); copies o (NULL: defaults); returns owned or NULL. */
struct bt_fetch *bt_fetch_new(struct event_base *base, const struct bt_fetch_opts *o);
/* Starts GET url (copied).  On 0, cb is called exactly once, later, from the loop, never from inside
   bt_fetch_get.  On <0 (-ENOMEM, -EINVAL for an over-long URL, -ESHUTDOWN while freeing) cb is never called.
   cb may start new requests; it must not call bt_fetch_free. */
int bt_fetch_get(struct bt_fetch *f, const char *url, bt_fetch_fn *cb, void *arg);
/* Requests started whose callback has not run yet; borrows f. */
size_t bt_fetch_inflight(const struct bt_fetch *f);
/* Cancels pending requests (their callbacks run now with -ECANCELED), frees *f, sets it NULL; accepts NULL. */
void bt_fetch_free(struct bt_fetch **f);

/* True when sa is a globally routable unicast address (not loopback, private, link-local, CGNAT,
   multicast, documentation, ...); IPv4-mapped IPv6 is judged by its IPv4 address.  Borrows sa. */
bool bt_addr_public(const struct sockaddr *sa);

#endif
