"""Errors that reach the user: each says what is wrong and how to fix it."""


class FsaError(Exception):
    """Base of every error fsa raises on purpose (bad input, missing weights, bad config)."""


class ConfigError(FsaError, ValueError):
    """An invalid configuration value (caught before any model loads)."""


class ExtractorError(FsaError, ValueError):
    """An extractor cannot be built or cannot do what was asked (bad layer, no text tower, ...)."""


class WeightsUnavailableError(FsaError, RuntimeError):
    """Pretrained weights could not be found locally or on the hub."""


class MissingPiecesError(WeightsUnavailableError):
    """Files or downloads a run needs (weights, target images) are not on this machine: all of them, in one list."""


class Interrupted(FsaError):
    """SIGTERM, SIGUSR1 or SIGUSR2 arrived: a checkpoint was saved; rerunning the same command resumes."""

    exit_code = 3  # what a launcher or a Slurm script takes as "requeue me"
