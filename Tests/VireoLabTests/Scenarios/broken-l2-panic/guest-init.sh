echo "L2 about to crash"
echo c > /proc/sysrq-trigger
