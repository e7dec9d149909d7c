"""How `module_sdk` reaches a module's venv without the supervisor's other packages.

The venv gets one `.pth` line naming a directory of its own (`orchestrator-sdk/`) that holds
symlinks to `module_sdk` and to the distributions it imports at run time (pyzmq, msgpack), and
nothing else: the module sees none of the supervisor's other packages. A `.pth` directory comes
after the venv's site-packages on `sys.path`, so a module that pins its own msgpack gets its own.
The links serve only an interpreter of the supervisor's ABI (pyzmq and msgpack hold compiled
code); a venv of another Python gets those two installed by the installer instead
(`requirements`), with the versions the supervisor's own distribution asks for.
"""

from __future__ import annotations

import functools
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import module_sdk

SDK_DISTRIBUTIONS = ("pyzmq", "msgpack")  # what module_sdk imports at run time, besides itself
_FALLBACK_REQUIREMENTS = ("pyzmq>=26", "msgpack>=1.0.7")
OVERLAY_DIR = "orchestrator-sdk"  # in the venv: the links
PTH_FILE = "_orchestrator_sdk.pth"  # in the venv's site-packages: names OVERLAY_DIR


@dataclass(frozen=True)
class SdkParts:
    """What a venv needs of the supervisor's environment to run the shim."""

    package: Path  # the module_sdk package directory
    links: tuple[Path, ...]  # top-level entries of SDK_DISTRIBUTIONS (packages and dist-info)
    requirements: tuple[str, ...]  # installed instead of `links` into a venv of another ABI
    abi: str  # the supervisor interpreter's SOABI, e.g. cpython-311-x86_64-linux-gnu
    fingerprint: str  # changes when module_sdk's place or a linked distribution's version does


@functools.cache
def sdk_parts() -> SdkParts:
    """The parts, found once per supervisor (installed distributions do not change under it)."""
    # Imported here: only a config with modules of their own dependencies pays for them (~1 MB,
    # and hashlib's OpenSSL ~3.5 MB).
    import hashlib  # noqa: PLC0415
    from importlib import metadata  # noqa: PLC0415

    package = Path(module_sdk.__file__).resolve().parent
    links: list[Path] = []
    versions: list[str] = []
    for name in SDK_DISTRIBUTIONS:
        dist = metadata.distribution(name)
        versions.append(f"{name}=={dist.version}")
        tops = sorted({file.parts[0] for file in dist.files or () if file.parts[0] != ".."})
        links.extend(Path(str(dist.locate_file(top))) for top in tops)
    abi = str(sysconfig.get_config_var("SOABI") or "")
    fingerprint = hashlib.sha256(
        "\n".join([str(package), abi, *versions]).encode()
    ).hexdigest()[:16]
    return SdkParts(package, tuple(links), _requirements(), abi, fingerprint)


def _requirements() -> tuple[str, ...]:
    """The SDK distributions as orchestrator's own metadata asks for them (`pyzmq>=26`)."""
    from importlib import metadata  # noqa: PLC0415

    try:
        declared = metadata.requires("orchestrator") or []
    except metadata.PackageNotFoundError:
        return _FALLBACK_REQUIREMENTS
    wanted = [
        line.split(";")[0].strip()
        for line in declared
        if any(line.lower().startswith(name) for name in SDK_DISTRIBUTIONS) and "extra ==" not in line
    ]
    return tuple(wanted) if len(wanted) == len(SDK_DISTRIBUTIONS) else _FALLBACK_REQUIREMENTS
