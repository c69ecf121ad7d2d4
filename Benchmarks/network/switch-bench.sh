#!/usr/bin/env bash
# Forwarding rate and TCP throughput between two network-namespace endpoints, through
# vireo-switchd (tap ports) and through a Linux bridge (veth ports), in one run, with ratios.
#
#   sudo Benchmarks/network/switch-bench.sh [seconds-per-test]      (default 5)
#
# Small frames: a blaster in the sending namespace writes 60-byte UDP/IPv4 frames (64 on the wire
# with the FCS) to the receiver's MAC through an AF_PACKET socket as fast as it can; the rate is
# the receiving interface's rx_packets delta per second. Also iperf3 UDP with 18-byte payloads
# (the same frame size through the sockets API). TCP: one iperf3 stream.
# The bridge runs twice: as configured by default (veth with TSO/GSO/GRO: 64 KiB "frames") and
# with offloads off (ethtool), which is what tap ports without vnet headers get today.
# Veth ports: the switch's uplink ports on the host ends of veth pairs whose other ends are the
# namespaces, the bridge's kind of endpoint; frames between them take the kernel fast path once the
# switch has learned both ends (eBPF, docs/network.md "Kernel fast path"), and once more with
# --kernel-fast-path off (every frame through the switch's packet sockets).
# VM ports: vmport-blast.c (built here with cc) plays two VMMs on two `vm:` ports of the switch and
# sends 60-byte frames from one to the other, once as messages (sendmmsg/recvmmsg) and once through
# shared-memory rings (--rings, what vireo-vmm uses); there is no bridge equivalent.
# VM stand-ins: TCP between two "VMs" on each side, each a namespace behind a tap whose frames
# vm-relay.c moves, with their virtio-net headers, to the VM's port as a VMM does: a `vm:` port in
# ring mode with offloads (vireo-vmm --net switch=) or a second tap enslaved to a Linux bridge
# (a VMM's tap backend). Both sides pay the same VMM copies, so the ratio compares the switches.
# Needs root, iproute2, iperf3, python3, a C compiler (ethtool for the offloads-off run). Uses only addresses
# inside the namespaces it creates (10.249.0.0/24 to 10.254.0.0/24) and removes everything on exit.
set -euo pipefail
seconds=${1:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
switchd=${VIREO_SWITCHD:-$root/.build-sw/release/vireo-switchd}
for tool in ip iperf3 python3 cc; do command -v "$tool" >/dev/null || { echo "switch-bench: needs $tool" >&2; exit 1; }; done
if [[ ! -x $switchd ]]; then
    echo "switch-bench: building vireo-switchd (release)" >&2
    (cd "$root" && swift build -c release --scratch-path .build-sw --product vireo-switchd >&2)
fi

tag=vb$$
dir=$(mktemp -d /tmp/switch-bench.XXXXXX)
switch_pid=
slow_pid=
relay_pids=()
cleanup() {
    for pid in "${relay_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in $switch_pid $slow_pid; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
    for ns in ${tag}s1 ${tag}s2 ${tag}l1 ${tag}l2 ${tag}g1 ${tag}g2 ${tag}g3 ${tag}g4 ${tag}u1 ${tag}u2 ${tag}w1 ${tag}w2; do ip netns del "$ns" 2>/dev/null || true; done
    ip link del ${tag}br 2>/dev/null || true
    ip link del ${tag}vbr 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

endpoint() { # namespace interface address
    ip netns add "$1"
    ip netns exec "$1" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
    ip link set "$2" netns "$1"
    ip -n "$1" link set lo up
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$1" link set "$2" up
}

# Veth pairs for the uplink ports: host ends ${tag}x1/x2 (fast path) and ${tag}y1/y2 (fast path off).
for n in 1 2; do
    for pair in x:u y:w; do
        ip link add ${tag}${pair%:*}$n type veth peer name ${tag}${pair#*:}e$n
        ip link set ${tag}${pair%:*}$n up
    done
    endpoint ${tag}u$n ${tag}ue$n 10.250.0.$n
    endpoint ${tag}w$n ${tag}we$n 10.249.0.$n
done

# vireo-switchd: two access ports (VLAN 10), tap devices moved into the namespaces.
"$switchd" --name "$tag" --socket-dir "$dir" --port "tap:${tag}a,tag=10" --port "tap:${tag}b,tag=10" \
    --port "vm:${tag}va,tag=10" --port "vm:${tag}vb,tag=10" \
    --port "vm:${tag}ra,tag=10,offload=on" --port "vm:${tag}rb,tag=10,offload=on" \
    --port "uplink:${tag}x1,tag=20" --port "uplink:${tag}x2,tag=20" --log-level warning &
switch_pid=$!
"$switchd" --name "${tag}s" --socket-dir "$dir" --port "uplink:${tag}y1,tag=20" --port "uplink:${tag}y2,tag=20" \
    --kernel-fast-path off --log-level warning &
slow_pid=$!
for _ in $(seq 50); do [[ -S $dir/$tag.ctl && -S $dir/${tag}s.ctl ]] && break; sleep 0.1; done
endpoint ${tag}s1 ${tag}a 10.251.0.1
endpoint ${tag}s2 ${tag}b 10.251.0.2

# Linux bridge: two veth pairs.
ip link add ${tag}br type bridge
ip link set ${tag}br up
for n in 1 2; do
    ip link add ${tag}h$n type veth peer name ${tag}i$n
    ip link set ${tag}h$n master ${tag}br
    ip link set ${tag}h$n up
    endpoint ${tag}l$n ${tag}i$n 10.252.0.$n
done

blast() { # client-namespace client-interface server-namespace server-interface → received pkt/s
    local client=$1 client_if=$2 server=$3 server_if=$4
    local dst src
    dst=$(ip -n "$server" -j link show "$server_if" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
    src=$(ip -n "$client" -j link show "$client_if" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
    rx() { ip -n "$server" -s -j link show "$server_if" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }
    local before after
    before=$(rx)
    ip netns exec "$client" python3 - "$client_if" "$dst" "$src" "$seconds" <<'PY'
import socket, sys, time
interface, dst, src, seconds = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), bytes.fromhex(sys.argv[3].replace(":", "")), float(sys.argv[4])
ip = bytearray([0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
total = sum(ip[i] << 8 | ip[i + 1] for i in range(0, 20, 2))  # a valid header checksum: br_netfilter drops bad ones
while total >> 16: total = (total & 0xFFFF) + (total >> 16)
ip[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
ip = bytes(ip)
frame = dst + src + b"\x08\x00" + ip + bytes([0x30, 0x39, 0x30, 0x39, 0, 26, 0, 0]) + bytes(18)
assert len(frame) == 60
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((interface, 0))
send, end = s.send, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(1000):
        try: send(frame)
        except BlockingIOError: pass
PY
    sleep 0.2
    after=$(rx)
    echo $(( (after - before) / seconds ))
}

tcp() { # client-namespace server-namespace server-address → Mbit/s of one iperf3 TCP stream
    local client=$1 server=$2 address=$3
    ip netns exec "$client" ping -q -c 2 -W 1 "$address" >/dev/null
    ip netns exec "$server" iperf3 -s -1 >/dev/null 2>&1 &
    sleep 0.3
    ip netns exec "$client" iperf3 -c "$address" -t "$seconds" -J > "$dir/tcp.json"
    wait
    python3 -c 'import json, sys; print("%.0f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' "$dir/tcp.json"
}

measure() { # client-namespace server-namespace server-address → "pps sent-pps mbit"
    local client=$1 server=$2 address=$3
    ip netns exec "$client" ping -q -c 2 -W 1 "$address" >/dev/null
    ip netns exec "$server" iperf3 -s -1 >/dev/null 2>&1 &
    sleep 0.3
    ip netns exec "$client" iperf3 -c "$address" -u -b 0 -l 18 -t "$seconds" -J > "$dir/udp.json"
    wait
    local udp
    udp=$(python3 -c 'import json, sys; u = json.load(open(sys.argv[1]))["end"]["sum"]; print("%.0f %.0f" % ((u["packets"] - u["lost_packets"]) / u["seconds"], u["packets"] / u["seconds"]))' "$dir/udp.json")
    echo "$udp $(tcp "$client" "$server" "$address")"
}

relay() { # guest-tap kind port → starts vm-relay, waits for its taps
    "$dir/vm-relay" "$@" > "$dir/relay-$1.out" &
    relay_pids+=($!)
    for _ in $(seq 50); do grep -q ready "$dir/relay-$1.out" 2>/dev/null && return; sleep 0.1; done
    echo "switch-bench: vm-relay $* did not start" >&2
    exit 1
}

read -r v_pps v_sent v_tcp < <(measure ${tag}s1 ${tag}s2 10.251.0.2)
v_blast=$(blast ${tag}s1 ${tag}a ${tag}s2 ${tag}b)
cc -O2 -pthread -I "$root/Sources/CVireoLinux/include" -I "$root/Benchmarks/network" -o "$dir/vmport-blast" \
    "$root/Benchmarks/network/vmport-blast.c" "$root/Benchmarks/network/ring_port.c" "$root/Sources/CVireoLinux/frame_ring.c"
read -r v_vm v_vm_sent < <("$dir/vmport-blast" "$dir/$tag-${tag}va.sock" "$dir/$tag-${tag}vb.sock" "$seconds")
switch_ticks() { awk '{print $14 + $15}' "/proc/$switch_pid/stat"; }
ticks_before=$(switch_ticks)
read -r v_ring v_ring_sent < <("$dir/vmport-blast" --rings "$dir/$tag-${tag}va.sock" "$dir/$tag-${tag}vb.sock" "$seconds")
ticks_after=$(switch_ticks)
# The "one core" figure: frames received per second of CPU time the switch itself used.
v_ring_core=$(python3 -c "import sys; r, s, t, hz = map(float, sys.argv[1:]); print(f'{r * s / (t / hz):.0f}' if t > 0 else '-')" \
    "$v_ring" "$seconds" "$((ticks_after - ticks_before))" "$(getconf CLK_TCK)")
read -r b_pps b_sent b_tcp < <(measure ${tag}l1 ${tag}l2 10.252.0.2)
b_blast=$(blast ${tag}l1 ${tag}i1 ${tag}l2 ${tag}i2)
# Veth ports against the bridge, alternating three times each (this host's TCP figures drift
# between runs more than the two differ): medians, and each pair's ratio.
u_runs=() vb_runs=() pair_ratios=()
for _ in 1 2 3; do
    u_runs+=("$(tcp ${tag}u1 ${tag}u2 10.250.0.2)")
    vb_runs+=("$(tcp ${tag}l1 ${tag}l2 10.252.0.2)")
    pair_ratios+=("$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "${u_runs[-1]}" "${vb_runs[-1]}")")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
u_tcp=$(median "${u_runs[@]}")
vb_tcp=$(median "${vb_runs[@]}")
u_blast=$(blast ${tag}u1 ${tag}ue1 ${tag}u2 ${tag}ue2)
w_tcp=$(tcp ${tag}w1 ${tag}w2 10.249.0.2)
w_blast=$(blast ${tag}w1 ${tag}we1 ${tag}w2 ${tag}we2)

# VM stand-ins: two "VMs" on the switch's offload-mode vm: ports, two on a bridge of taps.
cc -O2 -pthread -I "$root/Sources/CVireoLinux/include" -I "$root/Benchmarks/network" -o "$dir/vm-relay" \
    "$root/Benchmarks/network/vm-relay.c" "$root/Benchmarks/network/ring_port.c" \
    "$root/Sources/CVireoLinux/frame_ring.c" "$root/Sources/CVireoLinux/shim.c"
relay ${tag}ga switch "$dir/$tag-${tag}ra.sock"
relay ${tag}gb switch "$dir/$tag-${tag}rb.sock"
endpoint ${tag}g1 ${tag}ga 10.253.0.1
endpoint ${tag}g2 ${tag}gb 10.253.0.2
ip link add ${tag}vbr type bridge
ip link set ${tag}vbr up
relay ${tag}gc tap ${tag}pc
relay ${tag}gd tap ${tag}pd
for port in ${tag}pc ${tag}pd; do ip link set $port master ${tag}vbr; ip link set $port up; done
endpoint ${tag}g3 ${tag}gc 10.254.0.1
endpoint ${tag}g4 ${tag}gd 10.254.0.2
v_vmtcp=$(tcp ${tag}g1 ${tag}g2 10.253.0.2)
b_vmtcp=$(tcp ${tag}g3 ${tag}g4 10.254.0.2)
for pid in "${relay_pids[@]}"; do kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; done
relay_pids=()
relay_waits=$(cat "$dir"/relay-${tag}ga.out "$dir"/relay-${tag}gb.out | awk '$1 == "waited" { n += $2 } END { print n + 0 }')
o_pps=- o_tcp=- o_blast=-
if command -v ethtool >/dev/null; then
    for n in 1 2; do
        ethtool -K ${tag}h$n tso off gso off gro off >/dev/null 2>&1 || true
        ip netns exec ${tag}l$n ethtool -K ${tag}i$n tso off gso off gro off >/dev/null 2>&1 || true
    done
    read -r o_pps _ o_tcp < <(measure ${tag}l1 ${tag}l2 10.252.0.2)
    o_blast=$(blast ${tag}l1 ${tag}i1 ${tag}l2 ${tag}i2)
fi
stats=$(python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"stats\n"); print(s.makefile().readline().strip())' "$dir/$tag.ctl")

ratio() { python3 -c "import sys; a, b = sys.argv[1:]; print(f'{float(a)/float(b):.2f}' if b not in ('-', '0') else '-')" "$1" "$2"; }
echo "switch-bench: ${seconds}s per test, $(nproc) CPUs, kernel $(uname -r)"
printf '%-36s %14s %14s %14s %8s %8s\n' "" "vireo-switchd" "bridge" "bridge-nooff" "ratio" "ratio-nooff"
printf '%-36s %14s %14s %14s %8s %8s\n' "64B frames, AF_PACKET blaster (pkt/s)" "$v_blast" "$b_blast" "$o_blast" "$(ratio "$v_blast" "$b_blast")" "$(ratio "$v_blast" "$o_blast")"
printf '%-36s %14s %14s %14s %8s %8s\n' "64B frames, vm: messages (pkt/s rcvd)" "$v_vm" - - - -
printf '%-36s %14s %14s %14s %8s %8s\n' "64B frames, vm: rings (pkt/s rcvd)" "$v_ring" - - - -
printf '%-36s %14s %14s %14s %8s %8s\n' "  the same per switch CPU-second" "$v_ring_core" - - - -
printf '%-36s %14s %14s %14s %8s %8s\n' "64B frames, iperf3 UDP rcvd (pkt/s)" "$v_pps" "$b_pps" "$o_pps" "$(ratio "$v_pps" "$b_pps")" "$(ratio "$v_pps" "$o_pps")"
printf '%-36s %14s %14s %14s %8s %8s\n' "TCP throughput (Mbit/s)" "$v_tcp" "$b_tcp" "$o_tcp" "$(ratio "$v_tcp" "$b_tcp")" "$(ratio "$v_tcp" "$o_tcp")"
printf '%-36s %14s %14s %14s %8s %8s\n' "64B frames, blaster, veth/fast path" "$u_blast" "$b_blast" "$o_blast" "$(ratio "$u_blast" "$b_blast")" "$(ratio "$u_blast" "$o_blast")"
printf '%-36s %14s %14s %14s %8s %8s\n' "64B frames, blaster, veth/no fast path" "$w_blast" "$b_blast" "$o_blast" "$(ratio "$w_blast" "$b_blast")" "$(ratio "$w_blast" "$o_blast")"
printf '%-36s %14s %14s %14s %8s %8s\n' "TCP, veth ports/fast path, median/3" "$u_tcp" "$vb_tcp" "$o_tcp" "$(ratio "$u_tcp" "$vb_tcp")" "$(ratio "$u_tcp" "$o_tcp")"
echo "  alternating runs (Mbit/s), fast path: ${u_runs[*]}; bridge: ${vb_runs[*]}; ratios per pair: ${pair_ratios[*]}"
printf '%-36s %14s %14s %14s %8s %8s\n' "TCP, veth ports/no fast path (Mbit/s)" "$w_tcp" "$b_tcp" "$o_tcp" "$(ratio "$w_tcp" "$b_tcp")" "$(ratio "$w_tcp" "$o_tcp")"
printf '%-36s %14s %14s %14s %8s %8s\n' "TCP, VM stand-ins (Mbit/s)" "$v_vmtcp" "$b_vmtcp" - "$(ratio "$v_vmtcp" "$b_vmtcp")" -
echo "VM stand-ins on the switch: $relay_waits frames waited for room in a full ring"
echo "vireo-switchd counters: $stats" | cut -c1-400
