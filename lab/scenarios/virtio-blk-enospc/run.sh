#!/bin/sh
# werror=enospc: the guest's data disk is a 48 MiB ext4 image on a 16 MiB tmpfs. When the host file system
# fills, vireo-vmm pauses the VM (status: io-error/enospc on disk 0) instead of failing the guest's writes;
# the scenario grows the tmpfs and resumes; the guest finishes, its checksums match, e2fsck is clean, and
# the guest's fstrim gives the deleted files' space back to the host (punched holes).
set -u
SOCKET=/tmp/control.sock CONSOLE=/tmp/console.log IMAGE=/small/data.img
# The console first: the runner stops reading at the FAIL line.
fail() { [ -f "$CONSOLE" ] && cat "$CONSOLE"; echo "VIREO-LAB: FAIL $*"; [ -n "${vmm:-}" ] && kill -9 "$vmm"; exit 1; }
mkdir -p /small && mount -t tmpfs -o size=16M tmpfs /small || fail "mount tmpfs"
/usr/sbin/mke2fs -q -F -t ext4 -b 4096 -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$IMAGE" 48M || fail "mke2fs"
echo "image: $(stat -c %b "$IMAGE") blocks allocated, $(df -k /small | tail -1)"
"$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "console=ttyS0 panic=-1 quiet" \
  --cpus 1 --memory 256M --serial "file:$CONSOLE" --control "unix:$SOCKET" --disk path=$IMAGE,format=raw </dev/null &
vmm=$!
i=0
until vireo vmm control "$SOCKET" status 2>/dev/null | grep -q '"reason":"io-error"'; do
  i=$((i + 1)); [ $i -gt 900 ] && fail "timed out waiting for the VM to pause for the full disk"
  kill -0 $vmm 2>/dev/null || fail "vireo-vmm ended before the disk filled"
  sleep 0.2
done
status=$(vireo vmm control "$SOCKET" status)
echo "control: status $status"
echo "$status" | grep -q '"state":"paused".*"disk":0,"error":"enospc"' || fail "unexpected status $status"
echo "host full: $(df -k /small | tail -1)"
# Still full: resuming retries, fails again and pauses again.
vireo vmm control "$SOCKET" resume >/dev/null
i=0
until vireo vmm control "$SOCKET" status 2>/dev/null | grep -q '"reason":"io-error"'; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "timed out waiting for the VM to pause again on a still-full disk"
  sleep 0.2
done
echo "paused again while the host is still full"
mount -o remount,size=96M /small || fail "grow the tmpfs"
echo "control: resume $(vireo vmm control "$SOCKET" resume)"
i=0
while kill -0 $vmm 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 600 ] && fail "timed out waiting for the guest to finish after resume; status $(vireo vmm control "$SOCKET" status)"
  sleep 0.2
done
wait $vmm
rc=$?
cat "$CONSOLE"
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 0 ] || fail "vireo-vmm exited with status $rc"
/usr/sbin/e2fsck -fn "$IMAGE" || fail "e2fsck -fn reports problems"
echo "e2fsck clean"
kib=$(( $(stat -c %b "$IMAGE") / 2 ))
echo "image after fstrim: $kib KiB allocated"
# 24 MiB of data were written; 20 MiB were deleted and trimmed.
[ "$kib" -lt 20480 ] || fail "fstrim did not free the deleted files' space on the host ($kib KiB allocated)"
echo "VIREO-LAB: PASS"
