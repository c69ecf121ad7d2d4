# Runs in the L2 guest: the CPUs the kernel brought up; the lab init then powers off.
echo "VIREO-GUEST: cpus=$(grep -c ^processor /proc/cpuinfo)"
