"""The run directory of one supervisor: its sockets, pid file and lock, owner-only.

One run directory per config directory, derived from the config directory's real path, so that the
CLI finds the supervisor of the config it was given. The lock is held for the supervisor's whole life:
a lock nobody holds means any leftovers are stale (a supervisor that was SIGKILLed), safe to remove.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import acl
from orchestrator.regular_file import NotRegularFileError, open_regular

_SUN_PATH_MAX = 107  # an ipc:// socket path must fit in sockaddr_un
_LONGEST_SOCKET = "control.sock"
_RUN_DIR_TAIL = len(f"/{0:016x}/{_LONGEST_SOCKET}")  # what a run base's path gets appended
_PID_WAIT = 2.0  # seconds a reader waits for the lock holder's pid file
_ACQUIRE_WAIT = 0.5  # seconds a new supervisor retries a lock held only by readers


class AlreadyRunningError(RuntimeError):
    """Another supervisor holds the lock of this run directory."""

    def __init__(self, pid: int | None) -> None:
        self.which = f"pid {pid}" if pid is not None and pid > 0 else "its pid not known yet"
        super().__init__(f"a supervisor is already running for this config ({self.which})")
        self.pid = pid


class RunBaseError(ValueError):
    """No run directory can be made where the environment says (`ORCHESTRATOR_RUN_BASE`, say):
    its sockets' paths would be too long, or it is relative to a directory that is gone."""


class RunDir:
    """Paths of one run directory, and its lock."""

    def __init__(self, config_dir: Path, base: Path | None = None) -> None:
        # Bytes as the file system has them: a name that is not UTF-8 has no str encoding.
        key = f"{_fnv1a_64(os.fsencode(config_dir.resolve())):016x}"
        source = "the run directory's base"
        if base is None:
            source = "ORCHESTRATOR_RUN_BASE"
            base = Path(os.environ.get(source) or _default_base())
        # Absolute once, here: modules run in their project's directory, and the supervisor hands
        # them these paths (a relative one would name a place none of them can reach).
        try:
            self.path = (base if base.is_absolute() else Path(os.path.abspath(base))) / key
        except FileNotFoundError:
            raise RunBaseError(
                f"{source} ({base}) is relative, and the current directory no longer exists;"
                " cd elsewhere, or make it absolute"
            ) from None
        # Names this run (config and run base) in shared places, like the cgroup tree.
        self.key = f"{_fnv1a_64(os.fsencode(self.path)):016x}"
        self._lock_fd: int | None = None
        self._checked_at = 0.0  # monotonic: when `intact` last looked
        if len(os.fsencode(self.path / _LONGEST_SOCKET)) > _SUN_PATH_MAX:
            raise RunBaseError(
                f"{source} ({self.path.parent}): too long for the run directory's ipc sockets (at most"
                f" {_SUN_PATH_MAX - _RUN_DIR_TAIL} bytes); choose a shorter directory"
            )
        if not _is_text(str(self.path)):  # ZeroMQ endpoints are UTF-8 text
            shown = os.fsencode(self.path.parent).decode(errors="backslashreplace")
            raise RunBaseError(
                f"{source} ({shown}): not valid UTF-8, which the run directory's socket addresses"
                " must be; choose another directory"
            )

    @property
    def control(self) -> str:
        """The control socket endpoint (CLI requests)."""
        return f"ipc://{self.path / 'control.sock'}"

    @property
    def child_channel(self) -> str:
        """The child-channel endpoint (hello / ready / heartbeats)."""
        return f"ipc://{self.path / 'child.sock'}"

    @property
    def xsub(self) -> str:
        """Where publishers connect, for an ipc bus."""
        return f"ipc://{self.path / 'xsub.sock'}"

    @property
    def xpub(self) -> str:
        """Where subscribers connect, for an ipc bus."""
        return f"ipc://{self.path / 'xpub.sock'}"

    @property
    def groups(self) -> str:
        """Where the members of subscription groups reach the broker, for an ipc bus."""
        return f"ipc://{self.path / 'groups.sock'}"

    @property
    def inject(self) -> str:
        """Where the supervisor hands the broker its own events (it holds no subscriptions)."""
        return f"ipc://{self.path / 'inject.sock'}"

    @property
    def pid_file(self) -> Path:
        return self.path / "supervisor.pid"

    @property
    def daemon_output(self) -> Path:
        """Where a detached supervisor's own stdout and stderr go, for `up -d` to show on failure."""
        return self.path / "supervisor.out"

    def prepare(self) -> None:
        """Create the directory (mode 0700) if needed, in a base directory that must be ours, and
        the daemon's output file in it (0600, whatever the umask, for whoever opens it next).

        A base in a shared place like /tmp that another user created first, or made a symlink,
        could hand our sockets to them: refuse it.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(self.path.parent)
        self.path.mkdir(mode=0o700, exist_ok=True)
        if self._lock_fd is None and self.running_pid() is None and _owned_dir(self.path):
            acl.clear(self.path, 0o700)  # left by a killed run that let a module user in
        _check_private(self.path)
        for name in ("supervisor.lock", "supervisor.pid"):
            _check_regular(self.path / name)
        _write_private(self.daemon_output, b"", append=True)

    def acquire(self) -> None:
        """Take the lock for this process's life, clear stale files and write the pid file.

        Raises AlreadyRunningError if a live supervisor holds it.
        """
        self.prepare()
        fd = open_run_file(self.path / "supervisor.lock", os.O_RDWR | os.O_CREAT)
        holder: int | None = None

        def supervisor_holds() -> bool:
            nonlocal holder
            holder = self.running_pid()
            return holder is not None

        try:
            locked = lock_exclusive(fd, _ACQUIRE_WAIT, supervisor_holds)
        except OSError:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            raise AlreadyRunningError(holder)
        self._lock_fd = fd
        for stale in self.path.glob("*.sock"):
            stale.unlink(missing_ok=True)
        # Written whole, then renamed: a reader sees the old file or the new one, never half.
        fresh = self.path / "supervisor.pid.new"
        try:
            _write_private(fresh, f"{os.getpid()}\n".encode())
            os.replace(fresh, self.pid_file)
        except OSError:  # a full file system: as if never taken
            fresh.unlink(missing_ok=True)
            self._lock_fd = None
            os.close(fd)
            raise

    def intact(self, now: float) -> bool:
        """Whether the lock this process holds is still the run directory's (checked once a
        second, `now` monotonic). A tmp cleaner, or logind at logout, may remove the directory:
        then no command reaches this supervisor, and `up` would start a second one beside it."""
        if self._lock_fd is None or now < self._checked_at + 1.0:
            return True
        self._checked_at = now
        held = os.fstat(self._lock_fd)
        try:
            found = os.stat(self.path / "supervisor.lock")
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)

    def running_pid(self) -> int | None:
        """The pid of the supervisor holding the lock, or None if no supervisor is running.

        A supervisor that has just taken the lock writes its pid file a moment later, over the
        file of one that was killed: until it has, wait for it (up to `_PID_WAIT` seconds, then
        -1), so that two `up` started at once name the one that won, not a dead one.
        """
        lock = self.path / "supervisor.lock"
        if self._lock_fd is not None:
            return os.getpid()
        try:
            fd = open_run_file(lock, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, UnsafeRunDirError):
            return None  # no supervisor of ours locks anything but the regular file it made
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return self._holder_pid()
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def stale_pid(self) -> tuple[int, float] | None:
        """What a supervisor that stopped without `down` (SIGKILL, the OOM killer) left behind:
        (its pid, when it started: its pid file's time), or None if one runs now or the last one
        stopped cleanly (it removes this directory). Read before a new supervisor takes over."""
        if self.running_pid() is not None:
            return None
        try:
            with os.fdopen(open_run_file(self.pid_file, os.O_RDONLY), "rb") as pid_file:
                return int(pid_file.read(64).strip()), os.fstat(pid_file.fileno()).st_mtime
        except (OSError, ValueError, UnsafeRunDirError):
            return None

    def _holder_pid(self) -> int:
        """The pid in the pid file once it names a live process, or -1 if it does not in time."""
        deadline = time.monotonic() + _PID_WAIT
        while True:
            with (
                contextlib.suppress(OSError, ValueError, UnsafeRunDirError),
                os.fdopen(open_run_file(self.pid_file, os.O_RDONLY), "rb") as pid_file,
            ):
                pid = int(pid_file.read(64).strip())
                if pid > 0 and process_alive(pid):
                    return pid
            if time.monotonic() >= deadline:
                return -1
            time.sleep(0.005)

    def release(self) -> None:
        """Remove the directory and drop the lock (the supervisor's last act)."""
        import shutil  # noqa: PLC0415  (here: with bz2 and lzma, half a MB the supervisor keeps)

        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _fnv1a_64(data: bytes) -> int:
    """A 64-bit FNV-1a hash: a stable key for a path, without loading hashlib's OpenSSL (several
    MB in the long-lived supervisor). Not for security: the lock guards the directory."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (ours or not: EPERM means it does). A zombie does not: a
    killed supervisor's process is reparented, and may wait a while to be reaped by an init
    that is slow to (a container's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: it exists, as kill() said


def process_stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (SIGSTOP, a debugger): it cannot answer until resumed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[-1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


def open_run_file(path: Path, flags: int) -> int:
    """`os.open` of a file of the run directory (created 0600): a FIFO, a device or a link put in
    its place (by a module running as us, say) raises UnsafeRunDirError, naming it, instead of
    holding the CLI or the supervisor until someone opens its other end."""
    try:
        return open_regular(path, flags | os.O_NOFOLLOW, 0o600)
    except NotRegularFileError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENXIO, errno.ELOOP):  # ENXIO: a FIFO nobody reads
            raise
    raise UnsafeRunDirError(_NOT_REGULAR.format(path=path))


_NOT_REGULAR = "{path}: not a regular file (a FIFO, a device or a link); remove it"


def _check_regular(path: Path) -> None:
    """Raise UnsafeRunDirError if `path` exists and is not a regular file."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeRunDirError(_NOT_REGULAR.format(path=path))


def _write_private(path: Path, data: bytes, *, append: bool = False) -> None:
    """Write `data` to `path`, created (or made) owner-only: 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = open_run_file(path, flags)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


class UnsafeRunDirError(RuntimeError):
    """The run directory (or its base) is not a private directory of ours."""


def _owned_dir(path: Path) -> bool:
    info = path.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _check_private(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeRunDirError(f"{path}: expected a directory, found a link or a file")
    if info.st_uid != os.getuid():
        raise UnsafeRunDirError(f"{path}: owned by uid {info.st_uid}, not by us ({os.getuid()})")
    if info.st_mode & 0o077 and not acl.only_users_named(path):  # a running supervisor's grants
        raise UnsafeRunDirError(
            f"{path}: mode {stat.S_IMODE(info.st_mode):o} lets others in; expected 700"
        )


def lock_exclusive(fd: int, wait: float, held: Callable[[], bool] = lambda: False) -> bool:
    """Lock `fd` exclusively; False if another holds it still after `wait` seconds, or sooner
    once `held()` says the holder is a supervisor. A CLI asking who holds a lock holds it
    shared for a moment: that is no supervisor, so it is tried again meanwhile. Raises OSError
    for another failure."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if held() or time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def _default_base() -> str:
    """$XDG_RUNTIME_DIR/orchestrator, else orchestrator-<uid> in $TMPDIR or /tmp (as tmux and
    ssh-agent do; tempfile.gettempdir would cost the supervisor shutil, bz2 and lzma)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if (
        runtime
        and os.path.isabs(runtime)
        and os.path.isdir(runtime)
        and _fits(runtime, 39)
        and _is_text(runtime)
    ):
        return os.path.join(runtime, "orchestrator")
    temp = os.environ.get("TMPDIR") or "/tmp"
    try:
        temp = os.path.abspath(temp)
    except FileNotFoundError:  # relative, in a working directory that is gone
        temp = "/tmp"
    user = f"orchestrator-{os.getuid()}"
    usable = os.path.isdir(temp) and os.access(temp, os.W_OK | os.X_OK)
    fits = _fits(os.path.join(temp, user), _SUN_PATH_MAX - _RUN_DIR_TAIL)
    if not (usable and fits and _is_text(temp)):
        temp = "/tmp"  # the per-user directory in it is checked to be private
    return os.path.join(temp, user)


def _is_text(path: str) -> bool:
    """Whether `path` is valid UTF-8 (not bytes kept as surrogate escapes)."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fits(path: str, size: int) -> bool:
    """Whether `path` takes at most `size` bytes (as a socket address holds it)."""
    return len(os.fsencode(path)) <= size
