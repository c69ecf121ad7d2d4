# Runs in the L2 guest of virtio-net-bench: TCP throughput with busybox dd | nc (the busybox
# initramfs has no iperf3). Guest → L1: from the start of dd until the connection has closed (the
# data acknowledged), /proc/uptime's 10 ms clock, printed as "BENCH-GUEST tx BYTES MILLISECONDS".
# L1 → guest: a listener on 5001 (stdin kept open: busybox nc quits at EOF on stdin); L1 times it.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
MB=$(sed -n 's/.*bench_mb=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$MB" ] || MB=256
ip link set lo up
ip addr add 192.168.77.2/24 dev eth0 || fail "ip addr add"
ip link set eth0 up || fail "ip link set eth0 up"
i=0
while ! ping -c 1 -W 1 192.168.77.1 >/dev/null 2>&1 && [ $i -lt 20 ]; do i=$((i+1)); done
echo "VIREO-GUEST: features $(cat /sys/class/net/eth0/device/features)"
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
start=$(now_ms)
# A stalled transfer is reported and the guest stays up, so the lab host can inspect the VMM.
if ! timeout 150 sh -c "dd if=/dev/zero bs=65536 count=$((MB * 16)) 2>/dev/null | nc 192.168.77.1 5000"; then
  grep -i virtio /proc/interrupts | tr -s ' ' | sed 's/^/VIREO-GUEST: irq /'
  for f in rx_packets tx_packets rx_dropped tx_dropped; do echo "VIREO-GUEST: eth0 $f $(cat /sys/class/net/eth0/statistics/$f)"; done
  awk 'NR == 1 || $3 ~ /:1388$/' /proc/net/tcp | sed 's/^/VIREO-GUEST: tcp /'
  echo "VIREO-GUEST: tx stalled"
  sleep 600
fi
# Until only TIME_WAIT (06) or nothing is left for port 5000 (0x1388).
i=0; while [ -n "$(awk '$3 ~ /:1388$/ && $4 != "06"' /proc/net/tcp)" ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done
echo "BENCH-GUEST tx $((MB * 1048576)) $(($(now_ms) - start))"
sleep 600 | nc -l -p 5001 > /dev/null &
listener=$!
# Announce the port only once it is bound (LISTEN, state 0A, on 5001 = 0x1389).
i=0; while [ -z "$(awk '$2 ~ /:1389$/ && $4 == "0A"' /proc/net/tcp /proc/net/tcp6)" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
echo "VIREO-GUEST: listening on 5001"
i=0
while kill -0 $listener 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
echo "VIREO-GUEST: done"
poweroff -f
