# tests/bench/lib.sh - shared helpers of the benchmark scripts (sourced, never run).
#
# Every bound a benchmark must reach is a ratio to a reference measured in the same run:
#   bench_row ID NAME VALUE UNIT REF_NAME REF_VALUE TARGET
# prints one aligned line
#   ID NAME  VALUE UNIT  | REF_NAME REF_VALUE  ratio R  target TARGET  ok|MISS
# and appends the same as one JSON object to $BENCH_JSONL (when set).  TARGET is "<=X" or ">=X"
# on the ratio VALUE/REF_VALUE, or "-" for a row that only informs (printed as "info").
# A missing or zero reference, or a missing value, is MISS: a bound that could not be measured
# is not met.
bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 == 0) print "n/a"; else printf "%.3f", a / b }'; }

bench_verdict() { # RATIO TARGET -> ok | MISS | info
	awk -v r="$1" -v t="$2" 'BEGIN {
		if (t == "-") { print "info"; exit }
		if (r == "n/a") { print "MISS"; exit }
		op = substr(t, 1, 2); x = substr(t, 3) + 0
		if ((op == "<=" && r + 0 <= x) || (op == ">=" && r + 0 >= x)) print "ok"; else print "MISS"
	}'
}

bench_row() { # ID NAME VALUE UNIT REF_NAME REF_VALUE TARGET
	local id=$1 name=$2 val=${3:-} unit=$4 rname=$5 ref=${6:-} target=$7
	local r v
	r=$(bench_ratio "$val" "$ref")
	v=$(bench_verdict "$r" "$target")
	printf '%-4s %-40s %12s %-6s | %-30s %12s  ratio %-7s target %-6s %s\n' \
		"$id" "$name" "${val:-n/a}" "$unit" "$rname" "${ref:-n/a}" "$r" "$target" "$v"
	if [ -n "${BENCH_JSONL:-}" ]; then
		printf '{"id":"%s","name":"%s","value":%s,"unit":"%s","reference":"%s","ref_value":%s,"ratio":%s,"target":"%s","verdict":"%s"}\n' \
			"$id" "$name" "${val:-null}" "$unit" "$rname" "${ref:-null}" \
			"$( [ "$r" = n/a ] && echo null || echo "$r")" "$target" "$v" >>"$BENCH_JSONL"
	fi
}
