#!/bin/sh
# Drives a running guest through the control socket with the vireo CLI (`vireo vmm control`).
CONSOLE=/tmp/console.log SOCKET=/tmp/control.sock
"$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "console=ttyS0 panic=-1 quiet" \
  --cpus 1 --memory 256M --serial "file:$CONSOLE" --control "unix:$SOCKET" </dev/null &
vmm=$!
# Wait (bounded) for a line in the guest console.
await() {
  i=0
  while ! grep -q "$1" "$CONSOLE" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 600 ] && { cat "$CONSOLE"; echo "VIREO-LAB: FAIL timed out waiting for '$1' in the guest console"; kill -9 $vmm; exit 1; }
    sleep 0.1
  done
}
await "VIREO-GUEST: tick 1"
grep "VIREO-GUEST: i8042\|VIREO-GUEST: \[" "$CONSOLE"
echo "control: status $(vireo vmm control "$SOCKET" status)"
echo "control: pause $(vireo vmm control "$SOCKET" pause)"
paused_at=$(grep -c "tick" "$CONSOLE")
echo "control: resume $(vireo vmm control "$SOCKET" resume)"
await "VIREO-GUEST: tick $((paused_at + 1))[^0-9]"
echo "guest ticked after resume"
# The ACPI power button: the guest's acpid powers it off (vireo-vmm exits 0).
echo "control: powerdown $(vireo vmm control "$SOCKET" powerdown)"
wait $vmm
rc=$?
echo "vireo-vmm exited with status $rc after powerdown"
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL expected exit status 0 (powered off by the ACPI power button), got $rc"; tail -20 "$CONSOLE"; exit 1; }
grep "VIREO-GUEST: power button pressed" "$CONSOLE"

# A second boot: Ctrl-Alt-Del on its i8042 makes the kernel reboot (vireo-vmm exits 2).
: >"$CONSOLE"
"$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "console=ttyS0 panic=-1 quiet" \
  --cpus 1 --memory 256M --serial "file:$CONSOLE" --control "unix:$SOCKET" </dev/null &
vmm=$!
await "VIREO-GUEST: tick 1"
vireo vmm control "$SOCKET" ctrl-alt-del >/dev/null
wait $vmm
rc=$?
echo "vireo-vmm exited with status $rc after ctrl-alt-del"
if [ "$rc" -eq 2 ]; then echo "VIREO-LAB: PASS"; else echo "VIREO-LAB: FAIL expected exit status 2 (reboot after Ctrl-Alt-Del), got $rc"; tail -20 "$CONSOLE"; fi
