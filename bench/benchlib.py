"""benchlib.py: what bench/boot, bench/blk and bench/net share.

Finding the test guest (kernel, initramfs, this host's CPU-model quirks), the QEMU CPU
model that matches vmstack-vm's, building the static in-guest tools, the ext4 image that
carries them into the guest, running one guest with a timeout and collecting its console,
and printing a vmstack-vm / QEMU table.
"""

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VMSTACK = REPO / "build/vmstack-vm"
MARKER = b"VMSTACK-INIT: started"
INIT_EXIT = "VMSTACK-INIT-EXIT:"  # the test initramfs prints this when the command ends
BOOT_TIMEOUT = 400  # seconds for one guest run: a boot alone can take 2 minutes here


def guests():
    """(kernel dir, initramfs, quirks) from scripts/build-guests and host-quirks."""
    out = subprocess.run([str(REPO / "scripts/build-guests")], capture_output=True, text=True,
                         check=True).stdout
    env = dict(l.split("=", 1) for l in out.split())
    q = subprocess.run([str(REPO / "tests/guest/linux/host-quirks")], capture_output=True,
                       text=True, check=True).stdout
    quirks = dict(re.findall(r"^(\w+)='([^']*)'$", q, re.M))
    return Path(env["VMSTACK_KERNEL_DIR"]), Path(env["VMSTACK_INITRAMFS"]), quirks


def qemu_cpu(quirks):
    """QEMU's -cpu for the same model as vmstack-vm's --cpu quirks["GUEST_CPU"]."""
    # QEMU's "host" also programs MSR_IA32_ARCH_CAPABILITIES, which some KVMs refuse
    # ("failed to set MSR 0x10a"): drop it, it changes nothing for this guest.
    cpu = "host,-arch-capabilities"
    if "kvm-pv-ipi" in quirks["GUEST_CPU"]:
        cpu += ",kvm-pv-ipi=off,kvm-pv-sched-yield=off"
    return cpu


def guest_cmdline(quirks, command):
    """Kernel command line: the test init runs `command` (the words after --) with sh."""
    return f"console=ttyS0 panic=-1 {quirks['GUEST_CMDLINE']} -- {command}"


def vmstack_cmd(kdir, initrd, quirks, memory, cmdline, extra=()):
    return [str(VMSTACK), "run", "--kernel", str(kdir / "vmlinux"), "--initrd", str(initrd),
            "--memory", memory, "--cpu", quirks["GUEST_CPU"], "--cmdline", cmdline,
            "--console", "stdio"] + list(extra)


def qemu_cmd(kdir, initrd, quirks, memory, cmdline, extra=()):
    return ["qemu-system-x86_64", "-M", "pc", "-enable-kvm", "-cpu", qemu_cpu(quirks),
            "-m", memory, "-smp", "1", "-nographic", "-nodefaults", "-no-user-config",
            "-no-reboot", "-serial", "stdio", "-kernel", str(kdir / "vmlinux"),
            "-initrd", str(initrd), "-append", cmdline] + list(extra)


def need_vmstack(prog):
    if not VMSTACK.exists():
        sys.exit(f"{prog}: build first (scripts/test or ninja -C build)")


def want_qemu(prog, no_qemu):
    """True if the QEMU rows should run; says why not when qemu is missing."""
    if no_qemu:
        return False
    if not shutil.which("qemu-system-x86_64"):
        print(f"{prog}: qemu-system-x86_64 missing (scripts/install-deps --bench): "
              "QEMU rows skipped", file=sys.stderr)
        return False
    return True


def exit_on_sigterm():
    """Turns SIGTERM/SIGHUP into SystemExit, so every `finally` clean-up still runs."""
    def handler(signum, frame):
        raise SystemExit(f"killed by signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def build_static(src, out):
    """Compiles an in-guest tool: static, so it needs nothing from the initramfs."""
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", str(out), str(src)],
                   check=True, timeout=120)


def make_tools_image(files, img, run_script, size_mib=16):
    """An ext4 image holding `files` and an executable /run (mkfs.ext4 -d, no root needed)."""
    root = Path(str(img) + ".d")
    root.mkdir()
    try:
        for f in files:
            shutil.copy(f, root / Path(f).name)
        (root / "run").write_text(run_script)
        (root / "run").chmod(0o755)
        with open(img, "wb") as f:
            f.truncate(size_mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img)], check=True,
                       timeout=60)
    finally:
        shutil.rmtree(root)


def run_guest(cmd, log, timeout=BOOT_TIMEOUT, end=INIT_EXIT):
    """Runs a monitor until the guest prints `end` (or exits, or `timeout` passes), then
    stops it. Returns (console text, seconds, finished). The monitor's stderr goes to
    the file `log`; the process never outlives this call."""
    t0 = time.monotonic()
    with open(log, "wb") as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=err)
    buf = b""
    finished = False
    try:
        fd = p.stdout.fileno()
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:  # the monitor closed its console: it exited
                    break
                buf += chunk
                # The end marker and the rest of its line.
                i = buf.find(end.encode())
                if i >= 0 and b"\n" in buf[i:]:
                    finished = True
                    break
            elif p.poll() is not None:
                break
    finally:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()
    text = buf.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "")
    return text, time.monotonic() - t0, finished


def failure(prog, name, text, log, seconds, finished):
    """Prints why a guest run gave no figures: the tail of its console and its stderr."""
    why = "guest printed no results" if finished else f"no end marker after {seconds:.0f} s"
    err = Path(log).read_text(errors="replace") if Path(log).exists() else ""
    print(f"{prog}: {name}: {why}\n--- console (tail) ---\n{text[-3000:]}\n"
          f"--- stderr (tail) ---\n{err[-2000:]}", file=sys.stderr)


# bench/guest/ioload's rows: (row, unit, label), and its result lines.
IOLOAD_ROWS = [("seq-read", "MBps", "seq read 1M (MB/s)"),
               ("seq-write", "MBps", "seq write 1M (MB/s)"),
               ("rand-read", "IOPS", "rand read 4K (IOPS)"),
               ("rand-write", "IOPS", "rand write 4K (IOPS)")]
IOLOAD_LINE = re.compile(r"^IOLOAD row=(\S+) .* MBps=([\d.]+) IOPS=([\d.]+)$", re.M)


def ioload_tools(work, seconds, row=""):
    """The read-only tools disk for ioload runs: ioload and a runner on /dev/vda (all rows,
    or only `row`)."""
    build_static(REPO / "bench/guest/ioload.c", work / "ioload")
    tools = work / "tools.img"
    make_tools_image([work / "ioload"], tools,
                     f"#!/bin/sh\n/mnt/ioload /dev/vda {seconds} {row}\n")
    return tools


def pattern_image(path, mib):
    """A raw image of a non-zero pattern, not sparse, so reads return real data."""
    with open(path, "wb") as f:
        chunk = bytes(range(256)) * 4096 * 4  # 4 MiB
        for _ in range(mib // 4):
            f.write(chunk)


def run_ioload(prog, label, cmd, log, disk_bytes):
    """Boots one guest running ioload on /dev/vda; {row: {"MBps": x, "IOPS": y}} or {}."""
    print(f"{prog}: {label}: booting (about a minute) ...", file=sys.stderr)
    text, secs, finished = run_guest(cmd, log)
    res = {m.group(1): {"MBps": float(m.group(2)), "IOPS": float(m.group(3))}
           for m in IOLOAD_LINE.finditer(text)}
    size = re.search(r"^IOLOAD-DEV size=(\d+)", text, re.M)
    if size and int(size.group(1)) != disk_bytes:
        print(f"{prog}: {label}: /dev/vda is {size.group(1)} bytes, not the data image",
              file=sys.stderr)
        res = {}
    if len(res) != len(IOLOAD_ROWS):
        failure(prog, label, text, log, secs, finished)
        return {}
    figs = ", ".join(f"{row} {res[row][unit]:g} {unit}" for row, unit, _ in IOLOAD_ROWS)
    print(f"{prog}: {label}: done in {secs:.0f} s: {figs}", file=sys.stderr)
    return res


def median(values):
    """Median of the figures, or None if any run failed."""
    if not values or any(v is None for v in values):
        return None
    v = sorted(values)
    return v[len(v) // 2]


def print_table(header, rows, digits=1):
    """rows: (label, vmstack figure, QEMU figure or None); ratio is vmstack / QEMU."""
    def cell(v):
        return "-" if v is None else f"{v:.{digits}f}"
    w = max([24, len(header)] + [len(label) for label, _, _ in rows])
    print(f"{header:<{w}} {'vmstack-vm':>11} {'qemu -M pc':>11} {'ratio':>7}")
    for label, a, b in rows:
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        print(f"{label:<{w}} {cell(a):>11} {cell(b):>11} {ratio:>7}")
