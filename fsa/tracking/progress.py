"""Progress with ETA and the current best distance: a tqdm bar on a terminal, plain lines elsewhere."""

import logging
import sys
import time

from tqdm import tqdm

from fsa.guidance.decoder import PRE, Evaluation

log = logging.getLogger("fsa")


class Progress:
    """Counts guided iterations over the whole run (all targets and variants); listens to evaluations.
    The line names the variant under way (`start`), and the best distance is that variant's."""

    def __init__(self, total: int, enabled: bool = True, line_every_s: float = 30.0, done: int = 0) -> None:
        """`done`: iterations finished before a resume, so the bar and the ETA pick up where they were."""
        self.total = total
        self.enabled = enabled
        self.best = float("inf")
        self.variant = ""
        self.done = done
        self._tty = sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=done, unit="it", dynamic_ncols=True) if enabled and self._tty else None
        self._done_at_start = done
        self._start = self._last_line = time.perf_counter()
        self._line_every_s = line_every_s

    def start(self, variant: str) -> None:
        """A variant (guided, a baseline) begins: its name on the line, its own best distance."""
        self.variant, self.best = variant, float("inf")
        if self._bar is not None:
            self._bar.set_description(variant, refresh=False)

    def __call__(self, ev: Evaluation) -> None:
        self.best = min(self.best, float(ev.best_distance.min()))
        if ev.phase != PRE:
            return
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(t=ev.t, k=ev.k, best=f"{self.best:.4g}", refresh=False)
        elif self.enabled and (time.perf_counter() - self._last_line >= self._line_every_s or self.done == self.total):
            self._last_line = time.perf_counter()
            elapsed = self._last_line - self._start
            eta = elapsed / max(self.done - self._done_at_start, 1) * (self.total - self.done)
            log.info(
                "%siteration %d/%d (%.0f%%) t=%d k=%d best distance %.4g, elapsed %.0fs, ETA %.0fs",
                f"{self.variant}: " if self.variant else "",
                self.done,
                self.total,
                100 * self.done / self.total,
                ev.t,
                ev.k,
                self.best,
                elapsed,
                eta,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LoopProgress:
    """A log line every `every_s` seconds, and at the last step, for a long loop that has no bar of its
    own (a gradient descent on seeds): what it is, the step, its figure, elapsed time and ETA."""

    def __init__(self, what: str, total: int, every_s: float = 30.0, enabled: bool = True) -> None:
        self.what, self.total, self.every_s, self.enabled = what, total, every_s, enabled
        self._start = self._last = time.perf_counter()
        self._first: int | None = None

    def __call__(self, done: int, figure: str) -> None:
        """`done` steps of `total` finished (a resumed loop starts above 0); `figure`: what to show."""
        now = time.perf_counter()
        self._first = done - 1 if self._first is None else self._first
        if not self.enabled or (now - self._last < self.every_s and done < self.total):
            return
        self._last = now
        elapsed = now - self._start
        eta = elapsed / max(done - self._first, 1) * (self.total - done)
        log.info("%s: iteration %d/%d, %s, elapsed %.0fs, ETA %.0fs", self.what, done, self.total, figure, elapsed, eta)
