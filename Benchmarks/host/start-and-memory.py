#!/usr/bin/env python3
"""Host benchmark: VMM start to first guest instruction, and resident memory beyond guest RAM.

Runs vireo-vmm and QEMU (-accel kvm, the same /dev/kvm) side by side in one run:
  * start: wall time from exec to the guest's first instruction having run. Both guests execute
    one `out` to a port as their first instruction and the harness times exec -> process exit
    (the exit happens on that very out), so it is an upper bound for both.
      vireo-vmm: --raw with `out 0x600, al` (ACPI S5) as first instruction.
      QEMU:      -bios with the reset vector doing `out 0xf4, al` to isa-debug-exit.
  * memory: a VMM whose 256 MiB guest spins in a loop (the guest touches almost nothing, so what
    the process holds is VMM overhead): VmRSS (includes shared library pages) and the private dirty
    memory (what this VMM alone costs the host: heap, stacks, anonymous mappings).
Usage: Benchmarks/host/start-and-memory.py [--runs N] [--vmm PATH]
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

def median_ms(samples):
    return statistics.median(samples) * 1000

def run_timed(cmd, runs):
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - start)
    return out

def memory_kib(cmd):
    """Returns (VmRSS, Private_Dirty) in KiB once the VMM has settled."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait until the guest runs (RSS stops growing), then sample.
        last, stable = 0, 0
        for _ in range(200):
            time.sleep(0.05)
            with open(f"/proc/{proc.pid}/status") as f:
                rss = int(next(l for l in f if l.startswith("VmRSS")).split()[1])
            stable = stable + 1 if rss == last else 0
            last = rss
            if stable >= 10:
                break
        with open(f"/proc/{proc.pid}/smaps_rollup") as f:
            dirty = int(next(l for l in f if l.startswith("Private_Dirty")).split()[1])
        return last, dirty
    finally:
        proc.kill(); proc.wait()

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--vmm", default=os.environ.get("VIREO_VMM", ".build/release/vireo-vmm"))
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="vireo-bench-")

    # vireo-vmm guests (real mode at 0x10000).
    poweroff = bytes([0xB0, 0x34, 0xBA, 0x00, 0x06, 0xEE, 0xF4])  # mov al,0x34; mov dx,0x600; out dx,al; hlt
    spin = bytes([0xEB, 0xFE])                                      # jmp $
    open(f"{tmp}/poweroff.bin", "wb").write(poweroff)
    open(f"{tmp}/spin.bin", "wb").write(spin)
    # QEMU BIOS: 64 KiB image mapped below 1 MiB; reset vector at 0xFFFF0 = offset 0xFFF0.
    def bios(code):
        image = bytearray(b"\xF4" * 65536)
        image[0xFFF0:0xFFF0 + len(code)] = code
        return bytes(image)
    open(f"{tmp}/bios-exit.bin", "wb").write(bios(bytes([0xE6, 0xF4])))  # out 0xf4, al
    open(f"{tmp}/bios-spin.bin", "wb").write(bios(spin))

    vireo = [args.vmm, "--raw-mode", "real", "--memory", "256M", "--serial", "none"]
    qemu = ["qemu-system-x86_64", "-accel", "kvm", "-m", "256M", "-display", "none", "-serial", "none",
            "-monitor", "none", "-nodefaults", "-no-user-config", "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]

    rows = []
    v = median_ms(run_timed(vireo + ["--raw", f"{tmp}/poweroff.bin"], args.runs))
    q = median_ms(run_timed(qemu + ["-bios", f"{tmp}/bios-exit.bin"], args.runs))
    rows.append(("start to first guest instruction (ms, median)", v, q))
    v_rss, v_dirty = memory_kib(vireo + ["--raw", f"{tmp}/spin.bin"])
    q_rss, q_dirty = memory_kib(qemu + ["-bios", f"{tmp}/bios-spin.bin"])
    rows.append(("resident memory (VmRSS), 256 MiB idle guest (MiB)", v_rss / 1024, q_rss / 1024))
    rows.append(("private dirty memory, 256 MiB idle guest (MiB)", v_dirty / 1024, q_dirty / 1024))

    print(f"runs: {args.runs}; vireo-vmm: {args.vmm}; qemu: {subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    print(f"| measure | vireo-vmm | QEMU | vireo/QEMU |")
    print(f"|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")

if __name__ == "__main__":
    sys.exit(main())
