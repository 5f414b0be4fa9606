"""`--preview out.mp4`: the processed frames, annotated, for the commissioning check of a camera.

Boxes are coloured by what happened to the face: grey = below the quality gate, amber = tracked
and passing the gate, green (thick, "SENT") = a crop of this track was sent at this frame. Each box
carries the first characters of its track id and how many crops the track has sent so far.
The preview holds frames with faces: it is a commissioning artefact, written only when asked for,
and belongs on the van's disk only for the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_uploader.exceptions import PreviewError

Status = Literal["below_gate", "tracked", "sent"]
_COLOURS: dict[str, tuple[int, int, int]] = {
    "below_gate": (160, 160, 160), "tracked": (0, 190, 255), "sent": (0, 220, 0)
}


@dataclass(frozen=True)
class Annotation:
    box: tuple[float, float, float, float]
    track_id: str
    status: Status
    sent: int


class PreviewWriter:
    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        if size[0] <= 0 or size[1] <= 0:
            raise PreviewError(f"preview frame size {size} is not valid")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.size = size
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            raise PreviewError(f"cannot write preview video {path}")
        self.frames = 0

    def write(self, image: np.ndarray, annotations: list[Annotation], header: str) -> None:
        out = image.copy()
        if (out.shape[1], out.shape[0]) != self.size:
            out = cv2.resize(out, self.size)  # folder sources: stills of any size
            sx, sy = self.size[0] / image.shape[1], self.size[1] / image.shape[0]
        else:
            sx = sy = 1.0
        for a in annotations:
            x, y, w, h = a.box
            p1 = (round(x * sx), round(y * sy))
            p2 = (round((x + w) * sx), round((y + h) * sy))
            colour = _COLOURS[a.status]
            cv2.rectangle(out, p1, p2, colour, 4 if a.status == "sent" else 2)
            label = f"{a.track_id[:6]} {a.sent}" + (" SENT" if a.status == "sent" else "")
            cv2.putText(out, label, (p1[0], max(p1[1] - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                        cv2.LINE_AA)
        cv2.putText(out, header, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        self._writer.write(out)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
