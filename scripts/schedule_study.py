"""Fewer guided iterations for the same distance: best distance against guided iterations on the
embedded digits setup, for the paper's schedule and cheaper ones.

Every schedule decodes the same held-out digit targets from the same seeds through fsa's own decoder
(`guided_decode`) with the embedded DDPM and CNN. Per schedule it records the median, over samples,
of the best squared distance found so far after each guided iteration (the curve), the final
figures, the oracle's agreement with the target's class, and the wall time. A schedule "matches"
when its median best distance is at most the reference schedule's (the first one, the paper's).

A schedule is written SAMPLER STEPS : [EARLY_K x EARLY_STEPS +] K [+ LATE_K x LATE_STEPS], e.g.
    ddpm1000:1000x5+8   the paper: DDPM over 1000 timesteps, K = 1000 for 5 steps, then 8
    ddim50:20x5+4       DDIM 50, K = 20 for 5 steps, then 4 (guidance=quick)
    ddim100:1           DDIM 100, one guided iteration per timestep
    ddpm1000:1+8x40     DDPM 1000, K = 1, but 8 for the last 40 timesteps
and is run with `--w-g` (several values: a sweep) and with the post-guidance check unless
`--no-post-check` variants are asked for.

    python scripts/schedule_study.py                          # the full study, about 75 min on 2 cores
    python scripts/schedule_study.py --schedules ddim50:1 ddim50:20x5+4 --per-class 1 --seeds 1

Results (one JSON per case, so an interrupted study resumes), `table.md`, `results.json` and
`curve.png` go to --out.
"""

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fsa import ASSETS_DIR
from fsa.data.digits import DigitsTargets
from fsa.diffusion.backbones import PixelDiffusion, load_pixel_diffusion
from fsa.diffusion.samplers import DDIMSampler, DDPMSampler
from fsa.evaluation import DigitsOracle
from fsa.extractors.digits_cnn import DigitsCNNExtractor
from fsa.guidance.decoder import Evaluation, guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance

DEFAULT_SCHEDULES = (
    "ddpm1000:1000x5+8",  # the paper (12,960 iterations): the reference
    "ddpm1000:1",
    "ddim50:1",
    "ddim50:5x5+2",
    "ddim50:20x5+4",
    "ddim50:20x5+8",
    "ddim50:100x5+8",
    "ddim100:1",
    "ddim100:5x5+2",
    "ddim100:20x5+4",
    "ddim100:20x5+8",
    "ddim250:1",
    "ddim250:5x5+2",
    "ddim250:20x5+4",
    "ddim500:1",
    "ddim1000:1",
    "ddpm500:1",
    "ddpm500:2",
    "ddpm1000:20x5+1",
    "ddpm1000:50x5+1",
    "ddpm1000:1+2x250",
    "ddpm1000:1+4x96",
    "ddpm1000:1+8x40",
    "ddpm500:1+4x100",
)
# Also run at every other w_g (the paper's App. B values), and without (or with a thinned) post check.
SWEPT = ("ddim50:20x5+4", "ddim100:20x5+4", "ddim250:1", "ddim500:1", "ddim1000:1", "ddpm1000:1")
SPEC = re.compile(r"^(ddpm|ddim)(\d+):(?:(\d+)x(\d+)\+)?(\d+)(?:\+(\d+)x(\d+))?$")
CURVE_POINTS = 400  # the curve is kept at about this many log-spaced iterations


@dataclass(frozen=True)
class Case:
    """One schedule with one guidance weight, with the post-guidance check, thinned or not, or without."""

    schedule: str
    w_g: float
    post_check: bool
    post_check_every: int = 1

    @property
    def key(self) -> str:
        name = self.schedule.replace(":", "_").replace("+", "p")
        post = "" if self.post_check_every == 1 else f"_post{self.post_check_every}"
        return f"{name}_wg{self.w_g:g}" + (post if self.post_check else "_nopost")

    def parts(self) -> tuple[DDPMSampler | DDIMSampler, FeatureGuidance]:
        match = SPEC.match(self.schedule)
        if match is None:
            raise ValueError(
                f"schedule '{self.schedule}' is not SAMPLER STEPS:[EARLY_KxEARLY_STEPS+]K[+LATE_KxLATE_STEPS]"
            )
        kind, steps, early_k, early_steps, k, late_k, late_steps = match.groups()
        sampler = DDPMSampler(num_steps=int(steps)) if kind == "ddpm" else DDIMSampler(num_steps=int(steps))
        schedule = {"early_k": int(early_k), "early_steps": int(early_steps)} if early_k else {"early_steps": 0}
        if late_k:
            schedule |= {"late_k": int(late_k), "late_steps": int(late_steps)}
        post = {"post_check": self.post_check, "post_check_every": self.post_check_every}
        return sampler, FeatureGuidance(w_g=self.w_g, k=int(k), **post, **schedule)

    def iterations(self) -> int:
        sampler, guidance = self.parts()
        return guidance.total_iterations(sampler.num_steps)


@dataclass
class Setup:
    """The embedded digits models, the targets (one row per sample) and the oracle: loaded once."""

    backbone: PixelDiffusion
    extractor: DigitsCNNExtractor
    features: torch.Tensor  # (N, 64): each target repeated once per seed
    labels: torch.Tensor  # (N,)
    seeds: list[int]  # sample i of every target starts from seed i, as in fsa's runner
    oracle: DigitsOracle


def load_setup(per_class: int, seeds: int, limit: int | None) -> Setup:
    backbone = load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), subfolder="unet")
    extractor = DigitsCNNExtractor()
    targets = DigitsTargets(per_class=per_class, limit=limit).load(extractor)
    features = torch.stack([t.feature for t in targets]).repeat_interleave(seeds, dim=0)
    labels = torch.tensor([t.label for t in targets]).repeat_interleave(seeds)
    return Setup(backbone, extractor, features, labels, list(range(seeds)) * len(targets), DigitsOracle())


def run_case(case: Case, setup: Setup) -> dict:
    """Decode every target from each seed (all in one batch) with this case's sampler and guidance."""
    sampler, guidance = case.parts()
    generators = [torch.Generator().manual_seed(seed) for seed in setup.seeds]

    total = case.iterations()
    keep = {round(x) for x in torch.logspace(0, torch.log10(torch.tensor(float(total))), CURVE_POINTS).tolist()}
    curve: dict[int, float] = {}

    def record(evaluation: Evaluation) -> None:
        done = evaluation.iteration + 1  # guided iterations so far, this one included
        if done in keep or done == total:
            curve[done] = evaluation.best_distance.median().item()

    start = time.perf_counter()
    result = guided_decode(
        setup.backbone, sampler, guidance, setup.extractor, setup.features, generators, callback=record
    )
    wall = time.perf_counter() - start

    def oracle_agreement(images: torch.Tensor) -> float:
        classes = setup.oracle.predict_proba(((images + 1) / 2).clamp(0, 1)).argmax(dim=1)
        return (classes == setup.labels).float().mean().item()

    return {
        **asdict(case),
        "key": case.key,
        "iterations": result.guided_iterations,
        "feature_evaluations": result.feature_evaluations,  # decodes + extractions: pre, post checks, final
        "samples": len(generators),
        "median_best_distance": result.best_distance.median().item(),
        "mean_best_distance": result.best_distance.mean().item(),
        "median_final_distance": result.final_distance.median().item(),
        "best_distances": result.best_distance.tolist(),
        "oracle_agreement_best": oracle_agreement(result.best_image),
        "oracle_agreement_final": oracle_agreement(result.final_image),
        "wall_s": wall,
        "s_per_iteration": wall / result.guided_iterations,
        "curve": sorted(curve.items()),
    }


def summarise(results: list[dict]) -> dict:
    """The reference (first case), which cases match it, and the cheapest that does."""
    reference = results[0]
    for r in results:
        r["matches_reference"] = r["median_best_distance"] <= reference["median_best_distance"]
        r["iteration_fraction"] = r["iterations"] / reference["iterations"]
    matching = [r for r in results[1:] if r["matches_reference"]]
    cheapest = min(matching, key=lambda r: (r["iterations"], r["median_best_distance"]), default=None)
    return {"reference": reference["key"], "cheapest_match": cheapest and cheapest["key"], "cases": results}


def post_check(case: dict) -> str:
    every = case.get("post_check_every", 1)  # absent from results saved before the option existed
    return "off" if not case["post_check"] else ("every" if every == 1 else f"every {every}th and last")


def markdown_table(summary: dict) -> str:
    header = (
        "| schedule | w_g | post check | guided iterations | fraction of paper | median best distance "
        "| median final distance | oracle agrees (best) | s / iteration | matches paper |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in sorted(summary["cases"], key=lambda r: (r["iterations"], r["w_g"])):
        mark = "reference" if r["key"] == summary["reference"] else ("yes" if r["matches_reference"] else "no")
        mark = f"**{mark} (cheapest)**" if r["key"] == summary["cheapest_match"] else mark
        lines.append(
            f"| {r['schedule']} | {r['w_g']:g} | {post_check(r)} | {r['iterations']} "
            f"| {r['iteration_fraction']:.3f} | {r['median_best_distance']:.2f} | {r['median_final_distance']:.2f} "
            f"| {r['oracle_agreement_best']:.2f} | {r['s_per_iteration']:.3f} | {mark} |"
        )
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    """Left: median best distance against guided iterations, a curve per schedule at the first w_g.
    Right: where every case ends, by w_g; the paper's median and a tenth of its iterations dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = summary["cases"][0]
    fig, (curves, ends) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    for r in summary["cases"]:
        if r["w_g"] != reference["w_g"] or post_check(r) != "every":
            continue
        x, y = zip(*r["curve"], strict=True)
        style = {"color": "black", "linewidth": 2.5} if r["key"] == summary["reference"] else {"linewidth": 1.1}
        curves.plot(x, y, label=f"{r['schedule']} ({r['iterations']})", **style)
    curves.set_title(
        f"median best distance during the run (w_g = {reference['w_g']:g}, {reference['samples']} samples)"
    )
    curves.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    w_gs = sorted({r["w_g"] for r in summary["cases"]})
    colours = plt.get_cmap("viridis")
    for i, w_g in enumerate(w_gs):
        cases = [r for r in summary["cases"] if r["w_g"] == w_g and post_check(r) == "every"]
        ends.scatter(
            [r["iterations"] for r in cases],
            [r["median_best_distance"] for r in cases],
            color=colours(i / max(len(w_gs) - 1, 1)),
            label=f"w_g = {w_g:g}",
            s=22,
        )
    ends.axvline(reference["iterations"] / 10, color="grey", linestyle=":", linewidth=1)
    ends.set_title("every schedule at its end")
    ends.legend(fontsize=8)
    for ax in (curves, ends):
        ax.axhline(reference["median_best_distance"], color="black", linestyle=":", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="guided iterations", ylabel="median best squared distance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", nargs="+", default=list(DEFAULT_SCHEDULES), help="the first is the reference")
    parser.add_argument(
        "--w-g", type=float, nargs="+", default=[4.0, 0.5, 1.0, 2.0, 8.0], help="the first: every schedule"
    )
    parser.add_argument("--sweep", nargs="*", default=list(SWEPT), help="schedules also run at every other --w-g")
    parser.add_argument("--no-post-check", nargs="*", default=list(SWEPT[:2]), help="also run without the post check")
    parser.add_argument("--thin", nargs="*", default=list(SWEPT[:2]), help="also run with --post-check-every")
    parser.add_argument("--post-check-every", type=int, default=4, help="post check every N-th recurrence, and last")
    parser.add_argument("--per-class", type=int, default=2, help="held-out targets per digit class")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N targets")
    parser.add_argument("--seeds", type=int, default=2, help="samples per target (seeds 0..N-1)")
    parser.add_argument("--out", type=Path, default=Path("outputs/schedule_study"))
    return parser.parse_args(argv)


def cases(args: argparse.Namespace) -> list[Case]:
    main_w_g, *other_w_g = args.w_g
    chosen = [Case(s, main_w_g, True) for s in args.schedules]
    chosen += [Case(s, w, True) for s in args.sweep for w in other_w_g]
    chosen += [Case(s, main_w_g, False) for s in args.no_post_check]
    chosen += [Case(s, main_w_g, True, args.post_check_every) for s in args.thin]
    for case in chosen:
        case.parts()  # a malformed schedule fails before anything runs
    return list(dict.fromkeys(chosen))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    todo = cases(args)
    args.out.mkdir(parents=True, exist_ok=True)
    setup = None  # loaded when a case has to run (not when every case is saved already)
    settings = {"per_class": args.per_class, "seeds": args.seeds, "limit": args.limit}
    results = []
    for case in todo:
        path = args.out / f"{case.key}.json"
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is None or saved["settings"] != settings:
            print(f"{case.key}: {case.iterations()} guided iterations ...", flush=True)
            setup = setup or load_setup(args.per_class, args.seeds, args.limit)
            saved = {"settings": settings, **run_case(case, setup)}
            path.write_text(json.dumps(saved) + "\n")
        print(f"{case.key}: median best distance {saved['median_best_distance']:.3f} in {saved['wall_s']:.0f} s")
        results.append(saved)
    summary = summarise(results)
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown_table(summary)
    (args.out / "table.md").write_text(table + "\n")
    plot(summary, args.out / "curve.png")
    print(table)
    print(f"cheapest schedule matching {summary['reference']}: {summary['cheapest_match']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
