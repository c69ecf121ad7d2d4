#!/bin/sh
# Lab image build times (cold cache, then cached) and lab-host boot time.
# Usage: Benchmarks/lab/build.sh [RUNS]   (builds `vireo` first; prints a markdown snippet)
set -eu
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
SCRATCH=${SCRATCH:-.build-lab}
swift build --scratch-path "$SCRATCH" --product vireo >/dev/null
swift build --scratch-path "$SCRATCH" --product vireo-vmm >/dev/null 2>&1 || true
BIN=$(swift build --scratch-path "$SCRATCH" --show-bin-path)
VIREO="$BIN/vireo"
COLD=$(mktemp -d)
trap 'rm -rf "$COLD"' EXIT

now() { date +%s.%N; }
elapsed() { awk "BEGIN { print $2 - $1 }"; }

t0=$(now); VIREO_LAB_CACHE="$COLD" "$VIREO" lab build >/dev/null 2>&1; t1=$(now)
VIREO_LAB_CACHE="$COLD" "$VIREO" lab build >/dev/null 2>&1; t2=$(now)
cold=$(elapsed "$t0" "$t1"); warm=$(elapsed "$t1" "$t2")
size=$(du -sh "$COLD" | cut -f1)

boots=""; inits=""
i=1
while [ "$i" -le "$RUNS" ]; do
  s=$(now)
  out=$(VIREO_LAB_CACHE="$COLD" "$VIREO" lab run Benchmarks/lab/l1-boot --verbose 2>/dev/null)
  e=$(now)
  boots="$boots $(elapsed "$s" "$e")"
  inits="$inits $(echo "$out" | sed -n 's/^L1 init at \([0-9.]*\)s uptime.*/\1/p')"
  i=$((i + 1))
done
median() { printf '%s\n' $* | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

cat <<MD
### Lab images and lab host boot ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'))

| What | Time |
|---|---|
| \`vireo lab build\`, cold cache (L1 base with vireo-vmm + QEMU + L2 kernel, L2 initramfs, rootfs) | $(printf '%.2f' "$cold") s ($size cache) |
| \`vireo lab build\`, cached | $(printf '%.2f' "$warm") s |
| lab host (TCG, EPYC+svm, 1 vCPU): kernel start to L1 init, median of $RUNS | $(median $inits) s |
| \`vireo lab run\` of an empty scenario, wall, median of $RUNS | $(printf '%.2f' "$(median $boots)") s |
MD
