echo "VIREO-GUEST: rebooting"
reboot -f
