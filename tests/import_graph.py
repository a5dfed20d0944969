"""The project's import graph, read statically (``ast``), for the import tests.

Every ``import``/``from ... import`` counts, at module level or inside a function, under
``if TYPE_CHECKING:`` too (a type-only import still ties two modules together). A package's
implicit import of its parent (``import a.b.c`` runs ``a/b/__init__.py`` first) is not an edge:
it is how packages work, not a dependency one module chose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: (folder that is on sys.path, top-level package in it)
PACKAGES = ((ROOT, "telemhq_plugins"), (ROOT / "server", "telemhq_server"))


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    #: imported project module -> line numbers
    imports: dict[str, list[int]] = field(default_factory=dict)
    #: "line: what" for each private name of another project module this one uses
    private_uses: list[str] = field(default_factory=list)

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def discover(packages: Iterable[tuple[Path, str]] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for base, top in packages:
        for path in sorted((base / top).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package)
    tops = {top for _, top in packages}
    for module in modules.values():
        _read(module, modules, tops)
    return modules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module_outside(target: str, importer: Module) -> str | None:
    """The first private segment of ``target`` (e.g. ``celery._handlers``) when ``importer``
    is not inside the package that owns it."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            owner = ".".join(parts[:i])
            if importer.name != owner and not importer.name.startswith(owner + "."):
                return ".".join(parts[: i + 1])
            return None
    return None


def _read(module: Module, modules: dict[str, Module], tops: set[str]) -> None:
    tree = ast.parse(module.path.read_text(), str(module.path))
    #: local name -> project module it is bound to (for ``alias._private`` reads)
    bound: dict[str, str] = {}

    def edge(target: str, line: int) -> None:
        if target != module.name:
            module.imports.setdefault(target, []).append(line)
        private = _private_module_outside(target, module)
        if private is not None:
            module.private_uses.append(f"{line}: imports the private module {private}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    edge(alias.name, node.lineno)
                    bound[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module)
            if source is None or source.split(".")[0] not in tops:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    edge(submodule, node.lineno)
                    bound[alias.asname or alias.name] = submodule
                    continue
                edge(source, node.lineno)
                owner = modules.get(source)
                if _is_private(alias.name) and owner is not None and not _inside(module, owner):
                    module.private_uses.append(f"{node.lineno}: from {source} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and _is_private(node.attr)
            and f"{bound[node.value.id]}.{node.attr}" not in modules
            and not _inside(module, modules[bound[node.value.id]])
        ):
            module.private_uses.append(
                f"{node.lineno}: {node.value.id}.{node.attr} ({bound[node.value.id]})"
            )


def _inside(importer: Module, owner: Module) -> bool:
    """Only the module that defines a private name may use it."""
    return importer.name == owner.name


def _absolute(node: ast.ImportFrom, module: Module) -> str | None:
    if node.level == 0:
        return node.module
    base = module.package.split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(name: str) -> None:
        nonlocal counter
        index[name] = low[name] = counter
        counter += 1
        stack.append(name)
        on_stack.add(name)
        for target in modules[name].imports:
            if target not in modules:
                continue
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def describe(group: list[str], modules: dict[str, Module]) -> Iterator[str]:
    """The edges inside one cycle, with their lines, for the failure message."""
    members = set(group)
    for name in group:
        for target, lines in sorted(modules[name].imports.items()):
            if target in members:
                yield f"{name} -> {target} (line {', '.join(map(str, sorted(set(lines))))})"
