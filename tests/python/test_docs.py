"""Every fenced code block of README.md and docs/*.md is executed.

The pages are collected by glob when the tests are collected, so a page added
later is covered without editing this file. Each block is one test, with the
id ``<file>:<line>`` (the line of its opening fence). A block's language is
the first word of its info string; further words are attributes.

Rules, by language:

``python``
    Written to a file and run with this interpreter (``sys.executable``, the
    venv with the installed wheel) in a fresh temporary directory, with the
    creditgate settings (``DATABASE_URL``, ``API_KEY_PEPPER``, ...) removed
    from the environment (conftest.py's autouse fixture), within
    ``TIMEOUT`` seconds. It must exit 0.

``sh``, ``bash``, ``shell``, ``console``
    Run with ``bash -euo pipefail`` in a fresh temporary directory, the
    venv's ``bin`` first on ``PATH`` (so ``creditgate`` is the installed
    CLI), same environment and timeout. In a ``console`` block only the lines
    starting with ``$ `` are commands; the rest is sample output.

    Install, build and test commands of the repository cannot run per block:

    - a block that is exactly a command listed in ``COVERED`` is not run
      again; the test checks that the test command really runs it
      (``.ci/run`` runs ``bash scripts/test.sh``, which runs every
      ``scripts/test-*.sh``, and ``scripts/test-python.sh`` creates ``.venv``,
      builds the wheel of ``pip install .`` with ``pip wheel`` and installs
      that file, also into a fresh venv without a Rust toolchain through
      ``scripts/check-wheel.sh``; ``scripts/test-c.sh`` runs
      ``scripts/release-c.sh``) and runs the part that is cheap (for the
      README's install line: ``creditgate demo`` with the installed package);
    - a block whose text is in ``IN_REPOSITORY`` (``cargo build -p
      creditgate-c --release``, ``cargo run --release --example ...``: cheap
      once ``scripts/test-c.sh`` and ``scripts/test-rust.sh`` have built the
      tree) runs with the repository as its working directory; such a block
      writes only below ``target/``;
    - any other block that mentions ``pip install``, ``cargo``, ``make`` or
      ``scripts/`` fails: add it to one of the two lists, or rewrite it.

``c``
    Compiled with ``cc -std=c11 -Wall -Wextra -Werror`` against ``include/``
    and ``target/release/libcreditgate.a`` (built with ``cargo build -p
    creditgate-c --release`` when missing) with the system libraries of
    tests/c/Makefile, then run in a fresh temporary directory; it must exit
    0. A block without ``main`` is a fragment: it is compiled as the body of
    ``int main(void) { ... return 0; }`` after ``#include <stdio.h>``,
    ``<stdlib.h>``, ``<string.h>`` and ``"creditgate.h"``.

``rust``
    Run by ``cargo test --doc`` (scripts/test-rust.sh): the test checks that
    the page is included as a doctest in src/lib.rs
    (``#[doc = include_str!("../<page>")]`` under ``#[cfg(doctest)]``).

Every ``python``, ``sh`` and ``c`` block of the pages in ``RUN_TWICE``
(the quickstarts, the migration guide) runs **twice** in the same
directory: a reader who repeats a step (or runs a quickstart again in the
same folder) must not get an error.

attribute ``continued`` (e.g. ``sh continued``)
    Runs in the directory of the page's previous runnable block, after it,
    so a later step checks what an earlier step made (the same database).

attribute ``postgres`` (e.g. a ``python postgres`` block)
    Needs a PostgreSQL server: run only when ``CREDITGATE_TEST_BACKEND`` is
    ``postgres`` (the PostgreSQL pass of scripts/test-python.sh, with
    ``CREDITGATE_TEST_POSTGRES_URL``), with ``DATABASE_URL`` set to a fresh
    database; skipped in the SQLite pass. Blocks without it run in the
    SQLite pass only (skipped in the PostgreSQL pass: they do not depend on
    the backend).

Any other language (``text``, ``toml``, ``json``, ``ini``, ...) is not code:
allowed for sample output and configuration only, and listed in the summary
so that a reviewer sees them. A block without a language fails (rustdoc
would run it as Rust in an included page).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import IS_POSTGRES, psql, server_url, with_database

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"sh", "bash", "shell", "console"}
C_LANGS = {"c"}
RUST_LANGS = {"rust"}
BIN = Path(sys.executable).parent
LIB = ROOT / "target" / "release" / "libcreditgate.a"
# What the Rust static library needs from the system (tests/c/Makefile).
C_LIBS = ["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"]
C_PRELUDE = '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include "creditgate.h"\n'

# Blocks the test command itself runs (text -> what covers it, and the part
# of the block that this test runs, if any).
README_INSTALL = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/creditgate demo"
# docs/deploying.md: the wheel built once, then installed on a server.
WHEEL_BUILD = "python3 -m pip wheel --no-deps --wheel-dir dist ."
WHEEL_INSTALL = """python3 -m venv /opt/creditgate
/opt/creditgate/bin/pip install --no-index ./creditgate-*.whl
/opt/creditgate/bin/creditgate --version"""
RELEASE_C = "bash scripts/release-c.sh"
# Lines a script must contain for a recipe block to count as covered by it.
RECIPE_LINES: dict[str, dict[str, list[str]]] = {
    WHEEL_BUILD: {"scripts/test-python.sh": ['"$py" -m pip wheel --quiet --no-deps --wheel-dir dist .']},
    WHEEL_INSTALL: {
        "scripts/test-python.sh": ['bash scripts/check-wheel.sh "${wheels[0]}"'],
        "scripts/check-wheel.sh": [
            'run "$python" -m venv "$tmp/server"',
            'run "$tmp/server/bin/pip" install --quiet --no-index "$wheel"',
            'version=$(run "${cg[@]}" --version)',
        ],
    },
    RELEASE_C: {"scripts/test-c.sh": ["archive=$(bash scripts/release-c.sh | tail -n 1)"]},
}
COVERED: dict[str, tuple[str, str | None]] = {
    README_INSTALL: (
        "scripts/test-python.sh creates .venv and installs the wheel of `pip install .`; `creditgate demo` runs here",
        "creditgate demo",
    ),
    WHEEL_BUILD: ("scripts/test-python.sh builds the wheel this way", None),
    WHEEL_INSTALL: ("scripts/check-wheel.sh installs the wheel in a fresh venv without cargo, offline", None),
    RELEASE_C: ("scripts/test-c.sh builds the archive and a C program against its unpacked files", None),
    "bash scripts/test.sh": ("the test command itself (.ci/run)", None),
    "bash scripts/test-rust.sh": ("run by scripts/test.sh", None),
    "bash scripts/test-c.sh": ("run by scripts/test.sh", None),
    "bash scripts/test-postgres.sh": ("run by scripts/test.sh", None),
    "bash scripts/test-python.sh": ("run by scripts/test.sh", None),
}
# Blocks run with the repository as the working directory (cheap after the
# test command's builds). Comment lines are ignored when matching.
IN_REPOSITORY = {
    # docs/architecture.md: prints the module graph; writes nothing.
    "python3 scripts/module_graph.py --depth 1",
    "cargo run --release --example seed_scenarios",
    "cargo build -p creditgate-c --release",
    # docs/c-api.md: builds the library, links the C quickstart both ways
    # into target/ and runs it.
    """cargo build -p creditgate-c --release
cc -std=c11 -Iinclude examples/c/quickstart.c target/release/libcreditgate.a \\
   -lgcc_s -lutil -lrt -lpthread -lm -ldl -o target/quickstart-static    # static
cc -std=c11 -Iinclude examples/c/quickstart.c -Ltarget/release -lcreditgate \\
   -o target/quickstart-shared                                            # shared
target/quickstart-static
LD_LIBRARY_PATH=target/release target/quickstart-shared""",
}
IN_REPOSITORY_TIMEOUT = 900  # a cargo build after a source change takes minutes
BUILD_WORDS = re.compile(r"pip install|\bcargo\b|\bmake\b|scripts/")


def command_lines(text: str) -> str:
    """The block without comment-only and blank lines, each line stripped."""
    keep = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return "\n".join(keep)


IN_REPOSITORY_LINES = {command_lines(t) for t in IN_REPOSITORY}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    attrs: tuple[str, ...]
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def blocks_of(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        words = info.replace(",", " ").split()
        lang = words[0].lower() if words else ""
        yield Block(str(path.relative_to(ROOT)), start + 1, lang, tuple(words[1:]), "\n".join(body) + "\n")


ALL_BLOCKS = [b for p in pages() for b in blocks_of(p)]
# Pages whose blocks run twice in their directory: a reader who repeats a
# step, or runs a quickstart again in the same folder, gets no error. The
# other pages run once (not yet all rerunnable: operations.md, metrics.md,
# fastapi.md and policy-grants.md have blocks that assume an empty folder).
RUN_TWICE = {"docs/quickstart-python.md", "docs/quickstart-c.md", "docs/migration.md"}


def runs(block: Block) -> int:
    return 2 if block.page in RUN_TWICE else 1


# A block whose next runnable block on its page is `continued` keeps its
# directory for it (id -> directory, filled as the blocks run).
RUNNABLE_LANGS = {"python", "py", "sh", "bash", "shell", "console", "c"}


def _kept_for_next() -> set[str]:
    kept = set()
    for page in {b.page for b in ALL_BLOCKS}:
        runnable = [b for b in ALL_BLOCKS if b.page == page and b.lang in RUNNABLE_LANGS]
        kept |= {prev.id for prev, nxt in zip(runnable, runnable[1:]) if "continued" in nxt.attrs}
    return kept


KEEP_FOR_NEXT = _kept_for_next()
KEPT_DIRS: dict[str, Path] = {}
RAN: Counter[str] = Counter()
NOT_CODE: list[Block] = []
COVERED_BLOCKS: list[Block] = []


def child_env(tmp: Path) -> dict[str, str]:
    # conftest.py's autouse fixture has already removed the creditgate settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_TEST_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = env.get("HOME", str(tmp))
    env["TMPDIR"] = str(tmp)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], what: Block, timeout: int = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what.id}: timed out after {timeout} s\nstdout:\n{e.stdout!r}\nstderr:\n{e.stderr!r}")
    if r.returncode != 0:
        pytest.fail(
            f"{what.id} ({what.lang}) exited {r.returncode}\n--- block ---\n{what.text}"
            f"--- stdout ---\n{r.stdout[-4000:]}\n--- stderr ---\n{r.stderr[-4000:]}"
        )
    return r


def shell_script(block: Block) -> str:
    if block.lang == "console" and any(ln.startswith("$ ") for ln in block.text.splitlines()):
        return "\n".join(ln[2:] for ln in block.text.splitlines() if ln.startswith("$ ")) + "\n"
    return block.text


def check_covered(text: str) -> str | None:
    why, part = COVERED[text]
    if text == "bash scripts/test.sh":
        assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text(), ".ci/run must run bash scripts/test.sh"
    elif text.startswith("bash scripts/test-"):
        assert text in (ROOT / "scripts" / "test.sh").read_text().splitlines(), f"scripts/test.sh must run {text}"
    elif text == README_INSTALL:
        script = (ROOT / "scripts" / "test-python.sh").read_text()
        assert 'python3 -m venv "$venv"' in script and "venv=.venv" in script
        assert '"$py" -m pip wheel --quiet --no-deps --wheel-dir dist .' in script, script
        assert re.search(r'pip install .*--no-deps --force-reinstall "\$\{wheels\[0\]\}"$', script, re.M), script
    elif text in RECIPE_LINES:
        for script_path, lines in RECIPE_LINES[text].items():
            script_lines = {ln.strip() for ln in (ROOT / script_path).read_text().splitlines()}
            missing = [ln for ln in lines if ln not in script_lines]
            assert not missing, f"{script_path} no longer runs the recipe: {missing}"
    del why
    return part


def run_shell(block: Block, tmp: Path, env: dict[str, str]) -> str:
    """Runs a shell block by the rules above; returns how it counts."""
    script = shell_script(block)
    text = command_lines(script)
    cwd, timeout, counted = tmp, TIMEOUT, "sh"
    if text in COVERED:
        part = check_covered(text)
        COVERED_BLOCKS.append(block)
        if part is None:
            return "covered"
        script, counted = part + "\n", "covered"
    elif text in IN_REPOSITORY_LINES:
        cwd, timeout = ROOT, IN_REPOSITORY_TIMEOUT
        env = {k: v for k, v in env.items() if k != "CARGO_TARGET_DIR"}  # the block names target/
    elif BUILD_WORDS.search(text):
        pytest.fail(
            f"{block.id}: an install/build command ({BUILD_WORDS.search(text)!r}) outside the rules at the top "
            f"of tests/python/test_docs.py:\n{block.text}"
        )
    path = tmp / "block.sh"
    path.write_text(script)
    # Repository builds run once; everything else twice, as a reader repeating it.
    for _ in range(1 if cwd == ROOT else runs(block)):
        run(["bash", "-euo", "pipefail", str(path)], cwd, env, block, timeout)
    return counted


def ensure_lib() -> None:
    if not LIB.exists():
        subprocess.run(["cargo", "build", "-p", "creditgate-c", "--release"], cwd=ROOT, check=True, timeout=3600)


def run_c(block: Block, tmp: Path, env: dict[str, str]) -> None:
    ensure_lib()
    src = block.text
    if not re.search(r"\bint\s+main\s*\(", src):
        body = "\n".join("    " + ln for ln in src.splitlines())
        src = f"{C_PRELUDE}\nint main(void) {{\n{body}\n    return 0;\n}}\n"
    (tmp / "block.c").write_text(src)
    cc = os.environ.get("CC", "cc")
    compile_cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'include'}", "block.c", str(LIB)]
    run([*compile_cmd, *C_LIBS, "-o", "block"], tmp, env, block)
    for _ in range(runs(block)):
        run([str(tmp / "block")], tmp, env, block)


DOCTEST_INCLUDE = re.compile(r'#\[cfg\(doctest\)\]\s*#\[doc\s*=\s*include_str!\("\.\./([^"]+)"\)\]')


def doctest_pages() -> set[str]:
    return set(DOCTEST_INCLUDE.findall((ROOT / "src" / "lib.rs").read_text()))


class _Summary:
    """Prints the block counts in pytest's terminal summary."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not RAN:
            return
        parts = ", ".join(f"{lang} {n}" for lang, n in RAN.most_common() if lang != "rust")
        if RAN["rust"]:
            parts += f", rust {RAN['rust']} via doctest"
        terminalreporter.write_line(f"docs: {sum(RAN.values())} code blocks executed ({parts})")
        if COVERED_BLOCKS:
            listed = ", ".join(b.id for b in COVERED_BLOCKS)
            terminalreporter.write_line(
                f"docs: {len(COVERED_BLOCKS)} install/test commands covered by the test command itself: {listed}"
            )
        if NOT_CODE:
            listed = ", ".join(f"{b.id} {b.lang}" for b in NOT_CODE)
            terminalreporter.write_line(f"docs: {len(NOT_CODE)} blocks are not code (output/config): {listed}")


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> None:
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("creditgate-docs-summary"):
        plugins.register(_Summary(), "creditgate-docs-summary")


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_doc_block(block: Block) -> None:
    if not block.lang:
        pytest.fail(f"{block.id}: a code block needs a language (python, sh, c, rust, text, ...)")
    if block.lang in RUST_LANGS:
        assert block.page in doctest_pages(), (
            f"{block.id}: ```rust blocks run as doctests; include {block.page} in src/lib.rs with "
            f'#[cfg(doctest)] #[doc = include_str!("../{block.page}")]'
        )
        RAN["rust"] += 1
        return
    runnable = PYTHON_LANGS | SHELL_LANGS | C_LANGS
    if block.lang not in runnable:
        NOT_CODE.append(block)
        return
    needs_postgres = "postgres" in block.attrs
    if needs_postgres != IS_POSTGRES:
        pytest.skip("needs PostgreSQL: runs in the PostgreSQL pass" if needs_postgres else "runs in the SQLite pass")
    if "continued" in block.attrs:
        previous = [d for page_block, d in KEPT_DIRS.items() if page_block.startswith(block.page + ":")]
        if not previous:
            pytest.fail(f"{block.id}: continues the page's previous block, which has not run (run the whole page)")
        tmp = previous[-1]
        KEPT_DIRS.clear()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cg-doc-"))
    try:
        env = child_env(tmp)
        database = None
        if needs_postgres:
            database = f"cg_doc_{os.getpid()}_{block.line}"
            psql(server_url(), f'CREATE DATABASE "{database}"')
            env["DATABASE_URL"] = with_database(server_url(), database)
        try:
            if block.lang in PYTHON_LANGS:
                (tmp / "block.py").write_text(block.text)
                for _ in range(runs(block)):
                    run([sys.executable, str(tmp / "block.py")], tmp, env, block)
                counted = "python"
            elif block.lang in SHELL_LANGS:
                counted = run_shell(block, tmp, env)
            else:
                run_c(block, tmp, env)
                counted = "c"
        finally:
            if database is not None:
                psql(server_url(), f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if counted != "covered":
            RAN[counted] += 1
    finally:
        if block.id in KEEP_FOR_NEXT:
            KEPT_DIRS[block.id] = tmp
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def test_pages_are_collected() -> None:
    """The glob sees the README and the docs, and every page has a block."""
    names = {b.page for b in ALL_BLOCKS}
    assert "README.md" in names
    assert any(n.startswith("docs/") for n in names)


# ----- one story across the pages --------------------------------------------------------

INSTALL = re.compile(r"pip install\s+(\S+)")


def install_spellings() -> dict[str, list[str]]:
    """Every `pip install X` of the docs, the examples and the package's messages."""
    files = [*pages(), *(ROOT / "examples").glob("*.py"), *(ROOT / "python" / "creditgate").glob("*.py")]
    return {str(f.relative_to(ROOT)): INSTALL.findall(f.read_text(encoding="utf-8")) for f in files}


def test_one_install_spelling_that_works_from_a_clone() -> None:
    """The package is not on a package index: it is installed from the
    repository root, as `.` or `'.[extra,...]'` with extras pyproject.toml has
    (docs/deploying.md also installs the wheel built from it, `--no-index`)."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    extras_block = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^(\w+) = \[", extras_block, re.M))
    assert {"fastapi", "prometheus", "litellm"} <= extras
    problems = []
    seen = set()
    for page, spellings in install_spellings().items():
        for target in spellings:
            target = target.rstrip('`.,;:)"')
            if target == "":  # `pip install .`
                continue
            if target == "--no-index" and page == "docs/deploying.md":  # the built wheel, on a server
                continue
            m = re.fullmatch(r"'\.\[([\w,]+)\]'", target)
            if m is None:
                problems.append(f"{page}: pip install {target} (write '.[extra]' from the repository root)")
                continue
            unknown = set(m.group(1).split(",")) - extras
            if unknown:
                problems.append(f"{page}: unknown extras {sorted(unknown)}")
            seen.add(page)
    assert not problems, "\n".join(problems)
    for page in ("docs/fastapi.md", "docs/quickstart-python.md", "examples/fastapi_gateway.py"):
        assert page in seen, f"{page} does not say how to install the FastAPI extra"


def credits_keys(source: str) -> set[str]:
    """The string keys of the dicts built by the `GET /v1/credits` handler in `source`."""
    import ast

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AsyncFunctionDef) and any(
            isinstance(d, ast.Call)
            and d.args
            and isinstance(d.args[0], ast.Constant)
            and d.args[0].value == "/v1/credits"
            for d in node.decorator_list
        ):
            return {
                k.value
                for n in ast.walk(node)
                if isinstance(n, ast.Dict)
                for k in n.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
    raise AssertionError("no GET /v1/credits handler")


def test_fastapi_page_and_example_answer_the_same_credits_shape() -> None:
    example = credits_keys((ROOT / "examples" / "fastapi_gateway.py").read_text(encoding="utf-8"))
    page = next(b for b in ALL_BLOCKS if b.page == "docs/fastapi.md" and "/v1/credits" in b.text and b.lang == "python")
    assert example == {"data", "total_credits", "total_usage", "available"}, example
    assert credits_keys(page.text) == example
