#!/usr/bin/env bash
# Compares `vireo img bench` with `qemu-img bench` (same flags, identical images) and `convert` of the
# whole image. Prints seconds for each tool and the ratio vireo/qemu (below 1: Vireo is faster).
#
#   Benchmarks/storage/img-bench.sh [WORKDIR]
#   VIREO=path/to/vireo  COUNT4K=20000  COUNT64K=8000  SIZE=1G  REPEAT=3  Benchmarks/storage/img-bench.sh
#
# Each case runs REPEAT times, the two tools alternating, and the best (lowest) time of each is shown:
# on a shared machine that is the figure least disturbed by other work.
#
# Build Vireo first: swift build -c release --product vireo   (the default VIREO is .build/release/vireo).
# WORKDIR must be on a file system that supports O_DIRECT (cache=none); not tmpfs.
# Rows: 4 KiB "random" read/write and 64 KiB sequential read/write at depth 1 and 32 with cache=none
# (O_DIRECT) and writeback; 4 KiB random writes to a fresh image (cluster allocation); convert
# qcow2 -> raw and raw -> qcow2.
set -euo pipefail

VIREO=${VIREO:-.build/release/vireo}
WORK=${1:-$(mktemp -d /var/tmp/vireo-img-bench.XXXXXX)}
SIZE=${SIZE:-1G}
COUNT4K=${COUNT4K:-20000}
COUNT64K=${COUNT64K:-8000}
REPEAT=${REPEAT:-3}
# "Random" 4 KiB requests: qemu-img bench only strides, so a step of 1 MiB + 4 KiB scatters the
# requests over the whole image (offsets wrap modulo the image size).
RANDOM_STEP=$((1048576 + 4096))

command -v qemu-img >/dev/null || { echo "qemu-img not found (apt-get install qemu-utils)" >&2; exit 1; }
[ -x "$VIREO" ] || { echo "vireo binary not found at $VIREO (set VIREO=...)" >&2; exit 1; }
mkdir -p "$WORK"
echo "work dir: $WORK   vireo: $VIREO   $(qemu-img --version | head -1)"
echo "host: $(nproc) CPUs, $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# One prefilled qcow2 image (64 KiB clusters); each tool works on its own identical copy. The write
# cases only overwrite allocated clusters, so the layout both tools see stays the same throughout.
base="$WORK/base.qcow2"
if [ ! -f "$base" ]; then
    qemu-img create -q -f qcow2 "$base" "$SIZE"
    qemu-io -f qcow2 -c "write -P 0x5a 0 $SIZE" "$base" >/dev/null
fi
cp --sparse=always "$base" "$WORK/q.qcow2"
cp --sparse=always "$base" "$WORK/v.qcow2"
sync

seconds() { sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
now() { date +%s.%N; }
ratio() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
row() { printf "%-44s %10s %10s %8s\n" "$1" "$2" "$3" "$(ratio "$2" "$3")"; }

printf "%-44s %10s %10s %8s\n" "case" "qemu-img" "vireo" "ratio"
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }'; }
run_case() {  # name, bench args...
    local name=$1; shift
    local q="" v="" i
    for ((i = 0; i < REPEAT; i++)); do
        q=$(best "$q" "$(qemu-img bench -f qcow2 "$@" "$WORK/q.qcow2" | seconds)")
        v=$(best "$v" "$("$VIREO" img bench -f qcow2 "$@" "$WORK/v.qcow2" | seconds)")
    done
    row "$name" "$q" "$v"
}

for cache in none writeback; do
    for depth in 1 32; do
        run_case "4k random read   d=$depth t=$cache" -c "$COUNT4K" -d "$depth" -s 4k -S "$RANDOM_STEP" -t "$cache"
        run_case "4k random write  d=$depth t=$cache" -w -c "$COUNT4K" -d "$depth" -s 4k -S "$RANDOM_STEP" -t "$cache"
        run_case "64k seq read     d=$depth t=$cache" -c "$COUNT64K" -d "$depth" -s 64k -t "$cache"
        run_case "64k seq write    d=$depth t=$cache" -w -c "$COUNT64K" -d "$depth" -s 64k -t "$cache"
    done
done

# Cluster allocation: 4 KiB random writes into fresh (empty) images, one new cluster per request.
for depth in 1 32; do
    q="" v=""
    for ((i = 0; i < REPEAT; i++)); do
        rm -f "$WORK/fq.qcow2" "$WORK/fv.qcow2"
        qemu-img create -q -f qcow2 "$WORK/fq.qcow2" "$SIZE"
        qemu-img create -q -f qcow2 "$WORK/fv.qcow2" "$SIZE"
        q=$(best "$q" "$(qemu-img bench -f qcow2 -w -c "$COUNT4K" -d "$depth" -s 4k -S "$RANDOM_STEP" -t none "$WORK/fq.qcow2" | seconds)")
        v=$(best "$v" "$("$VIREO" img bench -f qcow2 -w -c "$COUNT4K" -d "$depth" -s 4k -S "$RANDOM_STEP" -t none "$WORK/fv.qcow2" | seconds)")
        qemu-img check -q "$WORK/fv.qcow2" || echo "  (warning: qemu-img check found problems in vireo's fresh image)"
    done
    row "4k random write fresh d=$depth t=none" "$q" "$v"
done
rm -f "$WORK/fq.qcow2" "$WORK/fv.qcow2" "$WORK/q.qcow2" "$WORK/v.qcow2"

# convert of the whole image: qcow2 -> raw, then raw -> qcow2 (from qemu-img's raw output).
convert_case() {  # input format, output format, input
    local from=$1 to=$2 input=$3 q="" v="" t0 t1 i
    for ((i = 0; i < REPEAT; i++)); do
        rm -f "$WORK/cq.$to" "$WORK/cv.$to"
        sync
        t0=$(now); qemu-img convert -f "$from" -O "$to" "$input" "$WORK/cq.$to"; t1=$(now)
        q=$(best "$q" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
        sync
        t0=$(now); "$VIREO" img convert -f "$from" -O "$to" "$input" "$WORK/cv.$to"; t1=$(now)
        v=$(best "$v" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    done
    row "convert $SIZE $from -> $to" "$q" "$v"
    qemu-img compare -q -f "$to" -F "$to" "$WORK/cq.$to" "$WORK/cv.$to" || echo "  (warning: convert outputs differ)"
}
convert_case qcow2 raw "$base"
mv "$WORK/cq.raw" "$WORK/in.raw"
rm -f "$WORK/cv.raw"
convert_case raw qcow2 "$WORK/in.raw"
rm -f "$WORK/in.raw" "$WORK/cq.qcow2" "$WORK/cv.qcow2"
