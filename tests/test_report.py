"""`fsa-report` on hand-built run folders (and, marked slow, on a real smoke multirun)."""

import contextlib
import io
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fsa, fsa_report, load_script
from PIL import Image
from wandb_records import history_rows, read_records

from fsa.report import main
from fsa.report.figures import clip_lines
from fsa.report.layouts import best_with_baselines, by_swept_value, final_and_best
from fsa.report.runs import (
    as_number,
    find_runs,
    format_cell,
    load_run,
    parse_overrides,
    spearman,
    swept_keys,
    trend_sentence,
)
from fsa.tracking.run_folder import GUIDED, RunFolder, SampleResult

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("0_test24", "1_test16")
SAMPLES = 2
W_G = (0.5, 1.0, 2.0)


def best_distance(w_g: float, target: int, sample: int) -> float:
    """A synthetic sweep whose best distance falls as w_g grows (every sample, every target)."""
    return 100.0 / w_g + 3.0 * target + sample


def write_png(path: Path, value: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size, 3), value, dtype=np.uint8)
    pixels[size // 4 : size // 2, size // 4 : size // 2] = 255 - value
    Image.fromarray(pixels).save(path)


CONFIG = {"seed": 0, "guidance": {"w_g": 4.0}, "logger": {"project": "fsa-test"}}


def start_run(root: Path, overrides: list[str]) -> RunFolder:
    """A run folder as a run starts one (locked, admitted); the caller writes into it while locked."""
    folder = RunFolder(root)
    with folder.lock():
        folder.admit(CONFIG, overrides)
    return folder


def write_evaluations(folder: Path, best: dict[tuple[str, int], float], iterations: int = 6) -> None:
    """Pre and post rows per iteration whose minimum is the sample's best distance."""
    rows = []
    for (target, sample), low in best.items():
        for it in range(iterations):
            pre = low + (iterations - 1 - it) * 10.0
            for phase, distance in (("pre", pre), ("post", pre + 1.0)):
                rows.append(
                    (target, sample, sample, it, it, 900 - 100 * it, 0, phase, distance, 0.9, 1.0, 1.0, 0.01, 0.1)
                )
    columns = (
        "target,sample,seed,iteration,step,t,k,phase,distance,cosine,grad_norm,grad_std,clipped_fraction,elapsed_s"
    )
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns.split(",")).to_csv(folder / "evaluations.csv", index=False)


def sample_records(folder: RunFolder, variant: str, best: dict[tuple[str, int], float], reference: float) -> list:
    """summary.json's per-sample records, with the images they point to written where the folder says."""
    records = []
    for number, target in enumerate(TARGETS):
        write_png(folder.target_image(variant, number, target), 40 * number)
        for sample in range(SAMPLES):
            d = best[(target, sample)]
            images = {kind: folder.sample_image(variant, number, target, sample, kind) for kind in ("best", "final")}
            write_png(images["best"], 100 + sample)
            write_png(images["final"], 150 + sample)
            records.append(
                SampleResult(
                    target=target,
                    target_index=number,
                    target_label=number,
                    sample=sample,
                    seed=sample,
                    best_distance=d,
                    best_t=300,
                    best_k=0,
                    best_phase="pre",
                    final_distance=d * 2,
                    final_cosine=0.5,
                    best_png_distance=d + 0.5,
                    final_png_distance=d * 2 + 0.5,
                    guided_iterations=6,
                    network_evaluations=6,
                    feature_evaluations=13,
                    wall_time_s=1.0,
                    best_image=folder.relative(images["best"]),
                    final_image=folder.relative(images["final"]),
                    calibrated_best_distance=d / reference,
                ).to_dict()
            )
    return records


def make_run(root: Path, number: int, w_g: float, baselines: bool = False) -> Path:
    """A complete job folder of a w_g sweep: overrides, table, images and summary.json."""
    run = root / f"{number}_guidance.w_g={w_g:g},smoke=digits"
    folder = RunFolder(run)
    with folder.lock():
        folder.admit(CONFIG, [f"guidance.w_g={w_g:g}", "smoke=digits"])
        folder.complete(make_summary(folder, w_g, baselines))
    return run


def make_summary(folder: RunFolder, w_g: float, baselines: bool) -> dict:
    best = {(t, s): best_distance(w_g, i, s) for i, t in enumerate(TARGETS) for s in range(SAMPLES)}
    write_evaluations(folder.root, best)
    reference = 1000.0
    summary = {
        "status": "complete",
        "reference_distance": reference,
        "mean_best_distance": float(np.mean(list(best.values()))),
        "samples": sample_records(folder, GUIDED, best, reference),
        "baselines": {},
        "baseline_samples": {},
        "proof": {},
    }
    if baselines:
        for name, factor in (("unguided", 5.0), ("printed_sign", 20.0)):
            worse = {key: value * factor for key, value in best.items()}
            write_evaluations(folder.variant_dir(name), worse)
            summary["baselines"][name] = {"mean_best_distance": float(np.mean(list(worse.values())))}
            summary["baseline_samples"][name] = sample_records(folder, name, worse, reference)
    return summary


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three complete w_g jobs (the first with baselines and gradients), one interrupted, one failed.
    Built once per module: the tests only read it (each report goes to its own --out)."""
    root = tmp_path_factory.mktemp("multirun") / "sweep-2026"
    root.mkdir()
    first = make_run(root, 0, W_G[0], baselines=True)
    for number, w_g in enumerate(W_G[1:], start=1):
        make_run(root, number, w_g)
    interrupted = root / "3_guidance.w_g=4,smoke=digits"
    start_run(interrupted, ["guidance.w_g=4", "smoke=digits"])  # its process died: the lock is free again
    write_evaluations(interrupted, {(TARGETS[0], 0): 50.0}, iterations=3)
    failed = RunFolder(root / "4_guidance.w_g=8,smoke=digits")
    with failed.lock():
        failed.admit(CONFIG, ["guidance.w_g=8", "smoke=digits"])
        failed.fail(RuntimeError("CUDA out of memory"))
    torch.save(
        {
            "step": [0, 1, 2],
            "t": [900, 800, 700],
            "values": torch.randn(3, SAMPLES, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
            "samples": [f"000_{TARGETS[0]}/sample{i}" for i in range(SAMPLES)],
            "clip_c": 3.0,
            "clip_mode": "mean",
        },
        first / "gradients.pt",
    )
    return root


def report(folder: Path, *args: str, out: Path | None = None) -> Path:
    out = out or folder / "report"
    assert main([str(folder), "--out", str(out), *args]) == 0
    return out


@pytest.fixture(scope="module")
def multirun_report(multirun: Path) -> tuple[Path, str]:
    """The default report of the shared multirun, written once: (out folder, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = report(multirun)
    return out, printed.getvalue()


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 0 and image.height > 0


def test_runs_csv_has_one_row_per_run_target_sample_with_the_summary_values(multirun, multirun_report):
    out, _ = multirun_report
    runs = pd.read_csv(out / "runs.csv")
    complete = runs[runs["status"] == "complete"]
    guided = complete[complete["variant"] == "guided"]
    assert len(guided) == len(W_G) * len(TARGETS) * SAMPLES
    assert not guided.duplicated(["run", "target", "sample"]).any()
    for run_dir in sorted(multirun.glob("[0-2]_*")):
        summary = json.loads((run_dir / "summary.json").read_text())
        for record in summary["samples"]:
            row = guided[
                (guided["run"] == run_dir.name)
                & (guided["target"] == record["target"])
                & (guided["sample"] == record["sample"])
            ]
            assert len(row) == 1
            for column in ("seed", "best_distance", "final_distance", "best_png_distance", "calibrated_best_distance"):
                assert row[column].item() == pytest.approx(record[column])
            assert "guidance.w_g=" in row["overrides"].item()
    assert (out / "runs.md").read_text().count("\n") == len(runs) + 2


def test_baselines_get_their_own_variant_rows(multirun, multirun_report):
    runs = pd.read_csv(multirun_report[0] / "runs.csv")
    first = runs[runs["run"].str.startswith("0_")]
    assert first.groupby("variant").size().to_dict() == {
        v: len(TARGETS) * SAMPLES for v in ("guided", "printed_sign", "unguided")
    }
    summary = json.loads((next(multirun.glob("0_*")) / "summary.json").read_text())
    unguided = first[first["variant"] == "unguided"].sort_values(["target", "sample"])
    expected = sorted(summary["baseline_samples"]["unguided"], key=lambda r: (r["target"], r["sample"]))
    assert unguided["best_distance"].tolist() == pytest.approx([r["best_distance"] for r in expected])


def test_failed_and_interrupted_runs_are_listed_not_dropped(multirun_report):
    out, printed = multirun_report
    runs = pd.read_csv(out / "runs.csv")
    interrupted = runs[runs["run"].str.startswith("3_")]
    failed = runs[runs["run"].str.startswith("4_")]
    assert interrupted["status"].tolist() == ["interrupted"]
    assert failed["status"].tolist() == ["failed"]
    assert failed["message"].item() == "RuntimeError: CUDA out of memory"
    assert "RuntimeError" in (out / "runs.md").read_text()
    assert "3 complete, 1 failed, 1 interrupted" in printed and "CUDA out of memory" in printed


def test_sweep_groups_by_swept_value_with_the_right_means(multirun_report):
    out, _ = multirun_report
    sweep = pd.read_csv(out / "sweep.csv", dtype={"value": str})
    assert set(sweep["key"]) == {"guidance.w_g"}  # smoke=digits is the same in every run
    guided = sweep[sweep["variant"] == "guided"].set_index("value")
    assert list(guided.index) == ["0.5", "1", "2", "4", "8"]  # numeric order, failed values kept
    for w_g in W_G:
        values = [best_distance(w_g, i, s) for i in range(len(TARGETS)) for s in range(SAMPLES)]
        row = guided.loc[f"{w_g:g}"]
        assert row["count"] == len(values)
        assert row["best_distance_mean"] == pytest.approx(np.mean(values))
        assert row["best_distance_std"] == pytest.approx(np.std(values, ddof=1))
        # Over the 2 targets (each with its samples): the mean of a draw of targets, both of one or one of each.
        per_target = [np.mean([best_distance(w_g, i, s) for s in range(SAMPLES)]) for i in range(len(TARGETS))]
        assert [row["best_distance_low"], row["best_distance_high"]] == pytest.approx(sorted(per_target))
        assert row["calibrated_best_distance_mean"] == pytest.approx(np.mean(values) / 1000.0)
    assert guided.loc["8", "count"] == 0 and guided.loc["8", "runs"] == 1 and guided.loc["8", "complete_runs"] == 0
    unguided = sweep[(sweep["variant"] == "unguided")].set_index("value")
    assert list(unguided.index) == ["0.5"]
    assert (
        "±" in (out / "sweep.md").read_text()
        and "95 % interval of the mean (over targets)" in (out / "sweep.md").read_text()
    )
    assert np.isnan(guided.loc["8", "best_distance_low"])  # no samples, no interval


def test_trend_sentence_follows_the_measured_sign():
    x = [1, 2, 3, 4, 5, 6]
    falling, rising, flat = [9, 7, 6, 4, 2, 1], [1, 2, 4, 5, 7, 9], [3, 1, 4, 1, 5, 3]
    assert spearman(x, falling) == pytest.approx(-1.0)
    assert spearman(x, rising) == pytest.approx(1.0)
    assert abs(spearman(x, flat)) < 0.3
    assert trend_sentence("k", spearman(x, falling), 6).startswith("best distance falls as k grows")
    assert trend_sentence("k", spearman(x, rising), 6).startswith("best distance grows as k grows")
    assert trend_sentence("k", spearman(x, flat), 6).startswith("no clear trend")
    assert "Spearman rho = -1.00, n = 6" in trend_sentence("k", -1.0, 6)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert "too few" in trend_sentence("k", math.nan, 3)
    assert trend_sentence("k", -1.0, 30, values=5).endswith("(Spearman rho = -1.00, n = 30, 5 values)")


def test_trend_is_computed_from_the_runs(multirun_report):
    out, printed = multirun_report
    n = len(W_G) * len(TARGETS) * SAMPLES
    assert "best distance falls as guidance.w_g grows" in (out / "trends.md").read_text()
    assert f"n = {n}, 3 values; a hint only: too few values for a trend)" in (out / "trends.md").read_text()
    assert "best distance falls as guidance.w_g grows" in printed


def test_a_rising_sweep_reads_as_rising(tmp_path):
    root = tmp_path / "rising"
    root.mkdir()
    for number, w_g in enumerate(W_G):
        run = make_run(root, number, w_g)
        summary = json.loads((run / "summary.json").read_text())
        for record in summary["samples"]:
            record["best_distance"] = 1000.0 / record["best_distance"]  # flip the order
        (run / "summary.json").write_text(json.dumps(summary))
    assert "best distance grows as guidance.w_g grows" in (report(root) / "trends.md").read_text()


def assert_figure(path: Path) -> None:
    """A PNG and, beside it, the same figure as an SVG (for papers)."""
    assert_png(path)
    assert "<svg" in path.with_suffix(".svg").read_text()[:2000]


def test_figures_exist_as_png_and_svg(multirun_report):
    out, _ = multirun_report
    figures = out / "figures"
    assert_figure(figures / "boxplot_guidance.w_g.png")
    # beside each box, the mean best distance with its 95 % interval over targets (an error bar)
    assert "mean, 95 % interval over targets" in (figures / "boxplot_guidance.w_g.svg").read_text()
    assert_figure(figures / "sweep_guidance.w_g.png")
    for number, w_g in enumerate(W_G):
        assert_figure(figures / f"runs_{number}_guidance.w_g={w_g:g}.png")
        assert_figure(figures / f"curves_{number}_guidance.w_g={w_g:g}.png")
    assert_figure(figures / "best_0_guidance.w_g=0.5.png")  # the one run with baselines; the others have
    assert not list(figures.glob("best_1_*")) and not list(figures.glob("best_2_*"))  # nothing to set beside
    assert_figure(figures / "curves_3_guidance.w_g=4.png")  # an interrupted run's table is drawn too
    for number in (3, 4):  # interrupted and failed: no images to show
        assert not list(figures.glob(f"runs_{number}_*")) and not list(figures.glob(f"best_{number}_*"))
    assert_figure(figures / "gradients.png")


def test_image_figures_upscale_small_images(multirun_report):
    out, _ = multirun_report
    with Image.open(out / "figures" / "runs_1_guidance.w_g=1.png") as image:
        # 2 targets x (actual + 2 samples x final/best): far larger than the 16 px inputs
        assert image.width > 5 * 100 and image.height > 2 * 100


@pytest.mark.parametrize("mode", ["mean", "zero", "off"])
def test_gradient_histograms_for_every_clip_mode(tmp_path, mode):
    run = make_run(tmp_path, 0, 1.0)
    values = torch.randn(2, 1, 1, 16, 16, generator=torch.Generator().manual_seed(1)) + 0.5
    torch.save(
        {"step": [0, 1], "t": [999, 998], "values": values, "samples": ["x/sample0"], "clip_c": 2.0, "clip_mode": mode},
        run / "gradients.pt",
    )
    out = report(run)
    assert_figure(out / "figures" / "gradients.png")
    flat = values[0, 0].numpy().ravel()
    lines = clip_lines(flat, 2.0, mode)
    std = float(np.std(flat.astype(np.float64), ddof=1))
    if mode == "mean":
        mean = float(flat.mean())
        assert lines == pytest.approx([mean, mean - 2 * std, mean + 2 * std])
    elif mode == "zero":
        assert lines == pytest.approx([-2 * std, 2 * std])
    else:
        assert lines == []


def test_a_single_run_folder_has_no_sweep(tmp_path):
    run = make_run(tmp_path, 0, 1.0)
    out = report(run)
    assert len(pd.read_csv(out / "runs.csv")) == len(TARGETS) * SAMPLES
    assert not (out / "sweep.csv").exists() and not (out / "trends.md").exists()
    assert (run / "report" / "figures" / "runs_0_guidance.w_g=1_smoke=digits.png").exists()
    assert (run / "report" / "report.html").exists()


def test_wandb_offline_creates_one_report_run_in_the_out_folder(multirun, tmp_path):
    out = report(multirun, "--wandb", "offline", out=tmp_path / "wandb-report")
    stores = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(stores) == 1
    records = read_records(stores[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.job_type == "report" and run.run_group == f"fsa {multirun.name}" and run.project == "fsa-test"
    logged = {key for row in history_rows(records) for key in row}
    logged_names = {"/".join(key.split("/")[:2]) if key.startswith("figures/") else key.split("/")[0] for key in logged}
    assert {"runs", "sweep", "trends", "figures/boxplot_guidance.w_g"} <= logged_names


def test_the_report_logs_to_the_group_the_runs_recorded(multirun):
    from fsa.report.command import recorded_group

    runs = [load_run(path) for path in find_runs(multirun)]
    assert recorded_group(runs, multirun) == f"fsa {multirun.name}"  # folders without a record: as fsa named them
    recorded = replace(runs[1], summary={**runs[1].summary, "tracker": {"group": "appb_wg 2026-12-05 10-00-00"}})
    assert recorded_group([runs[0], recorded], multirun) == "appb_wg 2026-12-05 10-00-00"


def test_no_runs_returns_1(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no runs" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 1


def test_overrides_parsing_and_swept_keys(multirun):
    assert parse_overrides(["a.b=1", "+c=x", "~d=", "flag"]) == {"a.b": "1", "c": "x", "d": ""}
    assert as_number("0.5") == 0.5 and as_number("vit_h14") is None and as_number(True) is None
    runs = [load_run(p) for p in find_runs(multirun)]
    assert [r.name[0] for r in runs] == ["0", "1", "2", "3", "4"]
    assert swept_keys(runs) == ["guidance.w_g"]


@pytest.fixture(scope="module")
def appc_sweep(scenarios) -> Path:
    """App. C's early-steps sweep at smoke scale: two jobs."""

    def build(folder: Path) -> None:
        result = fsa(
            "-m", "experiment=appc_early_steps", "smoke=digits", "logger.mode=disabled", f"hydra.sweep.dir={folder}"
        )
        assert result.returncode == 0, result.stderr[-2000:]

    return scenarios.get("appc_early_steps_smoke", build)


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment,key,jobs", [("appb_wg", "guidance.w_g", 5), ("appc_early_steps", "guidance.early_steps", 2)]
)
def test_report_of_a_real_smoke_multirun(request, tmp_path, experiment, key, jobs):
    sweep = (
        request.getfixturevalue("appb_sweep")[0] if experiment == "appb_wg" else request.getfixturevalue("appc_sweep")
    )
    out = tmp_path / "report"
    report_run = fsa_report(str(sweep), "--out", str(out))
    assert report_run.returncode == 0, report_run.stderr[-2000:]
    runs = pd.read_csv(out / "runs.csv")
    assert runs["run"].nunique() == jobs and set(runs["status"]) == {"complete"}
    # Every row holds the values of its run's own summary.json; the sweep table their means.
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == jobs and len(runs) == sum(len(s["samples"]) for s in summaries.values())
    for row in runs.itertuples():
        sample = next(
            s for s in summaries[row.run]["samples"] if (s["target"], s["sample"]) == (row.target, row.sample)
        )
        assert row.best_distance == pytest.approx(sample["best_distance"])
        assert row.final_distance == pytest.approx(sample["final_distance"])
    table = pd.read_csv(out / "sweep.csv")
    assert len(table[table["key"] == key]) == jobs
    # The page's runs table gives each run's mean best distance with its interval over targets.
    page = (out / "report.html").read_text()
    for summary in summaries.values():
        low, high = summary["intervals"]["mean_best_distance"]
        assert f"{format_cell(summary['mean_best_distance'])} [{format_cell(low)}, {format_cell(high)}]" in page
    assert_figure(out / "figures" / f"boxplot_{key}.png")
    assert_figure(out / "figures" / f"sweep_{key}.png")
    trends = (out / "trends.md").read_text()
    said = "Spearman rho" if jobs >= 3 else "too few for a trend"  # App. C's two values: no rank correlation
    assert key in trends and said in trends and said in report_run.stdout
    assert f"a sweep of {jobs} runs over {key}" in report_run.stdout
    assert len(list(out.glob("figures/runs_*.png"))) == jobs
    assert not list(out.glob("figures/best_*.png"))  # the paper's presets run no baselines: nothing to set beside


def test_report_page_holds_every_run_table_figure_and_config(multirun, multirun_report):
    out, printed = multirun_report
    page = (out / "report.html").read_text()
    assert f"open {out / 'report.html'}" in printed
    for run in find_runs(multirun):
        assert run.name in page
    assert "CUDA out of memory" in page and "interrupted" in page  # the runs that did not complete
    assert "best distance falls as guidance.w_g grows" in page  # the trend sentence
    assert "App. C" in page and "Fig. 10" in page and "Figs. 11-12" in page and "Fig. 2" in page
    assert page.count("w_g: 4.0") == 5  # every run's config (all five hand-built runs share CONFIG)
    # Self-contained: every image embedded; the only links are the figures' SVGs beside the page.
    sources = re.findall(r'<img src="([^"]*)"', page)
    figures = len(list((out / "figures").glob("*.png")))
    overviews = len([run for run in find_runs(multirun) if (run / "overview.png").exists()])
    assert len(sources) == figures + overviews and all(s.startswith("data:image/png;base64,") for s in sources)
    links = re.findall(r'href="([^"]*)"', page)
    assert len(links) == figures and all((out / link).is_file() for link in links)
    assert "<script" not in page and "http" not in page


def test_report_page_in_a_real_browser(multirun_report, tmp_path):
    """Chromium opens the page from its file: every image loads, no console error; a screenshot is saved.
    CI installs Debian's chromium (.ci/run), so this runs there; locally it needs chromium too."""
    screenshots = load_script("page_screenshot")
    if screenshots.find_chromium() is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")
    pytest.importorskip("playwright", reason="the dev extra's playwright drives Chromium")
    out, _ = multirun_report
    shot = tmp_path / "report_page.png"
    found = screenshots.check_page(out / "report.html", shot)
    assert found["title"] == f"fsa report: {out.parent.name}"
    assert found["images"] == len(re.findall(r"<img ", (out / "report.html").read_text())) > 10
    assert found["broken"] == [] and found["errors"] == []
    assert "CUDA out of memory" in found["text"]
    assert_png(shot)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # the page rendered, not a blank screen


# ---------------------------------------------------------------- the paper's layouts, from the runs' data


def svg_text(path: Path) -> str:
    """The text of a figure's SVG (fsa writes text as text), lines joined."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", path.with_suffix(".svg").read_text()))


def loaded(multirun: Path) -> list:
    return [load_run(p) for p in find_runs(multirun)]


def test_final_and_best_layout_is_the_papers_figs_3_4(multirun, multirun_report):
    run = loaded(multirun)[1]  # w_g = 1
    table = final_and_best(run, "t")
    runs = [f"sample {s} (seed {s})" for s in range(SAMPLES)]
    assert table.columns == ["actual image", *(f"{r}\n{kind}" for r in runs for kind in ("final", "best"))]
    assert [label for label, _ in table.rows] == list(TARGETS)
    for number, (target, cells) in enumerate(table.rows):
        assert cells[0].image == run.folder.target_image(GUIDED, number, target)
        for s in range(SAMPLES):
            final, best = cells[1 + 2 * s], cells[2 + 2 * s]
            assert best.caption == f"{best_distance(1.0, number, s):.4g}"
            assert final.caption == f"{2 * best_distance(1.0, number, s):.4g}"  # hand-built: final = 2 x best
            assert best.image.name == f"sample{s}_best.png" and final.image.name == f"sample{s}_final.png"
    # The drawn figure carries the same labels.
    text = svg_text(multirun_report[0] / "figures" / "runs_1_guidance.w_g=1.png")
    for label in [*TARGETS, *runs, *(f"{best_distance(1.0, t, s):.4g}" for t in range(2) for s in range(SAMPLES))]:
        assert label in text


def test_best_with_baselines_layout_is_the_papers_figs_5_7(multirun, multirun_report):
    run = loaded(multirun)[0]  # w_g = 0.5, with both baselines
    table = best_with_baselines(run, "t")
    assert len(table.columns) == 1 + 3 * SAMPLES
    assert [c.split("\n")[0] for c in table.columns[1:]] == ["fsa"] * 2 + ["unguided"] * 2 + ["printed_sign"] * 2
    for number, (_, cells) in enumerate(table.rows):
        guided = [best_distance(0.5, number, s) for s in range(SAMPLES)]
        expected = guided + [5 * d for d in guided] + [20 * d for d in guided]  # make_summary's baselines
        assert [c.caption for c in cells[1:]] == [f"{d:.4g}" for d in expected]
        assert [c.image.parent.parent.parent.name for c in cells[3:5]] == ["unguided"] * 2  # baselines/<name>/images
    text = svg_text(multirun_report[0] / "figures" / "best_0_guidance.w_g=0.5.png")
    assert "unguided" in text and "printed_sign" in text


def test_by_swept_value_layout_is_the_papers_figs_11_12_with_failed_values_kept(multirun, multirun_report):
    table = by_swept_value(loaded(multirun), "guidance.w_g", "t")
    values = ["0.5", "1", "2", "4", "8"]  # numeric order; 4 was interrupted, 8 failed
    assert table.columns[1:] == [f"guidance.w_g={v}\nsample {s} (seed {s})" for v in values for s in range(SAMPLES)]
    assert [label for label, _ in table.rows] == list(TARGETS)
    for number, (_, cells) in enumerate(table.rows):
        for i, value in enumerate(values):
            group = cells[1 + i * SAMPLES : 1 + (i + 1) * SAMPLES]
            if value == "4":
                assert [c.text for c in group] == ["interrupted"] * SAMPLES and all(c.image is None for c in group)
            elif value == "8":
                assert [c.text for c in group] == ["failed"] * SAMPLES
            else:
                assert [c.caption for c in group] == [f"{best_distance(float(value), number, s):.4g}" for s in range(2)]
    text = svg_text(multirun_report[0] / "figures" / "sweep_guidance.w_g.png")
    assert all(f"guidance.w_g={v}" in text for v in values) and "failed" in text and "interrupted" in text


def test_a_caption_target_is_shown_as_its_text_as_in_fig_8(tmp_path):
    run_path = make_run(tmp_path, 0, 1.0)
    for png in run_path.glob("images/*/target.png"):
        png.unlink()  # caption targets have no actual image
    table = final_and_best(load_run(run_path), "t")
    assert [(c.image, c.text) for c in (cells[0] for _, cells in table.rows)] == [(None, t) for t in TARGETS]


def test_gradients_of_several_runs_share_one_figure_one_row_each(tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    for number, w_g in enumerate((1.0, 2.0)):
        run = make_run(root, number, w_g)
        values = torch.randn(3, 1, 1, 8, 8, generator=torch.Generator().manual_seed(number))
        torch.save(
            {"step": [0, 1, 2], "t": [999, 998, 997], "values": values, "clip_c": 3.0, "clip_mode": "mean"},
            run / "gradients.pt",
        )
    text = svg_text(report(root) / "figures" / "gradients.png")
    assert "guidance.w_g=1" in text and "guidance.w_g=2" in text and "(mean ± 3 std)" in text
    assert text.count("t = 999") == 2 and text.count("t = 997") == 2  # a row per run, a panel per step


def test_an_output_folder_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "failed"}))
    (tmp_path / "a_file").write_bytes(b"")
    assert main([str(run), "--out", str(tmp_path / "a_file" / "report"), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the output folder" in err[0] and "--out" in err[0]


def test_keys_that_do_not_make_a_run_what_it_is_are_not_swept():
    from types import SimpleNamespace

    from fsa.report.runs import swept_keys

    runs = [
        SimpleNamespace(overrides=("progress=false", "guidance.w_g=1", "threads=1", "hydra.run.dir=a")),
        SimpleNamespace(overrides=("progress=true", "guidance.w_g=2", "threads=2", "hydra.run.dir=b")),
    ]
    assert swept_keys(runs) == ["guidance.w_g"]


def make_job(root: Path, name: str, overrides: list[str], w_g: float) -> Path:
    """A complete run folder with any overrides (make_run's data)."""
    folder = RunFolder(root / name)
    with folder.lock():
        folder.admit(CONFIG, overrides)
        folder.complete(make_summary(folder, w_g, baselines=False))
    return folder.root


def test_runs_are_grouped_by_what_they_are_and_only_a_sweeps_jobs_are_compared(tmp_path):
    """A folder holding a w_g sweep, a second sweep (over seed) and two runs made separately: each sweep
    is compared within itself only, the separate runs not at all (no trend across a tiny debug run and
    a real one), and every figure file is its own."""
    root = tmp_path / "mixed"
    for number, w_g in enumerate(W_G):
        make_run(root, number, w_g)
    for number, seed in enumerate((0, 1, 2)):
        make_job(root, f"{number}_seed={seed},debug=tiny", [f"seed={seed}", "debug=tiny"], 1.0 + seed)
    make_job(root, "tiny", ["debug=tiny", "progress=false"], 1.0)
    make_job(root, "real", ["experiment=fig3_clip", "guidance.w_g=3", "threads=1"], 3.0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = report(root)
    said = printed.getvalue()
    assert "a sweep of 3 runs over guidance.w_g (smoke=digits)" in said
    assert "a sweep of 3 runs over seed (debug=tiny)" in said and "2 run(s) outside any sweep" in said
    sweep = pd.read_csv(out / "sweep.csv")
    assert set(sweep["sweep"]) == {"smoke=digits", "debug=tiny"}
    w_g_rows = sweep[(sweep["sweep"] == "smoke=digits") & (sweep["variant"] == "guided")]
    assert list(w_g_rows["value"]) == [0.5, 1.0, 2.0] and set(w_g_rows["runs"]) == {1}  # not the separate w_g=3
    trends_text = (out / "trends.md").read_text()
    xs = [w_g for w_g in W_G for _ in TARGETS for _ in range(SAMPLES)]
    ys = [best_distance(w_g, i, s) for w_g in W_G for i in range(len(TARGETS)) for s in range(SAMPLES)]
    expected = f"falls as guidance.w_g grows (Spearman rho = {spearman(xs, ys):.2f}, n = {len(xs)}, 3 values"
    assert f"smoke=digits: best distance {expected}" in trends_text
    assert "debug=tiny: " in trends_text and "experiment" not in trends_text and "progress" not in trends_text
    boxplots = sorted(p.name for p in (out / "figures").glob("*boxplot*.png"))
    assert boxplots == ["sweep1_boxplot_guidance.w_g.png", "sweep2_boxplot_seed.png"]
    page = (out / "report.html").read_text()
    assert "experiment=fig3_clip guidance.w_g=3" in page  # the separate run, named by its own overrides


def test_two_values_are_too_few_for_a_trend():
    assert (
        trend_sentence("k", 1.0, 8, values=2)
        == "k takes 2 value(s): too few for a trend; compare them in the sweep table (n = 8)"
    )
