#!/usr/bin/env bash
# tests/bench/t6_replay.sh BUILD_DIR - target 6: a cursor-0 consumer over N stored events reads
# >= 100,000 events/s (docs/bench-targets.md).  Never fails: it only prints.
# Knobs: T6_EVENTS (1000000) events stored, T6_SOURCE (3000) of them really signed from fakepds
#        through the whole pipeline; the rest are SEEDED by tools/benchdb seed, which re-stores
#        those events under new seqs in exactly the store's on-disk format (e/ + m/seq).
#        T6_CONSUMERS (1) consumers replaying at once.
# Also prints, as info, the raw RocksDB scan rate of the same events (benchdb scan: bt_db_scan
# over e/, the read the fanout's replay does) measured in this run.
set -u
cd "$(dirname "$0")/../.."
source tests/bench/relay.sh "${1:-build}"
N=${T6_EVENTS:-1000000}
SRC=${T6_SOURCE:-3000}
NC=${T6_CONSUMERS:-1}
[ -x "$TOOLS/benchdb" ] && [ -x "$TOOLS/manyconsumers" ] || skip "tools/benchdb or manyconsumers missing (make all)"
[ "$SRC" -le "$N" ] || SRC=$N
echo "== t6 replay: events=$N (of which $SRC through the pipeline, $((N - SRC)) seeded by benchdb in the store's format), consumers=$NC"
fill_pipeline "$SRC" 200 || skip "fill failed"
echo "pipeline: ${FILLED:-0} events"
relay_stop
kill "$PDS_PID" 2>/dev/null
DB="$T/data/db"
"$TOOLS/benchdb" seed "$DB" "$N" >"$T/seed.out" 2>&1 || { cat "$T/seed.out"; skip "seeding failed"; }
echo "seed: $(cat "$T/seed.out")"
# Twice: the first pass also pays for reading the files into the page cache, as the replay
# after it does not (it runs right after); the second is the figure.
"$TOOLS/benchdb" scan "$DB" >"$T/scan0.out" 2>&1
"$TOOLS/benchdb" scan "$DB" >"$T/scan.out" 2>&1
echo "raw scan (1st, cold): $(cat "$T/scan0.out")"
echo "raw scan (2nd):       $(cat "$T/scan.out")"
STORED=$(kv "$T/scan.out" events)
SCAN=$(kv "$T/scan.out" scan_per_s)
relay_start || skip "relay did not restart"
FAN0=0
for p in $(stage_pids baton-fanout); do FAN0=$(calc "$FAN0 + $(cpu_s "$p")"); done
t0=$(now)
bg "$TOOLS/manyconsumers" --url "$WS?cursor=0" --n "$NC" --count "$STORED" --idle 10 --seconds "${T6_TIMEOUT:-300}" \
	>"$T/replay.out" 2>"$T/replay.err"
wait "$BG_PID"
wall=$(calc "$(now) - $t0")
FAN1=0
for p in $(stage_pids baton-fanout); do FAN1=$(calc "$FAN1 + $(cpu_s "$p")"); done
echo "replay consumer: $(cat "$T/replay.out") (wall ${wall}s)"
GOT=$(kv "$T/replay.out" commits)
RATE=$(kv "$T/replay.out" rate_per_s)
PER=$(awk -v r="$RATE" -v n="$NC" 'BEGIN { if (n > 0) printf "%.0f", r / n }')
bench_row 6 "replay events/s per consumer, cursor 0" "$PER" ev/s "bound 100,000 ev/s" 100000 ">=1"
bench_row 6i "events replayed (all consumers)" "$GOT" ev "stored events x consumers" "$((STORED * NC))" -
bench_row 6i "replay rate / raw RocksDB scan rate" "$PER" ev/s "benchdb scan ev/s" "$SCAN" -
bench_row 6i "fanout CPU us per replayed event" \
	"$(awk -v a="$FAN0" -v b="$FAN1" -v g="$GOT" 'BEGIN { if (g > 0) printf "%.2f", (b - a) * 1e6 / g }')" us \
	"raw scan CPU us per event" "$(awk -v c="$(kv "$T/scan.out" cpu_s)" -v e="$STORED" 'BEGIN { if (e > 0) printf "%.2f", c * 1e6 / e }')" -
# On a shared machine the wall-clock rate also measures the neighbours: the same in CPU terms.
bench_row 6i "replayed events per fanout CPU-second" \
	"$(awk -v a="$FAN0" -v b="$FAN1" -v g="$GOT" 'BEGIN { if (b > a) printf "%.0f", g / (b - a) }')" ev/s \
	"bound 100,000 ev/s" 100000 -
bench_row 6i "raw scan events per CPU-second" "$(kv "$T/scan.out" scan_per_cpu_s)" ev/s "bound 100,000 ev/s" 100000 -
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
echo "bench: t6 done"
exit 0
