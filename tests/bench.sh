#!/usr/bin/env bash
# baton benchmark (docs/bench.md): the issue-6 targets 1, 2, 3 and 9, then every tests/bench/t[4-8]*.sh.
#   tests/bench.sh [BUILD_DIR]
# Never fails the build: it prints rows (tests/bench/lib.sh: every bound is a ratio to a reference
# measured in this same run, ok/MISS) and writes them with the machine to bench/results/<UTC>.json.
# Knobs (defaults): BENCH_RATE=2000 (ev/s, paced phases), BENCH_SECONDS=20 (paced run),
#   BENCH_HOSTS=1000, BENCH_ACCOUNTS=2000, BENCH_KEY=mixed, BENCH_RECORDS=4000 (records per repo),
#   BENCH_VERIFY_PROCS=2 (K), BENCH_PEAK_EVENTS=20000, BENCH_SOAK_SECONDS=60 (0 = skip; 1800 = the
#   real soak), BENCH_PHASES="check paced nosync peak soak extra", BENCH_PERF=1 (perf record -g of every
#   stage during the paced run, reports in the kept dir), BENCH_KEEP=1 (keep the temp dir).
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build}
RATE=${BENCH_RATE:-2000}
SECS=${BENCH_SECONDS:-20}
HOSTS=${BENCH_HOSTS:-1000}
ACCTS=${BENCH_ACCOUNTS:-2000}
KEY=${BENCH_KEY:-mixed}
RECORDS=${BENCH_RECORDS:-4000}
KPROCS=${BENCH_VERIFY_PROCS:-2}
PEAK_EV=${BENCH_PEAK_EVENTS:-20000}
SOAK=${BENCH_SOAK_SECONDS:-60}
PHASES=${BENCH_PHASES:-check paced nosync peak soak extra}
T=$(mktemp -d /tmp/baton-bench.XXXXXX)
# The rings live where production puts them, on tmpfs: a ring file on a disk file system pays page
# faults, read-ahead and writeback on every new page (perf showed 24% of ingest in ext4 faults).
SHM_BASE=$(mktemp -d /dev/shm/baton-bench.XXXXXX 2>/dev/null || echo "$T")
TOOLS="$BUILD/tools"
. tests/bench/lib.sh
export BENCH_JSONL="$T/rows.jsonl"
: >"$BENCH_JSONL"
PIDS=()

stop_pids() { # stop_pids PID... : TERM, wait up to 5 s, then KILL (only the processes this script started)
	for p in "$@"; do kill "$p" 2>/dev/null; done
	for p in "$@"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
	done
}
cleanup() {
	stop_pids "${PIDS[@]}"
	wait 2>/dev/null
	[ "$SHM_BASE" != "$T" ] && rm -rf "$SHM_BASE"
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "${BENCH_PERF:-0}" = 1 ]; then echo "bench: logs kept in $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kv() { # kv FILE KEY -> value of KEY=value in the last line of FILE
	tail -n 1 "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
ticks=$(getconf CLK_TCK)
cpu_s() { awk -v t="$ticks" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
anon_kb() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_log() { # wait_log FILE PATTERN SECONDS PID -> 0 when PATTERN is in FILE (polled every 0.2 s)
	local n=$(($3 * 5))
	for _ in $(seq "$n"); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		kill -0 "$4" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}
pick_port() { echo $((10000 + (RANDOM * 7 + $$) % 20000)); }

for b in "$BUILD/baton" "$TOOLS/fakepds" "$TOOLS/countconsumer" "$TOOLS/verifybench"; do
	if [ ! -x "$b" ]; then echo "bench: $b is missing (make all)"; echo "bench: skipped"; exit 0; fi
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null

echo "== baton bench: rate=$RATE/s seconds=$SECS hosts=$HOSTS accounts=$ACCTS key=$KEY K=$KPROCS records=$RECORDS cores=$(nproc) ($T)"

# The reference: one bare signature verify with the same key mix, on this machine, now.
"$TOOLS/verifybench" --n 8000 --key "$KEY" >"$T/verifybench.out" 2>&1
VERIFY_US=$(kv "$T/verifybench.out" verify_us)
echo "verifybench: $(tail -n 1 "$T/verifybench.out")"
VERIFY_RATE=$(calc "1e6 / ${VERIFY_US:-1e9}" 1)

# start_pds NAME ARGS... : fakepds on PDS_PORT..PDS_PORT+HOSTS-1 (another base port if one is taken)
start_pds() {
	local name=$1
	shift
	for _ in 1 2 3 4 5; do
		PDS_PORT=$(pick_port)
		"$TOOLS/fakepds" --port "$PDS_PORT" --hosts "$HOSTS" --accounts "$ACCTS" --key "$KEY" --records "$RECORDS" \
			--start-on-signal "$@" >"$T/$name.fakepds.log" 2>&1 &
		PDS_PID=$!
		PIDS+=("$PDS_PID")
		wait_log "$T/$name.fakepds.log" "fakepds: listening" 300 "$PDS_PID" && return 0
		grep -q "cannot listen" "$T/$name.fakepds.log" || break
	done
	echo "bench: fakepds did not start:"; tail -n 5 "$T/$name.fakepds.log" | sed 's/^/    | /'
	return 1
}

# start_relay NAME : the relay, fresh data and shm dirs, told of every fakepds host with requestCrawl
start_relay() {
	local name=$1 i
	API_PORT=$(pick_port)
	while [ "$API_PORT" -ge "$PDS_PORT" ] && [ "$API_PORT" -lt $((PDS_PORT + HOSTS)) ]; do API_PORT=$(pick_port); done
	mkdir -p "$T/$name.data" "$SHM_BASE/$name.shm"
	RELAY_DATA_DIR="$T/$name.data" RELAY_SHM_DIR="$SHM_BASE/$name.shm" RELAY_NAME="bench$$$name" \
		RELAY_API_BIND="127.0.0.1:$API_PORT" RELAY_METRICS_LISTEN= RELAY_PLC_HOST="http://127.0.0.1:$PDS_PORT" \
		RELAY_ALLOW_INSECURE_HOSTS=true RELAY_LOG_LEVEL=warn RELAY_VERIFY_PROCS="$KPROCS" \
		RELAY_NEW_HOSTS_PER_DAY_LIMIT=1000000 RELAY_DEFAULT_ACCOUNT_LIMIT=1000000000 env ${RELAY_EXTRA_ENV:-} \
		"$BUILD/baton" >"$T/$name.baton.log" 2>&1 &
	SUP_PID=$!
	PIDS+=("$SUP_PID")
	local up=0
	for _ in $(seq 300); do
		curl -s -o /dev/null -m 2 "http://127.0.0.1:$API_PORT/xrpc/_health" 2>/dev/null && { up=1; break; }
		kill -0 "$SUP_PID" 2>/dev/null || break
		sleep 0.2
	done
	if [ "$up" != 1 ]; then
		echo "bench: $name: the relay did not come up on 127.0.0.1:$API_PORT; last log lines:"
		tail -n 10 "$T/$name.baton.log" | sed 's/^/    | /'
		return 1
	fi
	# one curl process for every requestCrawl (a config file with one request per host)
	: >"$T/$name.crawl.cfg"
	for ((i = 0; i < HOSTS; i++)); do
		printf 'url = "http://127.0.0.1:%s/xrpc/com.atproto.sync.requestCrawl"\nheader = "Content-Type: application/json"\ndata = "{\\"hostname\\":\\"localhost:%s\\"}"\nwrite-out = "%%{http_code}\\n"\noutput = /dev/null\nnext\n' \
			"$API_PORT" $((PDS_PORT + i)) >>"$T/$name.crawl.cfg"
	done
	curl -s -m 300 -K "$T/$name.crawl.cfg" >"$T/$name.crawl.out" 2>&1
	local ok
	ok=$(grep -c '^200$' "$T/$name.crawl.out")
	[ "$ok" = "$HOSTS" ] || echo "bench: $name: requestCrawl accepted $ok of $HOSTS hosts ($(sort "$T/$name.crawl.out" | uniq -c | tr '\n' ' '))"
	if ! wait_log "$T/$name.fakepds.log" "all $HOSTS hosts subscribed" 120 "$SUP_PID"; then
		echo "bench: $name: not every host was subscribed within 120 s; relay log:"
		tail -n 10 "$T/$name.baton.log" | sed 's/^/    | /'
		return 1
	fi
	STAGES=$(ps -o pid= --ppid "$SUP_PID" | tr -s ' \n' ' ')
	declare -gA NAME
	for p in $SUP_PID $STAGES; do NAME[$p]=$(cat "/proc/$p/comm" 2>/dev/null || echo "?"); done
}

# stop_phase : stop this phase's processes and forget them
stop_phase() {
	stop_pids "${PIDS[@]}"
	wait 2>/dev/null
	PIDS=()
}

# report_loss NAME EXPECTED GOT : the relay's drop counters when something was lost
report_loss() {
	[ "${3:-0}" -ge "$2" ] 2>/dev/null && return
	echo "bench: $1: LOSS: delivered ${3:-0} of $2; relay drop counters and logs:"
	RELAY_SHM_DIR="$SHM_BASE/$1.shm" RELAY_NAME="bench$$$1" "$BUILD/batonctl" status --json 2>&1 |
		grep -oE '"(drop|drops|bad|lost|skipped|gap)[a-z_]*"[^,}]*' | sort | uniq -c | sed 's/^/    | /' | head -n 40
	curl -s -m 5 "http://127.0.0.1:$API_PORT/xrpc/_health" | head -c 2000 | sed 's/^/    | /'; echo
	grep -iE 'error|warn|drop' "$T/$1.baton.log" | head -n 10 | sed 's/^/    | /'
	echo "    | consumer: $(tail -n 1 "$T/$1.consumer.out" 2>/dev/null)"
}

# ---- phase: check -- fakepds frames are valid (countconsumer --verify, direct) ----
phase_check() {
	local n=3000 h=4 ok=0 bad=0 p
	PDS_PORT=$(pick_port)
	"$TOOLS/fakepds" --port "$PDS_PORT" --hosts $h --accounts 40 --key "$KEY" --records "$RECORDS" --rate 0 \
		--seconds 0 --backlog $n >"$T/check.fakepds.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	wait_log "$T/check.fakepds.log" "fakepds: started" 120 "$pid"
	for ((i = 0; i < h; i++)); do
		p=$((PDS_PORT + i))
		"$TOOLS/countconsumer" --url "ws://127.0.0.1:$p/xrpc/com.atproto.sync.subscribeRepos?cursor=0" --idle 2 \
			--seconds 60 --verify "http://127.0.0.1:$PDS_PORT" >"$T/check.$i.out" 2>"$T/check.$i.err"
		ok=$((ok + $(kv "$T/check.$i.out" verified | sed 's/^$/0/')))
		bad=$((bad + $(kv "$T/check.$i.out" verify_failed | sed 's/^$/0/') + $(kv "$T/check.$i.out" inversion_failed | sed 's/^$/0/') + $(kv "$T/check.$i.out" chain_breaks | sed 's/^$/0/')))
	done
	echo "check: $(grep 'generated' "$T/check.fakepds.log")"
	[ "$bad" = 0 ] || { echo "check: countconsumer --verify failures:"; cat "$T"/check.*.err | head -n 5 | sed 's/^/    | /'; }
	bench_row C1 "fakepds frames verified (countconsumer)" "$((ok - bad))" ev "fakepds events" "$n" ">=1"
	stop_phase
}

# run_load NAME CONSUMER_SECONDS : start the emission, wait for the relay consumer to get everything
# (or go idle), sample CPU at both ends; sets EXPECTED GOT DUR and CPU0/CPU1/IDLE per stage pid
run_load() {
	local name=$1 maxs=$2 mid_at=${3:-0}
	"$TOOLS/countconsumer" --url "ws://127.0.0.1:$API_PORT/xrpc/com.atproto.sync.subscribeRepos" \
		--count "$EXPECTED" --seconds "$maxs" --idle 15 >"$T/$name.consumer.out" 2>"$T/$name.consumer.err" &
	RC_PID=$!
	PIDS+=("$RC_PID")
	"$TOOLS/countconsumer" --url "ws://127.0.0.1:$PDS_PORT/xrpc/com.atproto.sync.subscribeRepos" \
		--seconds "$maxs" >"$T/$name.direct.out" 2>"$T/$name.direct.err" &
	DC_PID=$!
	PIDS+=("$DC_PID")
	sleep 1
	# idle CPU of each stage, all hosts connected, nothing flowing (subtracted below)
	declare -gA CPU0 CPU1 IDLE ANONM ANON1
	local p
	for p in $SUP_PID $STAGES; do CPU0[$p]=$(cpu_s "$p"); done
	sleep 2
	for p in $SUP_PID $STAGES; do
		IDLE[$p]=$(calc "($(cpu_s "$p") - ${CPU0[$p]}) / 2" 4)
		CPU0[$p]=$(cpu_s "$p")
	done
	local t0
	t0=$(date +%s.%N)
	kill -USR1 "$PDS_PID"
	PERF_PIDS=()
	if [ -n "${PERF_ON:-}" ]; then
		sleep 3
		for p in $STAGES; do
			perf record -g -o "$T/perf.${NAME[$p]}.$p.data" -p "$p" -- sleep 8 >/dev/null 2>&1 &
			PERF_PIDS+=($!)
		done
	fi
	if [ "$mid_at" != 0 ]; then # soak: RssAnon after warm-up, at 1/3 of the run
		sleep "$mid_at"
		for p in $SUP_PID $STAGES; do ANONM[$p]=$(anon_kb "$p"); done
	fi
	wait "$RC_PID" 2>/dev/null
	DUR=$(calc "$(date +%s.%N) - $t0" 3)
	for p in $SUP_PID $STAGES; do CPU1[$p]=$(cpu_s "$p"); ANON1[$p]=$(anon_kb "$p"); done
	sleep 0.5
	kill -TERM "$DC_PID" 2>/dev/null # the direct consumer (host 0 only) prints on SIGTERM
	wait "$DC_PID" "${PERF_PIDS[@]}" 2>/dev/null
	GOT=$(kv "$T/$name.consumer.out" commits)
	ORDER=$(kv "$T/$name.consumer.out" seq_order_errors)
	echo "$name: $(grep 'generated' "$T/$name.fakepds.log" | sed 's/^fakepds: //')"
	echo "$name: relay consumer:  $(tail -n 1 "$T/$name.consumer.out" 2>/dev/null)"
	echo "$name: direct consumer: $(tail -n 1 "$T/$name.direct.out" 2>/dev/null)"
	report_loss "$name" "$EXPECTED" "${GOT:-0}"
}

# stage_us ROLE -> busy CPU us per delivered event of every process named ROLE
stage_us() {
	local c=0 p
	for p in $SUP_PID $STAGES; do
		[ "${NAME[$p]}" = "$1" ] || continue
		c=$(awk -v a="$c" -v x="${CPU0[$p]}" -v y="${CPU1[$p]}" -v i="${IDLE[$p]}" -v d="$DUR" \
			'BEGIN { w = y - x - i * d; print a + (w > 0 ? w : 0) }')
	done
	calc "$c * 1e6 / (${GOT:-0} > 0 ? ${GOT:-0} : 1)" 1
}

# ---- phase: paced -- targets 1 (CPU per event) and 3 (latency) ----
phase_paced() {
	EXPECTED=$((RATE * SECS))
	start_pds paced --rate "$RATE" --seconds "$SECS" --no-check || return
	start_relay paced || { stop_phase; return; }
	PERF_ON=${BENCH_PERF:+1}
	run_load paced $((SECS + 60))
	PERF_ON=
	local total=0 r us
	for r in baton-verify baton-store baton-ingest baton-fanout baton; do
		us=$(stage_us "$r")
		eval "US_${r//-/_}=$us"
		total=$(calc "$total + $us" 1)
	done
	PACED_TOTAL=$total
	bench_row 1 "CPU us/event, whole relay" "$total" us "bare verify us ($KEY)" "$VERIFY_US" "<=2.5"
	bench_row 1v "CPU us/event, verify (K=$KPROCS)" "$US_baton_verify" us "bare verify us" "$VERIFY_US" "<=1.5"
	bench_row 1s "CPU us/event, store" "$US_baton_store" us "bare verify us" "$VERIFY_US" "<=0.4"
	bench_row 1i "CPU us/event, ingest" "$US_baton_ingest" us "bare verify us" "$VERIFY_US" "<=0.2"
	bench_row 1f "CPU us/event, fanout" "$US_baton_fanout" us "bare verify us" "$VERIFY_US" "<=0.15"
	bench_row 1p "CPU us/event, supervisor" "$US_baton" us "bare verify us" "$VERIFY_US" "-"
	bench_row 1d "delivered, paced $RATE/s x ${SECS}s" "${GOT:-0}" ev "fakepds emitted" "$EXPECTED" ">=1"
	bench_row 1o "seq order errors (must be 0)" "${ORDER:-1}" - "(info)" "1" "-"
	bench_row 3 "latency p50 emit->consumer" "$(kv "$T/paced.consumer.out" lat_p50_ms)" ms "bound" 2 "<=1"
	bench_row 3 "latency p99 emit->consumer" "$(kv "$T/paced.consumer.out" lat_p99_ms)" ms "bound" 10 "<=1"
	bench_row 3d "latency p50 direct to fakepds host 0" "$(kv "$T/paced.direct.out" lat_p50_ms)" ms "bound" 2 "-"
	bench_row 3d "latency p99 direct to fakepds host 0" "$(kv "$T/paced.direct.out" lat_p99_ms)" ms "bound" 10 "-"
	stop_phase
	if [ -n "${BENCH_PERF:-}" ]; then
		for f in "$T"/perf.*.data; do
			[ -s "$f" ] || continue
			perf report -i "$f" --no-children --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -n 10 >"${f%.data}.top10.txt"
			echo "== perf top 10 $(basename "${f%.data}")"; sed 's/^/    /' "${f%.data}.top10.txt"
		done
	fi
}

# ---- phase: nosync -- what durability costs: the paced load with RELAY_SYNC_WRITES=false ----
# (no fsync per group commit: a kill -9 still loses nothing, a power loss may lose the last
# writes).  Info rows next to the paced phase's figures of this same run.
phase_nosync() {
	local sync_store=${US_baton_store:-} sync_total=${PACED_TOTAL:-}
	EXPECTED=$((RATE * SECS))
	start_pds nosync --rate "$RATE" --seconds "$SECS" --no-check || return
	RELAY_EXTRA_ENV="RELAY_SYNC_WRITES=false" start_relay nosync || { stop_phase; return; }
	run_load nosync $((SECS + 60))
	local total=0 r us
	for r in baton-verify baton-store baton-ingest baton-fanout baton; do
		us=$(stage_us "$r")
		total=$(calc "$total + $us" 1)
		[ "$r" = baton-store ] && local st=$us
	done
	bench_row 1sn "CPU us/event, store, no fsync" "$st" us "store with fsync (1s)" "$sync_store" "-"
	bench_row 1n "CPU us/event, whole relay, no fsync" "$total" us "whole relay with fsync (1)" "$sync_total" "-"
	bench_row 1nd "delivered, nosync" "${GOT:-0}" ev "fakepds emitted" "$EXPECTED" ">=1"
	stop_phase
}

# ---- phase: peak -- target 2 (pre-generated frames as fast as the sockets take them) ----
phase_peak() {
	EXPECTED=$PEAK_EV
	start_pds peak --rate 0 --seconds 0 --backlog "$PEAK_EV" --no-check || return
	start_relay peak || { stop_phase; return; }
	run_load peak 300
	local rate
	rate=$(kv "$T/peak.consumer.out" rate_per_s)
	bench_row 2 "peak delivered ev/s (sustained)" "${rate:-0}" ev/s "1-core bare verify rate" "$VERIFY_RATE" ">=0.5"
	bench_row 2d "delivered, peak" "${GOT:-0}" ev "fakepds emitted" "$EXPECTED" ">=1"
	bench_row 2o "seq order errors (must be 0)" "${ORDER:-1}" - "(info)" "1" "-"
	stop_phase
}

# ---- phase: soak -- target 9 (RssAnon flat) ----
phase_soak() {
	[ "$SOAK" -gt 0 ] 2>/dev/null || return
	EXPECTED=$((RATE * SOAK))
	start_pds soak --rate "$RATE" --seconds "$SOAK" --live || return
	start_relay soak || { stop_phase; return; }
	run_load soak $((SOAK + 60)) $((SOAK / 3))
	bench_row 9d "delivered, soak $RATE/s x ${SOAK}s" "${GOT:-0}" ev "fakepds emitted" "$EXPECTED" ">=1"
	local p
	declare -A seen=()
	for p in $SUP_PID $STAGES; do
		seen[${NAME[$p]}]=$((${seen[${NAME[$p]}]:-0} + 1))
		bench_row 9 "RssAnon KiB ${NAME[$p]}#${seen[${NAME[$p]}]} end" "${ANON1[$p]:-}" KiB "at 1/3 of the run" "${ANONM[$p]:-}" "<=1.10"
	done
	stop_phase
}

phase_extra() {
	local s
	for s in tests/bench/t[4-8]*.sh; do
		[ -f "$s" ] || continue
		echo "== $s"
		bash "$s" "$BUILD" || echo "bench: $s exited $?"
	done
}

for ph in $PHASES; do
	echo "== phase $ph"
	"phase_$ph"
done

# The table again, and the JSON document with the machine.
echo
echo "== results"
if command -v jq >/dev/null; then
	jq -r '[.id, .name, (.value|tostring), .unit, .reference, (.ref_value|tostring), (.ratio|tostring), .target, .verdict] | @tsv' \
		"$BENCH_JSONL" | awk -F'\t' '{ printf "%-4s %-40s %12s %-6s | %-30s %12s  ratio %-7s target %-6s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
fi
mkdir -p bench/results
OUT="bench/results/$(date -u +%Y%m%dT%H%M%SZ).json"
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
{
	printf '{"date":"%s","commit":"%s","machine":{"nproc":%s,"cpu":"%s","kernel":"%s"},' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD 2>/dev/null)" "$(nproc)" \
		"${cpu_model//\"/}" "$(uname -r)"
	printf '"config":{"rate":%s,"seconds":%s,"hosts":%s,"accounts":%s,"key":"%s","verify_procs":%s,"records":%s,"peak_events":%s,"soak_seconds":%s},' \
		"$RATE" "$SECS" "$HOSTS" "$ACCTS" "$KEY" "$KPROCS" "$RECORDS" "$PEAK_EV" "$SOAK"
	printf '"rows":[%s]}\n' "$(paste -sd, "$BENCH_JSONL")"
} >"$OUT"
echo "bench: rows written to $OUT"
echo "bench: done"
exit 0
