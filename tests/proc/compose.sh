#!/usr/bin/env bash
# NAME
#	compose.sh - docker-compose.yml, checked without a Docker engine
# DESCRIPTION
#	tests/proc/compose.sh BUILD_DIR
#	1. Parses docker-compose.yml with a real YAML parser (the `yaml` package of tests/e2e, else
#	   Python's yaml), after compose's ${VAR:-default} interpolation, and checks its structure:
#	   every stage is a service, verify-0..K-1 match RELAY_VERIFY_PROCS, every stage shares the
#	   supervisor's IPC, network and PID namespaces and the data volume, all share one
#	   environment (but BATON_INDEX), every variable is a parameter of `baton --help`, commands
#	   are binaries the Dockerfile installs, restart policies, healthchecks, shm_size.
#	2. Starts every service as a local process with exactly its command and environment from
#	   the file (fanout twice: its replicas), under a loop that does what `restart: on-failure`
#	   does.  The only differences are the mappings of the container's paths (/opt/baton/bin ->
#	   BUILD_DIR, /data -> a temp dir, /dev/shm -> a temp RELAY_SHM_DIR) and of its port (the
#	   published 2470 -> a free port on 127.0.0.1).
#	3. A real flow: fakepds as PDS and PLC, requestCrawl, a consumer receives every event with
#	   strictly increasing seq; /_health 200 (the compose healthcheck command); batonctl status
#	   shows every stage running; kill -9 of one fanout: the restart claims a slot, listens and
#	   serves replay; a third replica past RELAY_FANOUT_PROCS (compose --scale fanout=3) claims a
#	   slot and serves, and scaled down again the relay stays healthy.
#	4. Stops everything (SIGTERM, like `docker compose down`): every process exits 0, none is left.
# DIAGNOSTICS
#	Ends with "N passed, N failed"; logs stay in the temp dir printed on failure.
set -u
B=${1:-build}
B=$(cd "$B" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
T=$(mktemp -d /tmp/baton-compose.XXXXXX)
SHM=$(mktemp -d /dev/shm/baton-compose.XXXXXX 2>/dev/null) || { SHM=$T/shm; mkdir -p "$SHM"; }
mkdir -p "$T/data"
COMPOSE=${BATON_COMPOSE_FILE:-docker-compose.yml} # another file: to check that this test fails
pass=0 fail=0
check() { # name condition-exit-code [detail]
	if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi
}
wait_for() { # seconds command...
	local t=$1; shift
	for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}
free_port() {
	node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
# Our processes, found by the unique RELAY_SHM_DIR in their environment (never by name).
ours() {
	local f p
	for f in /proc/[0-9]*/environ; do
		p=${f#/proc/}; p=${p%/environ}
		[ "$p" = $$ ] && continue
		{ tr "\0" "\n" <"$f"; } 2>/dev/null | grep -qxF "RELAY_SHM_DIR=$SHM" && echo "$p"
	done
}
OTHER=()
cleanup() {
	touch "$T/stopping"
	for p in $(ours) "${OTHER[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$SHM"
	if [ "$fail" -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. parse ---------------------------------------------------------------------------------
# Compose's interpolation: ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default} (unset), $$.
interpolate() { # VAR=value... < compose file
	env -i "$@" perl -pe 's{\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^\}]*))?\}}{
		$& eq q($$) ? q($) :
		!defined $2 ? ($ENV{$1} // q()) :
		$2 eq q(:-) ? ((defined $ENV{$1} && $ENV{$1} ne q()) ? $ENV{$1} : $3) :
		(defined $ENV{$1} ? $ENV{$1} : $3) }ge'
}
YAML_JS="$ROOT/tests/e2e/node_modules/yaml"
to_json() {
	if [ -d "$YAML_JS" ]; then
		node -e 'const Y = require(process.argv[1]);
			const doc = Y.parse(require("fs").readFileSync(0, "utf8"), { merge: true, strict: true });
			process.stdout.write(JSON.stringify(doc));' "$YAML_JS"
	else
		python3 -c 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'
	fi
}
[ -d "$YAML_JS" ] && echo "# parser: yaml $(node -p "require('$YAML_JS/package.json').version")" ||
	echo "# parser: python3 yaml"

set -o pipefail
interpolate <"$COMPOSE" | to_json >"$T/c0.json" && jq -e '.services | type == "object"' "$T/c0.json" >/dev/null
check "docker-compose.yml parses (YAML, merge keys, interpolation with defaults)" $?
C0=$T/c0.json
q() { jq -r "$@" "$C0"; }
env_of() { # service -> KEY=value lines (map or list form)
	q --arg s "$1" '.services[$s].environment |
		if type == "array" then .[] else to_entries[] | "\(.key)=\(.value | tostring)" end'
}
sup_env() { env_of supervisor | sed -n "s/^$1=//p"; }
K=$(sup_env RELAY_VERIFY_PROCS)
N=$(sup_env RELAY_FANOUT_PROCS)

want="fanout,ingest,store,supervisor"
for k in $(seq 0 $((K - 1))); do want="$want,verify-$k"; done
have=$(q '.services | keys | join(",")')
check "services are supervisor, store, verify-0..K-1 (K=$K), ingest, fanout" $([ "$have" = "$want" ]; echo $?) "($have)"

idx=$(for s in $(q '.services | keys[] | select(startswith("verify"))'); do env_of "$s" | sed -n 's/^BATON_INDEX=//p'; done | sort -n | paste -sd,)
check "each verify index 0..K-1 runs exactly once" $([ "$idx" = "$(seq -s, 0 $((K - 1)))" ]; echo $?) "($idx)"
check "fanout claims a slot (BATON_INDEX=auto)" $([ "$(env_of fanout | sed -n 's/^BATON_INDEX=//p')" = auto ]; echo $?)
r=$(q '.services.fanout.deploy.replicas // 1')
check "fanout replicas ($r) <= 32 (the fanout slots)" $([ "$r" -le 32 ]; echo $?)
check "fanout is scalable (no container_name, no ports of its own)" \
	"$(q '.services.fanout | if has("container_name") or has("ports") then 1 else 0 end')"

ok=0
for s in $(q '.services | keys[]'); do
	d=$(diff <(env_of supervisor | sort) <(env_of "$s" | grep -v '^BATON_INDEX=' | sort)) || { ok=1; echo "# $s: $d"; }
done
check "every service has the supervisor's environment (but BATON_INDEX)" $ok
check "supervisor: RELAY_SPAWN_STAGES=false" $([ "$(sup_env RELAY_SPAWN_STAGES)" = false ]; echo $?)
"$B/baton" --help >"$T/help" 2>&1
ok=0
for v in $(env_of supervisor | cut -d= -f1) BATON_INDEX; do grep -qw -- "$v" "$T/help" || { ok=1; echo "# $v is no parameter"; }; done
check "every variable is a parameter of baton --help" $ok

check "supervisor: ipc shareable, publishes 2470" \
	"$(q '.services.supervisor | if .ipc == "shareable" and (.ports | map(tostring) | any(endswith(":2470"))) then 0 else 1 end')"
ok=0
for s in $(q '.services | keys[] | select(. != "supervisor")'); do
	for f in ipc network_mode pid; do
		v=$(q --arg s "$s" --arg f "$f" '.services[$s][$f] // ""')
		[ "$v" = service:supervisor ] || { ok=1; echo "# $s.$f is '$v'"; }
	done
done
check "every stage shares the supervisor's ipc, network and pid namespaces" $ok
DATA=$(sup_env RELAY_DATA_DIR)
vol=$(q --arg d "$DATA" '[.services.supervisor.volumes[] | tostring | select(endswith(":" + $d))][0] // "" | split(":")[0]')
ok=0
[ -n "$vol" ] && [ "$(q --arg v "$vol" '.volumes | has($v)')" = true ] || ok=1
for s in $(q '.services | keys[]'); do
	q --arg s "$s" --arg m "$vol:$DATA" -e '.services[$s].volumes | map(tostring) | index($m) != null' >/dev/null ||
		{ ok=1; echo "# $s does not mount $vol:$DATA"; }
done
check "every service mounts the named volume '$vol' at RELAY_DATA_DIR ($DATA)" $ok

# shm_size must hold the segment: 2*K rings of RELAY_RING_MB + the broadcast ring, plus pages.
mib() { awk -v s="$1" 'BEGIN { n = s + 0; u = tolower(s); sub(/^[0-9.]+/, "", u);
	m = (u ~ /^g/) ? 1024 : (u ~ /^m/) ? 1 : (u ~ /^k/) ? 1 / 1024 : 1 / 1048576; print int(n * m) }'; }
need=$((2 * K * $(sup_env RELAY_RING_MB) + $(sup_env RELAY_BCAST_RING_MB) + 16))
shm=$(mib "$(q '.services.supervisor.shm_size // "64m"')")
check "supervisor shm_size ${shm} MiB holds the segment (${need} MiB)" $([ "$shm" -ge "$need" ]; echo $?)

ok=0
for s in $(q '.services | keys[]'); do
	p=$(q --arg s "$s" '.services[$s].restart // "no"')
	case $p in on-failure | unless-stopped | always) ;; *) ok=1; echo "# $s restart: $p" ;; esac
done
check "every service has a restart policy" $ok
check "the supervisor's healthcheck is /_health" \
	"$(q '.services.supervisor.healthcheck.test | tostring | if contains("/_health") then 0 else 1 end')"
check "each fanout replica checks itself (batonctl health fanout)" \
	"$(q '.services.fanout.healthcheck.test | tostring | if contains("batonctl") and contains("health") and contains("fanout") then 0 else 1 end')"

declare -A BIN=([supervisor]=baton [store]=baton-store [ingest]=baton-ingest [fanout]=baton-fanout)
ok=0
for s in $(q '.services | keys[]'); do
	b=${BIN[$s]:-baton-verify}
	c=$(q --arg s "$s" '.services[$s].command | if type == "array" then join(" ") else . end')
	[ "$c" = "/opt/baton/bin/$b" ] || { ok=1; echo "# $s command '$c', want /opt/baton/bin/$b"; }
	[ -x "$B/$b" ] || { ok=1; echo "# $B/$b is missing"; }
	grep -E '^COPY --from=build .* /opt/baton/bin/$' Dockerfile | grep -qw -- "/src/build/$b" ||
		{ ok=1; echo "# the Dockerfile does not install $b in /opt/baton/bin"; }
done
grep -E '^COPY --from=build .* /opt/baton/bin/$' Dockerfile | grep -qw /src/build/batonctl || ok=1
check "each command is its stage's binary, built and installed in /opt/baton/bin by the Dockerfile" $ok
ok=0 n=0
for p in $(sed -n '/^RUN_PKGS/,/^#/p' Makefile | tr ' \\' '\n\n' | grep -- '-dev$'); do
	n=$((n + 1))
	grep -qw -- "$p" Dockerfile || { ok=1; echo "# Dockerfile lacks $p"; }
done
[ "$n" -ge 10 ] || { ok=1; echo "# found only $n -dev packages in the Makefile's RUN_PKGS"; }
check "the Dockerfile installs every -dev package of the Makefile's RUN_PKGS ($n)" $ok

# --- 2. start every service as a local process ------------------------------------------------
PORT=$(free_port)
PDS_PORT=$(free_port)
while [ "$PDS_PORT" = "$PORT" ]; do PDS_PORT=$(free_port); done
MPORT=$(free_port)
while [ "$MPORT" = "$PORT" ] || [ "$MPORT" = "$PDS_PORT" ]; do MPORT=$(free_port); done
# What an operator's .env would say for this run: the PLC and PDS on 127.0.0.1, small rings.
interpolate RELAY_PLC_HOST="http://127.0.0.1:$PDS_PORT" RELAY_ALLOW_INSECURE_HOSTS=true BATON_PORT="$PORT" \
	RELAY_RING_MB=32 RELAY_BCAST_RING_MB=32 RELAY_HEARTBEAT_TIMEOUT=4 RELAY_ATTACH_WAIT=20 \
	<"$COMPOSE" | to_json >"$T/c1.json"
C0=$T/c1.json
check "the supervisor publishes 2470 as BATON_PORT ($PORT)" \
	"$(q --arg p "$PORT:2470" '.services.supervisor.ports | map(tostring) | if index($p) != null then 0 else 1 end')"
N=$(sup_env RELAY_FANOUT_PROCS)
REPLICAS=$(q '.services.fanout.deploy.replicas // 1')

map() { # a value inside the container -> the same on this machine
	local v=$1
	case $v in
	/opt/baton/bin | /opt/baton/bin/*) v=$B${v#/opt/baton/bin} ;;
	/data | /data/*) v=$T/data${v#/data} ;;
	/dev/shm | /dev/shm/*) v=$SHM${v#/dev/shm} ;;
	:2470 | 0.0.0.0:2470) v=127.0.0.1:$PORT ;;
	:2471 | 0.0.0.0:2471) v=127.0.0.1:$MPORT ;;
	http://127.0.0.1:2470/*) v=http://127.0.0.1:$PORT/${v#http://127.0.0.1:2470/} ;;
	esac
	printf '%s\n' "$v"
}
svc_env() { # service -> mapped KEY=value lines, the image's PATH first
	map /opt/baton/bin | sed 's/^/PATH=/; s/$/:\/usr\/bin:\/bin/'
	env_of "$1" | while IFS= read -r kv; do printf '%s=%s\n' "${kv%%=*}" "$(map "${kv#*=}")"; done
}
exec_svc() { # service: exec its command with exactly its environment
	local -a e c
	mapfile -t e < <(svc_env "$1")
	mapfile -t c < <(q --arg s "$1" '.services[$s].command[]' | while IFS= read -r a; do map "$a"; done)
	# A fanout replica gets a mount namespace of its own, as each container has.
	local -a ns=()
	[ "$1" = fanout ] && unshare --mount true 2>/dev/null && ns=(unshare --mount)
	cd "$T/data" && exec env -i "${e[@]}" "${ns[@]}" "${c[@]}"
}
# restart: on-failure, as Docker does it: restart after a non-zero exit, backoff from 100 ms
# doubling (capped at 2 s here, 1 min in Docker); exit 0 (a stop) ends it.
run_policy() { # instance service
	local inst=$1 svc=$2 delay=0.1 rc p
	while [ ! -e "$T/stopping" ]; do
		(exec_svc "$svc") >>"$T/$inst.log" 2>&1 &
		p=$!
		echo "$p" >"$T/$inst.pid"
		wait "$p"
		rc=$?
		echo "$inst pid $p exit $rc" >>"$T/exits"
		[ "$rc" -eq 0 ] && break
		sleep "$delay"
		delay=$(awk -v d="$delay" 'BEGIN { d *= 2; print (d > 2 ? 2 : d) }')
	done
}
pid_of() { cat "$T/$1.pid" 2>/dev/null; }

# Stages first: they must wait for the supervisor's segment (RELAY_ATTACH_WAIT).
INST=()
for s in store $(q '.services | keys[] | select(startswith("verify-"))') ingest; do INST+=("$s:$s"); done
for i in $(seq 1 "$REPLICAS"); do INST+=("fanout-$i:fanout"); done
for x in "${INST[@]}"; do run_policy "${x%%:*}" "${x#*:}" & done
sleep 0.5
run_policy supervisor supervisor &
ctl() { (mapfile -t e < <(svc_env supervisor); exec env -i "${e[@]}" "$B/batonctl" "$@"); }
STAGES=$((K + N + 2))
all_running() { ctl status --json | jq -e --argjson n "$STAGES" '[.stages[] | select(.state == "running")] | length == $n'; }
wait_for 30 all_running
check "batonctl status: all $STAGES stages running (K=$K verify, N=$N fanout)" $? "$(ctl status --json 2>&1 | jq -c '[.stages[] | [.role, .index, .state]]' 2>&1)"

# Everything below needs the relay up; without it, show why and go straight to the stop.
flow() {
roles=$(ctl status --json | jq -r '[.stages[].role] | sort | join(",")')
check "status lists every role" $([ "$roles" = "$(printf '%s\n' fanout fanout ingest store verify verify | sort | paste -sd,)" ]; echo $?) "($roles)"
exits=$(grep -c . "$T/exits" 2>/dev/null)
check "no service exited while starting (stages waited for the segment)" $([ "${exits:-0}" -eq 0 ]; echo $?) "($(cat "$T/exits" 2>/dev/null | paste -sd';'))"
check "the supervisor spawned no stage" $([ -z "$(ps -o pid= --ppid "$(pid_of supervisor)")" ]; echo $?)
health() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/_health"; }
wait_for 10 sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/_health)\" = 200 ]"
check "/_health 200" $? "($(curl -s "http://127.0.0.1:$PORT/_health"))"
mapfile -t hc < <(q '.services.fanout.healthcheck.test[1:][]' | while IFS= read -r a; do map "$a"; done)
hc_in() { # instance: the fanout healthcheck inside that replica (its mount namespace, its environment)
	(mapfile -t e < <(svc_env fanout); exec env -i "${e[@]}" nsenter --mount="/proc/$(pid_of "$1")/ns/mnt" -- "${hc[@]}")
}
hc_in fanout-1 >"$T/hc1" 2>&1 && hc_in fanout-2 >"$T/hc2" 2>&1
check "the fanout healthcheck passes in each replica (${hc[*]})" $? "($(cat "$T/hc1" "$T/hc2" | tr '\n' ' '))"
# A replica whose fanout hangs fails its own check; the other replica's still passes.
kill -STOP "$(pid_of fanout-1)"
hung() { ! hc_in fanout-1; }
wait_for 10 hung
check "a hung fanout fails its replica's healthcheck" $? "($(hc_in fanout-1 2>&1))"
hc_in fanout-2 >"$T/hc2" 2>&1
check "... while the other replica's passes" $? "($(cat "$T/hc2"))"
kill -CONT "$(pid_of fanout-1)"
wait_for 10 hc_in fanout-1
check "... and passes again once it runs" $?
check "the supervisor publishes the metrics port 2471 on 127.0.0.1 only" \
	"$(q '.services.supervisor.ports | map(tostring) | if any(. == "127.0.0.1:2471:2471") then 0 else 1 end')"
wait_for 10 sh -c "curl -sf http://127.0.0.1:$MPORT/metrics | grep -q '^baton_up{role=\"fanout\"'"
check "the fanouts serve /metrics on RELAY_METRICS_LISTEN (2471, mapped to $MPORT)" $?

# --- 3. a real flow ---------------------------------------------------------------------------
"$B/tools/fakepds" --port "$PDS_PORT" --accounts 20 --rate 100 --seconds 3 --start-on-subscribe >"$T/fakepds.log" 2>&1 &
OTHER+=($!)
wait_for 10 curl -sf "http://127.0.0.1:$PDS_PORT/_stats"
SUB="ws://127.0.0.1:$PORT/xrpc/com.atproto.sync.subscribeRepos"
"$B/tools/countconsumer" --url "$SUB" --seconds 40 --idle 4 >"$T/consumer.out" 2>"$T/consumer.err" &
CC=$!
OTHER+=($CC)
sleep 0.5
code=$(curl -s -o "$T/crawl.out" -w '%{http_code}' -H 'Content-Type: application/json' \
	-d "{\"hostname\":\"localhost:$PDS_PORT\"}" "http://127.0.0.1:$PORT/xrpc/com.atproto.sync.requestCrawl")
check "requestCrawl 200" $([ "$code" = 200 ]; echo $?) "($code $(cat "$T/crawl.out"))"
js() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }
for _ in $(seq 200); do
	st=$(curl -s "http://127.0.0.1:$PDS_PORT/_stats")
	[ "$(js "$st" done)" = true ] && break
	sleep 0.1
done
EMITTED=$(js "$st" emitted)
wait "$CC"
rc=$?
kv() { tail -n 1 "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
got=$(kv "$T/consumer.out" commits)
check "the consumer got every event fakepds emitted ($EMITTED)" \
	$([ "$rc" -eq 0 ] && [ "${EMITTED:-0}" -gt 0 ] && [ "${got:-0}" = "$EMITTED" ]; echo $?) "(exit $rc: $(tail -n 1 "$T/consumer.out"))"
check "seq strictly increases" $([ "$(kv "$T/consumer.out" seq_order_errors)" = 0 ]; echo $?)

# kill -9 one fanout; the restart policy starts the same command again; it claims a slot.
old=$(pid_of fanout-2)
kill -9 "$old"
gone_old() { ! kill -0 "$old" 2>/dev/null; }
wait_for 5 gone_old
fresh() {
	local p
	p=$(pid_of fanout-2)
	[ -n "$p" ] && [ "$p" != "$old" ] && all_running &&
		ctl status --json | jq -e --argjson p "$p" '[.stages[] | select(.role == "fanout" and .pid == $p)] | length == 1'
}
wait_for 30 fresh
check "after kill -9 a restarted fanout claims a slot (status: every stage running)" $? \
	"($(ctl status --json 2>&1 | jq -c '[.stages[] | [.role, .index, .pid, .state]]' 2>&1))"
new=$(pid_of fanout-2)
echo "# fanout restarts: $(grep -c '^fanout-2' "$T/exits") ($(grep '^fanout-2' "$T/exits" | paste -sd';'))"
# TCP sockets of pid $1 in state $2 (0A listening, 01 established) on local port $PORT, counted
# from /proc: no `ss` (iproute2 is not in a minimal Debian).
socks_of() {
	local hex inodes files=()
	hex=$(printf '%04X' "$PORT")
	inodes=$(for f in /proc/"$1"/fd/*; do readlink "$f" 2>/dev/null; done | sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p')
	for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && files+=("$f"); done
	[ -n "$inodes" ] || { echo 0; return; }
	awk -v p=":$hex" -v st="$2" 'NR == FNR { want[$1] = 1; next }
		FNR > 1 && substr($2, length($2) - 4) == p && $4 == st && ($10 in want) { n++ }
		END { print n + 0 }' <(echo "$inodes") "${files[@]}"
}
listening() { [ "$(socks_of "$new" 0A)" -gt 0 ]; }
wait_for 10 listening
check "the restarted fanout listens on the shared port" $?
# Replay to several consumers at once: SO_REUSEPORT spreads them over both fanouts.
CS=()
for i in $(seq 8); do
	"$B/tools/countconsumer" --url "$SUB?cursor=0" --seconds 20 --idle 3 >"$T/replay$i.out" 2>&1 &
	CS+=($!)
	OTHER+=($!)
done
sleep 1.5
served=$(socks_of "$new" 01)
ok=0
for i in $(seq 8); do
	wait "${CS[$((i - 1))]}" || ok=1
	[ "$(kv "$T/replay$i.out" commits)" = "$EMITTED" ] && [ "$(kv "$T/replay$i.out" seq_order_errors)" = 0 ] ||
		{ ok=1; echo "# replay $i: $(tail -n 1 "$T/replay$i.out")"; }
done
check "8 replaying consumers each get all $EMITTED events in seq order" $ok
check "the restarted fanout serves consumers" $([ "$served" -gt 0 ]; echo $?) "($served connections)"
wait_for 10 sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/_health)\" = 200 ]"
check "/_health 200 after the restart" $?

# docker compose up --scale fanout=3: a replica past RELAY_FANOUT_PROCS claims a free slot (there
# are 32) and serves; scaled down again (SIGTERM, exit 0: no restart) the relay stays healthy.
INST+=("fanout-3:fanout")
run_policy fanout-3 fanout &
three() { ctl status --json | jq -e '[.stages[] | select(.role == "fanout" and .state == "running")] | length == 3'; }
wait_for 30 three
check "a third fanout replica (past RELAY_FANOUT_PROCS=$N) claims a slot and runs" $? \
	"($(ctl status --json 2>&1 | jq -c '[.stages[] | [.role, .index, .pid, .state]]' 2>&1))"
p3=$(pid_of fanout-3)
listening3() { [ "$(socks_of "$p3" 0A)" -gt 0 ]; }
wait_for 10 listening3
check "... and listens on the shared port" $?
wait_for 10 sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/_health)\" = 200 ]"
check "... /_health 200 with three" $?
kill -TERM "$p3"
two() { ! kill -0 "$p3" 2>/dev/null && ctl status --json | jq -e '[.stages[] | select(.role == "fanout" and .state == "running")] | length == 2'; }
wait_for 20 two
check "scaled down to two: the third exits and is gone from status" $?
wait_for 10 sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/_health)\" = 200 ]"
check "... /_health 200 with two" $?

# SIGHUP to one replica (docker kill -s HUP): it hands its consumers to the other and exits 3, which
# restart: on-failure restarts.
old=$(pid_of fanout-1)
kill -HUP "$old"
rehup() { grep -q "^fanout-1 pid $old exit 3\$" "$T/exits" && [ "$(pid_of fanout-1)" != "$old" ] && all_running; }
wait_for 30 rehup
check "SIGHUP to a fanout replica: it hands over, exits 3 and is restarted by its policy" $? \
	"($(grep '^fanout-1' "$T/exits" | paste -sd';'))"

}
if [ "$fail" -eq 0 ]; then
	flow
else
	for f in "$T"/*.log; do echo "# $f:"; tail -n 5 "$f" | sed 's/^/#   /'; done
fi

# --- 4. stop (docker compose down: stages, then the supervisor) --------------------------------
pids=$(ours)
touch "$T/stopping"
for x in "${INST[@]}"; do kill -TERM "$(pid_of "${x%%:*}")" 2>/dev/null; done
stages_gone() { for x in "${INST[@]}"; do kill -0 "$(pid_of "${x%%:*}")" 2>/dev/null && return 1; done; return 0; }
wait_for 15 stages_gone
kill -TERM "$(pid_of supervisor)"
wait_for 15 sh -c "! kill -0 $(pid_of supervisor) 2>/dev/null"
sleep 0.2
# Exits of attempts that failed to claim a slot right after the kill are restarts, not stops.
bad=$(for x in "${INST[@]}" supervisor:supervisor; do
	i=${x%%:*}; grep "^$i pid $(pid_of "$i") " "$T/exits" | awk '$5 != 0 { print; next } { ok = 1 }
		END { if (!ok) print "'"$i"' did not exit" }'; done | paste -sd';')
check "SIGTERM stops every service with exit 0" $([ -z "$bad" ]; echo $?) "($bad)"
left=$(ours | paste -sd' ')
check "no process is left (ours: $(echo $pids | wc -w) before the stop)" $([ -z "$left" ]; echo $?) "(left: $left)"
NAME=$(sup_env RELAY_NAME)
check "the supervisor removed the segment and its socket" \
	$([ ! -e "$SHM/baton-$NAME.shm" ] && [ ! -e "$SHM/baton-$NAME-sup.sock" ]; echo $?) "($(ls "$SHM" | paste -sd' '))"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
