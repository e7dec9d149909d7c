"""`metrics:` the Prometheus endpoint and status page: where it listens, and whether it may listen
beyond this machine."""

from __future__ import annotations

import ipaddress
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.model import MetricsSection
from orchestrator.config.validate import (
    child,
    describe,
    expect_bool,
    expect_mapping,
    validate_fields,
)

_LISTEN_FORM = "HOST:PORT (127.0.0.1:9464, [::1]:9464, localhost:9464; port 0 picks a free one)"


def build_metrics(raw: Any, file: str, where: str) -> MetricsSection:
    """`metrics:` `listen` (HOST:PORT, off when absent or null) and `allow_remote`. A host that is
    not loopback needs `allow_remote: true`: the endpoint has no authentication and the status page
    shows module names, errors and events."""
    mapping = expect_mapping(raw, file, where, allow_null=True)
    fields = {"listen": _listen, "allow_remote": expect_bool}
    values = validate_fields(mapping, fields, file, where)
    section = MetricsSection(**values)
    if section.listen is not None and not section.allow_remote and not _loopback(section.host):
        raise ConfigError(
            file,
            child(where, "listen"),
            # The whole value is quoted: one that came from ${VAR} is scrubbed whole.
            f"{describe(mapping['listen'])} is not on a loopback address: the metrics endpoint and status"
            " page have no authentication; set `metrics.allow_remote: true` to serve them to other"
            " hosts (behind a firewall or a proxy)",
        )
    return section


def _listen(value: Any, file: str, where: str) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(file, where, f"expected {_LISTEN_FORM}, got {describe(value)}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # an IPv6 address needs its brackets, or the port is ambiguous
        host = ""
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or int(port) > 65535
        or not _host_ok(host)
    ):
        raise ConfigError(file, where, f"expected {_LISTEN_FORM}, got {describe(value)}")
    return host, int(port)


def _host_ok(host: str) -> bool:
    """An IP address or `localhost`: a name that resolves elsewhere at bind time is refused."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback
