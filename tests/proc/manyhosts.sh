#!/usr/bin/env bash
# NAME
#	manyhosts.sh - thousands of upstream hosts at start-up (lesson 9)
# DESCRIPTION
#	2,000 hosts are registered (batonctl import-hosts), none of them reachable, and the relay
#	is restarted so ingest starts all of them at once.  Its connects are staggered and retried
#	with backoff; meanwhile /_health must answer 200 within a second to every poll, no stage
#	may be restarted, and ingest must really be trying (thousands of failed connects).
set -u
B=$(cd "${1:-build}" && pwd)
T=$(mktemp -d /tmp/baton-many.XXXXXX)
pass=0 fail=0
check() { if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi; }
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
export RELAY_DATA_DIR=$T/data RELAY_SHM_DIR=$T RELAY_NAME=many$$ RELAY_API_BIND=127.0.0.1:$PORT RELAY_METRICS_LISTEN= \
	RELAY_PLC_HOST=http://127.0.0.1:9 RELAY_ALLOW_INSECURE_HOSTS=true RELAY_VERIFY_PROCS=2 RELAY_FANOUT_PROCS=2 \
	RELAY_RING_MB=32 RELAY_BCAST_RING_MB=32
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/_health")" = 200 ]; }
wait_healthy() { for _ in $(seq 100); do healthy && return 0; sleep 0.2; done; return 1; }

"$B/baton" >"$T/run1.log" 2>&1 &
sup=$!
wait_healthy
check "relay up" $?
for p in $(seq 42000 43999); do echo "localhost:$p"; done >"$T/hosts"
out=$("$B/batonctl" import-hosts "$T/hosts")
echo "# import-hosts: $out"
echo "$out" | grep -q '"added": 2000'
check "2000 hosts registered" $? "($out)"
kill -INT $sup; wait $sup

"$B/baton" >"$T/run2.log" 2>&1 &
sup=$!
wait_healthy
check "relay up again with 2000 hosts" $?
bad=0 polls=0
end=$((SECONDS + 12))
while [ $SECONDS -lt $end ]; do
	polls=$((polls + 1))
	healthy || bad=$((bad + 1))
	sleep 0.2
done
check "/_health answered 200 within 1 s to all $polls polls while 2000 hosts connect" $([ $bad -eq 0 ]; echo $?) "($bad failed)"
st=$("$B/batonctl" status)
restarts=$(echo "$st" | jq '[.stages[].restarts] | add')
check "no stage was restarted" $([ "$restarts" = 0 ]; echo $?) "($restarts restarts)"
hosts=$(echo "$st" | jq '[.stages[] | select(.role=="ingest") | .counters.hosts // 0] | add')
check "ingest holds every host" $([ "$hosts" -ge 2000 ]; echo $?) "($hosts)"
tries=$(echo "$st" | jq '[.stages[] | select(.role=="ingest") | .counters.disconnects // 0] | add')
check "ingest keeps trying them (thousands of failed connects, staggered and backed off)" $([ "$tries" -ge 2000 ] && [ "$tries" -lt 40000 ]; echo $?) "($tries)"
kill -INT $sup; wait $sup
check "clean stop" $?

if [ $fail -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
