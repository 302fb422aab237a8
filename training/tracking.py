"""Optional experiment tracking with MLflow, off by default.

Installed with `pip install 'aduan[mlflow]'` and switched on per run with `--mlflow URI` (e.g.
`file:./mlruns` or an MLflow server); without it nothing here is imported. The model directory
stays the record of truth; MLflow gets its settings, validation figures, provenance and files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aduan.model import artifacts
from aduan.model.labels import HEADS

from .config import TrainConfig, dotted
from .metrics import summary
from .provenance import portable_settings

log = logging.getLogger(__name__)

EXPERIMENT = "aduan"
EXTRA_HINT = "MLflow tracking needs the mlflow extra: pip install 'aduan[mlflow]'"


def require_mlflow() -> None:
    """Fail before training when tracking is asked for but MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise ValueError(EXTRA_HINT) from exc


def log_run(
    uri: str,
    model_dir: Path,
    config: TrainConfig,
    metrics: dict[str, Any],
    extra: dict[str, float] | None = None,
) -> str:
    """One MLflow run for a trained model directory; returns the run id."""
    require_mlflow()
    import mlflow

    model_config = artifacts.read_json(model_dir / artifacts.CONFIG)
    recorded = model_config.get("provenance") or {}
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=model_config.get("model_version")) as run:
        mlflow.log_params(
            {
                k: str(v)[:250]
                for k, v in dotted(portable_settings(config)).items()
                if v not in ("", None)
            }
        )
        figures = {
            f"{head}.{name}": value
            for head in HEADS
            for name, value in summary(metrics["validation"][head]).items()
            if value is not None
        }
        mlflow.log_metrics({**figures, **(extra or {})})
        mlflow.set_tags(
            {
                "model_version": model_config.get("model_version"),
                "model_type": model_config.get("model_type"),
                "git_commit": (recorded.get("code") or {}).get("git_commit", ""),
                "data": ", ".join(
                    f"{d['name']}@{d['sha256'][:12]}" for d in recorded.get("data") or []
                ),
            }
        )
        for name in (artifacts.CONFIG, artifacts.METRICS, artifacts.CARD):
            mlflow.log_artifact(str(model_dir / name))
        if (model_dir / artifacts.PLOTS).is_dir():
            mlflow.log_artifacts(str(model_dir / artifacts.PLOTS), artifact_path="plots")
        run_id: str = run.info.run_id
    log.info("MLflow run %s logged to %s", run_id, uri)
    return run_id
