"""The `fsa` command: a thin Hydra entry that hands the composed config to `fsa.job.run`.

Exit codes: 0 done; 1 a bug (traceback) or, after a multirun, some job failed (one line each);
2 bad input or a refused folder (one line on stderr, no traceback); 3 checkpointed on a signal
(requeue me).
"""

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fsa import CONF_DIR
from fsa.config import local_configs, register_configs, resolved_container, task_config, validate
from fsa.errors import FsaError, Interrupted
from fsa.tasks import available_tasks, objectives, task_of
from fsa.tracking.run_folder import RunFolder, State, job_folder, wandb_group

log = logging.getLogger("fsa")
register_configs()


def refuse(message: str) -> None:
    """A problem the user can fix: one line on stderr, exit 2."""
    print(f"fsa: error: {message}", file=sys.stderr)
    sys.exit(2)


class FolderChecks(Callback):
    """Hydra callbacks around the jobs: a sweep preset run without -m and an output folder that cannot
    be made are refused before Hydra makes the folder (which would end in a traceback), and a multirun
    in which a job failed exits 1 after all jobs ran, naming each failed job."""

    @staticmethod
    def _make(folder: str, key: str) -> None:
        if folder in ("", "None"):  # an empty hydra.run.dir= would put the run in the current folder
            refuse(f"{key} is empty: give the folder the run should write to, {key}=outputs/mine")
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            refuse(f"cannot create the output folder '{folder}' ({error.strerror}); choose another with {key}=...")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = OmegaConf.select(config, "hydra.sweeper.params") or {}
        if sweep:  # a sweep preset (experiment=appb_wg) run as one job would quietly run one setting
            swept = "; ".join(f"{key} over {values}" for key, values in sweep.items())
            command = " ".join(["fsa", "-m", *OmegaConf.select(config, "hydra.overrides.task")])
            refuse(f"this config sweeps {swept}: run it with -m, as in `{command}`")
        self._make(str(OmegaConf.select(config, "hydra.run.dir")), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(str(OmegaConf.select(config, "hydra.sweep.dir")), "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        jobs = sorted((p for p in sweep.iterdir() if RunFolder.holds_a_run(p)), key=lambda p: p.name)
        failed = [(job, RunFolder(job)) for job in jobs if RunFolder(job).state() != State.COMPLETE]
        for job, folder in failed:
            failure, _ = folder.failure()
            why = f"{failure['error']}: {failure['message']}" if failure else folder.state().value
            print(f"fsa: job {job.name} did not complete: {why}", file=sys.stderr)
        if failed:
            summary = f"{len(failed)} of {len(jobs)} job(s) did not complete; see `fsa-report {sweep}`"
            print(f"fsa: {summary}", file=sys.stderr)
            sys.exit(1)


HELP = """fsa: feature space analysis by guided diffusion (Shirahama et al., 2025).

Usage: fsa [group=option ...] [key=value ...]       one run
       fsa -m [group=a,b ...] [key=x,y ...]         a sweep: one job per combination

Config groups (group=option; group=null removes it):
{groups}

Examples:
  fsa                                              the embedded digits and the proof that guidance works
  fsa debug=tiny                                   the whole pipeline in seconds (random tiny models)
  fsa experiment=fig3_clip                         Figs. 3-4: CLIP RN50 on the paper's 15 images (GPU)
  fsa -m experiment=appb_wg smoke=digits           App. B's w_g sweep at smoke scale, on a CPU
  fsa --cfg job [overrides]                        print the composed config instead of running

Results go to hydra.run.dir (hydra.sweep.dir with -m); `fsa-report <folder>` makes tables and figures.
Exit codes: 0 done, 1 failed (a multirun: some job failed), 2 bad input or refused folder, 3 checkpointed.
Hydra's own options: fsa --hydra-help.
"""


def groups() -> str:
    """Each config group and its options, read from the config folders (no composition: instant); the
    tasks from the task registry (the user's own included)."""
    lines = []
    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra",)):
        options = sorted(f.stem for f in folder.glob("*.yaml") if f.stem not in ("default", "example"))
        if folder.name == "task":
            options = sorted(available_tasks())
        if folder.name == "local":  # the user's own (git-ignored), made from example.yaml
            options = ["your default.yaml (see fsa/conf/local/example.yaml)"]
        lines.append(f"  {folder.name:<11} {', '.join(options)}")
    return "\n".join(lines)


def main() -> None:
    """`fsa [overrides]`: Hydra's command line, with config errors said in one line (exit 2)."""
    if sys.argv[1:] in (["--help"], ["-h"]):  # Hydra's help composes every group twice: seconds
        print(HELP.format(groups=groups()), end="")
        return
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises config errors instead of printing them
    arguments = last_choice_wins(sys.argv[1:])
    conflict = removed_yet_set(arguments)
    if conflict:
        refuse(conflict)
    sys.argv[1:] = [deselect(argument) for argument in arguments]
    try:
        app()
    except (HydraException, OmegaConfBaseException) as error:
        refuse(one_line(error))


def deselect(argument: str) -> str:
    """`group=null` as Hydra spells it, `~group`: no option of that group (oracle=null: no oracle,
    logger=null: no W&B run). Hydra itself rejects a null group choice with a traceback."""
    group, _, value = argument.partition("=")
    return f"~{group}" if value == "null" and (CONF_DIR / group).is_dir() else argument


def group_choice(argument: str) -> tuple[str, str] | None:
    """(group, option) for `group=option`, `~group` (option "null"); None for any other argument."""
    key, sep, value = argument.partition("=")
    group = key.lstrip("+~")
    if "." in group or not (CONF_DIR / group).is_dir():
        return None
    return (group, "null") if argument.startswith("~") else (group, value) if sep else None


def last_choices(arguments: list[str]) -> dict[str, str]:
    """Each group's last choice on the command line ("null" for a removal)."""
    return {choice[0]: choice[1] for argument in arguments if (choice := group_choice(argument))}


def last_choice_wins(arguments: list[str]) -> list[str]:
    """`logger=null ... logger=wandb`: a group removed and chosen again is chosen (Hydra would remove it
    after the choice and fail): the removal is dropped."""
    last = last_choices(arguments)
    return [
        argument
        for argument in arguments
        if not ((choice := group_choice(argument)) and choice[1] == "null" and last[choice[0]] != "null")
    ]


def removed_yet_set(arguments: list[str]) -> str | None:
    """`logger=null logger.mode=online`: a key set inside a group whose last choice removes it (Hydra
    fails on it with an internal assertion); the problem in a line, else None."""
    last = last_choices(arguments)
    for argument in arguments:
        key = argument.lstrip("+~").partition("=")[0]
        if "." in key and last.get(key.partition(".")[0]) == "null":
            group = key.partition(".")[0]
            return f"{group}=null removes {group}, so '{argument}' has nothing to set; drop one of the two"
    return None


def one_line(error: BaseException) -> str:
    """A config error as one line: what is wrong, why, and the choices where Hydra knows them."""

    def first(e: BaseException) -> str:  # its first line, and the next where the first only introduces it
        lines = [line.strip() for line in str(e).strip().splitlines()] or [type(e).__name__]
        return (f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]).rstrip(".")

    message = first(error)
    if "'local/" in message and local_configs():  # Hydra names the option, the user needs the file
        message += f" (the local config {local_configs()[0]})"
    if error.__cause__ is not None and first(error.__cause__) not in message:
        message += f" ({first(error.__cause__)})"
    options = getattr(error, "options", None)
    if not options and "Available options:" in str(error):  # a mandatory group (???) left unchosen
        options = [line.strip() for line in str(error).split("Available options:")[1].splitlines() if line.strip()]
    options = [option for option in options or [] if not str(option).startswith("schema")]  # fsa's own schemas
    if options:
        message += f"; choose from: {', '.join(options)}"
    return f"{message}; `fsa --help` lists the groups, `fsa --cfg job` every key"


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | list[float] | None:
    """One job; returns the summary figures `objective` names, for a sweeper that searches (Optuna)."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    output_dir = Path(hc.runtime.output_dir)
    try:
        folder = job_folder(cfg.resume, output_dir)
    except FsaError as error:  # resume= names no run folder
        refuse(f"{type(error).__name__}: {error}")
    experiment = hc.runtime.choices.get("experiment")
    # A fresh job's W&B group: the experiment and when the run or sweep started (a resumed job keeps
    # the group its checkpoint recorded).
    group = wandb_group(experiment, Path(hc.sweep.dir) if multirun else folder)
    name = hc.job.override_dirname or experiment or folder.name
    summary = None
    if len(local_configs()) > 1:
        used, ignored = local_configs()
        log.warning("two local configs: %s is used, %s is not (docs/configuration.md, 'A local config')", used, ignored)
    try:
        # A bad value, or a folder that would refuse the job (in use, complete, another config, files fsa
        # did not write), says so before the ML stack loads; the job checks again under the folder's lock.
        task = task_of(cfg.task)
        root = task_config(cfg, task, list(hc.overrides.task))  # what the job keeps of the config
        if not multirun:  # a sweep's refused job is recorded in its folder by the job, and counted at the end
            validate(root, task, imports=False)  # every value, in about a second: a bad one writes nothing
        RunFolder(folder).check(resolved_container(root), cfg.fresh)
        from fsa.job import preflight, run  # the ML stack, once the command line and the folder are known good

        if not multirun:  # the device and every file the run needs, still before the folder is touched
            preflight(task, root, list(hc.overrides.task))
        summary = run(cfg, output_dir, list(hc.overrides.task), wandb_group=group, wandb_name=name)
    except Interrupted as stop:  # checkpointed on SIGTERM / SIGUSR1: stop the whole sweep, ask for a requeue
        log.warning("%s", stop)
        sys.exit(Interrupted.exit_code)
    except Exception as error:
        # The job's folder says why (failure.json), unless the folder refused the job. In a sweep, one
        # failed job (a bad target, out of memory) must not stop or spoil the others: log it, go on.
        if not multirun:
            if isinstance(error, FsaError):  # input the user can fix: a clear message and exit 2, no traceback
                refuse(f"{type(error).__name__}: {error}")
            raise
        report = log.error if isinstance(error, FsaError) else log.exception  # a bug: its traceback
        report("job %s failed: %s: %s; the sweep goes on", hc.job.num, type(error).__name__, error)
    return objectives(summary, list(cfg.objective))


if __name__ == "__main__":
    main()
