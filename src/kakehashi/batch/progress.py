"""Progress of a batch job: a tqdm bar on a terminal, a plain log line every few seconds otherwise, or nothing."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("kakehashi.batch")
LOG_EVERY_SECONDS = 10.0


class Progress:
    """Counts inputs done and failed; shows images/s and an ETA."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self._started = self._logged = time.monotonic()
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1)
        self._quiet = quiet

    def advance(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if self._bar is not None:
            self._bar.update(1)
            if failed:
                self._bar.set_postfix(failed=self.failed)
        elif not self._quiet and time.monotonic() - self._logged >= LOG_EVERY_SECONDS:
            self._logged = time.monotonic()
            log.info("%s", self.line())

    def skip(self) -> None:
        """An input done by an earlier run: it leaves the total (and the ETA)."""
        if self.total:
            self.total -= 1
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self._started, 1e-9)

    def line(self) -> str:
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and self.rate > 0:
            eta = f", ETA {max(self.total - self.done, 0) / self.rate:.0f} s"
        return f"{self.done}{of} inputs done ({self.failed} failed), {self.rate:.1f} images/s{eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
