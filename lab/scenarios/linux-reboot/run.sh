#!/bin/sh
# vireo-vmm exit codes: 0 power-off, 1 VMM failure, 2 guest reboot, 3 triple fault, 4 stopped by signal, 64 bad arguments.
vmm-run 100 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet" --cpus 1 --memory 256M --serial stdio </dev/null
rc=$?
echo "vireo-vmm exited with status $rc"
if [ "$rc" -eq 2 ]; then echo "VIREO-LAB: PASS"; else echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc (expected 2, guest reboot)"; fi
