#!/usr/bin/env python3
"""Drives a VM lifecycle through vireod with stock proxmoxer, the way users' scripts do.

Usage: proxmoxer_lifecycle.py HOST:PORT ROOT_PASSWORD RAW_GUEST

vireod serves HTTPS with a self-signed certificate, hence verify_ssl=False, as with a fresh Proxmox node.
"""
import sys

from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks

host, port = sys.argv[1].rsplit(":", 1)
password, raw_guest = sys.argv[2], sys.argv[3]

px = ProxmoxAPI(host, port=int(port), user="root@pam", password=password, verify_ssl=False)
assert px.version.get()["version"].startswith("8."), px.version.get()
node = px.nodes.get()[0]["node"]
n = px.nodes(node)
vmid = int(px.cluster.nextid.get())


def wait(upid):
    status = Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.2)
    if status is None or status.get("exitstatus") != "OK":
        print(n.tasks(upid).log.get(start=0, limit=50))
        raise SystemExit(f"task {upid} failed: {status}")
    return status


wait(n.qemu.post(vmid=vmid, name=f"vm{vmid}", memory=16, cores=1, net0="virtio,bridge=vmbr0",
                 ostype="l26", engine="vireo", raw=f"{raw_guest},mode=real"))
config = n.qemu(vmid).config.get()
assert config["net0"].startswith("virtio=BC:24:11:"), config
assert any(vm["vmid"] == vmid for vm in px.cluster.resources.get(type="vm"))
wait(n.qemu(vmid).status.start.post())
assert n.qemu(vmid).status.current.get()["status"] == "running"
wait(n.qemu(vmid).status.stop.post())
assert n.qemu(vmid).status.current.get()["status"] == "stopped"
wait(n.qemu(vmid).delete())
assert all(vm["vmid"] != vmid for vm in n.qemu.get())
print("proxmoxer lifecycle OK")
