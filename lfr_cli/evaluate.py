"""`lfr eval` and `lfr calibrate`: argument handling and printing over `lfr_eval` (the protocol,
data, degradation, embedding cache and table building live there; see `lfr_eval/__init__.py`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lfr_core.calibration import fpir_key
from lfr_core.matching import PRODUCTION_FLIP_TTA, PRODUCTION_FUSION, FusionMode, TemplateMode
from lfr_eval.calibrate import DEFAULT_SIZES, RebuiltTable, rebuild_table
from lfr_eval.datasets import REPO_ROOT, Sample, errata_note, lfw_root, load_folder, resolve_errata
from lfr_eval.embeddings import Embeddings
from lfr_eval.errata import Errata
from lfr_eval.identification import (
    GATES,
    OPERATING_FPIR,
    SearchOutcome,
    Variant,
    ablation_variants,
    at_shipped_threshold,
    digest,
    gains,
    gate_sweep,
    gate_sweep_variants,
    measure,
)
from lfr_eval.report import TABLE_HEAD, table_line, write_det, write_det_by_group

DEFAULT_OUT = REPO_ROOT / "build" / "eval"


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_eval(
    dataset: Path | None,
    non_mated: Sequence[Path],
    watchlist_size: int | None,
    seed: int,
    fusion: int,
    fusion_mode: str,
    degrade: str | None,
    flip: bool,
    gate: str,
    enrol_images: int,
    template: TemplateMode,
    ablation: bool,
    out: Path,
    as_json: bool,
    threads: int | None = None,
    calibrate_out: Path | None = None,
    lists: int = 1,
    errata: str | None = None,
    sweep_gates: bool = False,
) -> int:
    log = _stderr_log
    root = dataset or lfw_root()
    labelled = load_folder(root)
    fix = resolve_errata(errata, dataset)
    extras = [s for d in non_mated for s in load_folder(d, extra=True)]
    samples = (fix.apply(labelled) if fix else labelled) + extras
    base = Variant(
        name="this run", flip=flip, gate=GATES[gate], enrol_images=enrol_images, template=template,
        fusion=fusion, fusion_mode=fusion_mode,
    )
    ablated = ablation_variants(replace(base, fusion=1)) if ablation else []
    swept = gate_sweep_variants(base) if sweep_gates else []
    variants = [base, *ablated, *swept]
    emb = Embeddings(degrade=degrade, seed=seed, threads=threads, log=log, with_flip=any(v.flip for v in variants))
    started = time.monotonic()
    run = measure(samples, labelled if fix else None, extras, watchlist_size, seed, lists, variants, emb, log)
    proto, outcomes, outcomes_labelled = run.splits[0], run.outcomes, run.outcomes_labelled
    main = outcomes[0]
    out.mkdir(parents=True, exist_ok=True)
    tag = (f"{'cctv-' if degrade else ''}{'fusion' + str(fusion) + '-' if fusion > 1 else ''}s{seed}"
           f"{f'x{lists}' if lists > 1 else ''}")
    title = (f"{root.name}{' + cctv' if degrade else ''}{' (errata applied)' if fix else ''}: "
             f"{main.watchlist_size} listed, "
             + (f"seed {seed}" if lists == 1 else f"pooled over {lists} lists (seeds {seed}-{seed + lists - 1})"))
    det_path = out / f"det-{tag}.png"
    write_det(
        [o for o in outcomes if o.variant.fusion == 1 and o.variant.probe_from is None][:4] if ablation else outcomes,
        det_path, title,
    )
    det_gender = out / f"det-by-gender-{tag}.png"
    has_gender = {"M", "F"} <= set(main.mated_gender) and {"M", "F"} <= set(main.non_mated_gender)
    if has_gender:
        write_det_by_group(main, det_gender, title)
    summary = main.summary()
    summary.update(
        dataset=str(root), non_mated_dirs=[str(d) for d in non_mated], seed=seed, lists=lists, degrade=degrade,
        errata=errata_note(fix, labelled, samples[: len(samples) - len(extras)]),
        det_png=str(det_path), det_by_gender_png=str(det_gender) if has_gender else None,
        seconds=round(time.monotonic() - started, 1),
        command="lfr eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "lfr eval",
    )
    shipped = at_shipped_threshold(main)
    if shipped:
        summary["at_shipped_threshold"] = shipped
    ablation_outcomes = outcomes[1:1 + len(ablated)]
    if ablation:
        summary["ablation"] = [o.summary() for o in ablation_outcomes]
        summary["gains"] = gains(ablation_outcomes)
    if swept:
        summary["gate_sweep"] = gate_sweep(outcomes[1 + len(ablated):])
    if fix:
        summary["as_labelled"] = outcomes_labelled[0].summary()
        if ablation:
            summary["as_labelled"]["ablation"] = [digest(o) for o in outcomes_labelled[1:1 + len(ablated)]]

    def table(rows: Sequence[SearchOutcome], heading: str) -> None:
        print(heading)
        print(TABLE_HEAD)
        for o in rows:
            print(table_line(o))

    print(f"dataset {root}: {len(proto.listed)} people listed "
          f"({f'seed {seed}' if lists == 1 else f'{lists} lists, seeds {seed}-{seed + lists - 1}, pooled'}), "
          f"failure to enrol {main.fte}; probes {'degraded (cctv)' if degrade else 'clean'}")
    if fix:
        e = summary["errata"]
        table(outcomes_labelled, "as labelled:")
        table(outcomes, f"errata applied ({e['file']}: {', '.join(f'{n} {k}' for k, n in e['entries'].items())}; "
                        f"{e['images']['labelled']} -> {e['images']['after']} images, "
                        f"{e['people']['labelled']} -> {e['people']['after']} people):")
    else:
        table(outcomes, "as labelled (no errata):")
    gate_of = {o.variant.name: o.variant.gate for o in outcomes}

    def gain_cells(cells: dict[str, Any]) -> str:
        return "; ".join(f"{k}: {c['gain']:+.3f} ({c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f})"
                         for k, c in cells.items())

    for g in summary.get("gains", []):
        print(f"TPIR gain of {g['variant']} over {g['reference']}: {gain_cells(g['tpir_gain'])}")
        if gate_of.get(g["variant"]) != gate_of.get(g["reference"]):
            print("  ... with FPIR per stranger walking past (gated-out strangers cannot alert): "
                  f"{gain_cells(g['tpir_gain_per_stranger'])}")
    for row in summary.get("gate_sweep", []):
        walked = row["per_stranger"][fpir_key(OPERATING_FPIR)]
        shipped_cell = row.get("at_shipped_threshold")
        print(f"{row['variant']}: failure to acquire {row['failure_to_acquire']['mated']['rate']} (listed), "
              f"TPIR {walked['tpir']['rate']} at FPIR {fpir_key(OPERATING_FPIR)} per stranger walking past"
              + (f"; at the shipped threshold {shipped_cell['threshold']}: TPIR {shipped_cell['tpir']['rate']}, "
                 f"false alerts {shipped_cell['fpir']['k']}/{shipped_cell['fpir']['n']}" if shipped_cell else ""))
    for key, fair in summary["fairness"].items() if has_gender else ():
        cells = "; ".join(
            f"{m.upper()} F {fair['F'][m]['k']}/{fair['F'][m]['n']} vs M {fair['M'][m]['k']}/{fair['M'][m]['n']} "
            f"(ratio {fair['ratio_F_over_M'][m]})"
            for m in ("fnir", "fpir")
        )
        print(f"by gender at the FPIR {key} threshold {fair['threshold']}: {cells}")
    for key in ("false_alerts_at_operating_point", "false_alerts_at_1e_3"):
        fa = summary[key]
        if fa:
            pairs = "; ".join(f"{p['searched']} -> {p['matched']} x{p['count']}" for p in fa["top"][:12])
            print(f"false alerts at threshold {fa['threshold']}: {fa['false_alerts']} in {fa['distinct_pairs']} "
                  f"pairs (searched -> matched); most: {pairs}")
    if shipped:
        tp, fp = shipped["tpir"], shipped["fpir"]
        print(f"at the shipped table's threshold for FPIR {fpir_key(OPERATING_FPIR)} and {main.watchlist_size} "
              f"people ({shipped['threshold']}): TPIR {tp['rate']} ({tp['k']}/{tp['n']}), "
              f"FPIR {fp['rate']} ({fp['k']}/{fp['n']})")
    print(f"wrote {out / f'eval-{tag}.json'}, {det_path}" + (f" and {det_gender}" if has_gender else ""))
    if calibrate_out is not None:
        # The same in-memory embeddings also rebuild the table: one pass over the images, not two.
        summary["calibration"] = _calibrate_with(
            root, samples=[s for s in samples if not s.extra], emb=emb, sizes=DEFAULT_SIZES, lists=20, seed=seed,
            fusion_mode=PRODUCTION_FUSION, out=calibrate_out, command=summary["command"], errata=fix)
    json_path = out / f"eval-{tag}.json"
    json_path.write_text(json.dumps(summary, indent=1) + "\n")
    if as_json:
        # The ablation detail stays in the file; the line carries this run and a one-row-per-variant digest.
        line = {k: v for k, v in summary.items() if k not in ("ablation", "as_labelled", "calibration")}
        if ablation:
            line["ablation"] = [digest(o) for o in ablation_outcomes]
        if fix:
            line["as_labelled"] = {k: summary["as_labelled"][k]
                                   for k in ("mated", "non_mated", "rank1", "tpir_at_fpir")}
        print(json.dumps(line, separators=(",", ":")))
    return 0


def run_calibrate(
    dataset: Path | None, sizes: Sequence[int], lists: int, seed: int, fusion_mode: FusionMode,
    out: Path, threads: int | None = None, errata: str | None = None,
) -> int:
    root = dataset or lfw_root()
    labelled = load_folder(root)
    fix = resolve_errata(errata, dataset)
    samples = fix.apply(labelled) if fix else labelled
    emb = Embeddings(threads=threads, log=_stderr_log, with_flip=PRODUCTION_FLIP_TTA)
    _calibrate_with(root, samples, emb, sizes, lists, seed, fusion_mode, out, errata=fix)
    return 0


def _calibrate_with(
    root: Path, samples: list[Sample], emb: Embeddings, sizes: Sequence[int], lists: int, seed: int,
    fusion_mode: FusionMode, out: Path, command: str | None = None, errata: Errata | None = None,
) -> dict[str, object]:
    rebuilt = rebuild_table(root, samples, emb, sizes, lists, seed, fusion_mode, out, command, errata)
    print_rebuilt(rebuilt, out, fusion_mode)
    return rebuilt.summary(out)


def print_rebuilt(rebuilt: RebuiltTable, out: Path, fusion_mode: str) -> None:
    table = rebuilt.table
    print(f"wrote {out}")
    named = [("single crop", table.single)] + [(f"track of {n} ({fusion_mode})", c) for n, c in table.fused.items()]
    for name, curve in named:
        print(f"{name}: size " + " ".join(f"{s:>6d}" for s in curve.sizes))
        for k, row in curve.thresholds.items():
            print(f"  FPIR {k:>6s}  " + " ".join(f"{t:6.3f}" for t in row))
        print("  non-mated " + " ".join(f"{n:6d}" for n in curve.searches))
        print("  lists     " + " ".join(f"{n:6d}" for n in curve.lists))
    print(f"TPIR at the new table's thresholds vs the replaced table's ({out}), on these lists' mated searches:")
    for r in rebuilt.gain:
        cells = []
        for name in ("before", "after"):
            x = r.get(name) or {}
            cells.append(f"{name} t={x['threshold']:.3f} TPIR {x['tpir']['rate']:.3f}" if x.get("threshold")
                         else f"{name} n/a")
        print(f"  crops {r['crops']} size {r['size']:5d} FPIR {fpir_key(r['target_fpir']):>6s} "
              f"({r['mated']} mated): " + "; ".join(cells))
