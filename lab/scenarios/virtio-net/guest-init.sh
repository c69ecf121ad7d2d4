# Runs in the L2 guest: eth0 on virtio-net (tap0 in L1 is 192.168.77.1; not 10.0.2.0/24, which is the L1 QEMU user network).
# Checks the negotiated offloads, pings, sends 4 MiB to L1 and receives 4 MiB from L1 over TCP (checksums compared),
# then waits for L1 to take the link down and up again through the control socket.
fail() { echo "VIREO-GUEST: CHECK FAILED: $*"; poweroff -f; }
[ -d /sys/class/net/eth0 ] || fail "no eth0"
echo "VIREO-GUEST: eth0 mac $(cat /sys/class/net/eth0/address) driver $(basename "$(readlink /sys/class/net/eth0/device/driver)")"
# The virtio bus shows the negotiated feature bits, bit N at position N+1 (virtio 1.2 §5.1.3).
features=$(cat /sys/class/net/eth0/device/features)
bit() { echo "$features" | cut -c$(($1 + 1)); }
echo "VIREO-GUEST: features csum=$(bit 0) guest_csum=$(bit 1) guest_tso4=$(bit 7) guest_tso6=$(bit 8) host_tso4=$(bit 11) host_tso6=$(bit 12) mrg_rxbuf=$(bit 15) status=$(bit 16)"
ip link set lo up
ip addr add 192.168.77.2/24 dev eth0 || fail "ip addr add"
ip link set eth0 up || fail "ip link set eth0 up"
sleep 1
echo "VIREO-GUEST: carrier $(cat /sys/class/net/eth0/carrier)"
ping -c 3 -W 2 192.168.77.1 || { cat /proc/net/arp; fail "ping 192.168.77.1"; }
echo "VIREO-GUEST: ping ok"
# L1 → guest: a listener (its stdin kept open: busybox nc quits at EOF on stdin), L1 connects once it sees the marker.
sleep 600 | nc -l -p 5001 > /tmp/incoming &
listener=$!
# Announce the port only once it is bound (LISTEN, state 0A, on 5001 = 0x1389). busybox nc listens on
# the IPv6 wildcard (dual-stack), so the socket is in tcp6: looking only at tcp made every run wait out
# all 500 rounds, longer than L1's 60 s on a slow lab host.
i=0; while [ -z "$(awk '$2 ~ /:1389$/ && $4 == "0A"' /proc/net/tcp /proc/net/tcp6)" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
echo "VIREO-GUEST: listening on 5001"
dd if=/dev/urandom of=/tmp/payload bs=1024 count=4096 2>/dev/null
sum=$(md5sum /tmp/payload | cut -d' ' -f1)
echo "VIREO-GUEST: payload md5 $sum"
nc -w 3 192.168.77.1 5000 < /tmp/payload || fail "nc send"
# nc exits with data still in the socket's send queue: wait until the connection has closed
# (only TIME_WAIT, state 06, or nothing left for port 5000 = 0x1388) before going on.
i=0
while [ -n "$(awk '$3 ~ /:1388$/ && $4 != "06"' /proc/net/tcp)" ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
echo "VIREO-GUEST: sent"
i=0
while kill -0 $listener 2>/dev/null && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done
echo "VIREO-GUEST: received $(wc -c < /tmp/incoming) bytes md5 $(md5sum /tmp/incoming | cut -d' ' -f1)"
echo "VIREO-GUEST: tx_packets $(cat /sys/class/net/eth0/statistics/tx_packets) tx_bytes $(cat /sys/class/net/eth0/statistics/tx_bytes) rx_packets $(cat /sys/class/net/eth0/statistics/rx_packets) rx_bytes $(cat /sys/class/net/eth0/statistics/rx_bytes)"
# Link state from the host (config-change interrupt, VIRTIO_NET_S_LINK_UP).
echo "VIREO-GUEST: ready for link down"
i=0
while [ "$(cat /sys/class/net/eth0/carrier)" != 0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "VIREO-GUEST: carrier after link down $(cat /sys/class/net/eth0/carrier)"
ping -c 1 -W 1 192.168.77.1 >/dev/null 2>&1 && fail "ping answered while the link is down"
echo "VIREO-GUEST: ready for link up"
i=0
while [ "$(cat /sys/class/net/eth0/carrier)" != 1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "VIREO-GUEST: carrier after link up $(cat /sys/class/net/eth0/carrier)"
ping -c 3 -W 2 192.168.77.1 >/dev/null || fail "ping after link up"
echo "VIREO-GUEST: ping after link up ok"
poweroff -f
