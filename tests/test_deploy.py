"""deploy/k8s: the Kubernetes manifests are valid against the API's schemas (the ones the
`kubernetes-validate` package ships: no network), and they keep the promises deploy/README.md
makes (probes on the health routes, a read-only model volume, exit codes, scaling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES = "1.30.0"  # the oldest version the manifests are checked against (CronJob timeZone)


def _documents() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def _one(kind: str, name: str) -> dict:
    [doc] = [d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_deploy_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", [KUBERNETES, "1.33.0"])
def test_deploy_manifests_match_the_kubernetes_schemas(version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _documents()
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "CronJob",
        "PersistentVolumeClaim",
        "ConfigMap",
    }
    for doc in docs:
        # strict: an unknown or misspelt field fails too
        kubernetes_validate.validate(doc, version, strict=True)


def test_deploy_schema_check_catches_a_wrong_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = _one("Deployment", "aduan")
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_deploy_service_probes_health_and_mounts_the_model_read_only():
    pod = _one("Deployment", "aduan")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    [models] = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert models["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == "models"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["ADUAN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "aduan-db"
    hpa = _one("HorizontalPodAutoscaler", "aduan")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "aduan" and hpa["maxReplicas"] > hpa["minReplicas"]


def test_deploy_retrain_job_reports_refusals_as_failures():
    job = _one("CronJob", "aduan-retrain")["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    spec = job["jobTemplate"]["spec"]
    assert spec["backoffLimit"] == 0  # exit 3 (refused) / 2 (failed) is not retried
    [container] = spec["template"]["spec"]["containers"]
    assert "aduan retrain" in " ".join(container["command"])
    assert container["image"].startswith("aduan-train:")  # the service image has no torch
    [models] = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert not models.get("readOnly", False)  # the job writes the registry the pods read


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_deploy_rollout_drains_longer_than_readiness_takes_to_fail():
    """SIGTERM fails readiness at once, but the endpoints drop the pod only after
    failureThreshold x periodSeconds (+ the probe's timeout): the listener must stay open
    longer than that, and the grace period must cover the drain and the in-flight requests."""
    pod = _one("Deployment", "aduan")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    probe = container["readinessProbe"]
    fails_after = probe["periodSeconds"] * probe["failureThreshold"] + probe["timeoutSeconds"]
    drain = float(env["ADUAN_DRAIN_DELAY_S"]["value"])
    shutdown = float(env["ADUAN_SHUTDOWN_TIMEOUT_S"]["value"])
    assert drain > fails_after
    assert pod["terminationGracePeriodSeconds"] >= drain + shutdown + 1


def test_deploy_keys_come_from_a_scoped_keys_file():
    """No key from ADUAN_API_KEYS-style settings (each would hold one fixed scope): the keys
    file, mounted read-only from the Secret, names every key's scopes."""
    pod = _one("Deployment", "aduan")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    assert not {"ADUAN_API_KEYS", "ADUAN_OPERATOR_KEYS", "ADUAN_ADMIN_KEYS"} & set(env)
    path = Path(env["ADUAN_KEYS_FILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "aduan-keys"
    assert {i["path"] for i in volume["secret"]["items"]} == {path.name}
    # readable by the service's user: world-readable, or group-readable with its group
    mode = volume["secret"].get("defaultMode", 0o644)
    user = pod["securityContext"]["runAsUser"]
    assert mode & 0o004 or (mode & 0o040 and pod["securityContext"].get("fsGroup") == user)
    assert env["ADUAN_PUBLIC_HTTPS"]["value"] == "true"
    assert env["ADUAN_TRUSTED_PROXIES"]["value"] not in ("*", "")
