# Runs in the L2 guest (after the lab's /init mounted /proc, /sys, /dev and loaded the virtio modules).
echo "VIREO-GUEST: cpus=$(grep -c ^processor /proc/cpuinfo)"
echo "VIREO-GUEST: memtotal_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
echo "VIREO-GUEST: kernel=$(uname -r)"
