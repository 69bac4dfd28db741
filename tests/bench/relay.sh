# tests/bench/relay.sh - shared setup of the target benchmark scripts t4..t8 (sourced, never run).
#
# After `source tests/bench/relay.sh BUILD`:
#   $T               a fresh temp dir (removed at exit unless BENCH_KEEP=1)
#   bg CMD...        starts CMD in the background, remembered for the cleanup; sets $BG_PID
#   relay_start [VAR=value ...]   starts build/baton on 127.0.0.1 with its data in $T/data and waits
#                    for /xrpc/_health; sets $SUP_PID, $API_PORT, $API (http://127.0.0.1:PORT)
#                    and $WS (the subscribeRepos URL); returns 1 (log tail printed) if it did not come up
#   relay_stop       SIGTERM to the supervisor, waits for every stage to exit
#   stage_pids [NAME]  pids of the stages (children of the supervisor), optionally one role (baton-store ...)
#   pds_start ARGS   starts tools/fakepds on a free port with ARGS; sets $PDS_PORT, $PDS_PID
#   crawl HOST       requestCrawl of HOST on the relay
#   cpu_s PID, rss_kb PID, kv FILE KEY, js JSON KEY, free_port, skip MSG
# The cleanup (EXIT trap) stops every process started here (by pid) and removes $T.
# shellcheck disable=SC2034
BUILD=${1:-build}
TOOLS="$BUILD/tools"
T=$(mktemp -d /tmp/baton-bench-t.XXXXXX)
BENCH_PIDS=()
SUP_PID=
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_cleanup() {
	local p
	[ -n "$SUP_PID" ] && relay_stop
	for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${BENCH_PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: logs kept in $T"; else rm -rf "$T"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

skip() { echo "bench: $*"; echo "bench: skipped"; exit 0; }
bg() { "$@" & BG_PID=$!; BENCH_PIDS+=("$BG_PID"); }
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 30000))
}
kv() { tail -n 1 "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
js() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }
CLK_TCK=$(getconf CLK_TCK)
cpu_s() { awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }

for b in "$BUILD/baton" "$TOOLS/fakepds"; do
	[ -x "$b" ] || skip "$b is missing (make all)"
done

relay_start() {
	API_PORT=$(free_port)
	mkdir -p "$T/data" "$T/shm"
	env RELAY_DATA_DIR="$T/data" RELAY_SHM_DIR="$T/shm" RELAY_NAME="bt$$" RELAY_API_BIND="127.0.0.1:$API_PORT" RELAY_METRICS_LISTEN= \
		RELAY_PLC_HOST="http://127.0.0.1:${PDS_PORT:-1}" RELAY_ALLOW_INSECURE_HOSTS=true RELAY_LOG_LEVEL=warn \
		RELAY_DEFAULT_ACCOUNT_LIMIT=1000000000 "$@" "$BUILD/baton" >>"$T/baton.log" 2>&1 &
	SUP_PID=$!
	API="http://127.0.0.1:$API_PORT"
	WS="ws://127.0.0.1:$API_PORT/xrpc/com.atproto.sync.subscribeRepos"
	for _ in $(seq 200); do
		curl -sf -o /dev/null "$API/xrpc/_health" 2>/dev/null && return 0
		kill -0 "$SUP_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench: the relay did not come up on 127.0.0.1:$API_PORT; last log lines:"
	tail -n 15 "$T/baton.log" | sed 's/^/    | /'
	return 1
}

relay_stop() {
	local p=$SUP_PID kids
	[ -n "$p" ] || return 0
	kids=$(stage_pids)
	kill "$p" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	for k in $kids; do
		for _ in $(seq 50); do kill -0 "$k" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$k" 2>/dev/null
	done
	SUP_PID=
}

stage_pids() {
	local p
	for p in $(ps -o pid= --ppid "$SUP_PID" 2>/dev/null); do
		if [ -z "${1:-}" ] || [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ]; then echo "$p"; fi
	done
}

pds_start() {
	PDS_PORT=$(free_port)
	bg "$TOOLS/fakepds" --port "$PDS_PORT" "$@" >"$T/fakepds.log" 2>&1
	PDS_PID=$BG_PID
	for _ in $(seq 600); do
		curl -sf -o /dev/null "http://127.0.0.1:$PDS_PORT/_stats" 2>/dev/null && return 0
		kill -0 "$PDS_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench: fakepds did not come up"; tail -n 5 "$T/fakepds.log"
	return 1
}

crawl() {
	curl -s -m 20 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
		-d "{\"hostname\":\"$1\"}" "$API/xrpc/com.atproto.sync.requestCrawl"
}

# fill_pipeline N ACCOUNTS: N really signed events from fakepds (a backlog) through the whole
# pipeline into the relay's RocksDB; returns when a cursor-0 consumer has seen N commits.
fill_pipeline() {
	local n=$1 accts=${2:-200}
	pds_start --accounts "$accts" --backlog "$n" --log-max "$((n + 16))" --rate 0 --seconds 0 --key mixed || return 1
	relay_start || return 1
	[ "$(crawl "localhost:$PDS_PORT")" = 200 ] || { echo "bench: requestCrawl failed"; return 1; }
	"$TOOLS/manyconsumers" --url "$WS?cursor=0" --n 1 --count "$n" --idle 20 --seconds "${FILL_TIMEOUT:-600}" \
		>"$T/fill.out" 2>"$T/fill.err"
	FILLED=$(kv "$T/fill.out" commits)
	FILL_MEAN_FRAME=$(kv "$T/fill.out" mean_frame_bytes)
}
