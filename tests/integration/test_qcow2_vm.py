"""test_qcow2_vm.py: guests on qcow2 disks, with Debian's qemu-img as the judge.

- The bare-metal virtio_blk guest (tests/guest/baremetal/virtio_blk.c) on qcow2 images
  qemu-img made: fully allocated, an overlay over a raw backing file (copy-on-write),
  compressed clusters. What the guest wrote must be what `qemu-img convert` reads back,
  the backing file must not change, and `qemu-img check` must find nothing.
- Crash consistency: blk_writer.c writes numbered records with allocating writes and a
  flush every 8; the monitor is killed with SIGKILL at random moments. Every time,
  `qemu-img check` must report a clean image or leaks only (exit 0 or 3, never 2) and
  every record the guest saw flushed must be in the image.
- A Linux guest boots from a Debian-cloud-style chain (a compressed qcow2 base and a
  qcow2 overlay made by qemu-img), writes a file and powers off; the overlay checks clean,
  the base is untouched and the file is there (read back with debugfs).
"""

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import vmtest
from test_linux import BOOT_TIMEOUT, linux  # noqa: F401 (fixture)
from test_virtio_baremetal import (SECTOR, WRITTEN, assert_passed, make_image, sector)

QEMU_IMG = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(not QEMU_IMG, reason="qemu-img (qemu-utils) not installed")


def qemu_img(*args, check=True):
    return subprocess.run([QEMU_IMG, *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=120)


def check_exit(img):
    """qemu-img check's exit status: 0 clean, 2 corrupt, 3 leaks only."""
    return qemu_img("check", img, check=False)


def wait_unlocked(img, timeout=15):
    """After SIGKILL the image lock can outlive the monitor briefly: the kernel tears down
    an io_uring instance (which holds the registered file) asynchronously after the process
    is reaped. Waits until qemu-img can take its lock."""
    deadline = time.monotonic() + timeout
    while True:
        r = qemu_img("info", img, check=False)
        if "lock" not in r.stderr or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def as_raw(img, tmp_path):
    out = tmp_path / (Path(img).name + ".raw")
    qemu_img("convert", "-O", "raw", img, out)
    data = out.read_bytes()
    out.unlink()
    return data


def assert_guest_writes(data, before):
    assert sector(data, 0) == sector(before, 0), "sector 0 changed"
    for n, pat in WRITTEN.items():
        assert sector(data, n) == pat * (SECTOR // len(pat)), \
            f"sector {n} holds {sector(data, n)[:32]!r}..., not {pat!r} x 32"
    assert data[5 * SECTOR:] == before[5 * SECTOR:], "the guest's writes went elsewhere"


@needs_qemu_img
@pytest.mark.parametrize("kind", ["allocated", "overlay", "compressed", "small-clusters",
                                  "made-by-vmstack-img"])
def test_virtio_blk_on_qcow2(baremetal, tmp_path, kind):
    raw = tmp_path / "base.raw"
    before = make_image(raw)
    img = tmp_path / "disk.qcow2"
    fmt = "format=qcow2"
    if kind == "allocated":
        qemu_img("convert", "-O", "qcow2", raw, img)
    elif kind == "compressed":
        qemu_img("convert", "-c", "-O", "qcow2", raw, img)
    elif kind == "small-clusters":
        qemu_img("convert", "-O", "qcow2", "-o", "cluster_size=512,compat=0.10", raw, img)
        fmt = "format=auto"  # no backing file: probing is allowed
    elif kind == "made-by-vmstack-img":  # ours: a full copy, then the guest writes into it
        tool = vmtest.build_dir() / "vmstack"
        if not tool.exists():
            pytest.skip(f"{tool} not built")
        subprocess.run([str(tool), "img", "convert", "-O", "qcow2", str(raw), str(img)],
                       check=True, capture_output=True, timeout=60)
    else:
        qemu_img("create", "-f", "qcow2", "-b", raw.name, "-F", "raw", img)
    raw_md5 = hashlib.md5(raw.read_bytes()).hexdigest()
    r = vmtest.run_vm(baremetal("virtio_blk"), extra=["--disk", f"path={img},{fmt}"])
    assert_passed(r, f"virtio_blk on a {kind} qcow2")
    for line in ("blk: capacity 2048 sectors", f"blk: sector0 {before[:16].hex()}",
                 "blk: wrote sectors 1-4", "blk: flush ok", "blk: readback ok"):
        assert line in r.lines, f"missing {line!r}" + r.describe()
    c = check_exit(img)
    assert c.returncode == 0, c.stdout + c.stderr
    assert_guest_writes(as_raw(img, tmp_path), before)
    assert hashlib.md5(raw.read_bytes()).hexdigest() == raw_md5, "the raw file changed"


@needs_qemu_img
def test_probed_qcow2_may_not_name_a_backing_file(baremetal, tmp_path):
    """A guest could write a qcow2 header naming /etc/shadow onto its raw disk: probing
    must not follow it."""
    img = tmp_path / "disk.img"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", img, "1M")
    r = vmtest.run_vm(baremetal("hello"), extra=["--disk", f"path={img}"])
    assert r.returncode not in (0, None), r.describe()
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1, r.describe()
    assert str(img) in err[0] and "format=qcow2" in err[0], r.describe()


@needs_qemu_img
def test_qcow2_unsupported_option_and_bad_image_errors(baremetal, tmp_path):
    img = tmp_path / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", img, "1M")
    r = vmtest.run_vm(baremetal("hello"),
                      extra=["--disk", f"path={img},format=qcow2,cache=none"])
    assert r.returncode not in (0, None), r.describe()
    assert "cache=none" in r.stderr and str(img) in r.stderr, r.describe()
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + b"\0\0\0\x09" + bytes(4088))  # version 9
    r = vmtest.run_vm(baremetal("hello"), extra=["--disk", f"path={bad},format=qcow2"])
    assert r.returncode not in (0, None), r.describe()
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and str(bad) in err[0], r.describe()


FILLER = bytes((k * 7) & 0xff for k in range(21, 4096))


def record(i):
    """What blk_writer.c writes as record i."""
    return f"vmstack-rec-{i:08x}\n".encode() + FILLER


@needs_qemu_img
def test_kill_9_leaves_a_consistent_qcow2_with_every_flushed_record(baremetal, tmp_path):
    rng = random.Random(int(os.environ.get("VMSTACK_CRASH_SEED", "20261123")))
    img = tmp_path / "crash.qcow2"
    nblocks = (32 << 20) // 4096
    flushed_total = 0
    for round_ in range(6):
        if round_ % 2 == 0:  # a fresh image every other round; else carry on from the last
            if img.exists():
                img.unlink()
            qemu_img("create", "-f", "qcow2", "-o", "cluster_size=65536", img, "32M")
        delay = rng.uniform(0.5, 4.0)
        with vmtest.start_vm(baremetal("blk_writer"),
                             extra=["--disk", f"path={img},format=qcow2"]) as vm:
            assert vm.wait_for(lambda out: "writer: blocks" in out, 30), \
                vm._result(False).describe()
            time.sleep(delay)
            os.killpg(vm.proc.pid, signal.SIGKILL)
            r = vm.wait(10)
        flushed = [int(n) for n in re.findall(r"^writer: flushed (\d+)$", r.stdout, re.M)]
        last = flushed[-1] if flushed else 0
        flushed_total += last
        wait_unlocked(img)
        c = check_exit(img)
        assert c.returncode in (0, 3), \
            f"round {round_} (killed after {delay:.2f} s, {last} records flushed): " \
            f"qemu-img check exit {c.returncode}\n{c.stdout}{c.stderr}"
        data = as_raw(img, tmp_path)
        for i in range(last):
            b = (i * 7919) % nblocks
            assert data[b * 4096:(b + 1) * 4096] == record(i), \
                f"round {round_}: record {i} of {last} flushed is not at block {b}"
    assert flushed_total > 0, "the writer never got a flush through before the kill"


# The root filesystem's /init: busybox only (the kernel runs it as pid 1, no initramfs).
ROOT_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo QCOW2-ROOT: $(cat /etc/image-id) mounted $(/bin/busybox awk '$2=="/"{print $1,$3}' /proc/mounts)
echo written-by-the-guest > /from-guest
/bin/busybox dd if=/dev/urandom of=/blob bs=64k count=16 2>/dev/null
/bin/busybox md5sum /blob > /blob.md5
/bin/busybox sync
echo QCOW2-ROOT: wrote $(cat /blob.md5)
/bin/busybox poweroff -f
"""


@needs_qemu_img
def test_linux_boots_a_qcow2_chain_and_writes_to_it(linux, tmp_path):  # noqa: F811
    """Like a Debian cloud image: a compressed qcow2 base and an overlay, root=/dev/vda."""
    if not shutil.which("mkfs.ext4") or not shutil.which("debugfs"):
        pytest.skip("e2fsprogs (mkfs.ext4, debugfs) not installed")
    root = tmp_path / "root"
    for d in ("bin", "proc", "dev", "etc"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    (root / "etc/image-id").write_text("vmstack-qcow2-chain\n")
    (root / "init").write_text(ROOT_INIT)
    (root / "init").chmod(0o755)
    raw = tmp_path / "root.raw"
    with open(raw, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(raw)], check=True, timeout=60)
    base = tmp_path / "base.qcow2"
    qemu_img("convert", "-c", "-O", "qcow2", raw, base)
    raw.unlink()
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", base.name, "-F", "qcow2", overlay)
    base_md5 = hashlib.md5(base.read_bytes()).hexdigest()

    r = vmtest.run_vm(linux["vmlinux"], memory="256M", timeout=BOOT_TIMEOUT,
                      cmdline=f"{linux['cmdline']} root=/dev/vda rw init=/init",
                      extra=["--cpu", linux["cpu"], "--disk", f"path={overlay},format=qcow2"])
    assert not r.timed_out, r.describe()
    assert "QCOW2-ROOT: vmstack-qcow2-chain mounted /dev/root ext4" in r.stdout, r.describe()
    m = re.search(r"QCOW2-ROOT: wrote ([0-9a-f]{32})", r.stdout)
    assert m, r.describe()
    assert r.returncode == 0, r.describe()

    c = check_exit(overlay)
    assert c.returncode == 0, c.stdout + c.stderr
    assert hashlib.md5(base.read_bytes()).hexdigest() == base_md5, "the base image changed"
    flat = tmp_path / "flat.raw"
    qemu_img("convert", "-O", "raw", overlay, flat)

    def cat(path):
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(flat)], capture_output=True,
                              check=True, timeout=60).stdout
    assert cat("/from-guest") == b"written-by-the-guest\n"
    blob = cat("/blob")
    assert len(blob) == 1 << 20 and hashlib.md5(blob).hexdigest() == m.group(1)
