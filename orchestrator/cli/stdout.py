"""Whether anyone still reads what a long-running command (`logs -f`, `events`) writes."""

from __future__ import annotations

import os
import select


def reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (`... -f | grep -q x` after the match,
    `| head -0`): a command that writes only when something happens would otherwise learn it
    at its next write, never on a quiet log or bus. GNU tail -f asks the same way."""
    poller = select.poll()
    poller.register(1, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def stop_writing() -> None:
    """Point stdout at /dev/null: its reader is gone, and Python's last flush would fail."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
