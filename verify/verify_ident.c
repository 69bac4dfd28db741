/*
 * NAME
 *	verify_ident - identities across restarts and key rotations
 * DESCRIPTION
 *	Two things keep a commit signed before a key rotation from being dropped when it is
 *	checked after it (docs/identity.md):
 *
 *	- The persisted cache.  Every identity verify resolves goes to the store as a
 *	  struct bt_rec_identity, ahead of the verdicts that used it; the store keeps it under
 *	  "i/" did and deletes it with the batch that commits an accepted #identity.  When a DID
 *	  enters this process's cache, vfy_ident_load takes that record (younger than
 *	  RELAY_IDENTITY_TTL) instead of resolving, so a backlog from before an #identity is checked
 *	  with the key that was current before it; the #identity itself expires it in stream order.
 *
 *	- The prior-key rule.  When a did:plc commit fails with the freshly resolved key,
 *	  vfy_prior_key reads the PLC directory's audit log (<plc>/<did>/log/audit, through a small
 *	  direct-mapped cache, so a backlog costs one fetch) and accepts the commit if it verifies
 *	  with a key that was the account's #atproto key, on this host, after the account's last
 *	  accepted commit and until a rotation at most RELAY_PRIOR_KEY_GRACE ago
 *	  (bt_plc_prior_ok).  The frame waits meanwhile, like a frame waiting for its identity;
 *	  the DID is marked `checking` so nothing else starts for it and it is not evicted.
 *	Single-threaded (the verify event loop).
 * DIAGNOSTICS
 *	counters.identity_loaded, counters.sig_prior_key; an audit log that cannot be fetched is
 *	retried with backoff AUDIT_TRIES times, then the commit is dropped as bad_sig.
 */
#include "bt_db.h"
#include "bt_fetch.h"
#include "bt_log.h"
#include "bt_plcaudit.h"
#include "bt_proc.h"
#include "bt_syntax.h"
#include "verify.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#define AUDIT_SLOTS 256        /* audit logs cached, direct-mapped by DID hash */
#define AUDIT_TTL_MS 30000     /* how long a fetched log answers for a DID */
#define AUDIT_STALE_MS 2000    /* a log whose current key is not the document's: refetch after */
#define AUDIT_TRIES 5          /* transport errors / 5xx before giving up (1+2+4+8 s of backoff) */

struct audit_slot {
	char did[BT_DID_MAX];
	uint16_t did_len;
	bool have;                 /* hist holds the answer fetched at fetched_ms */
	unsigned fails;
	uint64_t fetched_ms;       /* monotonic */
	struct bt_plc_hist hist;
};

static struct audit_slot slots[AUDIT_SLOTS];
static struct bt_fetch *afetch;
static struct event_base *abase;

void vfy_ident_init(struct event_base *base)
{
	struct bt_fetch_opts fo = { .max_conns = 16, .timeout_ms = 10000, .max_body = 1024 * 1024,
				    .user_agent = bt_cfg.user_agent };
	abase = base;
	afetch = bt_fetch_new(base, &fo);
	if (!afetch)
		bt_die_config("cannot set up the audit-log fetcher");
}

size_t vfy_ident_inflight(void)
{
	return bt_fetch_inflight(afetch);
}

void vfy_ident_free(void)
{
	bt_fetch_free(&afetch);
	for (unsigned i = 0; i < AUDIT_SLOTS; i++)
		bt_plc_hist_clear(&slots[i].hist);
}

/* ---- the persisted cache ---- */

void vfy_ident_persist(const struct vfy_did *d)
{
	struct bt_rec_identity r;
	memset(&r, 0, sizeof r);
	size_t hl = strlen(d->id.pds_host);
	if (hl >= BT_HOST_MAX || d->did_len >= BT_DID_MAX)
		return;
	r.fetched_ms = bt_wall_ms();
	r.did_len = d->did_len;
	memcpy(r.did, d->did, d->did_len);
	if (d->id.key) {
		int kn = bt_pubkey_multikey(d->id.key, r.key, sizeof r.key);
		if (kn <= 0 || kn >= BT_KEY_STR_MAX)
			return;
		r.key_len = (uint8_t)kn;
	}
	r.host_len = (uint16_t)hl;
	memcpy(r.pds_host, d->id.pds_host, hl);
	/* Best effort: with the ring full, the identity is simply not persisted (a later
	   incarnation resolves instead); it must never overtake or delay a verdict. */
	vfy_out_put(BT_REC_IDENTITY, &r, sizeof r);
}

void vfy_ident_load(struct vfy_did *d, struct bt_db *db)
{
	if (d->ist != VI_NONE || !db)
		return;
	char k[BT_DID_MAX + 2];
	struct bt_ident_rec v;
	size_t kn = bt_key_ident(k, sizeof k, d->did, d->did_len);
	if (bt_db_get(db, k, kn, &v, sizeof v) != (int)sizeof v || v.version != 1 || v.key_len >= BT_KEY_STR_MAX ||
	    v.host_len >= BT_HOST_MAX || v.host_len >= sizeof d->id.pds_host)
		return;
	uint64_t wall = bt_wall_ms(), ttl = (uint64_t)bt_cfg.identity_ttl * 1000u;
	uint64_t age = wall > v.fetched_ms ? wall - v.fetched_ms : 0;
	if (age >= ttl)
		return;
	struct bt_pubkey *key = NULL;
	if (v.key_len && bt_pubkey_parse_multikey(v.key, v.key_len, &key) < 0)
		return;
	bt_identity_clear(&d->id);
	memcpy(d->id.did, d->did, d->did_len);
	d->id.key = key;
	d->id.key_why = key ? NULL : "no #atproto key";
	memcpy(d->id.pds_host, v.pds_host, v.host_len);
	d->id.pds_host[v.host_len] = 0;
	uint64_t now = bt_now_ms();
	d->ist = VI_OK;
	d->fails = 0;
	d->id_fetched_ms = now > age ? now - age : 0;
	d->id_expires_ms = now + (ttl - age);
	bt_stat_add(bt_proc.stats, BT_STAT_IDENTITY_LOADED, 1);
}

/* ---- the prior-key rule ---- */

void vfy_ident_seen(struct vfy_did *d, const struct bt_bytes *time)
{
	char t[64];
	if (!time || time->n == 0 || time->n >= sizeof t)
		return;
	memcpy(t, time->p, time->n);
	t[time->n] = 0;
	int64_t ms = bt_iso8601_ms(t);
	if (ms > d->ident_ms)
		d->ident_ms = ms;
}

static struct audit_slot *slot_for(const char *did, size_t n)
{
	return &slots[vfy_did_hash(did, n) & (AUDIT_SLOTS - 1)];
}

static bool slot_is(const struct audit_slot *s, const struct vfy_did *d)
{
	return s->did_len == d->did_len && !memcmp(s->did, d->did, d->did_len);
}

static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
	struct vfy_did *d = arg;
	d->checking = false;
	vfy_resume(d);
}

static void on_audit(void *arg, int status, const char *body, size_t len, const char *server)
{
	struct vfy_did *d = arg;
	if (status == -ECANCELED)
		return;
	struct audit_slot *s = slot_for(d->did, d->did_len);
	if (!slot_is(s, d)) {
		bt_plc_hist_clear(&s->hist);
		memset(s, 0, sizeof *s);
		memcpy(s->did, d->did, d->did_len);
		s->did_len = d->did_len;
	}
	if (status == 200 || status == 404 || status == 410) {
		const char *why = NULL;
		char did[BT_DID_MAX];
		memcpy(did, d->did, d->did_len);
		did[d->did_len] = 0;
		bt_plc_hist_clear(&s->hist);
		if (status == 200 && bt_plc_audit_parse(body, len, did, &s->hist, &why) < 0)
			BT_LOG_EVERY(BT_LOG_WARN, "audit log of %s unusable: %s", did, why ? why : "?");
		s->have = true;
		s->fails = 0;
		s->fetched_ms = bt_now_ms();
	} else {
		/* Directory down: the frame waits, and asks again after a backoff. */
		s->have = false;
		s->fails++;
		s->fetched_ms = bt_now_ms();
		BT_LOG_EVERY(BT_LOG_WARN, "audit log of %.*s: %d (try %u)", (int)d->did_len, d->did, status, s->fails);
		if (s->fails < AUDIT_TRIES) {
			struct timeval tv = { 1 << (s->fails - 1), 0 };
			if (event_base_once(abase, -1, EV_TIMEOUT, on_backoff, d, &tv) == 0)
				return; /* still checking */
		}
	}
	d->checking = false;
	vfy_resume(d);
}

enum vfy_prior vfy_prior_key(struct vfy_did *d, const struct bt_rec_frame *fr, const char *rev, size_t revn,
			     const uint8_t *msg, size_t n, const uint8_t *sig, size_t siglen)
{
	if (d->did_len < 8 || memcmp(d->did, "did:plc:", 8) || d->checking)
		return VFY_PRIOR_NO;
	struct audit_slot *s = slot_for(d->did, d->did_len);
	uint64_t now = bt_now_ms();
	bool mine = slot_is(s, d);
	if (mine && !s->have && s->fails >= AUDIT_TRIES && now - s->fetched_ms < AUDIT_TTL_MS)
		return VFY_PRIOR_NO; /* the directory would not answer: give up for a while */
	bool usable = mine && s->have && now - s->fetched_ms < AUDIT_TTL_MS;
	/* A log whose current key is not the document's predates a rotation: fetch it again
	   (at most every AUDIT_STALE_MS, so an inconsistent directory cannot make us loop). */
	if (usable && !bt_pubkey_eq(bt_plc_hist_current(&s->hist), d->id.key) && now - s->fetched_ms >= AUDIT_STALE_MS)
		usable = false;
	if (!usable) {
		char url[1024];
		char did[BT_DID_MAX];
		memcpy(did, d->did, d->did_len);
		did[d->did_len] = 0;
		int un = bt_did_resolve_url(did, bt_cfg.plc_host, url, sizeof url);
		if (un < 0 || (size_t)un + 11 > sizeof url)
			return VFY_PRIOR_NO;
		memcpy(url + un, "/log/audit", 11);
		if (bt_fetch_get(afetch, url, on_audit, d) < 0)
			return VFY_PRIOR_NO;
		d->checking = true;
		return VFY_PRIOR_WAIT;
	}
	struct bt_plc_ask a = {
		.rev_us = bt_tid_micros(rev, revn),
		.stored_us = d->rev[0] ? bt_tid_micros(d->rev, strlen(d->rev)) : 0,
		.now_ms = (int64_t)bt_wall_ms(),
		.grace_ms = bt_cfg.prior_key_grace * 1000,
		.ident_ms = d->ident_ms,
	};
	char host[BT_HOST_MAX + 1];
	memcpy(host, fr->host, fr->host_len);
	host[fr->host_len] = 0;
	a.host = host;
	if (a.stored_us < 0)
		return VFY_PRIOR_NO;
	int i = bt_plc_prior_find(&s->hist, &a, msg, n, sig, siglen);
	if (i < 0)
		return VFY_PRIOR_NO;
	bt_stat_add(bt_proc.stats, BT_STAT_SIG_PRIOR_KEY, 1);
	BT_LOG_EVERY(BT_LOG_INFO, "%.*s rev %.*s: signed with the key the account had until a rotation %lld ms ago",
		     (int)d->did_len, d->did, (int)revn, rev, (long long)(a.now_ms - s->hist.k[i].to_ms));
	return VFY_PRIOR_OK;
}
