#!/bin/sh
vmm-run 100 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet" --cpus 2 --memory 256M --serial stdio </dev/null
rc=$?
echo "vireo-vmm exited with status $rc"
if [ "$rc" -eq 0 ]; then echo "VIREO-LAB: PASS"; else echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc (expected 0, guest power-off)"; fi
