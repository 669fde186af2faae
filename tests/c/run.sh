#!/usr/bin/env bash
# Builds the C stress tests of csrc/dc_ring.h, csrc/dc_seqlock.h and
# csrc/dc_sendloop.h under ThreadSanitizer and under AddressSanitizer +
# UndefinedBehaviorSanitizer and runs each case for SECONDS (default 2): the
# ring in block and in drop mode, the seqlock, and the send loop. Any sanitizer report or failed check fails the script.
#
#   bash tests/c/run.sh [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
csrc=$here/../../csrc
secs=${1:-2}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c11 -Wall -Wextra -Werror -O1 -g -pthread -I"$csrc")
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
export ASAN_OPTIONS="abort_on_error=1 detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1"
for san in thread address,undefined; do
  extra=()
  # gcc warns that TSan does not model atomic_thread_fence: the ring's fences
  # guard the speculative reads stress_ring.c explains, nothing TSan checks
  [ "$san" = thread ] && extra=(-Wno-tsan) || extra=(-fno-sanitize-recover=all)
  for t in ring seqlock sendloop; do
    gcc "${flags[@]}" "${extra[@]}" -fsanitize="$san" "$here/stress_$t.c" -o "$out/stress_$t"
  done
  echo "-- $san"
  "$out/stress_ring" block "$secs"
  "$out/stress_ring" drop "$secs"
  "$out/stress_seqlock" "$secs"
  "$out/stress_sendloop" "$secs"
done
