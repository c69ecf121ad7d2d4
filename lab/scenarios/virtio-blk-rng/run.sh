#!/bin/sh
# Two boots of one L2 guest with three virtio-blk disks and a virtio-rng:
#   vda: a writable copy of the ext4 rootfs image (raw), vdb: a qcow2 overlay over a raw base,
#   vdc: the original rootfs image, read-only.
# Boot 1 writes (and reboots: vireo-vmm exits 2), boot 2 verifies (and powers off: exit 0).
set -u
cp "$ROOTFS_IMG" /tmp/vda.img || exit 1
dd if=/dev/zero of=/tmp/base.img bs=1M count=8 2>/dev/null
vireo img create -q -f qcow2 -b /tmp/base.img -F raw /tmp/vdb.qcow2 || { echo "VIREO-LAB: FAIL vireo img create"; exit 1; }
boot() {
  vmm-run 100 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" \
    --cmdline "console=ttyS0 panic=-1 quiet vireo.phase=$1" --cpus 1 --memory 256M --serial stdio \
    --disk path=/tmp/vda.img,format=raw --disk path=/tmp/vdb.qcow2,format=qcow2 \
    --disk path="$ROOTFS_IMG",readonly=on --rng </dev/null
  rc=$?
  echo "vireo-vmm exited with status $rc"
  [ "$rc" -eq "$2" ] || { echo "VIREO-LAB: FAIL boot $1: vireo-vmm exited with status $rc (expected $2)"; exit 1; }
}
boot 1 2
boot 2 0
vireo img check /tmp/vdb.qcow2 || { echo "VIREO-LAB: FAIL the qcow2 overlay does not check clean"; exit 1; }
echo "VIREO-LAB: PASS"
