#!/bin/sh
echo "about to crash the lab host"
echo c > /proc/sysrq-trigger
sleep 1000
