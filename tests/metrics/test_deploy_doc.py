"""docs/deploy.md refers only to files that exist, and lists every alert that alerts.yml defines."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "deploy.md").read_text()


def test_every_deploy_path_in_the_doc_exists():
    paths = set(re.findall(r"`(deploy/[\w./-]+)`", DOC))
    assert len(paths) >= 10
    missing = [p for p in paths if not (REPO / p.rstrip("/")).exists()]
    assert not missing


def test_the_alert_table_matches_the_rules():
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert set(re.findall(r"^\| (Fairgpu\w+) \|", DOC, re.M)) == alerts


def test_the_documented_names_are_the_manifests():
    rc = yaml.safe_load((REPO / "deploy" / "k8s" / "raycluster.yaml").read_text())
    assert f"{rc['metadata']['name']}-head-svc" in DOC
    server = (REPO / "scheduler" / "server.py").read_text()
    (token_file,) = set(re.findall(r'state_dir / "([\w.-]+token[\w.-]*)"', server))
    assert f"/var/lib/fairgpu/{token_file}" in DOC


def test_the_sandbox_section_explains_every_setting_the_gpu_workers_carry_for_it():
    section = DOC.split("### The script sandbox in pods", 1)[1].split("\n## ", 1)[0]
    rc = yaml.safe_load((REPO / "deploy" / "k8s" / "raycluster.yaml").read_text())
    for group in rc["spec"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        sc = pod["containers"][0]["securityContext"]
        assert f"`hostUsers: {str(pod['hostUsers']).lower()}`" in section
        assert f"`procMount: {sc['procMount']}`" in section
        for key in ("seccompProfile", "appArmorProfile"):
            assert f"`{key}: {{type: {sc[key]['type']}}}`" in section
        assert f"`privileged: {str(sc['privileged']).lower()}`" in section
