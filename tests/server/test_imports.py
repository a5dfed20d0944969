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


def test_every_part_with_a_register_function_is_in_the_app() -> None:
    """A module that can plug into the server (a module-level ``register``) is one of the
    app's parts: nothing is left out by a rename, and nothing is loaded by name."""
    import importlib
    import pkgutil

    import telemhq_server
    from telemhq_server.app import PARTS

    registers = set()
    for info in pkgutil.walk_packages(telemhq_server.__path__, "telemhq_server."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        register = getattr(module, "register", None)
        if callable(register):
            registers.add(f"{register.__module__}.{register.__qualname__}")
    assert registers == {f"{r.__module__}.{r.__qualname__}" for r in PARTS}
