#!/usr/bin/env bash
# NAME
#	pullhosts.sh - batonctl pull-hosts: bootstrap relay B from relay A's listHosts (issue 7)
# DESCRIPTION
#	Relay A registers 1,200 hosts with a seq (import-hosts "HOST CURSOR"), 5 without one, and
#	blocks one of them (status banned).  Relay B blocks another.  B pulls from A: without
#	RELAY_ALLOW_INSECURE_HOSTS every (localhost) host is skipped as non-SSL; with it, the pull
#	reads 3 pages of 500, skips the seq 0 hosts and A's banned one, its own banned host is
#	refused by the admission (HostBanned, never registered as active), and the 1,198 others
#	are added and held by B's ingest.  A second pull adds nothing (all known).  A URL that
#	answers nothing fails with exit 1 within its timeout.
set -u
B=$(cd "${1:-build}" && pwd)
T=$(mktemp -d /tmp/baton-pull.XXXXXX)
pass=0 fail=0
check() { if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi; }
port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PA=$(port) PB=$(port)
common="RELAY_PLC_HOST=http://127.0.0.1:9 RELAY_ALLOW_INSECURE_HOSTS=true RELAY_VERIFY_PROCS=1 RELAY_FANOUT_PROCS=1 RELAY_RING_MB=32 RELAY_BCAST_RING_MB=32 RELAY_METRICS_LISTEN= RELAY_SYNC_WRITES=false" # durability is not under test: no fsync per registration
EA="$common RELAY_DATA_DIR=$T/a RELAY_SHM_DIR=$T RELAY_NAME=pulla$$ RELAY_API_BIND=127.0.0.1:$PA"
EB="$common RELAY_DATA_DIR=$T/b RELAY_SHM_DIR=$T RELAY_NAME=pullb$$ RELAY_API_BIND=127.0.0.1:$PB"
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/_health")" = 200 ]; }
wait_healthy() { for _ in $(seq 150); do healthy "$1" && return 0; sleep 0.2; done; return 1; }
ctlA() { env $EA "$B/batonctl" "$@"; }
ctlB() { env $EB "$B/batonctl" "$@"; }

env $EA "$B/baton" >"$T/a.log" 2>&1 &
supA=$!
env $EB "$B/baton" >"$T/b.log" 2>&1 &
supB=$!
wait_healthy $PA && wait_healthy $PB
check "relays A and B up" $?
# Registered on A, not subscribed by A's running ingest (import-hosts), so their status stays active.
{ for p in $(seq 44000 45199); do echo "localhost:$p 5"; done; for p in $(seq 45200 45204); do echo "localhost:$p"; done; } >"$T/hosts"
out=$(ctlA import-hosts "$T/hosts")
echo "$out" | grep -q '"added": 1205'
check "A: 1205 hosts registered" $? "($out)"
ctlA block localhost:44003 >/dev/null
check "A: localhost:44003 blocked" $?
ctlB block localhost:44007 >/dev/null
check "B: localhost:44007 blocked" $?

out=$(env $EB RELAY_ALLOW_INSECURE_HOSTS=false "$B/batonctl" pull-hosts "http://127.0.0.1:$PA")
echo "# pull without insecure hosts: $out"
jq -e '.added == 0 and .skipped.insecure == 1199 and .complete' <<<"$out" >/dev/null
check "without RELAY_ALLOW_INSECURE_HOSTS: every localhost host skipped as non-SSL" $? "($out)"

t0=$SECONDS
out=$(ctlB pull-hosts "http://127.0.0.1:$PA/")
rc=$?
echo "# pull: $out ($((SECONDS - t0)) s)"
check "pull-hosts exits 0" $rc
jq -e '.pages == 3 and .seen == 1205 and .complete' <<<"$out" >/dev/null
check "3 pages of 500 read, 1205 hosts seen" $? "($out)"
jq -e '.skipped.seq == 5 and .skipped.status == 1' <<<"$out" >/dev/null
check "seq 0 hosts and A's banned host skipped" $? "($out)"
jq -e '.refused.HostBanned == 1 and .added == 1198' <<<"$out" >/dev/null
check "B's banned host refused by the admission, 1198 added" $? "($out)"
n=$(ctlB hosts | jq '[.hosts[] | select(.status != "banned")] | length')
check "B's store holds the 1198 hosts" $([ "$n" = 1198 ]; echo $?) "($n)"
st=$(ctlB hosts | jq -r '.hosts[] | select(.host == "localhost:44007") | .status')
check "B's banned host stays banned" $([ "$st" = banned ]; echo $?) "($st)"
ctlB hosts | jq -e '[.hosts[] | select(.host == "localhost:44003" or .host == "localhost:45200")] | length == 0' >/dev/null
check "A's banned host and the seq 0 ones are not on B" $?
ok=1
for _ in $(seq 50); do
	h=$(ctlB status --json | jq '[.stages[] | select(.role=="ingest") | .counters.hosts // 0] | add')
	[ "$h" -ge 1198 ] && { ok=0; break; }
	sleep 0.2
done
check "B's ingest holds the pulled hosts" $ok "($h)"
grep -q "localhost:44007" "$T/b.log" && ! grep -q "describeServer.*44007\|44007.*accepted" "$T/b.log"
check "the banned host was refused, not probed or accepted (B's log)" $?

out=$(ctlB pull-hosts "http://127.0.0.1:$PA")
jq -e '.added == 0 and .skipped.known == 1198 and .refused.HostBanned == 1' <<<"$out" >/dev/null
check "a second pull adds nothing (known)" $? "($out)"

# A listener that never answers: the page times out and the pull fails.
node -e 'require("net").createServer(()=>{}).listen(0,"127.0.0.1",function(){console.log(this.address().port)})' >"$T/mute.port" &
mute=$!
for _ in $(seq 50); do [ -s "$T/mute.port" ] && break; sleep 0.1; done
t0=$SECONDS
ctlB pull-hosts "http://127.0.0.1:$(cat "$T/mute.port")" >/dev/null 2>"$T/mute.err"
rc=$?
check "a relay that does not answer: exit 1 within the page timeout" $([ $rc = 1 ] && [ $((SECONDS - t0)) -le 15 ]; echo $?) "(rc $rc, $((SECONDS - t0)) s)"
kill $mute; wait $mute 2>/dev/null

healthy $PB
check "B still healthy" $?
kill -INT $supA $supB; wait $supA; a=$?; wait $supB; b=$?
check "clean stops" $([ $a = 0 ] && [ $b = 0 ]; echo $?) "($a $b)"
if [ $fail -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
