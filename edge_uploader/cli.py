"""`lfr-edge`: the program that runs beside a camera.

    lfr-edge run --deployment ID --source SRC [--config van.toml] [--preview out.mp4] ...

SRC is a video file, an RTSP/HTTP stream URL, a webcam index (0, 1, ...) or a folder of images.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import datetime
from pathlib import Path
from types import FrameType

import boto3
import cv2
from botocore.config import Config
from pydantic import ValidationError

from edge_uploader.config import EdgeConfig
from edge_uploader.delivery import Delivery
from edge_uploader.exceptions import PreviewError, SourceError, SpoolError
from edge_uploader.pipeline import FaceCropper
from edge_uploader.preview import PreviewWriter
from edge_uploader.runner import RunStats, Uploader
from edge_uploader.sampler import SamplingPolicy
from edge_uploader.sources import FrameSource, SourceStatus
from edge_uploader.spool import Spool
from edge_uploader.status import CameraHeartbeat
from lfr_core.face.detect import FaceDetector

EXIT_OK, EXIT_DELIVERY, EXIT_USAGE, EXIT_SOURCE, EXIT_EXPIRED = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lfr-edge", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="read a source and send sampled, quality-gated crops to the deployment's queue")
    run.add_argument("--deployment", required=True)
    run.add_argument("--source", required=True, help="video file, rtsp:// or http:// URL, webcam index, image folder")
    run.add_argument("--config", type=Path, help="the van's TOML config")
    run.add_argument("--camera-id")
    run.add_argument("--queue-url")
    run.add_argument("--region")
    run.add_argument("--profile")
    run.add_argument("--endpoint-url", help="only for the local embedded stack")
    run.add_argument("--min-quality", type=float)
    run.add_argument("--best-k", type=int, help="crops per track decision at most (default 3, the maximum)")
    run.add_argument("--min-interval", type=float, help="seconds between two crops of one track (default 1)")
    run.add_argument("--max-wait", type=float,
                     help="seconds from a track's first crop to sending its crops while in view (default 3)")
    run.add_argument("--spool-dir", type=Path)
    run.add_argument("--spool-ttl", type=float, help="seconds a crop may wait for the network (default 300)")
    run.add_argument("--expires-at", help="the deployment's end (ISO-8601 with zone): nothing is sent after it")
    run.add_argument("--detector-threads", type=int)
    run.add_argument("--all-frames", action="store_true",
                     help="read a video file as fast as it is processed, dropping nothing (offline runs)")
    run.add_argument("--preview", type=Path, help="write an annotated video of the processed frames (mp4v)")
    run.add_argument("--progress-every", type=float, default=2.0, help="seconds between progress lines")
    run.add_argument("--status-every", type=float,
                     help="seconds between the camera's status messages to the console (default 15)")
    return p


def _config(args: argparse.Namespace) -> EdgeConfig:
    expires = None
    if args.expires_at:
        try:
            expires = datetime.fromisoformat(args.expires_at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"--expires-at is not an ISO-8601 time: {args.expires_at}") from exc
        if expires.tzinfo is None:
            raise ValueError("--expires-at needs a time zone (e.g. 2025-01-01T18:00:00Z)")
    return EdgeConfig.load(args.config, {
        "camera_id": args.camera_id, "queue_url": args.queue_url, "region": args.region, "profile": args.profile,
        "endpoint_url": args.endpoint_url, "min_quality": args.min_quality, "best_k": args.best_k,
        "min_interval_s": args.min_interval, "max_wait_s": args.max_wait, "spool_dir": args.spool_dir,
        "spool_ttl_s": args.spool_ttl,
        "expires_at": expires, "detector_threads": args.detector_threads, "status_interval_s": args.status_every,
    })


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C, so the spool is drained or destroyed on the way out.
    raise KeyboardInterrupt


def _camera_state(camera_id: str, st: SourceStatus) -> None:
    # The camera's up/down state for whoever watches the van's log (a console, an operator's terminal).
    if st.up:
        print(f"lfr-edge: camera {camera_id} UP at {st.since.isoformat()} (reconnection {st.reconnects}, "
              f"{st.gap_s:.1f}s without frames in all)", file=sys.stderr, flush=True)
    else:
        print(f"lfr-edge: camera {camera_id} DOWN since {st.since.isoformat()}; reconnecting with back-off, "
              "its open tracks ended and sent", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
    except (ValueError, ValidationError) as exc:
        print(f"lfr-edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not cfg.queue_url:
        print("lfr-edge: no queue URL (set --queue-url or queue_url in the config)", file=sys.stderr)
        return EXIT_USAGE
    if cfg.expires_at is not None and cfg.expires_at <= datetime.now(cfg.expires_at.tzinfo):
        print(f"lfr-edge: deployment {args.deployment} expired at {cfg.expires_at.isoformat()}: nothing to send",
              file=sys.stderr)
        return EXIT_EXPIRED
    try:
        source = FrameSource(args.source, realtime=not args.all_frames, queue_size=cfg.frame_queue)
    except SourceError as exc:
        print(f"lfr-edge: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    if cfg.detector_threads == 1:
        cv2.setNumThreads(1)
    preview = None
    try:
        if args.preview is not None:
            # A folder whose first image is unreadable still gets a preview, at 720p.
            preview = PreviewWriter(args.preview, source.fps, source.size if source.size[0] else (1280, 720))
        spool = Spool(cfg.spool_dir / cfg.camera_id)
    except (PreviewError, SpoolError) as exc:
        source.close()
        print(f"lfr-edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if spool.stale_deleted:
        print(f"lfr-edge: deleted {spool.stale_deleted} unreadable spool entries left by an earlier run",
              file=sys.stderr)
    session = boto3.Session(profile_name=cfg.profile, region_name=cfg.region)
    # Short timeouts and no SDK retries: Delivery owns retry/back-off and spools when the link is down.
    sqs = session.client("sqs", endpoint_url=cfg.endpoint_url, config=Config(
        connect_timeout=3, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"}))
    delivery = Delivery(sqs, cfg.queue_url, spool, ttl_s=cfg.spool_ttl_s, expires_at=cfg.expires_at,
                        probe_interval_s=cfg.probe_interval_s)
    uploader = Uploader(
        FaceCropper(FaceDetector(intra_op_threads=cfg.detector_threads), min_quality=cfg.min_quality),
        delivery, deployment_id=args.deployment, camera_id=cfg.camera_id,
        policy=SamplingPolicy(cfg.best_k, cfg.min_interval_s, cfg.min_track_hits, cfg.max_wait_s),
        max_gap_s=cfg.max_track_gap_s,
        preview=preview, progress=lambda line: print(line, file=sys.stderr, flush=True),
        progress_every_s=args.progress_every, on_camera=_camera_state,
        heartbeat=CameraHeartbeat(delivery, deployment_id=args.deployment, camera_id=cfg.camera_id,
                                  interval_s=cfg.status_interval_s),
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    code = EXIT_OK
    stats = RunStats()
    try:
        stats = uploader.run(source)
    except SourceError as exc:
        print(f"lfr-edge: {exc}", file=sys.stderr)
        code = EXIT_SOURCE
    except KeyboardInterrupt:
        print("lfr-edge: interrupted; flushing and destroying the spool", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        source.close()
        if preview is not None:
            preview.close()
        stats.delivery = delivery.close(cfg.drain_timeout_s)
    if stats.stopped_by_expiry:
        print(f"lfr-edge: deployment expired at {cfg.expires_at}; stopped sending", file=sys.stderr)
    print(stats.line(), flush=True)
    d = stats.delivery
    if d.spool_destroyed or d.failed:
        print(f"lfr-edge: {d.spool_destroyed} crops not delivered (spool destroyed at exit), "
              f"{d.failed} refused as malformed", file=sys.stderr)
        if code == EXIT_OK:
            code = EXIT_DELIVERY
    return code


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
