#!/usr/bin/env bash
# Compares `vireo img bench` with `qemu-img bench` (same flags, identical images) and `convert` of a
# 1 GiB image. Prints seconds for each tool and the ratio vireo/qemu (below 1: Vireo is faster).
#
#   Benchmarks/storage/img-bench.sh [WORKDIR]
#   VIREO=path/to/vireo  COUNT4K=20000  COUNT64K=8000  SIZE=1G  Benchmarks/storage/img-bench.sh
#
# Build Vireo first: swift build -c release --product vireo   (the default VIREO is .build/release/vireo).
# WORKDIR must be on a file system that supports O_DIRECT (cache=none); not tmpfs.
set -euo pipefail

VIREO=${VIREO:-.build/release/vireo}
WORK=${1:-$(mktemp -d /var/tmp/vireo-img-bench.XXXXXX)}
SIZE=${SIZE:-1G}
COUNT4K=${COUNT4K:-20000}
COUNT64K=${COUNT64K:-8000}
# "Random" 4 KiB requests: qemu-img bench only strides, so a step of 1 MiB + 4 KiB scatters the
# requests over the whole image (offsets wrap modulo the image size).
RANDOM_STEP=$((1048576 + 4096))

command -v qemu-img >/dev/null || { echo "qemu-img not found (apt-get install qemu-utils)" >&2; exit 1; }
[ -x "$VIREO" ] || { echo "vireo binary not found at $VIREO (set VIREO=...)" >&2; exit 1; }
mkdir -p "$WORK"
echo "work dir: $WORK   vireo: $VIREO   $(qemu-img --version | head -1)"
echo "host: $(nproc) CPUs, $(uname -r)"

# One prefilled qcow2 image (64 KiB clusters), copied for each tool so both start identical.
base="$WORK/base.qcow2"
if [ ! -f "$base" ]; then
    qemu-img create -q -f qcow2 "$base" "$SIZE"
    qemu-io -f qcow2 -c "write -P 0x5a 0 $SIZE" "$base" >/dev/null
fi

seconds() { sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
now() { date +%s.%N; }

printf "%-44s %10s %10s %8s\n" "case" "qemu-img" "vireo" "ratio"
run_case() {  # name, bench args...
    local name=$1; shift
    cp --sparse=always "$base" "$WORK/q.qcow2"
    cp --sparse=always "$base" "$WORK/v.qcow2"
    sync
    local q v
    q=$(qemu-img bench -f qcow2 "$@" "$WORK/q.qcow2" | seconds)
    v=$("$VIREO" img bench -f qcow2 "$@" "$WORK/v.qcow2" | seconds)
    printf "%-44s %10s %10s %8s\n" "$name" "$q" "$v" "$(awk -v a="$v" -v b="$q" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
}

for cache in none writeback; do
    for depth in 1 32; do
        run_case "4k random read   d=$depth t=$cache" -c "$COUNT4K" -d "$depth" -s 4k -S "$RANDOM_STEP" -t "$cache"
        run_case "4k random write  d=$depth t=$cache" -w -c "$COUNT4K" -d "$depth" -s 4k -S "$RANDOM_STEP" -t "$cache"
        run_case "64k seq read     d=$depth t=$cache" -c "$COUNT64K" -d "$depth" -s 64k -t "$cache"
        run_case "64k seq write    d=$depth t=$cache" -w -c "$COUNT64K" -d "$depth" -s 64k -t "$cache"
    done
done

# convert: qcow2 -> qcow2 and qcow2 -> raw of the full 1 GiB image.
for out in qcow2 raw; do
    rm -f "$WORK/q.out" "$WORK/v.out"
    sync
    t0=$(now); qemu-img convert -f qcow2 -O "$out" "$base" "$WORK/q.out"; t1=$(now)
    "$VIREO" img convert -f qcow2 -O "$out" "$base" "$WORK/v.out"; t2=$(now)
    q=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    v=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')
    printf "%-44s %10s %10s %8s\n" "convert $SIZE qcow2 -> $out" "$q" "$v" "$(awk -v a="$v" -v b="$q" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    qemu-img compare -q "$WORK/q.out" "$WORK/v.out" || echo "  (warning: convert outputs differ)"
done
rm -f "$WORK/q.qcow2" "$WORK/v.qcow2" "$WORK/q.out" "$WORK/v.out"
