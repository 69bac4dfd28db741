#!/usr/bin/env bash
# Runs every test of baton and ends with one line "N passed, N failed".
#   tests/run.sh [BUILD_DIR]      unit tests, multi-process tests, then the end-to-end scenarios
# Each test binary or script prints its own "N passed, N failed"; a test that crashes or
# times out without that line counts as one failure.  Logs of failures stay in $BT_TEST_TMP.
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build}
export BT_VECTORS=${BT_VECTORS:-$(cd .. && pwd)/shared/vectors}
export BT_TEST_TMP=${BT_TEST_TMP:-$(mktemp -d /tmp/baton-test.XXXXXX)}
pass=0 fail=0

run_one() { # name timeout_s cmd...
	local name=$1 t=$2; shift 2
	local log="$BT_TEST_TMP/$name.log"
	timeout -k 5 "$t" "$@" >"$log" 2>&1
	local rc=$?
	local line
	line=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
	local p f
	p=$(sed -E 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
	f=$(sed -E 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed.*/\3/' <<<"$line")
	if [ -z "$line" ]; then p=0; f=1; fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	pass=$((pass + p)); fail=$((fail + f))
	if [ "$f" -eq 0 ]; then
		printf 'ok      %-28s %s\n' "$name" "$line"
	else
		printf 'FAILED  %-28s %s (exit %d, log %s)\n' "$name" "${line:-no summary}" "$rc" "$log"
		tail -n 30 "$log" | sed 's/^/    | /'
	fi
}

for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	run_one "$(basename "$t")" 600 "$t"
done
for s in tests/proc/*.sh; do
	[ -f "$s" ] || continue
	run_one "$(basename "$s" .sh)" 600 bash "$s" "$BUILD"
done
if [ -f tests/e2e/run.mjs ]; then
	run_one e2e-selftest 300 node tests/e2e/run.mjs --selftest
	run_one e2e 900 node tests/e2e/run.mjs "$BUILD"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
