"""common/secret_table.py against the code: each function is granted exactly the secrets
its code reads and writes, and docs/deploy.md shows the table as it is.

What a function's code does with secrets is found by reading the source, not the table:
from the function's entry point in main.py, every top-level definition it can reach
(following names, imports, function-local imports and the scheduler's ``(module,
function)`` job table) is searched for secret-store calls whose argument names a secret
as a positional argument (``put`` writes, ``invalidate`` does neither, any other call reads), and for settings
fields that Secret Manager puts into the environment (``settings.notify_webhook_url``).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import replace
from pathlib import Path

import pytest

from common import secret_table
from common.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "functions")
# Settings fields that are secrets delivered through the environment (mounted).
SECRET_FIELDS = {name: field.alias for name, field in Settings.model_fields.items()
                 if field.alias in secret_table.NAMES}


class Module:
    """One source file: its top-level definitions, imports and string constants."""

    def __init__(self, name: str) -> None:
        self.name = name
        path = REPO / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        self.tree = ast.parse(path.read_text(), str(path))
        self.defs: dict[str, ast.AST] = {}
        self.constants: dict[str, str] = {}
        self.values: dict[str, ast.expr] = {}  # NAME = <expression>, e.g. secret_table.FYERS_PIN
        self.imports: dict[str, tuple[str, str | None]] = {}  # alias -> (module, attribute)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defs[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in (t for t in targets if isinstance(t, ast.Name)):
                    self.defs[target.id] = node
                    self.values[target.id] = node.value
                    if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                        self.constants[target.id] = node.value.value
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.update(imports_of(node))


def imports_of(node: ast.Import | ast.ImportFrom) -> dict[str, tuple[str, str | None]]:
    if isinstance(node, ast.Import):
        return {(a.asname or a.name.split(".")[0]): (a.name, None) for a in node.names}
    base = node.module or ""
    return {(a.asname or a.name): (base, a.name) for a in node.names}


def is_repo_module(name: str) -> bool:
    path = REPO / Path(*name.split("."))
    return name.split(".")[0] in PACKAGES + ("main",) and (path.with_suffix(".py").is_file() or path.is_dir())


@functools.cache
def module(name: str) -> Module:
    return Module(name)


def target(mod: str, attr: str | None) -> tuple[str, str | None] | None:
    """What ``from mod import attr`` binds: a repo module (attr None) or a definition
    (module, name), following re-exports; None outside the repo."""
    if attr is not None and is_repo_module(f"{mod}.{attr}"):
        return f"{mod}.{attr}", None
    if not is_repo_module(mod):
        return None
    if attr is None:
        return mod, None
    m = module(mod)
    if attr in m.defs:
        return mod, attr
    if attr in m.imports:
        return target(*m.imports[attr])
    return None


def constant(mod: str, attr: str) -> str | None:
    """The string that ``mod.attr`` holds, through re-exports and ``NAME = other.NAME``."""
    found = target(mod, attr)
    if not found or found[1] is None:
        return None
    m = module(found[0])
    if found[1] in m.constants:
        return m.constants[found[1]]
    value = m.values.get(found[1])
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id in m.imports:
        bound = target(*m.imports[value.value.id])
        return constant(bound[0], value.attr) if bound and bound[1] is None else None
    return None


def secret_in(node: ast.AST, mod: Module, local: dict) -> str | None:
    """The secret that an argument expression names, if any."""
    value = None
    if isinstance(node, ast.Constant):
        value = node.value
    elif isinstance(node, ast.Name):
        if node.id in local:
            value = constant(*local[node.id]) if local[node.id][1] else None
        else:
            value = constant(mod.name, node.id)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in local:
        bound = target(*local[node.value.id])
        value = constant(bound[0], node.attr) if bound and bound[1] is None else None
    return value if value in secret_table.NAMES else None


def secret_use(entry: str) -> tuple[set[str], set[str]]:
    """(reads, writes) of the code reachable from main.py's ``entry`` function."""
    reads, writes = set(), set()
    seen, todo = set(), [("main", entry)]
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        mod = module(unit[0])
        body = mod.defs[unit[1]]
        local = dict(mod.imports)
        for node in ast.walk(body):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                local.update(imports_of(node))
        for node in ast.walk(body):
            reached = None
            if isinstance(node, ast.Name):
                if node.id in mod.defs and node.id not in local:
                    reached = (mod.name, node.id)
                elif node.id in local:
                    reached = target(*local[node.id])
            elif isinstance(node, ast.Attribute):
                if node.attr in SECRET_FIELDS:
                    reads.add(SECRET_FIELDS[node.attr])
                if isinstance(node.value, ast.Name) and node.value.id in local:
                    bound = target(*local[node.value.id])
                    if bound and bound[1] is None:
                        reached = target(bound[0], node.attr)
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                # The scheduler's job table: ("functions.jobs.session", "run_session_job").
                reached = target(node.elts[0].value, node.elts[1].value)
            elif isinstance(node, ast.Call):
                verb = node.func.attr if isinstance(node.func, ast.Attribute) else None
                for arg in node.args:  # positional: `Field(alias="NOTIFY_WEBHOOK_URL")` reads nothing
                    name = secret_in(arg, mod, local)
                    if name and verb != "invalidate":
                        (writes if verb == "put" else reads).add(name)
            if reached and reached[1] is not None:
                todo.append(reached)
    return reads, writes


def entry_point(function: str) -> str:
    return function.replace("-", "_")  # deploy.sh: `deploy_function order-worker order_worker ...`


@functools.cache
def code_use() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    return {f: tuple(map(frozenset, secret_use(entry_point(f)))) for f in secret_table.ACCESS}


def problems(access: dict[str, secret_table.Access]) -> list[str]:
    """Where a table and the code disagree."""
    found = []
    for function, (reads, writes) in code_use().items():
        granted = access[function]
        found += [f"{function} reads {s} but is not granted it" for s in sorted(reads - granted.reads)]
        found += [f"{function} writes {s} but is not granted it" for s in sorted(writes - granted.writes)]
        found += [f"{function} is granted reading {s} but never reads it" for s in sorted(granted.reads - reads)]
        found += [f"{function} is granted writing {s} but never writes it" for s in sorted(granted.writes - writes)]
        found += [f"{function} mounts {s} but may not read it" for s in sorted(granted.mounts - granted.reads)]
    return found


def test_every_function_is_granted_exactly_the_secrets_its_code_reads_and_writes():
    assert problems(secret_table.ACCESS) == []


def test_the_analysis_sees_the_reads_that_motivated_the_table():
    """Guards the analysis itself: these reads and writes are known from the code."""
    use = code_use()
    assert "TELEGRAM_BOT_TOKEN" in use["auth"][0]  # auth's notifier
    assert {"FYERS_ACCESS_TOKEN", "FYERS_REFRESH_TOKEN"} <= use["scheduler"][1]  # the session job's renewal
    assert "FYERS_SECRET_KEY" not in use["order-worker"][0]
    assert use["webhook"] == (frozenset({"WEBHOOK_SECRET"}), frozenset())


GRANTS = [(f, verb, s) for f, a in secret_table.ACCESS.items() for verb in ("reads", "writes")
          for s in sorted(getattr(a, verb))]


@pytest.mark.parametrize(("function", "verb", "secret"), GRANTS, ids=["-".join(g) for g in GRANTS])
def test_removing_any_grant_from_the_table_is_caught(function, verb, secret):
    table = dict(secret_table.ACCESS)
    table[function] = replace(table[function], **{verb: getattr(table[function], verb) - {secret}})
    assert any(secret in problem and function in problem for problem in problems(table))


def test_an_extra_grant_is_caught():
    table = dict(secret_table.ACCESS)
    table["order-worker"] = replace(table["order-worker"], reads=table["order-worker"].reads | {"FYERS_SECRET_KEY"})
    assert problems(table) == ["order-worker is granted reading FYERS_SECRET_KEY but never reads it"]


def test_every_secret_the_code_names_is_in_the_table():
    """A secret-looking constant (``*_SECRET``, ``*_TOKEN``...) outside the table would be
    read under a name that no deploy creates or grants."""
    for path in [*(REPO / "common").rglob("*.py"), *(REPO / "functions").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                    isinstance(t, ast.Name) and t.id.endswith("_SECRET") for t in node.targets):
                assert node.value.value in secret_table.NAMES, f"{path}: {ast.unparse(node)}"


def test_docs_show_the_table_as_it_is():
    assert secret_table.markdown() in (REPO / "docs" / "deploy.md").read_text()


def test_mounted_secrets_that_are_settings_are_exactly_the_settings_secrets():
    mounted = set().union(*(a.mounts for a in secret_table.ACCESS.values()))
    assert set(SECRET_FIELDS.values()) <= mounted
