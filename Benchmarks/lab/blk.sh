#!/bin/sh
# virtio-blk throughput inside one lab host: vireo-vmm vs QEMU -M pc virtio-blk-pci, same raw backing file.
# Usage: Benchmarks/lab/blk.sh [RUNS]   (default 3; prints medians in MB/s and vireo/QEMU ratios: above 1 = Vireo faster)
# Sequential rows: busybox dd in the guest. Random 4 KiB rows: Benchmarks/lab/randio.c, built here statically
# with the host's cc and put into the L2 initramfs by the scenario's run.sh (MB/s are 10^6 bytes/s: a 4 KiB row's IOPS = MB/s x 244).
set -eu
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
# vireo-vmm in release in $SCRATCH (default .build-rel, shared with Benchmarks/network/virtio-net.sh;
# the data path is byte copies a debug build makes several times slower); the CLI from the main build.
SCRATCH=${SCRATCH:-.build-rel}
swift build --product vireo >/dev/null
swift build -c release --scratch-path "$SCRATCH" --product vireo-vmm >/dev/null
command -v cc >/dev/null || { echo "blk.sh: needs a C compiler (cc) with a static libc (Debian: libc6-dev)" >&2; exit 1; }
BIN=$(swift build --show-bin-path)
VMM=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/vireo-vmm
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cp -r lab/scenarios/blk-bench "$OUT/blk-bench"
echo "$RUNS" > "$OUT/blk-bench/runs"
# The L2 guest is x86_64 Linux with nothing but busybox: the tool must be static.
cc -static -O2 -Wall -o "$OUT/blk-bench/randio" Benchmarks/lab/randio.c
"$BIN/vireo" lab run "$OUT/blk-bench" --vmm "$VMM" --timeout $((120 + RUNS * 400)) --keep-results "$OUT/results" >&2
[ -f "$OUT/results/bench.txt" ] || { echo "no results" >&2; exit 1; }
grep BENCH-SKIP "$OUT/results/bench.txt" >&2 || true
awk '
  $1 == "BENCH" { k = $2 " " $3; n[k]++; v[k, n[k]] = $5; tests[$3] = 1 }
  END {
    for (k in n) {
      c = n[k]
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[k, j] < v[k, i]) { t = v[k, i]; v[k, i] = v[k, j]; v[k, j] = t }
      med[k] = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
    }
    print "| test (L2 guest, O_DIRECT) | runs | vireo-vmm MB/s | QEMU virtio-blk-pci MB/s | vireo / QEMU |"
    print "|---|---|---|---|---|"
    nt = split("seq-write-1m seq-read-1m write-4k-qd1 read-4k-qd1 rand-read-4k-qd1 rand-write-4k-qd1 rand-read-4k-qd16 rand-write-4k-qd16", order, " ")
    for (o = 1; o <= nt; o++) {
      t = order[o]; a = med["vireo-vmm " t]; b = med["qemu-pc " t]
      printf "| %s | %d | %.1f | %.1f | %s |\n", t, n["vireo-vmm " t], a, b, (b > 0 ? sprintf("%.2f", a / b) : "")
    }
  }' "$OUT/results/bench.txt"
