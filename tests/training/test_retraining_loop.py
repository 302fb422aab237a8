"""The whole retraining loop on small data, as the ML engineer runs it: train v1 into the
registry, serve it, store requests and operators' corrections, export them, retrain with the
feedback and a new month's export, gate, promote, and the running service answers from v2
without a restart and without a failed request; a deliberately worse candidate is refused."""

import json
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.registry import Registry
from tests.conftest import SPLIT, make_complaints

KEY = {"Authorization": "Bearer k1"}
FALLEN = ["pohon tumbang menimpa kabel", "dahan pohon besar patah", "pohon roboh menutup jalan"]
runner = CliRunner()


def _fallen_trees(rows: int, month: str, seed: int) -> pd.DataFrame:
    """A kind of complaint the first model never saw, handled by Dinas Lingkungan Hidup."""
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "id": [f"{month}-pohon-{i}" for i in range(rows)],
            "text": [f"{rng.choice(FALLEN)} sejak kemarin {month} no {i}" for i in range(rows)],
            "address": "",
            "kelurahan": "",
            "kecamatan": "",
            "created_at": [f"{month}-{rng.randint(1, 28):02d} 09:00:00" for _ in range(rows)],
            "topic": "Informasi Pemangkasan/Perantingan Pohon",
            "category": "POHON",
            "agency": "Dinas Lingkungan Hidup",
        }
    )


def _may_export(seed: int) -> pd.DataFrame:
    """The new month's export: the usual complaints plus fallen trees, with final agencies."""
    usual = make_complaints(90, seed=seed)
    usual["created_at"] = usual["created_at"].str.replace(r"^\d{4}-\d{2}", "2023-05", regex=True)
    usual["text"] = usual["text"] + " mei"
    usual["id"] = usual["id"].map(lambda i: f"may-{i}")
    return pd.concat([usual, _fallen_trees(30, "2023-05", seed)], ignore_index=True)


def _retrain(registry, *data):
    args = ["retrain", "--registry", str(registry.root), "--set", "tfidf.min_df=1"]
    args += [
        "--set",
        "min_agency_rows=5",
        "--gate",
        "min_eval_rows=50",
        "--gate",
        "min_valid_rows=50",
    ]
    for path in data:
        args += ["--data", str(path)]
    return runner.invoke(app, args)


def test_retraining_loop_promotes_a_better_model_into_the_running_service(
    make_client, tmp_path, monkeypatch
):
    base = tmp_path / "complaints.csv"
    make_complaints().to_csv(base, index=False)  # 2022-11 .. 2023-03
    registry = Registry(tmp_path / "models")
    trained = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(base),
            "--registry",
            str(registry.root),
            "--set",
            "tfidf.min_df=1",
            *SPLIT,
        ],
    )
    assert trained.exit_code == 0, trained.output
    v1 = registry.live()
    assert v1 is not None

    # Serve v1; the service runs in April 2023 (its clock stamps the stored requests).
    database = f"sqlite:///{tmp_path / 'aduan.db'}"
    client = make_client(
        registry=registry.root,
        database_url=database,
        api_keys="k1",
        operator_keys="k1",
        admin_keys="adm-1",
        reload_interval_s=0.2,
    )
    monkeypatch.setattr(
        "aduan.service.storage.utcnow", lambda: datetime(2023, 4, 15, 9, 0, tzinfo=UTC)
    )
    april = _fallen_trees(12, "2023-04", seed=5)
    for text in april["text"]:
        body = {"items": [{"text": text}], "store": True}
        answer = client.post("/v1/classify", json=body, headers=KEY)
        assert answer.status_code == 200 and answer.json()["model_version"] == v1
        correction = {
            "request_id": answer.json()["results"][0]["request_id"],
            "agency": "Dinas Lingkungan Hidup",
            "category": "POHON",
            "operator": "op-siti",
        }
        assert client.post("/v1/feedback", json=correction, headers=KEY).status_code == 201
    feedback = tmp_path / "feedback.csv"
    exported = runner.invoke(
        app, ["feedback", "export", "--output", str(feedback), "--database-url", database]
    )
    assert exported.exit_code == 0 and "wrote 12 corrected request(s)" in exported.output

    export = tmp_path / "complaints_2022-11_2023-05.csv"
    pd.concat([make_complaints(), _may_export(seed=9)]).to_csv(export, index=False)

    # Clients keep calling the service while the candidate is trained, gated and promoted.
    stop, failures, versions = threading.Event(), [], []

    def client_loop() -> None:
        while not stop.is_set():
            response = client.post(
                "/v1/classify",
                json={"items": [{"text": "pohon tumbang menimpa kabel"}]},
                headers=KEY,
            )
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                versions.append(response.json()["model_version"])

    callers = [threading.Thread(target=client_loop) for _ in range(2)]
    for caller in callers:
        caller.start()
    try:
        result = _retrain(registry, export, feedback)
        assert result.exit_code == 0, result.output  # promoted
        v2 = registry.live()
        assert v2 != v1 and f"candidate {v2} promoted" in result.output
        deadline = time.monotonic() + 10
        while client.get("/v1/info", headers=KEY).json()["model_version"] != v2:
            assert time.monotonic() < deadline, "the service did not pick up the promotion"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for caller in callers:
            caller.join(10)
    assert failures == [] and versions[0] == v1 and versions[-1] == v2
    assert set(versions) == {v1, v2}
    print(f"\n{len(versions)} requests during retrain + promotion, 0 failed")  # -s shows it

    report = (registry.report_dir(v2) / "comparison.json").read_text()
    comparison = pd.read_json(registry.report_dir(v2) / "comparison.json", typ="series")
    assert comparison["outcome"] == "promoted" and comparison["live"] == v1
    assert comparison["evaluation"]["from"] == "2023-05-01"  # judged on May only
    assert comparison["windows"]["valid_until"] == "2023-04-30"  # April feedback trained on
    live_f, cand_f = (
        comparison["figures"]["live"]["agency"],
        comparison["figures"]["candidate"]["agency"],
    )
    assert cand_f["accuracy"] > live_f["accuracy"]  # the corrections taught the fallen trees
    print(
        f"agency accuracy on May: live {live_f['accuracy']:.3f}, candidate {cand_f['accuracy']:.3f}"
    )
    assert (registry.report_dir(v2) / "comparison.png").stat().st_size > 1000
    assert "| agency accuracy |" in (registry.report_dir(v2) / "comparison.md").read_text()
    assert "pohon" not in report  # the report holds figures, never complaint text

    # Why v2 changed: the files, months and operators' corrections it learned from.
    listed = runner.invoke(app, ["models", "list", "--registry", str(registry.root), "--json"])
    seen = {v["version"]: v["provenance"] for v in json.loads(listed.stdout)}
    assert seen[v1]["feedback_rows"] == 0 and "2023-04" not in seen[v1]["months"]
    assert seen[v2]["feedback_rows"] == 12 and seen[v2]["months"]["2023-04"] == 12
    files = {Path(f["name"]).name: f for f in seen[v2]["files"]}
    assert files["feedback.csv"]["feedback"] and files["feedback.csv"]["rows_used"] == 12
    assert not files[export.name]["feedback"] and len(files[export.name]["sha256"]) == 64
    assert seen[v2]["excluded"] == {"dated after valid_until": 120}  # May: the gate's month
    card = (registry.path(v2) / "README.md").read_text()
    assert "operators' corrections included: 12 rows" in card and "2023-04 (12)" in card
    config = json.loads((registry.path(v2) / "config.json").read_text())
    assert len(config["provenance"]["feedback_ids"]) == 12

    # The running service now routes fallen trees as the operators taught it.
    answer = client.post(
        "/v1/classify",
        json={"items": [{"text": "dahan pohon besar patah sejak kemarin"}]},
        headers=KEY,
    ).json()
    assert answer["model_version"] == v2
    assert answer["results"][0]["agency"]["label"] == "Dinas Lingkungan Hidup"

    # A deliberately worse candidate: trained on shuffled agencies, judged on the true May.
    shuffled = pd.concat([make_complaints(), _fallen_trees(12, "2023-04", seed=5)])
    shuffled["agency"] = shuffled["agency"].sample(frac=1.0, random_state=1).to_numpy()
    worse = tmp_path / "shuffled.csv"
    pd.concat([shuffled, _may_export(seed=9)]).to_csv(worse, index=False)
    refused = _retrain(registry, worse)
    assert refused.exit_code == 3, refused.output
    assert "refused: the live model stays" in refused.output and "agency accuracy" in refused.output
    assert registry.live() == v2
    candidate = registry.names()[-1]
    verdict = pd.read_json(registry.report_dir(candidate) / "comparison.json", typ="series")
    assert verdict["outcome"] == "refused" and verdict["reasons"]
    time.sleep(0.5)  # several pointer checks later the service still answers from v2
    assert client.get("/v1/info", headers=KEY).json()["model_version"] == v2


def test_retrain_defaults_to_the_live_versions_preset(tiny_model, tmp_path, monkeypatch):
    import aduan.training.retrain
    from tests.conftest import add_version

    seen: list[str] = []

    def judged(config, registry, gate, *, keep):
        seen.append(config.preset)
        raise ValueError("stop here")  # the gate's own run is tested above

    monkeypatch.setattr(aduan.training.retrain, "retrain", judged)
    store = Registry(tmp_path / "reg")
    data = ["--data", str(tmp_path / "unused.csv"), "--registry", str(store.root)]
    assert runner.invoke(app, ["retrain", *data]).exit_code == 2  # nothing live: baseline
    add_version(store, tiny_model, "q1", preset="quick")
    store.promote("q1", verify=False)
    assert runner.invoke(app, ["retrain", *data]).exit_code == 2
    assert runner.invoke(app, ["retrain", *data, "--preset", "full"]).exit_code == 2
    assert seen == ["baseline", "quick", "full"]


def test_retrain_refuses_while_another_run_trains(tmp_path):
    import socket
    import subprocess
    import sys

    store = Registry(tmp_path / "reg")
    store.root.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held = {"pid": sleeper.pid, "host": socket.gethostname(), "preset": "fast"}
        (store.root / "training.json").write_text(json.dumps({**held, "log": "/tmp/fast.log"}))
        args = ["retrain", "--data", str(tmp_path / "x.csv"), "--registry", str(store.root)]
        result = runner.invoke(app, args)
        assert result.exit_code == 2  # failed: nothing decided
        assert f"pid {sleeper.pid}" in result.output and "/tmp/fast.log" in result.output
    finally:
        sleeper.kill()
        sleeper.wait()
