# Runs in the L2 guest booted with pci=nomsi: virtio-pci must interrupt through INTx (the DSDT's _PRT
# routes INTA to IOAPIC GSIs 16-23), and the disk and rng still work.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
grep -q "PCI-MSI" /proc/interrupts && fail "MSI in use despite pci=nomsi"
echo "VIREO-GUEST: interrupts: $(grep virtio /proc/interrupts | awk '{ print $1, $2, $3, $4, $NF }' | tr '\n' ';')"
grep -q "IO-APIC.*fasteoi.*virtio" /proc/interrupts || fail "no level-triggered IO-APIC virtio interrupt"
mkdir -p /mnt
mount -t ext4 -o ro /dev/vda /mnt || fail "mount /dev/vda"
[ -e /mnt/.vireo-rootfs ] || fail "vda lacks the rootfs marker"
sum=$(dd if=/dev/vda bs=64k 2>/dev/null | md5sum | cut -d' ' -f1)
echo "VIREO-GUEST: vda read over INTx, md5 $sum"
umount /mnt
dd if=/dev/hwrng of=/tmp/r bs=64 count=4 2>/dev/null
[ "$(wc -c < /tmp/r)" -eq 256 ] || fail "short hwrng read"
echo "VIREO-GUEST: hwrng over INTx ok"
echo "VIREO-GUEST: $(grep virtio /proc/interrupts | awk '{ s += $2 } END { print s }') INTx interrupts"
poweroff -f
