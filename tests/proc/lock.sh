#!/usr/bin/env bash
# NAME
#	lock.sh - one relay per data directory, per RELAY_NAME and per port (issue 7)
# DESCRIPTION
#	Relay A runs.  A second baton with A's RELAY_DATA_DIR, one with A's RELAY_NAME (and
#	RELAY_SHM_DIR) and one with A's port each exit 2 with a message naming A's supervisor pid,
#	before they touch anything: A stays healthy, its segment is the same file and its control
#	socket still answers.  A program that listens on a port with SO_REUSEPORT is not joined
#	either (exit 2).  A's own fanouts still share the port: one killed with -9 comes back on it,
#	and so does a store killed with -9 (the kernel dropped its lock).  A supervisor killed with
#	-9 and started again at once (its stages still exiting) comes up healthy.
set -u
B=$(cd "${1:-build}" && pwd)
T=$(mktemp -d /tmp/baton-lock.XXXXXX)
pass=0 fail=0
check() { if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi; }
port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PA=$(port) PB=$(port) PC=$(port)
common="RELAY_PLC_HOST=http://127.0.0.1:9 RELAY_VERIFY_PROCS=1 RELAY_FANOUT_PROCS=2 RELAY_RING_MB=32 RELAY_BCAST_RING_MB=32"
EA="$common RELAY_DATA_DIR=$T/a RELAY_SHM_DIR=$T/shm RELAY_NAME=locka$$ RELAY_API_BIND=127.0.0.1:$PA"
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$1/_health"; }
wait_for() { # seconds command...
	local end=$((SECONDS + $1)); shift
	while [ $SECONDS -lt $end ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}
healthy() { [ "$(code "$1")" = 200 ]; }
ctlA() { env $EA "$B/batonctl" "$@"; }
pid_of() { ctlA status --json | jq -r "[.stages[] | select(.role==\"$1\")][${2:-0}].pid"; }
# jq -e on no input (no answer) would say yes: the answer must be there.
sj() { local o; o=$(ctlA status --json 2>/dev/null) && [ -n "$o" ] && jq -e "$1" <<<"$o"; }
running() { sj '[.stages[] | select(.state=="running" and .pid > 0)] | length == 5'; }
# Starts a second baton with the environment given; it must exit by itself (30 s at most, or it is
# stopped and counts as running: 124).  Prints its exit code; its log is $T/$1.log.
second() { # name env...
	local n=$1; shift
	env "$@" "$B/baton" >"$T/$n.log" 2>&1 &
	local p=$!
	wait_for 30 sh -c "! kill -0 $p"
	if kill -0 $p 2>/dev/null; then
		kill -INT $p; wait $p; echo 124
	else
		wait $p; echo $?
	fi
}

env $EA "$B/baton" >"$T/a1.log" 2>&1 &
sup=$!
wait_for 60 healthy $PA && wait_for 30 running
check "relay A up (5 stages)" $?
seg=$T/shm/baton-locka$$.shm
ino=$(stat -c %i "$seg")

rc=$(second samedata $common RELAY_DATA_DIR=$T/a RELAY_SHM_DIR=$T/shm2 RELAY_NAME=lockb$$ RELAY_API_BIND=127.0.0.1:$PB)
check "same RELAY_DATA_DIR: exit 2" $([ "$rc" = 2 ]; echo $?) "(exit $rc)"
grep -q "RELAY_DATA_DIR $T/a is in use by another baton (pid $sup" "$T/samedata.log"
check "same RELAY_DATA_DIR: the message names the data directory and A's pid" $? "($(grep -m1 error "$T/samedata.log"))"
! grep -q "started baton-" "$T/samedata.log"
check "same RELAY_DATA_DIR: no stage was started" $?

rc=$(second samename $common RELAY_DATA_DIR=$T/c RELAY_SHM_DIR=$T/shm RELAY_NAME=locka$$ RELAY_API_BIND=127.0.0.1:$PB)
check "same RELAY_NAME: exit 2" $([ "$rc" = 2 ]; echo $?) "(exit $rc)"
grep -q "RELAY_NAME locka$$ is in use .* by another baton (pid $sup" "$T/samename.log"
check "same RELAY_NAME: the message names it and A's pid" $? "($(grep -m1 error "$T/samename.log"))"
check "same RELAY_NAME: A's segment is the same file" $([ "$(stat -c %i "$seg" 2>/dev/null)" = "$ino" ]; echo $?)
sj '.stages | length == 5' >/dev/null
check "same RELAY_NAME: A's control socket still answers" $?

rc=$(second sameport $common RELAY_DATA_DIR=$T/d RELAY_SHM_DIR=$T/shm2 RELAY_NAME=lockd$$ RELAY_API_BIND=127.0.0.1:$PA)
check "same port: exit 2" $([ "$rc" = 2 ]; echo $?) "(exit $rc)"
grep -q "port $PA is served by another baton (pid $sup)" "$T/sameport.log"
check "same port: the message names the port and A's pid" $? "($(grep -m1 error "$T/sameport.log"))"
# The port in other spellings (wildcard address) is the same port.
rc=$(second sameport2 $common RELAY_DATA_DIR=$T/d RELAY_SHM_DIR=$T/shm2 RELAY_NAME=lockd$$ RELAY_API_BIND=:$PA)
check "same port on the wildcard address: exit 2" $([ "$rc" = 2 ]; echo $?) "(exit $rc)"

bad=0
for _ in $(seq 20); do healthy $PA || bad=$((bad + 1)); done
check "A answers every request on its port after the refusals" $([ $bad = 0 ]; echo $?) "($bad failed)"
check "A's 5 stages still run" $(running >/dev/null; echo $?)

# A foreign program on a port, with SO_REUSEPORT: baton must not join its group.
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True); time.sleep(120)' "$PC" >"$T/py.out" 2>&1 &
py=$!
wait_for 20 grep -q listening "$T/py.out"
rc=$(second foreign $common RELAY_DATA_DIR=$T/e RELAY_SHM_DIR=$T/shm2 RELAY_NAME=locke$$ RELAY_API_BIND=127.0.0.1:$PC RELAY_ATTACH_WAIT=1)
kill $py 2>/dev/null; wait $py 2>/dev/null
check "a port another program listens on (SO_REUSEPORT): exit 2" $([ "$rc" = 2 ]; echo $?) "(exit $rc)"
grep -q "in use by another program" "$T/foreign.log"
check "a port another program listens on: the message says so" $? "($(grep -m1 error "$T/foreign.log"))"

old=$(pid_of fanout 1)
kill -9 "$old"
wait_for 30 sj ".stages[] | select(.role==\"fanout\" and .index==1 and .pid != $old and .pid > 0 and .state==\"running\")"
check "a fanout killed with -9 restarts" $?
new=$(pid_of fanout 1)
# Its socket is in the port's SO_REUSEPORT group again: both fanouts hold a listening socket of
# the port (/proc/net/tcp: local port in hex, state 0A, the socket's inode among the pid's fds).
listens() { # pid port
	local hex inodes
	hex=$(printf ':%04X' "$2")
	inodes=$(ls -l /proc/$1/fd 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p')
	for i in $inodes; do
		awk -v h="$hex" -v i="$i" '$2 ~ h"$" && $4 == "0A" && $10 == i { f = 1 } END { exit !f }' /proc/net/tcp && return 0
	done
	return 1
}
wait_for 30 listens "$new" $PA
check "the restarted fanout listens on the port again" $? "(pid $new)"
listens "$(pid_of fanout 0)" $PA
check "... beside the other fanout" $?
bad=0
for _ in $(seq 20); do healthy $PA || bad=$((bad + 1)); done
check "A answers every request on its port after the fanout restart" $([ $bad = 0 ]; echo $?) "($bad failed)"

old=$(pid_of store)
kill -9 "$old"
wait_for 30 sj ".stages[] | select(.role==\"store\" and .pid != $old and .pid > 0 and .state==\"running\")"
check "a store killed with -9 restarts (it takes the data-dir lock again)" $?
wait_for 30 sh -c "o=\$(env $EA '$B/batonctl' hosts) && [ -n \"\$o\" ] && echo \"\$o\" | jq -e .hosts"
check "the restarted store answers" $?
wait_for 30 healthy $PA
check "A healthy after the store restart" $?

kill -9 $sup
wait $sup 2>/dev/null
env $EA "$B/baton" >"$T/a2.log" 2>&1 &
sup=$!
wait_for 90 healthy $PA && wait_for 30 running
check "A killed with -9 and started again at once comes up healthy" $? "($(grep -m3 -E 'error|warn' "$T/a2.log" | tr '\n' ' '))"
check "... with every stage running" $(running >/dev/null; echo $?)
kill -INT $sup
wait $sup
rc=$?
check "clean stop" $([ $rc = 0 ]; echo $?) "(exit $rc)"

if [ $fail -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
