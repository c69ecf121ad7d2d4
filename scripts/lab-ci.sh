#!/bin/sh
# CI entry point for the lab: install the host packages (Debian/Ubuntu, needs root or sudo), build, test.
# Usage: scripts/lab-ci.sh [--no-install] [--fast]   (--fast skips the tests that boot lab hosts)
set -eu
cd "$(dirname "$0")/.."
INSTALL=1 FAST=0
for arg in "$@"; do
  case "$arg" in
    --no-install) INSTALL=0 ;;
    --fast) FAST=1 ;;
    *) echo "unknown argument $arg" >&2; exit 64 ;;
  esac
done
if [ "$INSTALL" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    linux-image-cloud-amd64 busybox-static qemu-system-x86 qemu-utils e2fsprogs cpio binutils
fi
SCRATCH=${SCRATCH:-.build-lab}
swift build --scratch-path "$SCRATCH" --product vireo
swift build --scratch-path "$SCRATCH" --product vireo-vmm
"$(swift build --scratch-path "$SCRATCH" --show-bin-path)/vireo" lab host-kvm
if [ "$FAST" = 1 ]; then
  swift test --scratch-path "$SCRATCH" --filter VireoLabTests --skip LabTests
else
  swift test --scratch-path "$SCRATCH" --filter VireoLabTests
fi
