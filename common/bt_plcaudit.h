/*
 * NAME
 *	bt_plcaudit.h - a did:plc account's signing-key history, from the PLC audit log
 * DESCRIPTION
 *	verify consults the PLC directory's audit log (GET <plc>/<did>/log/audit) when a commit's
 *	signature fails with the account's current key: the commit may have been signed before a
 *	key rotation (docs/identity.md).  bt_plc_audit_parse turns the log into the intervals during
 *	which each #atproto key was current; bt_plc_prior_ok is the rule that decides whether a
 *	closed interval may vouch for a commit; bt_plc_prior_find applies both and checks the
 *	signature.  Pure functions, no global state, thread-safe.
 *
 *	The log is a JSON array, oldest first, of {did, operation, cid, nullified, createdAt}.
 *	operation.type "plc_operation" names the key in verificationMethods.atproto (a did:key) and
 *	the PDS in services.atproto_pds.endpoint; the legacy "create" has signingKey and service;
 *	"plc_tombstone" ends the last interval.  Nullified operations are skipped: they were undone
 *	by a recovery, and a key they introduced never counts.  Each kept operation ends the
 *	interval of the one before at its createdAt; consecutive operations with the same key and
 *	PDS (a handle change) extend one interval.
 * DIAGNOSTICS
 *	bt_plc_audit_parse returns -EINVAL with *why set to a static reason; an operation whose key
 *	cannot be parsed gives an interval without a key (it still ends the previous one).
 */
#ifndef BT_PLCAUDIT_H
#define BT_PLCAUDIT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bt_crypto.h"

#define BT_PLC_HIST_MAX 32       /* intervals kept: the most recent ones */
#define BT_PLC_OPEN INT64_MAX    /* to_ms of the current (last) interval */
#define BT_PLC_SKEW_MS 5000      /* PDS clock vs PLC clock: how far a rev may pass the rotation */

struct bt_plc_key {
	struct bt_pubkey *key;   /* owned; NULL if the operation had no usable #atproto key */
	int64_t from_ms, to_ms;  /* wall clock ms: createdAt of this operation, of the next (or OPEN) */
	char pds_host[300];      /* authority of the PDS endpoint named with it ("" if none) */
};

struct bt_plc_hist {
	unsigned n;              /* k[0..n) oldest first */
	bool tombstoned;
	struct bt_plc_key k[BT_PLC_HIST_MAX];
};

/* Parses json[0..n) (need not be NUL-terminated); every entry's did must equal did.  Fills *out
   (owned keys: free with bt_plc_hist_clear).  Returns 0, or -EINVAL with *why set (out cleared). */
int bt_plc_audit_parse(const char *json, size_t n, const char *did, struct bt_plc_hist *out, const char **why);
/* Frees the keys and zeroes the history; accepts NULL. */
void bt_plc_hist_clear(struct bt_plc_hist *h);
/* "2024-12-15T03:13:51.684Z" (fraction optional, 1- or 2-digit fields, Z or +hh:mm) -> ms since the
   epoch, or -1; borrows s. */
int64_t bt_iso8601_ms(const char *s);

/* What the prior-key rule needs to know about one commit. */
struct bt_plc_ask {
	int64_t rev_us;          /* the commit's rev, as TID microseconds */
	int64_t stored_us;       /* the account's last accepted rev, as TID microseconds (0: none) */
	int64_t now_ms;          /* wall clock */
	int64_t grace_ms;        /* RELAY_PRIOR_KEY_GRACE: how long after a rotation the old key counts */
	const char *host;        /* the host the frame came from ("host" or "host:port") */
	int64_t ident_ms;        /* time of the latest #identity of the account before this commit in
	                            the stream, as the PDS stamped it (0: none seen) */
};

/* True when the closed interval k may vouch for the commit: k ended (a rotation) after the
   account's last accepted commit (stored_us < to) and no longer ago than grace_ms; no #identity
   stamped at or after the rotation came before the commit in the stream (ident_ms < to); the
   commit's rev lies inside [from - skew, to + skew); k named the frame's host as the PDS.  An
   open interval (the current key) never counts.  Borrows both. */
bool bt_plc_prior_ok(const struct bt_plc_key *k, const struct bt_plc_ask *a);
/* Index of the newest interval with bt_plc_prior_ok whose key verifies sig over msg, or -1.
   Borrows all. */
int bt_plc_prior_find(const struct bt_plc_hist *h, const struct bt_plc_ask *a, const uint8_t *msg, size_t n,
		      const uint8_t *sig, size_t siglen);
/* The key of the last interval (the current key per the log), NULL if none or tombstoned. */
const struct bt_pubkey *bt_plc_hist_current(const struct bt_plc_hist *h);
#endif
