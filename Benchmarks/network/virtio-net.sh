#!/bin/sh
# TCP throughput between a lab L2 guest and its lab host over a tap: vireo-vmm's virtio-net vs
# QEMU's virtio-net-pci (vhost=off) on the same lab host, the same tap kind and the same guest
# (Debian cloud kernel, busybox dd | nc), as medians and Vireo/QEMU ratios.
# Usage: Benchmarks/network/virtio-net.sh [RUNS] [MiB]   (defaults 3 and 8: the lab moves well under 1 MiB/s guest → host)
set -eu
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
MB=${2:-8}
# Release vireo-vmm in $SCRATCH (default .build-rel; SCRATCH=.build reuses the main build folder).
SCRATCH=${SCRATCH:-.build-rel}
swift build --product vireo >/dev/null
swift build -c release --scratch-path "$SCRATCH" --product vireo-vmm >/dev/null
VMM=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/vireo-vmm
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cp -r lab/scenarios/virtio-net-bench "$OUT/virtio-net-bench"
echo "$RUNS" > "$OUT/virtio-net-bench/runs"
echo "$MB" > "$OUT/virtio-net-bench/mb"
"$(swift build --show-bin-path)/vireo" lab run "$OUT/virtio-net-bench" --vmm "$VMM" --timeout $((120 + RUNS * 240)) \
  --keep-results "$OUT/results" >&2
[ -f "$OUT/results/bench.txt" ] || { echo "no results" >&2; exit 1; }
grep BENCH-SKIP "$OUT/results/bench.txt" >&2 || true
awk -v mb="$MB" '
  $1 == "BENCH-EXITS" { e[$2] = e[$2] sprintf(" %.0f/%.0f", $5 / mb, $6 / mb) }
  $1 == "BENCH" { k = $2 " " $3; n[k]++; v[k, n[k]] = $5 }
  END {
    for (k in n) {
      c = n[k]
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[k, j] < v[k, i]) { t = v[k, i]; v[k, i] = v[k, j]; v[k, j] = t }
      med[k] = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
    }
    printf "| direction (%d MiB, busybox dd | nc) | vireo-vmm virtio-net | QEMU virtio-net-pci (vhost=off) | Vireo / QEMU |\n", mb
    print "|---|---|---|---|"
    split("tx rx", dirs, " "); names["tx"] = "guest → lab host"; names["rx"] = "lab host → guest"
    for (d = 1; d <= 2; d++) {
      a = med["vireo-vmm " dirs[d]]; b = med["qemu " dirs[d]]
      printf "| %s | %s MiB/s (%d runs) | %s MiB/s (%d runs) | %s |\n", names[dirs[d]], a, n["vireo-vmm " dirs[d]], b, n["qemu " dirs[d]], (a && b) ? sprintf("%.2fx", a / b) : "n/a"
    }
    printf "| lab host → guest: guest exits / interrupts injected per MiB, each run |%s |%s | |\n", e["vireo-vmm"], e["qemu"]
  }' "$OUT/results/bench.txt"
