#!/usr/bin/env bash
# tests/bench/t5_scale.sh BUILD_DIR - target 5: N upstream connections in one ingest
# (docs/bench-targets.md).  Never fails: it only prints.
# Knobs: T5_HOSTS (5000), T5_SETTLE (5 s after the last connection before RSS is read),
#        T5_TIMEOUT (400 s for the crawls and connections), T5_CRAWL_PARALLEL (8),
#        T5_TRICKLE (10: every host sends an #info frame every 10 s, so every connection's read
#        path is in use; 0 = idle connections).
# tools/manyhosts serves N idle PDS hosts (describeServer + an idle subscribeRepos) on N ports of
# 127.0.0.1 and requestCrawls each (localhost:PORT) on the relay (RELAY_ALLOW_INSECURE_HOSTS=true,
# RELAY_NEW_HOSTS_PER_DAY_LIMIT raised: its default of 50 would refuse the 51st host).
# Rows: ingest VmRSS growth / connected hosts vs 64 KiB; the sum of VmRSS of the supervisor and
# every stage vs 1 GiB (shared-memory ring pages count in every process that touched them; the
# Pss sum, which counts them once, is printed as info).  The hosts send no commits: this is the
# cost of a connection with a trickle of small frames, not of a busy one.
set -u
cd "$(dirname "$0")/../.."
source tests/bench/relay.sh "${1:-build}"
N=${T5_HOSTS:-5000}
SETTLE=${T5_SETTLE:-5}
TRICKLE=${T5_TRICKLE:-10}
TMO=${T5_TIMEOUT:-400}
[ -x "$TOOLS/manyhosts" ] || skip "tools/manyhosts missing (make all)"
need=$((2 * N + 512))
ulimit -n "$(ulimit -Hn)" 2>/dev/null
lim=$(ulimit -n)
echo "== t5 scale: hosts=$N trickle=${TRICKLE}s, ulimit -n $lim (needed ~$need by manyhosts, ~$((N + 256)) by ingest)"
[ "$lim" = unlimited ] || [ "$lim" -ge "$need" ] || echo "bench: ulimit -n $lim is below $need: some hosts will fail (raise the hard limit)"
relay_start RELAY_NEW_HOSTS_PER_DAY_LIMIT=1000000 || skip "relay failed"
pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
ALL="$SUP_PID $(stage_pids | tr '\n' ' ')"
ING=$(stage_pids baton-ingest | head -n 1)
sleep 2
ING0=$(rss_kb "$ING")
declare -A R0
for p in $ALL; do R0[$p]=$(rss_kb "$p"); done
t0=$(now)
bg "$TOOLS/manyhosts" --n "$N" --crawl "$API" --crawl-parallel "${T5_CRAWL_PARALLEL:-8}" --trickle "$TRICKLE" --ports-file "$T/ports" \
	>"$T/manyhosts.out" 2>"$T/manyhosts.err"
for _ in $(seq 300); do [ -s "$T/ports" ] && [ "$(wc -l <"$T/ports")" -ge "$N" ] && break; grep -q failed "$T/manyhosts.err" && break; sleep 0.1; done
P0=$(head -n 1 "$T/ports" 2>/dev/null)
st= subs=0 done_at=
while awk -v a="$t0" -v n="$(now)" -v m="$TMO" 'BEGIN { exit !(n - a < m) }'; do
	st=$(curl -s "http://127.0.0.1:$P0/_stats")
	subs=$(js "$st" subs); cr=$(js "$st" crawled); cf=$(js "$st" crawl_failed)
	if [ $(( ${cr:-0} + ${cf:-0} )) -ge "$N" ] && [ "${subs:-0}" -ge "${cr:-0}" ]; then done_at=$(now); break; fi
	kill -0 "$ING" 2>/dev/null || { echo "bench: ingest $ING is gone"; break; }
	sleep 0.5
done
echo "manyhosts: $st after $(calc "${done_at:-$(now)} - $t0") s$([ -z "$done_at" ] && echo " (timed out)")"
head -n 5 "$T/manyhosts.err" | sed 's/^/    | /'
# At least one trickle round after the last connection, so every connection has read a frame.
sleep "$(awk -v a="$SETTLE" -v b="$TRICKLE" 'BEGIN { print (b + 1 > a ? b + 1 : a) }')"
st=$(curl -s "http://127.0.0.1:$P0/_stats")
subs=$(js "$st" subs)
ING1=$(rss_kb "$ING")
SUM=0 PSS=0
for p in $ALL; do
	r=$(rss_kb "$p"); SUM=$((SUM + r)); PSS=$((PSS + $(pss_kb "$p")))
	printf '  %-14s pid %-7s VmRSS %8s KiB (before crawls %s)\n' "$(cat "/proc/$p/comm" 2>/dev/null)" "$p" "$r" "${R0[$p]}"
done
kill -0 "$ING" 2>/dev/null || echo "bench: the first ingest died (restarted?): per-connection figure is not meaningful"
echo "ingest open fds: $(ls "/proc/$ING/fd" 2>/dev/null | wc -l)"
PER=$(awk -v a="$ING0" -v b="$ING1" -v n="$subs" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n }')
bench_row 5 "ingest KiB resident per connection" "$PER" KiB "reference 64 KiB" 64 "<=1"
bench_row 5 "whole stack VmRSS sum" "$SUM" KiB "1 GiB" 1048576 "<=1"
bench_row 5i "whole stack Pss sum" "$PSS" KiB "1 GiB" 1048576 -
CRATE=$(awk -v n="${subs:-0}" -v a="$t0" -v b="${done_at:-$(now)}" 'BEGIN { if (b > a) printf "%.1f", n / (b - a) }')
echo "admission: ${subs:-0} hosts connected in $(calc "${done_at:-$(now)} - $t0") s = $CRATE hosts/s (requestCrawl: 2 forwarding workers per fanout, a describeServer probe and a store addHost each)"
bench_row 5i "upstream connections open" "${subs:-0}" "" "hosts asked" "$N" -
echo "bench: t5 done"
exit 0
