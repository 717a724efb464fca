"""test_linux_devices.py: a stock-configured Linux guest uses every virtio device.

One boot (about a minute here) checks everything a guest does with the devices, with no
special kernel command line: the guest runs a script it reads from a second, host-made
disk (/dev/vdb), so the test also covers "the guest reads a host-prepared image":

  /dev/vda    reads the host's 4 KiB of random bytes (md5 compared), writes a known
              pattern at 1 MiB with O_SYNC-style fsync; the host then finds it in the file
  /dev/hwrng  virtio-rng is the current hwrng and yields bytes
  /dev/hvc0   a line written there lands in the --vconsole file
  eth0        tap in a network namespace this test creates: ping and a TCP round trip
  eth1        user networking through passt: a TCP round trip to the host's loopback

The monitor runs inside the namespace (as root), so the test touches nothing outside it.
Busybox nc runs without -w: its timer fired here ("nc: timed out") even though the answer
had arrived (checked by reading /proc/net/tcp and the output file from the guest); the
test's own timeout bounds a hung connection.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import vmtest
from test_linux import BOOT_TIMEOUT, init_exit, linux  # noqa: F401 (fixture)

PATTERN = (b"vmstack-pattern-" * 4096)[:65536]


GUEST_SCRIPT = """
echo DEVTEST-BEGIN
echo vda-md5 $(dd if=/dev/vda bs=4096 count=1 2>/dev/null | md5sum)
i=0; while [ $i -lt 4096 ]; do printf vmstack-pattern-; i=$((i+1)); done > /tmp/p
dd if=/tmp/p of=/dev/vda bs=4096 seek=256 conv=fsync 2>/dev/null && echo vda-write ok
echo vda-serial $(cat /sys/block/vda/serial)
echo rng-current $(cat /sys/class/misc/hw_random/rng_current)
echo rng-bytes $(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n')
echo VMSTACK-HVC-HELLO > /dev/hvc0 && echo hvc ok
ip link set lo up
ip addr add 10.99.0.2/24 dev eth0 && ip link set eth0 up
ping -c 2 -W 5 10.99.0.1 > /dev/null && echo tap-ping ok
echo tap-tcp $( (echo tcp-over-tap; sleep 2) | nc 10.99.0.1 7777)
ip addr add 10.0.2.15/24 dev eth1 && ip link set eth1 up
echo user-tcp $( (echo tcp-over-user; sleep 2) | nc 10.0.2.2 7778)
echo DEVTEST-END
exit 0
"""


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


@pytest.fixture
def netns():
    """A namespace with a tap (10.99.0.1/24) and a veth default route (passt needs one)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to create a network namespace")
    ns = "vmst-" + uuid.uuid4().hex[:8]
    veth = "vh" + ns[5:]
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "tuntap", "add", "name", "vmst0", "mode", "tap", "vnet_hdr")
        sh("ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "vmst0")
        sh("ip", "-n", ns, "link", "set", "vmst0", "up")
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", "192.0.2.77/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", "192.0.2.1")
        yield ns
    finally:
        sh("ip", "link", "del", veth, check=False)
        sh("ip", "netns", "del", ns, check=False)


class EchoServer:
    """TCP servers inside the namespace that answer each line with 'echo:' + line."""

    def __init__(self, ns, addrs):
        self.procs = [subprocess.Popen(
            ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", ECHO_SERVER, host, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for host, port in addrs]
        for p in self.procs:
            assert p.stdout.readline().strip() == "listening", p.stderr.read()

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(10)
    try:
        c.sendall(b"echo:" + c.recv(4096).strip() + b"\\n")
    except OSError:
        pass
    c.close()
"""


def test_linux_uses_disk_rng_console_and_network(linux, netns, tmp_path):  # noqa: F811
    if not shutil.which("passt"):
        pytest.skip("passt not installed (scripts/install-deps installs it)")
    disk = tmp_path / "vda.img"
    head = os.urandom(4096)
    disk.write_bytes(head + bytes(8 * 1024 * 1024 - 4096))
    script = tmp_path / "vdb.img"
    body = GUEST_SCRIPT.encode()
    script.write_bytes(body + b"\n" * (65536 - len(body)))
    hvc = tmp_path / "hvc0.out"
    servers = EchoServer(netns, [("10.99.0.1", 7777), ("127.0.0.1", 7778)])
    try:
        cmd = ["ip", "netns", "exec", netns] + vmtest.vm_command(
            linux["vmlinux"], initrd=linux["initrd"], memory="256M",
            cmdline=f"{linux['cmdline']} -- sh /dev/vdb",
            extra=["--cpu", linux["cpu"],
                   "--disk", f"path={disk},serial=vmstack-vda",
                   "--disk", f"path={script},readonly",
                   "--net", "tap=vmst0", "--net", "user",
                   "--vconsole", f"file:{hvc}", "--rng"])
        with vmtest.VmProcess(cmd) as vm:
            r = vm.wait(BOOT_TIMEOUT)
    finally:
        servers.stop()
    out = r.stdout
    assert "DEVTEST-END" in out, r.describe()
    assert init_exit(r) == 0, r.describe()
    assert r.returncode == 0, r.describe()
    assert f"vda-md5 {hashlib.md5(head).hexdigest()}" in out, r.describe()
    assert "vda-write ok" in out, r.describe()
    assert disk.read_bytes()[1 << 20:(1 << 20) + len(PATTERN)] == PATTERN
    assert "vda-serial vmstack-vda" in out, r.describe()
    assert "rng-current virtio_rng.0" in out, r.describe()
    rng = [l.split()[1] for l in r.lines if l.startswith("rng-bytes ") and len(l.split()) > 1]
    assert rng and len(rng[0]) == 64 and rng[0] != "0" * 64, r.describe()
    assert "hvc ok" in out and hvc.read_text().strip() == "VMSTACK-HVC-HELLO", r.describe()
    assert "tap-ping ok" in out, r.describe()
    assert "tap-tcp echo:tcp-over-tap" in out, r.describe()
    assert "user-tcp echo:tcp-over-user" in out, r.describe()
