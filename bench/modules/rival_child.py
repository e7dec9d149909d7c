"""The child that supervisord and Circus run in bench/rivals.py: a Python process with what an
orchestrator module process has loaded (zmq, msgpack), waiting until it is killed."""

import signal

import msgpack  # noqa: F401
import zmq  # noqa: F401

signal.pause()
