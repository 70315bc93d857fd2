"""The guide task's work, in numbered phases: the paper's guided decoder on every target, then each
baseline with the same sampler, targets and seeds.

1. models and targets (the targets first: a bad one fails before the big model loads);
2. the plan: batches of samples, decoded once per variant (guided, then each baseline);
3. decoding, batch by batch, resuming where the checkpoint left off (`GuideState`);
4. judging and summarising: calibrated distances, the oracle's verdicts, the proof, retention;
5. telling the user what came out and where.
The algorithm itself is `fsa.guidance` (pure); the files are the run folder's (`fsa.tracking`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf

from fsa.attributes.measures import load_measures
from fsa.config import attributes_options, resolved_container, robustness_options
from fsa.data.targets import Target
from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.samplers import Sampler
from fsa.evaluation import (
    comparison_table,
    match_verdicts,
    mean_pairwise_distance,
    proof_figures,
    retention_table,
    transfer_table,
    variant_figures,
)
from fsa.extractors.base import FeatureExtractor
from fsa.guidance.options import GUIDED
from fsa.job import Job
from fsa.judges.options import RobustnessOptions
from fsa.speed import apply_speed_options, torch_dtype
from fsa.tasks.guide.decoding import Decoding, GuideState, Sample, batches
from fsa.tasks.guide.judging import judge, judge_transfer, judged_images, retention, robustness
from fsa.tasks.guide.listeners import EvaluationSeries
from fsa.tasks.guide.overview import write_overview
from fsa.tracking.progress import Progress
from fsa.tracking.run_folder import SampleResult, target_folder_name

log = logging.getLogger("fsa")


@dataclass
class Models:
    """What phase 1 loads: the networks, the targets, the oracle and the attribute measures; the judges'
    configs (each loads after decoding) less those refused, and the robustness check's changes."""

    backbone: DiffusionBackbone
    sampler: Sampler
    guidance: Any  # FeatureGuidance or SelfGuidance: both decode through `guidance.decode`
    extractor: FeatureExtractor
    targets: list[Target]
    oracle: Any
    measures: dict[str, Any]
    speed: Any  # SpeedOptions, applied to the backbone and the extractor
    dtype: torch.dtype
    judges: dict[str, Any]  # name -> extractor config
    refused: dict[str, str]  # judges left out, and why
    robustness: RobustnessOptions | None


@dataclass
class Plan:
    """Phase 2: the batches of samples, the variants (guided, then each baseline) and their size."""

    batches: list[list[Sample]]
    variants: dict[str, Any]
    timesteps: int
    iterations: int  # guided iterations per sample
    samples_per_target: int


def guide(job: Job) -> dict[str, Any]:
    """The whole guide task; returns its part of the summary."""
    models = load(job)  # 1
    plan = make_plan(job, models)  # 2
    series = EvaluationSeries(job.tracker, list(plan.variants)) if job.tracker else None
    samples = decode(job, models, plan, series)  # 3
    summary, figures = summarise(job, models, plan, samples)  # 4
    tell(job, summary, figures, samples, series)  # 5
    return summary


def load(job: Job) -> Models:
    """1. Models and targets; the targets first, so that a bad one fails before the big model loads."""
    cfg = job.cfg
    extractor: FeatureExtractor = job.build("extractor").to(job.device)
    targets = job.build("dataset").load(extractor)[: cfg.max_targets]
    oracle = job.build("oracle") if cfg.get("oracle") else None
    attributes = attributes_options(cfg) if cfg.get("attributes") is not None else None
    backbone: DiffusionBackbone = job.build("model").to(job.device)
    speed = job.build("speed")
    apply_speed_options(backbone, extractor, speed)
    measures = load_measures(attributes.measures) if attributes else {}
    guidance, sampler = job.build("guidance"), job.build("sampler")
    judges, refused = admitted_judges(cfg)
    changes = robustness_options(cfg) if cfg.get("robustness") is not None else None
    return Models(
        backbone=backbone,
        sampler=sampler,
        guidance=guidance,
        extractor=extractor,
        targets=targets,
        oracle=oracle,
        measures=measures,
        speed=speed,
        dtype=torch_dtype(cfg.dtype),
        judges=judges,
        refused=refused,
        robustness=changes,
    )


def admitted_judges(cfg: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The judges of the config less any that is the guiding extractor itself (refused: a network
    cannot vouch for its own match), with the reasons."""
    guide = _without_name(resolved_container(cfg.extractor))
    judges, refused = {}, {}
    for name, node in (cfg.get("judges") or {}).items():
        if _without_name(resolved_container(node)) == guide:
            refused[name] = "it is the guiding extractor"
            log.warning("judge %s refused: it is the guiding extractor, which cannot vouch for its own match", name)
        else:
            judges[name] = node
    return judges, refused


def _without_name(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "name"}


def make_plan(job: Job, models: Models) -> Plan:
    """2. Batches of samples, decoded once per variant: guided, then each baseline the config asks for."""
    cfg, guidance = job.cfg, models.guidance
    steps = len(models.sampler.timesteps(models.backbone.schedule.num_train_timesteps))
    samples_per_target = min(cfg.batch_size, cfg.max_samples or cfg.batch_size)
    variants = {GUIDED: guidance}
    for name in cfg.baselines:
        baseline = guidance.baseline(name)
        if baseline is None:
            log.warning("baseline %s does not apply to guidance %s: skipped", name, type(guidance).__name__)
        else:
            variants[name] = baseline
    plan = Plan(
        batches(models.targets, samples_per_target, cfg.targets_per_batch, cfg.seed),
        variants,
        steps,
        guidance.total_iterations(steps),
        samples_per_target,
    )
    speed = "".join(f", {option}" for option in models.speed.enabled())
    log.info(
        "model %s, extractor %s (%d-d), %d target(s) x %d sample(s) in %d batch(es), %d timesteps, "
        "%d guided iterations each, variants: %s, on %s (%s%s)",
        models.backbone.name,
        models.extractor.name,
        models.extractor.feature_dim,
        len(models.targets),
        samples_per_target,
        len(plan.batches),
        steps,
        plan.iterations,
        ", ".join(variants),
        job.device,
        cfg.dtype,
        speed,
    )
    return plan


def speed_figures(plan: Plan, guided: list[SampleResult]) -> dict[str, float]:
    """The guided decoding's time, from each batch's wall time: per guided iteration of a batch (all its
    samples at once), per sample, and in all (this process's time: a resumed batch counts from the resume)."""
    starts = [sum(len(batch) for batch in plan.batches[:i]) for i in range(len(plan.batches))]
    seconds = sum(guided[start].wall_time_s for start in starts)
    return {
        "guided_decode_s": seconds,
        "seconds_per_iteration": seconds / (plan.iterations * len(plan.batches)),
        "seconds_per_sample": seconds / len(guided),
        "samples_per_batch": max(len(batch) for batch in plan.batches),
    }


def decode(job: Job, models: Models, plan: Plan, series: EvaluationSeries | None) -> dict[str, list[SampleResult]]:
    """3. Every variant, batch by batch, resuming where the checkpoint left off."""
    saved: GuideState | None = job.saved
    total = plan.iterations * len(plan.batches) * len(plan.variants)
    progress = Progress(total, enabled=job.cfg.progress, done=saved.progress if saved else 0)
    decoding = Decoding(job, models, plan.batches, progress, series)
    samples: dict[str, list[SampleResult]] = dict(saved.records) if saved else {}
    try:
        for number, (variant, guidance) in enumerate(plan.variants.items()):
            if saved and number < saved.variant:
                continue  # finished before the checkpoint: its records came with it
            resume = saved if saved and number == saved.variant else None
            gradients = job.cfg.record_gradients if variant == GUIDED else 0
            samples[variant] = decoding.variant(number, variant, guidance, samples, resume, gradients)
    finally:
        progress.close()
    return samples


def summarise(
    job: Job, models: Models, plan: Plan, samples: dict[str, list[SampleResult]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """4. Calibrated distances, the oracle's verdicts, each variant's figures, the proof, retention."""
    reference = mean_pairwise_distance(torch.stack([t.feature for t in models.targets]))
    for records in samples.values():
        judge(records, reference, models.oracle, job.folder)
    as_dicts = {v: [r.to_dict() for r in records] for v, records in samples.items()}
    figures = {v: variant_figures(records, reference) for v, records in as_dicts.items()}
    retained = None
    if job.cfg.get("attributes") is not None and "unguided" in samples:  # which attributes f keeps
        options = attributes_options(job.cfg)
        retained = retention(options, models.measures, samples, models.targets, job.folder)
    transfer, skipped, robust = real_match(job, models, samples)
    guided = samples[GUIDED]
    baselines = [variant for variant in samples if variant != GUIDED]
    summary = {
        "model": models.backbone.name,
        "extractor": models.extractor.name,
        "feature_dim": models.extractor.feature_dim,
        "sampler": OmegaConf.to_container(job.cfg.sampler),
        "timesteps": plan.timesteps,
        "guided_iterations_per_sample": plan.iterations,
        "speed": speed_figures(plan, guided),
        "network_evaluations_per_sample": sum(r.network_evaluations for r in guided) / len(guided),
        "feature_evaluations_per_sample": sum(r.feature_evaluations for r in guided) / len(guided),
        "batch_size": plan.samples_per_target,
        "targets": len(models.targets),
        "device": str(job.device),
        "dtype": job.cfg.dtype,
        "reference_distance": reference,  # mean pairwise squared distance among the targets
        **figures[GUIDED],
        "baselines": {b: figures[b] for b in baselines},
        "proof": proof_figures(figures, as_dicts),
        "retention": retained,
        "judges": transfer,
        "judges_skipped": skipped,
        "robustness": robust,
        "match": match_verdicts(transfer, robust, list(samples)) if transfer or robust else None,
        "samples": [r.to_dict() for r in guided],
        "baseline_samples": {b: [r.to_dict() for r in samples[b]] for b in baselines},
    }
    write_overview(job.folder, samples, job.folder.overview_file, transfer, robust)
    return summary, figures


def real_match(
    job: Job, models: Models, samples: dict[str, list[SampleResult]]
) -> tuple[dict[str, Any] | None, dict[str, str], dict[str, Any] | None]:
    """Is the match real? The judges' distances and transfer ratios, the judges skipped or refused, and
    the robustness check: both need target images (docs/judges.md)."""
    skipped = dict(models.refused)
    if not (models.judges or models.robustness):
        return None, skipped, None
    images = judged_images(samples, job.folder, models.targets)
    if not images.targets:
        log.info("judges and robustness not measured: no target has an image")
        return None, skipped, None
    transfer = None
    if models.judges:
        transfer, unloaded = judge_transfer(models.judges, images, job.folder, job.device)
        skipped |= unloaded
    robust = (
        robustness(models.extractor, models.robustness, images, models.targets, job.folder)
        if models.robustness
        else None
    )
    return transfer, skipped, robust


def warn_if_guidance_failed(proof: dict[str, Any]) -> None:
    """A WARNING when the guided images are not clearly closer than their unguided twins' (the distance
    ratio's interval reaches 1): what it says, what usually causes it, what to try."""
    ratio, interval = proof.get("distance_ratio"), proof.get("distance_ratio_interval")
    if ratio is None or (ratio < 1 and (interval is None or interval[1] < 1)):
        return
    shown = f"{ratio:.3g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")
    log.warning(
        "guidance did not work: the guided images' mean best distance is %s x their unguided twins' (not "
        "clearly closer). Usually too few steps for the weight (a short sampler.num_steps with a large "
        "guidance.w_g overshoots), or guidance.direction=ascend. Try more steps (sampler.num_steps=50, "
        "guidance=quick), a smaller guidance.w_g, or sampler=fast guidance=fast",
        shown,
    )


def tell(
    job: Job,
    summary: dict[str, Any],
    figures: dict[str, dict[str, Any]],
    samples: dict[str, list[SampleResult]],
    series: EvaluationSeries | None,
) -> None:
    """5. The log's closing table; the W&B results tables and summaries (sent when the job finishes)."""
    log.info("results over %d sample(s) per variant:\n%s", len(samples[GUIDED]), comparison_table(figures))
    for key, value in summary["proof"].items():
        log.info("proof: %s = %s", key, value)
    warn_if_guidance_failed(summary["proof"])
    table = transfer_table(summary["judges"], summary["robustness"], summary["match"], list(samples))
    if table:
        log.info("does the match transfer?\n%s", table)
    if summary["retention"]:
        table = retention_table(summary["retention"])
        log.info("retention per attribute, final images (1: kept, 0: as unguided):\n%s", table)
    if job.tracker is not None and series is not None:
        for variant, records in samples.items():
            series.results_table(variant, records, job.folder)
        per_run = ("samples", "baseline_samples", "sampler", "judges", "robustness", "match")
        guided = {k: v for k, v in summary.items() if k not in per_run}
        facts = {k: v for k, v in guided.items() if k not in (*figures[GUIDED], "baselines", "proof", "retention")}
        for variant in samples:
            real = {
                "judges": {name: by_variant.get(variant) for name, by_variant in (summary["judges"] or {}).items()},
                "robustness": (summary["robustness"] or {}).get(variant),
                "match": (summary["match"] or {}).get(variant),
            }
            job.tracker.summarise(variant, {**(guided if variant == GUIDED else {**facts, **figures[variant]}), **real})
            # each sample's final image's distance (its distance series' last value is the last *evaluation*)
            finals = {
                f"{target_folder_name(r.target_index, r.target)}/sample{r.sample}/final_distance": r.final_distance
                for r in samples[variant]
            }
            job.tracker.summarise(variant, finals)
    log.info("images: %s", job.folder.variant_dir(GUIDED) / "images")
    log.info("table: %s; summary: %s", job.folder.evaluations_file(), job.folder.root / "summary.json")
