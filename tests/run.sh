#!/usr/bin/env bash
# Runs every test of baton and ends with one line "N passed, N failed".
#   tests/run.sh [BUILD_DIR]      unit tests, multi-process tests, short fuzz runs, then the end-to-end scenarios;
#   with ASAN_BUILD=build-asan the same again on the sanitizer build; with TSAN_BUILD=build-tsan
#   the threaded unit tests and two scenarios under ThreadSanitizer.
# Each test binary or script prints its own "N passed, N failed" (a skip: "0 passed, 0 failed (SKIP:
# why)", shown as SKIPPED, counts nothing); a test that crashes or times out without that line
# counts as one failure.  Logs of failures stay in $BT_TEST_TMP.
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
	if [ "$f" -eq 0 ] && [[ $line == *"(SKIP"* ]]; then
		printf 'SKIPPED %-28s %s\n' "$name" "$line" # counts nothing: not a pass
	elif [ "$f" -eq 0 ]; then
		printf 'ok      %-28s %s\n' "$name" "$line"
	else
		printf 'FAILED  %-28s %s (exit %d, log %s)\n' "$name" "${line:-no summary}" "$rc" "$log"
		# every failed check with the lines that led to it, then the end
		grep -n -B 12 -A 4 -E '^(not ok|FAIL|# FAIL)' "$log" | head -n 150 | sed 's/^/    ! /'
		tail -n 30 "$log" | sed 's/^/    | /'
	fi
}

unit_and_proc() { # build-dir label
	local b=$1 l=$2
	for t in "$b"/tests/test_*; do
		[ -x "$t" ] || continue
		run_one "$l$(basename "$t")" 600 "$t"
	done
}

unit_and_proc "$BUILD" ""
for s in tests/proc/*.sh; do
	[ -f "$s" ] || continue
	# podman.sh builds a base image and the image on a fresh machine first (~4 min of its ~8)
	t=600; [ "$(basename "$s")" = podman.sh ] && t=900
	run_one "$(basename "$s" .sh)" "$t" bash "$s" "$BUILD"
done
# every libFuzzer target a few seconds, and its regression inputs (tests/fuzz/run.sh)
run_one fuzz 600 bash tests/fuzz/run.sh "$BUILD"
if [ -f tests/e2e/run.mjs ]; then
	run_one e2e-selftest 300 node tests/e2e/run.mjs --selftest
	run_one e2e 2400 node tests/e2e/run.mjs "$BUILD"
fi
# the official PDS (@atproto/pds) and consumer library against baton (make interop)
if [ -f tests/interop/run.mjs ]; then
	run_one interop 300 node tests/interop/run.mjs "$BUILD"
fi

# The sanitizer build (make asan): unit tests with LeakSanitizer, and the end-to-end scenarios with
# every stage under ASan+UBSan.  A stage that trips a sanitizer is restarted by the supervisor, so the
# scenarios could still pass: the reports it leaves behind are what fails the run.
if [ -n "${ASAN_BUILD:-}" ] && [ -d "$ASAN_BUILD" ]; then
	unit_and_proc "$ASAN_BUILD" "asan:"
	if [ -f tests/e2e/run.mjs ]; then
		mkdir -p "$BT_TEST_TMP/asan"
		ASAN_OPTIONS="log_path=$BT_TEST_TMP/asan/report:detect_leaks=0:abort_on_error=1" \
		UBSAN_OPTIONS="log_path=$BT_TEST_TMP/asan/report:print_stacktrace=1:halt_on_error=1" \
			run_one asan:e2e 2400 node tests/e2e/run.mjs "$ASAN_BUILD"
		if ls "$BT_TEST_TMP"/asan/report* >/dev/null 2>&1; then
			echo "FAILED  asan:e2e-reports: sanitizer reports from relay processes:"
			head -n 60 "$BT_TEST_TMP"/asan/report* | sed 's/^/    | /'
			fail=$((fail + 1))
		else
			printf 'ok      %-28s %s\n' "asan:e2e-reports" "no sanitizer report from any stage"
			pass=$((pass + 1))
		fi
	fi
fi
# The ThreadSanitizer build (make tsan): the unit tests that start threads, and the end-to-end
# scenarios that drive every thread of ours with every stage under TSan: basic and kill (verify's
# and ingest's libcurl, RocksDB's and ZeroMQ's threads), admin (the fanout's control workers and
# requestCrawl workers), collections (the store's recount fetch thread).  tests/tsan.supp names third-party libraries only.
# Left out: test_db_secondary forks after RocksDB started threads, which TSan cannot follow;
# test_ring_procs races processes, not threads (TSan sees no other process), and its kill timing
# assumes full speed (no poisoned self-kill was seen at TSan's speed).
if [ -n "${TSAN_BUILD:-}" ] && [ -d "$TSAN_BUILD" ]; then
	export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp:halt_on_error=0"
	for t in test_ring test_http test_ws test_fetch test_fanout_replay test_fanout_xrpc test_verify_proc; do
		[ -x "$TSAN_BUILD/tests/$t" ] && run_one "tsan:$t" 600 "$TSAN_BUILD/tests/$t"
	done
	if [ -f tests/e2e/run.mjs ]; then
		mkdir -p "$BT_TEST_TMP/tsan"
		for sc in basic kill admin collections; do
			TSAN_OPTIONS="$TSAN_OPTIONS:log_path=$BT_TEST_TMP/tsan/report" \
				run_one "tsan:e2e-$sc" 600 node tests/e2e/run.mjs --only "$sc" "$TSAN_BUILD"
		done
		if ls "$BT_TEST_TMP"/tsan/report* >/dev/null 2>&1; then
			echo "FAILED  tsan:e2e-reports: ThreadSanitizer reports from relay processes:"
			head -n 80 "$BT_TEST_TMP"/tsan/report* | sed 's/^/    | /'
			fail=$((fail + 1))
		else
			printf 'ok      %-28s %s\n' "tsan:e2e-reports" "no ThreadSanitizer report from any stage"
			pass=$((pass + 1))
		fi
	fi
	unset TSAN_OPTIONS
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
