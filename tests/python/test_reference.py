"""docs/reference.md against the code, in both directions.

Every public name the code has (Python methods and their parameters, result
fields, C functions, statuses and structs, Rust `CreditManager` methods,
error codes, limits, metrics, report fields, environment variables) must be
in the reference, and every such name the reference lists must exist in the
code. Names are read from the built module (inspect) and from the sources
(include/creditgate.h, src/*.rs, python/creditgate/*.py, examples/*.py).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import creditgate
import pytest
from creditgate import AsyncLocalCreditManager, CreditError, LocalCreditManager

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
HEADER = (ROOT / "include" / "creditgate.h").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the `## title` section (up to the next `## `)."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", REFERENCE, re.S | re.M)
    assert m, f"docs/reference.md has no section '## {title}'"
    return m.group(1)


def table_column(text: str, column: int = 0) -> list[str]:
    """The backquoted names in one column of the markdown tables of `text`."""
    names = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names += re.findall(r"`([^`(]+)", cells[column])[:1]
    return names


def rust_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "src").rglob("*.rs")))


# ----- Python -------------------------------------------------------------------


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    out = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = getattr(cls, name)
        if callable(attr):
            out[name] = inspect.signature(attr)
    return out


PY = section("Python: `LocalCreditManager`")
PY_CALLS = PY.split("### Result types", 1)[0]
METHOD_ROW = re.compile(r"`([A-Za-z_]+)\(([^`]*)\)`")


def documented_methods(text: str) -> dict[str, set[str]]:
    """method -> parameter names, from `name(a, *, b=None)` spellings."""
    out: dict[str, set[str]] = {}
    for name, params in METHOD_ROW.findall(text):
        names = {p.split("=")[0].strip() for p in params.split(",")} - {"*", ""}
        out.setdefault(name, set()).update(names)
    return out


def test_every_python_method_and_parameter_is_documented() -> None:
    documented = documented_methods(PY_CALLS)
    problems = []
    for name, sig in public_methods(LocalCreditManager).items():
        if name not in documented:
            problems.append(f"LocalCreditManager.{name} is not in the reference")
            continue
        for param in sig.parameters:
            if param != "self" and param not in documented[name]:
                problems.append(f"LocalCreditManager.{name}: parameter {param!r} is not in the reference")
    ctor = inspect.signature(LocalCreditManager)
    for param in ctor.parameters:
        if param not in documented.get("LocalCreditManager", set()):
            problems.append(f"LocalCreditManager(): parameter {param!r} is not in the reference")
    assert not problems, "\n".join(problems)


def test_every_documented_python_method_and_parameter_exists() -> None:
    methods = public_methods(LocalCreditManager)
    methods["LocalCreditManager"] = inspect.signature(LocalCreditManager)
    missing = set()
    for name, params in documented_methods(PY_CALLS).items():
        if name not in methods:
            missing.add(name)
            continue
        for param in params - set(methods[name].parameters):
            missing.add(f"{name}({param})")
    assert not missing, f"documented but not in the code: {sorted(missing)}"


def result_classes() -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(creditgate._creditgate).items()
        if isinstance(cls, type) and callable(getattr(cls, "to_dict", None)) and not issubclass(cls, BaseException)
    }


def documented_fields() -> dict[str, set[str]]:
    text = PY.split("### Result types", 1)[1]
    out = {}
    for line in text.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*) \|$", line)
        if m and "`" in m.group(2):
            out[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return out


def test_every_result_field_is_documented_and_exists() -> None:
    documented = documented_fields()
    classes = result_classes()
    problems, missing = [], set()
    for name, cls in classes.items():
        fields = {n for n in dir(cls) if not n.startswith("_") and not callable(getattr(cls, n))}
        if name == "Report":
            continue  # its own table, below
        if name not in documented:
            problems.append(f"result type {name} is not in the reference")
            continue
        problems += [f"{name}.{f} is not in the reference" for f in sorted(fields - documented[name])]
        missing |= {f"{name}.{f}" for f in documented[name] - fields}
    missing |= {name for name in documented if name not in classes}
    assert not problems, "\n".join(problems)
    assert not missing, f"documented but not in the code: {sorted(missing)}"


def test_every_report_field_is_documented_and_exists() -> None:
    fields = {
        n for n in dir(creditgate.Report) if not n.startswith("_") and not callable(getattr(creditgate.Report, n))
    }
    documented = set(table_column(section("Python: `LocalCreditManager`").split("### `report()`", 1)[1]))
    assert fields == documented, (sorted(fields - documented), sorted(documented - fields))


def test_every_async_extra_is_documented() -> None:
    text = section("Python: `AsyncLocalCreditManager`")
    sync = set(public_methods(LocalCreditManager))
    extra = {n for n in dir(AsyncLocalCreditManager) if not n.startswith("_")} - sync
    assert extra, "AsyncLocalCreditManager has no members of its own?"
    assert not [n for n in sorted(extra) if f"`{n}" not in text and f".{n}(" not in text], text
    params = set(inspect.signature(AsyncLocalCreditManager).parameters)
    assert params - set(inspect.signature(LocalCreditManager).parameters) == {"max_workers"}
    assert "`max_workers=None`" in text
    for name in sync:  # and every sync method is a coroutine there
        assert inspect.iscoroutinefunction(getattr(AsyncLocalCreditManager, name)), name


# ----- errors --------------------------------------------------------------------


def error_table() -> dict[str, tuple[str, int]]:
    """code -> (ErrorCode variant, HTTP status), from src/error.rs."""
    src = (ROOT / "src" / "error.rs").read_text(encoding="utf-8")
    codes = dict(re.findall(r'ErrorCode::(\w+) => "(\w+)"', src))
    statuses = dict(re.findall(r"ErrorCode::(\w+) => (\d{3})", src))
    assert codes and statuses.keys() == codes.keys()
    return {code: (variant, int(statuses[variant])) for variant, code in codes.items()}


def c_enum(name: str) -> dict[str, int]:
    body = re.search(rf"^enum {name}\n.*?^ \{{(.*?)^\}};", HEADER, re.S | re.M)
    assert body, f"no enum {name} in the header"
    return {n: int(v) for n, v in re.findall(r"\b(CG_[A-Z_]+) = (\d+)", body.group(1))}


def c_statuses() -> dict[str, int]:
    return c_enum("cg_status")


def test_every_error_code_is_documented_with_its_status_class_and_c_status() -> None:
    text = section("Errors")
    rows = {r[0]: r for r in (table_column_rows(text))}
    classes = {
        cls.code: cls.__name__
        for cls in vars(creditgate).values()
        # The class of each code (a subclass of it, such as WebhookVerificationError, is not).
        if isinstance(cls, type) and issubclass(cls, CreditError) and cls.__bases__[0] is CreditError
    }
    c_by_value = {v: k for k, v in c_statuses().items()}
    problems = []
    for code, (variant, http) in error_table().items():
        row = rows.get(code)
        if row is None:
            problems.append(f"error code {code} is not in the reference")
            continue
        enum = re.search(r"pub enum ErrorCode \{(.*?)\}", error_rs(), re.S)
        assert enum
        number = dict(re.findall(r"(\w+) = (\d+),", enum.group(1)))[variant]
        expected_class = classes.get(code, "CreditError")
        if str(http) != row[1]:
            problems.append(f"{code}: HTTP {row[1]} documented, {http} in src/error.rs")
        if f"`{expected_class}`" not in row[2]:
            problems.append(f"{code}: Python class {expected_class} not in {row[2]!r}")
        if f"`{c_by_value[int(number)]}` ({number})" not in row[3]:
            problems.append(f"{code}: C status {c_by_value[int(number)]} ({number}) not in {row[3]!r}")
    problems += [f"documented code {c} is not in src/error.rs" for c in rows if c not in error_table()]
    assert not problems, "\n".join(problems)


def error_rs() -> str:
    return (ROOT / "src" / "error.rs").read_text(encoding="utf-8")


def table_column_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            cells[0] = cells[0].strip("`")
            rows.append(cells)
    return rows


# ----- C --------------------------------------------------------------------------


def test_every_c_function_status_and_struct_is_documented_and_exists() -> None:
    text = section("C: `include/creditgate.h`")
    functions = set(re.findall(r"\b(cg_\w+)\s*\(", HEADER))
    structs = set(re.findall(r"typedef struct (cg_\w+)", HEADER))
    statuses = set(c_statuses())
    mentioned = set(re.findall(r"`(cg_\w+)", text))
    errors_text = section("Errors")
    problems = [f"C function {f} is not in the reference" for f in sorted(functions - mentioned)]
    problems += [f"C struct {s} is not in the reference" for s in sorted(structs - mentioned - {"cg_manager"})]
    problems += [f"C status {s} is not in the reference" for s in sorted(statuses) if f"`{s}`" not in errors_text]
    assert not problems, "\n".join(problems)
    enums = {"cg_hold_status", "cg_topup_status"}
    known = functions | structs | enums | {"cg_manager", "cg_status"}
    missing = set(re.findall(r"\b(cg_\w+)", REFERENCE)) - known
    missing |= set(re.findall(r"\b(CG_[A-Z_]+)\b", REFERENCE)) - statuses - {v for e in enums for v in c_enum(e)}
    assert not missing, f"documented but not in the header: {sorted(missing)}"


def test_c_hold_fields() -> None:
    hold = re.search(r"typedef struct cg_hold \{(.*?)\} cg_hold;", HEADER, re.S)
    assert hold
    fields = set(re.findall(r"(\w+)(?:\[\w+\])?;", hold.group(1)))
    assert {"hold_id", "amount_micros", "replayed", "status"} <= fields
    assert set(c_enum("cg_hold_status")) == {"CG_HOLD_ACTIVE", "CG_HOLD_SETTLED", "CG_HOLD_RELEASED", "CG_HOLD_EXPIRED"}
    for status in c_enum("cg_hold_status"):
        assert f"`{status}`" in REFERENCE, status


# ----- Rust -------------------------------------------------------------------------


def rust_manager_methods() -> set[str]:
    names = set()
    for path in (ROOT / "src").rglob("*.rs"):
        src = path.read_text(encoding="utf-8")
        for block in re.findall(r"^impl CreditManager \{\n(.*?)^\}", src, re.S | re.M):
            names |= set(re.findall(r"^    pub fn (\w+)", block, re.M))
            # Hidden helpers of the bindings are not public API.
            names -= set(re.findall(r"^    #\[doc\(hidden\)\]\n    pub fn (\w+)", block, re.M))
    assert {"open", "reserve", "import_users"} <= names
    return names


def test_every_rust_method_is_documented_and_exists() -> None:
    text = section("Rust: `creditgate::CreditManager`")
    listed = set(re.findall(r"`(\w+)`", text))
    methods = rust_manager_methods()
    assert not sorted(methods - listed), f"not in the reference: {sorted(methods - listed)}"
    paragraph = re.search(r"methods mirror.*?:\n\n(.*?)\n\n", text, re.S)
    assert paragraph
    documented = set(re.findall(r"`(\w+)`", paragraph.group(1)))
    assert documented <= methods, f"documented but not in the code: {sorted(documented - methods)}"


# ----- limits, metrics, environment -------------------------------------------------------


def test_every_limit_is_documented_and_exists() -> None:
    src = rust_source()
    limits = set(re.findall(r"pub const (MAX_\w+|RESERVED_KEY_PREFIXES)\b", src))
    limits -= {"MAX_AMOUNT_MICROS"}  # MAX_AMOUNT_CREDITS in micro-credits
    documented = set(table_column(section("Limits")))
    assert limits == documented, (sorted(limits - documented), sorted(documented - limits))


def counters() -> set[str]:
    src = (ROOT / "src" / "metrics.rs").read_text(encoding="utf-8")
    block = re.search(r"counters!\((.*?)\);", src, re.S)
    assert block
    return set(re.findall(r"^\s*(\w+) =>", block.group(1), re.M)) | {"errors_total"}


def test_every_metric_is_documented_and_exists() -> None:
    text = section("Metrics")
    documented = set(table_column(text))
    assert counters() == documented, (sorted(counters() - documented), sorted(documented - counters()))
    src = (ROOT / "src" / "metrics.rs").read_text(encoding="utf-8")
    histograms = set(re.findall(r'"(creditgate_\w+_seconds)"', src))
    prometheus = (ROOT / "python/creditgate/prometheus.py").read_text()
    gauges = set(re.findall(r'"(creditgate_(?:ledger|webhook)_\w+)"', prometheus))
    named = set(re.findall(r"`(creditgate_\w+)`", text))
    assert histograms and histograms <= named, sorted(histograms - named)
    assert gauges & named, "no ledger gauge documented"
    assert named <= histograms | gauges, f"documented but not in the code: {sorted(named - histograms - gauges)}"
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        for name in re.findall(r"`creditgate_(\w+?_total)`", line):
            assert name in counters(), f"docs/metrics.md names {name}, not a counter"


ENV_READ = re.compile(r'(?:\benv(?:::var)?\(|environ\.get\(|environ\[|_env_int\(|getenv\()\s*"([A-Z][A-Z0-9_]+)"')


def env_vars_read() -> set[str]:
    """Every environment variable the core, the package and the examples read."""
    files = [
        *(ROOT / "src").rglob("*.rs"),
        *(ROOT / "python" / "creditgate").rglob("*.py"),
        *(ROOT / "examples").glob("*.py"),
    ]
    names = set()
    for path in files:
        text = path.read_text(encoding="utf-8")
        names |= set(ENV_READ.findall(text))
        # Named through a constant (the example gateway, the dashboard).
        names |= set(re.findall(r'^\w+_ENV = "([A-Z_]+)"', text, re.M))
    return {n for n in names if not n.startswith("CREDITGATE_TEST_")}


def test_every_environment_variable_is_documented_and_read() -> None:
    read = env_vars_read()
    assert {"DATABASE_URL", "CREDITGATE_LOW_BALANCE_THRESHOLDS", "WEBHOOK_SECRET", "GATEWAY_ADMIN_TOKEN"} <= read
    documented = set(table_column(section("Environment variables")))
    assert read == documented, (sorted(read - documented), sorted(documented - read))


def test_the_quickstart_environment_table_lists_every_core_variable() -> None:
    """docs/quickstart-python.md's table is linked as "the full list"."""
    core = set(ENV_READ.findall((ROOT / "src" / "config.rs").read_text(encoding="utf-8")))
    assert "CREDITGATE_LOW_BALANCE_THRESHOLDS" in core
    page = (ROOT / "docs" / "quickstart-python.md").read_text(encoding="utf-8")
    table = page.split("## 3. Settings from the environment", 1)[1].split("```", 1)[0]
    documented = set(table_column(table))
    assert core == documented, (sorted(core - documented), sorted(documented - core))


# ----- the repository stands alone ---------------------------------------------------------

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_pages_link_only_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            problems.append(f"external link {target}")
            continue
        path = target.split("#", 1)[0]
        if not path:
            continue
        resolved = (page.parent / path).resolve()
        if ROOT not in resolved.parents and resolved != ROOT:
            problems.append(f"{target} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{target} does not exist")
    if re.search(r"\bSPEC\b|\.\./shared|shared/seed", text):
        problems.append("mentions SPEC / ../shared, which a clone does not have")
    assert not problems, problems


def test_licenses_match_the_metadata() -> None:
    cargo = (ROOT / "Cargo.toml").read_text(encoding="utf-8")
    assert 'license = "MIT OR Apache-2.0"' in cargo
    assert "Apache License" in (ROOT / "LICENSE-APACHE").read_text(encoding="utf-8")
    assert "MIT License" in (ROOT / "LICENSE-MIT").read_text(encoding="utf-8")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version, "Cargo.toml has a version"
    assert f"## {version.group(1)} " in changelog, "the CHANGELOG has a section for the current version"
