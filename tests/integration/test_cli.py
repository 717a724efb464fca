"""test_cli.py: bad input gets one clear line on stderr and exit status 1, never a crash."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import vmtest


def run(args, user=None, timeout=30):
    cmd = [str(vmtest.monitor_path())] + args
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    if user and os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(r, *fragments):
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("vmstack-vm: "), r.stderr
    for f in fragments:
        assert f.lower() in lines[0].lower(), (f, r.stderr)


@pytest.fixture(scope="module")
def hello(vmstack_vm):
    return vmtest.require_file(vmtest.baremetal_guest_path("hello"), "hello guest")


@pytest.fixture(scope="module")
def files(tmp_path_factory, hello):
    d = tmp_path_factory.mktemp("cli")
    junk = d / "junk.bin"
    junk.write_bytes(os.urandom(8192))
    bootsector = d / "disk.img"
    bootsector.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 1024)
    elf = hello.read_bytes()
    (d / "trunc.elf").write_bytes(elf[:200])
    big = d / "big.cpio"
    with open(big, "wb") as f:
        f.truncate(80 << 20)
    return d


def test_no_command():
    r = run([])
    assert r.returncode == 1 and "usage" in r.stderr


def test_unknown_command():
    assert_one_line_error(run(["boot"]), "unknown command 'boot'")


@pytest.mark.parametrize("args,fragments", [
    ([], ["--kernel is required"]),
    (["--kernel", "/nonexistent/bzImage"], ["/nonexistent/bzImage", "no such file"]),
    (["--kernel", "/tmp"], ["/tmp", "directory"]),
    (["--kernel", "K", "--memory", "0"], ["--memory 0"]),
    (["--kernel", "K", "--memory", "100T"], ["--memory", "100 TiB", "smaller"]),
    (["--kernel", "K", "--memory", "12X"], ["--memory '12X'", "not a size"]),
    (["--kernel", "K", "--memory", "1M"], ["--memory", "too small"]),
    (["--kernel", "K", "--cpus", "0"], ["--cpus 0", "between 1 and"]),
    (["--kernel", "K", "--cpus", "10000"], ["--cpus 10000", "between 1 and"]),
    (["--kernel", "K", "--cpus", "two"], ["--cpus 'two'", "not a number"]),
    (["--kernel", "K", "--cpu", "host,+avx9000"], ["unknown cpu feature 'avx9000'"]),
    (["--kernel", "K", "--cpu", "pentium"], ["'pentium'"]),
    (["--kernel", "K", "--console", "serial"], ["--console 'serial'"]),
    (["--kernel", "K", "--on-reboot", "halt"], ["--on-reboot 'halt'"]),
    (["--kernel", "K", "--frobnicate"], ["unknown option '--frobnicate'"]),
    (["--kernel", "K", "extra"], ["unexpected argument 'extra'"]),
    (["--kernel"], ["--kernel", "needs a value"]),
    (["--kernel", "K", "--kvm-device", "/nonexistent/kvm"], ["/nonexistent/kvm", "no such device"]),
])
def test_bad_options(hello, args, fragments):
    args = [str(hello) if a == "K" else a for a in args]
    assert_one_line_error(run(["run"] + args), *fragments)


@pytest.mark.parametrize("name,fragments", [
    ("junk.bin", ["junk.bin", "not a kernel"]),
    ("disk.img", ["disk.img", "not a linux bzimage"]),
    ("trunc.elf", ["trunc.elf", "truncated"]),
])
def test_not_a_kernel(files, name, fragments):
    assert_one_line_error(run(["run", "--kernel", str(files / name)]), *fragments)


def test_truncated_bzimage(tmp_path, vmstack_vm):
    kdir = os.environ.get("VMSTACK_KERNEL_DIR")
    if not kdir:
        pytest.skip("VMSTACK_KERNEL_DIR not set")
    data = (Path(kdir) / "bzImage").read_bytes()
    cut = tmp_path / "bzImage.part"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run(["run", "--kernel", str(cut)]), "bzImage.part", "truncated")


def test_initrd_too_large(files, hello):
    r = run(["run", "--kernel", str(hello), "--memory", "32M", "--initrd",
             str(files / "big.cpio")])
    assert_one_line_error(r, "big.cpio", "does not fit", "raise --memory")


def test_cmdline_too_long(hello):
    r = run(["run", "--kernel", str(hello), "--cmdline", "x" * 5000])
    assert_one_line_error(r, "--cmdline", "at most")


NOBODY = 65534  # an unprivileged uid/gid that exists on every Debian system


@pytest.fixture
def public_dir():
    """A directory an unprivileged user can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="vmstack-cli-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_unreadable_kernel(hello, public_dir):
    k = public_dir / "secret.elf"
    shutil.copy(hello, k)
    k.chmod(0o000)
    r = run(["run", "--kernel", str(k)], user=NOBODY)
    assert_one_line_error(r, "secret.elf", "permission denied")


def test_kvm_not_permitted(hello, public_dir):
    k = public_dir / "hello.elf"
    shutil.copy(hello, k)
    k.chmod(0o644)
    if os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is open to everyone on this host")
    r = run(["run", "--kernel", str(k)], user=NOBODY)
    assert_one_line_error(r, "/dev/kvm", "permission denied", "group kvm")


def test_help_and_cpu_list():
    r = run(["run", "--help"])
    assert r.returncode == 0 and "--kernel PATH" in r.stdout
    r = run(["run", "--cpu", "help"])
    assert r.returncode == 0 and "kvm-pv-ipi" in r.stdout and "avx2" in r.stdout


def test_name_labels_messages(hello):
    r = run(["run", "--name", "web1", "-v", "--kernel", str(hello), "--memory", "32M"])
    assert r.returncode == 0, r.stderr
    assert "vmstack-vm[web1]: guest powered off" in r.stderr


# --- devices: --disk, --net, --vconsole ---

def test_disk_missing_image(hello, tmp_path):
    r = run(["run", "--kernel", str(hello), "--disk", f"path={tmp_path}/none.img"])
    assert_one_line_error(r, "--disk", "none.img", "no such file", "truncate")


def test_disk_unknown_key(hello, tmp_path):
    r = run(["run", "--kernel", str(hello), "--disk", f"path={tmp_path}/a.img,sise=1G"])
    assert_one_line_error(r, "--disk", "sise", "known keys")


def test_disk_without_path(hello):
    r = run(["run", "--kernel", str(hello), "--disk", "readonly"])
    assert_one_line_error(r, "--disk", "path=")


def test_disk_serial_too_long(hello, tmp_path):
    r = run(["run", "--kernel", str(hello), "--disk", f"path={tmp_path}/a.img,serial={'x' * 21}"])
    assert_one_line_error(r, "--disk", "20")


def test_disk_locked_by_another_monitor(hello, tmp_path):
    img = tmp_path / "shared.img"
    img.write_bytes(bytes(1 << 20))
    # The first monitor holds the image (the echo guest waits for input forever).
    first = vmtest.start_vm(vmtest.baremetal_guest_path("echo"), extra=["--disk", f"path={img}"])
    with first:
        assert first.wait_for(lambda out: "echo" in out.lower() or len(out) > 0, 20)
        r = run(["run", "--kernel", str(hello), "--disk", f"path={img}"])
        assert_one_line_error(r, "shared.img", "locked", "readonly")
        # Two readers cannot share it with a writer either; a readonly open must fail too.
        r = run(["run", "--kernel", str(hello), "--disk", f"path={img},readonly"])
        assert_one_line_error(r, "shared.img", "locked")
        first.terminate()


def test_disk_directory(hello, tmp_path):
    r = run(["run", "--kernel", str(hello), "--disk", f"path={tmp_path}"])
    assert_one_line_error(r, "--disk", "directory")


def test_disk_permission_denied_suggests_readonly(hello, public_dir):
    k = public_dir / "hello.elf"
    shutil.copy(hello, k)
    k.chmod(0o644)
    img = public_dir / "ro.img"
    img.write_bytes(bytes(4096))
    img.chmod(0o444)
    r = run(["run", "--kernel", str(k), "--disk", f"path={img}"], user=NOBODY)
    assert_one_line_error(r, "ro.img", "permission denied", "readonly")


def test_net_unknown_key(hello):
    r = run(["run", "--kernel", str(hello), "--net", "tap=vm0,speed=10G"])
    assert_one_line_error(r, "--net", "speed", "known keys")


def test_net_bad_mac(hello):
    r = run(["run", "--kernel", str(hello), "--net", "user,mac=01:00:5e:00:00:01"])
    assert_one_line_error(r, "--net", "mac", "unicast")


def test_net_tap_without_permission(hello, public_dir):
    k = public_dir / "hello.elf"
    shutil.copy(hello, k)
    k.chmod(0o644)
    r = run(["run", "--kernel", str(k), "--net", "tap=vmstnoperm0"], user=NOBODY)
    assert_one_line_error(r, "vmstnoperm0", "permission", "root")


def test_net_vhost_on_where_there_is_none(hello):
    """vhost=on is checked before the guest starts: one line naming device, tap and fix."""
    if os.path.exists("/dev/vhost-net"):
        pytest.skip("this host has /dev/vhost-net (test_linux_vhost.py covers it working)")
    if os.geteuid() != 0:
        pytest.skip("needs root to create the tap")
    r = run(["run", "--kernel", str(hello), "--net", "tap=vmstvhost0,vhost=on"])
    assert_one_line_error(r, "virtio-net0 (tap vmstvhost0)", "/dev/vhost-net",
                          "modprobe vhost_net")
    assert "hello" not in r.stdout


def test_net_tap_fd_not_a_tap(hello):
    r = run(["run", "--kernel", str(hello), "--net", "tap,fd=0"])
    assert_one_line_error(r, "fd 0", "tap")


def test_vconsole_bad_kind(hello):
    r = run(["run", "--kernel", str(hello), "--vconsole", "stdio"])
    assert_one_line_error(r, "--vconsole", "file:PATH", "pty")
