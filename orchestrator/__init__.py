"""orchestrator: a multiprocess supervisor for Python modules joined by a ZeroMQ bus."""

__version__ = "0.1.0"
