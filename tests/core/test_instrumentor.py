"""The instrumentor base: once per process, version-checked, never half installed."""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from typing import Any

import pytest

from telemhq_plugins.core.extras import missing_extra
from telemhq_plugins.core.instrumentor import Instrumentor, UnsupportedOrchestrator, check_version


class Registry:
    """What an orchestrator offers to hook into: a list of callbacks it calls."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def fire(self, event: str) -> list[str]:
        return [callback(event) for callback in self.callbacks]


def make_instrumentor(
    registry: Registry,
    *,
    instruments: tuple[str, str] | None = None,
    fail_after: int | None = None,
) -> type[Instrumentor]:
    """A new instrumentor class (each has its own process-wide instance) that registers two
    callbacks into ``registry``; ``fail_after=1`` raises after registering the first."""

    class Toy(Instrumentor):
        def _instrument(self, *args: Any, **options: Any) -> None:
            self.options = (args, options)
            for n in range(2):
                if fail_after is not None and n == fail_after:
                    raise RuntimeError("the orchestrator said no")
                registry.callbacks.append(lambda event, n=n: f"{event}:{n}")

        def _uninstrument(self) -> None:
            registry.callbacks.clear()

    Toy.instruments = instruments
    return Toy


def test_one_instance_per_subclass() -> None:
    first, second = make_instrumentor(Registry()), make_instrumentor(Registry())
    assert first() is first()
    assert first() is not second()


def test_a_second_instrument_changes_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    toy = make_instrumentor(registry)
    caplog.set_level(logging.WARNING, logger="telemhq")
    assert toy().instrument("app", include=("etl.*",)) is True
    assert toy().is_instrumented
    assert toy().instrument("other") is False
    assert toy().instrument() is False
    assert registry.fire("run") == ["run:0", "run:1"]  # registered once
    assert toy().options == (("app",), {"include": ("etl.*",)})  # the first call's options
    already = [r for r in caplog.records if "already instrumented" in r.getMessage()]
    assert len(already) == 1
    assert "Toy" in already[0].getMessage()


def test_uninstrument_takes_everything_back_and_allows_a_new_install() -> None:
    registry = Registry()
    toy = make_instrumentor(registry)
    assert toy().uninstrument() is False  # nothing installed
    assert toy().instrument() is True
    assert toy().uninstrument() is True
    assert not toy().is_instrumented
    assert registry.fire("run") == []
    assert toy().uninstrument() is False
    assert toy().instrument() is True
    assert registry.fire("run") == ["run:0", "run:1"]


def test_a_failing_install_is_undone_logged_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    toy = make_instrumentor(registry, fail_after=1)
    caplog.set_level(logging.ERROR, logger="telemhq")
    assert toy().instrument() is False
    assert registry.fire("run") == []  # the first callback was registered, then taken back
    assert not toy().is_instrumented
    assert "Toy failed to instrument" in caplog.text
    assert "the orchestrator said no" in caplog.text  # the traceback is logged


def test_a_failing_uninstall_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Stuck(Instrumentor):
        def _instrument(self, *args: Any, **options: Any) -> None:
            pass

        def _uninstrument(self) -> None:
            raise RuntimeError("cannot disconnect")

    caplog.set_level(logging.ERROR, logger="telemhq")
    assert Stuck().instrument() is True
    assert Stuck().uninstrument() is True
    assert not Stuck().is_instrumented
    assert "Stuck failed to uninstrument" in caplog.text


def test_a_too_old_orchestrator_is_named_and_nothing_is_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    toy = make_instrumentor(registry, instruments=("httpx", "999.1"))
    caplog.set_level(logging.ERROR, logger="telemhq")
    assert toy().instrument() is False
    assert registry.fire("run") == []
    assert not toy().is_instrumented
    (record,) = [r for r in caplog.records if "httpx" in r.getMessage()]
    message = record.getMessage()
    assert "httpx>=999.1" in message
    assert f"httpx {importlib.metadata.version('httpx')} is installed" in message
    assert "Toy is not instrumented" in message


def test_a_missing_orchestrator_is_named_and_nothing_is_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    toy = make_instrumentor(registry, instruments=("telemhq-no-such-orchestrator", "1.0"))
    caplog.set_level(logging.ERROR, logger="telemhq")
    assert toy().instrument() is False
    assert registry.fire("run") == []
    assert "telemhq-no-such-orchestrator is not installed" in caplog.text
    assert "telemhq-no-such-orchestrator>=1.0" in caplog.text


def test_a_recent_enough_orchestrator_is_instrumented() -> None:
    registry = Registry()
    toy = make_instrumentor(registry, instruments=("httpx", "0.1"))
    assert toy().instrument() is True
    assert registry.fire("run") == ["run:0", "run:1"]


def test_concurrent_instrument_calls_install_once() -> None:
    registry = Registry()
    toy = make_instrumentor(registry)
    results: list[bool] = []
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        results.append(toy().instrument())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert registry.fire("run") == ["run:0", "run:1"]


def test_the_base_cannot_be_used_without_both_methods() -> None:
    class Half(Instrumentor):
        def _instrument(self, *args: Any, **options: Any) -> None:
            pass

    with pytest.raises(TypeError, match="_uninstrument"):
        Half()  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("installed", "minimum", "ok"),
    [
        ("5.3", "5.3", True),
        ("5.3.0", "5.3", True),
        ("5.3", "5.3.0", True),
        ("5.4.0", "5.3", True),
        ("5.10.1", "5.9", True),  # numeric, not alphabetical
        ("6.0.0.post1", "5.3", True),
        ("5.3.1+local.2", "5.3", True),
        ("1!1.0", "5.3", True),  # a later epoch
        ("5.2.7", "5.3", False),
        ("5.3.0rc1", "5.3", False),  # a pre-release comes before its release
        ("5.3.dev0", "5.3", False),
        ("4.99", "5.3", False),
    ],
)
def test_versions_compare_as_pep_440_releases(
    installed: str, minimum: str, ok: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    assert (check_version("acme", minimum) is None) is ok


def test_an_unreadable_installed_version_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "main-branch")
    assert check_version("acme", "5.3") is None


@pytest.mark.parametrize(
    ("installed", "ok"),
    [
        ("5.3", True),
        ("5.9.2", True),
        ("5.4rc1", True),  # a pre-release of a supported version
        ("6.0", False),  # the ceiling
        ("6.0rc1", False),
        ("6.1.0", False),
        ("5.2.7", False),
    ],
)
def test_a_specifier_sets_a_floor_and_a_ceiling(
    installed: str, ok: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    problem = check_version("acme", ">=5.3,<6")
    assert (problem is None) is ok
    if not ok:
        assert problem == (
            f"acme {installed} is installed but telemhq-plugins needs acme>=5.3,<6 "
            '(pip install "acme>=5.3,<6")'
        )


def test_an_explicit_request_on_an_unsupported_orchestrator_raises() -> None:
    registry = Registry()
    toy = make_instrumentor(registry, instruments=("httpx", ">=999.1,<1000"))
    with pytest.raises(UnsupportedOrchestrator, match=r"httpx>=999\.1,<1000"):
        toy().require()
    assert toy().instrument() is False  # the automatic path only logs
    assert registry.fire("run") == []
    supported = make_instrumentor(registry, instruments=("httpx", ">=0.1,<999"))
    supported().require()  # nothing to say
    assert supported().instrument() is True


def test_per_instance_state_is_set_once_per_process() -> None:
    class Counting(Instrumentor):
        created = 0

        def _init_state(self) -> None:
            type(self).created += 1
            self.hooks: list[str] = []

        def _instrument(self, *args: Any, **options: Any) -> None:
            self.hooks.append("on")

        def _uninstrument(self) -> None:
            self.hooks.clear()

    assert Counting().instrument() is True
    assert Counting().hooks == ["on"]  # a second Counting() keeps the first one's state
    assert Counting().uninstrument() is True
    assert Counting().hooks == []
    assert Counting.created == 1


def test_a_missing_orchestrator_names_the_extra_and_commands_that_work() -> None:
    message = missing_extra("telemhq_plugins.acme", "Acme", "acme")
    assert message.startswith("telemhq_plugins.acme needs Acme, which is not installed")
    assert 'pip install ".[acme]"' in message  # from a checkout
    assert 'pip install "./dist/<wheel>[acme]"' in message  # the wheel of ``make dist``
