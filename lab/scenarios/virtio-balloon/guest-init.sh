# Without VIRTIO_BALLOON_F_DEFLATE_ON_OOM, Linux takes ballooned pages out of MemTotal.
total() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }
echo "VIREO-GUEST: MemTotal $(total) kB at init"
for i in $(seq 1 60); do
  [ "$(total)" -lt 180000 ] && break
  sleep 0.5
done
[ "$(total)" -lt 180000 ] || { echo "VIREO-GUEST: CHECK FAILED: MemTotal still $(total) kB"; exit 1; }
echo "VIREO-GUEST: balloon inflated, MemTotal $(total) kB"
