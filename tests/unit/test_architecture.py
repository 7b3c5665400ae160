"""The dependency rule of ARCHITECTURE.md, checked on the source."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOTS = {"pager_actors/__main__.py", "pager_actors/cli.py",
                     "pager_actors/daemon/run.py"}
# Pager.start falls back to the in-memory store when given none (issue #3's contract).
DEFAULT_ADAPTERS = {("pager_actors/_pager.py", "adapters.memory")}


def imports_of(path: Path, package: tuple[str, ...] | None = None) -> set[str]:
    """Absolute names of every module `path` imports, relative imports resolved."""
    if package is None:
        package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            if not node.module:  # from . import x: x may be a module
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_relative_imports_are_resolved(tmp_path):
    """`from .. import _counters` inside the domain counts as importing pager_actors._counters."""
    probe = tmp_path / "probe.py"
    probe.write_text("from .. import _counters\nfrom . import model\n")
    names = imports_of(probe, package=("pager_actors", "domain"))
    assert {"pager_actors._counters", "pager_actors.domain.model"} <= names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_domain_imports_only_stdlib_and_itself():
    """The domain and the on-call arithmetic are pure: nothing outside the standard library."""
    for path in [*modules("pager_actors/domain"), *modules("pager_actors/oncall")]:
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith(
                ("pager_actors.domain", "pager_actors.oncall", "pager_actors.cluster.shards")), (
                f"{path.relative_to(ROOT)} imports {name}")


def test_the_cluster_package_imports_only_stdlib_and_the_domain():
    """pager_actors/cluster is pure: the standard library, the domain and itself."""
    assert modules("pager_actors/cluster")
    for path in modules("pager_actors/cluster"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith(
                ("pager_actors.domain", "pager_actors.cluster")), (
                f"{path.relative_to(ROOT)} imports {name}")


def test_adapters_never_import_the_actor_runtime():
    """Adapters see only the domain, the on-call arithmetic, the shard map, the ports (the
    engine's and the console's), the engine's errors, the scheduler and the loggers, never
    actors."""
    for path in modules("adapters"):
        for name in imports_of(path):
            allowed = (not name.startswith(("pager_actors", "pykka"))
                       or name.startswith(("pager_actors.domain", "pager_actors.ports",
                                           "pager_actors.errors", "pager_actors.scheduler",
                                           "pager_actors.logs",
                                           "pager_actors.oncall", "pager_actors.cluster",
                                           "pager_actors.console.ports")))
            assert allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_the_consoles_ports_import_only_stdlib_and_the_domain():
    """pager_actors/console/ports.py, which adapters implement, imports nothing of the
    console or the engine: only the standard library and the domain."""
    path = ROOT / "pager_actors/console/ports.py"
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or name.startswith("pager_actors.domain"), (
            f"{path.relative_to(ROOT)} imports {name}")


def test_only_the_composition_root_imports_adapters():
    """The engine depends on ports; only the composition root names concrete adapters."""
    for path in modules("pager_actors"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in COMPOSITION_ROOTS:
            continue
        for name in imports_of(path):
            allowed = name.split(".")[0] != "adapters" or (rel, name) in DEFAULT_ADAPTERS
            assert allowed, f"{rel} imports {name}"


# What the console may import of the package: the facade, the domain, and the errors and
# logs every layer uses; never an actor, an adapter or the daemon.
CONSOLE_ALLOWED = ("pager_actors.console", "pager_actors.domain", "pager_actors._pager",
                   "pager_actors._future", "pager_actors.errors", "pager_actors.ports",
                   "pager_actors.logs")


def test_the_console_talks_to_the_engine_only_through_the_facade():
    """pager_actors/console imports the Pager facade, the domain and itself; nothing else of
    the engine, and no adapter, daemon or actor module."""
    for path in modules("pager_actors/console"):
        for name in imports_of(path):
            if name.split(".")[0] in ("pager_actors", "adapters", "pykka"):
                allowed = name == "pykka" or name.startswith(CONSOLE_ALLOWED)
                assert allowed, f"{path.relative_to(ROOT)} imports {name}"
