# Runs in the L2 guest: fills an ext4 data disk whose backing file lives on a 16 MiB tmpfs in the lab
# host (the VM pauses mid-write until the host makes room), checks the data, then deletes most of it
# and trims, which must shrink the backing file.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
echo "VIREO-GUEST: vda discard granularity $(cat /sys/block/vda/queue/discard_granularity) max $(cat /sys/block/vda/queue/discard_max_bytes) write-zeroes max $(cat /sys/block/vda/queue/write_zeroes_max_bytes)"
for i in 1 2 3 4 5 6; do
  dd if=/dev/urandom of=/mnt/f$i bs=1M count=4 2>/dev/null || fail "write f$i"
  md5sum /mnt/f$i >> /tmp/sums
done
sync || fail "sync"
echo "VIREO-GUEST: 24 MiB written and synced"
echo 3 > /proc/sys/vm/drop_caches
md5sum -c /tmp/sums >/dev/null || fail "checksums differ after the disk-full pause"
echo "VIREO-GUEST: checksums match"
rm /mnt/f1 /mnt/f2 /mnt/f3 /mnt/f4 /mnt/f5
sync
fstrim -v /mnt || fail "fstrim"
umount /mnt || fail "umount"
echo "VIREO-GUEST: trimmed and unmounted"
poweroff -f
