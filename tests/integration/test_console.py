"""test_console.py: console backends (stdio terminal, file, pty), input, escape and signals."""

import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time

import pytest

import vmtest

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, missing from older Pythons


def guest(name):
    return vmtest.require_file(vmtest.baremetal_guest_path(name), f"guest {name}")


def read_until(fd, pattern, timeout=20.0):
    """Reads fd until `pattern` (bytes) appears; returns everything read."""
    buf = b""
    deadline = time.monotonic() + timeout
    while pattern not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


class TerminalVm:
    """vmstack-vm with a pseudo-terminal as its controlling stdin/stdout, like a user's shell."""

    def __init__(self, args):
        self.master, slave = pty.openpty()
        self.before = termios.tcgetattr(slave)
        self.slave = slave
        self.proc = subprocess.Popen([str(vmtest.monitor_path()), "run"] + args, stdin=slave,
                                     stdout=slave, stderr=subprocess.PIPE)

    def finish(self, timeout=20):
        rc = self.proc.wait(timeout=timeout)
        after = termios.tcgetattr(self.slave)
        err = self.proc.stderr.read().decode()
        os.close(self.master)
        os.close(self.slave)
        return rc, after, err


def test_stdio_terminal_raw_input_and_restore(vmstack_vm):
    vm = TerminalVm(["--kernel", str(guest("echo")), "--memory", "32M"])
    out = read_until(vm.master, b"echo: ready")
    assert b"echo: ready" in out
    during = termios.tcgetattr(vm.slave)
    assert not (during[3] & termios.ICANON) and not (during[3] & termios.ECHO)  # raw mode
    os.write(vm.master, b"hello vm")
    out = read_until(vm.master, b"HELLO VM")
    assert b"HELLO VM" in out  # keystrokes reached the guest through the UART FIFO
    os.write(vm.master, b"q")
    out = read_until(vm.master, b"PASS")
    rc, after, err = vm.finish()
    assert rc == 0, err
    assert b"echo: 8 bytes" in out
    assert after == vm.before  # terminal restored


def test_escape_quits_and_restores(vmstack_vm):
    vm = TerminalVm(["--kernel", str(guest("echo")), "--memory", "32M"])
    assert b"echo: ready" in read_until(vm.master, b"echo: ready")
    os.write(vm.master, b"ab\x01\x01c")  # Ctrl-A Ctrl-A sends one Ctrl-A
    assert b"AB\x01C" in read_until(vm.master, b"C")
    os.write(vm.master, b"\x01x")
    rc, after, err = vm.finish()
    assert rc == 0, err
    assert after == vm.before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_cleanly_and_restores(vmstack_vm, sig):
    vm = TerminalVm(["--kernel", str(guest("echo")), "--memory", "32M", "-v"])
    assert b"echo: ready" in read_until(vm.master, b"echo: ready")
    vm.proc.send_signal(sig)
    rc, after, err = vm.finish()
    assert rc == 0, err
    assert f"signal {int(sig)}" in err
    assert after == vm.before


def test_crash_restores_terminal(vmstack_vm):
    vm = TerminalVm(["--kernel", str(guest("triple")), "--memory", "32M"])
    rc, after, err = vm.finish()
    assert rc == 2, err
    assert "triple fault" in err and "RIP=" in err
    assert after == vm.before


def test_file_console(vmstack_vm, tmp_path):
    log = tmp_path / "console.log"
    r = subprocess.run([str(vmtest.monitor_path()), "run", "--kernel", str(guest("hello")),
                        "--memory", "32M", "--console", f"file:{log}", "--cmdline", "to-file"],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    text = log.read_text()
    assert "hello from vmstack bare-metal guest" in text and "cmdline: to-file" in text


def test_file_console_bad_path(vmstack_vm):
    r = subprocess.run([str(vmtest.monitor_path()), "run", "--kernel", str(guest("hello")),
                        "--console", "file:/nonexistent/dir/log"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == ("vmstack-vm: --console file:/nonexistent/dir/log: "
                                "No such file or directory")


def test_pty_console(vmstack_vm):
    p = subprocess.Popen([str(vmtest.monitor_path()), "run", "--kernel", str(guest("echo")),
                          "--memory", "32M", "--console", "pty"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stderr.readline().decode()
        m = re.match(r"vmstack-vm: console on (/dev/pts/\d+)", line)
        assert m, line
        fd = os.open(m.group(1), os.O_RDWR | os.O_NOCTTY)
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~(termios.ECHO | termios.ICANON)
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        assert b"echo: ready" in read_until(fd, b"echo: ready")
        os.write(fd, b"pty!q")
        out = read_until(fd, b"PASS")
        assert b"PTY!" in out and b"PASS" in out
        os.close(fd)
        assert p.wait(timeout=20) == 0
    finally:
        p.kill()
        p.wait()


def main_thread_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/task/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("stdin", ["closed", "devnull"])
def test_no_input_does_not_spin(vmstack_vm, stdin):
    """With stdin closed or at EOF the main loop must sleep, not poll a dead fd in a loop."""
    cmd = [str(vmtest.monitor_path()), "run", "--kernel", str(guest("echo")), "--memory", "32M"]
    kw = {"stdin": subprocess.DEVNULL} if stdin == "devnull" else {"preexec_fn": lambda: os.close(0)}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        assert b"echo: ready" in read_until(p.stdout.fileno(), b"echo: ready")
        # Measure the rate, not the total: start-up work on a loaded machine can take
        # most of a second of CPU, while a spinning loop would burn the whole interval.
        before = main_thread_cpu_seconds(p.pid)
        time.sleep(2)
        assert p.poll() is None
        assert main_thread_cpu_seconds(p.pid) - before < 0.5
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0


def test_stop_while_console_blocked(vmstack_vm):
    """A guest blocked writing to a console nobody reads still stops on SIGTERM."""
    p = subprocess.Popen([str(vmtest.monitor_path()), "run", "--kernel", str(guest("hello")),
                          "--memory", "32M", "--cmdline", "flood"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fcntl.fcntl(p.stdout.fileno(), F_SETPIPE_SZ, 4096)  # full within ~0.2 s
        time.sleep(1.5)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    finally:
        p.kill()
        p.wait()
