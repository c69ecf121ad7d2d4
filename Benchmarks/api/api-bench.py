#!/usr/bin/env python3
"""API benchmark for vireod: list and config-read latency (wrk), and API-call-to-running time.

Usage: Benchmarks/api/api-bench.py --vireod .build/release/vireod [--vms 1000,10000] [--duration 10]
                                   [--starts 10] [--running N] [--tls]

Starts a throw-away vireod (fresh data directory, 127.0.0.1, any port), creates an API token, fills it
with N stopped VMs through the API, then runs `wrk --latency` (Debian's wrk) for
GET /nodes/NODE/qemu and GET /nodes/NODE/qemu/100/config and prints p50/p99. Then it times
POST …/status/start until the task has stopped with OK (the VM is running) for the vireo engine
(vireo-vmm with a 2-byte spinning raw guest; needs /dev/kvm) and the QEMU engine (no disks: SeaBIOS),
`--starts` times each, and prints the median, plus the vireo-vmm and qemu exec-to-socket share.

With `--running N` (root, /dev/kvm, iproute2), N of each list's VMs are vireo-engine VMs whose NIC is
on a throw-away Linux bridge (taps tap95000i0…, away from the vmids tests use): after the stopped-VM
rows they are started (a halting 3-byte guest: no CPU), the list, cluster/resources and one of them's
status/current are measured again (netin/netout read from their taps, the balloon asked of the
engine), and they are stopped.
"""
import argparse
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor


class Client:
    def __init__(self, base, token=None):
        self.base, self.token = base, token
        self.context = ssl._create_unverified_context()

    def call(self, method, path, params=None):
        data = urllib.parse.urlencode(params or {}).encode()
        url = self.base + path
        body = None
        if method in ("POST", "PUT"):
            body = data
        elif data:
            url += "?" + data.decode()
        request = urllib.request.Request(url, data=body, method=method)
        if self.token:
            request.add_header("Authorization", "PVEAPIToken=" + self.token)
        with urllib.request.urlopen(request, context=self.context, timeout=60) as reply:
            return json.load(reply)["data"]

    def wait(self, node, upid, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.call("GET", f"/nodes/{node}/tasks/{upid}/status")
            if status["status"] == "stopped":
                return status
            time.sleep(0.002)
        raise SystemExit(f"task {upid} did not finish")


def wrk(url, token, duration, connections):
    out = subprocess.run(["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{duration}s", "--latency",
                          "-H", f"Authorization: PVEAPIToken={token}", url],
                         check=True, capture_output=True, text=True).stdout
    def percentile(name):
        match = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return percentile("50"), percentile("99"), rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vireod", required=True)
    parser.add_argument("--vms", default="1000,10000")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--running", type=int, default=0,
                        help="of each list's VMs, N run (vireo engine, halting guest) with a NIC on a Linux bridge")
    parser.add_argument("--tls", action="store_true", help="benchmark over HTTPS (default: plain HTTP)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if args.running and not (os.geteuid() == 0 and os.access("/dev/kvm", os.W_OK) and shutil.which("ip")):
        raise SystemExit("--running needs root, a writable /dev/kvm and iproute2")
    bridge = f"vb{os.getpid() % 100000}br"
    running = list(range(95000, 95000 + args.running))

    data = tempfile.mkdtemp(prefix="vireod-bench-")
    env = dict(os.environ, VIREO_ROOT_PASSWORD="bench-password", VIREO_PASSWORD_ROUNDS="1000")
    command = [args.vireod, "--data-dir", data, "--listen", "127.0.0.1:0", "--node", "bench",
               "--memory-overcommit", "1000", "--cpu-overcommit", "1000"] + ([] if args.tls else ["--no-tls"])
    log = open(os.path.join(data, "vireod.log"), "w")
    daemon = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        address = os.path.join(data, "vireod.addr")
        deadline = time.monotonic() + 60
        while not os.path.exists(address):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("vireod did not start: " + open(os.path.join(data, "vireod.log")).read())
            time.sleep(0.05)
        host = open(address).read().strip()
        base = ("https://" if args.tls else "http://") + host + "/api2/json"
        login = Client(base)
        ticket = login.call("POST", "/access/ticket", {"username": "root@pam", "password": "bench-password"})
        request = urllib.request.Request(base + "/access/users/root@pam/token/bench", data=b"privsep=0", method="POST")
        request.add_header("Cookie", "PVEAuthCookie=" + ticket["ticket"])
        request.add_header("CSRFPreventionToken", ticket["CSRFPreventionToken"])
        with urllib.request.urlopen(request, context=login.context) as reply:
            token = "root@pam!bench=" + json.load(reply)["data"]["value"]
        client = Client(base, token)
        print(f"vireod {args.vireod} ({'https' if args.tls else 'http'}), wrk -c {args.connections} -d {args.duration}s")
        print("| VMs | request | p50 (ms) | p99 (ms) | requests/s |")
        print("|---|---|---|---|---|")
        if running:
            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
            halt = os.path.join(data, "halt.bin")
            open(halt, "wb").write(bytes([0xF4, 0xEB, 0xFD]))  # hlt; jmp back: the vCPU sleeps in KVM
            for vmid in running:
                client.call("POST", "/nodes/bench/qemu", {"vmid": vmid, "name": f"vm{vmid}", "memory": 64, "engine": "vireo",
                                                          "raw": halt + ",mode=real", "net0": f"virtio,bridge={bridge}", "tags": "bench"})

        def power(action):
            def one(vmid):
                status = client.wait("bench", client.call("POST", f"/nodes/bench/qemu/{vmid}/status/{action}"))
                if status.get("exitstatus") != "OK" and not status.get("exitstatus", "").startswith("WARNINGS"):
                    raise SystemExit(f"VM {vmid} {action} failed: {status}")
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, running))

        created = 0
        for count in [int(n) for n in args.vms.split(",")]:
            def create(vmid):
                client.call("POST", "/nodes/bench/qemu", {"vmid": vmid, "name": f"vm{vmid}", "memory": 64,
                                                          "net0": "virtio,bridge=vmbr0", "tags": "bench"})
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, range(100 + created, 100 + count - len(running))))
            created = count - len(running)
            assert len(client.call("GET", "/nodes/bench/qemu")) == count
            for name, path in [("list", "/nodes/bench/qemu"), ("config", "/nodes/bench/qemu/100/config"),
                               ("cluster/resources", "/cluster/resources?type=vm")]:
                p50, p99, rate = wrk(base + path, token, args.duration, args.connections)
                print(f"| {count} | {name} | {p50:.2f} | {p99:.2f} | {rate:.0f} |", flush=True)
            if running:
                power("start")
                rows = client.call("GET", "/nodes/bench/qemu")
                assert sum(1 for row in rows if row["status"] == "running") == len(running)
                assert os.path.exists(f"/sys/class/net/tap{running[0]}i0"), "the running VMs' NICs have no taps"
                for name, path in [("list", "/nodes/bench/qemu"), ("cluster/resources", "/cluster/resources?type=vm"),
                                   ("status/current (running)", f"/nodes/bench/qemu/{running[0]}/status/current")]:
                    p50, p99, rate = wrk(base + path, token, args.duration, args.connections)
                    print(f"| {count}, {len(running)} running with a NIC | {name} | {p50:.2f} | {p99:.2f} | {rate:.0f} |", flush=True)
                power("stop")

        # API call → running.
        spin = os.path.join(data, "spin.bin")
        open(spin, "wb").write(bytes([0xEB, 0xFE]))
        engines = []
        if os.access("/dev/kvm", os.W_OK):
            engines.append(("vireo", {"engine": "vireo", "raw": spin}))
        if shutil.which("qemu-system-x86_64"):
            engines.append(("qemu", {"engine": "qemu"}))
        print("\n| engine | API call → running, median (ms) | min | max |")
        print("|---|---|---|---|")
        for engine, params in engines:
            vmid = 90000 if engine == "vireo" else 90001
            client.wait("bench", client.call("POST", "/nodes/bench/qemu", dict(params, vmid=vmid, memory=64)))
            times = []
            for _ in range(args.starts):
                begin = time.perf_counter()
                status = client.wait("bench", client.call("POST", f"/nodes/bench/qemu/{vmid}/status/start"))
                elapsed = (time.perf_counter() - begin) * 1000
                if status.get("exitstatus") not in ("OK",) and not status.get("exitstatus", "").startswith("WARNINGS"):
                    raise SystemExit(f"{engine} start failed: {status}")
                assert client.call("GET", f"/nodes/bench/qemu/{vmid}/status/current")["status"] == "running"
                times.append(elapsed)
                client.wait("bench", client.call("POST", f"/nodes/bench/qemu/{vmid}/status/stop"))
            print(f"| {engine} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} |", flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if data + "/" in open(f"/proc/{entry}/cmdline").read():
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if running:
            for link in [bridge] + [f"tap{vmid}i0" for vmid in running]:
                subprocess.run(["ip", "link", "del", link], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
