"""The GPU check's figures against fsa's speed and memory goals, as ratios measured in one run.

    python scripts/gpu_figures.py outputs/gpu_check      # reads the bench JSONs scripts/gpu_check.sh wrote

Writes gpu_figures.json (every figure and each goal's verdict) and gpu_figures.md (the tables) there.
The goals: the faithful iteration costs at most 1.10 x the sum of its parts (the decoder adds little);
`speed=fast` is at least 5x faster per sample-iteration than the paper's RTX 3090 (0.68 s with CLIP
RN50, 1.30 s with ViT-H/14); peak memory at the presets' batch of 3 at 512 px stays under 10 GB.
"""

import argparse
import json
import sys
from pathlib import Path

from bench import PAPER_MEMORY_GB, comparison_table

MAX_OVERHEAD = 1.10
MIN_SPEED_UP_OVER_PAPER = 5.0
MAX_PEAK_GB = 10.0


def load(folder: Path) -> dict[str, list[dict]]:
    """Every --compare JSON of the folder (a list of variants), by file stem."""
    tables = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, list) and all(isinstance(r, dict) and "variant" in r for r in data):
            tables[path.stem] = data
    return tables


def goal(name: str, measured: float | None, limit: float, at_most: bool) -> dict:
    if measured is None:
        return {"goal": name, "measured": None, "limit": limit, "met": None}
    met = measured <= limit if at_most else measured >= limit
    return {"goal": name, "measured": round(measured, 4), "limit": limit, "met": met}


def goals(tables: dict[str, list[dict]]) -> list[dict]:
    """Each goal for each extractor and every variant measured that it applies to; the speed goal
    for `fast` (the preset) is listed as not measured when no run of it finished."""
    measured = [r for results in tables.values() for r in results if "error" not in r]
    verdicts = []
    for extractor in ("clip_rn50", "vit_h14"):
        rows = [r for r in measured if r["extractor"] == extractor]
        for r in rows:
            if r["variant"] == "faithful" and r["batch"] == 1:
                verdicts.append(goal(f"{extractor}: faithful overhead ratio", r["overhead_ratio"], MAX_OVERHEAD, True))
        for variant in ("fast", "fast_eager"):
            for batch in (1, 3):
                found = [r for r in rows if r["variant"] == variant and r["batch"] == batch]
                if found or (variant == "fast" and batch == 1):
                    speed_up = found[0]["paper_iteration_s"] / found[0]["sample_iteration_s"] if found else None
                    name = f"{extractor}: {variant}, batch {batch}: speed-up over the paper per sample-iteration"
                    verdicts.append(goal(name, speed_up, MIN_SPEED_UP_OVER_PAPER, False))
        for r in rows:
            if r["batch"] == 3:
                name = f"{extractor}: {r['variant']}, batch 3: peak GB"
                verdicts.append(goal(name, r["peak_memory_bytes"] / 1e9, MAX_PEAK_GB, True))
    return verdicts


def schedule_lines(tables: dict[str, list[dict]]) -> list[str]:
    """Time per sample of each whole schedule measured (bench.py --schedule), and the ratio to the first."""
    rows = [r for results in tables.values() for r in results if "error" not in r and r.get("schedule")]
    if not rows:
        return []
    lines = ["", "| schedule | guided iterations | s / sample-iteration | time per sample (s) | vs the first |"]
    lines.append("|---|---|---|---|---|")
    first = rows[0]["sample_iteration_s"] * rows[0]["iterations_per_run"]
    for r in rows:
        per_sample = r["sample_iteration_s"] * r["iterations_per_run"]
        lines.append(
            f"| `{r['schedule']}` | {r['iterations_per_run']:,} | {r['sample_iteration_s']:.4f} | {per_sample:.0f} "
            f"| 1/{first / per_sample:.3g} |"
        )
    return lines


def markdown(verdicts: list[dict], tables: dict[str, list[dict]]) -> str:
    lines = ["| goal | measured | limit | met |", "|---|---|---|---|"]
    for v in verdicts:
        met = {True: "yes", False: "**no**", None: "not measured"}[v["met"]]
        lines.append(f"| {v['goal']} | {v['measured']} | {v['limit']} | {met} |")
    lines += schedule_lines(tables)
    lines.append("")
    lines.append(f"The paper's peak GPU memory (RTX 3090, batch 1): {PAPER_MEMORY_GB} GB.")
    for name, results in tables.items():
        if results:
            lines += ["", f"### {name}", "", comparison_table(results)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    tables = load(args.folder)
    verdicts = goals(tables)
    (args.folder / "gpu_figures.json").write_text(json.dumps({"goals": verdicts, **tables}, indent=2) + "\n")
    text = markdown(verdicts, tables)
    (args.folder / "gpu_figures.md").write_text(text)
    print(text)
    return 0 if all(v["met"] for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
