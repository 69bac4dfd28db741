#!/usr/bin/env bash
# baton end-to-end benchmark (docs/bench.md).  Never fails the build: it only prints.
#   tests/bench.sh [BUILD_DIR]
# Environment: BENCH_RATE (events/s, 1000), BENCH_SECONDS (20), BENCH_ACCOUNTS (500),
#   BENCH_KEY (mixed | k256 | p256), BENCH_KEEP=1 keeps the temp dir.
# Runs, on 127.0.0.1 only: verifybench (the raw crypto bound), fakepds (PDS + PLC), the relay
# (build/baton and its stages), one consumer on the relay and one directly on fakepds (the
# latency floor).  Every result is printed next to the bound it is compared with, as a ratio
# measured in this same run.
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build}
RATE=${BENCH_RATE:-1000}
SECS=${BENCH_SECONDS:-20}
ACCTS=${BENCH_ACCOUNTS:-500}
KEY=${BENCH_KEY:-mixed}
T=$(mktemp -d /tmp/baton-bench.XXXXXX)
TOOLS="$BUILD/tools"
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: logs kept in $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 30000))
}
kv() { # kv FILE KEY -> value of KEY=value in the last line of FILE
	tail -n 1 "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}
js() { # js JSON KEY -> number/bool value (flat JSON only)
	sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
line() { printf '  %-34s %14s   %-34s %14s   ratio %s\n' "$1" "$2" "$3" "$4" "$(ratio "$2" "$4")"; }
ticks=$(getconf CLK_TCK)
cpu_s() { awk -v t="$ticks" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
anon_kb() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

for b in "$BUILD/baton" "$TOOLS/fakepds" "$TOOLS/countconsumer" "$TOOLS/verifybench"; do
	if [ ! -x "$b" ]; then echo "bench: $b is missing (make all)"; echo "bench: skipped"; exit 0; fi
done

echo "== baton bench: rate=$RATE/s seconds=$SECS accounts=$ACCTS key=$KEY cores=$(nproc) ($T)"

# 1. The raw crypto bound, measured now on this machine.
"$TOOLS/verifybench" --n 4000 --key "$KEY" >"$T/verifybench.out" 2>&1
VERIFY_US=$(kv "$T/verifybench.out" verify_us)
echo "verifybench: $(tail -n 1 "$T/verifybench.out")"

# 2. fakepds (also the PLC directory); its clock starts when the relay subscribes.
PDS_PORT=$(free_port)
API_PORT=$(free_port)
while [ "$API_PORT" = "$PDS_PORT" ]; do API_PORT=$(free_port); done
"$TOOLS/fakepds" --port "$PDS_PORT" --accounts "$ACCTS" --rate "$RATE" --seconds "$SECS" --key "$KEY" \
	--start-on-subscribe >"$T/fakepds.log" 2>&1 &
PDS_PID=$!
PIDS+=("$PDS_PID")

# 3. The relay.
mkdir -p "$T/data" "$T/shm"
RELAY_DATA_DIR="$T/data" RELAY_SHM_DIR="$T/shm" RELAY_NAME="bench$$" RELAY_API_BIND="127.0.0.1:$API_PORT" \
	RELAY_PLC_HOST="http://127.0.0.1:$PDS_PORT" RELAY_ALLOW_INSECURE_HOSTS=true RELAY_LOG_LEVEL=warn \
	"$BUILD/baton" >"$T/baton.log" 2>&1 &
SUP_PID=$!
PIDS+=("$SUP_PID")
up=0
for _ in $(seq 150); do
	if curl -sf -o /dev/null "http://127.0.0.1:$API_PORT/xrpc/_health" 2>/dev/null ||
		curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/" 2>/dev/null | grep -q 200; then
		up=1; break
	fi
	kill -0 "$SUP_PID" 2>/dev/null || break
	sleep 0.1
done
if [ "$up" != 1 ]; then
	echo "bench: the relay did not come up on 127.0.0.1:$API_PORT; last log lines:"
	tail -n 15 "$T/baton.log" | sed 's/^/    | /'
	echo "bench: skipped"
	exit 0
fi
STAGES=$(ps -o pid= --ppid "$SUP_PID" | tr -s ' \n' ' ')
declare -A NAME RSS0 CPU0
for p in $SUP_PID $STAGES; do
	NAME[$p]=$(cat "/proc/$p/comm" 2>/dev/null || echo "?")
	RSS0[$p]=$(rss_kb "$p")
	CPU0[$p]=$(cpu_s "$p")
done

# Idle CPU of each stage over 2 s, subtracted below so per-event figures count work, not polling.
sleep 2
declare -A IDLE
for p in $SUP_PID $STAGES; do
	IDLE[$p]=$(awk -v x="${CPU0[$p]}" -v y="$(cpu_s "$p")" 'BEGIN { print (y - x) / 2 }')
	CPU0[$p]=$(cpu_s "$p")
done
T0=$(date +%s.%N)

# 4. Consumers: one on the relay, one straight on fakepds (the latency floor).
WAIT=$((SECS + 40))
"$TOOLS/countconsumer" --url "ws://127.0.0.1:$API_PORT/xrpc/com.atproto.sync.subscribeRepos" \
	--seconds "$WAIT" --idle 6 >"$T/relay_consumer.out" 2>"$T/relay_consumer.err" &
RC_PID=$!
PIDS+=("$RC_PID")
sleep 0.5

# 5. requestCrawl: the relay probes fakepds and subscribes; fakepds starts its clock.
CRAWL=$(curl -s -m 20 -w ' HTTP %{http_code}' -H 'Content-Type: application/json' \
	-d "{\"hostname\":\"localhost:$PDS_PORT\"}" "http://127.0.0.1:$API_PORT/xrpc/com.atproto.sync.requestCrawl")
echo "requestCrawl: $CRAWL"
for _ in $(seq 100); do
	st=$(curl -s "http://127.0.0.1:$PDS_PORT/_stats")
	[ "$(js "$st" started)" = true ] && break
	sleep 0.1
done
"$TOOLS/countconsumer" --url "ws://127.0.0.1:$PDS_PORT/xrpc/com.atproto.sync.subscribeRepos" \
	--seconds "$((SECS + 2))" --idle 3 >"$T/direct_consumer.out" 2>"$T/direct_consumer.err" &
DC_PID=$!
PIDS+=("$DC_PID")

# 6. Wait for the emission to end, sample RSS at the peak, then for the relay consumer to go idle.
declare -A RSS1 CPU1 ANONM ANON1
mid=0
for _ in $(seq $((SECS * 10 + 300))); do
	st=$(curl -s "http://127.0.0.1:$PDS_PORT/_stats")
	[ "$(js "$st" done)" = true ] && break
	if [ $mid = 0 ] && awk -v e="$(js "$st" elapsed_s)" -v s="$SECS" 'BEGIN { exit !(e >= s / 2) }'; then
		mid=1
		for p in $SUP_PID $STAGES; do ANONM[$p]=$(anon_kb "$p"); done
	fi
	sleep 0.1
done
for p in $SUP_PID $STAGES; do RSS1[$p]=$(rss_kb "$p"); ANON1[$p]=$(anon_kb "$p"); done
wait "$RC_PID" "$DC_PID" 2>/dev/null
for p in $SUP_PID $STAGES; do CPU1[$p]=$(cpu_s "$p"); done
DUR=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
PDS_CPU=$(js "$st" cpu_s)
EMITTED=$(js "$st" emitted)
EL=$(js "$st" elapsed_s)
EMIT_RATE=$(awk -v e="$EMITTED" -v s="$EL" 'BEGIN { printf "%.1f", (s > 0 ? e / s : 0) }')
GOT=$(kv "$T/relay_consumer.out" commits)
RRATE=$(kv "$T/relay_consumer.out" rate_per_s)
DRATE=$(kv "$T/direct_consumer.out" rate_per_s)

echo "fakepds: emitted=$EMITTED in ${EL}s ($EMIT_RATE/s), gen CPU $(js "$st" gen_cpu_us_per_event) us/event"
echo "relay consumer:  $(tail -n 1 "$T/relay_consumer.out" 2>/dev/null)"
echo "direct consumer: $(tail -n 1 "$T/direct_consumer.out" 2>/dev/null)"
echo
echo "== results (measured / bound from this run)"
line "delivered events" "${GOT:-0}" "fakepds emitted" "${EMITTED:-0}"
line "relay throughput ev/s" "${RRATE:-0}" "fakepds emit rate ev/s" "$EMIT_RATE"
line "direct throughput ev/s" "${DRATE:-0}" "fakepds emit rate ev/s" "$EMIT_RATE"
line "latency p50 ms (relay)" "$(kv "$T/relay_consumer.out" lat_p50_ms)" "p50 ms (direct)" "$(kv "$T/direct_consumer.out" lat_p50_ms)"
line "latency p99 ms (relay)" "$(kv "$T/relay_consumer.out" lat_p99_ms)" "p99 ms (direct)" "$(kv "$T/direct_consumer.out" lat_p99_ms)"
line "seq order errors" "$(kv "$T/relay_consumer.out" seq_order_errors)" "(must be 0)" "0"
EV=${GOT:-0}
[ "$EV" -gt 0 ] 2>/dev/null || EV=${EMITTED:-1}
TOTAL_US=0
for role in baton-ingest baton-verify baton-store baton-fanout baton; do
	c=0
	for p in $SUP_PID $STAGES; do
		[ "${NAME[$p]}" = "$role" ] || continue
		c=$(awk -v a="$c" -v x="${CPU0[$p]}" -v y="${CPU1[$p]}" -v i="${IDLE[$p]}" -v d="$DUR" \
			'BEGIN { w = y - x - i * d; print a + (w > 0 ? w : 0) }')
	done
	us=$(awk -v c="$c" -v e="$EV" 'BEGIN { printf "%.1f", c * 1e6 / e }')
	TOTAL_US=$(awk -v a="$TOTAL_US" -v b="$us" 'BEGIN { print a + b }')
	line "$role CPU us/event (busy)" "$us" "raw bt_pubkey_verify us" "$VERIFY_US"
done
line "relay total CPU us/event" "$TOTAL_US" "raw bt_pubkey_verify us" "$VERIFY_US"
line "relay total CPU us/event" "$TOTAL_US" "fakepds CPU us/event" \
	"$(awk -v c="${PDS_CPU:-0}" -v e="${EMITTED:-1}" 'BEGIN { printf "%.1f", (e > 0 ? c * 1e6 / e : 0) }')"
echo
echo "== memory KiB (VmRSS includes touched shared-memory ring pages; RssAnon end/mid ~1.0 = flat, lesson 11)"
for p in $SUP_PID $STAGES; do
	echo "  ${NAME[$p]}[$p]: cpu ${CPU0[$p]}s -> ${CPU1[$p]}s, idle $(printf %.3f "${IDLE[$p]}") cpu-s/s" >>"$T/cpu.txt"
	line "${NAME[$p]}[$p] VmRSS end" "${RSS1[$p]:-0}" "VmRSS before crawl" "${RSS0[$p]:-0}"
	line "${NAME[$p]}[$p] RssAnon end" "${ANON1[$p]:-0}" "RssAnon at mid-run" "${ANONM[$p]:-0}"
done
for f in relay_consumer direct_consumer; do
	[ -s "$T/$f.err" ] && { echo "$f stderr:"; head -n 5 "$T/$f.err" | sed 's/^/    | /'; }
done
if grep -qiE 'error|fatal|assert' "$T/baton.log"; then
	echo "relay log (errors):"; grep -iE 'error|fatal|assert' "$T/baton.log" | head -n 10 | sed 's/^/    | /'
fi
echo "bench: done"
exit 0
