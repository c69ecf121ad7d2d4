#!/bin/sh
# A VM's life through a real vireod (plain HTTP on loopback) and the vireo CLI, on the vireo engine:
# create, start, read its serial console, survive `kill -9 vireod` (re-adoption), shut down, start + stop, destroy, and the task logs.
# Few PBKDF2 rounds for root@pam: every CLI call logs in, and the lab host runs under TCG.
export VIREO_ROOT_PASSWORD=lab-root-secret VIREO_PASSWORD=lab-root-secret VIREO_PASSWORD_ROUNDS=100
export VIREO_URL=http://127.0.0.1:8006
DATA=/tmp/vireod VMID=700 NODE=$(hostname) LOG=/tmp/vireod.log
fail() {
  echo "VIREO-LAB: FAIL $*"
  echo "--- vireod log"; tail -30 "$LOG"
  [ -n "$daemon" ] && kill -9 "$daemon" 2>/dev/null
  exit 1
}
# Bounded wait for a command to succeed (0.1 s steps).
await() {
  what=$1; shift; i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 600 ] && fail "timed out waiting for $what"
    sleep 0.1
  done
}
# The value of "key" in pretty-printed JSON on stdin.
field() { sed -n "s/^ *\"$1\" : \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -1; }
# A live (not zombie) process.
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
current() { vireo api get "/nodes/$NODE/qemu/$VMID/status/current" --output json; }
# "status (lastexit X)" from one call: each CLI call costs seconds in a debug build under TCG.
state() { out=$(current); echo "$(echo "$out" | field status) (lastexit $(echo "$out" | field vireo-lastexit))"; }
start_vireod() {
  vireod --no-tls --data-dir "$DATA" --listen 127.0.0.1:8006 >>"$LOG" 2>&1 &
  daemon=$!
  await "vireod to answer" timeout 10 vireo api get /version
}
# Prints a task's log lines (by UPID) prefixed with the task's name.
task_log() { vireo api get "/nodes/$NODE/tasks/$2/log" limit=100 --output json | sed -n 's/^ *"t" : "\(.*\)"$/\1/p' | sed "s/^/task $1: /"; }

start_vireod
echo "vireod up: version $(vireo api get /version --output json | field version)"
vireo vm create $VMID name=lab-vireo engine=vireo memory=256 kernel="$L2_KERNEL" initrd="$L2_INITRD" \
  "cmdline=console=ttyS0 panic=-1 quiet" >/dev/null || fail "vm create"
echo "config: $(vireo vm config $VMID --output json | grep -c '"engine" : "vireo"') engine=vireo"
out=$(vireo vm start $VMID) || fail "vm start: $out"
echo "start: $out"
START_UPID=${out%% *}
echo "status/current after start: $(current | field status)"
SERIAL="$DATA/run/$VMID/serial.sock"
await "the serial socket" test -S "$SERIAL"
timeout 90 vireo vmm serial "$SERIAL" --until "VIREO-GUEST: tick 1" >/tmp/serial.log || { cat /tmp/serial.log; fail "no guest tick on the serial console"; }
grep "VIREO-GUEST: started by vireod" /tmp/serial.log | sed 's/^/serial: /'
# The console client has gone: the VM must not mind (a write to its closed socket is no SIGPIPE).
out=$(current)
pid=$(echo "$out" | field pid)
[ -n "$pid" ] || { echo "$out"; fail "no running VM after the serial console client left"; }
echo "after the serial client left: $(echo "$out" | field status), pid $pid"

kill -9 "$daemon"; wait "$daemon" 2>/dev/null
alive "$pid" || fail "the VM died with vireod"
echo "vireod killed; vireo-vmm pid $pid still alive"
start_vireod
out=$(current)
[ "$(echo "$out" | field pid)" = "$pid" ] && echo "after restart: same pid $pid, status $(echo "$out" | field status)"

out=$(vireo vm shutdown $VMID --timeout 60) || fail "vm shutdown: $out"
echo "shutdown: $out"
SHUTDOWN_UPID=${out%% *}
alive "$pid" && fail "vireo-vmm $pid still runs after the shutdown task"
echo "status/current after shutdown: $(state)"

out=$(vireo vm start $VMID) || fail "second vm start: $out"
out=$(vireo vm stop $VMID) || fail "vm stop: $out"
STOP_UPID=${out%% *}
echo "status/current after stop: $(state)"

out=$(vireo vm destroy $VMID) || fail "vm destroy: $out"
echo "destroy: $out"
vireo api get "/nodes/$NODE/qemu/$VMID/status/current" >/dev/null 2>&1 && fail "VM $VMID still exists after destroy"
[ -e "$DATA/run/$VMID" ] && fail "$DATA/run/$VMID left behind"
echo "VM $VMID gone"

task_log start "$START_UPID"
task_log shutdown "$SHUTDOWN_UPID"
task_log stop "$STOP_UPID"
kill "$daemon"; wait "$daemon"
echo "VIREO-LAB: PASS"
