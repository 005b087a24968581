"""The README stays true: its configuration table is the server's flags, every `python -m` command it (or the
Makefile, which `make serve` runs on a fresh clone) shows names flags its command accepts, and every URL its curl
lines call is a route of the app."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from server.main import create_app
from server.settings import OPTIONS, Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CODE_BLOCK = re.compile(r"```(?:bash|console)\n(.*?)```", re.S)


def commands() -> list[list[str]]:
    """Every `python -m ...` line of the README's shell blocks, continuation lines joined, split like a shell."""
    found = []
    for block in CODE_BLOCK.findall(README):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").split("  #")[0].strip()
            if re.match(r"(\.venv/bin/)?python3? -m ", line):
                found.append(shlex.split(line.split("|")[0]))
    return found


def makefile_commands() -> list[list[str]]:
    """Every ``$(PY) -m ...`` recipe of the Makefile but pip's, continuation lines joined, split like a shell."""
    recipes = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return [shlex.split("python " + line.strip().removeprefix("$(PY) ")) for line in recipes.splitlines()
            if line.strip().startswith("$(PY) -m ") and not line.strip().startswith("$(PY) -m pip ")]


@functools.cache
def help_text(module: str, sub: str | None) -> str:
    """`python -m module [sub] --help`."""
    argv = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv[1:])} fails: {done.stderr[-500:]}"
    return done.stdout


def test_the_configuration_table_lists_every_flag_with_its_variable() -> None:
    rows = re.findall(r"^\| `(--[a-z0-9-]+)` \| `(SERVER_[A-Z0-9_]+)` \|", README, re.M)
    assert rows == [(flag, env_name(name)) for flag, (name, _, _) in OPTIONS.items()]
    assert set(OPTIONS) <= set(help_text("server", None).split())


@pytest.mark.parametrize("command", commands() + makefile_commands(), ids=lambda c: " ".join(c[:4]))
def test_every_python_command_uses_flags_its_program_accepts(command: list[str]) -> None:
    module = command[command.index("-m") + 1]
    rest = command[command.index("-m") + 2:]
    top = help_text(module, None)
    listed = rest and not rest[0].startswith("-") and re.search(rf"^\s+{re.escape(rest[0])}\b", top, re.M)
    sub = rest[0] if listed else None
    text = help_text(module, sub) if sub else top
    flags = {token.split("=")[0] for token in rest if token.startswith("--")}
    unknown = sorted(flag for flag in flags if flag not in text)
    assert not unknown, f"{' '.join(command)}: {', '.join(unknown)} not in `python -m {module} {sub or ''} --help`"


def test_the_readme_shows_commands_to_check() -> None:
    assert len(commands()) >= 15
    modules = [command[2] for command in makefile_commands()]  # data, calibration, training, export, the server
    assert len(modules) >= 10 and {"training", "export", "models", "server"} <= set(modules)


def test_every_curl_url_is_a_route_of_the_app() -> None:
    app = create_app(Settings(), manifests={})
    routes = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
              for path in app.openapi()["paths"]] + [(re.compile("^/$"), "/")]
    urls = re.findall(r"curl [^\n]*?(?:localhost|127\.0\.0\.1):8000(/[^\s'\"?]*)", README)
    assert len(urls) >= 15
    missing = sorted({url for url in urls if not any(pattern.match(url) for pattern, _ in routes)})
    assert not missing, f"README calls routes the app does not have: {missing}"
