"""test_machine.py: memory map and CPU model as a bare-metal guest sees them."""

import re

import vmtest


def hello(tmp=None):
    return vmtest.require_file(vmtest.baremetal_guest_path("hello"), "hello guest")


def e820(result):
    return [(int(a, 16), int(b, 16), int(t)) for a, b, t in
            re.findall(r"e820: ([0-9a-f]+)-([0-9a-f]+) type (\d)", result.stdout)]


def test_small_memory_map(vmstack_vm):
    r = vmtest.run_vm(hello(), memory="64M")
    assert r.returncode == 0, r.describe()
    assert e820(r) == [(0, 0x9fbff, 1), (0x9fc00, 0x9ffff, 2), (0xe0000, 0xfffff, 2),
                       (0x100000, 64 * 2**20 - 1, 1)], r.describe()


def test_memory_above_4g_skips_pci_hole(vmstack_vm):
    """RAM beyond 3 GiB continues at 4 GiB, leaving the 32-bit PCI hole free."""
    r = vmtest.run_vm(hello(), memory="5G")
    assert r.returncode == 0, r.describe()
    m = e820(r)
    assert (0x100000, 0xbfffffff, 1) in m, r.describe()
    assert (0x100000000, 0x100000000 + 2 * 2**30 - 1, 1) in m, r.describe()
    assert not any(a < 0x100000000 and b >= 0xc0000000 for a, b, _ in m), r.describe()


def cpuid_words(result):
    ecx = int(re.search(r"leaf 1 eax \w+ ebx (\w+) ecx (\w+)", result.stdout).group(2), 16)
    kvm = int(re.search(r"kvm features eax (\w+)", result.stdout).group(1), 16)
    return ecx, kvm


def test_cpu_model_reaches_guest(vmstack_vm):
    """--cpu shapes what the guest's CPUID reports (x2apic: leaf 1 ECX bit 21; PV IPI: KVM
    leaf 0x40000001 EAX bit 11; both are bits KVM honours even on an emulating host)."""
    guest = vmtest.require_file(vmtest.baremetal_guest_path("cpuid"), "cpuid guest")
    on = vmtest.run_vm(guest, memory="32M")
    off = vmtest.run_vm(guest, memory="32M", extra=["--cpu", "host,-x2apic,-kvm-pv-ipi"])
    assert on.returncode == 0 and off.returncode == 0, on.describe() + off.describe()
    ecx_on, kvm_on = cpuid_words(on)
    ecx_off, kvm_off = cpuid_words(off)
    assert ecx_on & (1 << 21) and not ecx_off & (1 << 21), (hex(ecx_on), hex(ecx_off))
    assert kvm_on & (1 << 11) and not kvm_off & (1 << 11), (hex(kvm_on), hex(kvm_off))
    assert ecx_on & (1 << 31) and ecx_off & (1 << 31)  # hypervisor bit always set
