#!/bin/sh
fail() { echo "VIREO-LAB: FAIL $*"; exit 1; }
[ -e /dev/kvm ] && echo "L1: /dev/kvm present" || fail "no /dev/kvm"
[ -d /sys/module/kvm_amd ] && echo "L1: kvm_amd loaded" || fail "kvm_amd is not loaded"
timeout 60 "$VIREO_VMM" --raw /scenario/loop.bin --raw-mode long --memory 16M --print-stats \
  </dev/null >/tmp/vmm.out 2>/tmp/vmm.err
rc=$?
cat /tmp/vmm.out /tmp/vmm.err
cp /tmp/vmm.out /tmp/vmm.err "$RESULTS/"
echo "vireo-vmm exited with status $rc"
grep -q LOOP-DONE /tmp/vmm.out || fail "the guest did not print LOOP-DONE"
emulated=$(awk '$1 == "vireo-vmm:" && $2 == "stat" && $3 == "vcpu0.insn_emulation" { print $4 }' /tmp/vmm.err)
[ -n "$emulated" ] || fail "vireo-vmm printed no vcpu0.insn_emulation statistic"
[ "$emulated" -lt 1000 ] || fail "insn_emulation=$emulated: the loop was emulated, not run natively"
echo "insn_emulation=$emulated < 1000"
[ "$rc" -eq 0 ] || fail "vireo-vmm exited with status $rc (expected 0, guest power-off)"
echo "VIREO-LAB: PASS"
