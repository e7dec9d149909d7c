"""Reading one YAML file within bounds: its size, its nesting, and what its aliases expand to.

PyYAML shares the node (and the object) an alias points at, so composing a "billion laughs"
document is quick; what walks the tree afterwards (interpolation, validation, redaction, copies)
pays for every reference, exponentially. `BoundedLoader` measures the composed document as if
every alias were expanded (an alias counts its anchor's whole subtree each time it is used), in
time linear in the file, and refuses it past a bound before anything is constructed. It also
refuses a mapping that repeats a key, which YAML forbids and PyYAML would resolve silently (the
last wins). It uses libyaml's parser when PyYAML has it (eight times faster), as `yaml.CSafeLoader`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.error import MarkedYAMLError
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 128 * 1024
"""A config file larger than this is refused unread. Real ones are a few kilobytes; parsing this
much can already keep the loop a second on a busy machine (see README, failure modes)."""
MAX_NODES = 50_000
"""Nodes a document may have once every alias is expanded: a hundred times what real configs
with anchors have, and few enough that walking the tree takes a fraction of a second."""
MAX_CHARS = 1024 * 1024
"""Characters its values may add up to once every alias is expanded (and, in `interpolate`, with
every `${VAR}` filled in)."""
MAX_DEPTH = 64
"""Levels of nested collections (deep enough for any config, far from the recursion limit of the
walks that follow)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"

if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RefusedYAMLError(MarkedYAMLError):
    """Well-formed YAML that is refused: over a bound, or repeating a key. `problem` says why and
    `problem_mark` (which may be None) where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file `path`; `ValueError` if it is larger than `limit` bytes
    (without reading more than that) or not a regular file. `OSError` and `UnicodeDecodeError` as
    reading raises them."""
    # O_NONBLOCK: opening a FIFO put in the file's place must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:  # the type is told before `fdopen`, which raises for a directory and leaves fd open
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise ValueError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.decode("utf-8")


TextPath = tuple[str | None, ...]
"""Where in a document a value is read as the text written (`load_yaml`'s `as_text`): mapping
keys, with None for any key or any item of a list: `("modules", None, "umask")`."""

_TYPED_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool", "timestamp")
)
_STR_TAG = "tag:yaml.org,2002:str"


def load_yaml(text: str, as_text: tuple[TextPath, ...] = ()) -> Any:
    """The one document in `text` (None if empty), within the bounds above. Raises
    `RefusedYAMLError` past a bound or on a repeated key, other `yaml.YAMLError`s on bad syntax.

    An unquoted number, boolean or date at one of the places `as_text` names is the string
    written, not what YAML 1.1 makes of it (`0644` is 420, `1.10` is 1.1, `12:30` is 750): where
    only a string makes sense, an environment variable's value or a umask, the text is what the
    user meant."""
    loader = BoundedLoader(text, as_text)
    try:
        return loader.get_single_data()
    except RecursionError:  # the pure-Python composer recurses per level (libyaml stops at 1000)
        raise RefusedYAMLError(f"collections nested more than {MAX_DEPTH} deep", None) from None
    except _CONSTRUCTOR_ERRORS as exc:  # one `construct_object` did not catch: without a place
        raise RefusedYAMLError(f"a value YAML cannot read: {exc}", None) from None
    finally:
        loader.dispose()


class BoundedLoader(_SafeLoader):
    """A safe loader that refuses a document past `MAX_NODES`, `MAX_CHARS` or `MAX_DEPTH` with its
    aliases expanded, and a mapping that repeats a key."""

    def __init__(self, stream: str, as_text: tuple[TextPath, ...] = ()) -> None:
        super().__init__(stream)
        self._own_keys: dict[int, list[Node]] = {}  # id(mapping) -> its keys as written
        self._as_text = as_text

    def construct_document(self, node: Node) -> Any:
        """Measure the composed document, then construct it as SafeLoader does (with the
        scalars `as_text` names as strings)."""
        self._measure(node)
        for path in self._as_text:
            node = self._keep_text(node, path)
        return super().construct_document(node)

    def _keep_text(self, node: Node, path: TextPath) -> Node:
        """`node`, or a copy of it with the nodes `path` leads to within it copied too, each
        plain scalar there that YAML would read as a number, boolean or date replaced by a
        string of its text. Copies, never changed in place: an alias of a node elsewhere (`env:
        *c` with `config: &c {PORT: 8080}`) keeps its types there."""
        if not path:  # plain: style None, or '' from libyaml
            if isinstance(node, ScalarNode) and not node.style and node.tag in _TYPED_TAGS:
                return ScalarNode(_STR_TAG, node.value, node.start_mark, node.end_mark)
            return node
        head, rest = path[0], path[1:]
        if isinstance(node, SequenceNode) and head is None:
            items = [self._keep_text(value, rest) for value in node.value]
            return SequenceNode(node.tag, items, node.start_mark, node.end_mark, node.flow_style)
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)  # the keys merged in with `<<: *x` count, as they will
            pairs = [
                (key, self._keep_text(value, rest) if _matches(key, head) else value)
                for key, value in node.value
            ]
            copy = MappingNode(node.tag, pairs, node.start_mark, node.end_mark, node.flow_style)
            self._own_keys[id(copy)] = self._own_keys.get(id(node), [])
            return copy
        return node

    def _measure(self, root: Node) -> None:
        """Walk each distinct node once (iteratively: no recursion), computing bottom-up the size
        of its subtree with aliases expanded; refuse at the first node whose subtree is too big,
        too deep, or contains the node itself."""
        sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, characters, depth)
        open_nodes: set[int] = set()  # entered, not yet measured: the path from the root
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            if children_done:
                open_nodes.discard(key)
                sizes[key] = self._size(node, sizes)
                continue
            if key in sizes:
                continue  # used again through an alias: measured already
            if key in open_nodes:
                raise RefusedYAMLError("this value contains an alias to itself", node.start_mark)
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
            if isinstance(node, MappingNode):
                self._own_keys[key] = [k for k, _ in node.value if k.tag != _MERGE_TAG]

    @staticmethod
    def _size(node: Node, sizes: dict[int, tuple[int, int, int]]) -> tuple[int, int, int]:
        if isinstance(node, ScalarNode):
            return 1, len(node.value), 0
        nodes, chars, depth = 1, 0, 0
        for child in _children(node):
            child_nodes, child_chars, child_depth = sizes[id(child)]
            nodes += child_nodes
            chars += child_chars
            depth = max(depth, child_depth)
        depth += 1
        if depth > MAX_DEPTH:
            problem = f"this value nests collections more than {MAX_DEPTH} deep"
        elif nodes > MAX_NODES:
            problem = f"this value expands to more than {MAX_NODES} nodes"
        elif chars > MAX_CHARS:
            problem = f"this value expands to more than {MAX_CHARS} characters"
        else:
            return nodes, chars, depth
        # With aliases, a value is as large as it would be with each of them copied out.
        raise RefusedYAMLError(f"{problem} (aliases counted as copies)", node.start_mark)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """As SafeLoader does, but a value its constructor cannot read (a date that does not
        exist, an integer of more than 4300 digits, `!!int x`) is refused where it is written:
        SafeLoader raises the constructor's own ValueError, KeyError or AttributeError, which a
        reader of config expects no more than the user expects a traceback."""
        try:
            value = super().construct_object(node, deep=deep)
        except _CONSTRUCTOR_ERRORS as exc:
            raise RefusedYAMLError(_unreadable(node, exc), node.start_mark) from None
        # `0x` and `0b` integers have no bound on their length, and what cannot be shown as
        # decimal raises in every error message that shows it.
        if type(value) is int and value.bit_length() > _MAX_INT_BITS:
            raise RefusedYAMLError(_TOO_LONG, node.start_mark)
        return value

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """As SafeLoader does, refusing a key written twice in the mapping (keys merged in with
        `<<: *x` may be overridden, as YAML's merge key says)."""
        seen: dict[Any, Node] = {}
        for key_node in self._own_keys.get(id(node), ()):
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable: SafeLoader refuses it with its own message
                continue
            if first is not key_node:
                line = first.start_mark.line + 1
                raise RefusedYAMLError(
                    f"duplicate key {_show(key)} (first at line {line})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_TOO_LONG = "an integer of more than 4300 digits"
_MAX_INT_BITS = 14_000  # about 4300 decimal digits: CPython's bound on int <-> str

# What SafeLoader's constructors raise on a value they cannot read, besides YAMLError.
_CONSTRUCTOR_ERRORS = (ValueError, TypeError, LookupError, AttributeError, OverflowError)


def _unreadable(node: Node, exc: Exception) -> str:
    """Why the value at `node` cannot be read, in a user's words."""
    kind = str(node.tag).rpartition(":")[2] or "value"
    if kind == "int" and "digits" in str(exc):  # CPython's bound on int(str)
        return _TOO_LONG
    if isinstance(node, ScalarNode):
        return f"cannot read {_show(node.value)} as {kind}"
    return f"cannot read this {kind}: {exc}"


def _matches(key: Node, head: str | None) -> bool:
    return head is None or (isinstance(key, ScalarNode) and key.value == head)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, CollectionNode):
        return list(node.value)
    return []


def _show(key: Any) -> str:
    text = repr(key)  # keys are never interpolated, so never a secret
    return text if len(text) <= 80 else text[:77] + "..."
