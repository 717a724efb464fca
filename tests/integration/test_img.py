"""test_img.py: `vmstack img` against qemu-img and qemu-io (Debian qemu-utils).

Every image one tool writes, the other reads: our images must pass `qemu-img check` and
read back through qemu-io; qemu-img's images must look the same in our `info`. No /dev/kvm.
The binary is $VMSTACK_BUILD/vmstack; a missing binary (or qemu-utils) skips, unless
VMSTACK_REQUIRE=1 makes a missing binary a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import vmtest

MiB = 1 << 20
QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")


@pytest.fixture(scope="session")
def vmstack() -> Path:
    """The `vmstack` command-line tool."""
    return vmtest.require_file(vmtest.build_dir() / "vmstack", "vmstack")


@pytest.fixture(scope="session", autouse=True)
def qemu_utils():
    if not QEMU_IMG or not QEMU_IO:
        pytest.skip("qemu-img/qemu-io not installed (Debian package qemu-utils)")


def run(vmstack: Path, *args, check=None) -> subprocess.CompletedProcess:
    """Runs `vmstack ARGS`; with check=N asserts the exit status is N."""
    r = subprocess.run([str(vmstack), *map(str, args)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    if check is not None:
        assert r.returncode == check, (args, r.returncode, r.stdout, r.stderr)
    return r


def img(vmstack: Path, *args, check=0) -> subprocess.CompletedProcess:
    return run(vmstack, "img", *args, check=check)


def qimg(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([QEMU_IMG, *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=check)


def qinfo(path: Path, *extra) -> dict:
    return json.loads(qimg("info", "--output=json", *extra, path).stdout)


def qio(path: Path, *cmds: str, fmt: str = "qcow2") -> str:
    """Runs qemu-io commands (one process); a 'read -P' that sees other data fails the test."""
    args = [a for c in cmds for a in ("-c", c)]
    r = subprocess.run([QEMU_IO, "-f", fmt, *args, str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout \
        and "failed" not in r.stdout, (cmds, r.stdout, r.stderr)
    return r.stdout


def qcheck(path: Path) -> int:
    return qimg("check", path, check=False).returncode


def qcompare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return qimg("compare", a, b, check=False)


def assert_one_line_error(r, status, *fragments, prefix="vmstack img: "):
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(prefix), r.stderr
    for f in fragments:
        assert f.lower() in lines[0].lower(), (f, r.stderr)


def disk_usage(path: Path) -> int:
    return os.stat(path).st_blocks * 512


# --- create ---

@pytest.mark.parametrize("fmt,opts,size,vsize,cluster,compat", [
    ("raw", [], "16M", 16 * MiB, None, None),
    ("raw", [], "65536", 65536, None, None),
    ("qcow2", [], "64M", 64 * MiB, 65536, "1.1"),
    ("qcow2", ["-o", "compat=0.10"], "1G", 1 << 30, 65536, "0.10"),
    ("qcow2", ["-o", "compat=v3,cluster_size=4k"], "32M", 32 * MiB, 4096, "1.1"),
    ("qcow2", ["-o", "cluster_size=2M"], "1T", 1 << 40, 2 * MiB, "1.1"),
    ("qcow2", ["-o", "cluster_size=512,lazy_refcounts=on"], "8M", 8 * MiB, 512, "1.1"),
    ("qcow2", ["-o", "preallocation=metadata"], "16M", 16 * MiB, 65536, "1.1"),
])
def test_create(vmstack, tmp_path, fmt, opts, size, vsize, cluster, compat):
    f = tmp_path / f"new.{fmt}"
    r = img(vmstack, "create", "-f", fmt, *opts, f, size)
    assert r.stdout.startswith(f"Formatting '{f}', fmt={fmt} "), r.stdout
    assert f"size={vsize}" in r.stdout and r.stderr == ""
    info = qinfo(f)
    assert info["format"] == fmt and info["virtual-size"] == vsize
    if fmt == "qcow2":
        assert info["cluster-size"] == cluster
        assert info["format-specific"]["data"]["compat"] == compat
        if "lazy_refcounts=on" in ",".join(opts):
            assert info["format-specific"]["data"]["lazy-refcounts"] is True
        qio(f, "write -P 0x33 100k 300k", "read -P 0x33 100k 300k")
        assert qcheck(f) == 0
    else:
        assert os.path.getsize(f) == vsize


def test_create_with_backing(vmstack, tmp_path):
    base = tmp_path / "base.qcow2"
    qimg("create", "-f", "qcow2", base, "48M")
    qio(base, "write -P 0x11 0 1M")
    top = tmp_path / "top.qcow2"
    r = img(vmstack, "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    assert "backing_file=base.qcow2 backing_fmt=qcow2" in r.stdout
    info = qinfo(top)
    assert info["virtual-size"] == 48 * MiB
    assert info["backing-filename"] == "base.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    qio(top, "read -P 0x11 0 1M")
    qio(top, "write -P 0x22 512k 64k", "read -P 0x22 512k 64k")
    qio(base, "read -P 0x11 512k 64k")
    assert qcheck(top) == 0
    # Without -F the format is probed and recorded; a size may still be given.
    top2 = tmp_path / "top2.qcow2"
    img(vmstack, "create", "-b", "base.qcow2", top2, "64M")
    info = qinfo(top2)
    assert info["backing-filename-format"] == "qcow2" and info["virtual-size"] == 64 * MiB
    qio(top2, "read -P 0x11 0 1M")


# --- info ---

def _info_pair(vmstack, path, *extra):
    ours = json.loads(img(vmstack, "info", "--output=json", *extra, path).stdout)
    return ours, qinfo(path, *extra)


COMMON_KEYS = ["virtual-size", "filename", "cluster-size", "format", "actual-size",
               "dirty-flag", "backing-filename", "full-backing-filename",
               "backing-filename-format", "snapshots", "format-specific"]


def _assert_same_info(ours: dict, theirs: dict):
    for k in COMMON_KEYS:
        assert ours.get(k) == theirs.get(k), (k, ours.get(k), theirs.get(k))


@pytest.fixture(scope="module")
def qemu_images(tmp_path_factory):
    """Images made by qemu-img/qemu-io: fresh, v2, chained, with snapshots, compressed."""
    d = tmp_path_factory.mktemp("qemu-images")
    qimg("create", "-f", "raw", d / "disk.raw", "16M")
    qio(d / "disk.raw", "write -P 0x5a 1M 64k", fmt="raw")
    qimg("create", "-f", "qcow2", d / "fresh.qcow2", "64M")
    qimg("create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=16k", d / "v2.qcow2", "20M")
    qimg("create", "-f", "qcow2", d / "base.qcow2", "32M")
    qio(d / "base.qcow2", "write -P 0x11 0 2M")
    qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", d / "top.qcow2")
    qio(d / "top.qcow2", "write -P 0x22 1M 128k")
    qimg("create", "-f", "qcow2", d / "snaps.qcow2", "16M")
    qio(d / "snaps.qcow2", "write -P 0x01 0 64k")
    qimg("snapshot", "-c", "first", d / "snaps.qcow2")
    qio(d / "snaps.qcow2", "write -P 0x02 0 64k")
    qimg("snapshot", "-c", "second", d / "snaps.qcow2")
    qimg("convert", "-c", "-O", "qcow2", d / "base.qcow2", d / "compressed.qcow2")
    return d


@pytest.mark.parametrize("name", ["disk.raw", "fresh.qcow2", "v2.qcow2", "base.qcow2",
                                  "top.qcow2", "snaps.qcow2", "compressed.qcow2"])
def test_info_matches_qemu(vmstack, qemu_images, name):
    path = qemu_images / name
    ours, theirs = _info_pair(vmstack, path)
    _assert_same_info(ours, theirs)
    # The human form is qemu-img's, line for line.
    human = img(vmstack, "info", path).stdout
    assert human == qimg("info", path).stdout


def test_info_relative_and_chain(vmstack, qemu_images):
    # An absolute FILE makes the backing file's "actual path" differ from its name.
    ours, theirs = _info_pair(vmstack, qemu_images / "top.qcow2", "--backing-chain")
    assert isinstance(ours, list) and len(ours) == 2
    for o, t in zip(ours, theirs):
        _assert_same_info(o, t)
    human = img(vmstack, "info", "--backing-chain", qemu_images / "top.qcow2").stdout
    assert human == qimg("info", "--backing-chain", qemu_images / "top.qcow2").stdout


# --- convert ---

def _pattern_raw(path: Path, size=32 * MiB):
    qimg("create", "-f", "raw", path, str(size))
    for pat, off, length in ((0x5a, MiB, 64 << 10), (0xa5, 5 * MiB, 3 << 10),
                             (0x01, 20 * MiB, 2 * MiB), (0x7e, size - 1024, 1024)):
        if off + length <= size:
            qio(path, f"write -P {pat:#x} {off} {length}", fmt="raw")


def test_convert_round_trip(vmstack, tmp_path):
    src = tmp_path / "src.raw"
    _pattern_raw(src)
    qio(src, "write -P 0 8M 4M", fmt="raw")  # allocated zeros: must not be copied
    q = tmp_path / "mid.qcow2"
    img(vmstack, "convert", "-f", "raw", "-O", "qcow2", src, q)
    assert qcompare(src, q).returncode == 0
    assert qcheck(q) == 0
    info = qinfo(q)
    assert info["virtual-size"] == 32 * MiB
    assert info["actual-size"] < 4 * MiB  # only the written clusters
    back = tmp_path / "back.raw"
    img(vmstack, "convert", "-O", "raw", q, back)
    assert os.path.getsize(back) == 32 * MiB
    assert qcompare(src, back).returncode == 0
    assert disk_usage(back) < 4 * MiB
    assert back.read_bytes() == src.read_bytes()
    # And our compare agrees.
    img(vmstack, "compare", src, q)


def test_convert_chain_to_standalone(vmstack, tmp_path):
    base = tmp_path / "base.qcow2"
    qimg("create", "-f", "qcow2", base, "16M")
    qio(base, "write -P 0x11 0 4M")
    top = tmp_path / "top.qcow2"
    qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    qio(top, "write -P 0x22 1M 1M", "write -z 3M 512k")  # zeros hiding the base's data
    out = tmp_path / "flat.qcow2"
    img(vmstack, "convert", "-O", "qcow2", top, out)
    info = qinfo(out)
    assert "backing-filename" not in info
    assert qcompare(top, out).returncode == 0
    qio(out, "read -P 0 3M 512k", "read -P 0x11 3584k 512k")
    assert qcheck(out) == 0
    # -B keeps the backing file and copies only the top layer.
    thin = tmp_path / "thin.qcow2"
    img(vmstack, "convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", top, thin)
    info = qinfo(thin)
    assert info["backing-filename"] == "base.qcow2"
    assert info["actual-size"] < 3 * MiB
    assert qcompare(top, thin).returncode == 0
    assert qcheck(thin) == 0


def test_convert_compressed_source(vmstack, qemu_images, tmp_path):
    out = tmp_path / "from-compressed.raw"
    img(vmstack, "convert", qemu_images / "compressed.qcow2", out)
    assert qcompare(qemu_images / "base.qcow2", out).returncode == 0
    qio(out, "read -P 0x11 0 2M", fmt="raw")


def test_convert_progress(vmstack, tmp_path):
    src = tmp_path / "p.raw"
    _pattern_raw(src)
    r = img(vmstack, "convert", "-p", "-O", "qcow2", src, tmp_path / "p.qcow2")
    assert "100.00/100%" in r.stderr
    r = img(vmstack, "convert", "-O", "raw", src, tmp_path / "quiet.raw")
    assert r.stderr == ""


def test_convert_refuses_existing(vmstack, tmp_path):
    src = tmp_path / "s.raw"
    _pattern_raw(src, 4 * MiB)
    dst = tmp_path / "d.qcow2"
    dst.write_bytes(b"keep me")
    r = img(vmstack, "convert", "-O", "qcow2", src, dst, check=None)
    assert_one_line_error(r, 1, "d.qcow2", "already exists", "--force")
    assert dst.read_bytes() == b"keep me"
    img(vmstack, "convert", "--force", "-O", "qcow2", src, dst)
    assert qcompare(src, dst).returncode == 0


# --- check ---

def _refcount_entry(path: Path, cluster: int) -> int:
    """File offset of cluster's 16-bit refcount (the image's first refcount block)."""
    with open(path, "rb") as f:
        h = f.read(104)
    cluster_bits = struct.unpack(">I", h[20:24])[0]
    rt_off = struct.unpack(">Q", h[48:56])[0]
    per_block = (1 << cluster_bits) // 2
    assert cluster < per_block
    with open(path, "rb") as f:
        f.seek(rt_off)
        block = struct.unpack(">Q", f.read(8))[0]
    return block + 2 * cluster


def _set_refcount(path: Path, cluster: int, value: int):
    off = _refcount_entry(path, cluster)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack(">H", value))


def _make_leak(path: Path):
    """Gives a cluster past the image's end a refcount of 1 that nothing references."""
    qimg("create", "-f", "qcow2", path, "16M")
    qio(path, "write -P 0x44 0 64k")
    size = os.path.getsize(path)
    leaked = size // 65536 + 1
    with open(path, "r+b") as f:
        f.truncate((leaked + 1) * 65536)
    _set_refcount(path, leaked, 1)


def _make_corrupt(path: Path):
    """Sets a data cluster's refcount to 0 while an L2 entry still points at it."""
    qimg("create", "-f", "qcow2", path, "16M")
    qio(path, "write -P 0x55 0 128k")
    m = json.loads(qimg("map", "--output=json", path).stdout)
    data = next(e for e in m if e["data"] and "offset" in e)
    _set_refcount(path, data["offset"] // 65536, 0)


def test_convert_corrupt_source(vmstack, tmp_path):
    """An L2 entry pointing far past the file's end: one line naming the image, no DST."""
    f = tmp_path / "broken.qcow2"
    qimg("create", "-f", "qcow2", f, "16M")
    qio(f, "write -P 1 0 64k")
    with open(f, "r+b") as fh:
        l1 = struct.unpack(">Q", fh.read(48)[40:48])[0]
        fh.seek(l1)
        l2 = struct.unpack(">Q", fh.read(8))[0] & 0x00fffffffffffe00
        fh.seek(l2)
        fh.write(struct.pack(">Q", (1 << 63) | (1 << 40)))
    r = img(vmstack, "convert", f, tmp_path / "out.raw", check=None)
    assert_one_line_error(r, 1, "broken.qcow2")
    assert not (tmp_path / "out.raw").exists()
    r = img(vmstack, "compare", f, f, check=None)
    assert_one_line_error(r, 2, "broken.qcow2")


def test_check_clean(vmstack, tmp_path):
    f = tmp_path / "ok.qcow2"
    qimg("create", "-f", "qcow2", f, "16M")
    qio(f, "write -P 0x12 0 256k")
    r = img(vmstack, "check", f)
    assert r.stdout.splitlines()[0] == "No errors were found on the image."
    assert r.stdout == qimg("check", f).stdout
    ours = json.loads(img(vmstack, "check", "--output=json", f).stdout)
    theirs = json.loads(qimg("check", "--output=json", f).stdout)
    assert ours == theirs


def test_check_leak(vmstack, tmp_path):
    f = tmp_path / "leak.qcow2"
    _make_leak(f)
    assert qcheck(f) == 3
    r = img(vmstack, "check", f, check=3)
    assert "1 leaked clusters were found on the image." in r.stdout
    assert "This means waste of disk space, but no harm to data." in r.stdout
    ours = json.loads(img(vmstack, "check", "--output=json", f, check=3).stdout)
    theirs = json.loads(qimg("check", "--output=json", f, check=False).stdout)
    for k in ("leaks", "corruptions", "check-errors", "total-clusters", "allocated-clusters"):
        assert ours.get(k) == theirs.get(k), k
    r = img(vmstack, "check", "-r", "leaks", f, check=0)
    assert "1 leaked clusters" in r.stdout and "No errors were found" in r.stdout
    assert qcheck(f) == 0
    qio(f, "read -P 0x44 0 64k")


def test_check_corruption(vmstack, tmp_path):
    f = tmp_path / "bad.qcow2"
    _make_corrupt(f)
    theirs = qcheck(f)
    assert theirs == 2
    r = img(vmstack, "check", f, check=2)
    assert "errors were found on the image." in r.stdout
    assert "Data may be corrupted" in r.stdout


def test_check_repair_all(vmstack, tmp_path):
    f = tmp_path / "fixme.qcow2"
    _make_corrupt(f)
    r = img(vmstack, "check", "-r", "all", f, check=0)
    assert "1 corruptions" in r.stdout and "Double checking the fixed image now..." in r.stdout
    assert qcheck(f) == 0
    qio(f, "read -P 0x55 0 128k")


def test_check_raw_unsupported(vmstack, tmp_path):
    f = tmp_path / "d.raw"
    f.write_bytes(bytes(MiB))
    assert_one_line_error(img(vmstack, "check", f, check=None), 63, "d.raw", "raw")


# --- resize ---

def test_resize_grow(vmstack, tmp_path):
    q = tmp_path / "g.qcow2"
    qimg("create", "-f", "qcow2", q, "16M")
    qio(q, "write -P 0x61 15M 1M")
    r = img(vmstack, "resize", q, "+16M")
    assert r.stdout == "Image resized.\n"
    assert qinfo(q)["virtual-size"] == 32 * MiB
    qio(q, "read -P 0x61 15M 1M", "read -P 0 16M 16M", "write -P 0x62 31M 1M")
    assert qcheck(q) == 0
    raw = tmp_path / "g.raw"
    qimg("create", "-f", "raw", raw, "8M")
    qio(raw, "write -P 0x63 0 1M", fmt="raw")
    img(vmstack, "resize", "-f", "raw", raw, "64M")
    assert qinfo(raw)["virtual-size"] == 64 * MiB
    qio(raw, "read -P 0x63 0 1M", fmt="raw")


def test_resize_shrink(vmstack, tmp_path):
    q = tmp_path / "s.qcow2"
    qimg("create", "-f", "qcow2", q, "16M")
    assert_one_line_error(img(vmstack, "resize", q, "-1M", check=None), 1, "s.qcow2")
    assert qinfo(q)["virtual-size"] == 16 * MiB
    raw = tmp_path / "s.raw"
    qimg("create", "-f", "raw", raw, "16M")
    assert_one_line_error(img(vmstack, "resize", raw, "8M", check=None), 1, "s.raw",
                          "--shrink")
    assert os.path.getsize(raw) == 16 * MiB
    img(vmstack, "resize", "--shrink", raw, "-8M")
    assert os.path.getsize(raw) == 8 * MiB


# --- snapshot ---

def test_snapshots(vmstack, tmp_path):
    f = tmp_path / "sn.qcow2"
    qimg("create", "-f", "qcow2", f, "16M")
    qio(f, "write -P 0x01 0 1M")
    img(vmstack, "snapshot", "-c", "one", f)
    qio(f, "write -P 0x02 0 1M")
    qimg("snapshot", "-c", "two", f)
    listing = qimg("snapshot", "-l", f).stdout
    assert " one " in listing and " two " in listing
    assert img(vmstack, "snapshot", "-l", f).stdout == listing
    assert qcheck(f) == 0
    img(vmstack, "snapshot", "-a", "one", f)
    qio(f, "read -P 0x01 0 1M")
    img(vmstack, "snapshot", "-a", "2", f)  # by ID
    qio(f, "read -P 0x02 0 1M")
    img(vmstack, "snapshot", "-d", "one", f)
    listing = qimg("snapshot", "-l", f).stdout
    assert " one " not in listing and " two " in listing
    assert qcheck(f) == 0
    r = img(vmstack, "snapshot", "-a", "nosuch", f, check=None)
    assert_one_line_error(r, 1, "nosuch")
    r = img(vmstack, "snapshot", "-c", "two", f, check=None)
    assert_one_line_error(r, 1, "two")


def test_snapshot_raw(vmstack, tmp_path):
    f = tmp_path / "r.raw"
    f.write_bytes(bytes(MiB))
    r = img(vmstack, "snapshot", "-l", f, check=None)
    assert_one_line_error(r, 1, "r.raw", "raw images have no internal snapshots",
                          "convert to qcow2")


# --- rebase and commit ---

@pytest.fixture
def chain(tmp_path):
    """base1 <- top, plus base2 that reads differently; expected.raw = what top reads."""
    d = tmp_path
    qimg("create", "-f", "qcow2", d / "base1.qcow2", "16M")
    qio(d / "base1.qcow2", "write -P 0x11 0 2M", "write -P 0x12 8M 1M")
    qimg("create", "-f", "qcow2", d / "base2.qcow2", "16M")
    qio(d / "base2.qcow2",
        "write -P 0x11 0 1M",     # same as base1 here
        "write -P 0x99 1M 1M",    # differs
        "write -P 0x98 12M 64k")  # base1 has zeros here
    qimg("create", "-f", "qcow2", "-b", "base1.qcow2", "-F", "qcow2", d / "top.qcow2")
    qio(d / "top.qcow2", "write -P 0x22 4M 1M", "write -P 0x23 1536k 64k")
    qimg("convert", "-O", "raw", d / "top.qcow2", d / "expected.raw")
    return d


def test_rebase_safe(vmstack, chain):
    top = chain / "top.qcow2"
    img(vmstack, "rebase", "-b", "base2.qcow2", "-F", "qcow2", top)
    info = qinfo(top)
    assert info["backing-filename"] == "base2.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert qcompare(top, chain / "expected.raw").returncode == 0
    assert qcheck(top) == 0
    # Only what differs was copied: the first MiB still comes from the backing file.
    m = json.loads(qimg("map", "--output=json", top).stdout)
    first = next(e for e in m if e["start"] == 0)
    assert first["depth"] == 1


def test_rebase_remove_backing(vmstack, chain):
    top = chain / "top.qcow2"
    img(vmstack, "rebase", "-b", "", top)
    assert "backing-filename" not in qinfo(top)
    assert qcompare(top, chain / "expected.raw").returncode == 0
    assert qcheck(top) == 0


def test_rebase_unsafe(vmstack, chain):
    top = chain / "top.qcow2"
    (chain / "base1.qcow2").rename(chain / "moved.qcow2")
    img(vmstack, "rebase", "-u", "-b", "moved.qcow2", top)
    info = qinfo(top)
    assert info["backing-filename"] == "moved.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert qcompare(top, chain / "expected.raw").returncode == 0
    assert qcheck(top) == 0


def test_commit(vmstack, chain):
    top = chain / "top.qcow2"
    r = img(vmstack, "commit", top)
    assert r.stdout == "Image committed.\n"
    assert qcompare(chain / "base1.qcow2", chain / "expected.raw").returncode == 0
    assert qcompare(top, chain / "expected.raw").returncode == 0
    assert qcheck(top) == 0 and qcheck(chain / "base1.qcow2") == 0
    m = json.loads(qimg("map", "--output=json", top).stdout)
    assert all(e["depth"] >= 1 or not e["data"] for e in m), m  # top is empty now


def test_commit_keep(vmstack, chain):
    top = chain / "top.qcow2"
    img(vmstack, "commit", "-d", top)
    assert qcompare(chain / "base1.qcow2", chain / "expected.raw").returncode == 0
    qio(top, "read -P 0x22 4M 1M")
    m = json.loads(qimg("map", "--output=json", top).stdout)
    assert any(e["depth"] == 0 and e["data"] for e in m), m


def test_commit_into_raw(vmstack, tmp_path):
    base = tmp_path / "base.raw"
    qimg("create", "-f", "raw", base, "8M")
    qio(base, "write -P 0x31 0 8M", fmt="raw")
    top = tmp_path / "top.qcow2"
    qimg("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top)
    qio(top, "write -P 0x32 1M 100k", "write -z 4M 1M")
    qimg("convert", "-O", "raw", top, tmp_path / "expected.raw")
    img(vmstack, "commit", top)
    assert qcompare(base, tmp_path / "expected.raw").returncode == 0
    qio(base, "read -P 0 4M 1M", fmt="raw")


def test_rebase_onto_smaller(vmstack, chain):
    small = chain / "small.qcow2"
    qimg("create", "-f", "qcow2", small, "1M")
    qio(small, "write -P 0x11 0 1M")
    top = chain / "top.qcow2"
    img(vmstack, "rebase", "-b", "small.qcow2", top)
    assert qinfo(top)["backing-filename"] == "small.qcow2"
    assert qcompare(top, chain / "expected.raw").returncode == 0
    assert qcheck(top) == 0


def test_commit_refuses_snapshots(vmstack, chain):
    top = chain / "top.qcow2"
    qimg("snapshot", "-c", "keep", top)
    r = img(vmstack, "commit", top, check=None)
    assert_one_line_error(r, 1, "top.qcow2", "snapshots", "-d")
    qio(chain / "base1.qcow2", "read -P 0 4M 1M")  # nothing was committed
    img(vmstack, "commit", "-d", top)
    qio(chain / "base1.qcow2", "read -P 0x22 4M 1M")


def test_commit_without_backing(vmstack, tmp_path):
    f = tmp_path / "alone.qcow2"
    qimg("create", "-f", "qcow2", f, "1M")
    assert_one_line_error(img(vmstack, "commit", f, check=None), 1, "alone.qcow2",
                          "no backing file")


# --- compare ---

def test_compare(vmstack, tmp_path):
    a = tmp_path / "a.raw"
    b = tmp_path / "b.qcow2"
    qimg("create", "-f", "raw", a, "4M")
    qio(a, "write -P 0x41 1M 4k", fmt="raw")
    qimg("convert", "-O", "qcow2", a, b)
    r = img(vmstack, "compare", a, b)
    assert r.stdout == "Images are identical.\n"
    qio(b, "write -P 0x42 1000k 1")
    r = img(vmstack, "compare", a, b, check=1)
    assert r.stdout == qcompare(a, b).stdout == "Content mismatch at offset 1024000!\n"
    # A longer image whose tail is zeros is the same content (with a warning).
    c = tmp_path / "c.raw"
    qimg("create", "-f", "raw", c, "8M")
    qio(c, "write -P 0x41 1M 4k", fmt="raw")
    r = img(vmstack, "compare", a, c)
    assert r.stdout == "Warning: Image size mismatch!\nImages are identical.\n"
    img(vmstack, "compare", "-s", a, c, check=1)
    qio(c, "write -P 0x43 6M 1", fmt="raw")
    r = img(vmstack, "compare", a, c, check=1)
    assert r.stdout == qcompare(a, c).stdout
    r = img(vmstack, "compare", a, tmp_path / "none.raw", check=None)
    assert_one_line_error(r, 2, "none.raw")


# --- bad input, help ---

@pytest.fixture
def files(tmp_path):
    qimg("create", "-f", "qcow2", tmp_path / "x.qcow2", "1M")
    qimg("create", "-f", "raw", tmp_path / "x.raw", "1M")
    return tmp_path


@pytest.mark.parametrize("args,status,fragments", [
    (["info", "{d}/missing.qcow2"], 1, ["missing.qcow2"]),
    (["create", "-f", "qcow2", "{d}/n.qcow2", "12Q"], 1,
     ["create", "bad size '12Q'", "K, M, G or T"]),
    (["create", "-f", "vmdk", "{d}/n.img", "1M"], 1, ["'vmdk'", "raw or qcow2"]),
    (["create", "--frobnicate", "{d}/n.img", "1M"], 1, ["unknown option '--frobnicate'"]),
    (["create", "-z", "{d}/n.img", "1M"], 1, ["unknown option '-z'"]),
    (["create", "{d}/n.img", "1M", "-f"], 1, ["-f", "needs a value"]),
    (["create", "-f", "qcow2", "{d}/x.qcow2", "1M"], 1, ["x.qcow2", "already exists",
                                                        "--force"]),
    (["create", "-f", "qcow2", "-o", "cluster_size=3000", "{d}/n.qcow2", "1M"], 1,
     ["cluster_size", "power of two"]),
    (["create", "-f", "raw", "-o", "cluster_size=4k", "{d}/n.raw", "1M"], 1,
     ["cluster_size", "qcow2"]),
    (["create", "-f", "qcow2", "-o", "colour=blue", "{d}/n.qcow2", "1M"], 1, ["colour"]),
    (["create", "-f", "qcow2", "{d}/n.qcow2"], 1, ["missing size"]),
    (["create", "-f", "qcow2", "-b", "{d}/nobase.qcow2", "{d}/n.qcow2"], 1, ["nobase.qcow2"]),
    (["info"], 1, ["info", "missing file"]),
    (["info", "--output=xml", "{d}/x.qcow2"], 1, ["'xml'", "human or json"]),
    (["convert", "-O", "vdi", "{d}/x.raw", "{d}/n.vdi"], 1, ["'vdi'"]),
    (["convert", "{d}/x.raw"], 1, ["missing dst"]),
    (["convert", "-O", "qcow2", "{d}/x.raw", "{d}/x.qcow2"], 1, ["x.qcow2", "already exists"]),
    (["check", "-r", "everything", "{d}/x.qcow2"], 1, ["'everything'", "leaks", "all"]),
    (["resize", "{d}/x.qcow2", "big"], 1, ["bad size 'big'"]),
    (["snapshot", "-c", "a", "-d", "b", "{d}/x.qcow2"], 1, ["one of"]),
    (["rebase", "{d}/x.qcow2"], 1, ["-b"]),
    (["frobnicate"], 1, ["unknown command 'frobnicate'", "vmstack img --help"]),
    ([], 1, ["missing command"]),
])
def test_bad_input(vmstack, files, args, status, fragments):
    before = sorted(p.name for p in files.iterdir())
    r = img(vmstack, *[a.format(d=files) for a in args], check=None)
    assert_one_line_error(r, status, *fragments)
    assert r.stdout == ""
    assert sorted(p.name for p in files.iterdir()) == before  # nothing created


def test_top_level(vmstack):
    r = run(vmstack, "--version", check=0)
    assert r.stdout.startswith("vmstack ") and r.stdout.strip() != "vmstack"
    r = run(vmstack, "help", check=0)
    assert "img" in r.stdout
    assert_one_line_error(run(vmstack, "x"), 2, "unknown command 'x'", "vmstack help",
                          prefix="vmstack: ")
    r = img(vmstack, "--help")
    for c in ("create", "info", "check", "convert", "resize", "snapshot", "rebase", "commit",
              "compare"):
        assert f"  {c} " in r.stdout
    r = img(vmstack, "create", "--help")
    assert r.stdout.startswith("usage: vmstack img create") and r.stderr == ""
    r = img(vmstack, "create", "-o", "help")
    assert "cluster_size" in r.stdout


def test_check_repairs_an_image_left_dirty(vmstack, tmp_path):
    """Lazy refcounts left unclean (dirty bit): a VM may not open it read-write, and
    `check -r all` is the way out, so it must be able to open it."""
    p = tmp_path / "dirty.qcow2"
    qimg("create", "-f", "qcow2", "-o", "lazy_refcounts=on", p, "16M")
    qio(p, "write -P 0x61 0 64k")
    with open(p, "r+b") as f:
        f.seek(72)
        incompat = struct.unpack(">Q", f.read(8))[0]
        f.seek(72)
        f.write(struct.pack(">Q", incompat | 1))
    assert qinfo(p)["dirty-flag"] is True
    r = img(vmstack, "check", "-r", "all", p, check=None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert qinfo(p)["dirty-flag"] is False
    assert qcheck(p) == 0
    qio(p, "read -P 0x61 0 64k")  # fails the test if the data changed
