/* Unit test of bt_u64map against a plain array model, with many deletes (backward shift). */
#include "bt_test.h"
#include "bt_u64map.h"

int main(void)
{
	struct bt_u64map m = { 0 };
	enum { N = 20000 };
	static uint64_t model[N];
	static bool present[N];
	unsigned seed = 12345;
	for (int round = 0; round < 200000; round++) {
		seed = seed * 1103515245u + 12345u;
		int k = (int)((seed >> 8) % N);
		int op = (int)((seed >> 4) % 3);
		if (op < 2) {
			uint64_t v = seed;
			bt_u64map_put(&m, (uint64_t)k * 7919u, v);
			model[k] = v;
			present[k] = true;
		} else {
			bool had = bt_u64map_del(&m, (uint64_t)k * 7919u);
			if (had != present[k]) {
				CHECKF(0, "delete of %d returned %d", k, had);
			}
			present[k] = false;
		}
	}
	size_t cnt = 0;
	int bad = 0;
	for (int k = 0; k < N; k++) {
		uint64_t v;
		bool got = bt_u64map_get(&m, (uint64_t)k * 7919u, &v);
		if (got != present[k] || (got && v != model[k]))
			bad++;
		cnt += present[k];
	}
	CHECK(bad == 0);
	CHECK(cnt == m.n);
	CHECK(!bt_u64map_get(&m, UINT64_MAX, NULL));
	bt_u64map_clear(&m);
	CHECK(m.n == 0 && !bt_u64map_get(&m, 7919u, NULL));
	bt_u64map_free(&m);
	BT_TEST_END();
}
