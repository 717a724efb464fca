"""vmtest.py: finding vmstack-vm and the test guests, and running a VM with a timeout.

Shared by every integration test that boots a guest. Paths:
  monitor:  $VMSTACK_VM, else <repo>/build/src/vmstack-vm or <repo>/build/vmstack-vm
  build:    $VMSTACK_BUILD, else <repo>/build (guests in tests/guest/baremetal/<name>.elf)
A missing monitor or guest skips the test, unless VMSTACK_REQUIRE=1 makes it a failure
(for CI, where a missing binary is a build bug rather than work in progress).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 30.0


def monitor_path() -> Path:
    env = os.environ.get("VMSTACK_VM")
    if env:
        return Path(env)
    candidates = [REPO / "build" / "vmstack-vm", REPO / "build" / "src" / "vmstack-vm"]
    return next((p for p in candidates if p.exists()), candidates[0])


def build_dir() -> Path:
    env = os.environ.get("VMSTACK_BUILD")
    return Path(env) if env else REPO / "build"


def baremetal_guest_path(name: str) -> Path:
    return build_dir() / "tests" / "guest" / "baremetal" / f"{name}.elf"


def require_file(path: Path, what: str) -> Path:
    """Returns path if it exists; otherwise skips the test (fails with VMSTACK_REQUIRE=1)."""
    if path.exists():
        return path
    msg = f"{what} not found at {path}"
    if os.environ.get("VMSTACK_REQUIRE") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def require_kvm() -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        msg = "/dev/kvm is not accessible"
        if os.environ.get("VMSTACK_REQUIRE") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def vm_command(kernel: Path, *, memory: str = "64M", cpus: Optional[int] = None,
               cmdline: Optional[str] = None, on_reboot: Optional[str] = None,
               initrd: Optional[Path] = None, extra: Sequence[str] = ()) -> list[str]:
    """The `vmstack-vm run` command line for one guest with a stdio console."""
    cmd = [str(monitor_path()), "run", "--kernel", str(kernel), "--memory", memory,
           "--console", "stdio"]
    if cpus is not None:
        cmd += ["--cpus", str(cpus)]
    if on_reboot is not None:
        cmd += ["--on-reboot", on_reboot]
    if initrd is not None:
        cmd += ["--initrd", str(initrd)]
    if cmdline is not None:
        cmd += ["--cmdline", cmdline]
    cmd += list(extra)
    return cmd


@dataclass
class VmResult:
    """What a finished (or killed) VM left behind. stdout has "\\r\\n" turned into "\\n"."""
    cmd: list[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    timed_out: bool
    duration: float

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def describe(self) -> str:
        """A block for assertion messages: command, status, and both outputs."""
        status = "timed out" if self.timed_out else f"exit status {self.returncode}"
        return (f"\n$ {' '.join(self.cmd)}\n-> {status} after {self.duration:.1f} s\n"
                f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "")


class VmProcess:
    """A running VM whose stdout and stderr are collected by background threads.

    Use for tests that must act while the guest runs (wait for a line, then send a
    signal); run_vm() covers the common run-to-completion case.
    """

    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.start = time.monotonic()
        self._out = bytearray()
        self._err = bytearray()
        self._cond = threading.Condition()
        # stdin stays open and silent, like an idle terminal; EOF is not a request to quit.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._out),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, pipe, buf: bytearray) -> None:
        while True:
            chunk = pipe.read1(65536)
            if not chunk:
                break
            with self._cond:
                buf.extend(chunk)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stdout(self) -> str:
        with self._cond:
            return _decode(bytes(self._out))

    @property
    def stderr(self) -> str:
        with self._cond:
            return _decode(bytes(self._err))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """Waits until predicate(stdout) holds; False on timeout or if the VM exited first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(_decode(bytes(self._out))):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return predicate(_decode(bytes(self._out)))
                self._cond.wait(min(left, 0.2))

    def wait(self, timeout: float) -> VmResult:
        """Waits for exit; on timeout kills the VM (SIGTERM, then SIGKILL) and says so."""
        timed_out = False
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
        return self._result(timed_out)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> VmResult:
        """Sends sig to the monitor alone and waits for it to exit (killing it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def _result(self, timed_out: bool) -> VmResult:
        for t in self._threads:
            t.join(timeout=5)
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        return VmResult(self.cmd, self.proc.returncode, self.stdout, self.stderr, timed_out,
                        time.monotonic() - self.start)

    def __enter__(self) -> "VmProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        self._result(False)


def start_vm(kernel: Path, **kwargs) -> VmProcess:
    """Starts `vmstack-vm run` for kernel; keyword arguments as for vm_command()."""
    return VmProcess(vm_command(kernel, **kwargs))


def run_vm(kernel: Path, *, timeout: float = DEFAULT_TIMEOUT, **kwargs) -> VmResult:
    """Runs a guest to completion (or kills it after timeout seconds)."""
    with start_vm(kernel, **kwargs) as vm:
        return vm.wait(timeout)
