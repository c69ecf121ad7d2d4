#!/bin/sh
# One L2 guest with a virtio-net on tap0 (created by vireo-vmm: busybox ip has no tuntap).
# L1 gives tap0 192.168.77.1/24 once it appears, receives a file on TCP 5000 and compares its md5
# with the one the guest printed, sends one to the guest's port 5001 (the guest prints its md5),
# and takes the link down and up through the control socket when the guest asks.
set -u
rm -f /tmp/recv /tmp/l2.log
LOG=/tmp/l2.log SOCKET=/tmp/control.sock
dd if=/dev/urandom of=/tmp/down bs=1024 count=4096 2>/dev/null
# The listener's stdin must stay open: busybox nc quits (resetting the connection) at EOF on stdin.
tail -f /dev/null | nc -l -p 5000 > /tmp/recv &
NC=$!
timeout 170 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet" --cpus 1 --memory 256M --serial "file:$LOG" \
  --net tap=tap0,mac=52:54:00:12:34:56 --control "unix:$SOCKET" --log-level notice </dev/null > /tmp/vmm.log 2>&1 &
VMM=$!
# Wait (bounded: 60 s of L1 time) for a line in the guest console; gives up when the VMM has exited,
# and then shows what the guest and the VMM said, so a stuck guest is diagnosable from the lab console.
await() {
  deadline=$(( $(date +%s) + 60 ))
  while ! grep -q "$1" "$LOG" 2>/dev/null; do
    if [ "$(date +%s)" -gt $deadline ] || ! kill -0 $VMM 2>/dev/null; then
      echo "--- guest console (tail)"; tail -25 "$LOG" 2>/dev/null
      echo "--- vireo-vmm (tail)"; tail -15 /tmp/vmm.log 2>/dev/null
      echo "--- control status: $(vireo vmm control "$SOCKET" status 2>&1)"
      # Last: the runner stops reading at the FAIL line.
      if kill -0 $VMM 2>/dev/null; then
        echo "VIREO-LAB: FAIL timed out waiting for '$1' in the guest console"
      else
        echo "VIREO-LAB: FAIL vireo-vmm ended before '$1' appeared in the guest console"
      fi
      return 1
    fi
    sleep 0.1
  done
}
i=0
while [ ! -d /sys/class/net/tap0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -d /sys/class/net/tap0 ] || echo "VIREO-LAB: FAIL tap0 did not appear"
ip addr add 192.168.77.1/24 dev tap0
ip link set tap0 up
echo "VIREO-LAB: tap0 up $(cat /sys/class/net/tap0/address)"
if await "VIREO-GUEST: listening on 5001"; then
  nc 192.168.77.2 5001 < /tmp/down && echo "VIREO-LAB: sent $(wc -c < /tmp/down) bytes to the guest"
fi
if await "VIREO-GUEST: ready for link down"; then echo "VIREO-LAB: link down $(vireo vmm control "$SOCKET" "link 0 down")"; fi
if await "VIREO-GUEST: ready for link up"; then echo "VIREO-LAB: link up $(vireo vmm control "$SOCKET" "link 0 up")"; fi
wait $VMM
rc=$?
cat "$LOG"
cat /tmp/vmm.log
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc"; kill $NC 2>/dev/null; exit 1; }
i=0
while kill -0 $NC 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill $NC 2>/dev/null
want=$(sed -n 's/.*VIREO-GUEST: payload md5 \([0-9a-f]*\).*/\1/p' "$LOG" | head -1)
got=$(md5sum /tmp/recv | cut -d' ' -f1)
echo "VIREO-LAB: received $(wc -c < /tmp/recv) bytes md5 $got"
[ -n "$want" ] && [ "$want" = "$got" ] || { echo "VIREO-LAB: FAIL checksum: guest $want, L1 $got"; exit 1; }
echo "VIREO-LAB: checksum match"
down=$(md5sum /tmp/down | cut -d' ' -f1)
grep -q "VIREO-GUEST: received 4194304 bytes md5 $down" "$LOG" || { echo "VIREO-LAB: FAIL the guest did not receive /tmp/down (md5 $down)"; exit 1; }
echo "VIREO-LAB: guest checksum match"
echo "VIREO-LAB: PASS"
