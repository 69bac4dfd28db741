/*
 * NAME
 *	store_limits - per-host account limits: counting, throttling, re-activation, changeLimits
 * DESCRIPTION
 *	indigo's semantics (cmd/relay/relay/account.go, host.go).  A DID is counted on the host of
 *	the first accepted event the store sees for it (BT_ACCT_COUNTED in its "a/" record, the
 *	host's count in its "l/" record, both written in the batch that commits or drops that
 *	event, so counts are exact across kill -9).  An account counted while its host already has
 *	account_limit active ones is throttled:
 *	  - the store sequences a relay-made #account {did, active: false, status: "throttled"};
 *	  - its #commit, #sync and #account frames are dropped with reason "throttled" (indigo:
 *	    "dropping message for inactive account"); an upstream #account still updates its
 *	    upstream state (BT_ACCT_ACTIVE, status), which the relay shows once it is re-activated;
 *	    #identity passes (indigo passes identities of any account);
 *	  - getRepoStatus/listRepos show it inactive with status "throttled"; it is listed under
 *	    "t/" host serial did.
 *	An account whose state the store already held before it counted accounts (a relay
 *	upgraded to this version) is counted but not throttled.
 *	Raising a host's limit (changeLimits) re-activates throttled accounts first-throttled
 *	first, up to the room the new limit gives, each with a relay-made #account carrying its
 *	upstream state (active: true unless the PDS said otherwise).  Lowering it throttles no
 *	account already active (indigo does not either).  An account that moves to another host
 *	keeps being counted on its first one.  The rate limits are ingest's (ingest_limits.c):
 *	changeLimits pushes them there.
 * DIAGNOSTICS
 *	changeLimits answers {error: HostNotFound, status: 404} or {error: InvalidRequest}.
 */
#include "bt_ctl.h"
#include "bt_fh.h"
#include "bt_limits.h"
#include "bt_log.h"
#include "bt_params.h"
#include "bt_proc.h"
#include "store.h"

#include <errno.h>
#include <string.h>

static struct bt_db *ldb;
static struct sto_hosts *lhosts;

struct lim {
	bool dirty;
	struct bt_host_limits r;
};
static struct lim **lims; /* by host id, loaded on first use */
static uint32_t n_lims;
static struct lim *dirty[10001]; /* hosts a batch touches: at most one per verdict (RELAY_COMMIT_BATCH <= 10000) */
static size_t n_dirty;
static uint64_t total_throttled;

static int count_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct bt_host_limits r;
	if (vn == sizeof r) {
		memcpy(&r, v, sizeof r);
		total_throttled += r.throttled;
	}
	return 0;
}

void sto_limits_init(struct bt_db *db, struct sto_hosts *hs)
{
	ldb = db;
	lhosts = hs;
	bt_db_scan(db, "l/", 2, "l/", 2, count_cb, NULL);
	bt_stat_set(bt_proc.stats, BT_STAT_THROTTLED_ACCOUNTS, total_throttled);
}

/* The limits of host id (loaded, or the defaults for its name); NULL for an unknown host. */
static struct lim *lim_get(uint32_t id)
{
	struct sto_host *h = sto_host_get(lhosts, id);
	if (!h)
		return NULL;
	if (id >= n_lims) {
		uint32_t n = n_lims ? n_lims : 64;
		while (n <= id)
			n *= 2;
		struct lim **nl = realloc(lims, n * sizeof *nl);
		if (!nl)
			return NULL;
		memset(nl + n_lims, 0, (n - n_lims) * sizeof *nl);
		lims = nl;
		n_lims = n;
	}
	if (lims[id])
		return lims[id];
	struct lim *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	char k[6];
	if (bt_db_get(ldb, k, bt_key_limits(k, id), &l->r, sizeof l->r) != (int)sizeof l->r || l->r.version != 1) {
		char name[BT_HOST_MAX];
		snprintf(name, sizeof name, "%.*s", (int)h->rec.host_len, h->rec.host);
		memset(&l->r, 0, sizeof l->r);
		l->r.version = 1;
		l->r.host_id = id;
		l->r.account_limit = bt_default_account_limit(name);
	}
	lims[id] = l;
	return l;
}

static void mark(struct lim *l)
{
	if (!l->dirty && n_dirty < sizeof dirty / sizeof dirty[0]) {
		l->dirty = true;
		dirty[n_dirty++] = l;
	}
}

void sto_limits_flush(struct bt_db_batch *b)
{
	for (size_t i = 0; i < n_dirty; i++) {
		char k[6];
		bt_db_batch_put(b, k, bt_key_limits(k, dirty[i]->r.host_id), &dirty[i]->r, sizeof dirty[i]->r);
		dirty[i]->dirty = false;
	}
	n_dirty = 0;
	bt_stat_set(bt_proc.stats, BT_STAT_THROTTLED_ACCOUNTS, total_throttled);
}

/* A relay-made #account for did into the batch: its seq, or 0 (store.h). */
uint64_t sto_emit_account(const char *did, size_t dn, bool active, const char *status, size_t sn)
{
	struct bt_fh_msg m;
	memset(&m, 0, sizeof m);
	m.type = BT_FH_ACCOUNT;
	m.did = (struct bt_bytes){ (const uint8_t *)did, dn };
	m.active = active;
	if (!active && sn) {
		m.has_status = true;
		m.status = (struct bt_bytes){ (const uint8_t *)status, sn };
	}
	struct bt_buf fb = { 0 };
	size_t seq_off = 0;
	uint64_t seq = 0;
	if (bt_fh_encode_noseq(&m, &fb, &seq_off) == 0)
		seq = sto_commit_frame(did, dn, BT_EV_ACCOUNT, fb.p, fb.len, seq_off, false);
	bt_buf_free(&fb);
	if (!seq)
		BT_LOG_EVERY(BT_LOG_ERROR, "%.*s: cannot encode the relay's #account", (int)dn, did);
	return seq;
}

static bool host_full(const struct lim *l)
{
	return l->r.account_limit >= 0 && l->r.account_count - l->r.throttled >= (uint64_t)l->r.account_limit;
}

enum bt_drop sto_limits_verdict(const struct bt_rec_verdict *v, struct bt_db_batch *b)
{
	if (!v->did_len)
		return BT_DROP_NONE;
	struct bt_acct_rec *a = sto_acct_get(ldb, v->did, v->did_len);
	if (!(a->flags & BT_ACCT_COUNTED)) {
		struct lim *l = lim_get(v->host_id);
		if (!l)
			return BT_DROP_NONE;
		/* A state already in RocksDB (seen before limits were counted) is counted, never
		   throttled: indigo throttles an account only when it creates it. */
		bool existed = a->updated_ms || a->last_seq;
		a->flags |= BT_ACCT_COUNTED;
		a->host_id = v->host_id;
		bool over = !existed && host_full(l);
		l->r.account_count++;
		if (over) {
			a->flags |= BT_ACCT_THROTTLED;
			l->r.throttled++;
			total_throttled++;
			l->r.serial++;
			char k[BT_DID_MAX + 16];
			bt_db_batch_put(b, k, bt_key_throttled(k, sizeof k, v->host_id, l->r.serial, v->did, v->did_len), "", 0);
			uint64_t seq = sto_emit_account(v->did, v->did_len, false, "throttled", 9);
			if (seq)
				a->last_seq = seq;
			a->updated_ms = bt_wall_ms();
			BT_INFO("%.*s: throttled (host %u at its account limit %lld)", (int)v->did_len, v->did,
				v->host_id, (long long)l->r.account_limit);
		}
		mark(l);
	}
	if (!(a->flags & BT_ACCT_THROTTLED))
		return BT_DROP_NONE;
	if (v->ev == BT_EV_IDENTITY)
		return BT_DROP_NONE;
	if (v->ev == BT_EV_ACCOUNT) {
		/* The upstream's state, shown once the account is re-activated. */
		a->flags = (v->flags & BT_V_ACTIVE) ? (a->flags | BT_ACCT_ACTIVE) : (a->flags & ~BT_ACCT_ACTIVE);
		a->status_len = (v->flags & BT_V_HAS_STATUS) ? v->status_len : 0;
		memcpy(a->status, v->status, a->status_len);
		a->updated_ms = bt_wall_ms();
	}
	return BT_DROP_THROTTLED;
}

void sto_limits_json(const struct sto_host *h, json_t *o)
{
	struct lim *l = lim_get(h->rec.host_id);
	if (!l)
		return;
	char name[BT_HOST_MAX];
	snprintf(name, sizeof name, "%.*s", (int)h->rec.host_len, h->rec.host);
	bool trusted = bt_host_trusted(name);
	struct bt_rates r;
	bt_rates_for(l->r.account_limit, trusted, l->r.rate, &r);
	json_object_set_new(o, "account_limit", json_integer((json_int_t)l->r.account_limit));
	json_object_set_new(o, "account_count", json_integer((json_int_t)l->r.account_count));
	json_object_set_new(o, "throttled_accounts", json_integer((json_int_t)l->r.throttled));
	json_object_set_new(o, "trusted", json_boolean(trusted));
	json_object_set_new(o, "per_second", json_integer((json_int_t)r.max[0]));
	json_object_set_new(o, "per_hour", json_integer((json_int_t)r.max[1]));
	json_object_set_new(o, "per_day", json_integer((json_int_t)r.max[2]));
	json_object_set_new(o, "rate_override",
			    json_pack("[I,I,I]", (json_int_t)l->r.rate[0], (json_int_t)l->r.rate[1], (json_int_t)l->r.rate[2]));
}

/* Throttled accounts of a host in serial order, a chunk at a time. */
struct thr_scan {
	uint32_t host_id;
	size_t n, max;
	char keys[256][BT_DID_MAX + 16];
	size_t kn[256];
};

static int thr_cb(void *arg, const char *k, size_t kn, const char *v, size_t vn)
{
	struct thr_scan *ts = arg;
	if (kn <= 14 || kn > sizeof ts->keys[0])
		return 0;
	memcpy(ts->keys[ts->n], k, kn);
	ts->kn[ts->n++] = kn;
	return ts->n >= ts->max;
}

/* Re-activates up to want throttled accounts of l's host: the number done. */
static uint64_t reactivate(struct lim *l, uint64_t want)
{
	static struct thr_scan ts;
	uint64_t done = 0;
	size_t chunk = (size_t)bt_cfg.commit_batch; /* a batch touches at most commit_batch accounts */
	if (chunk > 256)
		chunk = 256;
	while (done < want) {
		char pre[6];
		bt_key_limits(pre, l->r.host_id);
		pre[0] = 't';
		ts.host_id = l->r.host_id;
		ts.n = 0;
		ts.max = want - done < chunk ? (size_t)(want - done) : chunk;
		if (bt_db_scan(ldb, pre, 6, pre, 6, thr_cb, &ts) < 0 || ts.n == 0)
			break;
		struct bt_db_batch *b;
		for (size_t i = 0; i < ts.n; i++) {
			const char *did = ts.keys[i] + 14;
			size_t dn = ts.kn[i] - 14;
			struct bt_acct_rec *a = sto_acct_get(ldb, did, dn);
			b = sto_batch();
			bt_db_batch_del(b, ts.keys[i], ts.kn[i]);
			if (!(a->flags & BT_ACCT_THROTTLED))
				continue; /* (a stale index entry) */
			a->flags &= ~BT_ACCT_THROTTLED;
			bool active = a->flags & BT_ACCT_ACTIVE;
			uint64_t seq = (a->flags & BT_ACCT_TAKENDOWN) ? 0 /* still taken down: nothing to say */
				       : sto_emit_account(did, dn, active, a->status, a->status_len);
			if (seq)
				a->last_seq = seq;
			a->updated_ms = bt_wall_ms();
			if (l->r.throttled)
				l->r.throttled--;
			if (total_throttled)
				total_throttled--;
			done++;
		}
		mark(l);
		sto_write_now();
	}
	return done;
}

static bool get_limit(json_t *msg, const char *key, int64_t *out, bool *bad)
{
	json_t *j = json_object_get(msg, key);
	if (!j || json_is_null(j))
		return false;
	if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > 1000000000) {
		*bad = true;
		return false;
	}
	*out = json_integer_value(j);
	return true;
}

void sto_limits_change(struct bt_ctl_req *req, json_t *msg)
{
	const char *name = json_string_value(json_object_get(msg, "hostname"));
	struct sto_host *h = name ? sto_host_find(lhosts, name, strlen(name)) : NULL;
	if (!h) {
		bt_ctl_reply(req, json_pack("{s:s,s:s,s:i}", "error", "HostNotFound", "message",
					    "this relay does not know that host", "status", 404));
		return;
	}
	struct lim *l = lim_get(h->rec.host_id);
	bool bad = false, any = false;
	int64_t limit = 0, rate[3];
	static const char *const keys[3] = { "per_second", "per_hour", "per_day" };
	bool has_limit = get_limit(msg, "repo_limit", &limit, &bad);
	bool has_rate[3];
	for (int i = 0; i < 3; i++)
		has_rate[i] = get_limit(msg, keys[i], &rate[i], &bad);
	any = has_limit || has_rate[0] || has_rate[1] || has_rate[2];
	if (!l || bad || !any) {
		bt_ctl_reply(req, json_pack("{s:s,s:s}", "error", "InvalidRequest", "message",
					    bad ? "limits are integers from 0 to 1000000000"
						: "missing repo_limit (or per_second, per_hour, per_day)"));
		return;
	}
	int64_t was = l->r.account_limit;
	if (has_limit)
		l->r.account_limit = limit;
	for (int i = 0; i < 3; i++)
		if (has_rate[i])
			l->r.rate[i] = rate[i];
	mark(l);
	sto_write_now(); /* the new limits are persisted before anything follows from them */
	uint64_t active = l->r.account_count - l->r.throttled, again = 0;
	if (l->r.throttled && (uint64_t)l->r.account_limit > active)
		again = reactivate(l, (uint64_t)l->r.account_limit - active);
	BT_INFO("%.*s: limits changed: account limit %lld (was %lld), rates %lld/%lld/%lld; %llu accounts re-activated",
		(int)h->rec.host_len, h->rec.host, (long long)l->r.account_limit, (long long)was,
		(long long)l->r.rate[0], (long long)l->r.rate[1], (long long)l->r.rate[2], (unsigned long long)again);
	/* Ingest enforces the rates: tell it now (it also reads them from "hosts" at start). */
	json_t *o = json_object();
	sto_limits_json(h, o);
	char ep[600];
	bt_params_ipc("ingest", ep, sizeof ep);
	json_t *push = json_deep_copy(o);
	json_object_set_new(push, "op", json_string("setLimits"));
	json_object_set_new(push, "id", json_integer(h->rec.host_id));
	json_object_set_new(push, "host", json_stringn(h->rec.host, h->rec.host_len));
	json_t *ir = bt_ctl_call(ep, push, 2000);
	bool pushed = json_is_true(json_object_get(ir, "ok"));
	json_decref(ir);
	if (!pushed)
		BT_WARN("%.*s: ingest did not take the new rate limits (it reads them again at its start)",
			(int)h->rec.host_len, h->rec.host);
	json_object_set_new(o, "host", json_stringn(h->rec.host, h->rec.host_len));
	json_object_set_new(o, "reactivated", json_integer((json_int_t)again));
	json_object_set_new(o, "ingest", json_boolean(pushed));
	json_object_set_new(o, "success", json_string("true"));
	bt_ctl_reply(req, o);
}
