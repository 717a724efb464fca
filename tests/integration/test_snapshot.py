"""test_snapshot.py: snapshot-save over the control socket and `vmstack-vm restore`.

Bare-metal guests: ticks (tests/guest/baremetal/ticks.c) counts LAPIC-timer and PIT
interrupts with hlt in between and keeps a register in step with a memory copy, so a
restored guest that carries on counting from where it was proves its registers, IDT,
LAPIC, IOAPIC, PIT and serial port came back; blk_writer proves virtio-blk (MSI-X,
queue positions) and the disk survive the round trip. The Linux round trip is in
test_linux_snapshot.py.
"""

import os
import re
import struct
import subprocess
import time
import zlib

import pytest

import vmtest
from qmp import Qmp


def ticks(out):
    return [(int(a), int(b)) for a, b in re.findall(r"^ticks: lapic (\d+) pit (\d+)\n", out, re.M)]


def restore_cmd(snap, *extra):
    return [str(vmtest.monitor_path()), "restore", str(snap), *extra]


def wait_status(q, timeout=10):
    """The status once the monitor has built the machine (it is "prelaunch" before)."""
    deadline = time.monotonic() + timeout
    while True:
        st = q.cmd("query-status")["return"]["status"]
        if st != "prelaunch" or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def save(q, snap):
    r = q.cmd("snapshot-save", path=str(snap))
    assert "return" in r, r
    return r["return"]


@pytest.mark.parametrize("cpus", [1, 2])
def test_ticks_guest_continues_after_restore(baremetal, tmp_path, cpus):
    """With 2 vCPUs the second one waits for INIT-SIPI all along: its MP state must come
    back as such (a restored AP that ran from garbage would crash the guest)."""
    snap = tmp_path / "snap"
    sock = tmp_path / "ctl.sock"
    with vmtest.start_vm(baremetal("ticks"), cpus=cpus, extra=["--control", str(sock)]) as vm:
        q = Qmp(sock)
        q.cmd("qmp_capabilities")
        assert vm.wait_for(lambda out: any(l >= 100 for l, _ in ticks(out)), 60), vm.stdout
        info = save(q, snap)
        assert info["path"] == str(snap) and info["memory-bytes"] > 0, info
        q.event("STOP")
        assert q.cmd("query-status")["return"]["status"] == "paused"
        before = ticks(vm.stdout)
        q.cmd("quit")
        r = vm.wait(20)
        q.close()
    assert r.returncode == 0, r.describe()
    assert "PASS" not in r.stdout
    # Memory is a sparse file the size of guest RAM; the state file has its magic.
    mem = snap / "memory"
    assert mem.stat().st_size == 64 << 20
    assert mem.stat().st_blocks * 512 < 8 << 20, "memory file is not sparse"
    assert (snap / "state").read_bytes()[:13] == b"VMSTACK-STATE"

    sock2 = tmp_path / "ctl2.sock"
    with vmtest.VmProcess(restore_cmd(snap, "--control", str(sock2))) as vm:
        q = Qmp(sock2)
        q.cmd("qmp_capabilities")
        assert wait_status(q) == "running"
        r = vm.wait(90)
        q.close()
    assert r.returncode == 0 and "PASS" in r.lines, r.describe()
    after = ticks(r.stdout)
    assert "ticks: started" not in r.stdout, "the guest started again instead of continuing"
    # It carries on from the last count printed before the snapshot, with both timers.
    assert after and after[0][0] > before[-1][0] and after[0][0] <= before[-1][0] + 50, \
        (before[-3:], after[:3])
    assert after[-1][0] >= 600 and after[-1][1] > before[-1][1] + 100, (before[-1], after[-1])


def flushed(out):
    return [int(n) for n in re.findall(r"^writer: flushed (\d+)\n", out, re.M)]


FILLER = bytes((k * 7) & 0xff for k in range(21, 4096))


def record(i):
    """What blk_writer.c writes as record i (at 4 KiB block (i * 7919) % nblocks)."""
    return f"vmstack-rec-{i:08x}\n".encode() + FILLER


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_virtio_blk_guest_continues_after_restore(baremetal, tmp_path, fmt):
    """blk_writer writes numbered records with flushes; after restore it must go on with
    the next record number (queue positions and MSI-X intact) and every flushed record
    must be on the disk (for qcow2 the snapshot flushed the cached metadata too)."""
    disk = tmp_path / f"disk.{fmt}"
    r = subprocess.run([str(vmtest.build_dir() / "vmstack"), "img", "create", "-f", fmt,
                        str(disk), "32M"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    snap = tmp_path / "snap"
    sock = tmp_path / "ctl.sock"
    with vmtest.start_vm(baremetal("blk_writer"),
                         extra=["--disk", f"path={disk},format={fmt}", "--control",
                                str(sock)]) as vm:
        q = Qmp(sock)
        q.cmd("qmp_capabilities")
        assert vm.wait_for(lambda out: len(flushed(out)) > 5, 30), vm.stdout
        save(q, snap)
        last = flushed(vm.stdout)[-1]
        q.cmd("quit")
        assert vm.wait(20).returncode == 0
        q.close()
    sock2 = tmp_path / "ctl2.sock"
    with vmtest.VmProcess(restore_cmd(snap, "--control", str(sock2))) as vm:
        q = Qmp(sock2)
        q.cmd("qmp_capabilities")
        assert vm.wait_for(lambda out: len(flushed(out)) > 5, 30), vm.stdout + vm.stderr
        got = flushed(vm.stdout)
        q.cmd("quit")
        r = vm.wait(20)
        q.close()
    assert r.returncode == 0, r.describe()
    assert "blk_writer: start" not in r.stdout, "the guest started again"
    assert got[0] >= last and got == sorted(got), (last, got[:5])
    if fmt == "qcow2":
        raw = tmp_path / "as.raw"
        c = subprocess.run([str(vmtest.build_dir() / "vmstack"), "img", "check", str(disk)],
                           capture_output=True, text=True, timeout=60)
        assert c.returncode == 0, c.stdout + c.stderr
        subprocess.run([str(vmtest.build_dir() / "vmstack"), "img", "convert", "-O", "raw",
                        str(disk), str(raw)], check=True, timeout=60)
        data = raw.read_bytes()
    else:
        data = disk.read_bytes()
    nblocks = (32 << 20) // 4096
    for i in range(got[-1]):
        b = (i * 7919) % nblocks
        assert data[b * 4096:(b + 1) * 4096] == record(i), \
            f"record {i} of {got[-1]} flushed is not at block {b}"


def test_restore_errors(tmp_path):
    mon = str(vmtest.monitor_path())
    r = subprocess.run([mon, "restore", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().endswith("no such file — is %s a snapshot directory?"
                                     % (tmp_path / "nope")), r.stderr
    snap = tmp_path / "bad"
    snap.mkdir()
    (snap / "state").write_bytes(b"VMSTACK-STATE\0\0\0" + struct.pack("<II", 99, 0) + b"\0" * 4)
    r = subprocess.run([mon, "restore", str(snap)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "version 99" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    body = b"VMSTACK-STATE\0\0\0" + struct.pack("<II", 1, 0)
    (snap / "state").write_bytes(body + struct.pack("<I", zlib.crc32(body) ^ 1))
    r = subprocess.run([mon, "restore", str(snap)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "checksum mismatch" in r.stderr, r.stderr
    r = subprocess.run([mon, "restore", str(snap), "--memory", "1G"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "--memory cannot be changed at restore" in r.stderr, r.stderr
