#!/bin/sh
# One vireo-switchd with: an uplink on a veth whose peer sits in namespace "outside" (10.10.0.254,
# VLAN 10), a tap in a namespace on VLAN 20 (10.10.0.20), and three L2 guests attached with
# `--net switch=sw0,...`: a and b on VLAN 10, then c on VLAN 20 (started once a and b are done, so
# its no-reply checks meet live hosts). busybox ip names a veth's peer itself (veth0).
set -u
SWITCHD=/vireo/bin/vireo-switchd
[ -x "$SWITCHD" ] || { echo "VIREO-LAB: FAIL no vireo-switchd in the lab host"; exit 1; }
mkdir -p /run/vireo
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; }

namespace() {  # namespace NAME INTERFACE ADDRESS: moves INTERFACE into a new namespace at ADDRESS/24
  unshare -n sleep 100000 &
  ns=$!
  PIDS="$PIDS $ns"
  # Wait until the child has its own network namespace (unshare runs after the fork).
  i=0
  while [ "$(readlink /proc/$ns/ns/net)" = "$(readlink /proc/self/ns/net)" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  ip link set "$2" netns $ns || { cat /tmp/switchd.log; ip link; echo "VIREO-LAB: FAIL cannot move $2 into namespace $1"; cleanup; exit 1; }
  nsenter -t $ns -n ip link set lo up
  nsenter -t $ns -n ip addr add "$3/24" dev "$2"
  nsenter -t $ns -n ip link set "$2" up
}

ip link add up0 type veth || { echo "VIREO-LAB: FAIL ip link add veth"; exit 1; }
ip link set up0 up
namespace outside veth0 10.10.0.254
OUTSIDE=$ns
# a's TCP transfer to the outside namespace lands here (stdin kept open: busybox nc quits at EOF).
sleep 600 | nsenter -t $OUTSIDE -n nc -l -p 5002 > /tmp/outside.in &
PIDS="$PIDS $!"

"$SWITCHD" --name sw0 --socket-dir /run/vireo --port uplink:up0,tag=10 --port tap:t20,tag=20 > /tmp/switchd.log 2>&1 &
SW=$!
PIDS="$PIDS $SW"
i=0
while [ ! -S /run/vireo/sw0.ctl ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -S /run/vireo/sw0.ctl ] || { cat /tmp/switchd.log; echo "VIREO-LAB: FAIL vireo-switchd did not start"; cleanup; exit 1; }
namespace vlan20 t20 10.10.0.20
echo "VIREO-LAB: switch sw0 up"

guest() {  # guest ROLE TAG MAC
  timeout 330 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
    --cmdline "console=ttyS0 panic=-1 quiet vireo.role=$1" --cpus 1 --memory 160M --serial stdio \
    --net "switch=sw0,tag=$2,mac=$3" --log-level notice </dev/null > /tmp/$1.log 2>&1 &
}
guest a 10 52:54:00:00:10:01
A=$!
guest b 10 52:54:00:00:10:02
B=$!
PIDS="$PIDS $A $B"
i=0
until grep -qs "VIREO-GUEST: a done" /tmp/a.log && grep -qs "VIREO-GUEST: b done" /tmp/b.log; do
  if [ $i -ge 300 ] || grep -qs "CHECK FAILED" /tmp/a.log /tmp/b.log || ! kill -0 $A 2>/dev/null || ! kill -0 $B 2>/dev/null; then
    cat /tmp/a.log /tmp/b.log /tmp/switchd.log
    echo "VIREO-LAB: FAIL guests a and b did not finish"
    cleanup
    exit 1
  fi
  sleep 1
  i=$((i + 1))
done
echo "VIREO-LAB: guests a and b done"
cat /tmp/a.log /tmp/b.log
# The TCP transfers: what a sent is what b and the outside namespace received.
sent=$(sed -n 's/.*VIREO-GUEST: a payload md5 \([0-9a-f]*\).*/\1/p' /tmp/a.log)
at_b=$(sed -n 's/.*VIREO-GUEST: b received 2097152 bytes md5 \([0-9a-f]*\).*/\1/p' /tmp/b.log)
i=0
while [ "$(wc -c < /tmp/outside.in)" -lt 2097152 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
outside=$(md5sum /tmp/outside.in | cut -d' ' -f1)
echo "VIREO-LAB: TCP md5 sent by a $sent, received by b ${at_b:-none}, by the outside namespace $outside ($(wc -c < /tmp/outside.in) bytes)"
[ -n "$sent" ] && [ "$sent" = "$at_b" ] && echo "VIREO-LAB: TCP a to b intact"
[ -n "$sent" ] && [ "$sent" = "$outside" ] && echo "VIREO-LAB: TCP a to the outside namespace intact"

guest c 20 52:54:00:00:20:03
C=$!
wait $C
rc=$?
cat /tmp/c.log
echo "guest c exited with status $rc"
kill $A $B 2>/dev/null
wait $A $B
cat /tmp/switchd.log
cleanup
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL guest c exited with status $rc"; exit 1; }
echo "VIREO-LAB: PASS"
