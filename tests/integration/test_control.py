"""test_control.py: vmstack-vm --control, driven like a QMP client would.

The guest is the bare-metal blk_writer (tests/guest/baremetal/blk_writer.c): it prints a
"writer: flushed N" line every few milliseconds, so whether it runs is visible on its
console. Checked: greeting and negotiation, query-status through stop/cont with STOP and
RESUME events (and no guest progress while paused), query-cpus-fast thread ids that are
the monitor's threads, query-block/query-stats counters that move, system_reset (RESET
event, the guest starts again), quit (reply, SHUTDOWN event, exit status 0), the socket's
mode, and a bad --control path.
"""

import os
import re
import stat
import time

import pytest

import vmtest
from qmp import Qmp


def flushed(out):
    return [int(n) for n in re.findall(r"^writer: flushed (\d+)$", out, re.M)]


def test_control_socket_lifecycle(baremetal, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(32 << 20))
    sock = tmp_path / "ctl.sock"
    with vmtest.start_vm(baremetal("blk_writer"), cpus=2,
                         extra=["--disk", f"path={disk}", "--control", str(sock)]) as vm:
        q = Qmp(sock)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        g = q.greeting["QMP"]
        assert g["capabilities"] == [] and "vmstack-vm" in g["version"]["package"], g
        assert q.cmd("query-status")["error"]["class"] == "CommandNotFound"
        assert q.cmd("qmp_capabilities") == {"return": {}, "id": "id-qmp_capabilities"}
        assert vm.wait_for(lambda out: len(flushed(out)) > 3, 30), vm.stdout
        assert q.cmd("query-status")["return"]["status"] == "running"

        # stop: the guest makes no progress until cont.
        assert q.cmd("stop") == {"return": {}, "id": "id-stop"}
        assert q.event("STOP")["timestamp"]["seconds"] >= int(time.time()) - 60
        assert q.cmd("query-status")["return"] == {"status": "paused", "running": False,
                                                    "singlestep": False}
        time.sleep(0.3)
        before = flushed(vm.stdout)[-1]
        time.sleep(1.0)
        assert flushed(vm.stdout)[-1] == before, "the guest ran while paused"
        assert q.cmd("cont") == {"return": {}, "id": "id-cont"}
        q.event("RESUME")
        assert vm.wait_for(lambda out: flushed(out)[-1] > before, 10), "no progress after cont"

        cpus = q.cmd("query-cpus-fast")["return"]
        assert [c["cpu-index"] for c in cpus] == [0, 1], cpus
        for c in cpus:
            assert os.path.isdir(f"/proc/{vm.proc.pid}/task/{c['thread-id']}"), c
        blk = q.cmd("query-block")["return"]
        assert blk == [{"device": "vda", "file": str(disk), "format": "raw",
                        "readonly": False, "size": 32 << 20}], blk
        st = q.cmd("query-stats")["return"]
        assert st["block"][0]["stats"]["wr_operations"] > 3, st
        assert st["block"][0]["stats"]["flush_operations"] > 0, st
        assert st["memory"]["guest-ram"] == 64 << 20 and st["memory"]["monitor-rss"] > 0, st
        assert q.cmd("frobnicate")["error"] == {
            "class": "CommandNotFound", "desc": "The command frobnicate has not been found"}

        # system_reset: a new boot of the same guest.
        assert q.cmd("system_reset")["return"] == {}
        e = q.event("RESET")
        assert e["data"] == {"guest": False, "reason": "host-qmp-system-reset"}, e
        assert vm.wait_for(lambda out: out.count("blk_writer: start") == 2, 30), vm.stdout
        assert q.cmd("query-status")["return"]["status"] == "running"

        assert q.cmd("quit") == {"return": {}, "id": "id-quit"}
        e = q.event("SHUTDOWN")
        assert e["data"] == {"guest": False, "reason": "host-qmp-quit"}, e
        r = vm.wait(30)
        q.close()
    assert r.returncode == 0, r.describe()
    assert not sock.exists(), "the socket outlived the monitor"


def test_control_path_errors(baremetal, tmp_path):
    notsock = tmp_path / "file"
    notsock.write_text("x")
    r = vmtest.run_vm(baremetal("hello"), extra=["--control", str(notsock)])
    assert r.returncode not in (0, None), r.describe()
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and str(notsock) in err[0] and "not a socket" in err[0], r.describe()
    missing = tmp_path / "no" / "such" / "dir.sock"
    r = vmtest.run_vm(baremetal("hello"), extra=["--control", str(missing)])
    assert r.returncode not in (0, None), r.describe()
    assert str(missing) in r.stderr, r.describe()


def test_guest_poweroff_sends_shutdown_event(baremetal, tmp_path):
    """The echo guest waits for input; it powers off when it reads 'q'."""
    sock = tmp_path / "ctl.sock"
    with vmtest.start_vm(baremetal("echo"), extra=["--control", str(sock)]) as vm:
        q = Qmp(sock)
        q.cmd("qmp_capabilities")
        assert vm.wait_for(lambda out: "echo" in out, 20), vm.stdout
        vm.proc.stdin.write(b"q")
        vm.proc.stdin.flush()
        try:
            e = q.event("SHUTDOWN")
        except (EOFError, TimeoutError):
            pytest.fail("no SHUTDOWN event" + vm._result(False).describe())
        assert e["data"] == {"guest": True, "reason": "guest-shutdown"}, e
        r = vm.wait(20)
        q.close()
    assert r.returncode == 0, r.describe()


def test_system_powerdown_presses_the_acpi_power_button(baremetal, tmp_path):
    """powerbutton.c arms PWRBTN_EN and waits; system_powerdown must reach it as
    PWRBTN_STS, and its S5 write then ends the VM with a guest SHUTDOWN."""
    sock = tmp_path / "ctl.sock"
    with vmtest.start_vm(baremetal("powerbutton"), extra=["--control", str(sock)]) as vm:
        q = Qmp(sock)
        q.cmd("qmp_capabilities")
        assert vm.wait_for(lambda out: "pwrbtn: armed" in out, 20), vm.stdout
        assert q.cmd("system_powerdown") == {"return": {}, "id": "id-system_powerdown"}
        q.event("POWERDOWN")
        e = q.event("SHUTDOWN")
        assert e["data"] == {"guest": True, "reason": "guest-shutdown"}, e
        r = vm.wait(20)
        q.close()
    assert "pwrbtn: pressed" in r.lines and "PASS" in r.lines, r.describe()
    assert r.returncode == 0, r.describe()


def test_device_error_events_from_a_hostile_guest(baremetal, tmp_path):
    """pci_hostile.c puts bad rings in front of virtio-rng (and malformed requests, which
    fail one by one, in front of virtio-blk): each time the rng enters NEEDS_RESET a
    DEVICE_ERROR event names it; the disk, whose requests only failed, never does."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    sock = tmp_path / "ctl.sock"
    with vmtest.start_vm(baremetal("pci_hostile"),
                         extra=["--rng", "--disk", f"path={disk}", "--control", str(sock)]) as vm:
        q = Qmp(sock)
        q.cmd("qmp_capabilities")
        q.event("SHUTDOWN", timeout=120)
        r = vm.wait(30)
        q.close()
    assert "PASS" in r.lines, r.describe()
    errors = [e["data"] for e in q.events if e["event"] == "DEVICE_ERROR"]
    devices = {e["device"] for e in errors if e["reason"] == "needs-reset"}
    assert devices == {"virtio-rng"}, errors
    assert all(e["message"] for e in errors), errors
