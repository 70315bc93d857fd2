"""Weights & Biases: per fsa run, one W&B run per variant (guided and each baseline), offline unless logged in.

How the workspace reads:
- group: the experiment (or "fsa") and the date of the run or sweep, so a sweep's jobs sit together;
- job type: the variant (guided, unguided, printed_sign), one click to show only guided runs;
- run name: the job's overrides and the variant;
- metric keys are the same in every variant's run, `<nnn>_<target>/sample<i>/<metric>`, each plotted
  against that sample's own guided iteration, so guided, unguided and printed-sign curves of one
  target and seed overlay in one chart, and so do a sweep's values of w_g.
"""

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from fsa.guidance.decoder import POST, Evaluation
from fsa.tracking.run_folder import RunFolder, SampleResult, target_folder_name

log = logging.getLogger("fsa")

STEP = "iteration"  # every series' x axis: the guided iteration of its own sample
# Per-sample series and the summary each keeps: a distance's minimum and where it ended, a cosine's maximum.
SERIES_SUMMARY = {
    "distance": "min,last",  # pre-guidance check (the paper's Eq. 6 score of x_t)
    "post_distance": "min,last",  # post-guidance check of the same iteration, a separate series: no zig-zag
    "best_distance": "min",  # best so far over both checks: the best image's distance
    "cosine": "max,last",
    "post_cosine": "max,last",
    "grad_norm": "mean,last",
    "clipped_fraction": "mean",
}
TABLE_COLUMNS = [
    "target",
    "sample",
    "seed",
    "target image",
    "best image",
    "best distance",
    "best at",
    "final image",
    "final distance",
    "target class",
    "best oracle class",
    "final oracle class",
    "oracle agrees (best / final)",
]


def logged_in() -> bool:
    """An API key in the environment or in ~/.netrc; checked without touching the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if logged_in() else "offline"
    return mode


def start_run(
    logger: Any,
    run_dir: Path,
    config: dict[str, Any],
    group: str | None,
    name: str | None,
    job_type: str,
    label: str | None = None,
    run_id: str | None = None,
) -> Any:
    """A W&B run in `run_dir/wandb`, beside any other open one, as the `logger` config says (mode,
    project, entity, tags; its group and name before the defaults given here). `label` is added to
    the name ("<name> [guided]"); `run_id` continues that run (a resume)."""
    import wandb

    name = logger.name or name
    if label:
        name = f"{name} [{label}]" if name else label
    return wandb.init(
        project=logger.project,
        entity=logger.entity,
        group=logger.group or group,
        job_type=job_type,
        name=name,
        tags=list(logger.tags),
        config=config,
        dir=str(run_dir),
        mode=resolve_mode(logger.mode),
        reinit="create_new",  # several runs open side by side (one per variant) until the fsa run ends
        id=run_id,
        resume="allow" if run_id else None,
        settings=wandb.Settings(silent=True),  # fsa's log already says where the runs are
    )


class WandbLogger:
    """Listens to the decoder: per-evaluation distances, best and final images, the results table and
    each variant's summary.

    Rows are held until `send()`, which the runner calls whenever a checkpoint is written: W&B gets
    exactly what a checkpoint covers, so a run killed and resumed logs every iteration once."""

    def __init__(
        self,
        logger: Any,
        run_dir: Path,
        config: dict[str, Any],
        group: str | None,
        name: str | None,
        variants: list[str],
        run_ids: dict[str, str] | None = None,
    ) -> None:
        """`logger`: the logger config; `run_ids`: continue those W&B runs, one per variant (a resumed
        fsa run), instead of new ones."""
        import wandb

        self.mode = resolve_mode(logger.mode)
        self._wandb = wandb
        run_ids = run_ids or {}
        self.runs = {}
        for variant in variants:
            self.runs[variant] = start_run(
                logger,
                run_dir,
                {**config, "variant": variant},
                group,
                name,
                job_type=variant,
                label=variant,
                run_id=run_ids.get(variant),
            )
            self.runs[variant].define_metric(STEP, hidden=True)
        self._variant = variants[0]
        self._keys: list[str] = []
        self._defined: set[str] = set()
        self._pending: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        self._tables: dict[str, Any] = {}
        log.info("W&B runs (%s mode) in %s: %s", self.mode, run_dir / "wandb", self.run_ids())

    def run_ids(self) -> dict[str, str]:
        """{variant: W&B run id}, for the checkpoint (a resumed fsa run continues the same W&B runs)."""
        return {variant: run.id for variant, run in self.runs.items()}

    @property
    def directories(self) -> list[str]:
        return [run.dir for run in self.runs.values()]

    def start_batch(self, variant: str, keys: list[str]) -> None:
        """The batch's samples (`<nnn>_<target>/sample<i>`): their series are defined on first sight."""
        self._variant, self._keys = variant, keys
        run = self.runs[variant]
        for key in keys:
            for series, summary in SERIES_SUMMARY.items():
                name = f"{key}/{series}"
                if (variant, name) not in self._defined:
                    run.define_metric(name, step_metric=STEP, summary=summary)
                    self._defined.add((variant, name))

    def __call__(self, ev: Evaluation) -> None:
        post = "post_" if ev.phase == POST else ""
        row: dict[str, Any] = {STEP: ev.iteration, "t": ev.t}
        stats = ev.stats
        norms = stats.grad_norm.tolist() if stats is not None else None
        clipped = stats.clipped_fraction.tolist() if stats is not None else None
        values = zip(self._keys, ev.distance.tolist(), ev.cosine.tolist(), ev.best_distance.tolist(), strict=True)
        for i, (key, d, c, best) in enumerate(values):
            row[f"{key}/{post}distance"] = d
            row[f"{key}/{post}cosine"] = c
            row[f"{key}/best_distance"] = best
            if norms is not None and clipped is not None:
                row[f"{key}/grad_norm"] = norms[i]
                row[f"{key}/clipped_fraction"] = clipped[i]
        self._pending[self._variant].append(row)

    def log_images(self, variant: str, records: list[SampleResult], folder: RunFolder) -> None:
        """The best and final image of each sample, and each target's actual image, as media."""
        images: dict[str, Any] = {}
        for r in records:
            key = target_folder_name(r.target_index, r.target)
            best = f"best d={r.best_distance:.5g} (t={r.best_t}, k={r.best_k}, {r.best_phase}); "
            images[f"{key}/sample{r.sample}/best_image"] = self._image(
                folder.path(r.best_image), best + f"PNG d={r.best_png_distance:.5g}"
            )
            images[f"{key}/sample{r.sample}/final_image"] = self._image(
                folder.path(r.final_image), f"final d={r.final_distance:.5g}; PNG d={r.final_png_distance:.5g}"
            )
            target = folder.target_image(variant, r.target_index, r.target)
            if r.sample == 0 and target.exists():
                images[f"{key}/target_image"] = self._image(target, f"target {r.target}")
        self._pending[variant].append(images)

    def _image(self, path: Path, caption: str) -> Any:
        return self._wandb.Image(str(path), caption=caption)

    def results_table(self, variant: str, records: list[SampleResult], folder: RunFolder) -> None:
        """`results`: one row per sample with its target, best and final image and distances, and the
        oracle's verdicts where there is an oracle; logged when the run finishes."""
        rows = []
        for r in sorted(records, key=lambda r: (r.target_index, r.sample)):
            target = folder.target_image(variant, r.target_index, r.target)
            verdicts = [getattr(r, f"{kind}_oracle_class") for kind in ("best", "final")]
            agrees = (
                " / ".join("yes" if v == r.target_label else "no" for v in verdicts)
                if r.target_label is not None and None not in verdicts
                else None
            )
            rows.append(
                [
                    r.target,
                    r.sample,
                    r.seed,
                    self._wandb.Image(str(target)) if target.exists() else None,
                    self._wandb.Image(str(folder.path(r.best_image))),
                    r.best_distance,
                    f"t={r.best_t}, k={r.best_k} ({r.best_phase})",
                    self._wandb.Image(str(folder.path(r.final_image))),
                    r.final_distance,
                    r.target_label,
                    *verdicts,
                    agrees,
                ]
            )
        self._tables[variant] = self._wandb.Table(columns=TABLE_COLUMNS, data=rows)

    def send(self) -> None:
        """Log the rows held since the last send (called when a checkpoint covers them)."""
        for variant, rows in self._pending.items():
            for row in rows:
                self.runs[variant].log(row)
            rows.clear()

    def finish(self, summaries: dict[str, dict[str, Any]], exit_code: int = 0) -> None:
        """A finished run sends what it holds, its results tables and each variant's summary; a failed or
        interrupted one drops its rows, since those after the last checkpoint are decoded again on resume."""
        if exit_code == 0:
            self.send()
            for variant, table in self._tables.items():
                self.runs[variant].log({"results": table})
        for variant, run in self.runs.items():
            for key, value in summaries.get(variant, {}).items():
                run.summary[key] = value
            run.finish(exit_code=exit_code)
