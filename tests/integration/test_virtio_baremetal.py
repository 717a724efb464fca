"""test_virtio_baremetal.py: the PCI bus and virtio-pci devices driven by bare-metal guests.

The guests (tests/guest/baremetal/virtio_rng.c, virtio_blk.c, pci_hostile.c) play firmware
(they move the BARs below 4 GiB) and driver (polling, interrupts off). Here we check what
they printed, the monitor's exit status and stderr, and what landed in the disk image.
"""

import re

import pytest

from vmtest import run_vm

SECTOR = 512
IMAGE_SIZE = 1 << 20  # 2048 sectors
SERIAL = "vmstack-serial-1"
SECTOR0 = bytes(range(0x10, 0x20)) + b"vmstack sector 0" * 31  # first 16 bytes: 10..1f
FILL = 0xa5  # everything past sector 0 before the guest runs

# What virtio_blk.c writes (16-byte patterns repeated over a sector).
WRITTEN = {
    1: b"vmstack-blk-test",
    2: b"vmstack-sector-2",
    3: b"vmstack-sector-3",
    4: b"vmstack-indirect",
}

SANITIZER_RE = re.compile(r"Sanitizer|runtime error:|internal", re.I)


def assert_passed(r, what):
    """The guest printed PASS and no FAIL line, the monitor exited 0 with a clean stderr."""
    assert not r.timed_out, f"{what} timed out" + r.describe()
    fails = [line for line in r.lines if line.startswith("FAIL")]
    assert not fails, f"{what} guest reported {fails[0]!r}" + r.describe()
    assert "PASS" in r.lines, f"{what} guest printed no PASS line" + r.describe()
    assert r.returncode == 0, f"{what} monitor exit status {r.returncode}" + r.describe()
    bad = [line for line in r.stderr.splitlines() if SANITIZER_RE.search(line)]
    assert not bad, f"{what}: monitor stderr has {bad[0]!r}" + r.describe()


def make_image(path):
    data = bytearray([FILL]) * IMAGE_SIZE
    data[:SECTOR] = SECTOR0
    path.write_bytes(bytes(data))
    return bytes(data)


def sector(data, n):
    return data[n * SECTOR:(n + 1) * SECTOR]


def test_virtio_rng(baremetal):
    r = run_vm(baremetal("virtio_rng"), extra=["--rng"])
    assert_passed(r, "virtio_rng")
    assert "pci: 00:00.0 1b36:0008 class 060000" in r.lines, r.describe()
    assert re.search(r"^pci: 00:[0-9a-f]{2}\.0 1af4:1044 class", r.stdout, re.M), r.describe()
    draws = re.findall(r"^rng: (\d+) bytes ([0-9a-f]+)$", r.stdout, re.M)
    assert len(draws) == 2, r.describe()
    assert all(0 < int(n) <= 64 for n, _ in draws), r.describe()
    assert draws[0][1] != draws[1][1], "two draws gave the same bytes" + r.describe()


def test_virtio_rng_absent_without_option(baremetal):
    r = run_vm(baremetal("virtio_rng"))
    assert not r.timed_out, r.describe()
    assert r.returncode == 0, r.describe()
    assert "FAIL: no virtio device with id 4 (PCI 1af4:1044)" in r.lines, r.describe()
    assert not re.search(r"^pci: .* 1af4:", r.stdout, re.M), r.describe()


def test_virtio_blk_reads_and_writes(baremetal, tmp_path):
    img = tmp_path / "disk.img"
    before = make_image(img)
    r = run_vm(baremetal("virtio_blk"), extra=["--disk", f"path={img},serial={SERIAL}"])
    assert_passed(r, "virtio_blk")
    for line in (f"blk: capacity {IMAGE_SIZE // SECTOR} sectors",
                 f"blk: sector0 {SECTOR0[:16].hex()}",
                 f"blk: serial {SERIAL}",
                 "blk: msix pending ok",
                 "blk: isr ok",
                 "blk: indirect ok",
                 "blk: wrote sectors 1-4",
                 "blk: flush ok",
                 "blk: readback ok",
                 "blk: beyond capacity ioerr ok"):
        assert line in r.lines, f"missing {line!r}" + r.describe()
    assert "blk: readonly" not in r.lines, r.describe()

    after = img.read_bytes()
    assert len(after) == IMAGE_SIZE, "the image changed size"
    assert sector(after, 0) == SECTOR0, "sector 0 changed"
    for n, pat in WRITTEN.items():
        assert sector(after, n) == pat * (SECTOR // len(pat)), \
            f"sector {n} holds {sector(after, n)[:32]!r}..., not {pat!r} x 32"
    assert after[5 * SECTOR:] == before[5 * SECTOR:], "the guest wrote beyond sector 4"


@pytest.mark.parametrize("opts", [",aio=threads", ",queues=2"])
def test_virtio_blk_backend_options(baremetal, tmp_path, opts):
    img = tmp_path / "disk.img"
    make_image(img)
    r = run_vm(baremetal("virtio_blk"), extra=["--disk", f"path={img}{opts}"])
    assert_passed(r, f"virtio_blk {opts}")
    assert "blk: readback ok" in r.lines, r.describe()
    after = img.read_bytes()
    for n, pat in WRITTEN.items():
        assert sector(after, n) == pat * (SECTOR // len(pat)), f"sector {n}" + r.describe()


def test_virtio_blk_readonly(baremetal, tmp_path):
    img = tmp_path / "ro.img"
    before = make_image(img)
    r = run_vm(baremetal("virtio_blk"), extra=["--disk", f"path={img},readonly"])
    assert_passed(r, "virtio_blk readonly")
    for line in (f"blk: capacity {IMAGE_SIZE // SECTOR} sectors",
                 f"blk: sector0 {SECTOR0[:16].hex()}",
                 "blk: readonly",
                 "blk: write to a read-only disk: status 1",
                 "blk: beyond capacity ioerr ok"):
        assert line in r.lines, f"missing {line!r}" + r.describe()
    assert "blk: wrote sectors" not in r.stdout, r.describe()
    assert img.read_bytes() == before, "a read-only disk image changed"


def test_pci_hostile(baremetal, tmp_path):
    img = tmp_path / "hostile.img"
    make_image(img)
    r = run_vm(baremetal("pci_hostile"), timeout=60,
               extra=["--rng", "--disk", f"path={img}"])
    failed = [line for line in r.lines if line.startswith("hostile: FAILED")]
    assert not failed, "\n".join(failed) + r.describe()
    assert_passed(r, "pci_hostile")
    assert "hostile: monitor survived, rng still works" in r.lines, r.describe()
    assert len(img.read_bytes()) == IMAGE_SIZE, "the image changed size"
