/*
 * NAME
 *	test_limits - per-host limits: trusted domains, indigo's rate formulas, the sliding window
 * DESCRIPTION
 *	bt_host_trusted_in matches exact names and "*.suffix" only; bt_rates_for gives indigo's
 *	50 + L/1000, 2,500 + L, 20,000 + 10 L (trusted: 5,000 / 50M / 500M) and takes overrides;
 *	bt_limiter lets exactly max events through a window, refuses the next with a wait that
 *	ends when room appears, weights the previous window by its overlap (indigo's
 *	slidingwindow), and a raised limit lets more through at once.
 */
#include "bt_limits.h"
#include "bt_params.h"
#include "bt_test.h"

int main(void)
{
	/* trusted domains */
	CHECK(bt_host_trusted_in("pds1.host.bsky.network", "*.host.bsky.network"));
	CHECK(!bt_host_trusted_in("host.bsky.network", "*.host.bsky.network"));
	CHECK(!bt_host_trusted_in("evilhost.bsky.network", "*.host.bsky.network"));
	CHECK(bt_host_trusted_in("a.example", "x.test, a.example"));
	CHECK(!bt_host_trusted_in("b.a.example", "a.example"));
	CHECK(bt_host_trusted_in("localhost:1234", "localhost:1234"));
	CHECK(!bt_host_trusted_in("localhost:12345", "localhost:1234"));
	CHECK(!bt_host_trusted_in("x.example", ""));

	/* indigo's formulas */
	bt_cfg.host_events_per_second = 50;
	bt_cfg.host_events_per_hour = 2500;
	bt_cfg.host_events_per_day = 20000;
	struct bt_rates r;
	bt_rates_for(100, false, NULL, &r);
	CHECK(r.max[0] == 50 && r.max[1] == 2600 && r.max[2] == 21000);
	bt_rates_for(10000000, false, NULL, &r);
	CHECK(r.max[0] == 10050 && r.max[1] == 10002500 && r.max[2] == 100020000);
	bt_rates_for(100, true, NULL, &r);
	CHECK(r.max[0] == 5000 && r.max[1] == 50000000 && r.max[2] == 500000000);
	int64_t ov[3] = { 7, 0, 9 };
	bt_rates_for(100, false, ov, &r);
	CHECK(r.max[0] == 7 && r.max[1] == 2600 && r.max[2] == 9);

	/* the window: 10/s */
	struct bt_rates ten = { { 10, 1000000, 1000000 } };
	struct bt_limiter l;
	bt_limiter_init(&l, &ten);
	uint64_t t = 1000000000; /* aligned to a second */
	int passed = 0;
	for (int i = 0; i < 20; i++)
		if (bt_limiter_wait(&l, t + 100) == 0) {
			bt_limiter_take(&l, t + 100);
			passed++;
		}
	CHECKF(passed == 10, "%d passed in one second", passed);
	uint64_t w = bt_limiter_wait(&l, t + 100);
	CHECKF(w == 900, "wait %llu (until the window ends)", (unsigned long long)w);
	/* Next window: the previous 10 weigh 10 * (1000 - e) / 1000; one fits once that is <= 9. */
	w = bt_limiter_wait(&l, t + 1000);
	CHECKF(w >= 100 && w <= 101, "wait %llu at the window start", (unsigned long long)w);
	CHECK(bt_limiter_wait(&l, t + 1000 + w) == 0);
	/* Over a long run the rate holds: never more than 10 a second (the sliding estimate, as
	   indigo's, settles a little under: about max - 1 per window after the first). */
	bt_limiter_init(&l, &ten);
	uint64_t now = t, taken = 0;
	while (now < t + 10000) {
		uint64_t ww = bt_limiter_wait(&l, now);
		if (ww) {
			now += ww;
			continue;
		}
		bt_limiter_take(&l, now);
		taken++;
	}
	CHECKF(taken >= 88 && taken <= 100, "%llu events in 10 s at 10/s", (unsigned long long)taken);
	/* A window idle for two sizes forgets everything. */
	CHECK(bt_limiter_wait(&l, now + 2000) == 0);
	/* A raised limit lets more through at once. */
	bt_limiter_init(&l, &ten);
	for (int i = 0; i < 10; i++)
		bt_limiter_take(&l, t);
	CHECK(bt_limiter_wait(&l, t) > 0);
	struct bt_rates more = { { 20, 1000000, 1000000 } };
	bt_limiter_set(&l, &more);
	CHECK(bt_limiter_wait(&l, t) == 0);
	/* The hour window binds too. */
	struct bt_rates hour = { { 1000, 5, 1000000 } };
	bt_limiter_init(&l, &hour);
	for (int i = 0; i < 5; i++)
		bt_limiter_take(&l, t + (uint64_t)i * 2000);
	w = bt_limiter_wait(&l, t + 10000);
	CHECKF(w > 1000, "hour window wait %llu", (unsigned long long)w);
	BT_TEST_END();
}
