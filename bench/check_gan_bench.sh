#!/bin/sh
# ctest check of gan_bench at a tiny config: check_gan_bench.sh TIMED GRAPHS SKIPPED BINARY ARGS...
# runs BINARY ARGS, then requires exit status 0, the header line, exactly TIMED measurement lines
# with a positive ms_per_iter, GRAPHS of them with a positive graph_nodes, SKIPPED skipped lines
# and no error line.
timed=$1 graphs=$2 skipped=$3
shift 3
out=$("$@") || { echo "check_gan_bench: $1 exited with $?"; echo "$out"; exit 1; }
echo "$out"
fail() { echo "check_gan_bench: $*"; exit 1; }
echo "$out" | head -n 1 | grep -q '^{"engine":"gan-engine"' || fail "no header line"
n=$(echo "$out" | grep -c '"ms_per_iter":[0-9]*\.*[0-9]*[1-9]')
[ "$n" -eq "$timed" ] || fail "$n lines with a positive ms_per_iter, expected $timed"
n=$(echo "$out" | grep -c '"graph_nodes":[1-9]')
[ "$n" -eq "$graphs" ] || fail "$n lines with graph_nodes, expected $graphs"
n=$(echo "$out" | grep -c '"skipped":')
[ "$n" -eq "$skipped" ] || fail "$n skipped lines, expected $skipped"
if echo "$out" | grep -q '"error":'; then fail "a measurement failed"; fi
echo "check_gan_bench: ok"
