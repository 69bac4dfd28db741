/*
 * NAME
 *	bt_mst - Merkle Search Tree helpers and Sync 1.1 inversion
 * DESCRIPTION
 *	Used by verify for the Sync 1.1 checks.  The partial tree is held as
 *	struct mn nodes: a node at layer L has n keys (all of height L) and n+1
 *	child slots (kids[i] lies left of keys[i]); a NULL slot is no subtree; a
 *	node that is not loaded is a bare CID.  Every mn, key and array comes
 *	from a per-thread bump arena that is reset on each call.  The recursive
 *	helpers descend one layer per call and the layer starts at most at 128,
 *	so the depth is bounded whatever the input.  sha-256 from OpenSSL.
 * DIAGNOSTICS
 *	See bt_mst.h.
 */
#include "bt_mst.h"

#include <errno.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bt_crypto.h"

#include "bt_cbor.h"

int bt_mst_key_height(const uint8_t *key, size_t n)
{
	uint8_t d[32];
	int zeros = 0;
	bt_sha256(key, n, d);
	for (int i = 0; i < 32; i++) {
		if (d[i] == 0) {
			zeros += 8;
			continue;
		}
		zeros += __builtin_clz(d[i]) - 24;
		break;
	}
	return zeros / 2;
}

/* ---- per-thread arena ---- */

struct chunk {
	struct chunk *next;
	size_t cap, used;
	alignas(max_align_t) uint8_t data[];
};

struct arena {
	struct chunk *head, *cur;
	size_t total;
};

static __thread struct arena g_arena;
static __thread struct bt_buf g_enc;

static void arena_reset(struct arena *a)
{
	for (struct chunk *c = a->head; c; c = c->next)
		c->used = 0;
	a->cur = a->head;
}

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
	for (struct chunk *c = a->cur; c; c = c->next) {
		if (c->cap - c->used >= n) {
			void *p = c->data + c->used;
			c->used += n;
			a->cur = c;
			return p;
		}
		if (!c->next)
			break;
	}
	size_t cap = n > 65536 ? n : 65536;
	if (a->total + cap > BT_MST_ARENA_MAX)
		return NULL;
	struct chunk *c = malloc(sizeof *c + cap);
	if (!c)
		return NULL;
	c->next = NULL;
	c->cap = cap;
	c->used = n;
	a->total += cap;
	if (!a->head) {
		a->head = c;
	} else {
		struct chunk *t = a->cur ? a->cur : a->head;
		while (t->next)
			t = t->next;
		t->next = c;
	}
	a->cur = c;
	return c->data;
}

void bt_mst_thread_free(void)
{
	struct chunk *c = g_arena.head;
	while (c) {
		struct chunk *nx = c->next;
		free(c);
		c = nx;
	}
	memset(&g_arena, 0, sizeof g_arena);
	bt_buf_free(&g_enc);
}

/* ---- tree ---- */

struct mk {
	const uint8_t *k;
	size_t n;
	struct bt_cid v;
};

struct mn {
	struct bt_cid cid; /* valid unless dirty */
	bool loaded, dirty;
	size_t n;          /* keys */
	struct mk *keys;   /* n */
	struct mn **kids;  /* n + 1 */
};

struct ctx {
	const struct bt_car *car;
	struct arena *a;
	struct bt_buf *enc, *car_out;
	const char *why;
};

static int fail(struct ctx *c, int rc, const char *why)
{
	if (!c->why)
		c->why = why;
	return rc;
}

#define NOMEM(c) fail((c), -ENOMEM, "out of memory")

static struct mn *mn_new(struct ctx *c, size_t n)
{
	struct mn *m = arena_alloc(c->a, sizeof *m);
	struct mk *k = arena_alloc(c->a, (n ? n : 1) * sizeof *k); /* never NULL: callers add offsets */
	struct mn **kids = arena_alloc(c->a, (n + 1) * sizeof *kids);
	if (!m || !k || !kids)
		return NULL;
	memset(m, 0, sizeof *m);
	memset(kids, 0, (n + 1) * sizeof *kids);
	m->loaded = true;
	m->dirty = true;
	m->n = n;
	m->keys = k;
	m->kids = kids;
	return m;
}

static struct mn *mn_bare(struct ctx *c, const struct bt_cid *cid)
{
	struct mn *m = arena_alloc(c->a, sizeof *m);
	if (!m)
		return NULL;
	memset(m, 0, sizeof *m);
	m->cid = *cid;
	return m;
}

static int keycmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	size_t m = an < bn ? an : bn;
	int r = m ? memcmp(a, b, m) : 0;
	if (r)
		return r;
	return an < bn ? -1 : an > bn;
}

static int bad(struct ctx *c)
{
	return fail(c, -EBADMSG, "bad mst node");
}

/* Read a one-letter text map key; 0 or <0. */
static int read_key(struct bt_cbor_rd *r, char want)
{
	struct bt_cbor_item it;
	if (bt_cbor_next(r, &it) || it.type != BT_CBOR_TEXT || it.n != 1 || it.p[0] != (uint8_t)want)
		return -EBADMSG;
	return 0;
}

/* Decode block bytes into m (a bare node, known by CID only) expected at layer L. */
static int mn_parse(struct ctx *c, struct mn *m, const uint8_t *p, size_t len, int layer)
{
	struct bt_cbor_rd r;
	struct bt_cbor_item it;
	bt_cbor_rd_init(&r, p, len);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP || it.n != 2 || read_key(&r, 'e'))
		return bad(c);
	if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_ARRAY || it.n > len)
		return bad(c);
	size_t n = it.n;
	struct mk *keys = arena_alloc(c->a, (n ? n : 1) * sizeof *keys);
	struct mn **kids = arena_alloc(c->a, (n + 1) * sizeof *kids);
	if (!keys || !kids)
		return fail(c, -E2BIG, "mst arena full");
	memset(kids, 0, (n + 1) * sizeof *kids);
	const uint8_t *prev = NULL;
	size_t prevn = 0;
	for (size_t i = 0; i < n; i++) {
		struct bt_cbor_item kb, pv;
		struct bt_cid t;
		bool has_t;
		if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP || it.n != 4)
			return bad(c);
		if (read_key(&r, 'k') || bt_cbor_next(&r, &kb) || kb.type != BT_CBOR_BYTES)
			return bad(c);
		if (read_key(&r, 'p') || bt_cbor_next(&r, &pv) || pv.type != BT_CBOR_UINT || pv.u > prevn)
			return bad(c);
		if (read_key(&r, 't') || bt_cbor_read_cid_or_null(&r, &t, &has_t))
			return bad(c);
		if (read_key(&r, 'v') || bt_cbor_read_cid(&r, &keys[i].v))
			return bad(c);
		size_t kn = (size_t)pv.u + kb.n;
		if (kn > BT_MST_MAX_KEY)
			return fail(c, -E2BIG, "mst key too long");
		uint8_t *k = arena_alloc(c->a, kn ? kn : 1);
		if (!k)
			return fail(c, -E2BIG, "mst arena full");
		if (pv.u)
			memcpy(k, prev, (size_t)pv.u);
		if (kb.n)
			memcpy(k + pv.u, kb.p, kb.n);
		if (prev && keycmp(prev, prevn, k, kn) >= 0)
			return fail(c, -EBADMSG, "mst keys out of order");
		if (bt_mst_key_height(k, kn) != layer)
			return fail(c, -EBADMSG, "mst key at wrong layer");
		keys[i].k = k;
		keys[i].n = kn;
		if (has_t && !(kids[i + 1] = mn_bare(c, &t)))
			return fail(c, -E2BIG, "mst arena full");
		prev = k;
		prevn = kn;
	}
	struct bt_cid l;
	bool has_l;
	if (read_key(&r, 'l') || bt_cbor_read_cid_or_null(&r, &l, &has_l) || r.p != r.end)
		return bad(c);
	if (has_l && !(kids[0] = mn_bare(c, &l)))
		return fail(c, -E2BIG, "mst arena full");
	if (layer <= 0) {
		for (size_t i = 0; i <= n; i++)
			if (kids[i])
				return fail(c, -EBADMSG, "mst subtree below layer 0");
	}
	if (n == 0 && !kids[0])
		return fail(c, -EBADMSG, "empty mst node");
	m->n = n;
	m->keys = keys;
	m->kids = kids;
	m->loaded = true;
	m->dirty = false;
	return 0;
}

/* Make sure m (non-NULL) is loaded, as a node at layer. */
static int mn_load(struct ctx *c, struct mn *m, int layer)
{
	if (m->loaded)
		return 0;
	if (layer < 0)
		return fail(c, -EBADMSG, "mst too deep");
	const struct bt_car_block *b = bt_car_get(c->car, &m->cid);
	if (!b)
		return fail(c, -ENOENT, "missing block");
	return mn_parse(c, m, b->data, b->len, layer);
}

/* Index of the first key >= k in m; *eq says whether it is equal. */
static size_t mn_find(const struct mn *m, const uint8_t *k, size_t kn, bool *eq)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (keycmp(m->keys[mid].k, m->keys[mid].n, k, kn) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*eq = lo < m->n && keycmp(m->keys[lo].k, m->keys[lo].n, k, kn) == 0;
	return lo;
}

/* memmove that accepts NULL pointers when n is 0. */
static void cp(void *d, const void *s, size_t n)
{
	if (n)
		memmove(d, s, n);
}

/* NULL for a node with no keys and no subtree. */
static struct mn *prune(struct mn *m)
{
	return m && m->n == 0 && !m->kids[0] ? NULL : m;
}

/* Split the subtree t at layer by k (not in t) into the keys below and above it. */
static int split(struct ctx *c, struct mn *t, int layer, const uint8_t *k, size_t kn, struct mn **lo,
		 struct mn **hi)
{
	*lo = *hi = NULL;
	if (!t)
		return 0;
	int rc = mn_load(c, t, layer);
	if (rc)
		return rc;
	bool eq;
	size_t i = mn_find(t, k, kn, &eq);
	if (eq)
		return fail(c, -EINVAL, "mst split on a present key");
	struct mn *a, *b;
	if ((rc = split(c, t->kids[i], layer - 1, k, kn, &a, &b)))
		return rc;
	struct mn *l = mn_new(c, i), *r = mn_new(c, t->n - i);
	if (!l || !r)
		return fail(c, -E2BIG, "mst arena full");
	if (i) {
		cp(l->keys, t->keys, i * sizeof *l->keys);
		cp(l->kids, t->kids, i * sizeof *l->kids);
	}
	l->kids[i] = a;
	if (t->n - i) {
		cp(r->keys, t->keys + i, (t->n - i) * sizeof *r->keys);
		cp(r->kids + 1, t->kids + i + 1, (t->n - i) * sizeof *r->kids);
	}
	r->kids[0] = b;
	*lo = prune(l);
	*hi = prune(r);
	return 0;
}

/* Join two adjacent subtrees at layer (every key of a below every key of b). */
static int merge(struct ctx *c, struct mn *a, struct mn *b, int layer, struct mn **out)
{
	if (!a || !b) {
		*out = a ? a : b;
		return 0;
	}
	int rc;
	if ((rc = mn_load(c, a, layer)) || (rc = mn_load(c, b, layer)))
		return rc;
	struct mn *mid;
	if ((rc = merge(c, a->kids[a->n], b->kids[0], layer - 1, &mid)))
		return rc;
	struct mn *m = mn_new(c, a->n + b->n);
	if (!m)
		return fail(c, -E2BIG, "mst arena full");
	if (a->n)
		cp(m->keys, a->keys, a->n * sizeof *m->keys);
	if (b->n)
		cp(m->keys + a->n, b->keys, b->n * sizeof *m->keys);
	cp(m->kids, a->kids, a->n * sizeof *m->kids);
	m->kids[a->n] = mid;
	cp(m->kids + a->n + 1, b->kids + 1, b->n * sizeof *m->kids);
	*out = m;
	return 0;
}

/* Insert k (height h <= layer, absent) with value v into subtree t at layer. */
static int insert(struct ctx *c, struct mn *t, int layer, const uint8_t *k, size_t kn, int h,
		  const struct bt_cid *v, struct mn **out)
{
	int rc;
	if (!t) {
		struct mn *m = mn_new(c, h == layer ? 1 : 0);
		if (!m)
			return fail(c, -E2BIG, "mst arena full");
		if (h == layer) {
			m->keys[0] = (struct mk){ k, kn, *v };
		} else if ((rc = insert(c, NULL, layer - 1, k, kn, h, v, &m->kids[0]))) {
			return rc;
		}
		*out = m;
		return 0;
	}
	if ((rc = mn_load(c, t, layer)))
		return rc;
	bool eq;
	size_t i = mn_find(t, k, kn, &eq);
	if (eq)
		return fail(c, -EINVAL, "deleted key is present");
	if (h < layer) {
		if ((rc = insert(c, t->kids[i], layer - 1, k, kn, h, v, &t->kids[i])))
			return rc;
		t->dirty = true;
		*out = t;
		return 0;
	}
	struct mn *a, *b;
	if ((rc = split(c, t->kids[i], layer - 1, k, kn, &a, &b)))
		return rc;
	struct mn *m = mn_new(c, t->n + 1);
	if (!m)
		return fail(c, -E2BIG, "mst arena full");
	cp(m->keys, t->keys, i * sizeof *m->keys);
	m->keys[i] = (struct mk){ k, kn, *v };
	cp(m->keys + i + 1, t->keys + i, (t->n - i) * sizeof *m->keys);
	cp(m->kids, t->kids, i * sizeof *m->kids);
	m->kids[i] = a;
	m->kids[i + 1] = b;
	cp(m->kids + i + 2, t->kids + i + 1, (t->n - i) * sizeof *m->kids);
	*out = m;
	return 0;
}

/* Remove k (height h) from subtree t at layer, checking its value against want (if non-NULL). */
static int remove_key(struct ctx *c, struct mn *t, int layer, const uint8_t *k, size_t kn, int h,
		      const struct bt_cid *want, struct mn **out)
{
	if (!t || h > layer)
		return fail(c, -EINVAL, "created key is absent");
	int rc = mn_load(c, t, layer);
	if (rc)
		return rc;
	bool eq;
	size_t i = mn_find(t, k, kn, &eq);
	if (h < layer) {
		if ((rc = remove_key(c, t->kids[i], layer - 1, k, kn, h, want, &t->kids[i])))
			return rc;
		t->dirty = true;
		*out = prune(t);
		return 0;
	}
	if (!eq)
		return fail(c, -EINVAL, "created key is absent");
	if (want && !bt_cid_eq(&t->keys[i].v, want))
		return fail(c, -EINVAL, "op cid does not match tree");
	struct mn *mid;
	if ((rc = merge(c, t->kids[i], t->kids[i + 1], layer - 1, &mid)))
		return rc;
	cp(t->keys + i, t->keys + i + 1, (t->n - i - 1) * sizeof *t->keys);
	t->kids[i] = mid;
	cp(t->kids + i + 1, t->kids + i + 2, (t->n - i - 1) * sizeof *t->kids);
	t->n--;
	t->dirty = true;
	*out = prune(t);
	return 0;
}

/* Set the value of k (height h) in subtree t at layer to v, checking the old value against want. */
static int update(struct ctx *c, struct mn *t, int layer, const uint8_t *k, size_t kn, int h,
		  const struct bt_cid *want, const struct bt_cid *v)
{
	for (;;) {
		if (!t || h > layer)
			return fail(c, -EINVAL, "updated key is absent");
		int rc = mn_load(c, t, layer);
		if (rc)
			return rc;
		bool eq;
		size_t i = mn_find(t, k, kn, &eq);
		t->dirty = true;
		if (h == layer) {
			if (!eq)
				return fail(c, -EINVAL, "updated key is absent");
			if (want && !bt_cid_eq(&t->keys[i].v, want))
				return fail(c, -EINVAL, "op cid does not match tree");
			t->keys[i].v = *v;
			return 0;
		}
		t = t->kids[i];
		layer--;
	}
}

/* ---- encoding ---- */

static int enc_node(struct ctx *c, struct mn *m)
{
	struct bt_buf *b = c->enc;
	bt_buf_reset(b);
	int rc = bt_cbor_w_map(b, 2);
	rc = rc ? rc : bt_cbor_w_text(b, "e", 1);
	rc = rc ? rc : bt_cbor_w_array(b, m->n);
	const uint8_t *prev = NULL;
	size_t prevn = 0;
	for (size_t i = 0; !rc && i < m->n; i++) {
		const struct mk *e = &m->keys[i];
		size_t p = 0;
		while (p < prevn && p < e->n && prev[p] == e->k[p])
			p++;
		rc = bt_cbor_w_map(b, 4);
		rc = rc ? rc : bt_cbor_w_text(b, "k", 1);
		rc = rc ? rc : bt_cbor_w_bytes(b, e->k + p, e->n - p);
		rc = rc ? rc : bt_cbor_w_text(b, "p", 1);
		rc = rc ? rc : bt_cbor_w_uint(b, p);
		rc = rc ? rc : bt_cbor_w_text(b, "t", 1);
		if (!rc)
			rc = m->kids[i + 1] ? bt_cbor_w_cid(b, &m->kids[i + 1]->cid) : bt_cbor_w_null(b);
		rc = rc ? rc : bt_cbor_w_text(b, "v", 1);
		rc = rc ? rc : bt_cbor_w_cid(b, &e->v);
		prev = e->k;
		prevn = e->n;
	}
	rc = rc ? rc : bt_cbor_w_text(b, "l", 1);
	if (!rc)
		rc = m->kids[0] ? bt_cbor_w_cid(b, &m->kids[0]->cid) : bt_cbor_w_null(b);
	if (rc)
		return NOMEM(c);
	if ((rc = bt_cid_for_block(BT_CID_CODEC_DAG_CBOR, b->p, b->len, &m->cid)))
		return fail(c, rc, "cid");
	if (c->car_out && bt_car_write_block(c->car_out, &m->cid, b->p, b->len))
		return NOMEM(c);
	m->dirty = false;
	return 0;
}

/* Recompute the CIDs of changed nodes below and including m (depth bounded by the layer). */
static int enc_tree(struct ctx *c, struct mn *m, int layer)
{
	if (!m || !m->loaded)
		return 0;
	if (layer < 0)
		return fail(c, -EBADMSG, "mst too deep");
	for (size_t i = 0; i <= m->n; i++) {
		struct mn *k = m->kids[i];
		if (k && k->loaded && (k->dirty || c->car_out)) {
			int rc = enc_tree(c, k, layer - 1);
			if (rc)
				return rc;
			m->dirty = true;
		}
	}
	return m->dirty || c->car_out ? enc_node(c, m) : 0;
}

/* Root CID of the tree m at layer (the empty node for NULL). */
static int root_cid(struct ctx *c, struct mn *m, int layer, struct bt_cid *out)
{
	int rc;
	if (!m) {
		struct mk none;
		struct mn e = { .loaded = true, .dirty = true, .n = 0, .keys = &none, .kids = (struct mn *[1]){ NULL } };
		if ((rc = enc_node(c, &e)))
			return rc;
		*out = e.cid;
		return 0;
	}
	if ((rc = enc_tree(c, m, layer)))
		return rc;
	*out = m->cid;
	return 0;
}

static void ctx_init(struct ctx *c, const struct bt_car *car, struct bt_buf *car_out)
{
	arena_reset(&g_arena);
	bt_buf_reset(&g_enc);
	*c = (struct ctx){ .car = car, .a = &g_arena, .enc = &g_enc, .car_out = car_out };
}

/* ---- inversion ---- */

int bt_mst_invert(const struct bt_car *car, const struct bt_cid *root, const struct bt_fh_op *ops,
		  size_t n_ops, struct bt_cid *prev_root_out, const char **why)
{
	struct ctx c;
	int rc, layer = -1;
	ctx_init(&c, car, NULL);
	struct mn *t = mn_bare(&c, root);
	if (!t) {
		rc = NOMEM(&c);
		goto out;
	}
	/* Root layer: the height of its first key; an empty node is the empty tree. */
	const struct bt_car_block *rb = bt_car_get(car, root);
	if (!rb) {
		rc = fail(&c, -ENOENT, "missing block");
		goto out;
	}
	{
		struct bt_cbor_rd r;
		struct bt_cbor_item it;
		bt_cbor_rd_init(&r, rb->data, rb->len);
		if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP || it.n != 2 || read_key(&r, 'e') ||
		    bt_cbor_next(&r, &it) || it.type != BT_CBOR_ARRAY) {
			rc = bad(&c);
			goto out;
		}
		if (it.n == 0) {
			if (read_key(&r, 'l') || !(r.p < r.end && r.p[0] == 0xf6) || r.p + 1 != r.end) {
				rc = fail(&c, -EBADMSG, "mst root without keys");
				goto out;
			}
			t = NULL;
		} else {
			struct bt_cbor_item kb;
			if (bt_cbor_next(&r, &it) || it.type != BT_CBOR_MAP || read_key(&r, 'k') ||
			    bt_cbor_next(&r, &kb) || kb.type != BT_CBOR_BYTES) {
				rc = bad(&c);
				goto out;
			}
			layer = bt_mst_key_height(kb.p, kb.n);
			if ((rc = mn_load(&c, t, layer)))
				goto out;
		}
	}
	for (size_t j = n_ops; j-- > 0;) {
		const struct bt_fh_op *op = &ops[j];
		const uint8_t *k = op->path.p;
		size_t kn = op->path.n;
		if (kn > BT_MST_MAX_KEY) {
			rc = fail(&c, -E2BIG, "mst key too long");
			goto out;
		}
		int h = bt_mst_key_height(k, kn);
		if (bt_bytes_eq_str(op->action, "create")) {
			if ((rc = remove_key(&c, t, layer, k, kn, h, op->has_cid ? &op->cid : NULL, &t)))
				goto out;
		} else if (bt_bytes_eq_str(op->action, "update") || bt_bytes_eq_str(op->action, "delete")) {
			bool upd = op->action.p[0] == 'u';
			if (!op->has_prev) {
				rc = fail(&c, -EINVAL, "op without prev");
				goto out;
			}
			if (upd) {
				rc = update(&c, t, layer, k, kn, h, op->has_cid ? &op->cid : NULL, &op->prev);
			} else {
				if (!t)
					layer = h;
				while (layer < h) { /* grow the root to the new key's layer */
					struct mn *m = mn_new(&c, 0);
					if (!m) {
						rc = fail(&c, -E2BIG, "mst arena full");
						goto out;
					}
					m->kids[0] = t;
					t = m;
					layer++;
				}
				rc = insert(&c, t, layer, k, kn, h, &op->prev, &t);
			}
			if (rc)
				goto out;
		} else {
			rc = fail(&c, -EINVAL, "unknown op action");
			goto out;
		}
	}
	/* Trim the root down to its highest key (only once, so that no op needs more blocks). */
	while (t && t->n == 0) {
		t = t->kids[0];
		layer--;
		if (t && (rc = mn_load(&c, t, layer)))
			goto out;
	}
	rc = root_cid(&c, t, layer, prev_root_out);
out:
	if (why)
		*why = rc ? c.why : NULL;
	return rc;
}

/* ---- building from scratch ---- */

struct bkey {
	const uint8_t *k;
	size_t n;
	int h;
	const struct bt_cid *v;
};

static int bkey_cmp(const void *a, const void *b)
{
	const struct bkey *x = a, *y = b;
	return keycmp(x->k, x->n, y->k, y->n);
}

/* Node at layer for ks[0..n) (n > 0); depth bounded by layer. */
static int build(struct ctx *c, const struct bkey *ks, size_t n, int layer, struct mn **out)
{
	*out = NULL;
	if (!n)
		return 0;
	if (layer < 0)
		return fail(c, -EINVAL, "mst layer");
	size_t cnt = 0;
	for (size_t i = 0; i < n; i++)
		cnt += ks[i].h == layer;
	struct mn *m = mn_new(c, cnt);
	if (!m)
		return fail(c, -E2BIG, "mst arena full");
	size_t start = 0, j = 0;
	int rc;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && ks[i].h != layer)
			continue;
		if ((rc = build(c, ks + start, i - start, layer - 1, &m->kids[j])))
			return rc;
		if (i < n) {
			m->keys[j] = (struct mk){ ks[i].k, ks[i].n, *ks[i].v };
			j++;
		}
		start = i + 1;
	}
	*out = m;
	return 0;
}

int bt_mst_build_car(const uint8_t *const *keys, const size_t *lens, const struct bt_cid *vals, size_t n,
		     struct bt_buf *car_out, struct bt_cid *root_out)
{
	struct ctx c;
	int rc, layer = -1;
	struct bt_buf nodes = { 0 };
	ctx_init(&c, NULL, car_out ? &nodes : NULL);
	struct bkey *ks = n ? malloc(n * sizeof *ks) : NULL;
	if (n && !ks)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		ks[i] = (struct bkey){ keys[i], lens[i], bt_mst_key_height(keys[i], lens[i]), &vals[i] };
		if (ks[i].h > layer)
			layer = ks[i].h;
	}
	if (n)
		qsort(ks, n, sizeof *ks, bkey_cmp);
	rc = 0;
	for (size_t i = 1; i < n; i++)
		if (!keycmp(ks[i - 1].k, ks[i - 1].n, ks[i].k, ks[i].n))
			rc = -EINVAL;
	struct mn *t = NULL;
	if (!rc)
		rc = build(&c, ks, n, layer, &t);
	if (!rc)
		rc = root_cid(&c, t, layer, root_out);
	if (!rc && car_out) {
		rc = bt_car_write_header(car_out, root_out);
		if (!rc)
			rc = bt_buf_append(car_out, nodes.p, nodes.len);
	}
	bt_buf_free(&nodes);
	free(ks);
	return rc;
}
