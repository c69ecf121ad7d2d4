# Runs in the L2 guest: eth0 on virtio-net (tap0 in L1 is 192.168.77.1; not 10.0.2.0/24, which is the L1 QEMU user network), ping, then a file over TCP.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
[ -d /sys/class/net/eth0 ] || fail "no eth0"
echo "VIREO-GUEST: eth0 mac $(cat /sys/class/net/eth0/address) driver $(basename "$(readlink /sys/class/net/eth0/device/driver)")"
ip link set lo up
ip addr add 192.168.77.2/24 dev eth0 || fail "ip addr add"
ip link set eth0 up || fail "ip link set eth0 up"
sleep 1
echo "VIREO-GUEST: carrier $(cat /sys/class/net/eth0/carrier)"
ping -c 3 -W 2 192.168.77.1 || { cat /proc/net/arp; fail "ping 192.168.77.1"; }
echo "VIREO-GUEST: ping ok"
dd if=/dev/urandom of=/tmp/payload bs=1024 count=512 2>/dev/null
sum=$(md5sum /tmp/payload | cut -d' ' -f1)
echo "VIREO-GUEST: payload md5 $sum"
nc -w 3 192.168.77.1 5000 < /tmp/payload || fail "nc send"
# nc exits with data still in the socket's send queue: wait until the connection has closed
# (only TIME_WAIT, state 06, or nothing left for port 5000 = 0x1388) before powering off.
i=0
while [ -n "$(awk '$3 ~ /:1388$/ && $4 != "06"' /proc/net/tcp)" ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
echo "VIREO-GUEST: sent"
cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/rx_packets | tr '\n' ' '; echo
poweroff -f
