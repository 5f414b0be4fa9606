"""Build the Lambda layer directory and the function code asset.

    python -m layers.build            # build (pip step cached by a stamp file)
    python -m layers.build --report   # build if needed, then print unzipped sizes
    python -m layers.build --force    # ignore the pip stamp

Outputs (git-ignored; paths and target in `lambda_target`), deployed by `infra/constructs/lambda_function.py`:
- `layers/build/core/python/`  native deps for the Lambda runtime (python3.12 x86_64) + `lfr_core`
- `layers/build/core/models/`  the model files from `build/models/` (-> /opt/models)
- `build/lambda/functions/`    the `functions` package (code asset)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from lambda_target import (
    CODE_ASSET_DIR,
    CORE_LAYER_DIR,
    CORE_MODELS_DIR,
    CORE_PYTHON_DIR,
    LAMBDA_ARCHITECTURE,
    LAMBDA_LAYER_LIMIT_BYTES,
    LAMBDA_PYTHON_VERSION,
    LAYER_BUILD_DIR,
    MODELS_SRC_DIR,
    PIP_PLATFORMS,
    ROOT,
    build_code_asset,
    copy_package,
)

DEPS_DIR = LAYER_BUILD_DIR / "deps"  # pip --target output, reused across builds
DEPS_STAMP = LAYER_BUILD_DIR / "deps.stamp.json"

# boto3/botocore are left out: the Lambda python runtime ships them. No OpenCV: lfr_core's face path
# is onnxruntime + numpy + Pillow, and opencv-python-headless alone (~143 MiB) put the layer over 250 MiB.
REQUIREMENTS: tuple[str, ...] = (
    "numpy>=2.0,<3",
    "pillow>=10",
    "onnxruntime>=1.18",
    "pydantic>=2.7,<3",
    "aws-lambda-powertools>=3.0,<4",
)


def pinned_requirements() -> tuple[str, ...]:
    """Pin each requirement to the version in the building venv when present.

    The local runtime runs the functions in the venv; pinning the layer to the same
    versions keeps what is tested locally identical to what runs in Lambda.
    """
    pins: list[str] = []
    for req in REQUIREMENTS:
        name = re.split(r"[<>=!~ ]", req, maxsplit=1)[0]
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(req)
    return tuple(pins)


# Installed only as transitive deps of onnxruntime for its offline tooling
# (symbolic shape inference, quantisation); InferenceSession never imports them.
TRIM_PACKAGES: tuple[str, ...] = ("sympy", "mpmath", "isympy.py")
# Parts the functions never load. Measured 2025: untrimmed layer + models was ~295 MiB.
TRIM_PATHS: tuple[str, ...] = (
    # onnxruntime's C-API library (~29 MiB) for native consumers; the Python binding
    # (onnxruntime_pybind11_state) is self-contained: its NEEDED list has only libc/libstdc++.
    "onnxruntime/capi/libonnxruntime.so*",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "onnxruntime/datasets",
    "onnxruntime/backend",
    # numpy's test-only extension modules.
    "numpy/_core/_*_tests*.so",
    "numpy/_core/_rational_tests*.so",
    "numpy/_core/_simd*.so",
    # Powertools' Swagger UI for API Gateway resolvers; no function here serves HTTP.
    "aws_lambda_powertools/event_handler/openapi/swagger_ui",
    "bin",  # console-script shims; nothing runs them inside Lambda
)
TRIM_SUFFIXES: tuple[str, ...] = (".pyi",)  # type stubs: only editors read them
TRIM_DIR_NAMES: frozenset[str] = frozenset({"__pycache__", "tests", "test"})


def _pip_args(target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",  # the runtime compiles lazily into /tmp; .pyc in the layer is dead weight
        *(arg for plat in PIP_PLATFORMS for arg in ("--platform", plat)),
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--upgrade",
        "--target",
        str(target),
        *pinned_requirements(),
    ]


def _stamp_value() -> dict[str, object]:
    return {
        "requirements": list(pinned_requirements()),
        "platforms": list(PIP_PLATFORMS),
        "python": LAMBDA_PYTHON_VERSION,
        "architecture": LAMBDA_ARCHITECTURE,
        "trim": [list(TRIM_PACKAGES), list(TRIM_PATHS)],
    }


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _trim(site: Path) -> list[str]:
    """Delete what the functions never load; returns what was removed (for the report)."""
    removed: list[str] = []
    for name in TRIM_PACKAGES:
        for p in [site / name, *site.glob(f"{name}-*.dist-info")]:
            if p.exists():
                _remove(p)
                removed.append(p.name)
    for pattern in TRIM_PATHS:
        for p in sorted(site.glob(pattern)):
            _remove(p)
            removed.append(str(p.relative_to(site)))
    for p in sorted(site.rglob("*"), reverse=True):
        if p.is_dir() and p.name in TRIM_DIR_NAMES:
            _remove(p)
        elif p.is_file() and p.suffix in TRIM_SUFFIXES:
            p.unlink()
    # No `strip`: auditwheel-patched libraries (patchelf'd) break when stripped
    # ("ELF load command address/offset not page-aligned"), for a ~5 MiB gain.
    return removed


def install_deps(force: bool = False) -> bool:
    """pip-install the native deps for the Lambda platform; returns False when the stamp matched."""
    stamp = _stamp_value()
    if not force and DEPS_DIR.is_dir() and DEPS_STAMP.is_file():
        try:
            if json.loads(DEPS_STAMP.read_text()) == stamp:
                return False
        except json.JSONDecodeError:
            pass
    _remove(DEPS_DIR)
    DEPS_DIR.parent.mkdir(parents=True, exist_ok=True)
    tmp = DEPS_DIR.with_name("deps.tmp")
    _remove(tmp)
    subprocess.run(_pip_args(tmp), check=True)
    removed = _trim(tmp)
    tmp.rename(DEPS_DIR)
    DEPS_STAMP.write_text(json.dumps({**stamp}, indent=2))
    (LAYER_BUILD_DIR / "trimmed.json").write_text(json.dumps(removed, indent=2))
    return True


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Hard-link the (large, immutable) pip tree into the layer; copy if links are not possible."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, symlinks=True)


def build_core_layer(models_src: Path = MODELS_SRC_DIR) -> Path:
    _remove(CORE_LAYER_DIR)
    _link_or_copy_tree(DEPS_DIR, CORE_PYTHON_DIR)
    copy_package(ROOT / "lfr_core", CORE_PYTHON_DIR / "lfr_core")
    CORE_MODELS_DIR.mkdir(parents=True)
    if models_src.is_dir():
        for f in sorted(models_src.iterdir()):
            if f.is_file():
                shutil.copy2(f, CORE_MODELS_DIR / f.name)
    return CORE_LAYER_DIR


def build(force: bool = False, models_src: Path = MODELS_SRC_DIR) -> None:
    if not models_src.is_dir():
        print(
            f"warning: {models_src} missing (run `python -m layers.face_models`); layer has no models",
            file=sys.stderr,
        )
    install_deps(force=force)
    build_core_layer(models_src)
    build_code_asset()


def is_built() -> bool:
    return CORE_PYTHON_DIR.is_dir() and CORE_MODELS_DIR.is_dir() and (CODE_ASSET_DIR / "functions").is_dir()


def tree_bytes(path: Path) -> int:
    """Unzipped size as Lambda counts it (regular files; links counted once per path like unzip does)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def layer_unzipped_bytes() -> int:
    """Unzipped bytes of the core layer plus the code asset: what Lambda holds against the 250 MB limit."""
    return tree_bytes(CORE_LAYER_DIR) + tree_bytes(CODE_ASSET_DIR)


def _top_level_sizes(path: Path) -> Iterable[tuple[str, int]]:
    for child in sorted(path.iterdir()):
        yield child.name, tree_bytes(child) if child.is_dir() else child.stat().st_size


def report() -> str:
    mb = 1024 * 1024
    lines = [f"{'path':<48}{'MiB':>10}"]
    items = sorted(_top_level_sizes(CORE_PYTHON_DIR), key=lambda kv: -kv[1])
    for name, size in items:
        if size >= mb // 2:
            lines.append(f"  core/python/{name:<36}{size / mb:>10.1f}")
    small = sum(s for _, s in items if s < mb // 2)
    lines.append(f"  core/python/{'(everything else)':<36}{small / mb:>10.1f}")
    lines.append(f"  {'core/python total':<46}{tree_bytes(CORE_PYTHON_DIR) / mb:>10.1f}")
    lines.append(f"  {'core/models':<46}{tree_bytes(CORE_MODELS_DIR) / mb:>10.1f}")
    lines.append(f"  {'code asset (build/lambda)':<46}{tree_bytes(CODE_ASSET_DIR) / mb:>10.1f}")
    total = layer_unzipped_bytes()
    verdict = "OK" if total < LAMBDA_LAYER_LIMIT_BYTES else "OVER LIMIT"
    lines.append(f"{'total (layer + code)':<48}{total / mb:>10.1f}  / {LAMBDA_LAYER_LIMIT_BYTES / mb:.0f}  {verdict}")
    trimmed = LAYER_BUILD_DIR / "trimmed.json"
    if trimmed.is_file():
        lines.append(f"trimmed: {', '.join(json.loads(trimmed.read_text())) or '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layers.build", description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="print unzipped sizes (builds first if needed)")
    parser.add_argument("--force", action="store_true", help="re-run pip even if the stamp matches")
    args = parser.parse_args(argv)
    if not args.report or args.force or not is_built():
        build(force=args.force)
    if args.report:
        print(report())
    return 0 if layer_unzipped_bytes() < LAMBDA_LAYER_LIMIT_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())
