"""What goes with a request to the fork server's template (orchestrator/forkserver.py): a
module's environment in a memfd of its own, and requests cut into batches one message carries;
and what comes back when a fork fails: the errors, told apart by who is at fault."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

import msgpack

from module_sdk.protocol import FORK_BATCH_MAX


def environment_file(env: Mapping[str, str]) -> int:
    """A memfd (close-on-exec) holding `env` as a msgpack map, for the forked process to read:
    only it ever does."""
    fd = os.memfd_create("module-env", os.MFD_CLOEXEC)
    try:
        data = memoryview(msgpack.packb(dict(env)))
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def batches(entries: list[dict[str, object]], budget: int) -> list[list[dict[str, object]]]:
    """`entries` in order, cut where a batch would exceed `FORK_BATCH_MAX` pipes or `budget`
    bytes (an entry larger than that goes alone)."""
    batches: list[list[dict[str, object]]] = []
    size = 0
    for entry in entries:
        length = len(msgpack.packb(entry))
        if not batches or len(batches[-1]) >= FORK_BATCH_MAX or size + length > budget:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += length
    return batches


# The OS's refusals of a new process that are the host's condition for a while, neither the
# template's fault nor the module's: no task slot left (a pids cgroup, TasksMax, RLIMIT_NPROC),
# no memory. A spawn would be refused the same way.
HOST_REFUSALS = frozenset({errno.EAGAIN, errno.ENOMEM})


class ForkServerError(RuntimeError):
    """The template could not fork a module process."""


class ForkServerBootingError(ForkServerError):
    """A template started to replace one that died has not said ready yet: spawn instead."""


class ForkRefusedError(ForkServerError):
    """The OS refused the fork (`HOST_REFUSALS`): the template is fine, and a spawn would be
    refused too."""

    def __init__(self, code: int) -> None:
        super().__init__(f"cannot fork: {os.strerror(code)}")
        self.errno = code

    def as_os_error(self) -> OSError:
        """The refusal as the OSError a spawn would have raised."""
        return OSError(self.errno, os.strerror(self.errno))


def refused(code: object) -> ForkRefusedError | None:
    """The refusal an errno (from the template's answer, or an OSError) stands for, if it is
    one of the host's."""
    return ForkRefusedError(code) if isinstance(code, int) and code in HOST_REFUSALS else None


def failure(answer: object) -> ForkServerError:
    """The error a template's answer without a process says: ForkRefusedError if it carries
    the OS's refusal of the fork (`errno`), else what it says."""
    if not isinstance(answer, dict):
        return ForkServerError(str(answer))
    return refused(answer.get("errno")) or ForkServerError(str(answer.get("error")))
