"""`lfr`: the admin and auditor command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lfr_cli.admin import Admin, AdminError, add_deployment_parsers, run_deployment
from lfr_cli.auditor import Auditor, add_audit_parsers, run_audit
from lfr_cli.aws import AwsContext, StackNotFoundError
from lfr_cli.durations import parse_duration
from lfr_cli.officers import add_officer_parsers, run_officers
from lfr_core.errors import DatasetNotFoundError
from lfr_core.matching import PRODUCTION_FLIP_TTA, PRODUCTION_FUSION, PRODUCTION_TEMPLATE, TEMPLATE_MODES
from lfr_eval.calibrate import ENROL_PHOTOS
from lfr_eval.fusion import ALL_FUSIONS

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lfr", description=__doc__)
    p.add_argument("--endpoint-url", help="AWS endpoint (default: real AWS, or a running `lfr local up`)")
    p.add_argument("--region")
    p.add_argument("--profile")
    sub = p.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the embedded local AWS stack")
    local_sub = local.add_subparsers(dest="sub", required=True)
    up = local_sub.add_parser("up", help="start moto, deploy the CDK template, run its functions until Ctrl-C")
    up.add_argument("--port", type=int, default=0)

    add_deployment_parsers(sub)
    add_audit_parsers(sub)
    add_officer_parsers(sub)

    demo = sub.add_parser("demo", help="a local end-to-end deployment on lfw-dev, scored against truth")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    demo.add_argument("--session-seconds", type=int, default=60)

    scn = sub.add_parser("scenario", help="synthetic test material").add_subparsers(dest="sub", required=True)
    make = scn.add_parser("make", help="a walk-by video of known people with a ground-truth JSON")
    who = make.add_mutually_exclusive_group(required=True)
    who.add_argument("--identities", nargs="+", type=Path, metavar="DIR", help="one folder per person")
    who.add_argument("--from-lfw", type=int, metavar="N", help="N random lfw-dev people")
    make.add_argument("--out", required=True, type=Path, help="video to write (mp4; keep it out of the repo)")
    make.add_argument("--truth", required=True, type=Path, help="ground-truth JSON to write")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--fps", type=float, default=10.0)
    make.add_argument("--concurrent", type=int, default=3, help="people in view at once")
    tracks = scn.add_parser("tracks", help="tracks per crossing and identity switches of the edge tracker "
                            "(and ByteTrack, if installed) on the standard walk-bys")
    tracks.add_argument("--scenario", nargs=3, action="append", metavar=("PEOPLE", "SEED", "FPS"),
                        help="instead of the standard ones; repeatable (the demo's: 30 7 8)")

    ev_video = sub.add_parser("eval-video", help="track decisions on generated walk-by videos (edge + match path)")
    ev_video.add_argument("--watchlist-size", type=int, default=100)
    ev_video.add_argument("--listed-walkers", type=int, default=60, help="listed people who walk past")
    ev_video.add_argument("--strangers", type=int, default=60, help="people not listed who walk past")
    ev_video.add_argument("--target-fpir", type=float, default=2e-4)
    ev_video.add_argument("--seed", type=int, default=0)
    ev_video.add_argument("--out", type=Path, help="output folder (default build/eval)")
    ev_video.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")

    ev = sub.add_parser("eval", help="open-set 1:N accuracy (TPIR at FPIR, DET) on an identity-labelled folder")
    ev.add_argument("--dataset", type=Path, help="LFW-layout folder (default: lfw-dev)")
    ev.add_argument("--non-mated", type=Path, action="append", default=[], help="extra folder of people not listed")
    ev.add_argument("--watchlist-size", type=int, help="people listed (default: half of those with 2+ images)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--fusion", type=int, default=1, help="crops per track (1 = single-crop decisions)")
    ev.add_argument("--fusion-mode", choices=list(ALL_FUSIONS), default=PRODUCTION_FUSION)
    ev.add_argument("--degrade", choices=["cctv"], help="apply surveillance conditions to probes")
    ev.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=PRODUCTION_FLIP_TTA,
                    help="horizontal-flip test-time augmentation (default: as production)")
    ev.add_argument("--gate", choices=["production", "none", "earlier", "strict"], default="production",
                    help="the edge's quality gate: production's, none, the earlier 0.3, or 0.5")
    ev.add_argument("--gate-sweep", action="store_true",
                    help="also measure this pipeline at each gate of a sweep, per stranger walking past")
    ev.add_argument("--enrol-images", type=int, default=ENROL_PHOTOS,
                    help="images enrolled per listed person, at most (one is always left to search)")
    ev.add_argument("--template", choices=list(TEMPLATE_MODES), default=PRODUCTION_TEMPLATE,
                    help="several enrolment images: an entry each, or one mean template (default: as production)")
    ev.add_argument("--ablation", action="store_true", help="also measure each technique with and without")
    ev.add_argument("--out", type=Path, help="output folder (default build/eval)")
    ev.add_argument("--threads", type=int, help="onnxruntime threads")
    ev.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    ev.add_argument("--calibrate-out", type=Path, help="also rebuild the calibration table from the same pass")
    ev.add_argument("--lists", type=int, default=1,
                    help="repeat on this many seeded watchlists (seed, seed+1, ...) and pool the searches")
    ev.add_argument("--errata", metavar="FILE|none",
                    help="label errata to apply (docs/accuracy/ERRATA.md); default: the project's for lfw-dev")
    bench = sub.add_parser("bench", help="measure model, search scaling, cold start and cost per camera-hour here")
    bench.add_argument("--quick", action="store_true", help="small sizes (what the tests run)")
    bench.add_argument("--out", type=Path, default=None, help="output folder (default build/bench)")
    bench.add_argument("--json", action="store_true", help="print the report as one JSON object")
    bench.add_argument("--throughput", action="store_true",
                       help="only the local stack's throughput (ceiling, then each rate); writes throughput.json")
    bench.add_argument("--rates", default=None,
                       help="track messages/s to offer, comma-separated; '0.8x' = 0.8 x the raw inference "
                            "ceiling, '0.8x@600' for 600 s (default 2,5,10,0.8x,1.2x; quick: 2,1.2x)")
    bench.add_argument("--seconds", type=float, default=None, help="seconds per rate (default 60; quick: 10)")
    bench.add_argument("--listed-share", type=float, default=None,
                       help="with --throughput: share of messages showing a listed person (default 0.2)")
    cal = sub.add_parser("calibrate", help="rebuild the threshold table (target FPIR x watchlist size)")
    cal.add_argument("--dataset", type=Path, help="LFW-layout folder (default: lfw-dev)")
    cal.add_argument("--sizes", default="1,5,10,20,50,100,200,500,1000,2000")
    cal.add_argument("--lists", type=int, default=20, help="random watchlists per size")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--fusion-mode", choices=["mean", "max"], default=PRODUCTION_FUSION,
                     help="how a track's crops are fused (thresholds for tracks of 2..3 crops)")
    cal.add_argument("--out", type=Path, help="table path (default: the shipped lfr_core/calibration.json)")
    cal.add_argument("--threads", type=int, help="onnxruntime threads")
    cal.add_argument("--errata", metavar="FILE|none",
                     help="label errata to apply first; default: the project's for lfw-dev")
    return p


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(AwsContext.discover(args.endpoint_url, args.region, args.profile))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "local":
            from lfr_cli.local.stack import run_forever

            run_forever(port=args.port)
            return EXIT_OK
        if args.command == "scenario" and args.sub == "tracks":
            from lfr_cli.track_eval import STANDARD_SCENARIOS, main_tracks

            chosen = [(int(p), int(s), float(f)) for p, s, f in args.scenario] if args.scenario else None
            print(main_tracks(chosen or STANDARD_SCENARIOS))
            return EXIT_OK
        if args.command == "scenario":
            from lfr_cli.scenario import ScenarioError, main_make

            try:
                print(main_make(args.identities, args.from_lfw, args.out, args.truth, seed=args.seed, fps=args.fps,
                                concurrent=args.concurrent))
            except ScenarioError as exc:
                print(f"lfr: {exc}", file=sys.stderr)
                return EXIT_FAIL
            return EXIT_OK
        if args.command == "demo":
            from lfr_cli.demo import run_demo

            return run_demo(as_json=args.json, session_s=args.session_seconds)
        if args.command == "eval":
            from lfr_cli.evaluate import DEFAULT_OUT, run_eval

            return run_eval(
                args.dataset, args.non_mated, args.watchlist_size, args.seed, args.fusion, args.fusion_mode,
                args.degrade, args.flip_tta, args.gate, args.enrol_images, args.template, args.ablation,
                args.out or DEFAULT_OUT, args.json, args.threads, args.calibrate_out, args.lists, args.errata,
                args.gate_sweep,
            )
        if args.command == "eval-video":
            from lfr_cli.video_eval import DEFAULT_OUT, run_eval_video

            return run_eval_video(args.watchlist_size, args.listed_walkers, args.strangers, args.seed,
                                  args.target_fpir, args.out or DEFAULT_OUT, args.json)
        if args.command == "bench":
            from lfr_cli import bench_throughput as tp
            from lfr_cli.bench import DEFAULT_OUT as BENCH_OUT
            from lfr_cli.bench import run_bench

            rates = tp.parse_rates(args.rates) if args.rates is not None else None
            if args.seconds is not None and not args.seconds > 0:
                raise ValueError("--seconds must be positive")
            share = tp.LISTED_SHARE if args.listed_share is None else args.listed_share
            if not 0 <= share <= 1:
                raise ValueError("--listed-share must be within 0..1")
            if args.throughput:
                return tp.run_throughput(
                    args.out or BENCH_OUT, args.json, rates or (tp.QUICK_RATES if args.quick else tp.FULL_RATES),
                    args.seconds or (tp.QUICK_SECONDS if args.quick else tp.FULL_SECONDS), share,
                )
            return run_bench(args.quick, args.out or BENCH_OUT, args.json,
                             throughput_rates=rates, throughput_seconds=args.seconds)
        if args.command == "calibrate":
            from lfr_cli.evaluate import run_calibrate
            from lfr_core.calibration import TABLE_PATH

            sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
            return run_calibrate(
                args.dataset, sizes, args.lists, args.seed, args.fusion_mode,
                args.out or TABLE_PATH, args.threads, args.errata,
            )
        if args.command == "deployment":
            return run_deployment(args, _admin(args), parse_duration)
        if args.command == "officers":
            admin = _admin(args)
            return run_officers(args, admin.ctx, admin.actor)
        if args.command == "audit":
            admin = _admin(args)
            return run_audit(args, Auditor(admin.ctx, admin.actor), admin.record)
    except (AdminError, StackNotFoundError, DatasetNotFoundError, ValueError) as exc:
        print(f"lfr: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
