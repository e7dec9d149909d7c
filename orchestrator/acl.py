"""POSIX ACLs through their extended attributes: give one more user access to a file or a
directory without opening it to anyone else (what `setfacl -m u:UID:PERMS` does)."""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from pathlib import Path

_ACCESS = "system.posix_acl_access"
_DEFAULT = "system.posix_acl_default"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")


def _decode(blob: bytes) -> dict[tuple[int, int], int]:
    entries: dict[tuple[int, int], int] = {}
    for offset in range(_HEADER.size, len(blob) - _ENTRY.size + 1, _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(blob, offset)
        entries[(tag, ident)] = perm
    return entries


def _encode(entries: dict[tuple[int, int], int]) -> bytes:
    body = b"".join(_ENTRY.pack(tag, perm, ident) for (tag, ident), perm in sorted(entries.items()))
    return _HEADER.pack(_VERSION) + body


def _from_mode(mode: int) -> dict[tuple[int, int], int]:
    return {
        (_USER_OBJ, _NO_ID): (mode >> 6) & 7,
        (_GROUP_OBJ, _NO_ID): (mode >> 3) & 7,
        (_OTHER, _NO_ID): mode & 7,
    }


def _read(path: Path, name: str, mode: int) -> dict[tuple[int, int], int]:
    try:
        entries = _decode(os.getxattr(path, name, follow_symlinks=False))
    except OSError:  # ENODATA: none yet
        entries = {}
    if not entries:
        entries = _from_mode(mode)
        if (_MASK, _NO_ID) not in entries:
            entries[(_MASK, _NO_ID)] = (mode >> 3) & 7
    return entries


def _with_user(entries: dict[tuple[int, int], int], uid: int, perms: int) -> bytes:
    entries = dict(entries)
    entries[(_USER, uid)] = entries.get((_USER, uid), 0) | perms
    entries[(_MASK, _NO_ID)] = entries.get((_MASK, _NO_ID), 0) | perms
    return _encode(entries)


def grant(path: Path, uid: int, perms: int, *, default: int | None = None) -> None:
    """Add `perms` (rwx bits: 4, 2, 1) for user `uid` to the access ACL of `path`; for a
    directory, `default` adds those for what is created in it from now on."""
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    os.setxattr(path, _ACCESS, _with_user(_read(path, _ACCESS, mode), uid, perms))
    if default is not None and stat.S_ISDIR(info.st_mode):
        entries = _read(path, _DEFAULT, 0o600)  # new files: owner only, but for the grant
        os.setxattr(path, _DEFAULT, _with_user(entries, uid, default))


def clear(path: Path, mode: int) -> None:
    """Remove every ACL of `path` (ours, from an earlier run) and set its mode."""
    for name in (_ACCESS, _DEFAULT):
        with contextlib.suppress(OSError):
            os.removexattr(path, name, follow_symlinks=False)
    os.chmod(path, mode, follow_symlinks=False)


def granted(path: Path, uid: int) -> int:
    """The permissions the access ACL of `path` gives user `uid` by name (0: none)."""
    try:
        entries = _decode(os.getxattr(path, _ACCESS, follow_symlinks=False))
    except OSError:
        return 0
    return entries.get((_USER, uid), 0) & entries.get((_MASK, _NO_ID), 7)


def only_users_named(path: Path) -> bool:
    """Whether the access ACL of `path` opens it to named users only (the grants made here):
    no permission for its group, any named group or others, whatever the mode's group bits
    (which show the ACL's mask)."""
    try:
        entries = _decode(os.getxattr(path, _ACCESS, follow_symlinks=False))
    except OSError:
        return False
    return bool(entries) and all(
        perm == 0 for (tag, _), perm in entries.items() if tag in (_GROUP_OBJ, _GROUP, _OTHER)
    )
