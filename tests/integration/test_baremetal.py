"""test_baremetal.py: boots each tiny bare-metal guest and checks what it reported."""

import re
import signal
from datetime import datetime, timezone

import pytest

from vmtest import run_vm, start_vm

BANNER = "hello from vmstack bare-metal guest"


def assert_passed(r, what=""):
    """The guest printed a PASS line, no FAIL line, and the monitor exited 0."""
    assert not r.timed_out, f"{what} timed out" + r.describe()
    fails = [line for line in r.lines if line.startswith("FAIL")]
    assert not fails, f"{what} guest reported {fails[0]!r}" + r.describe()
    assert "PASS" in r.lines, f"{what} guest printed no PASS line" + r.describe()
    assert r.returncode == 0, f"{what} monitor exit status {r.returncode}" + r.describe()


def test_hello_prints_banner_and_cmdline(baremetal):
    cmdline = "vmstack-test token=42 quiet"
    r = run_vm(baremetal("hello"), cmdline=cmdline)
    assert_passed(r, "hello")
    assert BANNER in r.lines, r.describe()
    assert f"cmdline: {cmdline}" in r.lines, r.describe()
    # The e820 map the guest saw describes about the 64 MiB we asked for.
    m = re.search(r"^mem: (\d+) KiB usable", r.stdout, re.M)
    assert m, r.describe()
    assert 48 * 1024 <= int(m.group(1)) <= 64 * 1024, r.describe()


def test_hello_without_cmdline(baremetal):
    r = run_vm(baremetal("hello"))
    assert_passed(r, "hello")
    assert BANNER in r.lines, r.describe()
    assert any(line.startswith("cmdline:") for line in r.lines), r.describe()


@pytest.mark.parametrize("name", ["uart", "rtc", "ports", "cpuid"])
def test_device_guest_passes(baremetal, name):
    r = run_vm(baremetal(name))
    assert_passed(r, name)


def test_uart_loopback_stays_inside(baremetal):
    # Bytes the uart guest sends in loopback mode must reach its RBR, not the console.
    r = run_vm(baremetal("uart"))
    assert_passed(r, "uart")
    assert "xyzzy-lb" not in r.stdout, r.describe()


def test_cpuid_reports_kvm(baremetal):
    r = run_vm(baremetal("cpuid"))
    assert_passed(r, "cpuid")
    assert "cpuid: hypervisor KVMKVMKVM" in r.stdout, r.describe()


def test_rtc_matches_host_utc(baremetal):
    r = run_vm(baremetal("rtc"))
    assert_passed(r, "rtc")
    m = re.search(r"^rtc: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", r.stdout, re.M)
    assert m, r.describe()
    guest = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    skew = abs((datetime.now(timezone.utc) - guest).total_seconds())
    assert skew < 300, f"guest RTC {guest} is {skew:.0f} s away from host UTC" + r.describe()


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_smp_all_cpus_start(baremetal, cpus):
    r = run_vm(baremetal("smp"), cpus=cpus)
    assert f"smp: madt {cpus} cpus, mptable {cpus} cpus" in r.lines, r.describe()
    assert f"smp: {cpus} cpus up" in r.lines, r.describe()
    assert_passed(r, f"smp --cpus {cpus}")


@pytest.mark.parametrize("method", ["i8042", "acpi"])
def test_reset_exits_with_on_reboot_exit(baremetal, method):
    r = run_vm(baremetal("reset"), on_reboot="exit", cmdline=method)
    assert not r.timed_out, r.describe()
    assert r.lines.count(f"reset: boot ({method})") == 1, r.describe()
    assert not any(line.startswith("FAIL") for line in r.lines), r.describe()
    assert r.returncode == 0, r.describe()


def test_reset_restarts_by_default(baremetal):
    with start_vm(baremetal("reset")) as vm:
        rebooted = vm.wait_for(lambda out: out.count("reset: boot (i8042)") >= 2, timeout=30)
        r = vm.terminate(signal.SIGTERM, timeout=10)
    assert rebooted, "the guest did not boot a second time after its reset" + r.describe()
    assert not any(line.startswith("FAIL") for line in r.lines), r.describe()
    assert not r.timed_out, "the monitor ignored SIGTERM" + r.describe()
    # A clean exit: the monitor handled SIGTERM (documented: status 0) rather than dying of it.
    assert r.returncode == 0, r.describe()


def test_triple_fault_is_reported(baremetal):
    r = run_vm(baremetal("triple"))
    assert not r.timed_out, r.describe()
    assert "triple: about to fault" in r.lines, r.describe()
    assert not any(line.startswith("FAIL") for line in r.lines), r.describe()
    assert r.returncode == 2, "a guest crash exits with status 2" + r.describe()
    assert re.search(r"triple fault", r.stderr, re.I), r.describe()
    assert "RIP" in r.stderr, "no register dump on stderr" + r.describe()


def test_poweroff_exits_zero(baremetal):
    r = run_vm(baremetal("poweroff"))
    assert not r.timed_out, r.describe()
    assert "poweroff: bye" in r.lines, r.describe()
    assert not any(line.startswith("FAIL") for line in r.lines), r.describe()
    assert r.returncode == 0, r.describe()
