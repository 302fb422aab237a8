"""Service settings, read from `ADUAN_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aduan.model.ray_runtime import RAY, resolve_backend
from aduan.model.resources import default_gazetteer


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ADUAN_", env_file=".env", extra="ignore", protected_namespaces=()
    )

    model_dir: Path = Field(Path("models/default"), description="Model directory to serve")
    registry: Path | None = Field(
        None, description="Model registry: serve its live version (instead of model_dir)"
    )
    reload_interval_s: float = Field(
        2.0, gt=0, description="How often the registry's live pointer is checked for a change"
    )
    admin_keys: str = Field(
        "", description="Comma-separated admin keys for /v1/admin; empty: admin routes are off"
    )
    drift_window: int = Field(1000, ge=1, description="Live predictions in the drift window")
    feedback_window_days: int = Field(
        30, ge=1, description="Days of stored requests whose feedback /metrics counts"
    )
    gazetteer: Path = Field(
        default_factory=default_gazetteer, description="kelurahan,kecamatan CSV"
    )
    max_batch: int = Field(64, ge=1, description="Most items in one classify request")
    max_chars: int = Field(10_000, ge=1, description="Longest accepted complaint text")
    batching: bool = Field(True, description="Merge concurrent requests into batches")
    batch_max_size: int = Field(32, ge=1, description="Most texts per inference batch")
    batch_max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Longest wait to fill a batch; 0: take what is queued when the model is free",
    )
    length_buckets: bool = Field(
        True,
        description="Run each inference batch of the transformer in sub-batches of similar "
        "token length (false: one call padded to the batch's longest text)",
    )
    queue_size: int = Field(1024, ge=1, description="Texts waiting before 429")
    api_keys: str = Field(
        "",
        description="Comma-separated API keys with the classify scope only, each optionally "
        "named ('qlue:key'); empty (and no other keys): /v1 is open",
    )
    operator_keys: str = Field(
        "",
        description="Comma-separated operator keys ('siti:key'): the review queue, feedback and "
        "the workbench; empty (and no operator key in the keys file): those are off",
    )
    public_https: bool = Field(
        False,
        description="Clients reach the service over HTTPS (a proxy in front terminates TLS): "
        "session cookies are Secure and answers carry HSTS, whatever the request's scheme",
    )
    trusted_proxies: str = Field(
        "127.0.0.1",
        description="Comma-separated addresses or networks of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (the client's address, https); '*' trusts any peer",
    )
    auth_failures: int = Field(
        10,
        ge=1,
        description="Failed authentications (wrong key, workbench login) one address may make "
        "before it must wait; it regains them over auth_failure_period_s",
    )
    auth_failure_period_s: float = Field(
        600.0, gt=0, description="Seconds in which an address regains all its auth_failures"
    )
    keys_file: Path | None = Field(
        None,
        description="Hashed, scoped API keys, one a line ('name scopes sha256:<hex>'); read "
        "again when it changes, so keys are added and revoked without a restart",
    )
    rate_limit: float = Field(
        0.0, ge=0, description="Requests per second per API key (per address when open); 0: off"
    )
    rate_burst: int = Field(0, ge=0, description="Requests a key may send at once; 0: 2 x rate")
    public_read_rate: float = Field(
        5.0,
        ge=0,
        description="Public (keyless) Open311 reads per second per address, in bursts of 2 x "
        "this; on whether or not rate_limit is set; 0: no limit",
    )
    explain_rate: float = Field(
        1.0,
        ge=0,
        description="Explanations per second per operator (the API and the workbench), in bursts "
        "of 2 x this (at least 1); each costs up to 49 predictions of its text; 0: no limit",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed to call the API from a browser; empty: "
        "CORS off",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body, refused (413) before parsing"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Longest time a client may take to send its body (then 408)"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request head (request line and headers)"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest time a client may take to send a request head, from connecting or "
        "from the previous answer (then 408 and the connection closes)",
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="Most open connections and running requests; more are answered 503 by the "
        "HTTP server before they reach the service",
    )
    max_queue_wait_s: float = Field(
        2.0,
        ge=0,
        description="Shed load (429 + Retry-After) when the requests inside, or the inference "
        "queue, would make a new request wait longer than this; 0: only the size bounds",
    )
    max_inflight: int = Field(
        512, ge=1, description="Most requests inside the service at once; more get 429"
    )
    db_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest a database call may take (a statement, a commit, waiting for a "
        "database thread); past it the call is cut and answers 503, nothing stored",
    )
    db_threads: int = Field(
        4, ge=1, description="Threads of the database's own that run its calls for the routes"
    )
    db_check_interval_s: float = Field(
        5.0, gt=0, description="How often the database is checked (readiness, recovery)"
    )
    ready_requires_database: bool = Field(
        False,
        description="Readiness fails while the database is unavailable (default: it reports "
        "'degraded' and classify without store keeps being routed here)",
    )
    drain_delay_s: float = Field(
        0.0, ge=0, description="After SIGTERM: readiness fails, requests are still served this long"
    )
    shutdown_timeout_s: float = Field(
        10.0,
        gt=0,
        description="After SIGTERM (and the drain delay): longest wait for in-flight requests",
    )
    database_url: str = Field("", description="SQLAlchemy URL; empty: SQLite in data_dir")
    data_dir: Path = Field(Path("var"), description="Where the embedded SQLite database lives")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR (stderr)")
    log_format: str = Field(
        "plain", description="plain (lines with the time zone) or json (one object a line)"
    )
    engine: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="Transformer engine: auto (ONNX when exported), onnx or torch"
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description="Where classify runs: local (the in-process dynamic batcher) or ray (Ray "
        "Serve replicas, each on `engine`; this app fronts them)",
    )
    ray_replicas: int = Field(2, ge=1, description="backend ray: replicas kept running")
    ray_max_replicas: int = Field(
        0, ge=0, description="backend ray: the autoscaler's ceiling (0: no more than ray_replicas)"
    )
    ray_cpus_per_replica: float = Field(1.0, gt=0, description="backend ray: CPUs per replica")
    ray_target_ongoing_requests: float = Field(
        4.0, gt=0, description="backend ray: requests in flight per replica the autoscaler aims at"
    )
    ray_retries: int = Field(
        2, ge=0, description="backend ray: retries on another replica when one dies mid-request"
    )
    ray_address: str = Field(
        "", description="backend ray: the cluster to join (else RAY_ADDRESS, else a local one)"
    )
    threads: int = Field(
        0,
        ge=0,
        description="Threads of one model call (0: the cores shared among inference_workers)",
    )
    inference_workers: int = Field(
        1,
        ge=1,
        description="Model calls (batches) run at once, each on threads/workers of the cores; "
        "an explanation still runs alone",
    )
    offices_file: Path | None = Field(
        None,
        description="The offices (YAML): webhook, signing secret, SLA and staff of each; read "
        "again when it changes. Without it nothing is followed up",
    )
    deadline_model: Path | None = Field(
        None,
        description="The resolution-time model (the directory `aduan followup deadlines train` "
        "writes) that sets each routed complaint's expected_datetime; read again when it "
        "changes. Empty: the office's resolution_hours, else 7 days",
    )
    followup_loop: bool = Field(
        True,
        description="Run the follow-up loop in the service (webhook dispatch and the overdue "
        "sweep) when an offices file is set; off: run `aduan followup dispatch/sweep` instead",
    )
    dispatch_interval_s: float = Field(
        1.0, gt=0, description="How often due webhook events are looked for"
    )
    sweep_interval_s: float = Field(
        60.0, gt=0, description="How often complaints past their deadline are marked overdue"
    )
    auto_route_threshold: float | None = Field(
        None,
        gt=0,
        le=1.01,
        description="A floor on the model's auto-route threshold (agency probability), for when "
        "the offices' verdicts show automatic routes below the promise: raised without "
        "retraining (also POST /v1/admin/auto-route-threshold); empty: the model's own",
    )
    live_accuracy_days: float = Field(
        30.0,
        gt=0,
        description="Window of the live accuracy of automatic routes (offices' verdicts)",
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for an office's webhook to answer one delivery"
    )
    webhook_max_attempts: int = Field(
        20, ge=1, description="Delivery attempts before an event is dead-lettered"
    )
    webhook_backoff_s: float = Field(
        1.0, gt=0, description="Wait after the first failed delivery; doubled each time"
    )
    webhook_backoff_cap_s: float = Field(
        300.0, gt=0, description="Longest wait between two delivery attempts"
    )
    # Duplicate and repeated reports (service/duplicates.py, docs/duplicates.md).
    duplicate_window_days: float = Field(
        14.0, gt=0, description="Likely duplicates: open complaints received this many days back"
    )
    duplicate_radius_m: float = Field(
        200.0, gt=0, description="Likely duplicates: within this distance when coordinates exist"
    )
    duplicate_threshold: float = Field(
        0.55,
        ge=0,
        le=1,
        description="Likely duplicates: least similarity (text cosine, the category bonus and the "
        "address term); chosen on judged pairs, see docs/duplicates.md",
    )
    duplicate_category_bonus: float = Field(
        0.05, ge=0, le=1, description="Added to the similarity when the categories agree"
    )
    duplicate_address_weight: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Times (address cosine - 0.5), added when both complaints gave an address",
    )
    reporter_secret: str = Field(
        "",
        description="HMAC key for reporter identities (Open311 email, device_id, account_id; "
        "/v1 reporter): only the keyed hash is stored; empty: identities are not kept",
    )
    reporter_max_reports: int = Field(
        10, ge=1, description="A reporter with more reports than this in the window is flagged"
    )
    reporter_window_hours: float = Field(
        24.0, gt=0, description="The window reporter_max_reports counts in"
    )

    @model_validator(mode="before")
    @classmethod
    def _engine_ray(cls, data: Any) -> Any:
        # The old spelling ADUAN_ENGINE=ray (or engine="ray"): the ray backend, with a warning.
        if isinstance(data, dict) and str(data.get("engine", "")).lower() == RAY:
            engine, backend = resolve_backend(RAY, data.get("backend"))
            data = {**data, "engine": engine, "backend": backend}
        return data

    @field_validator("keys_file", "offices_file", "deadline_model", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # ADUAN_KEYS_FILE= (set but empty) means no keys file, not the current directory
        return None if isinstance(value, str) and not value.strip() else value


@lru_cache
def get_settings() -> Settings:
    return Settings()
