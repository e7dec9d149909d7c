"""`@record` behaves as `@dataclass(frozen=True)` (and `@mutable_record` as `@dataclass`): each
check runs on the same class made both ways, so a difference fails here by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from orchestrator.record import mutable_record, record

Maker = Callable[[type], type]
FROZEN: list[Maker] = [record, dataclass(frozen=True)]
MUTABLE: list[Maker] = [mutable_record, dataclass]


def make_point(maker: Maker) -> Any:
    class Point:
        """A test record."""

        x: int
        y: str = "a"
        tags: dict[str, int] = field(default_factory=dict)
        secret: str | None = field(default=None, repr=False)
        note: str = field(default="", compare=False)
        LIMIT: ClassVar[int] = 3

        @property
        def double(self) -> int:
            return self.x * 2

    return maker(Point)


def outcome(call: Callable[[], object]) -> object:
    """What `call` returns, or its exception's type and message, to compare both makers'."""
    try:
        return call()
    except Exception as exc:
        return (type(exc).__name__, str(exc).replace("Point.__init__()", "__init__()"))


@pytest.mark.parametrize("maker", FROZEN + MUTABLE, ids=["record", "dc-frozen", "mutable", "dc"])
def test_a_record_has_what_the_dataclass_has(maker: Maker) -> None:
    point = make_point(maker)
    made = point(1, tags={"k": 1}, secret="s", note="n")
    assert repr(made).endswith(".Point(x=1, y='a', tags={'k': 1}, note='n')")
    assert made == point(1, "a", {"k": 1}, "s", "other note")  # `note` is not compared
    assert made != point(1, "b", {"k": 1}, "s")
    assert made.double == 2 and point.LIMIT == 3
    assert point.y == "a" and not hasattr(point, "tags") and point.secret is None
    assert point.__match_args__ == ("x", "y", "tags", "secret", "note")
    assert point(1).tags is not point(1).tags  # a factory per instance
    assert list(vars(point(note="n", x=1))) == ["x", "y", "tags", "secret", "note"]
    assert dataclasses.is_dataclass(made)
    assert [f.name for f in dataclasses.fields(point)] == ["x", "y", "tags", "secret", "note"]
    assert dataclasses.replace(made, x=5) == point(5, tags={"k": 1}, secret="s")
    assert dataclasses.asdict(made) == {
        "x": 1,
        "y": "a",
        "tags": {"k": 1},
        "secret": "s",
        "note": "n",
    }
    match made:
        case point(1, "a"):  # type: ignore[misc]
            pass
        case _:
            pytest.fail("positional class pattern did not match")


def test_the_errors_are_the_dataclass_errors() -> None:
    mine, theirs = make_point(record), make_point(dataclass(frozen=True))
    calls: list[Callable[[type], object]] = [
        lambda p: p(),
        lambda p: p(1, y=2, x=3),
        lambda p: p(1, nope=2),
        lambda p: p(1, tags={}).__hash__(),
        lambda p: setattr(p(1), "x", 2),
        lambda p: setattr(p(1), "new", 2),
        lambda p: delattr(p(1), "x"),
        lambda p: hash(p(1, tags=None)) == hash(p(1, tags=None, note="other")),
        lambda p: dataclasses.replace(p(1), nope=2),
    ]
    for call in calls:
        assert outcome(lambda c=call: c(mine)) == outcome(lambda c=call: c(theirs))


def test_too_many_positional_arguments_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="positional arguments"):
        make_point(record)(1, "a", {}, None, "", "one too many")


def test_records_of_two_classes_are_never_equal() -> None:
    @record
    class Stop:
        now: float

    @record
    class Start:
        now: float

    assert Stop(1.0) != Start(1.0)
    assert Stop(1.0) == Stop(1.0) and hash(Stop(1.0)) == hash(Stop(1.0))
    assert len({Stop(1.0), Start(1.0), Stop(1.0)}) == 2


@pytest.mark.parametrize("maker", MUTABLE, ids=["mutable", "dc"])
def test_a_mutable_record_assigns_and_does_not_hash(maker: Maker) -> None:
    point = make_point(maker)
    made = point(1)
    made.x = 2
    assert made == point(2)
    assert point.__hash__ is None


@pytest.mark.parametrize("maker", FROZEN, ids=["record", "dc-frozen"])
def test_a_subclass_adds_its_fields_after_its_bases(maker: Maker) -> None:
    @maker
    class Base:
        a: int
        b: int = 2

    @maker
    class Sub(Base):
        c: int = 3

    made = Sub(1, c=4)
    assert (made.a, made.b, made.c) == (1, 2, 4)
    assert [f.name for f in dataclasses.fields(Sub)] == ["a", "b", "c"]
    assert made != Base(1, 2)


def test_bad_definitions_fail_as_dataclass_fails() -> None:
    def mutable_default(maker: Maker) -> object:
        class Bad:
            items: list[int] = []  # noqa: RUF012

        return maker(Bad)

    def default_first(maker: Maker) -> object:
        class Bad:
            a: int = 1
            b: int

        return maker(Bad)

    for definition in (mutable_default, default_first):
        mine = outcome(lambda d=definition: d(record))
        theirs = outcome(lambda d=definition: d(dataclass(frozen=True)))
        assert isinstance(mine, tuple) and isinstance(theirs, tuple)
        assert mine[0] == theirs[0], (mine, theirs)


def test_post_init_runs_after_the_fields_are_set() -> None:
    seen: list[int] = []

    @record
    class Checked:
        a: int

        def __post_init__(self) -> None:
            seen.append(self.a)

    Checked(7)
    assert seen == [7]
