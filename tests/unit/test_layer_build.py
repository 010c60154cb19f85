"""The core layer as `sam build` makes it (layers/core/build_layer.py): compiled, and without a
second botocore.

The test builds into a temporary directory without the network: pip's ``--target`` output is
stood in for by the same pinned distributions copied from this venv (botocore and friends
included, as the X-Ray SDK brings them); then the build's own finishing step runs under
python3.13, the runtime's interpreter. A ``.aws-sam`` build output, when there is one, is
checked the same way.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.template_support import REPO

BUILD = REPO / "layers" / "core" / "build_layer.py"


def _python313() -> str | None:
    """A working python3.13 (a pyenv shim may exist without one behind it), as the Makefile finds it."""
    candidates = [
        *map(str, sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"))),
        shutil.which("python3.13"),
    ]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


PYTHON313 = _python313()
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")

# Imports every module a handler's cold start and first request load, and records any module
# compiled from source (there should be none: each has its pyc).
PROBE = """
import importlib.machinery, json, sys
compiled = []
original = importlib.machinery.SourceFileLoader.source_to_code
def source_to_code(self, data, path, *a, **kw):
    compiled.append(path)
    return original(self, data, path, *a, **kw)
importlib.machinery.SourceFileLoader.source_to_code = source_to_code
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import aws_lambda_powertools.tracing, aws_xray_sdk.core, httpx, pydantic
import reelay.api, reelay.submission, reelay.ingest, reelay.reconcile, reelay.polling, reelay.callbacks
print(json.dumps([p for p in compiled if p.startswith(sys.argv[1])]))
"""


def _closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need, as pip would resolve them (tracer extra included)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": "tracer"} if "extra" in str(req.marker) else {}):
                todo.append(req.name)
    return list(seen.values())


def _stand_in_for_pip(target: Path) -> None:
    requirements = [
        Requirement(line).name
        for line in (REPO / "layers/core/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for dist in _closure([*requirements, "aws-xray-sdk"]):
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            source = Path(str(dist.locate_file(file)))
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    shutil.copytree(REPO / "layers/core/reelay", target / "reelay", ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if PYTHON313 is None:
        pytest.skip("python3.13 (the Lambda runtime's interpreter) is not installed: the layer compiles with it")
    target = tmp_path_factory.mktemp("layer") / "python"
    _stand_in_for_pip(target)
    assert (target / "botocore").is_dir()  # as pip leaves it: the X-Ray SDK depends on botocore
    subprocess.run([PYTHON313, str(BUILD), "--finish-only", str(target)], check=True, capture_output=True)
    return target


def _layers(built: Path) -> list[Path]:
    sam = REPO / ".aws-sam" / "build" / "CoreLayer" / "python"
    return [built, sam] if sam.is_dir() else [built]


def test_the_layer_ships_no_copy_of_what_the_runtime_provides(built: Path) -> None:
    for layer in _layers(built):
        names = {p.name for p in layer.iterdir()}
        assert not {n for n in names if n.removesuffix(".py") in RUNTIME_PROVIDED}, layer
        assert not {n for n in names if n.split("-")[0].lower() in {*RUNTIME_PROVIDED, "python_dateutil"}}, layer
        assert {"aws_lambda_powertools", "aws_xray_sdk", "pydantic", "httpx", "reelay", "wrapt"} <= names


def test_every_module_has_unchecked_hash_bytecode_for_python_3_13(built: Path) -> None:
    for layer in _layers(built):
        sources = list(layer.rglob("*.py"))
        assert len(sources) > 500
        for source in sources:
            pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
            assert pyc.is_file(), pyc
            flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
            assert flags == 0b01, (pyc, flags)  # hash-based, not checked against the source


def test_a_cold_start_compiles_nothing_from_the_layer(built: Path, tmp_path: Path) -> None:
    # Given the runtime's own packages beside the layer (linked from this venv), and nothing else
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    site = Path(importlib.metadata.distribution("botocore").locate_file(""))
    for name in RUNTIME_PROVIDED:
        entry = site / name if (site / name).is_dir() else site / f"{name}.py"
        (runtime / entry.name).symlink_to(entry)
    code = PROBE.replace("sys.path.insert(0, sys.argv[1])", "sys.path[:0] = [sys.argv[1], sys.argv[2]]")
    # When every handler's modules are imported from the layer
    probe = subprocess.run(
        [str(PYTHON313), "-I", "-S", "-c", code, str(built), str(runtime)],
        capture_output=True,
        text=True,
        check=False,
        env={"AWS_DEFAULT_REGION": "us-east-1"},
    )
    # Then they import, and no module of the layer was compiled from source
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == []
