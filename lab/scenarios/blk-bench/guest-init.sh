# Runs in the L2 guest: direct-I/O throughput of /dev/vda. busybox dd (no fio in the lab image):
# 1 MiB sequential writes and reads (256 MiB), 4 KiB sequential writes and reads at queue depth 1
# (32 MiB), timed with /proc/uptime (10 ms). Then, when run.sh added /randio (Benchmarks/lab/randio.c)
# to the initramfs: 4 KiB random reads and writes, O_DIRECT, 4096 operations each over the first
# 256 MiB, offsets from a fixed-seed generator (the same for every boot and VMM), at queue depth 1
# (pread/pwrite) and 16 (Linux AIO), timed with CLOCK_MONOTONIC.
# Prints "VIREO-BENCH <test> <bytes> <milliseconds>", then "VIREO-BENCH-DONE".
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
if [ -x /randio ]; then
  for qd in 1 16; do
    for rw in read write; do
      # -T 40: a cap so that a very slow boot still finishes inside run.sh's watchdog (the row then covers fewer operations).
      /randio $rw /dev/vda -b 4k -s 256M -n 4096 -q $qd -S 1 -T 40 || echo "VIREO-BENCH-FAIL rand-$rw-4k-qd$qd"
    done
  done
else
  echo "VIREO-BENCH-SKIP no /randio in the initramfs: random 4 KiB rows need Benchmarks/lab/blk.sh"
fi
echo "VIREO-BENCH-DONE"
poweroff -f
