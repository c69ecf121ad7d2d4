#!/usr/bin/env bash
# The `vm:` port rate alone: a switch with two `vm:` ports, vmport-blast (messages, then shared-memory
# rings) run RUNS times each, and each run's frames per second of the switch's own CPU time (from
# /proc/PID/stat): the "on one core" figure when sender, receiver and switch share the host's cores.
#
#   Benchmarks/network/vmport-bench.sh [runs] [seconds]      (default 3 runs of 4 s)
set -euo pipefail
runs=${1:-3} seconds=${2:-4}
root=$(cd "$(dirname "$0")/../.." && pwd)
switchd=${VIREO_SWITCHD:-$root/.build-sw/release/vireo-switchd}
if [[ ! -x $switchd ]]; then
    echo "vmport-bench: building vireo-switchd (release)" >&2
    (cd "$root" && swift build -c release --scratch-path .build-sw --product vireo-switchd >&2)
fi
dir=$(mktemp -d /tmp/vmport-bench.XXXXXX)
"$switchd" --name vpb --socket-dir "$dir" --port vm:va,tag=10 --port vm:vb,tag=10 --log-level warning &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do [[ -S $dir/vpb.ctl ]] && break; sleep 0.1; done
cc -O2 -pthread -I "$root/Sources/CVireoLinux/include" -I "$root/Benchmarks/network" -o "$dir/vmport-blast" \
    "$root/Benchmarks/network/vmport-blast.c" "$root/Benchmarks/network/ring_port.c" "$root/Sources/CVireoLinux/frame_ring.c"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
for mode in messages rings; do
    for run in $(seq "$runs"); do
        before=$(ticks)
        read -r received _ < <("$dir/vmport-blast" $([[ $mode == rings ]] && echo --rings) "$dir/vpb-va.sock" "$dir/vpb-vb.sock" "$seconds")
        after=$(ticks)
        python3 -c "import sys; r, s, t, hz = map(float, sys.argv[2:]); print(f'{sys.argv[1]:8} {r:12.0f} frames/s received {r * s / (t / hz) if t else 0:12.0f} per switch CPU-second')" \
            "$mode" "$received" "$seconds" "$((after - before))" "$(getconf CLK_TCK)"
    done
done
