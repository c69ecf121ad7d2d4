#!/bin/sh
# L2 boot-to-init-and-poweroff times inside one lab host: vireo-vmm vs QEMU -M pc vs QEMU -M microvm.
# Usage: Benchmarks/lab/boot.sh [RUNS]   (default 5; prints medians, ratios and a markdown snippet)
set -eu
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
SCRATCH=${SCRATCH:-.build-lab}
swift build --scratch-path "$SCRATCH" --product vireo >/dev/null
swift build --scratch-path "$SCRATCH" --product vireo-vmm >/dev/null 2>&1 || true
BIN=$(swift build --scratch-path "$SCRATCH" --show-bin-path)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# The scenario reads its run count from /scenario/runs: run a copy with that file added.
cp -r lab/scenarios/boot-bench "$OUT/boot-bench"
echo "$RUNS" > "$OUT/boot-bench/runs"
"$BIN/vireo" lab run "$OUT/boot-bench" --timeout $((120 + RUNS * 60)) --keep-results "$OUT/results" >&2
[ -f "$OUT/results/bench.txt" ] || { echo "no results" >&2; exit 1; }
grep BENCH-SKIP "$OUT/results/bench.txt" >&2 || true
awk '
  $1 == "BENCH" { n[$2]++; v[$2, n[$2]] = $4 }
  END {
    for (k in n) {
      c = n[k]
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[k, j] < v[k, i]) { t = v[k, i]; v[k, i] = v[k, j]; v[k, j] = t }
      med[k] = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
    }
    base = ("qemu-pc" in med) ? med["qemu-pc"] : 0
    print "| VMM (inside the lab host, L2 = Debian cloud kernel + busybox initramfs, 256 MiB, 1 vCPU) | runs | median boot-to-init-and-poweroff | vs QEMU -M pc |"
    print "|---|---|---|---|"
    split("vireo-vmm qemu-pc qemu-microvm", order, " ")
    for (o = 1; o <= 3; o++) {
      k = order[o]
      if (!(k in med)) { print "| " k " | 0 | (skipped) | |"; continue }
      printf "| %s | %d | %d ms | %s |\n", k, n[k], med[k], base ? sprintf("%.2fx", med[k] / base) : ""
    }
  }' "$OUT/results/bench.txt"
