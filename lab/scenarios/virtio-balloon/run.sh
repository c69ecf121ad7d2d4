#!/bin/sh
timeout 120 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet" --cpus 1 --memory 256M --serial stdio --balloon 64M </dev/null
rc=$?
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc"; exit 1; }
echo "VIREO-LAB: PASS"
