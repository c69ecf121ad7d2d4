#!/bin/sh
# Every lab host gets VIREO_LAB_HOST_INDEX and VIREO_LAB_IP=10.99.0.(index+1) on eth1, the shared link.
peer="10.99.0.$(( (VIREO_LAB_HOST_INDEX + 1) % VIREO_LAB_HOSTS + 1 ))"
echo "link up as $VIREO_LAB_IP, peer $peer"
i=0
while [ $i -lt 60 ]; do
  if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then
    echo "reached $peer after $i retries"
    ping -c 3 -i 0.2 "$peer" | tail -1 | tee "$RESULTS/ping.txt"
    # Stay up a little so the peer can reach us too before we power off.
    sleep 5
    echo "VIREO-LAB: PASS"
    exit 0
  fi
  i=$((i + 1))
done
echo "VIREO-LAB: FAIL $VIREO_LAB_IP could not reach $peer"
ip addr
