#!/bin/sh
# Times L2 boot-to-init-and-poweroff from the lab host, BENCH_RUNS times per VMM.
# microvm needs rtc=on: without an RTC the kernel spends ~5 s probing rtc_cmos ("broken or not accessible").
# Output: "BENCH <vmm> <run> <ms>" on the console and in $RESULTS/bench.txt; "BENCH-SKIP <vmm> <why>" when a VMM cannot run.
RUNS=${BENCH_RUNS:-3}
[ -f /scenario/runs ] && RUNS=$(cat /scenario/runs)
APPEND="console=ttyS0 panic=-1 quiet"
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }   # 10 ms resolution

run_vmm() {
  case "$1" in
    vireo-vmm)
      exec "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "$APPEND" --cpus 1 --memory 256M --serial stdio ;;
    qemu-pc)
      exec "$QEMU" -L "$QEMU_DATA" -enable-kvm -cpu host -m 256M -smp 1 -M pc -nodefaults -display none -serial stdio \
        -no-reboot -net none -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$APPEND" ;;
    qemu-microvm)
      exec "$QEMU" -L "$QEMU_DATA" -enable-kvm -cpu host -m 256M -smp 1 -M microvm,isa-serial=on,rtc=on,x-option-roms=off \
        -nodefaults -display none -serial stdio -no-reboot -net none \
        -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$APPEND" ;;
  esac
}

: > "$RESULTS/bench.txt"
for vmm in vireo-vmm qemu-pc qemu-microvm; do
  if [ "$vmm" = vireo-vmm ] && [ ! -x "$VIREO_VMM" ]; then
    echo "BENCH-SKIP vireo-vmm not packaged" | tee -a "$RESULTS/bench.txt"; continue
  fi
  run=1
  while [ $run -le "$RUNS" ]; do
    start=$(now_ms)
    (run_vmm "$vmm") </dev/null >/tmp/out 2>&1 &
    pid=$!
    (sleep 90; kill -9 "$pid" 2>/dev/null) &
    watchdog=$!
    wait "$pid"
    rc=$?
    kill "$watchdog" 2>/dev/null
    end=$(now_ms)
    if grep -q "VIREO-GUEST: init reached" /tmp/out && [ "$rc" -eq 0 ]; then
      echo "BENCH $vmm $run $((end - start))" | tee -a "$RESULTS/bench.txt"
    else
      echo "BENCH-SKIP $vmm run $run failed (status $rc)" | tee -a "$RESULTS/bench.txt"
      tail -5 /tmp/out
      break
    fi
    run=$((run + 1))
  done
done
echo "VIREO-LAB: PASS"
