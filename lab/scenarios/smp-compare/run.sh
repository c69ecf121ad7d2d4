#!/bin/sh
# Is a 2-vCPU L2 boot failure vireo-vmm's or the nested emulation's? Boot the same kernel and
# initramfs with 2 vCPUs under vireo-vmm and under QEMU (-enable-kvm -cpu host -smp 2 -M pc) in
# turn, ROUNDS times each, in this one lab host, and count the boots that never reached the guest's
# init. vireo-vmm exits 3 on a triple fault; QEMU with -no-reboot exits 0 with an empty console
# (`quiet`: nothing is printed before init unless the kernel panics).
ROUNDS=10
[ -f /scenario/rounds ] && ROUNDS=$(cat /scenario/rounds)
APPEND="console=ttyS0 panic=-1 quiet"
v_ok=0; v_failed=0; q_ok=0; q_failed=0
r=1
while [ "$r" -le "$ROUNDS" ]; do
  rm -f /tmp/v.log /tmp/q.log
  timeout 120 "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "$APPEND" --cpus 2 --memory 256M \
    --serial file:/tmp/v.log </dev/null >/tmp/vmm.err 2>&1
  rc=$?
  if [ $rc = 0 ] && grep -q "cpus=2" /tmp/v.log; then
    v_ok=$((v_ok + 1)); echo "SMP-COMPARE round $r vireo-vmm ok"
  else
    v_failed=$((v_failed + 1)); echo "SMP-COMPARE round $r vireo-vmm FAILED (exit status $rc)"; tail -5 /tmp/v.log /tmp/vmm.err
  fi
  timeout 120 "$QEMU" -L "$QEMU_DATA" -enable-kvm -cpu host -m 256M -smp 2 -M pc -nodefaults -display none -no-reboot \
    -serial file:/tmp/q.log -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$APPEND" </dev/null >/tmp/qemu.err 2>&1
  rc=$?
  if [ $rc = 0 ] && grep -q "cpus=2" /tmp/q.log; then
    q_ok=$((q_ok + 1)); echo "SMP-COMPARE round $r qemu ok"
  else
    q_failed=$((q_failed + 1)); echo "SMP-COMPARE round $r qemu FAILED (exit status $rc, $(wc -l < /tmp/q.log) console lines)"; tail -5 /tmp/q.log /tmp/qemu.err
  fi
  r=$((r + 1))
done
echo "SMP-COMPARE vireo-vmm ok=$v_ok failed=$v_failed"
echo "SMP-COMPARE qemu ok=$q_ok failed=$q_failed"
echo "VIREO-LAB: PASS"
