# Runs in the L2 guest (256 MiB, balloon deflate-on-oom offered). Waits until the host's 160 MiB balloon
# is in place (with VIRTIO_BALLOON_F_DEFLATE_ON_OOM Linux keeps MemTotal and holds the pages: MemFree
# drops), then fills 128 MiB of tmpfs, more than is left. The balloon driver's OOM notifier gives pages
# back (1 MiB per OOM call, virtio_balloon_oom_notify) before the OOM killer would pick a victim.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
meminfo() { awk -v key="$1:" '$1 == key { print $2 }' /proc/meminfo; }
t0=$(meminfo MemTotal)
echo "VIREO-GUEST: MemTotal $t0 kB, MemFree $(meminfo MemFree) kB at init"
# Inflated: MemFree below 80 MiB and no longer falling (the driver inflates in steps).
last=$(meminfo MemFree)
for i in $(seq 1 300); do
  sleep 1
  now=$(meminfo MemFree)
  [ "$now" -lt 80000 ] && [ $((last - now)) -lt 1024 ] && break
  last=$now
done
[ "$(meminfo MemFree)" -lt 80000 ] || fail "MemFree still $(meminfo MemFree) kB: the balloon did not inflate"
echo "VIREO-GUEST: balloon holds its pages: MemTotal $(meminfo MemTotal) kB, MemFree $(meminfo MemFree) kB"
mkdir -p /fill && mount -t tmpfs -o size=200M tmpfs /fill || fail "mount tmpfs"
dd if=/dev/zero of=/fill/a bs=1M count=128 2>/dev/null || fail "dd into tmpfs failed"
[ "$(meminfo MemTotal)" -eq "$t0" ] || fail "MemTotal changed: $(meminfo MemTotal) kB (was $t0)"
dmesg | grep -q "Killed process" && fail "the OOM killer ran: $(dmesg | grep 'Killed process')"
echo "VIREO-GUEST: filled 128 MiB of tmpfs, MemTotal $(meminfo MemTotal) kB, MemFree $(meminfo MemFree) kB, nothing killed"
while true; do sleep 1; done
