# Runs in the L2 guest: direct-I/O throughput of /dev/vda with busybox dd (no fio in the lab image):
# 1 MiB sequential writes and reads (256 MiB), 4 KiB sequential writes and reads at queue depth 1
# (32 MiB). Timed with /proc/uptime (10 ms). Prints "VIREO-BENCH <test> <bytes> <milliseconds>".
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
measure() {  # name, bytes, dd arguments...
  name=$1; bytes=$2; shift 2
  start=$(now_ms)
  dd "$@" 2>/dev/null || { echo "VIREO-BENCH-FAIL $name"; return; }
  echo "VIREO-BENCH $name $bytes $(( $(now_ms) - start ))"
}
measure seq-write-1m 268435456 if=/dev/zero of=/dev/vda bs=1M count=256 oflag=direct
measure seq-read-1m 268435456 if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct
measure write-4k-qd1 33554432 if=/dev/zero of=/dev/vda bs=4k count=8192 oflag=direct
measure read-4k-qd1 33554432 if=/dev/vda of=/dev/null bs=4k count=8192 iflag=direct
poweroff -f
