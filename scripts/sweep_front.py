"""The front an Optuna sweep found (`fsa -m experiment=optuna_schedule`), as a Markdown table and a figure.

    python scripts/sweep_front.py outputs/optuna_schedule [--out docs/images/optuna_front.png]

Reads the sweep folder's optimization_results.yaml (the Pareto front Optuna kept) and every job's
summary.json (each trial's figures), prints a table of every trial (front first) and draws the trials'
mean final distance against their guided iterations per sample, the front joined by a line.
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from fsa.pictures import OKABE_ITO
from fsa.tracking.run_folder import RunFolder, State

X, Y = "guided_iterations_per_sample", "mean_final_distance"


def trials(sweep: Path) -> list[dict]:
    """Each complete job of the sweep: its swept values and figures, in job order."""
    found = []
    for job in sorted(
        (p for p in sweep.iterdir() if RunFolder.holds_a_run(p)), key=lambda p: int(p.name.split("_")[0])
    ):
        folder = RunFolder(job)
        summary, _ = folder.summary()
        if folder.state() != State.COMPLETE or summary is None:
            continue
        config = folder.config()
        found.append(
            {
                "job": job.name.split("_")[0],
                "num_steps": config["sampler"]["num_steps"],
                "w_g": config["guidance"]["w_g"],
                X: summary[X],
                Y: summary[Y],
                "median_best_distance": summary["median_best_distance"],
                "final_oracle_agreement": summary["final_oracle_agreement"],
            }
        )
    return found


def on_front(trial: dict, front: list[dict]) -> bool:
    return any(s["values"] == [trial[Y], float(trial[X])] for s in front)


def table(found: list[dict], front: list[dict]) -> str:
    rows = sorted(found, key=lambda t: (not on_front(t, front), t[X]))
    lines = [
        "| trial | DDIM steps | w_g | iterations / sample | mean final distance | median best distance | "
        "oracle, final | on the front |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in rows:
        agreement = "" if t["final_oracle_agreement"] is None else f"{t['final_oracle_agreement']:.2f}"
        lines.append(
            f"| {t['job']} | {t['num_steps']} | {t['w_g']:.3g} | {t[X]} | {t[Y]:.3g} | "
            f"{t['median_best_distance']:.3g} | {agreement} | {'yes' if on_front(t, front) else ''} |"
        )
    return "\n".join(lines) + "\n"


def figure(found: list[dict], front: list[dict], path: Path) -> None:
    plot, axes = plt.subplots(figsize=(6, 3.8))
    axes.scatter([t[X] for t in found], [t[Y] for t in found], s=14, color=OKABE_ITO[5], label="trial")
    kept = sorted((t for t in found if on_front(t, front)), key=lambda t: t[X])
    axes.plot([t[X] for t in kept], [t[Y] for t in kept], "o-", color=OKABE_ITO[3], ms=5, label="Pareto front")
    axes.set_xlabel("guided iterations per sample")
    axes.set_ylabel("mean final distance")
    axes.set_yscale("log")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper right")
    plot.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    plot.savefig(path, dpi=100)
    plt.close(plot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the sweep folder of `fsa -m experiment=optuna_schedule`")
    parser.add_argument("--out", type=Path, default=None, help="the figure (default: <sweep>/front.png)")
    args = parser.parse_args(argv)
    results = args.sweep / "optimization_results.yaml"
    if not results.exists():
        print(f"sweep_front: no optimization_results.yaml in {args.sweep}", file=sys.stderr)
        return 1
    front = yaml.safe_load(results.read_text())["solutions"]
    found = trials(args.sweep)
    print(table(found, front), end="")
    figure(found, front, args.out or args.sweep / "front.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
