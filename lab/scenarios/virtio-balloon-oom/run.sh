#!/bin/sh
# Deflate-on-OOM: the host inflates the balloon to 160 MiB of a 256 MiB guest, the guest then needs more
# memory than is left; its driver takes pages back from the balloon instead of killing a process, and the
# host sees the balloon's actual size fall below the target it set.
set -u
CONSOLE=/tmp/console.log SOCKET=/tmp/control.sock
# The console first: the runner stops reading at the FAIL line.
fail() { cat "$CONSOLE"; echo "VIREO-LAB: FAIL $*"; kill -9 "$vmm" 2>/dev/null; exit 1; }
"$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "console=ttyS0 panic=-1 quiet" \
  --cpus 1 --memory 256M --serial "file:$CONSOLE" --control "unix:$SOCKET" --balloon 160M,deflate-on-oom=on </dev/null &
vmm=$!
await() {
  i=0
  while ! grep -q "$1" "$CONSOLE" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 1500 ] && fail "timed out waiting for '$1' in the guest console"
    grep -q "CHECK FAILED" "$CONSOLE" 2>/dev/null && fail "guest check failed"
    kill -0 $vmm 2>/dev/null || fail "vireo-vmm ended before '$1' appeared in the guest console"
    sleep 0.2
  done
}
# The balloon's actual size in MiB, as the control socket reports it (and printed).
actual() {
  reply=$(vireo vmm control "$SOCKET" balloon)
  echo "control: balloon $reply" >&2
  echo "$reply" | sed -n 's/.*"actual_mib":\([0-9]*\).*/\1/p'
}
await "VIREO-GUEST: balloon holds"
before=$(actual)
[ "${before:-0}" -ge 128 ] || fail "the balloon holds ${before:-?} MiB, expected at least 128 of its 160"
await "VIREO-GUEST: filled 128 MiB"
after=$(actual)
[ "${after:-999}" -lt "$before" ] || fail "the balloon did not shrink: $before MiB before, ${after:-?} MiB after"
echo "balloon shrank from $before MiB to $after MiB: the guest deflated it on OOM"
vireo vmm control "$SOCKET" stop >/dev/null
wait $vmm
rc=$?
grep "VIREO-GUEST" "$CONSOLE"
echo "vireo-vmm exited with status $rc"
[ "$rc" -eq 4 ] || fail "vireo-vmm exited with status $rc (expected 4 after stop)"
echo "VIREO-LAB: PASS"
