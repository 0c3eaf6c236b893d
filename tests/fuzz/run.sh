#!/bin/bash
# run.sh — builds the libFuzzer targets of tests/fuzz with clang (-fsanitize=fuzzer,address,
# undefined) and runs each for FUZZ_SECONDS (default 30), FUZZ_JOBS at a time (default 1),
# starting from tests/fuzz/corpus/<target>/ (seeds and regression inputs). Prints TAP: one
# result per target ("not ok" on a crash, leak, timeout or build failure; the crashing input is
# kept under $FUZZ_BUILD/artifacts/<target>/ and named in the output).
#   tests/fuzz/run.sh [target...]      env: FUZZ_SECONDS FUZZ_JOBS FUZZ_BUILD CC
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
SECS=${FUZZ_SECONDS:-30}
JOBS=${FUZZ_JOBS:-1}
OUT=$(realpath -m "${FUZZ_BUILD:-$ROOT/build-fuzz}")
CC=${FUZZ_CC:-clang}
ALL=(grpc_fuzz proto_fuzz h2_fuzz keypath_fuzz)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

if ! command -v "$CC" >/dev/null || ! command -v protoc-c >/dev/null; then
    echo "1..0 # SKIP $CC or protoc-c not installed"
    exit 77
fi
mkdir -p "$OUT/gen" "$OUT/obj" "$OUT/bin" || exit 1

# ---- build: the client library once (instrumented), each target linked against it
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -DETCDFS_FUZZ_HOOKS -fno-omit-frame-pointer
        -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
        -I"$ROOT/client" -I"$ROOT/cache" -I"$OUT/gen")
read -r -a pkg <<<"$(pkg-config --cflags libnghttp2 openssl libprotobuf-c 2>/dev/null)"
read -r -a libs <<<"$(pkg-config --libs libnghttp2 openssl libprotobuf-c 2>/dev/null)"
build_log="$OUT/build.log"
: >"$build_log"
build() {
    protoc-c --proto_path="$ROOT/client/proto" --c_out="$OUT/gen" \
        "$ROOT/client/proto/kv.proto" "$ROOT/client/proto/rpc.proto" || return 1
    local objs=() f o
    for f in "$OUT/gen/kv.pb-c.c" "$OUT/gen/rpc.pb-c.c" "$ROOT"/client/{grpc,tls,rpc,status,client,kv,watch,lease,maint}.c \
             "$ROOT/cache/keypath.c"; do
        [ -f "$f" ] || continue
        o="$OUT/obj/$(basename "$f" .c).o"
        # shellcheck disable=SC2086
        "$CC" "${CFLAGS[@]}" "${pkg[@]}" $san -fsanitize=fuzzer-no-link -c "$f" -o "$o" || return 1
        objs+=("$o")
    done
    for t in "${targets[@]}"; do
        # shellcheck disable=SC2086
        "$CC" "${CFLAGS[@]}" "${pkg[@]}" $san -fsanitize=fuzzer "$ROOT/tests/fuzz/$t.c" \
            "${objs[@]}" "${libs[@]}" -lpthread -o "$OUT/bin/$t" || return 1
    done
}
if ! build >>"$build_log" 2>&1; then
    echo "1..1"
    echo "not ok 1 - fuzz targets build with $CC"
    sed 's/^/# /' "$build_log" | tail -n 30
    exit 1
fi
grep -q warning "$build_log" && sed 's/^/# /' "$build_log" | grep -m 20 warning

# ---- run
run_one() {   # target index: writes $OUT/res/<target> "ok|not ok" line and a log
    local t=$1 i=$2 work="$OUT/corpus/$t" art="$OUT/artifacts/$t/" log="$OUT/logs/$t.log"
    mkdir -p "$work" "$art" "$OUT/logs" "$OUT/res"
    rm -f "$art"crash-* "$art"leak-* "$art"timeout-* "$art"oom-*
    local seeds="$ROOT/tests/fuzz/corpus/$t"
    [ -d "$seeds" ] || seeds=
    # New inputs go to the work corpus; the repository's corpus is only read.
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
        timeout -k 10 $((SECS + 120)) "$OUT/bin/$t" -max_total_time="$SECS" -max_len=8192 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art" \
        "$work" ${seeds:+"$seeds"} >"$log" 2>&1
    local rc=$? execs crashes
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    crashes=$(find "$art" -type f | wc -l)
    if [ "$rc" = 0 ] && [ "$crashes" = 0 ]; then
        echo "ok $i - $t: ${execs:-?} execs in ${SECS}s, no crash" >"$OUT/res/$t"
    else
        {
            echo "not ok $i - $t: exit $rc, $crashes crashing input(s) in $art (${execs:-?} execs)"
            grep -m 5 -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | sed 's/^/# /'
        } >"$OUT/res/$t"
    fi
}

echo "1..${#targets[@]}"
rm -rf "$OUT/res"
i=0
pids=()
for t in "${targets[@]}"; do
    i=$((i + 1))
    run_one "$t" "$i" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n
    done
done
wait
failed=0
for t in "${targets[@]}"; do
    if [ -s "$OUT/res/$t" ]; then
        cat "$OUT/res/$t"
        grep -q '^not ok' "$OUT/res/$t" && failed=1
    else
        echo "not ok - $t: no result"
        failed=1
    fi
done
exit "$failed"
