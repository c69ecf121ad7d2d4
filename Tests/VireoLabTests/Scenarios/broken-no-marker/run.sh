#!/bin/sh
echo "waiting for something that never happens"
sleep 1000
