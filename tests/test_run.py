"""`run()` end to end on the tiny preset: every promised output exists and agrees with the others."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import compose_config, shared_run
from hydra.utils import instantiate
from PIL import Image
from wandb_records import config, history_rows, logged_table, run_id, run_record, runs_by_job_type, summary

from fsa.extractors.base import FeatureExtractor
from fsa.job import run
from fsa.tasks.guide.listeners import TABLE_COLUMNS

tiny_run = shared_run("tiny", ["debug=tiny"])


@pytest.fixture(scope="module")
def guided(tiny_run):
    out, summary = tiny_run
    return out, compose_config(["debug=tiny"], out), summary


def test_summary_is_written_and_complete(guided):
    out, cfg, result = guided
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == "complete" and on_disk["mean_best_distance"] == pytest.approx(
        result["mean_best_distance"]
    )
    assert len(on_disk["samples"]) == cfg.batch_size == 2
    iterations = 3 + 3 * 2  # debug=tiny: 4 DDIM steps, K = 3 for the first, then 2
    for s in on_disk["samples"]:
        assert s["guided_iterations"] == on_disk["guided_iterations_per_sample"] == iterations
        assert s["network_evaluations"] == iterations and s["feature_evaluations"] == 2 * iterations + 1
        assert s["best_distance"] <= s["final_distance"]
        assert s["seed"] == cfg.seed + s["sample"]
    assert on_disk["peak_memory_mb"] > 0 and on_disk["wall_time_s"] > 0
    speed = on_disk["speed"]  # one batch of 2 samples: its time, per iteration and per sample
    assert speed["guided_decode_s"] == pytest.approx(on_disk["samples"][0]["wall_time_s"])
    assert speed["seconds_per_iteration"] == pytest.approx(speed["guided_decode_s"] / iterations)
    assert speed["seconds_per_sample"] == pytest.approx(speed["guided_decode_s"] / 2)
    assert speed["samples_per_batch"] == 2 and speed["guided_decode_s"] < on_disk["wall_time_s"]
    assert on_disk["intervals"]["mean_best_distance"] is None  # one target: no interval over targets
    assert (out / "config.yaml").exists()


def test_table_rows_match_the_summary(guided):
    out, cfg, result = guided
    table = pd.read_csv(out / "evaluations.csv")
    assert tuple(table.columns) == TABLE_COLUMNS
    iterations = result["guided_iterations_per_sample"]
    assert len(table) == iterations * 2 * cfg.batch_size  # pre and post, every sample
    assert set(table.phase) == {"pre", "post"}
    assert table.loc[table.phase == "pre", "grad_norm"].notna().all()
    assert table.loc[table.phase == "post", "grad_norm"].isna().all()
    assert table.elapsed_s.is_monotonic_increasing
    for s in result["samples"]:
        rows = table[table["sample"] == s["sample"]]
        best = rows.loc[rows.distance.idxmin()]
        assert best.distance == pytest.approx(s["best_distance"], rel=1e-6)
        assert (best.t, best.k, best.phase) == (s["best_t"], s["best_k"], s["best_phase"])


def test_images_are_valid_pngs_and_png_distances_are_remeasured(guided):
    out, cfg, result = guided
    extractor: FeatureExtractor = instantiate(cfg.extractor)
    target = instantiate(cfg.dataset).load(extractor)[0]
    assert Image.open(next((out / "images").glob("*/target.png"))).size == (extractor.input_size,) * 2
    for s in result["samples"]:
        for kind in ("best", "final"):
            image = Image.open(out / s[f"{kind}_image"])  # relative to the run folder
            assert image.size == (64, 64) and image.mode == "RGB"
            assert np.asarray(image).std() > 0
            # The saved file scored as an actual image (the paper's footnote 5 gap).
            with torch.no_grad():
                feature = extractor(extractor.preprocess_image(image)[None])[0]
            assert s[f"{kind}_png_distance"] == pytest.approx(float((feature - target.feature).pow(2).sum()), rel=1e-5)


def test_offline_wandb_run_holds_series_images_table_summary_and_config(guided):
    out, cfg, result = guided
    ((wandb_file, records),) = runs_by_job_type(out)["guided"]  # debug=tiny: no baselines, one W&B run
    rows = history_rows(records)
    iterations = result["guided_iterations_per_sample"]
    pre_rows = [r for r in rows if any(k.endswith("/distance") and "post" not in k for k in r)]
    post_rows = [r for r in rows if any(k.endswith("/post_distance") for k in r)]
    assert len(pre_rows) == len(post_rows) == iterations  # pre and post checks: two metrics, no zig-zag
    keys = {k for r in pre_rows for k in r}
    (sample1,) = [k for k in keys if k.endswith("/sample1/distance")]
    assert sample1.startswith("000_")  # <nnn>_<target>/sample<i>, as the image folders
    assert all(f"{sample1.rsplit('/', 1)[0]}/best_distance" in r for r in pre_rows + post_rows)
    assert sorted(int(r["iteration"]) for r in pre_rows) == list(range(iterations))  # each sample's own axis
    captions = {k: json.loads(v) for r in rows for k, v in r.items() if k.endswith("_image/caption")}
    assert len(captions) == 2 * cfg.batch_size + 1  # best and final image of every sample, and the target
    for s in result["samples"]:
        caption = next(v for k, v in captions.items() if k.endswith(f"sample{s['sample']}/best_image/caption"))
        assert f"d={s['best_distance']:.5g}" in caption
    table = logged_table(wandb_file, records, "results")
    assert table["columns"][:3] == ["target", "sample", "seed"]
    column = {name: i for i, name in enumerate(table["columns"])}
    assert [row[column["seed"]] for row in table["data"]] == [s["seed"] for s in result["samples"]]
    for row, s in zip(table["data"], result["samples"], strict=True):
        assert row[column["best distance"]] == pytest.approx(s["best_distance"])
        assert row[column["final distance"]] == pytest.approx(s["final_distance"])
        assert row[column["best at"]] == f"t={s['best_t']}, k={s['best_k']} ({s['best_phase']})"
        assert row[column["oracle agrees (best / final)"]] is None  # debug=tiny has no oracle
    final = summary(records)
    assert float(final["mean_best_distance"]) == pytest.approx(result["mean_best_distance"])
    assert json.loads(final["status"]) == "complete"
    distances = [float(r[sample1]) for r in pre_rows]
    assert json.loads(final[sample1]) == {"min": pytest.approx(min(distances)), "last": pytest.approx(distances[-1])}
    logged = config(records)
    assert json.loads(logged["guidance"])["w_g"] == 4.0
    assert json.loads(logged["model"]) == yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert run_record(records).job_type == "guided" and run_id(records)


def test_each_variant_gets_a_wandb_run_with_the_same_keys_so_their_curves_overlay(tmp_path):
    cfg = compose_config(["debug=tiny", "baselines=[unguided,printed_sign]"], tmp_path)
    result = run(cfg, tmp_path, wandb_group="sweep 2026-11-30 10-00-00", wandb_name="guidance.w_g=4")
    found = runs_by_job_type(tmp_path)
    assert sorted(found) == ["guided", "printed_sign", "unguided"] and all(len(v) == 1 for v in found.values())
    keys = {}
    for variant, ((_, records),) in found.items():
        info = run_record(records)
        assert info.run_group == "sweep 2026-11-30 10-00-00"
        assert info.display_name == f"guidance.w_g=4 [{variant}]"
        metric_rows = [r for r in history_rows(records) if "iteration" in r]
        keys[variant] = {k for r in metric_rows for k in r}
        logged = summary(records)
        figures = result if variant == "guided" else result["baselines"][variant]
        assert float(logged["mean_best_distance"]) == pytest.approx(figures["mean_best_distance"])
        assert ("proof" in logged) == (variant == "guided")
    assert keys["guided"] == keys["printed_sign"] and keys["unguided"] < keys["guided"]
    # Unguided has no gradient and so no post-guidance check; every series it has, guided has too.
    extra = {k.rsplit("/", 1)[1] for k in keys["guided"] - keys["unguided"]}
    assert extra == {"grad_norm", "clipped_fraction", "post_distance", "post_cosine"}


def test_guided_best_distance_is_below_unguided_for_the_same_seeds(guided, tmp_path):
    _, _, result = guided
    cfg = compose_config(["debug=tiny", "guidance=none", "logger.mode=disabled"], tmp_path)
    unguided = run(cfg, tmp_path)
    assert [s["seed"] for s in unguided["samples"]] == [s["seed"] for s in result["samples"]]
    for g, u in zip(result["samples"], unguided["samples"], strict=True):
        assert g["best_distance"] < u["best_distance"]
    assert not list(tmp_path.glob("wandb"))


def test_overview_picture_has_a_row_per_target_and_a_column_per_image(guided, tmp_path):
    from fsa.pictures import CELL, HEADER, LABEL
    from fsa.tasks.guide.overview import transfer_lines

    out, cfg, result = guided
    with Image.open(out / "overview.png") as image:
        columns = 1 + 2 * cfg.batch_size  # the target, then best and final of each sample
        footer = transfer_lines(["guided"], result["judges"], result["robustness"])  # the robustness check's line
        assert len(footer) == 1 and "after small changes" in footer[0]
        assert image.size == (CELL * columns, HEADER + (CELL + LABEL) * result["targets"] + LABEL * len(footer))
    assert "overview: " in (out / "fsa.log").read_text().splitlines()[-1]  # said last, with fsa-report
    # Baselines add their own best and final images for the same seeds, in the same row.
    cfg = compose_config(["debug=tiny", "~logger", "baselines=[unguided]"], tmp_path)
    with_baseline = run(cfg, tmp_path)
    with Image.open(tmp_path / "overview.png") as image:
        assert image.width == CELL * (1 + 2 * 2 * cfg.batch_size) and with_baseline["targets"] == 1
