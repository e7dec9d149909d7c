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
    or the fragment (they may hold tokens), and scrubbed of secrets. Each of host, port and path
    that a secret reaches into shows as `***` (cut down, a secret would no longer be found whole,
    and its pieces would show): `http://***:8001/hook` for a `${HOOKHOST}`,
    `https://hooks.example/***` for a token in the path, `https://***` for a whole `${HOOK_URL}`.
    The parts no secret touches stay, so that webhooks behind one secret host stay apart."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a malformed port or host: show no more than the scheme
        return redactor.scrub(f"{url.split(':', 1)[0]}://?")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    path = parts.path
    hidden = _hidden_parts(url, redactor)
    if "host" in hidden:
        host = MASK
        if "port" in hidden:
            port = ""  # one mask for both
    elif "port" in hidden:
        port = f":{MASK}"
    if "path" in hidden:
        path = "" if "host" in hidden and not port else f"/{MASK}"  # all of it: one mask
    return redactor.scrub(f"{parts.scheme}://{host}{port}{path}")


def _hidden_parts(url: str, redactor: Redactor) -> set[str]:
    """Which shown parts of `url` a secret reaches into, wholly or in part: "host", "port" (with
    its colon) and "path". Its user info, query and fragment are never shown, and its scheme
    always is."""
    spans = redactor.spans(url)
    if not spans:
        return set()
    scheme, _, rest = url.partition("://")
    after_scheme = len(scheme) + 3
    netloc_end = after_scheme + _first_of(rest, "/?#")
    host_start = url.rfind("@", after_scheme, netloc_end) + 1 or after_scheme
    bracket = url.find("]", host_start, netloc_end)  # the end of an IPv6 address
    colon = url.find(":", bracket + 1 if bracket >= 0 else host_start, netloc_end)
    host_end = colon if colon >= 0 else netloc_end
    path_end = netloc_end + _first_of(url[netloc_end:], "?#")
    shown = {
        "host": (host_start, host_end),
        "port": (host_end, netloc_end),
        "path": (netloc_end, path_end),
    }
    return {
        part
        for part, (begin, end) in shown.items()
        if begin < end and any(start < end and begin < stop for start, stop in spans)
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
