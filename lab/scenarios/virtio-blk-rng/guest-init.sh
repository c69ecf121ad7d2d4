# Runs in the L2 guest. vireo.phase=1 writes, vireo.phase=2 verifies.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
PHASE=0
for word in $(cat /proc/cmdline); do case "$word" in vireo.phase=*) PHASE="${word#vireo.phase=}" ;; esac; done
echo "VIREO-GUEST: phase $PHASE"
ls /sys/bus/pci/devices/ | tr '\n' ' '; echo
for b in vda vdb vdc; do echo "VIREO-GUEST: $b size $(cat /sys/block/$b/size 2>/dev/null) ro $(cat /sys/block/$b/ro 2>/dev/null)"; done
# The virtio-pci functions must interrupt through MSI-X (there is no _PRT for INTx).
echo "VIREO-GUEST: interrupts: $(grep virtio /proc/interrupts | awk '{ print $1, $2, $3, $NF }' | tr '\n' ';')"
grep -q "PCI-MSI.*virtio0-req" /proc/interrupts || fail "virtio0 has no per-queue MSI-X vector"
echo "VIREO-GUEST: msix vectors $(grep -c 'PCI-MSI.*virtio' /proc/interrupts)"
# ECAM (MCFG + e820-reserved region): Linux keeps MMCONFIG (it lists the region in /proc/iomem only then).
grep -q "PCI MMCONFIG" /proc/iomem || fail "no PCI MMCONFIG region in /proc/iomem"
dmesg | grep -q "not using MMCONFIG" && fail "Linux rejected MMCONFIG: $(dmesg | grep -i mmconfig | tr '\n' ';')"
# 64-bit BARs above 4 GiB (the 64-bit window of PCI0._CRS).
bar0=$(head -1 /sys/bus/pci/devices/0000:00:01.0/resource | cut -d' ' -f1)
[ $((bar0)) -ge 4294967296 ] || fail "BAR 0 of 00:01.0 is at $bar0, not above 4 GiB"
echo "VIREO-GUEST: BAR0 of 00:01.0 at $bar0"
echo "VIREO-GUEST: ECAM used:$(grep 'PCI MMCONFIG' /proc/iomem | head -1)"
mkdir -p /mnt
if [ "$PHASE" = 1 ]; then
  [ "$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)" = "virtio_rng.0" ] || fail "rng_current is $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
  dd if=/dev/hwrng of=/tmp/r1 bs=64 count=1 2>/dev/null
  dd if=/dev/hwrng of=/tmp/r2 bs=64 count=1 2>/dev/null
  [ "$(wc -c < /tmp/r1)" -eq 64 ] || fail "short hwrng read"
  cmp -s /tmp/r1 /tmp/r2 && fail "hwrng returned the same bytes twice"
  echo "VIREO-GUEST: hwrng ok $(od -An -tx1 -N8 /tmp/r1 | tr -d ' ')"
  mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
  dd if=/dev/hwrng of=/mnt/payload bs=1024 count=64 2>/dev/null
  md5sum /mnt/payload | cut -d' ' -f1 > /mnt/payload.md5
  sync
  umount /mnt || fail "umount /dev/vda"
  echo "VIREO-GUEST: vda written $(cat /tmp/r1 | md5sum | cut -c1-8)"
  dd if=/dev/hwrng of=/tmp/blob bs=4096 count=16 2>/dev/null
  dd if=/tmp/blob of=/dev/vdb bs=4096 seek=100 conv=fsync 2>/dev/null || fail "write /dev/vdb"
  md5sum /tmp/blob | cut -d' ' -f1 > /tmp/blob.md5
  # The checksum also goes onto the disk (sector 0) so that boot 2 can compare.
  dd if=/tmp/blob.md5 of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null || fail "write /dev/vdb sector 0"
  echo "VIREO-GUEST: vdb written $(cat /tmp/blob.md5)"
  [ "$(cat /sys/block/vdc/ro)" = 1 ] || fail "vdc is not read-only"
  mount -t ext4 -o ro /dev/vdc /mnt || fail "mount /dev/vdc read-only"
  [ -e /mnt/.vireo-rootfs ] || fail "vdc lacks the rootfs marker"
  umount /mnt
  echo "VIREO-GUEST: vdc read-only ok"
  reboot -f
else
  mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda in phase 2"
  [ "$(md5sum /mnt/payload | cut -d' ' -f1)" = "$(cat /mnt/payload.md5)" ] || fail "payload checksum on vda"
  echo "VIREO-GUEST: vda verified $(cat /mnt/payload.md5)"
  umount /mnt
  want=$(dd if=/dev/vdb bs=32 count=1 2>/dev/null)
  got=$(dd if=/dev/vdb bs=4096 skip=100 count=16 2>/dev/null | md5sum | cut -d' ' -f1)
  [ "$want" = "$got" ] || fail "vdb checksum: want $want got $got"
  echo "VIREO-GUEST: vdb verified $got"
  poweroff -f
fi
