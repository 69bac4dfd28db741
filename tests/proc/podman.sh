#!/usr/bin/env bash
# NAME
#	podman.sh - the Dockerfile and docker-compose.yml built and run by a real container engine
# DESCRIPTION
#	tests/proc/podman.sh BUILD_DIR
#	Podman 4 (Debian's) is the engine, docker-compose 1.29 (Debian's) the Compose client, talking
#	to `podman system service` over a socket of this test's own (DOCKER_HOST).  No registry is
#	needed: the base image debian:12 is made with debootstrap from the host's Debian mirror and
#	`podman import` (kept in podman's store, so only the first run pays for it), then
#	`podman build --network host` builds the Dockerfile as is.
#	The stack runs from a copy of docker-compose.yml derived in the temp dir (derive() below):
#	what Compose 1.29 cannot read is dropped (top-level `name`, `depends_on.*.restart`), nofile
#	is capped at this machine's hard limit, and the supervisor uses the host's network instead
#	of publishing ports, with RELAY_API_BIND / RELAY_METRICS_LISTEN on free ports of 127.0.0.1,
#	so that the containers reach fakepds (PDS and PLC) on the host's loopback.  Everything else
#	(images, commands, environment, the shared IPC/PID/network namespaces, the volume, restart
#	policies, healthchecks, shm_size, replicas) is the file's own.
#	Checks: the image builds; `baton --version` and a plain `podman run` with the default
#	64 MiB /dev/shm (clear message, exit 2); `docker-compose up`: every container running,
#	every stage in `batonctl status`, /_health 200 and the containers' healthcheck healthy; a
#	crawl of fakepds: a consumer gets every event once, seq strictly increasing; kill -9 of a
#	verify container's process during a second crawl: its restart policy restarts it, every
#	event once; a fanout scaled away and back (--scale); `docker-compose restart verify-1`;
#	a replay from cursor 0 gets every event once; `docker-compose stop`: every container exits
#	0; nothing of the project is left.
#	Without podman, docker-compose and debootstrap (make deps installs them), or when podman
#	cannot run containers here, it prints why and "0 passed, 0 failed (SKIP: ...)".
#	BATON_PODMAN_KEEP=1 keeps the stopped stack and the temp dir (compose.yml) at the end, for a
#	look; remove them by hand.
# DIAGNOSTICS
#	Ends with "N passed, N failed"; logs stay in the temp dir printed on failure.
set -u
B=${1:-build}
B=$(cd "$B" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
T0=$(date +%s)
T=$(mktemp -d /tmp/baton-podman.XXXXXX)
PROJ=batontest$$
IMAGE=localhost/baton:$PROJ # a tag of this run: another run may be building its own tree
BASE=debian:12
pass=0 fail=0
check() { # name condition-exit-code [detail]
	if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi
}
skip() {
	echo "# SKIP: $*"
	echo "0 passed, 0 failed (SKIP: $*)"
	rm -rf "$T"
	exit 0
}
took() { echo "# time: $1 $(($(date +%s) - $2)) s (total $(($(date +%s) - T0)) s)"; }
wait_for() { # seconds command...  (by the clock: a podman command can take a second)
	local end=$(($(date +%s) + $1)); shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

for c in podman docker-compose debootstrap python3 curl jq; do
	command -v "$c" >/dev/null || skip "no $c (make deps installs podman, docker-compose, debootstrap)"
done
[ -x "$B/tools/fakepds" ] && [ -x "$B/tools/countconsumer" ] || skip "no $B/tools/fakepds or countconsumer"
# Podman's settings for this machine, in a file of this test (the host's containers.conf is not
# touched): no default ulimits (podman's default for root, 1048576, is above the hard limits
# here), cgroupfs and file events (no systemd, no journald in a build container), runc.
cat >"$T/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
EOF
export CONTAINERS_CONF=$T/containers.conf
podman info >"$T/podman-info" 2>&1 || skip "podman cannot start here ($(tail -n 1 "$T/podman-info"))"
# Can it run a container at all (namespaces, runc)?  Asked before minutes of debootstrap, with a
# root of the host's `true` and the libraries it links.
mkdir -p "$T/probe"
for f in "$(type -P true)" $(ldd "$(type -P true)" | grep -o '/[^ ]*'); do
	mkdir -p "$T/probe$(dirname "$f")" && cp -L "$f" "$T/probe$f"
done
podman run --rm --network none --rootfs "$T/probe" "$(type -P true)" >"$T/probe.log" 2>&1 ||
	skip "podman cannot run a container here ($(tail -n 1 "$T/probe.log"))"
rm -rf "$T/probe"
echo "# podman $(podman version --format '{{.Client.Version}}'), $(docker-compose version --short 2>/dev/null | head -1 | sed 's/^/docker-compose /')"

SVC=
cleanup() {
	if [ "${BATON_PODMAN_KEEP:-0}" != 1 ]; then
		podman ps -aq --filter "label=com.docker.compose.project=$PROJ" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
		podman volume ls -q --filter "label=com.docker.compose.project=$PROJ" | xargs -r podman volume rm -f >/dev/null 2>&1
		podman rm -f -v -t 0 "$PROJ-shm" "$PROJ-one" >/dev/null 2>&1
	fi
	# the layers stay (the next build's cache); only this run's name goes
	[ "${BATON_PODMAN_KEEP:-0}" = 1 ] || podman untag "$IMAGE" "$IMAGE" >/dev/null 2>&1
	for p in $SVC ${OTHER[@]+"${OTHER[@]}"}; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ "$fail" -eq 0 ] && [ "${BATON_PODMAN_KEEP:-0}" != 1 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
}
OTHER=()
trap cleanup EXIT
trap 'exit 130' INT TERM

# four free ports in a row: the relay's, its metrics', fakepds' two hosts
read -r PORT MPORT PDS_PORT PDS2 < <(python3 -c '
import socket
for base in range(20000 + __import__("os").getpid() % 20000, 60000, 7):
    try:
        ss = [socket.socket() for _ in range(4)]
        for i, s in enumerate(ss):
            s.bind(("127.0.0.1", base + i))
        print(*range(base, base + 4)); break
    except OSError:
        pass
    finally:
        for s in ss: s.close()')
# --- 1. the base image and the image -----------------------------------------------------------
t=$(date +%s)
if podman image exists "$BASE"; then
	echo "# $BASE: in podman's store"
else
	# the host's Debian mirror (deb822 or one-line sources)
	MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ && u { print u; exit }')
	[ -n "$MIRROR" ] || MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
	echo "# $BASE: debootstrap --variant=minbase bookworm from $MIRROR"
	debootstrap --variant=minbase bookworm "$T/rootfs" "$MIRROR" >"$T/debootstrap.log" 2>&1 &&
		tar -C "$T/rootfs" -c . | podman import - "$BASE" >"$T/import.log" 2>&1
	rc=$?
	rm -rf "$T/rootfs"
	[ "$rc" -eq 0 ] || { tail -n 5 "$T/debootstrap.log" "$T/import.log"; skip "cannot make the base image $BASE (debootstrap from $MIRROR)"; }
fi
took "base image" "$t"
t=$(date +%s)
VERSION=$(git describe --always --dirty 2>/dev/null || echo unknown)
podman build --network host --pull=never --build-arg BATON_VERSION="$VERSION" -t "$IMAGE" . >"$T/build.log" 2>&1
check "podman build of the Dockerfile ($IMAGE)" $? "($(tail -n 3 "$T/build.log" | paste -sd' '))"
took "image build" "$t"
podman image exists "$IMAGE" || { echo "$pass passed, $fail failed"; exit 1; }

v=$(podman run --rm "$IMAGE" baton --version 2>&1)
check "podman run --rm $IMAGE baton --version ($v)" $([ "$v" = "baton $VERSION" ] || [[ "$v" == *"$VERSION"* ]]; echo $?)
u=$(podman run --rm "$IMAGE" sh -c 'id -un; pwd; stat -c %U /data')
check "the image runs as baton in /data, which baton owns" $([ "$(echo $u)" = "baton /data baton" ]; echo $?) "($(echo $u))"
# A plain run with the engine's default /dev/shm (64 MiB) and the default rings (512 MiB).
out=$(timeout 60 podman run --rm --name "$PROJ-shm" --network none "$IMAGE" baton 2>&1)
rc=$?
check "plain podman run, default 64 MiB /dev/shm: exit 2 with a clear message" \
	$([ "$rc" -eq 2 ] && grep -q 'shm-size' <<<"$out"; echo $?) "(exit $rc: $(tail -n 2 <<<"$out" | paste -sd' '))"

# One container, the supervisor spawning every stage (RELAY_SPAWN_STAGES default), /dev/shm
# raised for the segment (2*2*32 + 64 MiB), its data in the image's volume /data.
podman run -d --name "$PROJ-one" --network host --shm-size 256m -e RELAY_API_BIND="127.0.0.1:$PORT" \
	-e RELAY_METRICS_LISTEN= -e RELAY_RING_MB=32 -e RELAY_BCAST_RING_MB=64 "$IMAGE" >"$T/one.log" 2>&1
health() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/_health")" = 200 ]; }
wait_for 30 health
check "plain podman run --shm-size 256m: one container, every stage, /_health 200" $? \
	"($(curl -s "http://127.0.0.1:$PORT/_health"); $(podman logs --tail 3 "$PROJ-one" 2>&1 | paste -sd' '))"
d=$(podman exec "$PROJ-one" sh -c 'ls -d /data/db /data/secondary' 2>&1 | paste -sd' ')
check "its data is in /data (the volume): $d" $([ "$d" = "/data/db /data/secondary" ]; echo $?)
podman stop -t 20 "$PROJ-one" >/dev/null 2>&1
s1=$(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$PROJ-one" 2>&1)
check "podman stop: the supervisor stops every stage and exits 0" $([ "$s1" = "exited 0" ]; echo $?) "($s1)"
podman rm -f -v "$PROJ-one" >/dev/null 2>&1

# --- 2. the stack ------------------------------------------------------------------------------
# A container that sets one ulimit gets podman's 1048576 for the others, which runc cannot set
# here: the derived file caps nofile and adds nproc at what a container gets without any.
read -r NOFILE NPROC < <(podman run --rm "$BASE" sh -c 'ulimit -Hn; ulimit -Hp 2>/dev/null || echo' | paste -sd' ')
NOFILE=${NOFILE:-1024}
NPROC=${NPROC:-}
# docker-compose.yml -> $T/compose.yml for Compose 1.29 on this machine (see the top comment).
derive() {
	python3 - "$1" "$2" "$PORT" "$MPORT" "$NOFILE" "$NPROC" <<'EOF'
import sys, yaml
src, dst, port, mport = sys.argv[1:5]
nofile, nproc = int(sys.argv[5]), sys.argv[6]
d = yaml.safe_load(open(src))          # merge keys (<<) and anchors resolved here
d.pop("name", None)                     # Compose 1.29: no top-level name (-p gives it)
for k in [k for k in d if k.startswith("x-")]:
    del d[k]
for name, s in d["services"].items():
    s.pop("build", None)                # built by podman build above
    for dep in (s.get("depends_on") or {}).values():
        dep.pop("restart", None)        # Compose >= 2.17 only
    u = s.get("ulimits")
    if u:
        u = dict(u)
        if isinstance(u.get("nofile"), int) and u["nofile"] > nofile:
            u["nofile"] = nofile
        if nproc and "nproc" not in u:
            u["nproc"] = int(nproc)
        s["ulimits"] = u
    env = dict(s.get("environment") or {})
    env["RELAY_API_BIND"] = "127.0.0.1:" + port
    env["RELAY_METRICS_LISTEN"] = "127.0.0.1:" + mport
    s["environment"] = env
    hc = s.get("healthcheck")
    if hc:
        hc = dict(hc)
        hc["test"] = [a.replace("127.0.0.1:2470", "127.0.0.1:" + port) for a in hc["test"]]
        s["healthcheck"] = hc
sup = d["services"]["supervisor"]
sup.pop("ports", None)
sup["network_mode"] = "host"
class D(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True
yaml.dump(d, open(dst, "w"), Dumper=D, sort_keys=False)
EOF
}
COMPOSE=${BATON_COMPOSE_FILE:-docker-compose.yml} # another file: to check that this test fails
derive "$COMPOSE" "$T/compose.yml"
check "docker-compose.yml derived for Compose 1.29 and host networking" $?
SOCK=$T/podman.sock
podman system service --time=0 "unix://$SOCK" >"$T/service.log" 2>&1 &
SVC=$!
wait_for 20 curl -sf --unix-socket "$SOCK" http://d/_ping
export DOCKER_HOST=unix://$SOCK
# What an operator's .env would say for this run: the PLC and PDS on 127.0.0.1, small rings,
# 3 fanout slots (so one can be scaled away and back).
export BATON_IMAGE=$IMAGE BATON_FANOUTS=3 RELAY_PLC_HOST=http://127.0.0.1:$PDS_PORT RELAY_ALLOW_INSECURE_HOSTS=true \
	RELAY_RING_MB=32 RELAY_BCAST_RING_MB=64 RELAY_HEARTBEAT_TIMEOUT=4 RELAY_ATTACH_WAIT=30 BATON_SHM_SIZE=256m
N=$BATON_FANOUTS K=2
dc() { docker-compose -p "$PROJ" -f "$T/compose.yml" --project-directory "$T" "$@"; }
t=$(date +%s)
dc up -d --no-build >"$T/up.log" 2>&1
check "docker-compose up -d" $? "($(tail -n 3 "$T/up.log" | paste -sd' '))"
took "up" "$t"
cname() { podman ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$PROJ" \
	--filter "label=com.docker.compose.service=$1" | sort; }
running() { # number of running containers of the project
	podman ps -q --filter "label=com.docker.compose.project=$PROJ" --filter status=running | wc -l
}
WANT=$((1 + 1 + K + 1 + N))
wait_for 30 sh -c "[ \$(podman ps -q --filter label=com.docker.compose.project=$PROJ --filter status=running | wc -l) -eq $WANT ]"
check "every container running ($WANT: supervisor, store, verify-0, verify-1, ingest, $N fanouts)" $? \
	"($(podman ps -a --filter "label=com.docker.compose.project=$PROJ" --format '{{.Names}}={{.Status}}' | paste -sd' '))"
SUP=$(cname supervisor)
ctl() { podman exec "$SUP" batonctl "$@"; }
STAGES=$((K + N + 2))
all_running() { ctl status --json | jq -e --argjson n "$STAGES" '[.stages[] | select(.state == "running")] | length == $n'; }
wait_for 40 all_running
check "batonctl status in the supervisor container: all $STAGES stages running" $? \
	"($(ctl status --json 2>&1 | jq -c '[.stages[] | [.role, .index, .state]]' 2>&1))"
wait_for 20 health
check "/_health 200" $? "($(curl -s "http://127.0.0.1:$PORT/_health"))"
healthy() { [ "$(podman healthcheck run "$SUP" 2>&1)" = healthy ] || podman healthcheck run "$SUP" >/dev/null 2>&1; }
healthy
check "the supervisor's compose healthcheck passes (podman healthcheck run)" $?
wait_for 10 sh -c "curl -sf http://127.0.0.1:$MPORT/metrics | grep -q '^baton_up{role=\"fanout\"'"
check "the fanouts serve /metrics on RELAY_METRICS_LISTEN" $?

if [ "$fail" -ne 0 ]; then
	for c in $(podman ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$PROJ"); do
		echo "# logs of $c:"; podman logs --tail 8 "$c" 2>&1 | sed 's/^/#   /'
	done
fi

# Everything below needs the stack up; without it, straight to the stop.
flow() {
# --- 3. events ---------------------------------------------------------------------------------
SUB="ws://127.0.0.1:$PORT/xrpc/com.atproto.sync.subscribeRepos"
kv() { tail -n 1 "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
js() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }
crawl() { # PDS port: requestCrawl 200
	local code
	code=$(curl -s -o "$T/crawl.out" -w '%{http_code}' -H 'Content-Type: application/json' \
		-d "{\"hostname\":\"localhost:$1\"}" "http://127.0.0.1:$PORT/xrpc/com.atproto.sync.requestCrawl")
	check "requestCrawl localhost:$1 200" $([ "$code" = 200 ]; echo $?) "($code $(cat "$T/crawl.out"))"
}
host_seq() { js "$(curl -s "http://127.0.0.1:$1/_stats")" seq; } # events host $1 emitted
consumed() { # consumer output, want: every event once (count), in strictly increasing seq
	local got
	got=$(kv "$1" commits)
	[ "${2:-0}" -gt 0 ] && [ "${got:-0}" = "$2" ] && [ "$(kv "$1" seq_order_errors)" = 0 ]
}
# fakepds: two PDS hosts (PDS_PORT, PDS2 = PDS_PORT + 1) and the PLC (either port), 20 accounts,
# 1000 events over 10 s after SIGUSR1, for both hosts.  Host 1 is crawled only in 3d: it then
# serves its whole log from seq 1 (--backlog).
"$B/tools/fakepds" --port "$PDS_PORT" --hosts 2 --accounts 20 --rate 100 --seconds 10 --backlog 1 \
	--start-on-signal >"$T/fakepds.log" 2>&1 &
FP=$!
OTHER+=($FP)
wait_for 20 curl -sf "http://127.0.0.1:$PDS2/_stats"
# 3a/b. crawl host 0 with a live consumer; kill -9 of verify-0's process (a crash, not a stop) 3 s
# into the 10 s of events
"$B/tools/countconsumer" --url "$SUB" --seconds 90 --idle 8 >"$T/live1.out" 2>"$T/live1.err" &
CC=$!
OTHER+=($CC)
sleep 0.5
crawl "$PDS_PORT"
subscribed() { [ "$(js "$(curl -s "http://127.0.0.1:$PDS_PORT/_stats")" subscribers)" -ge 1 ]; }
wait_for 20 subscribed
kill -USR1 "$FP"
V0=$(cname verify-0)
sleep 3
p=$(podman inspect -f '{{.State.Pid}}' "$V0")
echo "# kill -9 of verify-0 (pid $p on this machine), at host 0's seq $(host_seq "$PDS_PORT")"
kill -9 "$p"
restarted() { [ "$(podman inspect -f '{{.State.Running}} {{.RestartCount}}' "$V0")" = "true 1" ]; }
wait_for 30 restarted
check "kill -9 of verify-0's process: restart: on-failure restarts the container" $? \
	"(now $(podman inspect -f '{{.State.Status}} restarts={{.RestartCount}} exit={{.State.ExitCode}}' "$V0"))"
done_() { [ "$(js "$(curl -s "http://127.0.0.1:$PDS_PORT/_stats")" done)" = true ]; }
wait_for 30 done_
E1=$(host_seq "$PDS_PORT")
wait "$CC"
consumed "$T/live1.out" "$E1"
check "across the kill, a live consumer gets every event of host 0 once ($E1), seq strictly increasing" $? "($(tail -n 1 "$T/live1.out"))"
wait_for 20 all_running
check "batonctl status: every stage running again" $?

# 3c. scale the fanouts to N-1 and back to N
dc up -d --no-build --no-recreate --scale fanout=$((N - 1)) >"$T/scale-down.log" 2>&1
rc=$?
nf=$(cname fanout | xargs -r podman inspect -f '{{.State.Running}}' | grep -c true)
check "docker-compose up --scale fanout=$((N - 1)): $((N - 1)) fanouts run" $([ "$rc" -eq 0 ] && [ "$nf" -eq $((N - 1)) ]; echo $?) \
	"(exit $rc, $nf running: $(tail -n 2 "$T/scale-down.log" | paste -sd' '))"
sleep 2
health
check "/_health stays 200 with $((N - 1)) fanouts (a slot nobody uses is not a failure)" $? "($(curl -s "http://127.0.0.1:$PORT/_health"))"
"$B/tools/countconsumer" --url "$SUB?cursor=0" --seconds 60 --idle 4 >"$T/replay-scaled.out" 2>&1
consumed "$T/replay-scaled.out" $E1
check "with $((N - 1)) fanouts a replay from 0 gets every event once ($E1)" $? "($(tail -n 1 "$T/replay-scaled.out"))"
dc up -d --no-build --no-recreate --scale fanout="$N" >"$T/scale-up.log" 2>&1
rc=$?
wait_for 30 all_running
r=$?
wait_for 20 health
check "docker-compose up --scale fanout=$N: the new fanout claims the free slot, /_health 200" \
	$([ "$rc" -eq 0 ] && [ "$r" -eq 0 ] && health; echo $?) "(exit $rc: $(curl -s "http://127.0.0.1:$PORT/_health"))"
# past RELAY_FANOUT_PROCS: the segment has 32 fanout slots
dc up -d --no-build --no-recreate --scale fanout=$((N + 1)) >"$T/scale-past.log" 2>&1
rc=$?
running_n() { ctl status --json | jq -e --argjson n "$1" '[.stages[] | select(.state == "running")] | length == $n'; }
wait_for 30 running_n $((STAGES + 1))
r=$?
check "docker-compose up --scale fanout=$((N + 1)) (past RELAY_FANOUT_PROCS=$N): every replica claims a slot and runs" \
	$([ "$rc" -eq 0 ] && [ "$r" -eq 0 ] && health; echo $?) "(exit $rc: $(ctl status --json 2>&1 | jq -c '[.stages[] | [.role, .index, .state]]' 2>&1))"
dc up -d --no-build --no-recreate --scale fanout="$N" >"$T/scale-back.log" 2>&1
wait_for 30 all_running
check "... and back to $N" $?

# 3d. restart one stage by compose
dc restart verify-1 >"$T/restart.log" 2>&1
rc=$?
sleep 1
wait_for 30 all_running
r=$?
check "docker-compose restart verify-1: every stage running again" $([ "$rc" -eq 0 ] && [ "$r" -eq 0 ]; echo $?) \
	"(exit $rc: $(tail -n 2 "$T/restart.log" | paste -sd' '))"
"$B/tools/countconsumer" --url "$SUB" --seconds 60 --idle 5 >"$T/live3.out" 2>"$T/live3.err" &
CC=$!
OTHER+=($CC)
sleep 0.5
crawl "$PDS2"
E3=$(host_seq "$PDS2")
wait "$CC"
consumed "$T/live3.out" "$E3"
check "after the restart, a crawl of host 1: a live consumer gets its every event once ($E3)" $? "($(tail -n 1 "$T/live3.out"))"
# replay from 0 by several consumers (SO_REUSEPORT spreads them over the fanouts)
CS=()
for i in 1 2 3 4; do
	"$B/tools/countconsumer" --url "$SUB?cursor=0" --seconds 60 --idle 4 >"$T/replay$i.out" 2>&1 &
	CS+=($!)
	OTHER+=($!)
done
ok=0
for i in 1 2 3 4; do
	wait "${CS[$((i - 1))]}"
	consumed "$T/replay$i.out" $((E1 + E3)) || { ok=1; echo "# replay $i: $(tail -n 1 "$T/replay$i.out")"; }
done
check "at the end 4 replays from 0 each get every event once ($E1+$E3), seq strictly increasing" $ok
}
[ "$fail" -eq 0 ] && flow

# --- 4. stop ------------------------------------------------------------------------------------
t=$(date +%s)
dc stop >"$T/stop.log" 2>&1
check "docker-compose stop" $? "($(tail -n 2 "$T/stop.log" | paste -sd' '))"
took "stop" "$t"
bad=$(podman ps -a --filter "label=com.docker.compose.project=$PROJ" --format '{{.Names}}' |
	while read -r c; do
		s=$(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$c")
		[ "$s" = "exited 0" ] || echo "$c: $s"
	done | paste -sd';')
check "every container stopped with exit 0 (SIGTERM)" $([ -z "$bad" ]; echo $?) "($bad)"
if [ "${BATON_PODMAN_KEEP:-0}" != 1 ]; then
	podman ps -aq --filter "label=com.docker.compose.project=$PROJ" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
	podman volume ls -q --filter "label=com.docker.compose.project=$PROJ" | xargs -r podman volume rm -f >/dev/null 2>&1
	left=$(podman ps -a --filter "label=com.docker.compose.project=$PROJ" --format '{{.Names}}' | paste -sd' ')
	vols=$(podman volume ls -q --filter "label=com.docker.compose.project=$PROJ" | paste -sd' ')
	check "nothing of the project is left (containers, volume)" $([ -z "$left$vols" ]; echo $?) "($left $vols)"
fi
took "test" "$T0"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
