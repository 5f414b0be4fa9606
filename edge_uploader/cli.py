"""`lfr-edge`: the program that runs beside a camera."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import boto3

from edge_uploader.config import EdgeConfig
from edge_uploader.pipeline import FaceCropper, GateCounts, SourceError, image_folder_messages, list_images
from edge_uploader.sender import SqsSender

EXIT_OK, EXIT_DELIVERY, EXIT_USAGE, EXIT_SOURCE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lfr-edge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="read a source and send quality-gated crops to the deployment's queue")
    run.add_argument("--deployment", required=True)
    run.add_argument("--source", required=True, help="a folder of images")
    run.add_argument("--config", type=Path, help="the van's TOML config")
    run.add_argument("--camera-id")
    run.add_argument("--queue-url")
    run.add_argument("--region")
    run.add_argument("--profile")
    run.add_argument("--endpoint-url", help="only for the local embedded stack")
    run.add_argument("--min-quality", type=float)
    run.add_argument("--faces", choices=["all", "central"], default="all")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        cfg = EdgeConfig.load(
            args.config,
            {
                "camera_id": args.camera_id,
                "queue_url": args.queue_url,
                "region": args.region,
                "profile": args.profile,
                "endpoint_url": args.endpoint_url,
                "min_quality": args.min_quality,
            },
        )
    except ValueError as exc:
        print(f"lfr-edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not cfg.queue_url:
        print("lfr-edge: no queue URL (set --queue-url or queue_url in the config)", file=sys.stderr)
        return EXIT_USAGE
    try:
        files = list_images(Path(args.source))
    except SourceError as exc:
        print(f"lfr-edge: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    session = boto3.Session(profile_name=cfg.profile, region_name=cfg.region)
    sender = SqsSender(session.client("sqs", endpoint_url=cfg.endpoint_url), cfg.queue_url)
    counts = GateCounts()
    msgs = image_folder_messages(
        files, FaceCropper(min_quality=cfg.min_quality), deployment_id=args.deployment,
        camera_id=cfg.camera_id, counts=counts, faces=args.faces,
    )
    report = sender.send(m for _, m in msgs)
    print(
        f"frames={counts.frames} faces={counts.faces} passed={counts.passed} below_gate={counts.below_gate} "
        f"unreadable={len(counts.unreadable)} sent={report.sent} failed={report.failed}"
    )
    for failure in report.failures:
        print(f"lfr-edge: not delivered: {failure}", file=sys.stderr)
    return EXIT_DELIVERY if report.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
