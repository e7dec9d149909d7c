"""`@record`: a frozen dataclass that costs nothing to define.

`@dataclass` compiles source text for each class it makes (`__init__`, `__repr__`, `__eq__`,
`__hash__`, `__setattr__`, `__delattr__`: six `exec` calls, about 1 ms a class on a small VM),
and the supervisor and the CLI define some 60 of them at import. `record` gives a class the same
behaviour from closures built once here: the constructor dataclasses would generate (positional
or keyword arguments, defaults, `field(default_factory=...)`, the same `TypeError`s), `repr`
(without `repr=False` fields), equality of two instances of the same class field by field,
hashing (frozen records), `FrozenInstanceError` on assignment, `__match_args__`.

It is still a dataclass to the standard library: `dataclasses.fields`, `replace`, `asdict` and
`is_dataclass` work on it, and mypy checks its constructors (`typing.dataclass_transform`).
What it does not do: `order`, `slots`, `kw_only`, `InitVar`, and a real `@dataclass` may not
inherit from a record. Use `@dataclass` where those are needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, ClassVar, TypeVar, dataclass_transform

_T = TypeVar("_T", bound=type)
_MISSING: Any = dataclasses.MISSING
_FIELD: Any = getattr(dataclasses, "_FIELD")  # noqa: B009  # what `fields()` counts as a field


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: _T) -> _T:
    """`cls` as `@dataclass(frozen=True)` would make it."""
    return _build(cls, frozen=True)


@dataclass_transform(field_specifiers=(dataclasses.field,))
def mutable_record(cls: _T) -> _T:
    """`cls` as `@dataclass` would make it: assignable fields, equality, no hash."""
    return _build(cls, frozen=False)


def _is_classvar(annotation: object) -> bool:
    if isinstance(annotation, str):  # as `from __future__ import annotations` leaves them
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or getattr(annotation, "__origin__", None) is ClassVar


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The fields of `cls`: its bases' first, then its own annotations, in order."""
    fields: dict[str, dataclasses.Field[Any]] = {}
    for base in cls.__mro__[-1:0:-1]:
        fields.update(base.__dict__.get("__dataclass_fields__", {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063  # as dataclasses
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        item: Any = (
            value if isinstance(value, dataclasses.Field) else dataclasses.field(default=value)
        )
        if item.default is not _MISSING and item.default.__class__.__hash__ is None:
            raise ValueError(
                f"mutable default {type(item.default)} for field {name} is not allowed: "
                "use default_factory"
            )
        item.name, item.type, item._field_type = name, annotation, _FIELD
        fields[name] = item
        if isinstance(value, dataclasses.Field):  # the class attribute is the default, or none
            if item.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, item.default)
    seen_default = ""
    for item in fields.values():
        if not item.init:
            continue
        if item.default is not _MISSING or item.default_factory is not _MISSING:
            seen_default = item.name
        elif seen_default:
            raise TypeError(f"non-default argument {item.name!r} follows default argument")
    return fields


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function of an instance: the tuple of its `names` (always a tuple, even of one)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        get_one = attrgetter(names[0])
        return lambda obj: (get_one(obj),)
    return attrgetter(*names)


def _build(cls: _T, *, frozen: bool) -> _T:
    fields = _fields(cls)
    qualname = cls.__qualname__
    params = tuple(item.name for item in fields.values() if item.init)
    plan = [(item.name, item.init, item.default, item.default_factory) for item in fields.values()]
    # What is left to fill after `n` positional arguments (they are the first `n` init fields).
    rest: list[tuple[tuple[str, bool, Any, Any], ...]] = []
    for given in range(len(params) + 1):
        taken = set(params[:given])
        rest.append(tuple(step for step in plan if step[0] not in taken))
    post_init = getattr(cls, "__post_init__", None)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        given = len(args)
        if given > len(params):
            raise TypeError(
                f"{qualname}.__init__() takes {len(params) + 1} positional arguments "
                f"but {given + 1} were given"
            )
        # Straight into the instance's dict: a frozen record's __setattr__ refuses, and
        # object.__setattr__ per field is what makes a constructor slow.
        values = self.__dict__
        for name, value in zip(params, args, strict=False):  # args may be fewer
            values[name] = value
        if kwargs and given:
            for name in params[:given]:
                if name in kwargs:
                    raise TypeError(
                        f"{qualname}.__init__() got multiple values for argument {name!r}"
                    )
        for name, init, default, factory in rest[given]:
            if init and name in kwargs:
                values[name] = kwargs.pop(name)
            elif default is not _MISSING:
                values[name] = default
            elif factory is not _MISSING:
                values[name] = factory()
            else:
                raise TypeError(
                    f"{qualname}.__init__() missing 1 required positional argument: {name!r}"
                )
        if kwargs:
            raise TypeError(
                f"{qualname}.__init__() got an unexpected keyword argument {next(iter(kwargs))!r}"
            )
        if post_init is not None:
            post_init(self)

    shown = tuple(item.name for item in fields.values() if item.repr)

    def repr_(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({inner})"

    compared = _getter(tuple(item.name for item in fields.values() if item.compare))

    def eq(self: Any, other: object) -> object:
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    methods: dict[str, Any] = {"__init__": init, "__repr__": repr_, "__eq__": eq}
    if frozen:
        methods.update(_frozen_methods(cls, fields))
    for name, method in methods.items():
        if name not in cls.__dict__:
            method.__qualname__ = f"{qualname}.{name}"
            setattr(cls, name, method)
    if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
        # As dataclasses: a class that defines __eq__ gets __hash__ = None from Python itself.
        setattr(cls, "__hash__", methods.get("__hash__"))  # noqa: B010
    setattr(cls, "__dataclass_fields__", fields)  # noqa: B010
    if "__match_args__" not in cls.__dict__:
        setattr(cls, "__match_args__", params)  # noqa: B010
    return cls


def _frozen_methods(cls: Any, fields: dict[str, dataclasses.Field[Any]]) -> dict[str, Any]:
    """`__hash__`, `__setattr__` and `__delattr__` of a frozen record."""
    hashed = _getter(
        tuple(
            item.name
            for item in fields.values()
            if (item.compare if item.hash is None else item.hash)
        )
    )
    names = frozenset(fields)

    def hash_(self: Any) -> int:
        return hash(hashed(self))

    def setattr_(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def delattr_(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return {"__hash__": hash_, "__setattr__": setattr_, "__delattr__": delattr_}
