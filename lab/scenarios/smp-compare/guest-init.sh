# Runs in the L2 guest: report what the kernel saw, then the lab init powers off.
echo "VIREO-GUEST: cpus=$(grep -c ^processor /proc/cpuinfo)"
echo "VIREO-GUEST: memtotal_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
if [ -d /sys/firmware/memmap/0 ]; then
  for d in /sys/firmware/memmap/*; do
    echo "VIREO-GUEST: e820 $(cat "$d/start")-$(cat "$d/end") $(cat "$d/type")"
  done
else
  dmesg | grep -i 'e820' | sed 's/^/VIREO-GUEST: /'
fi
