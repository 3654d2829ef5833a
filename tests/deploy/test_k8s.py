"""deploy/k8s: manifests valid against the Kubernetes API schemas, complete and hardened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.dockerfile import REPO

K8S = REPO / "deploy" / "k8s"
# Applied by hand, before the kustomization (deploy/README.md), or only an example.
OUTSIDE_KUSTOMIZATION = {"migrate-job.yaml", "secret.example.yaml", "kustomization.yaml"}
# The oldest Kubernetes still commonly run, and the newest the validator ships.
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((K8S / name).read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_for_the_kubernetes_api(path: Path, version: str) -> None:
    """Every manifest passes kubernetes-validate's strict schema check (unknown fields refused)."""
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_refuses_a_misspelt_field() -> None:
    """The strict schema check catches a typo, so the test above can fail."""
    doc = _load("deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_references_every_manifest() -> None:
    """kustomization.yaml lists every manifest of the folder except the documented exceptions, and nothing missing."""
    kustomization = _load("kustomization.yaml")
    resources = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")}
    assert resources <= on_disk, f"missing files: {resources - on_disk}"
    assert on_disk - resources == OUTSIDE_KUSTOMIZATION


def test_migration_job_runs_the_image_the_kustomization_deploys() -> None:
    """The migration Job and the kustomization's image override name the same image and tag."""
    image = _load("kustomization.yaml")["images"][0]
    job = _load("migrate-job.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == f"{image['newName']}:{image['newTag']}"
    assert job["args"] == ["migrate"]
    deploy = _load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert deploy["image"].split(":")[0] == image["name"]


def test_deployment_is_replicated_probed_and_hardened() -> None:
    """ingestd runs ≥2 replicas, probed on /readyz and /healthz, non-root, read-only, no capabilities."""
    spec = _load("deployment.yaml")["spec"]
    assert spec["replicas"] >= 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"INGESTD_DATABASE_URL", "INGESTD_ADMIN_TOKEN"}


def test_configmap_holds_only_known_non_secret_settings() -> None:
    """Every ConfigMap key is an INGESTD_* setting the code reads, and none of them is a secret."""
    settings_source = (REPO / "services/ingestd/src/ingestd/settings.py").read_text()
    data = _load("configmap.yaml")["data"]
    for key, value in data.items():
        assert f'"{key}"' in settings_source, f"{key} is not read by ingestd"
        assert isinstance(value, str)
    assert not {"INGESTD_DATABASE_URL", "INGESTD_ADMIN_TOKEN"} & set(data)


def test_hpa_and_pdb_select_the_deployment() -> None:
    """The HPA scales the ingestd Deployment from 2 up, and the PDB covers the same pods."""
    hpa = _load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ingestd",
    }
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    labels = _load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    for name in ("pdb.yaml", "service.yaml"):
        doc = _load(name)["spec"]
        selector = doc["selector"].get("matchLabels", doc["selector"])
        assert selector.items() <= labels.items()
