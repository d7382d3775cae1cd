"""The import direction between gateway's packages, read from the source.

The layers, bottom up: the HTTP transport (`backends/transport/`), the adapters
(`backends/`), the store, the dispatcher, and the HTTP faces (`api/`, `ui/`,
`webhooks/`). A lower layer importing a higher one makes a cycle sooner or
later, and a cycle is what had pacing and Retry-After parsing in `dispatch/`
while `backends/` sent the requests. Every import counts, including those
inside functions and `if TYPE_CHECKING:` blocks: a dependency for the type
checker is still one a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import gateway

GATEWAY = Path(gateway.__file__).parent


class Rule(msgspec.Struct, frozen=True):
    importer: str  # a package: the rule covers it and everything under it
    forbidden: tuple[str, ...] = ()
    # When set, the only gateway packages it may import (its own always allowed).
    only: tuple[str, ...] | None = None


RULES = (
    Rule(
        "gateway.backends",
        forbidden=(
            "gateway.dispatch",
            "gateway.store",
            "gateway.api",
            "gateway.webhooks",
            "gateway.ui",
        ),
    ),
    # The transport is one layer under the adapters: it knows their error types
    # (`backends.base`) and nothing of any one backend, its mapping or settings.
    # `gateway.tracing` imports nothing of the gateway: each call is a span.
    Rule("gateway.backends.transport", only=("gateway.backends.base", "gateway.tracing")),
    Rule("gateway.store", forbidden=("gateway.api", "gateway.dispatch", "gateway.ui")),
    Rule("gateway.dispatch", forbidden=("gateway.api", "gateway.ui")),
    # The calling apps' client: the schema and the status views' structs, never
    # the server (no starlette, no store, no settings in an app that imports it).
    Rule(
        "gateway.client",
        only=("gateway.schema", "gateway.store.base", "gateway.ui.profile_view"),
    ),
)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module name an import in `tree` may load. `from a import b` yields
    both `a` and `a.b`: `b` may be a submodule, and when it is a plain name
    `a.b` lies within `a` for every rule anyway."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Relative: resolved against the importing package.
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _imports() -> dict[str, set[str]]:
    """gateway module -> the gateway modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(GATEWAY.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = {
            name
            for name in _imported(tree, module, path.name == "__init__.py")
            if _within(name, "gateway")
        }
    return graph


GRAPH = _imports()


def _breaks(rule: Rule, imported: str) -> bool:
    if _within(imported, rule.importer) or imported == "gateway":
        return False
    if rule.only is not None:
        return not any(_within(imported, allowed) for allowed in rule.only)
    return any(_within(imported, forbidden) for forbidden in rule.forbidden)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.importer)
def test_imports_follow_the_layers(rule: Rule) -> None:
    covered = [module for module in GRAPH if _within(module, rule.importer)]
    assert covered, f"no module under {rule.importer}: the rule guards nothing"
    wrong = sorted(
        f"{module} imports {imported}"
        for module in covered
        for imported in GRAPH[module]
        if _breaks(rule, imported)
    )
    assert wrong == []


def test_the_scan_sees_imports_in_functions_and_type_checking_blocks() -> None:
    # Guards the rules against passing because the scan found nothing.
    assert "gateway.backends.base" in GRAPH["gateway.dispatch.dispatcher"]
    # api/common.py imports the pacer under `if TYPE_CHECKING:` only.
    assert "gateway.backends.transport.pacing" in GRAPH["gateway.api.common"]


def test_relative_imports_resolve_against_the_package() -> None:
    tree = ast.parse("from . import a\nfrom ..b import c\n")
    names = set(_imported(tree, "gateway.x.y", is_package=False))
    assert names == {"gateway.x", "gateway.x.a", "gateway.b", "gateway.b.c"}
    names = set(_imported(tree, "gateway.x", is_package=True))
    assert names == {"gateway.x", "gateway.x.a", "gateway.b", "gateway.b.c"}
