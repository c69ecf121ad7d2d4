#!/bin/sh
# TCP throughput between the L2 guest and the lab host (L1) over a tap: vireo-vmm's virtio-net vs
# QEMU's virtio-net-pci (userspace, vhost=off, the same tap kind: IFF_VNET_HDR with offloads), the
# VMMs taking turns, BENCH_RUNS times each, BENCH_MB MiB per direction.
# Output: "BENCH <vmm> <tx|rx> <run> <MB/s>" on the console and in $RESULTS/bench.txt
# (tx = guest → L1, rx = L1 → guest); "BENCH-SKIP <vmm> <why>" when a VMM cannot run;
# "BENCH-EXITS <vmm> rx <run> <exits> <irq_injections>": the lab host's KVM counters (debugfs)
# over the rx transfer, the guest exits and interrupts each VMM cost for the same bytes (in this
# lab every one is emulated, so they say more than the lab's swinging MB/s).
RUNS=${BENCH_RUNS:-3}
[ -f /scenario/runs ] && RUNS=$(cat /scenario/runs)
MB=8
[ -f /scenario/mb ] && MB=$(cat /scenario/mb)
APPEND="console=ttyS0 panic=-1 quiet bench_mb=$MB"
LOG=/tmp/l2.log
MAC=52:54:00:12:34:56

start_vmm() {
  case "$1" in
    vireo-vmm)
      "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "$APPEND" --cpus 1 --memory 512M \
        --serial "file:$LOG" --net tap=tap0,mac=$MAC --log-level notice --control unix:/tmp/vmm.ctl </dev/null >/tmp/vmm.log 2>&1 & ;;
    qemu)
      "$QEMU" -L "$QEMU_DATA" -enable-kvm -cpu host -m 512M -smp 1 -M pc -nodefaults -display none \
        -serial "file:$LOG" -no-reboot -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$APPEND" \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off -device virtio-net-pci,netdev=n0,mac=$MAC,romfile= \
        </dev/null >/tmp/vmm.log 2>&1 & ;;
  esac
  VMM=$!
}

uptime_s() { cut -d. -f1 /proc/uptime; }
# Waits at most $2 seconds (default 240) for a line in the guest console (an extended regular
# expression); fails at once when the VMM has exited.
await() {
  deadline=$(($(uptime_s) + ${2:-240}))
  while ! grep -qE "$1" "$LOG" 2>/dev/null; do
    if [ "$(uptime_s)" -gt $deadline ] || ! kill -0 $VMM 2>/dev/null; then return 1; fi
    sleep 0.2
  done
}

# A transfer that stalls: what each side last did, while the VMM still runs (the virtio queues'
# indexes on both sides from vireo-vmm's control socket, the tap's counters, the TCP sockets).
diagnose() {
  echo "BENCH-STALL $vmm run $run: $1"
  for task in /proc/$VMM/task/*; do
    echo "thread $(cat $task/comm 2>/dev/null): state $(awk '{print $3}' $task/stat 2>/dev/null) wchan $(cat $task/wchan 2>/dev/null) syscall $(cut -d' ' -f1 $task/syscall 2>/dev/null)"
    head -6 $task/stack 2>/dev/null | sed 's/^/    /'
  done
  grep tap0 /proc/net/dev
  awk 'NR == 1 || $3 ~ /:138[89]$/ || $2 ~ /:138[89]$/' /proc/net/tcp
  tail -12 "$LOG"; tail -5 /tmp/vmm.log
  if [ "$vmm" = vireo-vmm ]; then
    timeout 30 vireo vmm control /tmp/vmm.ctl stats 2>&1 | tr ',' '\n' | grep -E 'exits|halt|insn|irq' | tr '\n' ' ' | cut -c1-1500; echo
    timeout 30 vireo vmm control /tmp/vmm.ctl virtio 2>&1 | cut -c1-3000
  fi
}

now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }   # 10 ms resolution
# "BYTES MILLISECONDS" → MiB/s.
rate() { tr -d '\r' | awk '$2 > 0 { printf "%.3f\n", $1 / ($2 / 1000) / 1048576 }'; }

: > "$RESULTS/bench.txt"
mount -t debugfs none /sys/kernel/debug 2>/dev/null
# "<exits> <irq_injections>" summed over the lab host's VMs (one runs at a time).
kvm_counters() { echo "$(cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo 0) $(cat /sys/kernel/debug/kvm/irq_injections 2>/dev/null || echo 0)"; }
VMMS="vireo-vmm qemu"
if [ ! -x "$VIREO_VMM" ]; then
  echo "BENCH-SKIP vireo-vmm not packaged" | tee -a "$RESULTS/bench.txt"; VMMS=qemu
fi
# The VMMs take turns, so that a drift in the lab host's speed touches both alike; one that
# fails a run sits out the rest.
failed=
run=1
while [ $run -le "$RUNS" ]; do
  for vmm in $VMMS; do
    case " $failed " in *" $vmm "*) continue ;; esac
    rm -f "$LOG" /tmp/rx.txt
    echo "BENCH-RUN $vmm $run: starting"
    tail -f /dev/null | nc -l -p 5000 > /dev/null &
    listener=$!
    start_vmm $vmm
    i=0
    while [ ! -d /sys/class/net/tap0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    ip addr add 192.168.77.1/24 dev tap0
    ip link set tap0 up
    ok=1
    await "BENCH-GUEST tx|VIREO-GUEST: tx stalled" 180 || { ok=0; diagnose "no guest → lab host result"; }
    grep -q "VIREO-GUEST: tx stalled" "$LOG" && { ok=0; diagnose "guest → lab host transfer unfinished after 150 s"; }
    [ $ok = 1 ] && { await "VIREO-GUEST: listening on 5001" 60 || { ok=0; diagnose "the guest never listened"; }; }
    if [ $ok = 1 ]; then
      # From the start of dd until the connection has closed (only TIME_WAIT or nothing left for 5001 = 0x1389).
      counters_before=$(kvm_counters)
      start=$(now_ms)
      if timeout 150 sh -c "dd if=/dev/zero bs=65536 count=$((MB * 16)) 2>/dev/null | nc 192.168.77.2 5001"; then
        i=0; while [ -n "$(awk '$3 ~ /:1389$/ && $4 != "06"' /proc/net/tcp)" ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done
        echo "$((MB * 1048576)) $(($(now_ms) - start))" > /tmp/rx.txt
        rx_exits=$(echo "$counters_before $(kvm_counters)" | awk '{ print $3 - $1, $4 - $2 }')
        await "VIREO-GUEST: done" 60 || ok=0
      else
        ok=0; diagnose "lab host → guest transfer unfinished after 150 s"
      fi
    fi
    (sleep 60; kill -9 $VMM 2>/dev/null) &
    watchdog=$!
    wait $VMM
    rc=$?
    kill $watchdog $listener 2>/dev/null
    tx=$(sed -n 's/.*BENCH-GUEST tx //p' "$LOG" | rate)
    rx=$(rate < /tmp/rx.txt)
    if [ $ok = 1 ] && [ "$rc" -eq 0 ] && [ -n "$tx" ] && [ -n "$rx" ]; then
      [ $run = 1 ] && grep "VIREO-GUEST: features" "$LOG"
      echo "BENCH $vmm tx $run $tx" | tee -a "$RESULTS/bench.txt"
      echo "BENCH $vmm rx $run $rx" | tee -a "$RESULTS/bench.txt"
      echo "BENCH-EXITS $vmm rx $run $rx_exits" | tee -a "$RESULTS/bench.txt"
    else
      echo "BENCH-SKIP $vmm run $run failed (status $rc)" | tee -a "$RESULTS/bench.txt"
      tail -20 "$LOG"; tail -5 /tmp/vmm.log
      failed="$failed $vmm"
    fi
  done
  run=$((run + 1))
done
echo "VIREO-LAB: PASS"
