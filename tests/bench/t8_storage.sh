#!/usr/bin/env bash
# tests/bench/t8_storage.sh BUILD_DIR - target 8: RocksDB bytes per stored event after compaction
# (docs/bench-targets.md).  Never fails: it only prints.
# Knobs: T8_EVENTS (20000) really signed events from fakepds through the whole pipeline,
#        T8_ACCOUNTS (200).
# The relay is stopped, the DB is compacted (tools/benchdb compact: CompactRange with the store's
# options), and the SST bytes / stored events are compared with the mean frame size of the
# same events (the frame as sent on the wire, which is what a stored event must hold).
set -u
cd "$(dirname "$0")/../.."
source tests/bench/relay.sh "${1:-build}"
N=${T8_EVENTS:-20000}
A=${T8_ACCOUNTS:-200}
[ -x "$TOOLS/benchdb" ] && [ -x "$TOOLS/manyconsumers" ] || skip "tools/benchdb or manyconsumers missing (make all)"
echo "== t8 storage: events=$N accounts=$A (through fakepds -> the whole pipeline)"
t0=$(now)
fill_pipeline "$N" "$A" || skip "fill failed"
echo "filled: ${FILLED:-0} events in $(calc "$(now) - $t0") s (consumer: $(tail -n 1 "$T/fill.out"))"
relay_stop
DB="$T/data/db"
du_before=$(du -sb "$DB" | cut -f1)
"$TOOLS/benchdb" stats "$DB" >"$T/stats0.out" 2>&1
"$TOOLS/benchdb" compact "$DB" >"$T/stats1.out" 2>&1 || { cat "$T/stats1.out"; skip "compaction failed"; }
du_after=$(du -sb "$DB" | cut -f1)
echo "before compaction: $(cat "$T/stats0.out") dir_bytes=$du_before"
echo "after compaction:  $(cat "$T/stats1.out") dir_bytes=$du_after"
EV=$(kv "$T/stats1.out" events)
MEAN=$(kv "$T/stats1.out" mean_frame)
SSTPER=$(kv "$T/stats1.out" sst_per_event)
DIRPER=$(awk -v b="$du_after" -v e="$EV" 'BEGIN { if (e > 0) printf "%.1f", b / e }')
VALPER=$(awk -v b="$(kv "$T/stats1.out" value_bytes)" -v e="$EV" 'BEGIN { if (e > 0) printf "%.1f", b / e }')
bench_row 8 "SST bytes per stored event (compacted)" "$SSTPER" B "mean frame bytes" "$MEAN" "<=1.2"
bench_row 8i "DB dir bytes per event (SST+WAL+meta)" "$DIRPER" B "mean frame bytes" "$MEAN" -
bench_row 8i "stored value bytes per event (uncompr.)" "$VALPER" B "mean frame bytes" "$MEAN" -
echo "bench: t8 done"
exit 0
