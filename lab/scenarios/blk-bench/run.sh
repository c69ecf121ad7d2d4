#!/bin/sh
# virtio-blk throughput in the L2 guest under vireo-vmm and under QEMU -M pc (virtio-blk-pci), same
# lab host, same raw backing file (cache=writeback on both: the host page cache). BENCH_RUNS boots each,
# alternating. Output: "BENCH <vmm> <test> <run> <MB/s>" on the console and in $RESULTS/bench.txt.
RUNS=${BENCH_RUNS:-3}
[ -f /scenario/runs ] && RUNS=$(cat /scenario/runs)
# /scenario/randio (the static random-I/O tool Benchmarks/lab/blk.sh builds from Benchmarks/lab/randio.c)
# goes into the L2 initramfs as /randio: a second newc archive appended to the lab's L2 initramfs (the
# kernel unpacks concatenated cpio archives in order). Without it the guest skips the random rows.
if [ -x /scenario/randio ]; then
  mkdir -p /tmp/l2-extra && cp /scenario/randio /tmp/l2-extra/randio
  (cd /tmp/l2-extra && echo randio | cpio -o -H newc) > /tmp/l2-extra.cpio 2>/dev/null &&
    cat "$L2_INITRD" /tmp/l2-extra.cpio > /tmp/l2-initrd.cpio && L2_INITRD=/tmp/l2-initrd.cpio
  rm -rf /tmp/l2-extra /tmp/l2-extra.cpio
fi
echo "blk-bench: L2 initramfs $L2_INITRD"
APPEND="console=ttyS0 panic=-1 quiet"
IMAGE=/tmp/bench.img
dd if=/dev/zero of=$IMAGE bs=1M count=300 2>/dev/null
run_vmm() {
  case "$1" in
    vireo-vmm)
      exec "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "$APPEND" --cpus 1 --memory 256M \
        --serial stdio --disk path=$IMAGE,format=raw ;;
    qemu-pc)
      exec "$QEMU" -L "$QEMU_DATA" -enable-kvm -cpu host -m 256M -smp 1 -M pc -nodefaults -display none -serial stdio \
        -no-reboot -net none -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$APPEND" \
        -drive file=$IMAGE,if=none,id=d0,format=raw,cache=writeback -device virtio-blk-pci,drive=d0 ;;
  esac
}
: > "$RESULTS/bench.txt"
run=1
while [ $run -le "$RUNS" ]; do
  for vmm in vireo-vmm qemu-pc; do
    if [ "$vmm" = vireo-vmm ] && [ ! -x "$VIREO_VMM" ]; then continue; fi
    (run_vmm "$vmm") </dev/null >/tmp/out 2>&1 &
    pid=$!
    (sleep 200; kill -9 "$pid" 2>/dev/null) &
    watchdog=$!
    wait "$pid"
    kill "$watchdog" 2>/dev/null
    grep -E "VIREO-BENCH-(SKIP|FAIL)" /tmp/out | tr -d "\r" | sed "s/^.*VIREO-BENCH-[A-Z]* /BENCH-SKIP $vmm run $run: /" | tee -a "$RESULTS/bench.txt"
    if ! grep -q "VIREO-BENCH-DONE" /tmp/out; then
      echo "BENCH-SKIP $vmm run $run failed" | tee -a "$RESULTS/bench.txt"; tail -5 /tmp/out; continue
    fi
    grep "VIREO-BENCH " /tmp/out | tr -d "\r" | while read -r _ test bytes ms; do
      echo "BENCH $vmm $test $run $(awk -v b="$bytes" -v ms="$ms" 'BEGIN { printf "%.1f", (ms > 0 ? b / ms / 1e3 : 0) }')"
    done | tee -a "$RESULTS/bench.txt"
  done
  run=$((run + 1))
done
echo "VIREO-LAB: PASS"
