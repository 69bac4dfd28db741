#!/usr/bin/env bash
# Short libFuzzer runs of every target in tests/fuzz/ (tests/run.sh: make test; make fuzz).
#   tests/fuzz/run.sh [BUILD_DIR]     FUZZ_SECONDS per target (default 3: make test stays near 90 s with the build)
# Builds the targets into BUILD_DIR/fuzz (make fuzz-bins), then for each target:
#   fuzz     FUZZ_SECONDS on a copy of tests/fuzz/corpus/<target>/ (new inputs stay in BUILD_DIR/fuzz);
#   regress  every file of tests/fuzz/regress/<target>/ replayed once.
# A crash, leak, sanitizer report or timeout fails the check; the input that did it is kept as
# BUILD_DIR/fuzz/crash-<target>-* (copy it into tests/fuzz/regress/<target>/ with the fix).
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
SECS=${FUZZ_SECONDS:-3}
D=$BUILD/fuzz
pass=0 fail=0
mkdir -p "$D"
ok() { echo "ok $1"; pass=$((pass + 1)); }
notok() { echo "not ok $1"; fail=$((fail + 1)); }

if ! make -s -j"${FUZZ_JOBS:-2}" BUILD="$BUILD" fuzz-bins >"$D.build.log" 2>&1; then
	tail -n 40 "$D.build.log"
	notok "build the fuzz targets (log $D.build.log)"
	echo "$pass passed, $fail failed"
	exit 1
fi
ok "build the fuzz targets"

for src in tests/fuzz/fuzz_*.c; do
	n=$(basename "$src" .c)
	bin=$D/$n
	rm -rf "$D/corpus-$n" && mkdir -p "$D/corpus-$n"
	cp tests/fuzz/corpus/"$n"/* "$D/corpus-$n/" 2>/dev/null
	rm -f "$D"/crash-"$n"-*
	log=$D/$n.log
	# -timeout: one input running over 10 s is a hang, reported like a crash
	"$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$D/crash-$n-" "$D/corpus-$n" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	if [ "$rc" -eq 0 ]; then
		ok "$n: ${SECS}s, ${runs:-?} runs, corpus $(ls "$D/corpus-$n" | wc -l) inputs"
	else
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -n 8
		notok "$n: exit $rc, input kept: $(ls "$D"/crash-"$n"-* 2>/dev/null | head -1) (log $log)"
	fi
	if [ -d "tests/fuzz/regress/$n" ] && ls tests/fuzz/regress/"$n"/* >/dev/null 2>&1; then
		if "$bin" -timeout=10 -rss_limit_mb=2048 tests/fuzz/regress/"$n"/* >"$D/$n.regress.log" 2>&1; then
			ok "$n: regress, $(ls tests/fuzz/regress/"$n" | wc -l) inputs"
		else
			grep -E 'ERROR|SUMMARY|runtime error|Running:' "$D/$n.regress.log" | tail -n 8
			notok "$n: regress (log $D/$n.regress.log)"
		fi
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
