"""The module's end of the lifeline: end-of-file only when the supervisor is gone, and never
another file that took its descriptor's number."""

from __future__ import annotations

import os

from module_sdk.lifeline import Lifeline


def test_open_while_the_writer_lives_and_gone_once_it_closes() -> None:
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end)
    try:
        assert lifeline.check() is False
        os.close(write_end)
        assert lifeline.check() is True
    finally:
        os.close(read_end)


def test_a_closed_descriptor_is_a_lost_lifeline() -> None:
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end)
    os.close(read_end)
    try:
        assert lifeline.check() is None
    finally:
        os.close(write_end)


def test_another_file_under_its_number_is_a_lost_lifeline_and_is_not_read() -> None:
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end)
    os.close(read_end)
    other_read, other_write = os.pipe()
    if other_read != read_end:  # the lowest free number: usually the lifeline's already
        os.dup2(other_read, read_end)
    os.write(other_write, b"mine")  # the module's own pipe, readable, under the lifeline's number
    try:
        assert lifeline.check() is None
        assert os.read(read_end, 4) == b"mine"  # nothing of it consumed
    finally:
        for fd in {read_end, write_end, other_read, other_write}:
            os.close(fd)
