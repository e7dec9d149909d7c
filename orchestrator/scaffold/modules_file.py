"""Adding one entry to the `modules:` list of `modules.yaml`, keeping the user's comments and
layout: a text edit, checked by parsing the result."""

from __future__ import annotations

import re
from typing import Any

import yaml

from orchestrator.config.yamlfile import load_yaml
from orchestrator.scaffold.module import entry_text

_MODULES_LINE = re.compile(r"^modules[ \t]*:[^\n]*(?:\n|$)", re.MULTILINE)
_ITEM = re.compile(r"^([ \t]*)- ", re.MULTILINE)


class CannotEditError(ValueError):
    """The file's layout is one this edit does not handle (a flow-style list, say); the entry is to
    be added by hand."""


def with_entry(text: str, entry: dict[str, Any]) -> str:
    """`text` (modules.yaml) with `entry` appended to its `modules:` list.

    Handles an empty file (or comments only), `modules:` with nothing after it, `modules: []`, and
    a block list at any indentation. Raises `CannotEditError` when the result would not parse to
    the same list plus `entry` (a flow-style list, a list that is not last in the file, ...), and
    `yaml.YAMLError` when `text` itself is not valid YAML.
    """
    data = load_yaml(text) or {}
    if not isinstance(data, dict):
        raise CannotEditError("its top level is not a mapping")
    modules = data.get("modules")
    if modules is not None and not isinstance(modules, list):
        raise CannotEditError("`modules:` is not a list")
    match = _MODULES_LINE.search(text)
    if not modules:  # no key, `modules:` (null) or `modules: []`
        block = "modules:\n" + entry_text(entry)
        if match is None:
            edited = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
        else:
            edited = text[: match.start()] + block + text[match.end() :]
    else:
        after = _ITEM.search(text, match.end()) if match is not None else None
        indent = after.group(1) if after is not None else "  "  # the list's own indentation
        edited = text.rstrip("\n") + "\n\n" + entry_text(entry, indent)
    try:
        result = load_yaml(edited)
    except yaml.YAMLError:
        result = None
    expected = {**data, "modules": [*(modules or []), entry]}
    if result != expected:
        raise CannotEditError("its `modules:` list is laid out in a way this edit cannot extend")
    return edited
