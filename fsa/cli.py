"""The `fsa` command: a thin Hydra entry that hands the composed config to `fsa.runner.run`."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fsa.config import register_configs
from fsa.errors import FsaError

log = logging.getLogger("fsa")
register_configs()
# An absolute path: the same folder whether started as `fsa`, `python -m fsa` or from a test.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from fsa.runner import Interrupted, run  # heavy imports after Hydra has parsed the command line

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    # resume=<folder> continues that run (its checkpoint); otherwise the job's own folder, which
    # also resumes when it holds a checkpoint (a requeued Slurm job reruns in the same folder).
    output_dir = Path(cfg.resume) if cfg.resume else Path(cfg.paths.output_dir)
    group = Path(hc.sweep.dir).name if multirun else output_dir.name
    name = hc.job.override_dirname or output_dir.name
    try:
        run(cfg, output_dir, wandb_group=group, wandb_name=name)
    except Interrupted as stop:  # checkpointed on SIGTERM / SIGUSR1: stop the whole sweep, ask for a requeue
        log.warning("%s", stop)
        sys.exit(Interrupted.exit_code)
    except Exception as error:
        # The job's folder already holds failure.json. In a sweep, one failed job (a bad target, out
        # of memory) must not stop or spoil the others: log it and let the sweep go on.
        if multirun:
            log.exception("job %s failed (see %s); the sweep goes on", hc.job.num, output_dir / "failure.json")
            return
        if isinstance(error, FsaError):  # input the user can fix: a clear message and exit 2, no traceback
            log.error("%s: %s", type(error).__name__, error)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
