"""Tests of module_sdk.testing (InProcessBus, load_module) and the pytest plugin's fixtures."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Recorder

from module_sdk import Event, EventBus
from module_sdk.loader import ModuleLoadError
from module_sdk.testing import InProcessBus, load_module


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


def test_is_an_event_bus() -> None:
    bus: EventBus = InProcessBus()  # mypy checks the protocol; this checks the methods exist
    for method in ("subscribe", "unsubscribe", "clear", "publish"):
        assert callable(getattr(bus, method))


# -- patterns -------------------------------------------------------------------------------------


def test_exact_pattern_gets_only_that_type(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)

    for event_type in ("test.ping", "test.pingpong", "test.ping.more", "test.pong", "x.test"):
        bus.publish(event_type)

    assert got.types == ["test.ping"]


def test_prefix_pattern_gets_the_namespace(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.*", got)

    for event_type in ("test.ping", "test.a.b", "testing.ping", "other.test", "tes.t"):
        bus.publish(event_type)

    assert got.types == ["test.ping", "test.a.b"]


def test_star_gets_everything(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("*", got)

    for event_type in ("test.ping", "a.b.c", "module.loaded"):
        bus.publish(event_type)

    assert got.types == ["test.ping", "a.b.c", "module.loaded"]


def test_every_matching_callback_gets_the_event_in_subscription_order(bus: InProcessBus) -> None:
    calls: list[str] = []
    bus.subscribe("test.ping", lambda e: calls.append("exact-1"))
    bus.subscribe("test.*", lambda e: calls.append("prefix"))
    bus.subscribe("test.ping", lambda e: calls.append("exact-2"))
    bus.subscribe("other.*", lambda e: calls.append("other"))

    bus.publish("test.ping")

    assert calls == ["exact-1", "exact-2", "prefix"]


def test_a_callback_subscribed_twice_is_called_twice(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)
    bus.subscribe("test.*", got)

    bus.publish("test.ping")

    assert got.types == ["test.ping", "test.ping"]


# -- unsubscribe and clear ----------------------------------------------------------------------


def test_unsubscribe_stops_only_that_callback_and_pattern(bus: InProcessBus) -> None:
    a, b = Recorder(), Recorder()
    bus.subscribe("test.ping", a)
    bus.subscribe("test.*", a)
    bus.subscribe("test.ping", b)

    bus.unsubscribe("test.ping", a)
    bus.publish("test.ping")

    assert a.types == ["test.ping"]  # still via test.*
    assert b.types == ["test.ping"]


def test_unsubscribe_removes_one_of_two_identical_subscriptions(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)
    bus.subscribe("test.ping", got)

    bus.unsubscribe("test.ping", got)
    bus.publish("test.ping")
    bus.unsubscribe("test.ping", got)
    bus.publish("test.ping")

    assert got.types == ["test.ping"]


def test_unsubscribe_of_something_not_subscribed_does_nothing(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)

    bus.unsubscribe("test.*", got)
    bus.unsubscribe("test.ping", Recorder())
    bus.unsubscribe("never.subscribed", got)
    bus.publish("test.ping")

    assert got.types == ["test.ping"]


def test_clear_removes_every_subscription(bus: InProcessBus) -> None:
    got = Recorder()
    for pattern in ("test.ping", "test.*", "*"):
        bus.subscribe(pattern, got)

    bus.clear()
    bus.publish("test.ping")

    assert got.events == []
    assert [e.type for e in bus.published] == ["test.ping"]  # still recorded

    bus.subscribe("test.ping", got)
    bus.publish("test.ping")
    assert len(got.events) == 1


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["ping", "test.*", "*", "test..ping", "", "a b.c", 42])
def test_publish_rejects_an_invalid_event_type(bus: InProcessBus, event_type: Any) -> None:
    got = Recorder()
    bus.subscribe("*", got)

    with pytest.raises(ValueError, match="event type"):
        bus.publish(event_type)

    assert got.events == []
    assert bus.published == []


@pytest.mark.parametrize("pattern", ["ping", "test.*.x", "test*", "**", "", "test.", None])
def test_subscribe_unsubscribe_and_events_reject_an_invalid_pattern(
    bus: InProcessBus, pattern: Any
) -> None:
    with pytest.raises(ValueError, match="subscription pattern"):
        bus.subscribe(pattern, Recorder())
    with pytest.raises(ValueError, match="subscription pattern"):
        bus.unsubscribe(pattern, Recorder())
    with pytest.raises(ValueError, match="subscription pattern"):
        bus.events(pattern)


def test_subscribe_rejects_a_callback_that_is_not_callable(bus: InProcessBus) -> None:
    not_callable: Any = "print"
    with pytest.raises(TypeError, match="not callable"):
        bus.subscribe("test.ping", not_callable)
    bus.publish("test.ping")  # nothing was subscribed that could fail


@pytest.mark.parametrize(
    "data",
    [object(), {1, 2}, {"nested": [object()]}, 2**64],
    ids=["object", "set", "nested", "int"],
)
def test_publish_rejects_data_msgpack_cannot_carry(bus: InProcessBus, data: Any) -> None:
    got = Recorder()
    bus.subscribe("*", got)

    with pytest.raises(TypeError, match="not msgpack-serialisable"):
        bus.publish("test.ping", data)

    assert got.events == []
    assert bus.published == []


# -- what a subscriber sees ---------------------------------------------------------------------


def test_data_arrives_as_msgpack_round_trips_it(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)
    data = {"tuple": (1, (2, 3)), "bytes": b"\x00\xff", 7: "int key", "none": None, "f": 1.5}

    bus.publish("test.ping", data)

    expected = {"tuple": [1, [2, 3]], "bytes": b"\x00\xff", 7: "int key", "none": None, "f": 1.5}
    (event,) = got.events
    assert event.data == expected
    assert type(event.data["tuple"]) is list
    assert bus.published[0].data == expected


def test_tuple_keys_arrive_as_tuples_as_on_the_real_bus(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)

    bus.publish("test.ping", {(1, "a"): [1], "s": 2})

    assert got.events[0].data == {(1, "a"): [1], "s": 2}


def test_data_is_a_copy_of_what_was_published(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)
    data = {"items": [1, 2]}

    bus.publish("test.ping", data)
    data["items"].append(3)

    assert got.events[0].data == {"items": [1, 2]}
    assert got.events[0].data is not data


def test_a_callback_mutating_data_does_not_change_the_record(bus: InProcessBus) -> None:
    bus.subscribe("test.ping", lambda e: e.data.clear())

    bus.publish("test.ping", {"k": "v"})

    assert bus.published[0].data == {"k": "v"}


def test_data_defaults_to_none(bus: InProcessBus) -> None:
    got = Recorder()
    bus.subscribe("test.ping", got)

    bus.publish("test.ping")

    assert got.events[0].data is None


def test_event_metadata() -> None:
    bus = InProcessBus(source="my-module")
    got = Recorder()
    bus.subscribe("*", got)

    before = time.time()
    bus.publish("test.ping")
    bus.publish("test.pong")
    after = time.time()

    first, second = got.events
    assert first.source == second.source == "my-module"
    assert isinstance(first.id, str)
    assert first.id != second.id
    assert before <= first.time <= second.time <= after
    assert isinstance(first.time, float)
    assert bus.published == got.events


def test_default_source_is_test(bus: InProcessBus) -> None:
    bus.publish("test.ping")
    assert bus.published[0].source == "test"


# -- callback errors ----------------------------------------------------------------------------


def fail(event: Event) -> None:
    raise RuntimeError(f"boom on {event.type}")


def test_a_raising_callback_is_logged_counted_and_others_still_run(
    bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    before, after = Recorder(), Recorder()
    bus.subscribe("test.ping", before)
    bus.subscribe("test.ping", fail)
    bus.subscribe("test.*", after)

    bus.publish("test.ping")  # does not raise
    bus.publish("test.ping")

    assert bus.callback_errors == 2
    assert len(before.events) == len(after.events) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "fail" in errors[0].getMessage()
    assert "test.ping" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is RuntimeError
    assert "boom on test.ping" in caplog.text  # the traceback is in the log


@pytest.mark.parametrize("escape", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_callback_exiting_or_interrupted_is_contained_as_on_the_real_bus(
    bus: InProcessBus, escape: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """The real bus (`receive.py`) logs and counts a callback's BaseException and runs on;
    InProcessBus let it out of publish(): a `sys.exit()` failed a test of what is true in
    production, and a KeyboardInterrupt ended the whole pytest session."""
    after = Recorder()

    def escapes(event: Event) -> None:
        raise escape

    bus.subscribe("test.ping", escapes)
    bus.subscribe("test.ping", after)

    bus.publish("test.ping")  # does not raise

    assert bus.callback_errors == 1
    assert after.types == ["test.ping"]
    logged = [r.exc_info[0] for r in caplog.records if r.exc_info is not None]
    assert logged == [type(escape)]


def test_raise_errors_reraises_the_first_error_after_every_callback_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessBus(raise_errors=True)
    got = Recorder()

    def fail_again(event: Event) -> None:
        raise KeyError("second")

    bus.subscribe("test.ping", fail)
    bus.subscribe("test.ping", fail_again)
    bus.subscribe("test.ping", got)

    with pytest.raises(RuntimeError, match=r"boom on test\.ping"):
        bus.publish("test.ping")

    assert got.types == ["test.ping"]
    assert bus.callback_errors == 2
    logged = [r.exc_info[0] for r in caplog.records if r.exc_info is not None]
    assert logged == [KeyError]  # the one not re-raised is still reported


def test_raise_errors_does_not_raise_when_callbacks_succeed() -> None:
    bus = InProcessBus(raise_errors=True)
    got = Recorder()
    bus.subscribe("test.ping", got)

    bus.publish("test.ping")

    assert got.types == ["test.ping"]
    assert bus.callback_errors == 0


# -- threads ------------------------------------------------------------------------------------


def test_concurrent_publishers_lose_nothing(bus: InProcessBus) -> None:
    threads, per_thread = 4, 1000
    counter = 0
    counter_lock = threading.Lock()
    start = threading.Barrier(threads)

    def count(event: Event) -> None:
        nonlocal counter
        with counter_lock:
            counter += 1

    def publisher(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            bus.publish(f"load.t{n}", i)

    bus.subscribe("load.*", count)
    workers = [threading.Thread(target=publisher, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert not worker.is_alive()

    assert counter == threads * per_thread
    assert len(bus.published) == threads * per_thread
    assert len({e.id for e in bus.published}) == threads * per_thread
    for n in range(threads):  # each thread's events are recorded in its publishing order
        assert [e.data for e in bus.events(f"load.t{n}")] == list(range(per_thread))


def test_callbacks_may_use_the_bus(bus: InProcessBus) -> None:
    got = Recorder()

    def relay(event: Event) -> None:
        bus.subscribe("relay.done", got)
        bus.unsubscribe("test.ping", relay)
        bus.publish("relay.done", event.data)

    bus.subscribe("test.ping", relay)
    bus.publish("test.ping", 1)
    bus.publish("test.ping", 2)

    assert [e.data for e in got.events] == [1]
    assert [e.type for e in bus.published] == ["test.ping", "relay.done", "test.ping"]


def test_delivery_is_in_the_publishing_thread(bus: InProcessBus) -> None:
    seen: list[threading.Thread] = []
    bus.subscribe("test.ping", lambda e: seen.append(threading.current_thread()))

    worker = threading.Thread(target=bus.publish, args=("test.ping",))
    worker.start()
    worker.join(5)
    bus.publish("test.ping")

    assert seen == [worker, threading.current_thread()]


# -- events() -------------------------------------------------------------------------------------


def test_events_filters_the_record_by_pattern(bus: InProcessBus) -> None:
    for event_type in ("test.ping", "test.pong", "other.ping", "test.ping"):
        bus.publish(event_type)

    assert [e.type for e in bus.events()] == ["test.ping", "test.pong", "other.ping", "test.ping"]
    assert [e.type for e in bus.events("test.ping")] == ["test.ping", "test.ping"]
    assert [e.type for e in bus.events("test.*")] == ["test.ping", "test.pong", "test.ping"]
    assert bus.events("none.*") == []
    assert bus.events("test.pin") == []


def test_events_returns_a_copy(bus: InProcessBus) -> None:
    bus.publish("test.ping")
    bus.events().clear()
    assert len(bus.events()) == 1


# -- load_module ----------------------------------------------------------------------------------

MODULE_SOURCE = """
state = {"config": None, "stopped": False}

def initialize(event_bus, config):
    state["config"] = config

def shutdown():
    state["stopped"] = True
"""


@pytest.fixture
def clean_imports() -> Iterator[None]:
    """Forget the modules a test imports, and the sys.path entries loading a file adds."""
    modules, path = set(sys.modules), list(sys.path)
    yield
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


@pytest.mark.usefixtures("clean_imports")
def test_load_module_imports_a_file_named_by_its_stem(tmp_path: Path) -> None:
    path = tmp_path / "plain_mod.py"
    path.write_text(MODULE_SOURCE)

    module = load_module(path)

    assert module.__name__ == "plain_mod"
    assert Path(module.__file__ or "") == path.resolve()
    module.initialize(InProcessBus(), {"a": 1})
    assert module.state["config"] == {"a": 1}


@pytest.mark.usefixtures("clean_imports")
def test_load_module_imports_a_package_dir_with_dashes(tmp_path: Path) -> None:
    package = tmp_path / "mod-with-dashes"
    package.mkdir()
    (package / "helper.py").write_text("GREETING = 'hi from helper'\n")
    (package / "__init__.py").write_text("from .helper import GREETING\n" + MODULE_SOURCE)

    module = load_module(str(package))

    assert module.__name__ == "mod_with_dashes"
    assert module.GREETING == "hi from helper"
    module.shutdown()
    assert module.state["stopped"] is True


@pytest.mark.usefixtures("clean_imports")
def test_load_module_takes_a_name_and_imports_afresh_each_time(tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text(MODULE_SOURCE)

    first = load_module(path, name="my-module")
    first.shutdown()
    second = load_module(path, name="my-module")

    assert first.__name__ == second.__name__ == "my_module"
    assert second is not first
    assert second.state["stopped"] is False


@pytest.mark.usefixtures("clean_imports")
def test_load_module_rejects_a_module_without_the_interface(tmp_path: Path) -> None:
    path = tmp_path / "incomplete.py"
    path.write_text("def initialize(event_bus, config):\n    pass\n")

    with pytest.raises(ModuleLoadError, match=r"shutdown\(\)"):
        load_module(path)
    with pytest.raises(ModuleLoadError, match="no such file"):
        load_module(tmp_path / "missing-dir-or-file")


# -- the pytest plugin, run through its entry point in a separate pytest ----------------------

PLUGIN_TESTS = """
import warnings
from pathlib import Path

import pytest

from module_sdk.testing import InProcessBus

MODULES = Path(__file__).parent / "modules"


def test_event_bus_fixture(event_bus):
    assert isinstance(event_bus, InProcessBus)
    assert event_bus.published == []


def test_initialized(module_loader, event_bus):
    module = module_loader(MODULES / "initialized.py")
    module.initialize(event_bus, {})


def test_never_initialized(module_loader):
    module_loader(MODULES / "never_initialized.py")


def test_shut_down_by_the_test(module_loader, event_bus):
    module = module_loader(MODULES / "shut_down_by_test.py")
    module.initialize(event_bus, {})
    module.shutdown()


def test_failing_shutdown(module_loader, event_bus):
    module = module_loader(MODULES / "failing-shutdown")
    module.initialize(event_bus, {})
"""

RECORDING_MODULE = """
from pathlib import Path

LOG = Path(__file__).parent.parent / "shutdowns.log"

def initialize(event_bus, config):
    pass

def shutdown():
    with LOG.open("a") as f:
        f.write(__name__ + "\\n")
"""


def test_plugin_fixtures_shut_down_initialized_modules(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    for name in ("initialized", "never_initialized", "shut_down_by_test"):
        (modules / f"{name}.py").write_text(RECORDING_MODULE)
    failing = modules / "failing-shutdown"
    failing.mkdir()
    (failing / "__init__.py").write_text(
        "def initialize(event_bus, config):\n    pass\n\n"
        "def shutdown():\n    raise OSError('disk gone')\n"
    )
    (tmp_path / "test_plugin_use.py").write_text(textwrap.dedent(PLUGIN_TESTS))

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "default",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_plugin_use.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "5 passed" in output, output
    shutdowns = (tmp_path / "shutdowns.log").read_text().splitlines()
    assert shutdowns == ["initialized", "shut_down_by_test"]  # the latter once, by the test
    assert "ModuleShutdownWarning" in output, output
    assert "failing_shutdown raised after the test: OSError: disk gone" in output, output
