#!/usr/bin/env bash
# NAME
#	dash.sh - the operator dashboard (/dash, /dash.json on RELAY_METRICS_LISTEN; issue 9)
# DESCRIPTION
#	A relay (2 verify, 2 fanouts) takes events from one fakepds host and has one consumer.
#	/dash.json (curl + jq) has every key the page reads, every stage up, the committed count,
#	a rate, the host and the consumer.  HEAD /dash answers without a body; other paths 404.
#	Headless Chromium (/usr/bin/chromium, `make deps`) loads /dash: the DOM it dumps after the
#	page's script ran has a row for every stage, the committed count, the host, the consumer
#	and the "updated" line; its screenshot is a 1200x900 PNG of many colours, among them the
#	green of the "ok" health badge (set by the script from /dash.json).
#	Without chromium those checks print SKIP and count neither way.
set -u
skip=""
B=$(cd "${1:-build}" && pwd)
T=$(mktemp -d /tmp/baton-dash.XXXXXX)
pass=0 fail=0
check() { if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1 ${3:-}"; fi; }
port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT=$(port) MPORT=$(port)
for _ in 1 2 3 4 5; do
	FP=$(port)
	"$B/tools/fakepds" --port "$FP" --accounts 10 --rate 20 --seconds 600 --backlog 50 --start-on-subscribe >"$T/fakepds.log" 2>&1 &
	pds=$!
	for _ in $(seq 100); do grep -q "fakepds: listening" "$T/fakepds.log" && break; kill -0 $pds 2>/dev/null || break; sleep 0.1; done
	grep -q "fakepds: listening" "$T/fakepds.log" && break
	kill $pds 2>/dev/null; wait $pds 2>/dev/null
done
grep -q "fakepds: listening" "$T/fakepds.log"
check "fakepds up" $? "($(tail -n 2 "$T/fakepds.log"))"
export RELAY_DATA_DIR=$T/data RELAY_SHM_DIR=$T RELAY_NAME=dash$$ RELAY_API_BIND=127.0.0.1:$PORT \
	RELAY_METRICS_LISTEN=127.0.0.1:$MPORT RELAY_PLC_HOST=http://127.0.0.1:$FP RELAY_ALLOW_INSECURE_HOSTS=true \
	RELAY_VERIFY_PROCS=2 RELAY_FANOUT_PROCS=2 RELAY_RING_MB=32 RELAY_BCAST_RING_MB=32
"$B/baton" >"$T/relay.log" 2>&1 &
sup=$!
M=http://127.0.0.1:$MPORT
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/_health")" = 200 ]; }
for _ in $(seq 100); do healthy && break; sleep 0.2; done
healthy
check "relay up" $?
"$B/tools/countconsumer" --url "ws://127.0.0.1:$PORT/xrpc/com.atproto.sync.subscribeRepos" --seconds 60 --idle 60 \
	>"$T/consumer.out" 2>"$T/consumer.err" &
cc=$!
code=$(curl -s -o "$T/crawl.out" -w '%{http_code}' -H 'Content-Type: application/json' \
	-d "{\"hostname\":\"localhost:$FP\"}" "http://127.0.0.1:$PORT/xrpc/com.atproto.sync.requestCrawl")
check "requestCrawl 200" $([ "$code" = 200 ]; echo $?) "($code $(cat "$T/crawl.out"))"
ok=1
for _ in $(seq 100); do
	j=$(curl -s "$M/dash.json")
	jq -e '.committed > 50 and .hosts.known >= 1 and .consumers.connected >= 1' <<<"$j" >/dev/null 2>&1 && { ok=0; break; }
	sleep 0.2
done
check "/dash.json: events committed, a host, a consumer" $ok "($j)"
sleep 1 # the rate is over the store's recent batches: 20 events/s from fakepds
j=$(curl -s "$M/dash.json")
echo "# /dash.json: $j"
jq -e 'has("at_ms") and has("healthy") and has("degraded") and has("health") and has("events_per_s") and has("committed")
	and has("last_seq") and has("received") and has("accepted") and has("stages") and has("drops") and has("hosts")
	and has("consumers") and (.hosts | has("known") and has("active") and has("recent") and has("subscribed") and has("by_status"))
	and (.consumers | has("connected") and has("queued_bytes") and has("max_lag") and has("commit_send_p50_ms")
	     and has("commit_send_p99_ms") and has("fanouts"))' <<<"$j" >/dev/null
check "/dash.json has every key" $?
jq -e '[.stages[] | "\(.role)-\(.index)"] | sort == ["fanout-0","fanout-1","ingest-0","store-0","verify-0","verify-1"]' <<<"$j" >/dev/null
check "/dash.json: every stage once" $?
jq -e '[.stages[] | select(.up and .pid > 0 and .uptime_s > 0)] | length == 6' <<<"$j" >/dev/null
check "/dash.json: every stage up with a pid and an uptime" $?
jq -e '.healthy and .events_per_s > 0 and .hosts.by_status.active >= 1 and (.consumers.fanouts | length == 2)
	and ([.drops[] | select(.n <= 0)] | length == 0)' <<<"$j" >/dev/null
check "/dash.json: healthy, a rate, the host active, 2 fanouts, only non-zero drops" $?
jq -e '[.consumers.fanouts[] | select(.consumers > 0)][0] | .sent_seq > 0 and .lag >= 0' <<<"$j" >/dev/null
check "/dash.json: the consumer's fanout sent seqs" $?

# HEAD by hand (curl -I would not notice a body): the answer ends after the headers.
head=$(exec 3<>"/dev/tcp/127.0.0.1/$MPORT" && printf 'HEAD /dash HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 &&
	timeout 5 cat <&3 | tr -d '\r')
grep -qi '^content-type: text/html' <<<"$head" && [ -z "$(sed '1,/^$/d' <<<"$head")" ] && grep -q '^HTTP/1.1 200' <<<"$head"
check "HEAD /dash: 200 text/html, no body" $? "($head)"
curl -s -o "$T/dash.html" "$M/dash"
grep -q 'id=stages' "$T/dash.html" && ! grep -qiE '(src|href)=.?(https?:)?//' "$T/dash.html"
check "GET /dash: the page, nothing fetched from elsewhere" $?
code=$(curl -s -o /dev/null -w '%{http_code}' "$M/dash/x")
check "other paths 404" $([ "$code" = 404 ]; echo $?) "($code)"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$M/dash.json")
check "POST /dash.json 405" $([ "$code" = 405 ]; echo $?) "($code)"

CHROME=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROME" ]; then
	chrome() { timeout 60 "$CHROME" --headless=new --no-sandbox --disable-gpu --user-data-dir="$T/chrome" \
		--no-first-run --disable-extensions "$@" 2>>"$T/chrome.err"; }
	chrome --virtual-time-budget=5000 --dump-dom "$M/dash" >"$T/dom.html"
	check "chromium dumped the DOM" $([ -s "$T/dom.html" ]; echo $?)
	miss=""
	for r in ingest-0 store-0 verify-0 verify-1 fanout-0 fanout-1; do
		grep -q "data-key=\"$r\"" "$T/dom.html" || miss="$miss $r"
	done
	check "DOM: a stage row for every stage" $([ -z "$miss" ]; echo $?) "(missing:$miss)"
	n=$(grep -o '<td>committed</td><td class="n">[0-9,]*</td>' "$T/dom.html" | sed 's/.*"n">//; s/<.*//; s/,//g')
	check "DOM: a non-zero committed count" $([ "${n:-0}" -gt 0 ]; echo $?) "(${n:-none})"
	grep -q '<td>status active</td><td class="n">1</td>' "$T/dom.html" && grep -q '<td>known</td><td class="n">1</td>' "$T/dom.html"
	check "DOM: hosts by status" $?
	grep -qE '<div id="lag">[1-9][0-9]* connected' "$T/dom.html"
	check "DOM: consumers connected" $?
	grep -qE '<div id="updated" class="">updated 20[0-9-]+ [0-9:]+ UTC</div>' "$T/dom.html" &&
		grep -qE '<span id="health" class="ok"' "$T/dom.html" && grep -q '<table id="drops">' "$T/dom.html"
	check "DOM: updated line, health ok, drops table" $?
	grep -qE '<span id="eps" class="big">[0-9]+\.[0-9]</span>' "$T/dom.html"
	check "DOM: events/s shown" $? "($(grep -o '<span id="eps"[^/]*' "$T/dom.html"))"
	n=$(grep -o '<td class="up">up</td>' "$T/dom.html" | wc -l)
	check "DOM: 6 stages up" $([ "$n" = 6 ]; echo $?) "($n)"

	chrome --virtual-time-budget=5000 --window-size=1200,900 --screenshot="$T/dash.png" "$M/dash" >/dev/null
	out=$(python3 - "$T/dash.png" <<-'EOF'
		import struct, sys, zlib
		d = open(sys.argv[1], 'rb').read()
		assert d[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
		w, h, depth, ctype = struct.unpack('>IIBB', d[16:26])
		idat, i = b'', 8
		while i < len(d):
		    n, t = struct.unpack('>I4s', d[i:i + 8])
		    if t == b'IDAT':
		        idat += d[i + 8:i + 8 + n]
		    i += 12 + n
		raw = zlib.decompress(idat)
		assert depth == 8 and ctype in (2, 6), 'unexpected PNG type %d/%d' % (depth, ctype)
		bpp = 3 if ctype == 2 else 4
		stride = w * bpp
		prev, colours = bytearray(stride), set()
		for y in range(h):
		    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
		    for x in range(stride):
		        a = line[x - bpp] if x >= bpp else 0
		        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
		        if f == 1: line[x] = (line[x] + a) & 255
		        elif f == 2: line[x] = (line[x] + b) & 255
		        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
		        elif f == 4:
		            p = a + b - c
		            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
		            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
		    colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp))
		    prev = line
		print(w, h, len(d), len(colours), int(bytes([0x10, 0x7a, 0x2a]) in colours))
	EOF
	)
	read -r w h size colours green <<<"$out"
	check "screenshot: a 1200x900 PNG" $([ "$w" = 1200 ] && [ "$h" = 900 ]; echo $?) "($out)"
	check "screenshot: not blank (${colours:-0} colours seen, $size bytes)" \
		$([ "${size:-0}" -gt 20000 ] && [ "${colours:-0}" -gt 8 ]; echo $?) "($out)"
	check "screenshot: the health badge is green (#107a2a: the script rendered /dash.json)" $([ "${green:-0}" = 1 ]; echo $?) "($out)"
	cp "$T/dash.png" "${BT_TEST_TMP:-/tmp}/dash-$$.png" 2>/dev/null && echo "# screenshot: ${BT_TEST_TMP:-/tmp}/dash-$$.png"
else
	skip=" (SKIP: no chromium)"
	echo "SKIP: no chromium at $CHROME (make deps installs it): the DOM and screenshot checks did not run"
fi

kill $cc 2>/dev/null; wait $cc 2>/dev/null
kill -INT $sup; wait $sup
check "clean stop" $?
! grep -qE 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "$T/relay.log"
check "no sanitizer report in the relay's log" $? "($(grep -m1 -E 'Sanitizer|runtime error:' "$T/relay.log"))"
kill $pds 2>/dev/null; wait $pds 2>/dev/null
if [ $fail -eq 0 ]; then rm -rf "$T"; else echo "# logs in $T"; fi
echo "$pass passed, $fail failed$skip"
[ $fail -eq 0 ]
