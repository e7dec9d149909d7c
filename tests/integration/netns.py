"""A Linux network namespace joined to this one by a veth pair, for tests that cut a host off.

The namespace's end of the pair has the higher address of a private /30, ours the lower. `cut()`
takes the namespace's end down: inside, the route goes and sends fail; outside, our end loses its
carrier but keeps its (now unused) route, so what is sent to the namespace is dropped rather than
routed elsewhere. Either way a TCP connection across the link only learns it by its own timers,
as when a cable is pulled. Needs root, `ip` and `nsenter`; skips the test, saying why, without.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

POOL = ipaddress.ip_network("10.213.0.0/16")  # each namespace takes a random /30 of it


@dataclass(frozen=True)
class NetNamespace:
    """A namespace `name`, its veth end `inside` (address `inside_address`) and ours `outside`."""

    name: str
    outside: str
    inside: str
    outside_address: str
    inside_address: str

    @property
    def enter(self) -> list[str]:
        """A command prefix that runs a command in the namespace (its network only: the mounts,
        /sys and its cgroups included, stay as they are, which `ip netns exec` would not)."""
        return [_tool("nsenter"), f"--net=/run/netns/{self.name}", "--"]

    def cut(self) -> None:
        """Take the link down: nothing passes either way."""
        _ip("-n", self.name, "link", "set", self.inside, "down")

    def heal(self) -> None:
        """Bring the link back up (the namespace's route comes back with it)."""
        _ip("-n", self.name, "link", "set", self.inside, "up")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no `{name}` command to make a network namespace with")
    return found


def _ip(*args: str) -> None:
    result = subprocess.run([_tool("ip"), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /30 of POOL that no address of this machine's namespace falls in."""
    shown = subprocess.run(
        [_tool("ip"), "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout.split()
    used = [
        ipaddress.ip_interface(shown[i + 1]).network for i, w in enumerate(shown) if w == "inet"
    ]
    subnets = list(POOL.subnets(new_prefix=30))
    for _ in range(100):
        subnet = secrets.choice(subnets)
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RuntimeError(f"no free /30 in {POOL}")


@contextlib.contextmanager
def network_namespace() -> Iterator[NetNamespace]:
    """A fresh namespace linked to ours and up; removed with its veth pair afterwards, whatever
    happened (processes still inside keep the namespace, but not the link, alive)."""
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    _tool("nsenter")
    token = secrets.token_hex(3)
    subnet = _free_subnet()
    outside_address, inside_address = (str(host) for host in subnet.hosts())
    space = NetNamespace(
        f"orch-test-{token}", f"orch{token}o", f"orch{token}i", outside_address, inside_address
    )
    try:
        _ip("netns", "add", space.name)
    except RuntimeError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc}")
    try:
        _ip("link", "add", space.outside, "type", "veth", "peer", "name", space.inside)
        _ip("link", "set", space.inside, "netns", space.name)
        _ip("addr", "add", f"{outside_address}/30", "dev", space.outside)
        _ip("link", "set", space.outside, "up")
        _ip("-n", space.name, "addr", "add", f"{inside_address}/30", "dev", space.inside)
        _ip("-n", space.name, "link", "set", space.inside, "up")
        _ip("-n", space.name, "link", "set", "lo", "up")
        yield space
    finally:
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", space.outside)  # either end takes the pair with it
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", space.name)
