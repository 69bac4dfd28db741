#!/usr/bin/env bash
# tests/bench/t4_fanout.sh BUILD_DIR - target 4: many consumers at a live rate (docs/bench-targets.md).
# Never fails: it only prints.
# Knobs: T4_CONSUMERS (100), T4_RATE (2000 ev/s), T4_SECONDS (20), T4_ACCOUNTS (500).
# fakepds streams really signed commits through the whole relay; tools/manyconsumers holds the
# consumer connections in one process (seq order per connection, latency from the frame's time).
# Rows: every consumer got every event; p99 emit->consumer latency vs 50 ms; the fanout
# processes' CPU per delivered frame (busy CPU, their idle rate measured before and subtracted)
# vs tools/writevbench: one writev per frame per socket of the same mean frame size to the same
# number of loopback TCP sockets with a reader draining them, measured in this run.
set -u
cd "$(dirname "$0")/../.."
source tests/bench/relay.sh "${1:-build}"
NC=${T4_CONSUMERS:-100}
RATE=${T4_RATE:-2000}
SECS=${T4_SECONDS:-20}
A=${T4_ACCOUNTS:-500}
for t in manyconsumers writevbench; do [ -x "$TOOLS/$t" ] || skip "tools/$t missing (make all)"; done
echo "== t4 fanout: consumers=$NC rate=$RATE/s seconds=$SECS accounts=$A cores=$(nproc)"
pds_start --accounts "$A" --rate "$RATE" --seconds "$SECS" --key mixed --start-on-subscribe || skip "fakepds failed"
relay_start || skip "relay failed"
FANS=$(stage_pids baton-fanout)
declare -A C0 C1
for p in $FANS; do C0[$p]=$(cpu_s "$p"); done
sleep 2
IDLE=0
for p in $FANS; do IDLE=$(calc "$IDLE + ($(cpu_s "$p") - ${C0[$p]}) / 2"); C0[$p]=$(cpu_s "$p"); done
t0=$(now)
bg "$TOOLS/manyconsumers" --url "$WS" --n "$NC" --idle "${T4_IDLE:-15}" --seconds "$((SECS + 120))" >"$T/cons.out" 2>"$T/cons.err"
CONS=$BG_PID
sleep 1.5
echo "requestCrawl: $(crawl "localhost:$PDS_PORT")"
st=
for _ in $(seq $((SECS * 10 + 600))); do
	st=$(curl -s "http://127.0.0.1:$PDS_PORT/_stats")
	[ "$(js "$st" done)" = true ] && break
	sleep 0.1
done
wait "$CONS"
for p in $FANS; do C1[$p]=$(cpu_s "$p"); done
dur=$(calc "$(now) - $t0")
EMITTED=$(js "$st" emitted)
echo "fakepds: emitted=$EMITTED in $(js "$st" elapsed_s)s"
echo "consumers: $(cat "$T/cons.out")"
[ -s "$T/cons.err" ] && head -n 5 "$T/cons.err" | sed 's/^/    | /'
grep -iE 'kick|slow|error|killed|exited|heartbeat' "$T/baton.log" | head -n 5 | sed 's/^/    relay| /'
FANCPU=0
for p in $FANS; do FANCPU=$(calc "$FANCPU + ${C1[$p]} - ${C0[$p]}"); done
BUSY=$(calc "$FANCPU - $IDLE * $dur"); BUSY=$(awk -v b="$BUSY" 'BEGIN { print (b > 0 ? b : 0) }')
FRAMES=$(kv "$T/cons.out" frames)
MEAN=$(kv "$T/cons.out" mean_frame_bytes)
PERF=$(awk -v c="$BUSY" -v f="$FRAMES" 'BEGIN { if (f > 0) printf "%.3f", c * 1e6 / f }')
SIZE=$(printf %.0f "${MEAN:-1200}")
"$TOOLS/writevbench" --conns "$NC" --frames "${T4_WRITEV_FRAMES:-2000}" --size "$SIZE" >"$T/writev.out" 2>&1
echo "writevbench: $(cat "$T/writev.out")"
echo "fanout CPU: ${FANCPU}s over ${dur}s, idle rate ${IDLE} cpu-s/s, busy ${BUSY}s; $(echo $FANS | wc -w) fanout processes"
bench_row 4 "fewest events received by a consumer" "$(kv "$T/cons.out" min_commits)" ev "fakepds emitted" "$EMITTED" ">=1"
bench_row 4 "latency p99 emit->consumer ($NC cons.)" "$(kv "$T/cons.out" lat_p99_ms)" ms "bound 50 ms" 50 "<=1"
bench_row 4 "fanout CPU us per delivered frame" "$PERF" us "writevbench us per frame" "$(kv "$T/writev.out" us_per_frame)" "<=1.5"
bench_row 4i "latency p50 emit->consumer" "$(kv "$T/cons.out" lat_p50_ms)" ms "bound 50 ms" 50 -
bench_row 4i "seq order errors + gaps (must be 0)" "$(( $(kv "$T/cons.out" seq_order_errors) + $(kv "$T/cons.out" gaps) ))" "" "frames delivered" "$FRAMES" -
bench_row 4i "consumer process CPU us per frame" \
	"$(awk -v c="$(kv "$T/cons.out" cpu_s)" -v f="$FRAMES" 'BEGIN { if (f > 0) printf "%.3f", c * 1e6 / f }')" us \
	"writevbench us per frame" "$(kv "$T/writev.out" us_per_frame)" -
bench_row 4i "fakepds achieved emit rate" "$(awk -v e="$EMITTED" -v s="$(js "$st" elapsed_s)" 'BEGIN { if (s > 0) printf "%.0f", e / s }')" ev/s \
	"asked rate" "$RATE" -
bench_row 4i "delivery rate, all consumers" "$(kv "$T/cons.out" rate_per_s)" ev/s "asked rate x consumers" "$((RATE * NC))" -
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (a backlog shows as latency)"
echo "bench: t4 done"
exit 0
