#!/usr/bin/env python3
"""Drives a VM lifecycle through vireod with stock proxmoxer, the way users' scripts do.

Usage: proxmoxer_lifecycle.py HOST:PORT ROOT_PASSWORD RAW_GUEST

vireod serves plain HTTP for now, so the only adaptation is rewriting proxmoxer's https:// URLs
to http:// below the library (in requests); every API call is proxmoxer's own.
"""
import sys

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks

host, port = sys.argv[1].rsplit(":", 1)
password, raw_guest = sys.argv[2], sys.argv[3]

_request = requests.Session.request


def plain_http(self, method, url, *args, **kwargs):
    return _request(self, method, url.replace("https://", "http://", 1), *args, **kwargs)


requests.Session.request = plain_http

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
