#!/bin/sh
echo "L1 init at $(cut -d' ' -f1 /proc/uptime)s uptime"
echo "VIREO-LAB: PASS"
