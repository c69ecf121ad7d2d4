# Runs in each L2 guest; its role (a, b or c) comes from the kernel command line (vireo.role=).
# All three share 10.10.0.0/24: a=.1 and b=.2 on VLAN 10, c=.3 on VLAN 20; in L1, 10.10.0.254 is a
# namespace behind the switch's uplink (VLAN 10) and 10.10.0.20 a namespace on a VLAN-20 tap port.
# a also sends 2 MiB over TCP to b and to the outside namespace (md5 compared by L1): the guests'
# TSO super-frames cross the switch whole to b and are handed to the uplink's kernel to segment.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
role=$(sed -n 's/.*vireo\.role=\([a-z]*\).*/\1/p' /proc/cmdline)
case "$role" in a) me=1 ;; b) me=2 ;; c) me=3 ;; *) fail "no vireo.role= on the command line" ;; esac
[ -d /sys/class/net/eth0 ] || fail "no eth0"
echo "VIREO-GUEST: $role eth0 $(cat /sys/class/net/eth0/address)"
ip link set lo up
ip addr add 10.10.0.$me/24 dev eth0 || fail "ip addr add"
ip link set eth0 up || fail "ip link set eth0 up"
# Retries while the peer is still booting: one probe a second, up to $2 probes.
reach() {
  i=0
  while [ $i -lt "$2" ]; do
    ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
    i=$((i + 1))
  done
  return 1
}
# send HOST PORT: sends /tmp/payload, retrying while the listener is not up yet, then waits until
# the connection has closed (nc exits with data still queued; 06 is TIME_WAIT).
send() {
  i=0
  until nc -w 3 "$1" "$2" < /tmp/payload; do
    i=$((i + 1))
    [ $i -lt 30 ] || fail "cannot send to $1:$2"
    sleep 1
  done
  port=$(printf '%04X' "$2")
  i=0
  while [ -n "$(awk -v p=":$port\$" '$3 ~ p && $4 != "06"' /proc/net/tcp)" ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
}
case "$role" in
a)
  reach 10.10.0.2 90 || fail "a cannot reach b (10.10.0.2)"
  echo "VIREO-GUEST: a reached b on VLAN 10"
  reach 10.10.0.254 10 || fail "a cannot reach the outside namespace (10.10.0.254)"
  echo "VIREO-GUEST: a reached the outside namespace through the uplink"
  dd if=/dev/urandom of=/tmp/payload bs=1024 count=2048 2>/dev/null
  echo "VIREO-GUEST: a payload md5 $(md5sum /tmp/payload | cut -d' ' -f1)"
  send 10.10.0.2 5001
  echo "VIREO-GUEST: a sent to b"
  send 10.10.0.254 5002
  echo "VIREO-GUEST: a sent to the outside namespace"
  ;;
b)
  # The listener's stdin stays open (busybox nc quits at EOF on stdin); it ends when a closes.
  sleep 600 | nc -l -p 5001 > /tmp/incoming &
  reach 10.10.0.1 90 || fail "b cannot reach a (10.10.0.1)"
  echo "VIREO-GUEST: b reached a on VLAN 10"
  i=0
  while [ "$(wc -c < /tmp/incoming)" -lt 2097152 ] && [ $i -lt 900 ]; do sleep 0.2; i=$((i + 1)); done
  echo "VIREO-GUEST: b received $(wc -c < /tmp/incoming) bytes md5 $(md5sum /tmp/incoming | cut -d' ' -f1)"
  ;;
c)
  reach 10.10.0.20 30 || fail "c cannot reach its VLAN-20 neighbour (10.10.0.20)"
  echo "VIREO-GUEST: c reached its VLAN-20 neighbour"
  # a, b and the outside namespace are up (L1 started c after a and b were done) but on VLAN 10.
  for host in 1 2 254; do
    ping -c 2 -W 1 10.10.0.$host >/dev/null 2>&1 && fail "c (VLAN 20) reached 10.10.0.$host on VLAN 10"
  done
  echo "VIREO-GUEST: c cannot reach VLAN 10 (a, b, outside)"
  ;;
esac
echo "VIREO-GUEST: $role done"
# a and b stay up until L1 stops their VMMs; c powers off.
[ "$role" = c ] && poweroff -f
while :; do sleep 5; done
