"""The adapter contract, checked the same way for every adapter (each suite collects these in
its own environment): ``instrument()`` / ``uninstrument()`` in the package, reversible, and
the supported versions checked as ``packaging`` specifiers, an explicit call on an
unsupported version raising while the automatic path only logs::

    test_unsupported_versions, test_instrument_and_uninstrument = contract_tests(
        telemhq_plugins.acme, AcmeInstrumentor, unsupported=["2.0.9", "3.0.0"]
    )
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Sequence
from types import ModuleType

import pytest

from telemhq_plugins.core import Instrumentor, UnsupportedOrchestrator


def assert_unsupported_version_refused(
    adapter: ModuleType,
    instrumentor: type[Instrumentor],
    version: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``version`` of the orchestrator installed (one outside ``instruments``), the
    package's ``instrument()`` raises, naming both versions, and nothing is installed."""
    assert instrumentor.instruments is not None
    distribution, specifier = instrumentor.instruments
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: version if name == distribution else real_version(name),
    )
    with pytest.raises(UnsupportedOrchestrator) as raised:
        adapter.instrument()
    message = str(raised.value)
    assert f"{distribution} {version} is installed" in message
    assert re.search(re.escape(f"needs {distribution}{specifier}"), message)
    assert instrumentor().is_instrumented is False
    assert instrumentor().instrument() is False  # the automatic path only logs


def assert_instruments_reversibly(adapter: ModuleType, instrumentor: type[Instrumentor]) -> None:
    """The installed orchestrator is supported; ``instrument()`` then ``uninstrument()``."""
    assert instrumentor().unsupported() is None
    try:
        assert adapter.instrument() is True
        assert instrumentor().is_instrumented
    finally:
        assert adapter.uninstrument() is True
    assert adapter.uninstrument() is False


def contract_tests(
    adapter: ModuleType, instrumentor: type[Instrumentor], *, unsupported: Sequence[str]
) -> tuple[Callable[..., None], Callable[[], None]]:
    """The two contract tests for ``adapter``, for its test module to collect."""

    @pytest.mark.parametrize("version", unsupported)
    def test_unsupported_versions(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
        assert_unsupported_version_refused(adapter, instrumentor, version, monkeypatch)

    def test_instrument_and_uninstrument() -> None:
        assert_instruments_reversibly(adapter, instrumentor)

    return test_unsupported_versions, test_instrument_and_uninstrument
