"""Drift and health of the live model: PSI of predicted agencies, review share and unreadable
words against the training reference in /metrics and /v1/admin/drift, the operators' feedback
disagreement rate, and `aduan models drift --since` from the stored requests."""

import json
import math

import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.service.drift import psi, shares, summarize

ADMIN = {"Authorization": "Bearer adm-1"}
KEY = {"Authorization": "Bearer k1"}
runner = CliRunner()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics")


def test_drift_psi_is_zero_for_the_same_distribution_and_grows_with_shift():
    reference = {"A": 0.5, "B": 0.3, "C": 0.2}
    assert psi(reference, reference) == pytest.approx(0.0)
    mild = psi({"A": 0.45, "B": 0.33, "C": 0.22}, reference)
    strong = psi({"A": 0.1, "B": 0.1, "C": 0.8}, reference)
    assert 0 < mild < 0.1 < 0.25 < strong
    assert math.isfinite(psi({"D": 1.0}, reference))  # a label the reference never had
    assert shares(["A", "B", "A", "A"]) == {"A": 0.75, "B": 0.25}


def test_drift_summary_compares_window_and_reference():
    reference = {"agency": {"A": 0.5, "B": 0.5}, "review_share": 0.2, "unknown_word_share": 0.1}
    summary = summarize(
        ["A", "A", "A", "B"], ["auto", "review", "auto", "auto"], [0.0, 1.0, None, 0.5], reference
    )
    assert summary["predictions"] == 4
    assert summary["agency"]["A"] == {"window": 0.75, "reference": 0.5}
    assert summary["review_share"] == {"window": 0.25, "reference": 0.2}
    assert summary["unknown_word_share"]["window"] == pytest.approx(0.5)
    assert summary["many_unknown_share"]["window"] == pytest.approx(2 / 3)
    # (0.75 - 0.5) ln 1.5 + (0.25 - 0.5) ln 0.5
    assert summary["agency_psi"] == pytest.approx(0.25 * math.log(1.5) - 0.25 * math.log(0.5))
    assert summary["agency_psi_level"] == "significant shift"
    empty = summarize([], [], [], None)
    assert empty["agency_psi"] is None and empty["review_share"]["window"] is None


def test_drift_metrics_follow_the_live_traffic(make_client):
    client = make_client(admin_keys="adm-1")
    texts = ["bansos belum cair sudah lama"] * 8 + ["lampu PJU padam gelap"] * 2
    assert (
        client.post("/v1/classify", json={"items": [{"text": t} for t in texts]}).status_code == 200
    )
    metrics = client.get("/metrics").text
    assert _metric(metrics, "aduan_drift_window_predictions") == 10.0  # the warm-up not counted
    assert 'aduan_drift_agency_share{agency="Dinas Sosial",source="window"} 0.8' in metrics
    assert 'aduan_drift_agency_share{agency="Dinas Sosial",source="reference"}' in metrics
    skewed = _metric(metrics, "aduan_drift_agency_psi")
    assert skewed > 0.25  # 80% one agency against a validation mix of five
    assert 'aduan_drift_review_share{source="reference"}' in metrics
    snapshot = client.get("/v1/admin/drift", headers=ADMIN).json()
    assert snapshot["window"] == {"size": 10, "capacity": 1000}
    assert snapshot["agency_psi"] == pytest.approx(skewed)
    assert snapshot["unknown_word_share"]["window"] < 0.2
    assert snapshot["many_unknown_share"]["window"] == 0.0
    gibberish = [{"text": f"qwrtz blorf zzkx vrumpf {i}"} for i in range(10)]
    client.post("/v1/classify", json={"items": gibberish})
    after = client.get("/v1/admin/drift", headers=ADMIN).json()
    assert after["many_unknown_share"]["window"] == pytest.approx(0.5)
    assert after["unknown_word_share"]["window"] > 0.4
    assert "aduan_drift_many_unknown_share" in client.get("/metrics").text


def test_drift_window_restarts_with_the_reloaded_model(make_client):
    client = make_client(admin_keys="adm-1")
    client.post("/v1/classify", json={"items": [{"text": "lampu PJU padam"}]})
    assert client.get("/v1/admin/drift", headers=ADMIN).json()["window"]["size"] == 1
    assert client.post("/v1/admin/reload", headers=ADMIN).status_code == 200
    assert client.get("/v1/admin/drift", headers=ADMIN).json()["window"]["size"] == 0


def _store(client, text):
    body = {"items": [{"text": text}], "store": True}
    response = client.post("/v1/classify", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def _correct(client, result, agency, category="BANSOS"):
    body = {
        "request_id": result["request_id"],
        "agency": agency,
        "category": category,
        "operator": "op",
    }
    assert client.post("/v1/feedback", json=body, headers=KEY).status_code == 201


def test_drift_feedback_disagreement_rate(make_client, database_url):
    client = make_client(api_keys="k1", operator_keys="k1", database_url=database_url)
    agreed = _store(client, "bansos belum cair sudah lama")
    disputed = _store(client, "bansos tidak diterima warga miskin")
    _store(client, "lampu PJU padam")  # not corrected: not counted
    _correct(client, agreed, agreed["agency"]["label"])
    _correct(client, disputed, "Dinas Perhubungan")
    metrics = client.get("/metrics").text
    assert _metric(metrics, "aduan_feedback_recent_corrections") == 2.0
    assert _metric(metrics, "aduan_feedback_disagreement_rate") == 0.5

    settings = client.app.state.service.settings
    plot = settings.data_dir / "drift.png"
    result = runner.invoke(
        app,
        [
            "models",
            "drift",
            "--since",
            "2000-01-01",
            "--model",
            str(settings.model_dir),
            "--database-url",
            database_url,
            "--plot",
            str(plot),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the figures on stdout, the summary on stderr
    assert report["predictions"] == 3
    assert report["feedback"]["feedback"] == 2
    assert report["feedback"]["agency_disagreement_rate"] == 0.5
    assert report["agency"]["Dinas Sosial"]["window"] == pytest.approx(2 / 3)
    assert report["agency_psi"] is not None and len(report["weeks"]) == 1
    [(version, figures)] = report["versions"].items()
    assert version.startswith("baseline-") and figures["predictions"] == 3
    assert plot.stat().st_size > 1000
    assert "agency PSI" in result.stderr and "disagreement 50.0%" in result.stderr
    assert "bansos" not in result.output  # figures, never complaint text
    none = runner.invoke(
        app,
        [
            "models",
            "drift",
            "--since",
            "2999-01-01",
            "--model",
            str(settings.model_dir),
            "--database-url",
            database_url,
        ],
    )
    assert none.exit_code == 2 and "no stored requests" in none.output
