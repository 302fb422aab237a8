"""The resolution-time model behind Open311's `expected_datetime` (`ADUAN_DEADLINE_MODEL`: the
directory `aduan followup deadlines train` writes). Loaded on first use and again when its
`deadlines.json` changes; a directory that is missing or broken, or a prediction that fails,
leaves the office's `resolution_hours` (else 7 days) in charge: routing a complaint never
fails for want of a deadline."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from aduan.model.deadlines import DEADLINES_JSON, DeadlineDirError, DeadlineModel

log = logging.getLogger(__name__)


class ResolutionModel:
    """A deadline directory, re-read when it changes (one `stat` per prediction)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._model: DeadlineModel | None = None
        self._stamp: tuple[int, int] | None = None
        self.broken: str | None = None
        self._lock = threading.Lock()

    def model(self) -> DeadlineModel | None:
        """The loaded model, or None when the directory cannot be used (logged once)."""
        path = self.directory / DEADLINES_JSON
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return self._model
        with self._lock:
            if stamp is not None and stamp == self._stamp:
                return self._model
            try:
                model = DeadlineModel.load(self.directory)
            except DeadlineDirError as exc:
                if self.broken != str(exc):
                    log.error("deadline model unusable, offices' resolution_hours apply: %s", exc)
                self.broken, self._stamp = str(exc), stamp
                self._model = None
                return None
            self._model, self._stamp, self.broken = model, stamp, None
            log.info("deadline model %s loaded (predictor %s)", self.directory, model.default)
            return model

    def expected_at(
        self,
        start: datetime,
        text: str,
        agency: str,
        kecamatan: str | None,
        kelurahan: str | None,
    ) -> datetime | None:
        """The predicted resolution time from `start`, or None (no usable model)."""
        model = self.model()
        if model is None:
            return None
        try:
            return model.expected_at(start, text, agency, kecamatan, kelurahan)
        except Exception as exc:  # a bad prediction must not undo the complaint's routing
            log.warning("deadline prediction failed (%s): the office's hours apply", type(exc))
            return None
