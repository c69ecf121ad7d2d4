# Runs in the L2 guest (256 MiB). Touches 160 MiB and frees it, waits for the host to inflate the balloon
# (without VIRTIO_BALLOON_F_DEFLATE_ON_OOM, Linux takes ballooned pages out of MemTotal), then for the
# deflate, then touches 160 MiB again and idles until the host stops the VM.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
total() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }
t0=$(total)
echo "VIREO-GUEST: MemTotal $t0 kB at init"
mkdir -p /fill && mount -t tmpfs -o size=200M tmpfs /fill || fail "mount tmpfs"
dd if=/dev/zero of=/fill/a bs=1M count=160 2>/dev/null || fail "fill 160 MiB"
rm /fill/a
echo "VIREO-GUEST: touched and freed 160 MiB"
for i in $(seq 1 240); do [ "$(total)" -lt $((t0 - 100000)) ] && break; sleep 0.5; done
[ "$(total)" -lt $((t0 - 100000)) ] || fail "MemTotal still $(total) kB"
echo "VIREO-GUEST: balloon inflated, MemTotal $(total) kB"
for i in $(seq 1 240); do [ "$(total)" -gt $((t0 - 8000)) ] && break; sleep 0.5; done
[ "$(total)" -gt $((t0 - 8000)) ] || fail "MemTotal did not come back: $(total) kB"
echo "VIREO-GUEST: balloon deflated, MemTotal $(total) kB"
dd if=/dev/zero of=/fill/b bs=1M count=160 2>/dev/null || fail "refill 160 MiB"
echo "VIREO-GUEST: touched 160 MiB again"
while true; do sleep 1; done
