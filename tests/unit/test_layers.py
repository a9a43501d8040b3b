"""The broker's import graph: every module sits in a layer and imports only from its own
layer or below, and there is no import cycle. Every import counts, also those inside
functions and under TYPE_CHECKING: a lazy import that runs back up the layers is still a
dependency on what is above.

    entry     app, cli, demo, serving, __main__
    http      broker/http/ (the only Starlette importer in broker/)
    operations admin (the key and client actions), admin_actions (the admin API's), preflight
    protocol  server, grants/, endpoints/ (Authlib), client_policy (reads the grant registry)
    domain    components, sessions, throttle, audit_trail, upstream/custody, signin/,
              admin_access, revocation/
    tokens    tokens/
    upstream  upstream/ (capability protocols, the ShotGrid client)
    store     store/, clock
    base      settings, errors, logs, metrics, events, redirects, listen, affinity, contrast
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "broker"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "broker",
            "broker.settings",
            "broker.errors",
            "broker.logs",
            "broker.metrics",
            "broker.events",
            "broker.redirects",
            "broker.listen",
            "broker.affinity",
            "broker.contrast",
        ),
    ),
    ("store", ("broker.store", "broker.clock")),
    ("upstream", ("broker.upstream",)),
    ("tokens", ("broker.tokens",)),
    (
        "domain",
        (
            "broker.components",
            "broker.sessions",
            "broker.throttle",
            "broker.audit_trail",
            "broker.upstream.custody",
            "broker.signin",
            "broker.admin_access",
            "broker.revocation",
        ),
    ),
    ("protocol", ("broker.server", "broker.grants", "broker.endpoints", "broker.client_policy")),
    ("operations", ("broker.admin", "broker.admin_actions", "broker.preflight")),
    ("http", ("broker.http",)),
    ("entry", ("broker.app", "broker.cli", "broker.demo", "broker.serving", "broker.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer of the most specific prefix naming the module."""
    best, best_len = -1, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_len and (prefix != "broker" or module == "broker"):
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {t for t in imports_of(path, name) if t in modules and t != name}
        edges[name] = targets
    return edges


def test_every_module_has_a_layer() -> None:
    for module in graph():
        layer_of(module)


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = [
        f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for source, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    edges = graph()

    # A package's __init__ is imported by every submodule import; an __init__ that imports
    # its own submodules is the package assembling itself, not a cycle between modules.
    def deps(module: str) -> set[str]:
        return {t for t in edges[module] if not module.startswith(t + ".")}

    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(deps(module)):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []


def test_only_http_imports_starlette() -> None:
    offenders = [
        module
        for module, path in ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
        if not module.startswith(("broker.http", "broker.app"))
        and any(t == "starlette" or t.startswith("starlette.") for t in imports_of(path, module))
    ]
    assert offenders == []


@pytest.mark.parametrize(("source", "target"), [("broker.http.routes", "broker.app")])
def test_the_check_sees_an_upward_import(source: str, target: str) -> None:
    """The layer map itself: an http module importing the app would be refused."""
    assert layer_of(target) > layer_of(source)
