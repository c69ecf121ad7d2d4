echo "VIREO-GUEST: cpus=$(grep -c ^processor /proc/cpuinfo)"
