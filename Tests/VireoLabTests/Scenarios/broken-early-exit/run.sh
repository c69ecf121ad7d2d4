#!/bin/sh
echo "powering off early"
poweroff -f
