"""The schedule study: which sampler, K schedule and gradient reach the paper schedule's best *and* final
distances for the least work, picked on one set of held-out digit targets and reported on another.

A case is the overrides a user types after `fsa`. Every case runs on both target sets as

    fsa <case> dataset.skip=S max_samples=SEEDS baselines=[] logger.mode=disabled progress=false

in a subprocess, S = 0 the pick set and S = 1 the report set (each 10 held-out digits, one per class,
disjoint). The study reads each run's summary.json and counts the case's network FLOPs per sample with
scripts/bench.py's counter: at the embedded digits size, and projected to SD 1.4 at 512 px with CLIP
RN50 (the paper's Fig. 3 setting), from the run's own counts of guided iterations and post checks.

    python scripts/schedule_study.py                                 # every case, both sets (~40 min)
    python scripts/schedule_study.py --cases paper fast --seeds 3
    python scripts/schedule_study.py --case "mine=sampler=ddim sampler.num_steps=300 guidance=k1"

Every case is compared with the paper schedule on the same targets and seeds: the ratio of its median
best distance to the paper's and of its mean final distance to the paper's, each with a 95 % interval
from a paired bootstrap over targets (fsa.intervals). A ratio whose interval lies below 1 is "closer",
above 1 "farther", and one whose interval holds 1 is "tied": the data cannot tell the two apart, and
a tie is not held against a case. A case "meets the goal" on a set when neither ratio is "farther",
its oracle agreement (best and final images) is not clearly lower than the paper's (its Wilson
interval reaches the paper's), and its SD FLOPs per sample are at most 1/25 of the paper's. A verdict
that rests on a tie says so in the table; more seeds (--seeds) narrow the intervals. Results:
OUT/<case>/skip<S>/ (fsa's run folders; a finished one is reused), results.json, table.md and work.png
(best and final distance against FLOPs, report set, with 95 % intervals).
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

from fsa.guidance.options import GRADIENTS
from fsa.intervals import by_target, ratio_of_means, target_bootstrap

REFERENCE = "paper"
CASES = {
    REFERENCE: "sampler=ddpm guidance=paper",  # 12,960 guided iterations: the reference
    "quick": "guidance=quick",  # the default: DDIM 50, K 20 x 5 then 4
    "ddim1000_k1": "sampler=ddim1000 guidance=k1",  # the earlier study's pick (best distance only)
    "ddim500_k1_w2": "sampler=ddim sampler.num_steps=500 guidance=k1 guidance.w_g=2",
    "ddim300_k1_backward1": "sampler=ddim sampler.num_steps=300 guidance=k1 guidance.backward_steps=1",
    "ddim680_k1_w1_nopost": "sampler=ddim sampler.num_steps=680 guidance=k1 guidance.w_g=1 guidance.post_check=false",
    "dpmpp680_k1_w1_nopost": "sampler=dpmpp sampler.num_steps=680 guidance=k1 guidance.w_g=1 guidance.post_check=false",
    "ddim500_k1_w1_nopost": "sampler=ddim sampler.num_steps=500 guidance=k1 guidance.w_g=1 guidance.post_check=false",
    "ddim400_k1_w1_nopost": "sampler=ddim sampler.num_steps=400 guidance=k1 guidance.w_g=1 guidance.post_check=false",
    "dpmpp400_k1_w1_nopost": "sampler=dpmpp sampler.num_steps=400 guidance=k1 guidance.w_g=1 guidance.post_check=false",
    "ddim250_k1_w1_nopost": "sampler=ddim sampler.num_steps=250 guidance=k1 guidance.w_g=1 guidance.post_check=false",
    "ddim250_k1_w1_nopost_backward1": (
        "sampler=ddim sampler.num_steps=250 guidance=k1 guidance.w_g=1 guidance.post_check=false "
        "guidance.backward_steps=1"
    ),
    "fast": "sampler=fast guidance=fast",  # the preset: the cheapest case that meets the goal on the pick set
}
PICK, REPORT = 0, 1
SETS = {PICK: "pick", REPORT: "report"}
FLOP_BUDGET = 1 / 25  # of the paper schedule's network FLOPs per sample
SIZES = {"digits": ["--digits"], "sd512": ["--extractor", "clip_rn50", "--image-size", "512"]}


def command(overrides: str, skip: int, seeds: int, extra: list[str]) -> list[str]:
    """The `fsa` command line of one case on one target set (what table.md prints)."""
    common = [f"dataset.skip={skip}", f"max_samples={seeds}", "baselines=[]", "logger.mode=disabled", "progress=false"]
    return ["fsa", *shlex.split(overrides), *common, *extra]


def run_case(overrides: str, skip: int, seeds: int, extra: list[str], folder: Path) -> dict:
    """fsa's summary of the case on a target set, running it first unless a finished run is there."""
    summary_file = folder / "summary.json"
    if not summary_file.exists() or json.loads(summary_file.read_text()).get("status") != "complete":
        argv = command(overrides, skip, seeds, extra)
        print("$", shlex.join(argv), flush=True)
        fsa = [sys.executable, "-m", "fsa", *argv[1:], f"hydra.run.dir={folder}"]
        done = subprocess.run(fsa, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} failed:\n{done.stderr[-4000:]}")
    return json.loads(summary_file.read_text())


def flops_per_part(size: str, tiny: bool, cache: Path) -> dict[str, int]:
    """bench.py's FLOPs of one guided iteration's parts at `size`: both UNet parts (with and without its
    backward), one backward-guidance step and the post check; cached in `cache`. `tiny` counts bench's
    tiny networks in place of SD's (for tests)."""
    counted = json.loads(cache.read_text()) if cache.exists() else {}
    if size not in counted:
        networks = ["--tiny"] if tiny and size == "sd512" else SIZES[size]
        parts: dict[str, int] = {}
        for gradient in GRADIENTS:
            args = bench.parse_args([*networks, "--flops-only", "--gradient", gradient, "--backward-steps", "1"])
            parts |= bench.run_benchmark(args)["flops_per_part"]
        counted[size] = parts
        cache.write_text(json.dumps(counted, indent=2) + "\n")
    return counted[size]


def flops_per_sample(summary: dict, guidance: dict, parts: dict[str, int]) -> float:
    """Network FLOPs of one sample: per guided iteration the gradient (Eq. 3's g; `guidance.gradient`),
    `backward_steps` backward-guidance steps, and the post checks the run made (counted from its
    feature evaluations: one per iteration for g, one per backward step, one per post check, one final)."""
    sample = summary["samples"][0]
    iterations = sample["guided_iterations"]
    unet = parts["unet_fwd_bwd"] if guidance["gradient"] == "z_t" else parts["unet_fwd"]
    gradient = unet + parts["vae_decode_fwd_bwd"] + parts["extractor_fwd_bwd"]
    backward_steps = guidance["backward_steps"]
    post_checks = sample["feature_evaluations"] - iterations * (1 + backward_steps) - 1
    return iterations * (gradient + backward_steps * parts["backward_guidance"]) + post_checks * parts["post_check"]


def figures(summary: dict) -> dict:
    """A run's figures with their 95 % intervals (fsa's summary: a bootstrap over targets; Wilson's)."""
    keys = ("median_best_distance", "mean_final_distance", "best_oracle_agreement", "final_oracle_agreement")
    return {key: summary[key] for key in keys} | {
        "intervals": {key: summary["intervals"][key] for key in keys},
        "wall_time_s": summary["wall_time_s"],
        "samples": len(summary["samples"]),
    }


def verdict(interval: list[float] | None) -> str:
    """A ratio to the paper's: "closer" (its interval below 1), "farther" (above 1) or "tied" (it holds 1,
    or there is no interval: the data cannot tell)."""
    if interval and interval[1] < 1:
        return "closer"
    if interval and interval[0] > 1:
        return "farther"
    return "tied"


def against_reference(case: dict, reference: dict) -> dict:
    """The case's median best and mean final distance over the paper schedule's, on the same targets and
    seeds, each with its paired-bootstrap interval over targets and its verdict."""

    def paired(key: str) -> list[dict]:
        paper = {(s["target_index"], s["sample"]): s[key] for s in reference["samples"]}
        return [s | {"paper": paper[(s["target_index"], s["sample"])]} for s in case["samples"]]

    def median_ratio(a: np.ndarray) -> float:
        return float(np.median(a[:, 0]) / np.median(a[:, 1]))

    best = by_target(paired("best_distance"), "best_distance", "paper")
    ratios = {
        "best": {"value": median_ratio(np.concatenate(best)), "interval": target_bootstrap(best, median_ratio)},
        "final": ratio_of_means(paired("final_distance"), "final_distance", "paper"),
    }
    return {kind: ratio | {"verdict": verdict(ratio["interval"])} for kind, ratio in ratios.items()}


def meets_goal(case: dict, reference: dict, target_set: str) -> bool:
    """Neither distance ratio "farther" than the paper's (a tie is no evidence against), neither oracle
    agreement clearly lower (the case's interval reaches the paper's), within the FLOP budget."""
    got, paper = case[target_set], reference[target_set]
    agreements = (
        got["intervals"][key][1] >= paper["intervals"][key][0]
        for key in ("best_oracle_agreement", "final_oracle_agreement")
    )
    return (
        all(got["versus"][kind]["verdict"] != "farther" for kind in ("best", "final"))
        and all(agreements)
        and case["flops_fraction"] <= FLOP_BUDGET
    )


def study(cases: dict[str, str], seeds: int, extra: list[str], out: Path, tiny_flops: bool) -> dict:
    """Every case on both sets; its FLOPs per sample; the verdicts against the reference (the first case)."""
    parts = {size: flops_per_part(size, tiny_flops, out / "flops.json") for size in SIZES}
    results, runs = [], []
    for name, overrides in cases.items():
        result: dict = {"case": name, "overrides": overrides}
        summaries = {skip: run_case(overrides, skip, seeds, extra, out / name / f"skip{skip}") for skip in SETS}
        runs.append(summaries)
        result |= {target_set: figures(summaries[skip]) for skip, target_set in SETS.items()}
        result["command"] = shlex.join(command(overrides, REPORT, seeds, extra))
        # The work, from the report set's run (both sets run the same schedule).
        report = summaries[REPORT]
        guidance = yaml.safe_load((out / name / f"skip{REPORT}" / "config.yaml").read_text())["guidance"]
        result["guided_iterations"] = report["guided_iterations_per_sample"]
        for size in SIZES:
            result[f"flops_{size}"] = flops_per_sample(report, guidance, parts[size])
        results.append(result)
    reference = results[0]
    for result, summaries in zip(results, runs, strict=True):
        for skip, target_set in SETS.items():
            result[target_set]["versus"] = against_reference(summaries[skip], runs[0][skip])
    for result in results:
        result["flops_fraction"] = result["flops_sd512"] / reference["flops_sd512"]
        for target_set in SETS.values():
            result[f"meets_goal_{target_set}"] = meets_goal(result, reference, target_set)
    return {"reference": reference["case"], "flop_budget": FLOP_BUDGET, "pick": pick(results), "cases": results}


def pick(results: list[dict]) -> str | None:
    """The case a preset should be: of those that meet the goal on the pick set, the fewest FLOPs; among
    equals, the one with more "closer" verdicts, then the one whose worse distance ratio to the paper's
    (best or final) is smaller. Never the reference, nor `fast` itself (the pick, once chosen)."""

    def closer(r: dict) -> int:
        return sum(r["pick"]["versus"][kind]["verdict"] == "closer" for kind in ("best", "final"))

    def worse_ratio(r: dict) -> float:
        return max(r["pick"]["versus"][kind]["value"] for kind in ("best", "final"))

    meeting = [r for r in results[1:] if r["meets_goal_pick"] and r["case"] != "fast"]
    return min(meeting, key=lambda r: (r["flops_sd512"], -closer(r), worse_ratio(r)))["case"] if meeting else None


def shown(value: float, interval: list[float] | None) -> str:
    return f"{value:.3g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")


def markdown_table(summary: dict) -> str:
    """The cases against the paper schedule: work, then per set the ratios (with intervals and verdicts),
    the distances and the oracle agreement (report set), and whether the goal is met."""
    lines = [
        "| case | guided iterations | PFLOP / sample (SD 512) | fraction of paper "
        "| best / paper's, pick | final / paper's, pick | best / paper's, report | final / paper's, report "
        "| best, final (report) | oracle best / final, report | wall s per run, report | goal: pick / report |",
        "|" + "---|" * 12,
    ]
    for r in summary["cases"]:
        report = r["report"]
        goal = (
            "reference"
            if r["case"] == summary["reference"]
            else (f"{'yes' if r['meets_goal_pick'] else 'no'} / {'yes' if r['meets_goal_report'] else 'no'}")
        )
        ties = {s for s in SETS.values() for kind in ("best", "final") if r[s]["versus"][kind]["verdict"] == "tied"}
        if r["case"] != summary["reference"] and ties and (r["meets_goal_pick"] or r["meets_goal_report"]):
            goal += " (on a tie)"
        goal += " (**the pick**)" if r["case"] == summary["pick"] else ""
        ratios = [
            f"{shown(v['value'], v['interval'])} {v['verdict']}"
            for v in (r[s]["versus"][kind] for s in SETS.values() for kind in ("best", "final"))
        ]
        agreements = " / ".join(
            shown(report[f"{kind}_oracle_agreement"], report["intervals"][f"{kind}_oracle_agreement"])
            for kind in ("best", "final")
        )
        lines.append(
            f"| `{r['case']}` | {r['guided_iterations']:,} | {r['flops_sd512'] / 1e15:.3g} "
            f"| 1/{1 / r['flops_fraction']:.3g} | {' | '.join(ratios)} "
            f"| {report['median_best_distance']:.3g}, {report['mean_final_distance']:.3g} "
            f"| {agreements} | {report['wall_time_s']:.0f} | {goal} |"
        )
    lines += ["", "Each case's command (the report set; `dataset.skip=0` for the pick set):", ""]
    lines += [f"- `{r['case']}`: `{r['command']}`" for r in summary["cases"]]
    return "\n".join(lines)


def work_figure(summary: dict, path: Path) -> None:
    """Median best and mean final distance (report set) against SD 512 px PFLOP per sample, log-log, each
    with its 95 % interval (a bootstrap over targets) as an error bar; a panel each, the paper's as a
    horizontal line, the FLOP budget as a vertical one. Cases with the same figures (`fast` and the case
    it was picked from) share one point and label."""
    cases, paper = summary["cases"], summary["cases"][0]
    points: dict[tuple, list[dict]] = {}
    for r in cases:
        key = (r["flops_sd512"], r["report"]["median_best_distance"], r["report"]["mean_final_distance"])
        points.setdefault(key, []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for ax, key, title in (
        (axes[0], "median_best_distance", "median best distance"),
        (axes[1], "mean_final_distance", "mean final distance"),
    ):
        for i, same in enumerate(points.values()):
            x, y = same[0]["flops_sd512"] / 1e15, same[0]["report"][key]
            low, high = same[0]["report"]["intervals"][key] or (y, y)
            colour = "black" if same[0] is paper else "C0"
            ax.errorbar(x, y, yerr=[[y - low], [high - y]], fmt="o", color=colour, ms=4, capsize=3)
            label = " = ".join(r["case"] for r in same)
            ax.annotate(label, (x, y), fontsize=6, xytext=(4, 6 if i % 2 else -9), textcoords="offset points")
        ax.axhline(paper["report"][key], color="black", ls=":", lw=1, label="the paper schedule")
        ax.axvline(
            paper["flops_sd512"] / 1e15 * summary["flop_budget"], color="grey", ls="--", lw=1, label="1/25 of its FLOPs"
        )
        ax.set(
            xscale="log",
            yscale="log",
            title=f"{title}, report set",
            xlabel="network PFLOP per sample, projected to SD 1.4 at 512 px",
        )
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("squared feature distance")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", choices=tuple(CASES), default=list(CASES), help="built-in cases")
    parser.add_argument("--reference", default=CASES[REFERENCE], help="the reference's overrides (the paper's)")
    parser.add_argument("--case", action="append", default=[], metavar="NAME=OVERRIDES", help="a case of your own")
    parser.add_argument("--seeds", type=int, default=2, help="samples per target (max_samples)")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every case (e.g. debug=tiny)")
    parser.add_argument("--tiny-flops", action="store_true", help="count FLOPs with bench.py's tiny networks (tests)")
    parser.add_argument("--out", type=Path, default=Path("outputs/schedule_study"))
    args = parser.parse_args(argv)
    if any("=" not in c for c in args.case):
        parser.error("--case needs NAME=OVERRIDES")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The reference comes first, always: every verdict is against it.
    cases = {REFERENCE: args.reference} | {name: CASES[name] for name in args.cases if name != REFERENCE}
    cases |= dict(c.split("=", 1) for c in args.case)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = study(cases, args.seeds, args.extra, args.out, args.tiny_flops)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary)
    (args.out / "table.md").write_text(table + "\n")
    work_figure(summary, args.out / "work.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
