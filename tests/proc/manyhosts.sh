#!/usr/bin/env bash
# NAME
#	manyhosts.sh - thousands of upstream hosts at start-up (lesson 9)
# DESCRIPTION
#	5,000 hosts are registered (batonctl import-hosts): 4,997 unreachable and, last in the
#	list, 3 real PDS simulators (tools/fakepds) producing events.  The relay is restarted so
#	ingest starts all of them at once.  Its connects are staggered and retried with backoff;
#	meanwhile /_health must answer 200 within a second to every poll, no stage may be
#	restarted, ingest must really be trying (thousands of failed connects), and the live hosts
#	must not be starved: each of the 3 is connected and has a committed cursor, and a consumer
#	of the relay receives their commits.
set -u
B=$(cd "${1:-build}" && pwd)
T=$(mktemp -d /tmp/baton-many.XXXXXX)
pass=0 fail=0
check() { if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi; }
port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT=$(port)
# The simulators: 3 hosts on FP..FP+2 (another base if one is taken); they also serve the DID documents.
for _ in 1 2 3 4 5; do
	FP=$(port)
	[ "$FP" -lt 60000 ] || continue
	"$B/tools/fakepds" --port "$FP" --hosts 3 --accounts 30 --rate 30 --seconds 60 --records 200 --start-on-subscribe >"$T/fakepds.log" 2>&1 &
	pds=$!
	for _ in $(seq 100); do grep -q "fakepds: listening" "$T/fakepds.log" && break; kill -0 $pds 2>/dev/null || break; sleep 0.1; done
	grep -q "fakepds: listening" "$T/fakepds.log" && break
	kill $pds 2>/dev/null; wait $pds 2>/dev/null
done
grep -q "fakepds: listening" "$T/fakepds.log"
check "3 PDS simulators up" $? "($(tail -n 2 "$T/fakepds.log"))"
export RELAY_DATA_DIR=$T/data RELAY_SHM_DIR=$T RELAY_NAME=many$$ RELAY_API_BIND=127.0.0.1:$PORT RELAY_METRICS_LISTEN= \
	RELAY_PLC_HOST=http://127.0.0.1:$FP RELAY_ALLOW_INSECURE_HOSTS=true RELAY_VERIFY_PROCS=2 RELAY_FANOUT_PROCS=2 \
	RELAY_RING_MB=32 RELAY_BCAST_RING_MB=32
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/_health")" = 200 ]; }
wait_healthy() { for _ in $(seq 100); do healthy && return 0; sleep 0.2; done; return 1; }

# The import's run does not fsync each write (its durability is not under test; a clean stop
# flushes): 5,000 synced registrations would take ~2 minutes on a slow disk.
RELAY_SYNC_WRITES=false "$B/baton" >"$T/run1.log" 2>&1 &
sup=$!
wait_healthy
check "relay up" $?
# Unreachable ports: 40000.. skipping the simulators' ones; the live hosts last (the worst place).
n=0 p=40000
while [ $n -lt 4997 ]; do
	if [ $p -lt "$FP" ] || [ $p -gt $((FP + 2)) ]; then echo "localhost:$p"; n=$((n + 1)); fi
	p=$((p + 1))
done >"$T/hosts"
for i in 0 1 2; do echo "localhost:$((FP + i))"; done >>"$T/hosts"
# Four importers at once (each control call is a round trip; the store takes them in turn).
split -n l/4 "$T/hosts" "$T/part."
imp=""
for f in "$T"/part.*; do "$B/batonctl" import-hosts "$f" >"$f.out" & imp="$imp $!"; done
wait $imp
added=$(cat "$T"/part.*.out | grep -o '"added": [0-9]*' | awk '{n += $2} END {print n}')
echo "# import-hosts: $(cat "$T"/part.*.out | tr '\n' ' ')"
check "5000 hosts registered" $([ "$added" = 5000 ]; echo $?) "($added)"
kill -INT $sup; wait $sup

"$B/baton" >"$T/run2.log" 2>&1 &
sup=$!
t0=$SECONDS
wait_healthy
check "relay up again with 5000 hosts" $?
"$B/tools/countconsumer" --url "ws://127.0.0.1:$PORT/xrpc/com.atproto.sync.subscribeRepos" --seconds 20 >"$T/consumer.out" 2>"$T/consumer.err" &
cons=$!
bad=0 polls=0 slow=""
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
	polls=$((polls + 1))
	s=$(date +%s%N)
	healthy || { bad=$((bad + 1)); slow="$slow $((($(date +%s%N) - s) / 1000000))ms"; }
	sleep 0.2
done
check "/_health answered 200 within 1 s to all $polls polls while 5000 hosts connect" $([ $bad -eq 0 ]; echo $?) "($bad failed:$slow)"
up=$("$B/batonctl" upstreams)
live=$(jq --arg a "localhost:$FP" --arg b "localhost:$((FP + 1))" --arg c "localhost:$((FP + 2))" \
	'[.upstreams[] | select((.host == $a or .host == $b or .host == $c) and .connected and .cursor > 0)] | length' <<<"$up")
check "each of the 3 live hosts is connected and its events committed (not starved)" $([ "$live" = 3 ]; echo $?) \
	"($(jq -c --arg a "localhost:$FP" '[.upstreams[] | select(.host | startswith("localhost:'"${FP:0:3}"'"))] | .[-3:]' <<<"$up"))"
wait $cons
commits=$(grep -o 'commits=[0-9]*' "$T/consumer.out" | cut -d= -f2)
check "a consumer of the relay received the live hosts' commits" $([ "${commits:-0}" -ge 100 ]; echo $?) "($(cat "$T/consumer.out" "$T/consumer.err" | head -3))"
st=$("$B/batonctl" status --json)
restarts=$(echo "$st" | jq '[.stages[].restarts] | add')
check "no stage was restarted" $([ "$restarts" = 0 ]; echo $?) "($restarts restarts)"
hosts=$(echo "$st" | jq '[.stages[] | select(.role=="ingest") | .counters.hosts // 0] | add')
check "ingest holds every host" $([ "$hosts" -ge 5000 ]; echo $?) "($hosts)"
tries=$(echo "$st" | jq '[.stages[] | select(.role=="ingest") | .counters.disconnects // 0] | add')
check "ingest keeps trying them (thousands of failed connects, staggered and backed off)" $([ "$tries" -ge 4997 ] && [ "$tries" -lt 100000 ]; echo $?) "($tries)"
echo "# $((SECONDS - t0)) s after the restart"
kill -INT $sup; wait $sup
check "clean stop" $?
kill $pds 2>/dev/null; wait $pds 2>/dev/null

if [ $fail -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
