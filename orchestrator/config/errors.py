"""The one exception configuration loading raises."""

from __future__ import annotations

MAX_MESSAGE = 600  # room for the list of a module entry's keys
"""Characters of a message shown; a longer one (it quotes a long value) is cut in the middle."""
MAX_LOCATION = 200
"""Characters of a location shown (a location is made of the file's keys, which can be long)."""


class ConfigError(Exception):
    """A problem in a configuration file, rendered as ONE line: `{file}: {location}: {message}`.

    `file` is the path as the caller gave it (e.g. `config/modules.yaml`), `location` a dotted path
    into the document (e.g. `modules[2].max_restarts`, or `line 3, column 5`; may be empty), and
    `message` what is wrong (e.g. `expected an integer >= 0, got 'three'`).

    `message` is kept exactly as written, quoted values whole, so that secrets can be scrubbed out
    of it (`with_message`) before anything alters it: only `str()` makes it one line (control
    characters escaped) and cuts what is too long.

    `derived` is `(shown, value)` when `message` shows `shown`, made from `value` as written (a
    path normalised from it): a secret in `value` need not be whole in `shown` (`a/../SECRET`
    shows as `.../SECRET`), so scrubbing cannot find it; whoever knows the secrets hides all of
    `shown` when `value` holds one.
    """

    def __init__(
        self, file: str, location: str, message: str, *, derived: tuple[str, str] | None = None
    ) -> None:
        super().__init__(file, location, message)
        self.file = file
        self.location = location
        self.message = message
        self.derived = derived

    def __str__(self) -> str:
        message = one_line(self.message, MAX_MESSAGE)
        if self.location:
            return f"{self.file}: {one_line(self.location, MAX_LOCATION)}: {message}"
        return f"{self.file}: {message}"

    def with_message(self, message: str) -> ConfigError:
        """A copy of this error with another message (used to scrub secrets out of it)."""
        return ConfigError(self.file, self.location, message)


def one_line(text: str, limit: int) -> str:
    """`text` for display on one line: at most `limit` characters of it (the middle cut out, so that
    both ends stay readable), then each non-printable character escaped as Python would."""
    if len(text) > limit:
        head = (limit - 3) * 3 // 4
        text = text[:head] + "..." + text[len(text) - (limit - 3 - head) :]
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
