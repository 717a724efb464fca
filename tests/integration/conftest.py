"""conftest.py: pytest fixtures for the integration tests (see vmtest.py for the helpers)."""

from pathlib import Path
from typing import Callable

import pytest

import vmtest


@pytest.fixture(scope="session")
def vmstack_vm() -> Path:
    """The monitor binary; skips (or fails, with VMSTACK_REQUIRE=1) when it is missing."""
    vmtest.require_kvm()
    return vmtest.require_file(vmtest.monitor_path(), "vmstack-vm")


@pytest.fixture
def baremetal(vmstack_vm) -> Callable[[str], Path]:
    """baremetal("hello") -> path of the built hello.elf test guest."""
    def find(name: str) -> Path:
        return vmtest.require_file(vmtest.baremetal_guest_path(name),
                                   f"bare-metal guest '{name}'")
    return find
