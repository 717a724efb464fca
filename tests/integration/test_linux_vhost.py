"""test_linux_vhost.py: virtio-net over the kernel's vhost-net, tested inside the test guest.

vhost-net is a host kernel module, and hosts without it (this project's own CI machine has
no /dev/vhost-net and no module loader) skip the vhost unit tests. The test guest's kernel
is built with CONFIG_VHOST_NET and CONFIG_TUN (tests/guest/linux/vmstack.config), so this
test boots it with the unit-test binary build/tests/unit/test_vhost (and build-asan's,
under ASan+UBSan, when that tree is built) and their shared libraries on an ext4 disk and
runs them there, as root: the device, transport and MSI-X code
under test are ours, /dev/vhost-net and the tap are the guest kernel's, and user code runs
natively even where the guest kernel is emulated. The binary needs no KVM: its "guest" is a
buffer in its own memory, as in every unit test of the devices.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import vmtest
from test_linux import BOOT_TIMEOUT, init_exit, linux  # noqa: F401 (fixture)

VHOST_TESTS = ["vhost_arp_and_ping", "vhost_masked_vector_pends_until_unmasked",
               "vhost_reset_and_reinit", "vhost_quiesce_keeps_positions",
               "vhost_bad_descriptor_needs_reset", "vhost_snapshot_restore_carries_on",
               "vhost_intx_through_the_relay"]


def shared_libraries(binary: Path) -> list[Path]:
    """The binary's shared libraries and its loader, as ldd resolves them here."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                         check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def tools_image(tmp_path: Path, binaries: dict) -> Path:
    """An ext4 image with each binary (name -> path), their libraries and a /run script that
    runs them in turn, each under a "== NAME" heading."""
    root = tmp_path / "root"
    run = "#!/bin/sh\nstatus=0\n"
    for name, binary in binaries.items():
        (root / name / "lib").mkdir(parents=True)
        shutil.copy(binary, root / name / binary.name)
        loader = None
        for lib in shared_libraries(binary):
            shutil.copy(lib, root / name / "lib" / lib.name)
            if lib.name.startswith("ld-linux"):
                loader = lib.name
        assert loader, f"no dynamic loader among {binary}'s libraries"
        run += (f"echo '== {name}'\n"
                f"/mnt/{name}/lib/{loader} --library-path /mnt/{name}/lib "
                f"/mnt/{name}/{binary.name} || status=1\n")
    (root / "run").write_text(run + "exit $status\n")
    (root / "run").chmod(0o755)
    img = tmp_path / "tools.img"
    subprocess.run(["truncate", "-s", "128M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img)], check=True,
                   capture_output=True)
    return img


def test_vhost_net_inside_the_guest(linux, tmp_path):  # noqa: F811
    """The vhost unit tests pass in the guest, built as usual and (if built) under ASan+UBSan."""
    binaries = {"plain": vmtest.build_dir() / "tests/unit/test_vhost"}
    vmtest.require_file(binaries["plain"], "the vhost unit test (ninja -C build)")
    asan = vmtest.build_dir().parent / "build-asan/tests/unit/test_vhost"
    if asan.exists():
        binaries["asan"] = asan
    if not shutil.which("mkfs.ext4"):
        pytest.skip("mkfs.ext4 missing (apt-get install e2fsprogs)")
    img = tools_image(tmp_path, binaries)
    r = vmtest.run_vm(
        linux["vmlinux"], initrd=linux["initrd"], memory="256M", timeout=BOOT_TIMEOUT,
        cmdline=f"{linux['cmdline']} -- mount -o ro -t ext4 /dev/vda /mnt && /mnt/run",
        extra=["--cpu", linux["cpu"], "--disk", f"path={img},readonly"])
    out = r.stdout
    assert "VMSTACK-INIT-EXIT" in out, r.describe()
    parts = re.split(r"^== (\w+)\s*$", out, flags=re.M)
    runs = dict(zip(parts[1::2], parts[2::2]))
    assert set(runs) == set(binaries), r.describe()
    for name, text in runs.items():
        for test in VHOST_TESTS:
            assert re.search(rf"^ok\s+{test}\s*$", text, re.M), \
                f"{name}: {test} did not pass\n" + r.describe()
        m = re.search(r"^(\d+) tests, (\d+) failed", text, re.M)
        assert m and m.group(2) == "0", r.describe()
        assert "Sanitizer" not in text and "runtime error" not in text, r.describe()
    assert init_exit(r) == 0, r.describe()
