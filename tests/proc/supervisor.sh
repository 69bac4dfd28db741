#!/usr/bin/env bash
# NAME
#	supervisor.sh - the supervisor's contract with real processes
# DESCRIPTION
#	--help; a bad parameter exits 2; a stage that exits 2 (fatal configuration: a bad bind
#	address) stops the whole relay with exit 2 and is not respawned; batonctl status lists
#	every stage by role; each stage's process name says its role; batonctl restart gives a
#	stage a new pid; an idle stage killed again and again restarts after a doubling delay (one
#	that did work since its start restarts after 100 ms: tests/bench/t7_recovery.sh);
#	batonctl status prints a table (--json: JSON); restart of an unknown stage exits non-zero;
#	batonctl scale fanout 4 / 1 / 2 (past the start-up count; scaled-down slots stay stopped;
#	/_health 200 throughout), 33 refused; batonctl reload (applied by every stage at once and by
#	one started later; a restart-only parameter and a bad value refused);
#	kill -9 of the supervisor leaves the stages serving; a new baton adopts them (same pids),
#	restarts an adopted stage that dies and stops them all on SIGINT; orphans nobody adopts stop
#	after RELAY_ORPHAN_TIMEOUT;
#	SIGINT stops everything with exit 0.
set -u
B=${1:-build}
B=$(cd "$B" && pwd)
T=$(mktemp -d /tmp/baton-sup.XXXXXX)
pass=0 fail=0
check() { # name condition-exit-code [detail]
	if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi
}
# A port nobody listens on now (asked of the kernel), so parallel tests do not collide.
port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
env_for() { # name
	echo RELAY_DATA_DIR=$T/$1/data RELAY_SHM_DIR=$T/$1 RELAY_NAME=sup$1$$ RELAY_API_BIND=127.0.0.1:$(port) RELAY_METRICS_LISTEN= \
		RELAY_VERIFY_PROCS=2 RELAY_FANOUT_PROCS=2 RELAY_PLC_HOST=http://127.0.0.1:9 RELAY_RING_MB=32 \
		RELAY_BCAST_RING_MB=32 RELAY_HEARTBEAT_TIMEOUT=5
}
wait_for() { # seconds command...  (gives up early if the relay under test has exited)
	local t=$1; shift
	local end=$((SECONDS + t))
	while [ $SECONDS -lt $end ]; do
		"$@" >/dev/null 2>&1 && return 0
		[ -n "${sup:-}" ] && ! kill -0 "$sup" 2>/dev/null && return 1
		sleep 0.1
	done
	return 1
}

"$B/baton" --help >"$T/help" 2>&1
check "--help exits 0" $?
grep -q RELAY_PLC_HOST "$T/help" && grep -q RELAY_REPLAY_WINDOW "$T/help"
check "--help lists the parameters" $?

"$B/baton" --help-markdown | diff -q - <(tail -n +6 "$(dirname "$0")/../../docs/config.md") >/dev/null
check "docs/config.md matches the parameter table (baton --help-markdown)" $?

want=$(git -C "$(dirname "$0")/../.." describe --always 2>/dev/null || echo unknown)
for bin in baton baton-ingest baton-verify baton-store baton-fanout batonctl; do
	v=$("$B/$bin" --version 2>&1)
	rc=$?
	case $v in "$bin $want"*) ok=0 ;; *) ok=1 ;; esac
	check "$bin --version exits 0 with the build's version" $([ $rc -eq 0 ] && [ $ok -eq 0 ]; echo $?) "($v, rc $rc, want $bin $want)"
done

env $(env_for a) RELAY_VERIFY_PROCS=notanumber "$B/baton" >"$T/a.log" 2>&1
check "a bad parameter exits 2" $([ $? -eq 2 ]; echo $?)

env $(env_for b) RELAY_API_BIND=999.1.1.1:1 timeout 30 "$B/baton" >"$T/b.log" 2>&1
rc=$?
check "a stage exiting 2 stops the relay with exit 2" $([ $rc -eq 2 ]; echo $?) "(exit $rc)"
n=$(grep -c "started baton-fanout" "$T/b.log")
check "a stage exiting 2 is not respawned" $([ "$n" -le 2 ]; echo $?) "($n fanout starts)"

mkdir -p "$T/c"
E=$(env_for c)
env $E "$B/baton" >"$T/c.log" 2>&1 &
sup=$!
ctl() { env $E "$B/batonctl" "$@"; }
wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '[.stages[] | select(.state==\"running\")] | length == 6'"
check "batonctl status: 6 stages running" $?
roles=$(ctl status --json | jq -r '[.stages[].role] | sort | join(",")')
check "status lists every role" $([ "$roles" = "fanout,fanout,ingest,store,verify,verify" ]; echo $?) "($roles)"
ok=0
for r in ingest verify store fanout; do
	pid=$(ctl status --json | jq -r "[.stages[] | select(.role==\"$r\")][0].pid")
	comm=$(cat /proc/$pid/comm 2>/dev/null)
	[ "$comm" = "baton-$r" ] || { ok=1; echo "# pid $pid is '$comm', not baton-$r"; }
done
check "each stage's process name says its role" $ok
# A pid is still the same process only if its start time is the one recorded: pids wrap
# (pid_max is often 32768) and a busy machine reuses one within seconds.
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
snapshot() { for p in "$@"; do echo "$p:$(starttime "$p")"; done; }
# ... and is not a zombie (an adopted stage's parent is gone: init reaps it, when it does)
alive() { local e=$1 p=${1%%:*}; [ -n "${e#*:}" ] && [ "$(starttime "$p")" = "${e#*:}" ] &&
	[ "$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)" != Z ]; }
old=$(ctl status --json | jq -r '.stages[] | select(.role=="verify" and .index==1) | .pid')
old=${old:-0}
ctl restart verify 1 >/dev/null
wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '.stages[] | select(.role==\"verify\" and .index==1) | select(.pid != $old and .pid > 0 and .state==\"running\")'"
check "batonctl restart verify 1 gives it a new pid" $?
# An idle store (no input, so no progress) killed three times in a row is crash-looping as far
# as the supervisor can tell: its restart delay doubles (100, 200, 400 ms).
delays=
for i in 1 2 3; do
	old=$(ctl status --json | jq -r '.stages[] | select(.role=="store") | .pid')
	kill -9 "$old" 2>/dev/null
	wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '.stages[] | select(.role==\"store\" and .pid != $old and .pid > 0 and .state==\"running\")'"
	delays="$delays $(ctl status --json | jq -r '.stages[] | select(.role=="store") | .restart_delay_ms')"
done
check "an idle stage killed again and again restarts after a doubling delay" $([ "$delays" = " 100 200 400" ]; echo $?) "(delays:$delays)"
# batonctl for people: a table (rates from two samples), every stage a line, the rings' fill.
ctl status >"$T/human" 2>&1
grep -q '^STAGE ' "$T/human" && grep -q '^store ' "$T/human" && grep -q '^verify-1 ' "$T/human" &&
	grep -q '^fanout-0 .*consumers 0, lag 0' "$T/human" && grep -q '^ring ingest->verify-0 ' "$T/human" &&
	! grep -q '^{' "$T/human"
check "batonctl status prints a table for people (--json for scripts)" $? "($(head -c 600 "$T/human"))"
ctl restart nosuchstage >/dev/null 2>&1
check "batonctl restart of an unknown stage exits non-zero" $([ $? -ne 0 ]; echo $?)
# Fanouts scale at any time, past the count the relay started with (slots up to 32).
running_fanouts() { env $E "$B/batonctl" status --json | jq -c '[.stages[] | select(.role=="fanout" and .state=="running") | .index]'; }
ctl scale fanout 4 >/dev/null
check "batonctl scale fanout 4 answers" $?
wait_for 20 sh -c "[ \"\$(env $E '$B/batonctl' status --json | jq -c '[.stages[] | select(.role==\"fanout\" and .state==\"running\" and .pid > 0) | .index]')\" = '[0,1,2,3]' ]"
check "... and four fanouts run (slots 0-3)" $? "($(running_fanouts))"
api=$(echo "$E" | tr ' ' '\n' | sed -n 's/^RELAY_API_BIND=//p')
wait_for 20 curl -fsS -o /dev/null "http://$api/_health"
check "... /_health 200 with four" $?
pids4=$(env $E "$B/batonctl" status --json | jq -r '[.stages[] | select(.role=="fanout" and .index >= 1) | .pid] | join(" ")')
ctl scale fanout 1 >/dev/null
gone4() { for p in $pids4; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
wait_for 20 gone4
check "batonctl scale fanout 1 stops fanouts 1-3" $? "($(running_fanouts))"
sleep 1.5
check "... and they are not restarted" $([ "$(running_fanouts)" = "[0]" ]; echo $?) "($(running_fanouts))"
wait_for 20 curl -fsS -o /dev/null "http://$api/_health"
check "... /_health 200 with one (empty slots nobody wants are not a failure)" $?
ctl scale fanout 33 >/dev/null 2>&1
check "batonctl scale fanout 33 is refused (32 slots)" $([ $? -ne 0 ]; echo $?)
ctl scale fanout 2 >/dev/null
wait_for 20 sh -c "[ \"\$(env $E '$B/batonctl' status --json | jq -c '[.stages[] | select(.role==\"fanout\" and .state==\"running\" and .pid > 0) | .index]')\" = '[0,1]' ]"
check "batonctl scale fanout 2: two again" $? "($(running_fanouts))"
# batonctl reload: a parameter of the running relay, applied by every stage (and by one
# started later); one that needs a restart is refused, as is a bad value.
ctl reload RELAY_MAX_CONNS_PER_IP=1 >"$T/reload.out" 2>&1
check "batonctl reload RELAY_MAX_CONNS_PER_IP=1: every running stage applied it" $? "($(tr -d '\n' <"$T/reload.out" | head -c 300))"
# three upgrades: with two fanouts at least two land on one, which refuses the second (429)
ws() { curl -s -o /dev/null -w '%{http_code}\n' --max-time 2 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
	-H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
	"http://$api/xrpc/com.atproto.sync.subscribeRepos"; }
codes=$( (ws & ws & ws & wait) | sort | paste -sd,)
check "... and the fanouts enforce it at once (a 429 among three connections)" $(echo "$codes" | grep -q 429; echo $?) "($codes)"
ctl reload RELAY_RING_MB=8 >/dev/null 2>&1
check "batonctl reload of a parameter that needs a restart is refused" $([ $? -ne 0 ]; echo $?)
ctl reload RELAY_MAX_CONNS_PER_IP=notanumber >/dev/null 2>&1
check "batonctl reload of a bad value is refused" $([ $? -ne 0 ]; echo $?)
old=$(ctl status --json | jq -r '.stages[] | select(.role=="fanout" and .index==0) | .pid')
ctl restart fanout 0 >/dev/null
wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '.stages[] | select(.role==\"fanout\" and .index==0) | select(.pid != $old and .pid > 0 and .state==\"running\" and .reload_gen > 0)'"
check "a stage started after the reload runs with it" $?
ctl reload RELAY_MAX_CONNS_PER_IP=64 >/dev/null 2>&1
pids=$(snapshot $(ctl status --json | jq -r '.stages[].pid'))
kill -INT $sup
wait $sup
rc=$?
check "SIGINT stops the relay with exit 0" $([ $rc -eq 0 ]; echo $?) "(exit $rc)"
left=0
for p in $pids; do alive "$p" && left=$((left + 1)); done
check "no stage outlives a clean stop" $([ $left -eq 0 ]; echo $?) "($left left)"

# kill -9 of the supervisor: the stages run on (consumers stay connected); a new baton on the
# same RELAY_SHM_DIR and RELAY_NAME adopts them (same pids), restarts an adopted stage that dies,
# and stops them all on SIGINT.
mkdir -p "$T/d"
E=$(env_for d)
env $E "$B/baton" >"$T/d.log" 2>&1 &
sup=$!
wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '[.stages[] | select(.state==\"running\")] | length == 6'"
pids=$(snapshot $(env $E "$B/batonctl" status --json | jq -r '.stages[].pid'))
api=$(echo "$E" | tr ' ' '\n' | sed -n 's/^RELAY_API_BIND=//p')
kill -9 $sup
wait $sup 2>/dev/null
sup=
sleep 2
left=0
for p in $pids; do alive "$p" && left=$((left + 1)); done
check "kill -9 of the supervisor: every stage runs on" $([ $left -eq 6 ]; echo $?) "($left of 6 alive)"
curl -fsS -o /dev/null "http://$api/_health"
check "... and the relay still serves (/_health 200)" $?
env $E "$B/baton" >"$T/d2.log" 2>&1 &
sup=$!
want=$(for p in $pids; do echo "${p%%:*}"; done | sort -n | paste -sd,)
adopted() { [ "$(env $E "$B/batonctl" status --json | jq -r '[.stages[] | select(.state=="running") | .pid] | sort | map(tostring) | join(",")')" = "$want" ]; }
wait_for 20 adopted
check "a new baton adopts them: the same six pids running" $? "(want $want; $(grep -m2 -i adopt "$T/d2.log" | tr '\n' ' '))"
logged() { [ "$(grep -c "adopted by the supervisor pid $sup" "$T/d.log")" -ge 6 ]; }
wait_for 10 logged # each stage looks once a second
check "... each stage logs its adoption" $? "($(grep -c "adopted by the supervisor pid $sup" "$T/d.log") of 6)"
old=$(env $E "$B/batonctl" status --json | jq -r '.stages[] | select(.role=="verify" and .index==1) | .pid')
kill -9 "$old"
wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '.stages[] | select(.role==\"verify\" and .index==1) | select(.pid != $old and .pid > 0 and .state==\"running\")'"
check "an adopted stage that dies is restarted" $?
pids=$(snapshot $(env $E "$B/batonctl" status --json | jq -r '.stages[].pid'))
kill -INT $sup
wait $sup
rc=$?
sup=
left=0
for p in $pids; do alive "$p" && left=$((left + 1)); done
check "SIGINT of the adopting baton stops every stage, adopted ones too, exit 0" $([ $rc -eq 0 ] && [ $left -eq 0 ]; echo $?) "(exit $rc, $left left)"

# Without a new supervisor the orphans stop after RELAY_ORPHAN_TIMEOUT.
mkdir -p "$T/e"
E="$(env_for e) RELAY_ORPHAN_TIMEOUT=2"
env $E "$B/baton" >"$T/e.log" 2>&1 &
sup=$!
wait_for 20 sh -c "env $E '$B/batonctl' status --json | jq -e '[.stages[] | select(.state==\"running\")] | length == 6'"
pids=$(snapshot $(env $E "$B/batonctl" status --json | jq -r '.stages[].pid'))
kill -9 $sup
sup_dead=$sup; sup=
wait $sup_dead 2>/dev/null
gone() { for p in $pids; do alive "$p" && return 1; done; return 0; }
wait_for 20 gone
check "orphans with no new supervisor stop after RELAY_ORPHAN_TIMEOUT (2 s)" $?

if [ $fail -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
