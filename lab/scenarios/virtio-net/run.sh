#!/bin/sh
# One L2 guest with a virtio-net on tap0 (created by vireo-vmm: busybox ip has no tuntap).
# L1 gives tap0 192.168.77.1/24 once it appears, listens on TCP 5000 and compares the md5 of what
# arrives with the one the guest printed.
set -u
rm -f /tmp/recv /tmp/l2.log
# The listener's stdin must stay open: busybox nc quits (resetting the connection) at EOF on stdin.
tail -f /dev/null | nc -l -p 5000 > /tmp/recv &
NC=$!
timeout 120 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet" --cpus 1 --memory 256M --serial stdio \
  --net tap=tap0,mac=52:54:00:12:34:56 --log-level notice </dev/null > /tmp/l2.log 2>&1 &
VMM=$!
i=0
while [ ! -d /sys/class/net/tap0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -d /sys/class/net/tap0 ] || echo "VIREO-LAB: FAIL tap0 did not appear"
ip addr add 192.168.77.1/24 dev tap0
ip link set tap0 up
echo "VIREO-LAB: tap0 up $(cat /sys/class/net/tap0/address)"
wait $VMM
rc=$?
cat /tmp/l2.log
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc"; kill $NC 2>/dev/null; exit 1; }
i=0
while kill -0 $NC 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill $NC 2>/dev/null
want=$(sed -n 's/.*VIREO-GUEST: payload md5 \([0-9a-f]*\).*/\1/p' /tmp/l2.log | head -1)
got=$(md5sum /tmp/recv | cut -d' ' -f1)
echo "VIREO-LAB: received $(wc -c < /tmp/recv) bytes md5 $got"
[ -n "$want" ] && [ "$want" = "$got" ] || { echo "VIREO-LAB: FAIL checksum: guest $want, L1 $got"; exit 1; }
echo "VIREO-LAB: checksum match"
echo "VIREO-LAB: PASS"
