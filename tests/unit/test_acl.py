"""POSIX ACL grants for a module run as another user: the run directory and its sockets, and a
stale grant cleared by the next supervisor."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from orchestrator import acl
from orchestrator.isolation import RunDirGrants, grant_run_dir
from orchestrator.rundir import RunDir, UnsafeRunDirError

NOBODY = 65534


@pytest.fixture
def private(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    try:
        os.getxattr(directory, "system.posix_acl_access")
    except OSError as exc:
        if exc.errno not in (61,):  # ENODATA: ACLs supported, none set
            pytest.skip(f"no POSIX ACLs on this filesystem ({exc.strerror})")
    return directory


def test_a_grant_adds_one_user_and_nobody_else(private: Path) -> None:
    acl.grant(private, NOBODY, 0o1)
    assert acl.granted(private, NOBODY) == 0o1
    assert acl.granted(private, NOBODY + 1) == 0
    mode = stat.S_IMODE(private.stat().st_mode)
    assert mode == 0o710  # the group bits show the mask; group and others have no entry
    acl.grant(private, NOBODY, 0o4)  # grants add up
    assert acl.granted(private, NOBODY) == 0o5


def test_sockets_bound_later_are_granted_too(private: Path) -> None:
    (private / "child.sock").touch()
    grant_run_dir(private, NOBODY)
    assert acl.granted(private / "child.sock", NOBODY) == 0o6
    grants = RunDirGrants()
    grants.add(private, NOBODY)
    late = socket.socket(socket.AF_UNIX)
    try:
        late.bind(str(private / "xsub.sock"))  # a restarted broker binds anew
        # It inherits the default grant, but masked by the binder's umask: no write yet.
        assert acl.granted(private / "xsub.sock", NOBODY) in (0o4, 0o6)
        grants.refresh(1.0)
        assert acl.granted(private / "xsub.sock", NOBODY) == 0o6
    finally:
        late.close()
    secret = private / "supervisor.pid"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # as rundir writes its private files
    os.close(fd)
    assert acl.granted(secret, NOBODY) == 0


def test_clear_removes_every_grant(private: Path) -> None:
    grant_run_dir(private, NOBODY)
    acl.clear(private, 0o700)
    assert acl.granted(private, NOBODY) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_a_run_directory_left_with_grants_is_made_private_again(private: Path) -> None:
    run_dir = RunDir(Path("/some/config"), base=private)
    run_dir.prepare()
    grant_run_dir(run_dir.path, NOBODY)  # a supervisor that was then SIGKILLed
    run_dir.prepare()
    assert acl.granted(run_dir.path, NOBODY) == 0
    assert stat.S_IMODE(run_dir.path.stat().st_mode) == 0o700


def test_a_running_supervisors_grants_do_not_make_its_run_directory_unsafe(private: Path) -> None:
    run_dir = RunDir(Path("/some/config"), base=private)
    run_dir.acquire()  # it holds the lock: its grants stay
    try:
        grant_run_dir(run_dir.path, NOBODY)
        run_dir.prepare()  # as a second `up` checks it
        assert acl.granted(run_dir.path, NOBODY) == 0o1
        os.chmod(run_dir.path, 0o711)  # others let through as well as the grant: unsafe
        with pytest.raises(UnsafeRunDirError):
            run_dir.prepare()
        acl.clear(run_dir.path, 0o750)  # its group let in: unsafe
        with pytest.raises(UnsafeRunDirError):
            run_dir.prepare()
    finally:
        run_dir.release()
