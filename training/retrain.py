"""`aduan retrain`: train a candidate on everything up to a cut-off, judge it against the live
model on the newest labelled month(s), and promote it only when the gate lets it through.

Outcomes map to exit codes a scheduler can act on: promoted (0), refused (3: the live model
stays and the report says why), failed (2: nothing could be decided, e.g. no new month).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aduan.model import artifacts
from aduan.model.registry import DEFAULT_KEEP, Registry

from .config import TrainConfig
from .data import ColumnMap, load_many
from .evaluate import measure
from .gate import (
    HEAD,
    GateConfig,
    comparison,
    decide,
    evaluation_rows,
    plan_windows,
    render_table,
    write_report,
)
from .train import train_version

log = logging.getLogger(__name__)

PROMOTED, REFUSED, FAILED = "promoted", "refused", "failed"
EXIT_CODES = {PROMOTED: 0, REFUSED: 3, FAILED: 2}


@dataclass
class RetrainResult:
    outcome: str
    candidate: str
    live_before: str | None
    live_after: str | None
    reasons: list[str]
    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def table(self) -> str:
        return render_table(self.report)


def _seen_until(model_dir: Path) -> str | None:
    config = artifacts.read_config(model_dir)
    metrics_path = model_dir / artifacts.METRICS
    metrics = artifacts.read_json(metrics_path) if metrics_path.is_file() else {}
    seen = artifacts.data_range(config, metrics)
    return seen["seen_until"] if seen else None


def retrain(
    config: TrainConfig,
    registry: Registry,
    gate: GateConfig | None = None,
    *,
    keep: int = DEFAULT_KEEP,
) -> RetrainResult:
    """Plan the windows, train the candidate into the registry, score it and the live model
    on the same held-out rows, write the comparison beside the registry's versions, and
    promote it when every check passes, all under the registry's training lock. Raises
    `DataError`/`ValueError`/`ModelDirError`/`RegistryError` (`TrainingBusy` while another
    run trains) when nothing can be decided (the caller's "failed")."""
    gate = gate or GateConfig()
    with registry.training(config.preset):  # judged and promoted before another run starts
        return _retrain(config, registry, gate, keep)


def _retrain(config: TrainConfig, registry: Registry, gate: GateConfig, keep: int) -> RetrainResult:
    frame = load_many(config.data, ColumnMap(**config.columns))
    windows = plan_windows(frame["created_at"], gate, config.valid_months)
    live = registry.live()
    live_dir = registry.path(live) if live else None
    rows, eval_from = evaluation_rows(
        frame, windows, _seen_until(live_dir) if live_dir else None, gate
    )
    log.info(
        "retrain: train <= %s, calibrate %s..%s, judge on %d rows %s..%s",
        windows.train_until,
        windows.valid_from,
        windows.valid_until,
        len(rows),
        eval_from,
        windows.eval_until,
    )
    candidate_config = dataclasses.replace(
        config,
        train_until=windows.train_until,
        valid_from=windows.valid_from,
        valid_until=windows.valid_until,
    )
    candidate, _ = train_version(candidate_config, registry, promote=False, keep=keep, lock=False)
    _, scores = measure(registry.path(candidate), rows)
    live_scores = measure(live_dir, rows)[1] if live_dir else None
    checks = decide(
        scores[HEAD],
        live_scores[HEAD] if live_scores else None,
        config.route_accuracy,
        gate,
    )
    outcome = PROMOTED if all(c.passed for c in checks) else REFUSED
    report = comparison(
        outcome=outcome,
        candidate=candidate,
        live=live,
        windows=windows,
        eval_from=eval_from,
        rows=len(rows),
        scores=scores,
        live_scores=live_scores,
        checks=checks,
        promised=config.route_accuracy,
        gate=gate,
    )
    paths = write_report(registry.report_dir(candidate), report)
    if outcome == PROMOTED:
        registry.promote(candidate)
        log.info("candidate %s promoted (was %s)", candidate, live)
    else:
        log.warning("candidate %s refused: %s", candidate, "; ".join(report["reasons"]))
    return RetrainResult(
        outcome, candidate, live, registry.live(), report["reasons"], report, paths
    )
