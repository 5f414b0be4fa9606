"""Where things live in S3: the one definition used by the CLI and the functions.

Everything a deployment owns sits under `deployment_prefix(id)` in the watchlist
bucket, so that purging a deployment is "delete this prefix, then list it empty".
"""

from __future__ import annotations

MODEL_SFACE = "sface_2021dec_fp32.onnx"
# fp32 with dynamic H/W, built by layers.face_models from the int8 original so onnxruntime can run it.
MODEL_YUNET = "yunet_2023mar_fp32.onnx"
# 8-bit queries x 8-bit gallery block -> int32 scores (MatMulInteger), for `lfr_core.ann.QuantisedScan`;
# both stored uint8 with zero point 128, the kernel that is exact on every CPU (lfr_core/ann.py).
MODEL_GALLERY_SCAN = "gallery_scan_u8.onnx"


def deployment_prefix(deployment_id: str) -> str:
    return f"deployments/{deployment_id}/"


def watchlist_images_prefix(deployment_id: str) -> str:
    return f"{deployment_prefix(deployment_id)}watchlist/images/"


def watchlist_index_key(deployment_id: str) -> str:
    return f"{deployment_prefix(deployment_id)}watchlist/index.npz"


def watchlist_entries_key(deployment_id: str) -> str:
    """Per entry: image file, reference and reason for inclusion (no biometric); purged with the prefix."""
    return f"{deployment_prefix(deployment_id)}watchlist/entries.json"


def alert_crop_key(deployment_id: str, alert_id: str) -> str:
    """Alert evidence lives in the alerts bucket, outside the purged prefix, under its own retention."""
    return f"alerts/{deployment_id}/{alert_id}.jpg"
