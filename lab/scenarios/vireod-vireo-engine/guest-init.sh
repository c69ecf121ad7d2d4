# Runs in the L2 guest vireod started: say so, then tick until the host acts.
echo "VIREO-GUEST: started by vireod ($(grep MemTotal /proc/meminfo | tr -s ' '))"
n=0
while true; do
  n=$((n + 1))
  echo "VIREO-GUEST: tick $n" > /dev/ttyS0
  sleep 0.2
done
