"""What a webhook receives and what its log lines may show: the JSON body of one notification, with
every string scrubbed of secrets, and URLs cut down to `scheme://host/path`."""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from orchestrator.config.redact import MASK, Redactor, is_secret_key

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_TEXT_LIMIT = 200


def display_url(url: str, redactor: Redactor) -> str:
    """`url` as logs may show it: scheme, host, port and path; never the user info, the query string
    or the fragment (they may hold tokens), and scrubbed of secrets. Where a secret reaches into the
    path, it shows `scheme://host/***`, and `scheme://***` where it reaches into the host: cut
    down, a secret would no longer be found whole, and its pieces would show (a `${HOOK_URL}`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a malformed port or host: show no more than the scheme
        return redactor.scrub(f"{url.split(':', 1)[0]}://?")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    hidden = _hidden_parts(url, redactor)
    if "origin" in hidden:
        return f"{redactor.scrub(parts.scheme)}://{MASK}"
    if "path" in hidden:
        return f"{parts.scheme}://{host}{port}/{MASK}"
    return redactor.scrub(f"{parts.scheme}://{host}{port}{parts.path}")


def _hidden_parts(url: str, redactor: Redactor) -> set[str]:
    """Which shown parts of `url` a secret reaches into, wholly or in part: "origin" (its scheme,
    host and port) and "path". Its user info, query and fragment are never shown."""
    spans = redactor.spans(url)
    if not spans:
        return set()
    scheme, _, rest = url.partition("://")
    after_scheme = len(scheme) + 3
    netloc_end = after_scheme + _first_of(rest, "/?#")
    host_start = url.rfind("@", after_scheme, netloc_end) + 1 or after_scheme
    path_end = netloc_end + _first_of(url[netloc_end:], "?#")
    shown = {
        "origin": ((0, len(scheme)), (host_start, netloc_end)),
        "path": ((netloc_end, path_end),),
    }
    return {
        part
        for part, ranges in shown.items()
        if any(start < end and begin < stop for start, stop in spans for begin, end in ranges)
    }


def _first_of(text: str, characters: str) -> int:
    """The index of the first of `characters` in `text`, or its length."""
    return min((i for i in map(text.find, characters) if i >= 0), default=len(text))


def safe_text(text: str, redactor: Redactor) -> str:
    """`text` (an error message, say) fit for a log line: URLs in it cut down as `display_url`
    does, secrets scrubbed, at most 200 characters."""
    text = _URL.sub(lambda match: display_url(match.group(0), redactor), text)
    text = redactor.scrub(text)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 3] + "..."


def clean(obj: Any, redactor: Redactor) -> Any:
    """A JSON-ready copy of `obj` in which no secret survives: strings are scrubbed (a string that
    is a whole secret becomes `***`, even a short one), values under secret-looking keys are
    masked, and anything JSON cannot carry (bytes, sets, objects) becomes a scrubbed string."""
    if isinstance(obj, str):
        return redactor.redact(redactor.scrub(obj))
    if obj is None or isinstance(obj, bool | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {
            clean(str(key), redactor): MASK
            if is_secret_key(key) and _present(value)
            else clean(value, redactor)
            for key, value in obj.items()
        }
    if isinstance(obj, list | tuple | set | frozenset):
        return [clean(value, redactor) for value in obj]
    if isinstance(obj, bytes | bytearray):
        return clean(bytes(obj).decode("utf-8", "replace"), redactor)
    return clean(str(obj), redactor)


def _present(value: Any) -> bool:
    return value is not None and value not in ("", {}, [])


@dataclass
class Notice:
    """One event to deliver, as `notify()` captured it; the body is built (and scrubbed) once, on
    the worker thread, then shared by every webhook that wants it."""

    event: str
    data: dict[str, Any]
    log_tail: list[str]
    time: float
    _body: bytes | None = field(default=None, repr=False)

    def body(self, app_name: str, redactor: Redactor) -> bytes:
        """The JSON payload: event, module, host, time, app, data, log_tail."""
        if self._body is None:
            name = self.data.get("name")
            payload = {
                "event": self.event,
                "module": name if isinstance(name, str) else None,
                "host": socket.gethostname(),
                "time": self.time,
                "app": app_name,
                "data": self.data,
                "log_tail": self.log_tail,
            }
            self._body = json.dumps(clean(payload, redactor), ensure_ascii=False).encode()
        return self._body
