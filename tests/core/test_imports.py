"""The import graph of ``telemhq_plugins`` is a tree: no cycle, no private name of another
module (see ``tests/import_graph.py`` for what counts)."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import ROOT, cycles, describe, discover


def test_the_checker_finds_a_cycle_and_a_private_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("A = 1\n\ndef f():\n    from pkg.b import B\n    return B\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\nB = 2\n"
    )
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_impl.py").write_text("_x = 1\n")
    (pkg / "sub" / "c.py").write_text("from pkg.sub._impl import _x\n")
    (pkg / "d.py").write_text("from pkg.sub import _impl\nfrom pkg.sub import c\nc._y\n")
    modules = discover([(tmp_path, "pkg")])
    assert cycles(modules) == [["pkg.a", "pkg.b"]]
    assert list(describe(["pkg.a", "pkg.b"], modules)) == [
        "pkg.a -> pkg.b (line 4)",
        "pkg.b -> pkg.a (line 3)",
    ]
    assert modules["pkg.sub.c"].private_uses == ["1: from pkg.sub._impl import _x"]
    assert modules["pkg.d"].private_uses == [
        "1: imports the private module pkg.sub._impl",
        "3: c._y (pkg.sub.c)",
    ]


def test_telemhq_plugins_has_no_import_cycle() -> None:
    modules = discover([(ROOT, "telemhq_plugins")])
    assert len(modules) > 20
    found = [list(describe(group, modules)) for group in cycles(modules)]
    assert found == []


def test_no_module_uses_another_modules_private_names() -> None:
    modules = discover([(ROOT, "telemhq_plugins")])
    uses = {m.name: m.private_uses for m in modules.values() if m.private_uses}
    assert uses == {}
