#!/bin/sh
# virtio-balloon through the control socket: inflating gives guest pages back to the host (the VMM's
# VmRSS drops), the statistics queue reports the guest's memory, deflating lets the guest use (and the
# VMM's RSS grow with) that memory again.
set -u
CONSOLE=/tmp/console.log SOCKET=/tmp/control.sock
# The console first: the runner stops reading at the FAIL line.
fail() { cat "$CONSOLE"; echo "VIREO-LAB: FAIL $*"; kill -9 "$vmm" 2>/dev/null; exit 1; }
"$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "console=ttyS0 panic=-1 quiet" \
  --cpus 1 --memory 256M --serial "file:$CONSOLE" --control "unix:$SOCKET" --balloon 0,stats=1 </dev/null &
vmm=$!
# Wait (bounded) for a line in the guest console.
await() {
  i=0
  while ! grep -q "$1" "$CONSOLE" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 1200 ] && fail "timed out waiting for '$1' in the guest console"
    grep -q "CHECK FAILED" "$CONSOLE" 2>/dev/null && fail "guest check failed"
    sleep 0.1
  done
}
rss() { awk '/^VmRSS:/ { print $2 }' /proc/$vmm/status; }
await "VIREO-GUEST: touched and freed"
r1=$(rss)
echo "VMM VmRSS after the guest touched 160 MiB: $r1 kB"
echo "control: $(vireo vmm control "$SOCKET" 'balloon 128')"
await "VIREO-GUEST: balloon inflated"
i=0
until vireo vmm control "$SOCKET" balloon | grep -q '"actual_mib":128'; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "timed out waiting for the balloon to reach 128 MiB"
  sleep 0.2
done
r2=$(rss)
echo "VMM VmRSS with a 128 MiB balloon: $r2 kB"
[ $((r1 - r2)) -ge 65536 ] || fail "inflating 128 MiB lowered VmRSS by only $((r1 - r2)) kB"
echo "balloon inflation returned $((r1 - r2)) kB to the host"
stats=$(vireo vmm control "$SOCKET" balloon-stats)
echo "control: balloon-stats $stats"
echo "$stats" | grep -q '"free-memory":[0-9]' || fail "no free-memory in the balloon statistics"
echo "$stats" | grep -q '"total-memory":[0-9]' || fail "no total-memory in the balloon statistics"
# `balloon` answers with the latest report as it stands (what vireod's ballooninfo shows).
sizes=$(vireo vmm control "$SOCKET" balloon)
echo "control: balloon $sizes"
echo "$sizes" | grep -q '"free-memory":[0-9]' || fail "no statistics in the balloon reply"
echo "$sizes" | grep -q '"stats_updated":[1-9]' || fail "no update time in the balloon reply"
echo "control: $(vireo vmm control "$SOCKET" 'balloon 0')"
await "VIREO-GUEST: touched 160 MiB again"
r3=$(rss)
echo "VMM VmRSS after deflating and touching 160 MiB again: $r3 kB"
[ $((r3 - r2)) -ge 65536 ] || fail "VmRSS grew by only $((r3 - r2)) kB after the deflate"
echo "VmRSS grew back by $((r3 - r2)) kB"
vireo vmm control "$SOCKET" stop >/dev/null
wait $vmm
rc=$?
grep "VIREO-GUEST" "$CONSOLE"
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 4 ] || fail "vireo-vmm exited with status $rc (expected 4 after stop)"
echo "VIREO-LAB: PASS"
