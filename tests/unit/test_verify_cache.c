/*
 * NAME
 *	test_verify_cache.c - verify's per-DID cache: wait FIFOs with 64-bit job ids, eviction rules
 * DESCRIPTION
 *	Builds verify/verify_cache.c into the test (it is not in libbt) with the two functions it
 *	takes from verify_main.c stubbed here: the job table and the output ring's committed
 *	position (and verify_ident.c's loader of a persisted identity, unused without a view).  Checks:
 *	1. job ids past 2^32 (0xFFFFFFFF among them, which once was the "none" marker) queue
 *	   and dequeue in order on a DID's FIFO;
 *	2. at the bound, the least recently used idle DID is evicted; a DID with frames waiting,
 *	   a resolution in flight, or a verdict the store has not committed yet (its last
 *	   verdict ends past the output ring's tail) is never evicted; once the store commits,
 *	   it can be, and coming back it is marked for a reload after a catch-up;
 *	3. the DIDs of one partition spread over all the buckets (lowest bits not fixed by K).
 * DIAGNOSTICS
 *	Prints "N passed, N failed".
 */
#include "bt_test.h"

#include "../../verify/verify_cache.c"

static struct vfy_job tjobs[8];
static uint64_t committed; /* the output ring's tail, as the store left it */

uint64_t vfy_out_committed(void)
{
	return committed;
}

struct vfy_job *vfy_job(uint64_t j)
{
	return &tjobs[j & 7];
}

/* verify_ident.c: the persisted identity (not under test here; no RocksDB view is opened). */
void vfy_ident_load(struct vfy_did *d, struct bt_db *db)
{
}

static void test_wait_ids(void)
{
	struct vfy_did *d = vfy_did_get("did:plc:aaaa", 12, true);
	CHECK(d != NULL);
	if (!d)
		return;
	uint64_t ids[] = { 0xFFFFFFFEu, 0xFFFFFFFFu, 0x100000000u };
	for (int i = 0; i < 3; i++)
		vfy_did_wait(d, ids[i]);
	CHECKF(d->wait_head == ids[0], "head %llu", (unsigned long long)d->wait_head);
	CHECK(vfy_did_busy(d));
	/* Walk the FIFO as vfy_resume does. */
	int n = 0;
	for (uint64_t j = d->wait_head; j != VFY_NONE && n < 5; j = vfy_job(j)->next, n++)
		CHECKF(n < 3 && j == ids[n], "FIFO[%d] = %llu", n, (unsigned long long)j);
	CHECKF(n == 3, "FIFO holds %d jobs, want 3", n);
	/* The job 0xFFFFFFFF alone on a DID is still a waiting job. */
	struct vfy_did *e = vfy_did_get("did:plc:bbbb", 12, true);
	vfy_did_wait(e, 0xFFFFFFFFu);
	CHECK(e->wait_head != VFY_NONE);
	CHECK(vfy_did_busy(e));
	/* Idle again (as vfy_resume leaves them), so the next test can evict them. */
	d->wait_head = d->wait_tail = e->wait_head = e->wait_tail = VFY_NONE;
}

static struct vfy_did *get(int i, bool create)
{
	char did[32];
	int n = snprintf(did, sizeof did, "did:plc:evict%04d", i);
	return vfy_did_get(did, (size_t)n, create);
}

static void test_eviction(void)
{
	for (int i = 0; i < 16; i++)
		CHECK(get(i, true) != NULL);
	/* DID 0 is the least recently used; it has a verdict ending at 100, the store is at 50. */
	struct vfy_did *d0 = get(0, false);
	d0->out_end = 100;
	for (int i = 1; i < 16; i++)
		get(i, false); /* touch: 0 stays the oldest */
	committed = 50;
	CHECK(vfy_did_busy(d0));
	CHECK(get(16, true) != NULL); /* evicts the oldest idle entry: 1, not 0 */
	CHECK(get(0, false) == d0);
	CHECK(get(1, false) == NULL);
	CHECK(!evicted_test(d0->did, d0->did_len));
	/* The store commits it: now 0 may go (it is the oldest again). */
	committed = 100;
	CHECK(!vfy_did_busy(d0));
	for (int i = 2; i <= 16; i++)
		get(i, false);
	char did0[BT_DID_MAX];
	size_t n0 = d0->did_len;
	memcpy(did0, d0->did, n0);
	CHECK(get(17, true) != NULL);
	CHECK(vfy_did_get(did0, n0, false) == NULL);
	/* Coming back, it must be reloaded from a view that caught up after its eviction. */
	CHECK(evicted_test(did0, n0));
	/* A frame waiting or a resolution in flight also keeps an entry. */
	struct vfy_did *w = get(2, false), *r = get(3, false);
	vfy_did_wait(w, 5);
	r->ist = VI_RESOLVING;
	for (int i = 4; i <= 17; i++)
		get(i, false);
	for (int i = 18; i < 30; i++)
		CHECK(get(i, true) != NULL);
	CHECK(get(2, false) == w && get(3, false) == r);
}

/* 3. The DIDs one verify sees (ingest sends it those with bt_hash_did % K == its index) spread
   over all of its buckets, for K = 2 and K = 4: the bucket hash is not the partition hash. */
static void test_bucket_spread(void)
{
	static const unsigned ks[] = { 2, 4 };
	for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
		unsigned K = ks[t];
		static bool hit[1024];
		memset(hit, 0, sizeof hit);
		size_t saved = n_buckets, used = 0;
		n_buckets = 1024;
		unsigned seen = 0;
		for (unsigned i = 0; seen < 8192; i++) {
			char did[64];
			int n = snprintf(did, sizeof did, "did:plc:bench%08u", i);
			if (bt_hash_did(did, (size_t)n) % K != 1)
				continue; /* another verify's DID */
			seen++;
			size_t b = did_bucket(did, (size_t)n);
			if (b < 1024 && !hit[b]) {
				hit[b] = true;
				used++;
			}
		}
		n_buckets = saved;
		/* 8192 keys into 1024 buckets leave ~0.03% empty by chance; the partition hash's low
		   bits would leave 1 - 1/K of them empty. */
		CHECK(used > 1000);
		if (used <= 1000)
			fprintf(stderr, "K=%u: %zu of 1024 buckets used\n", K, used);
	}
}

int main(void)
{
	vfy_cache_init(16);
	test_wait_ids();
	test_eviction();
	test_bucket_spread();
	BT_TEST_END();
}
