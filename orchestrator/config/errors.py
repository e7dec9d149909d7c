"""The one exception configuration loading raises."""

from __future__ import annotations


class ConfigError(Exception):
    """A problem in a configuration file, rendered as ONE line: `{file}: {location}: {message}`.

    `file` is the path as the caller gave it (e.g. `config/modules.yaml`), `location` a dotted path
    into the document (e.g. `modules[2].max_restarts`, or `line 3, column 5`; may be empty), and
    `message` what is wrong (e.g. `expected an integer >= 0, got 'three'`).
    """

    def __init__(self, file: str, location: str, message: str) -> None:
        self.file = file
        self.location = location
        self.message = " ".join(message.splitlines())
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.location:
            return f"{self.file}: {self.location}: {self.message}"
        return f"{self.file}: {self.message}"

    def with_message(self, message: str) -> ConfigError:
        """A copy of this error with another message (used to scrub secrets out of it)."""
        return ConfigError(self.file, self.location, message)
