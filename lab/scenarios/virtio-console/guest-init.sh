[ -c /dev/hvc0 ] || { echo "VIREO-GUEST: CHECK FAILED: no /dev/hvc0 ($(ls /sys/class/tty | grep hvc))"; exit 1; }
echo "HVC0-MARKER-12345" > /dev/hvc0 || echo "VIREO-GUEST: CHECK FAILED: write /dev/hvc0"
echo "VIREO-GUEST: hvc0 written"
