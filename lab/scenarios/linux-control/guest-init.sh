# Runs in the L2 guest: show the keyboard driver found its controller, then tick until the host acts.
dmesg | grep -i 'i8042' | sed 's/^/VIREO-GUEST: /'
n=0
while true; do
  n=$((n + 1))
  echo "VIREO-GUEST: tick $n" > /dev/ttyS0
  sleep 0.2
done
