"""The adapter contract (``tests/adapter_contract.py``) for this adapter, and ``setup()``, the
first name of ``instrument()``."""

from __future__ import annotations

import importlib.metadata

import pytest

import telemhq_plugins.celery as adapter
from telemhq_plugins.core import UnsupportedOrchestrator
from tests.adapter_contract import contract_tests

test_unsupported_versions, test_instrument_and_uninstrument = contract_tests(
    adapter, adapter.CeleryInstrumentor, unsupported=["5.2.7", "6.0.0"]
)


def test_setup_is_an_explicit_instrument(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "6.1.0" if name == "celery" else real_version(name),
    )
    with pytest.raises(UnsupportedOrchestrator, match=r"celery 6\.1\.0 is installed"):
        adapter.setup()
    monkeypatch.undo()
    try:
        assert adapter.setup() is adapter.CeleryInstrumentor()
        assert adapter.CeleryInstrumentor().is_instrumented
    finally:
        assert adapter.uninstrument() is True
