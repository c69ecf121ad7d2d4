#!/bin/sh
rm -f /tmp/hvc0.log
vmm-run 100 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet" --cpus 1 --memory 256M --serial stdio \
  --console file:/tmp/hvc0.log </dev/null
rc=$?
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc"; exit 1; }
echo "hvc0 output: $(cat /tmp/hvc0.log | tr '\n' ' ')"
grep -q "HVC0-MARKER-12345" /tmp/hvc0.log || { echo "VIREO-LAB: FAIL the marker did not reach --console"; exit 1; }
echo "VIREO-LAB: PASS"
