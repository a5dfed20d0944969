"""The adapter contract (``tests/adapter_contract.py``) for this adapter."""

from __future__ import annotations

import telemhq_plugins.prefect as adapter
from tests.adapter_contract import contract_tests

test_unsupported_versions, test_instrument_and_uninstrument = contract_tests(
    adapter, adapter.PrefectInstrumentor, unsupported=["2.20.1", "4.0.0"]
)
