#!/bin/sh
# Legacy INTx: the L2 guest boots with pci=nomsi, reads its virtio-blk disk and virtio-rng.
vmm-run 100 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
  --cmdline "console=ttyS0 panic=-1 quiet pci=nomsi" --cpus 1 --memory 256M --serial stdio \
  --disk path="$ROOTFS_IMG",readonly=on --rng </dev/null
rc=$?
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 0 ] || { echo "VIREO-LAB: FAIL vireo-vmm exited with status $rc"; exit 1; }
echo "VIREO-LAB: PASS"
