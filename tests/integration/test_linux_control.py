"""test_linux_control.py: a Linux guest under the control socket (two boots).

- Pause stops the guest's clock: across a `stop` of several seconds, the guest's
  /proc/uptime advances by about the time it ran, not the wall time; `system_powerdown`
  then shuts it down cleanly (the ACPI button driver reports KEY_POWER, acpid in the test
  initramfs runs poweroff, as a distro's logind or acpid would) and the monitor exits 0.
- Snapshot and restore mid-workload: the guest writes a counter to /dev/vda in a loop
  (each value synced); it is saved, the monitor quits, `vmstack-vm restore` carries on
  from the next value, and the disk then holds every value the guest reported.
"""

import re
import time

import vmtest
from qmp import Qmp
from test_linux import BOOT_TIMEOUT, linux  # noqa: F401 (fixture)


def start(linux, command, tmp_path, extra=()):
    sock = tmp_path / "ctl.sock"
    cmdline = f"{linux['cmdline']} -- {command}"
    vm = vmtest.start_vm(linux["bzImage"], initrd=linux["initrd"], memory="256M",
                         cmdline=cmdline,
                         extra=["--cpu", linux["cpu"], "--control", str(sock), *extra])
    q = Qmp(sock)
    q.cmd("qmp_capabilities")
    return vm, q


def uptimes(out):
    return [float(x) for x in re.findall(r"^U=([\d.]+)$", out, re.M)]


def test_pause_stops_guest_time_and_powerdown_shuts_down(linux, tmp_path):
    vm, q = start(linux, "while true; do echo U=$(cut -d' ' -f1 /proc/uptime); sleep 1; done",
                  tmp_path)
    with vm:
        assert vm.wait_for(lambda out: len(uptimes(out)) >= 3, BOOT_TIMEOUT), \
            vm._result(False).describe()
        q.cmd("stop")
        q.event("STOP")
        t0 = time.monotonic()
        u0 = uptimes(vm.stdout)[-1]
        n0 = len(uptimes(vm.stdout))
        time.sleep(8)
        assert len(uptimes(vm.stdout)) <= n0 + 1, "the guest ran while paused"
        q.cmd("cont")
        q.event("RESUME")
        assert vm.wait_for(lambda out: len(uptimes(out)) >= n0 + 3, 120), vm.stdout
        wall = time.monotonic() - t0
        u = uptimes(vm.stdout)
        guest = u[n0 + 2] - u0
        # Three `sleep 1` lines after the pause: about 3 s of guest time (more on a slow
        # host), while the wall clock also counted the 8 s pause.
        assert guest < wall - 5, (u0, u[n0:], wall)

        assert q.cmd("system_powerdown")["return"] == {}
        q.event("POWERDOWN")
        e = q.event("SHUTDOWN", timeout=120)
        r = vm.wait(60)
        q.close()
    assert e["data"] == {"guest": True, "reason": "guest-shutdown"}, e
    assert "VMSTACK-INIT: power button" in r.stdout, r.describe()
    assert "reboot: Power down" in r.stdout, r.describe()
    assert r.returncode == 0, r.describe()


COUNTER = ("i=0; while true; do i=$((i+1)); printf '%08d\\n' $i | "
           "dd of=/dev/vda bs=9 seek=$i conv=notrunc,fsync 2>/dev/null; echo C=$i; done")


def counts(out):
    return [int(x) for x in re.findall(r"^C=(\d+)$", out, re.M)]


def test_snapshot_restore_mid_workload(linux, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    snap = tmp_path / "snap"
    vm, q = start(linux, COUNTER, tmp_path, ["--disk", f"path={disk}"])
    with vm:
        assert vm.wait_for(lambda out: len(counts(out)) >= 5, BOOT_TIMEOUT), \
            vm._result(False).describe()
        r = q.cmd("snapshot-save", path=str(snap))
        assert "return" in r, r
        before = counts(vm.stdout)
        q.cmd("quit")
        assert vm.wait(30).returncode == 0
        q.close()
    sock2 = tmp_path / "ctl2.sock"
    t0 = time.monotonic()
    with vmtest.VmProcess([str(vmtest.monitor_path()), "restore", str(snap), "--control",
                           str(sock2)]) as vm:
        q = Qmp(sock2)
        q.cmd("qmp_capabilities")
        assert vm.wait_for(lambda out: len(counts(out)) >= 10, 120), \
            vm._result(False).describe()
        resumed = time.monotonic() - t0
        q.cmd("system_powerdown")
        r = vm.wait(120)
        q.close()
    after = counts(r.stdout)
    assert "VMSTACK-INIT: started" not in r.stdout, "the guest booted again"
    assert after[0] in (before[-1] + 1, before[-1] + 2), (before[-3:], after[:3])
    assert after == list(range(after[0], after[0] + len(after))), after
    assert r.returncode == 0, r.describe()
    data = disk.read_bytes()
    for i in range(1, after[-1] + 1):
        assert data[i * 9:i * 9 + 9] == b"%08d\n" % i, f"value {i} of {after[-1]} missing"
    print(f"restore: 10 values written {resumed:.1f} s after `vmstack-vm restore`")
