#!/usr/bin/env bash
# tests/bench/t7_recovery.sh BUILD_DIR - target 7: after kill -9 of any stage, events flow again
# within 1 s, p99 over the kills (docs/bench-targets.md).  Never fails: it only prints.
# Knobs: T7_KILLS (20), T7_RATE (200 ev/s from fakepds), T7_GAP (2 s between one recovery and
#        the next kill), T7_TIMEOUT (15 s: a kill not recovered by then counts as that).
# The stages are killed in turn (ingest, verify, store, fanout; a random process of the role) while
# fakepds streams; one consumer (tools/manyconsumers --reconnect: if its fanout dies it reconnects
# with its last seq as cursor) logs every arrival.  Per kill:
#   flow   = kill -> delivery of the first event EMITTED after the kill (the row with the target:
#            an event that had to pass the restarted stage, or the whole pipeline, after the kill)
#   any    = kill -> the next event delivered at all (info: may be one already past the stage)
set -u
cd "$(dirname "$0")/../.."
source tests/bench/relay.sh "${1:-build}"
KILLS=${T7_KILLS:-20}
RATE=${T7_RATE:-200}
GAP=${T7_GAP:-2}
TMO=${T7_TIMEOUT:-15}
[ -x "$TOOLS/manyconsumers" ] || skip "tools/manyconsumers missing (make all)"
echo "== t7 recovery: kills=$KILLS rate=$RATE/s gap=${GAP}s timeout=${TMO}s"
pds_start --accounts 100 --rate "$RATE" --seconds 3600 --key mixed --start-on-subscribe || skip "fakepds failed"
relay_start || skip "relay failed"
NSTAGES=$(stage_pids | wc -l)
ARR="$T/arrivals"
bg "$TOOLS/manyconsumers" --url "$WS" --n 1 --reconnect --arrivals "$ARR" --seconds 3600 >"$T/cons.out" 2>"$T/cons.err"
CONS=$BG_PID
sleep 0.5
echo "requestCrawl: $(crawl "localhost:$PDS_PORT")"
for _ in $(seq 300); do [ -s "$ARR" ] && [ "$(wc -l <"$ARR")" -gt $((RATE * 2)) ] && break; sleep 0.1; done
[ -s "$ARR" ] || skip "no events reached the consumer"
ROLES=(baton-ingest baton-verify baton-store baton-fanout)
: >"$T/kills"
for i in $(seq 0 $((KILLS - 1))); do
	role=${ROLES[$((i % ${#ROLES[@]}))]}
	mapfile -t pids < <(stage_pids "$role")
	[ "${#pids[@]}" -gt 0 ] || { echo "kill $i: no $role running"; continue; }
	pid=${pids[$((RANDOM % ${#pids[@]}))]}
	tk=$(now)
	kill -9 "$pid"
	flow= any=
	deadline=$(calc "$tk + $TMO")
	while [ -z "$flow" ]; do
		read -r any flow < <(awk -v k="$tk" '$1 > k && a == "" { a = $1 - k } $1 > k && $4 > k { printf "%.4f %.4f\n", (a == "" ? $1 - k : a), $1 - k; f = 1; exit }
			END { if (!f) printf "%s -\n", (a == "" ? "-" : a) }' "$ARR")
		[ "$flow" = - ] && flow=
		[ -n "$flow" ] && break
		awk -v d="$deadline" -v n="$(now)" 'BEGIN { exit !(n > d) }' && { flow=$TMO; any=${any:-$TMO}; [ "$any" = - ] && any=$TMO; break; }
		sleep 0.02
	done
	echo "kill $i: $role pid $pid  flow ${flow}s  any ${any}s"
	echo "$role $flow $any" >>"$T/kills"
	# Let the supervisor bring every stage back before the next kill.
	for _ in $(seq 200); do [ "$(stage_pids | wc -l)" -ge "$NSTAGES" ] && break; sleep 0.05; done
	sleep "$GAP"
done
pct() { # pct COLUMN Q -> nearest-rank percentile of column over the kills
	awk -v c="$1" '{ print $c }' "$T/kills" | sort -g | awk -v q="$2" '{ v[NR] = $1 } END { if (NR) { i = int(q * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] } }'
}
sleep 1
kill -TERM "$CONS" 2>/dev/null; wait "$CONS" 2>/dev/null
echo "consumer: $(cat "$T/cons.out")"
[ -s "$T/cons.err" ] && head -n 5 "$T/cons.err" | sed 's/^/    | /'
for role in "${ROLES[@]}"; do
	awk -v r="$role" '$1 == r { n++; s += $2; if ($2 > m) m = $2 } END { if (n) printf "  %-14s kills %2d  flow mean %.3fs max %.3fs\n", r, n, s / n, m }' "$T/kills"
done
bench_row 7 "recovery p99 kill->first new event" "$(pct 2 0.99)" s "bound 1 s" 1 "<=1"
bench_row 7i "recovery p50 kill->first new event" "$(pct 2 0.50)" s "bound 1 s" 1 -
bench_row 7i "recovery p99 kill->next event (any)" "$(pct 3 0.99)" s "bound 1 s" 1 -
bench_row 7i "consumer seq gaps + order errors (0)" \
	"$(( $(kv "$T/cons.out" gaps || echo 0) + $(kv "$T/cons.out" seq_order_errors || echo 0) ))" "" \
	"events received" "$(kv "$T/cons.out" commits)" -
bench_row 7i "kills measured" "$(wc -l <"$T/kills")" "" "kills asked" "$KILLS" -
grep -c 'killed by signal 9' "$T/baton.log" | sed 's/^/supervisor saw kills: /'
echo "bench: t7 done"
exit 0
