"""The import graph of the server (with the client core it uses) is a tree: no cycle, no
private name of another module (see ``tests/import_graph.py`` for what counts)."""

from __future__ import annotations

from tests.import_graph import PACKAGES, cycles, describe, discover


def test_the_server_has_no_import_cycle() -> None:
    modules = discover(PACKAGES)
    assert "telemhq_server.ingest.writer" in modules
    found = [
        list(describe(group, modules))
        for group in cycles(modules)
        if any(name.startswith("telemhq_server") for name in group)
    ]
    assert found == []


def test_no_server_module_uses_another_modules_private_names() -> None:
    modules = discover(PACKAGES)
    uses = {
        m.name: m.private_uses
        for m in modules.values()
        if m.private_uses and m.name.startswith("telemhq_server")
    }
    assert uses == {}
