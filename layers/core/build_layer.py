"""Build the core layer as Lambda should load it: `sam build` runs this (``BuildMethod: makefile``).

    python3.13 build_layer.py ARTIFACTS_DIR          # what layers/core/Makefile runs
    python3.13 build_layer.py --finish-only DIR       # prune and compile a layer already installed
    python3.13 build_layer.py --host-platform DIR     # the same, with this machine's wheels (benchmarks)

Three steps, into ``ARTIFACTS_DIR/python`` (a layer's ``/opt/python``):

1. ``pip install`` the pinned ``requirements.txt`` for the function's platform (arm64, CPython
   3.13, binary wheels only) and copy the ``reelay`` package.
2. Remove what the python3.13 runtime already ships (``RUNTIME_PROVIDED``). The X-Ray SDK
   (Powertools' tracer extra) depends on botocore, so pip brings botocore (and with it
   jmespath, python-dateutil, six, urllib3) into the layer, where ``/opt/python`` comes before
   the runtime's packages on ``sys.path``: the layer's copy would shadow the runtime's
   precompiled botocore and compile at every cold start. Using the runtime's botocore is also
   what AWS recommends for boto3 (it is kept current with the service APIs); reelay needs no
   botocore feature newer than the runtime's.
3. Compile every module to bytecode for CPython 3.13 (``unchecked-hash`` pycs: valid
   whatever the files' mtimes after unzipping, and never stat'ed against their source).
   ``/opt`` is read-only at run time, so without this every cold start compiles every module
   it imports, and throws the result away.
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Import names (and their distributions' metadata) that the Lambda python3.13 runtime provides.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
_DIST_PREFIXES = ("boto3-", "botocore-", "s3transfer-", "jmespath-", "python_dateutil-", "six-", "urllib3-")
PLATFORM = ("--platform", "manylinux2014_aarch64", "--implementation", "cp", "--python-version", "3.13")


def install(target: Path, *, host_platform: bool = False) -> None:
    """The pinned requirements for arm64 CPython 3.13 (or this machine's platform), and ``reelay``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-compile",
            "--only-binary=:all:",
            *(() if host_platform else PLATFORM),
            "--target",
            str(target),
            "-r",
            str(HERE / "requirements.txt"),
        ],
        check=True,
    )
    shutil.copytree(HERE / "reelay", target / "reelay", ignore=shutil.ignore_patterns("__pycache__"))


def prune(target: Path) -> list[str]:
    """Remove the runtime's own packages (and pip's ``bin``); the names removed."""
    removed = []
    for entry in sorted(target.iterdir()):
        name = entry.name
        if name.removesuffix(".py") in RUNTIME_PROVIDED or name.startswith(_DIST_PREFIXES) or name == "bin":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(name)
    return removed


def compile_bytecode(target: Path) -> None:
    """Compile every module for this interpreter (which must be the runtime's: CPython 3.13)."""
    if sys.version_info[:2] != (3, 13):
        raise SystemExit(f"compile the layer with python3.13 (the runtime's), not {sys.version.split()[0]}")
    ok = compileall.compile_dir(
        target,
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise SystemExit("some modules of the layer do not compile")


def finish(target: Path) -> None:
    prune(target)
    compile_bytecode(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts_dir", type=Path)
    parser.add_argument("--finish-only", action="store_true", help="prune and compile DIR as it is (no install)")
    parser.add_argument(
        "--host-platform", action="store_true", help="wheels for this machine, not arm64 (benchmarks/cold_start.py)"
    )
    args = parser.parse_args()
    if args.finish_only:
        finish(args.artifacts_dir)
        return
    target = args.artifacts_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    install(target, host_platform=args.host_platform)
    finish(target)


if __name__ == "__main__":
    main()
