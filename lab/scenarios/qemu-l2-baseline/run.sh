#!/bin/sh
# Runs in the lab host (L1) as root, with kvm-amd loaded.
[ -e /dev/kvm ] || { echo "VIREO-LAB: FAIL no /dev/kvm in the lab host"; exit 1; }
[ -d /sys/module/kvm_amd ] && echo "kvm_amd present"
start=$(cut -d' ' -f1 /proc/uptime)
"$QEMU" -L "$QEMU_DATA" -enable-kvm -cpu host -m 512M -smp 1 \
  -nodefaults -display none -serial stdio -no-reboot -net none \
  -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "console=ttyS0 panic=-1 quiet" </dev/null
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
echo "qemu exited with status $rc"
echo "L2 boot+poweroff under QEMU took $(awk "BEGIN {print $end - $start}")s" | tee "$RESULTS/qemu-l2-baseline.txt"
if [ "$rc" -eq 0 ]; then echo "VIREO-LAB: PASS"; else echo "VIREO-LAB: FAIL qemu exited with status $rc"; fi
