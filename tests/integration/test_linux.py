"""test_linux.py: boots the minimal Linux test guest and asserts what the guest printed.

Each boot costs about a minute on a host whose KVM emulates guest kernel code, so there
are three, each checking several things: bzImage + ACPI + SMP via MADT; PVH vmlinux +
memory size + init's exit status; MP-table SMP with ACPI off + reboot as exit.
"""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import vmtest

BOOT_TIMEOUT = 400.0


@pytest.fixture(scope="module")
def linux(vmstack_vm):
    kdir = os.environ.get("VMSTACK_KERNEL_DIR")
    initrd = os.environ.get("VMSTACK_INITRAMFS")
    if not kdir or not initrd:
        msg = "VMSTACK_KERNEL_DIR / VMSTACK_INITRAMFS not set (scripts/test sets them)"
        if os.environ.get("VMSTACK_REQUIRE") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    quirks = subprocess.run([str(vmtest.REPO / "tests/guest/linux/host-quirks")],
                            capture_output=True, text=True, check=True).stdout
    env = dict(re.findall(r"^(\w+)='([^']*)'$", quirks, re.M))
    return {
        "bzImage": Path(kdir) / "bzImage",
        "vmlinux": Path(kdir) / "vmlinux",
        "initrd": Path(initrd),
        "cpu": env["GUEST_CPU"],
        "cmdline": "console=ttyS0 panic=-1 " + env["GUEST_CMDLINE"],
    }


def boot(linux, kernel, command, *, cpus=1, memory="256M", extra_cmdline="", quiet=True,
         on_reboot=None):
    cmdline = linux["cmdline"] if quiet else linux["cmdline"].replace("quiet", "")
    cmdline = f"{cmdline} {extra_cmdline} -- {command}"
    return vmtest.run_vm(linux[kernel], initrd=linux["initrd"], cpus=cpus, memory=memory,
                         cmdline=cmdline, on_reboot=on_reboot, timeout=BOOT_TIMEOUT,
                         extra=["--cpu", linux["cpu"]])


def init_exit(result):
    m = re.search(r"VMSTACK-INIT-EXIT: (\d+)", result.stdout)
    return int(m.group(1)) if m else None


def test_bzimage_smp_acpi_poweroff(linux):
    """bzImage through the 64-bit boot protocol, 2 vCPUs from the MADT, RTC time, poweroff."""
    host_before = time.time()
    r = boot(linux, "bzImage",
             "echo nproc=$(nproc); echo epoch=$(date +%s); grep -m1 'model name' /proc/cpuinfo",
             cpus=2, quiet=False)
    assert not r.timed_out, r.describe()
    assert "Linux version 6.1" in r.stdout, r.describe()  # the kernel banner
    assert "BIOS-e820" in r.stdout, r.describe()
    assert "ACPI: Using ACPI (MADT) for SMP configuration information" in r.stdout
    assert "VMSTACK-INIT: started" in r.stdout, r.describe()
    assert "nproc=2" in r.stdout, r.describe()
    assert init_exit(r) == 0, r.describe()
    # The guest's wall clock comes from the CMOS RTC, which reports the host's UTC time.
    epoch = int(re.search(r"epoch=(\d+)", r.stdout).group(1))
    assert host_before - 5 <= epoch <= time.time() + 5, r.describe()
    assert "reboot: Power down" in r.stdout, r.describe()
    assert r.returncode == 0, r.describe()
    # --cpu host shows the host's processor name, as QEMU's does.
    host_model = re.search(r"^model name\s*: (.*)$", open("/proc/cpuinfo").read(), re.M)
    if host_model:
        assert f"model name\t: {host_model.group(1).strip()}" in r.stdout, r.describe()


def test_pvh_vmlinux_memory_and_exit_status(linux):
    """ELF vmlinux through its PVH note; guest RAM size; init's own exit status is reported."""
    r = boot(linux, "vmlinux",
             "grep MemTotal /proc/meminfo; exit 3", memory="200M")
    assert not r.timed_out, r.describe()
    kb = int(re.search(r"MemTotal:\s+(\d+) kB", r.stdout).group(1))
    assert 150 * 1024 < kb <= 200 * 1024, r.describe()
    assert init_exit(r) == 3, r.describe()
    assert r.returncode == 0, r.describe()  # the guest powered off cleanly


def test_mptable_smp_and_reboot_exit(linux):
    """With ACPI off, SMP comes from the MP table; the guest's reboot ends the monitor."""
    r = boot(linux, "vmlinux", "echo nproc=$(nproc)", cpus=2, extra_cmdline="acpi=off",
             on_reboot="exit")
    assert not r.timed_out, r.describe()
    assert "nproc=2" in r.stdout, r.describe()
    assert init_exit(r) == 0, r.describe()
    assert "reboot: Restarting system" in r.stdout, r.describe()
    assert r.returncode == 0, r.describe()
