"""The Kubernetes deployment: the `kubernetes` instance profile opens as a real Dagster
instance on a fresh PostgreSQL database and launches a run of the pipeline as a Kubernetes
Job through dagster-k8s against a stand-in API server on 127.0.0.1 (a real HTTP server and
the real Kubernetes client): the Job carries the image, the run command, the environment
from the ConfigMap and Secret (never a secret's value), the data volume and the run
resources. The example Helm values (docs/deploy/values.yaml) hold the same limits."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.instance import profile_template
from tests.test_production_instance import PG_ADMIN_USER, PG_HOST, PG_PORT, fresh_database

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "docs" / "deploy" / "values.yaml"
IMAGE = "registry.example.gov/ids-lakehouse:0.1.0"
IMAGE_PYTHON = "/usr/local/bin/python"   # the image's Python, which the code location runs


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)


def test_the_helm_values_hold_the_kubernetes_profiles_limits_and_environment():
    values = yaml.safe_load(VALUES.read_text())
    profile = yaml.safe_load(profile_template("kubernetes").read_text())
    postgres = yaml.safe_load(profile_template("postgres").read_text())
    # the kubernetes profile is the PostgreSQL one with runs launched as Jobs
    assert {k: v for k, v in profile.items() if k != "run_launcher"} == postgres
    assert (profile["run_launcher"]["module"], profile["run_launcher"]["class"]) == \
        ("dagster_k8s", "K8sRunLauncher")

    launcher = profile["run_launcher"]["config"]
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert [c["name"] for c in k8s["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in k8s["envSecrets"]] == launcher["env_secrets"]
    assert (k8s["volumes"], k8s["volumeMounts"]) == \
        (launcher["volumes"], launcher["volume_mounts"])
    assert k8s["resources"] == launcher["resources"]
    assert (k8s["failPodOnRunFailure"], k8s["imagePullPolicy"], k8s["loadInclusterConfig"]) \
        == (launcher["fail_pod_on_run_failure"], launcher["image_pull_policy"],
            launcher["load_incluster_config"])
    assert values["global"]["serviceAccountName"] == launcher["service_account_name"]

    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    runs = profile["concurrency"]["runs"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert queued["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    for section in ("runMonitoring", "runRetries"):
        assert {_snake(k): v for k, v in daemon[section].items()} == profile[_snake(section)]
    assert values["telemetry"] == profile["telemetry"]

    # the PostgreSQL that exists, its password from a Secret, never from this file
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlScheme"] == \
        profile["storage"]["postgres"]["postgres_db"]["scheme"]
    assert not [k for k in _keys(values) if "password" in k.lower()
                and k != "generatePostgresqlPasswordSecret"]

    # the code location is the module workspace.yaml loads, with the pipeline's environment
    # and the data volume (the landing sensor scans it)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert deployment["dagsterApiGrpcArgs"] == \
        ["--module-name", workspace["load_from"][0]["python_module"]["module_name"]]
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == IMAGE
    for process in (deployment, values["dagsterDaemon"], values["dagsterWebserver"]):
        assert [c["name"] for c in process["envConfigMaps"]] == launcher["env_config_maps"]
        assert [s["name"] for s in process["envSecrets"]] == launcher["env_secrets"]
    assert deployment["volumeMounts"] == launcher["volume_mounts"]


class _KubernetesAPI(BaseHTTPRequestHandler):
    """Accepts Job creations as the Kubernetes API does (201, the object echoed back) and
    keeps what it was sent; answers anything else 404."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        if not self.path.startswith("/apis/batch/v1/namespaces/"):
            self.send_error(404)
            return
        body.setdefault("metadata", {})["uid"] = "test-uid"
        payload = json.dumps(body).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def kubernetes_api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubernetesAPI)
    server.received = []  # type: ignore[attr-defined]
    server.timeout = 30
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "test", "user": {"token": "test-only-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    return path


@pytest.mark.postgres
def test_a_run_is_launched_as_a_kubernetes_job_from_the_profile(tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster_k8s import K8sRunLauncher

    from pipelines.definitions import build_definitions
    from pipelines.jobs import DOWNSTREAM_TAG

    secret = "test-only-pseudonym-key-" + "7" * 20
    monkeypatch.setenv("IDS_PSEUDONYM_KEY", secret)
    monkeypatch.setenv("DAGSTER_PG_HOST", PG_HOST)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(PG_PORT))
    monkeypatch.setenv("DAGSTER_PG_USER", PG_ADMIN_USER)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("IDS_K8S_NAMESPACE", "ids-test")
    home = tmp_path / "dagster_home"
    home.mkdir()
    with fresh_database() as dbname, kubernetes_api() as api:
        monkeypatch.setenv("DAGSTER_PG_DB", dbname)
        profile = yaml.safe_load(profile_template("kubernetes").read_text())
        # Outside a cluster the launcher finds the API server through a kubeconfig; the
        # rest of the profile is as shipped.
        launcher_config = profile["run_launcher"]["config"]
        launcher_config["load_incluster_config"] = False
        launcher_config["kubeconfig_file"] = str(_kubeconfig(tmp_path / "kubeconfig",
                                                             api.server_address[1]))
        (home / "dagster.yaml").write_text(yaml.safe_dump(profile))

        with DagsterInstance.from_config(str(home)) as instance:
            launcher = instance.run_launcher
            assert isinstance(launcher, K8sRunLauncher)
            job = build_definitions().resolve_job_def("nightly_refresh")
            origin = JobPythonOrigin(job.name, RepositoryPythonOrigin(
                executable_path=IMAGE_PYTHON, container_image=IMAGE,
                code_pointer=ModuleCodePointer("pipelines.definitions", "defs", None)))
            run = instance.create_run_for_job(job, job_code_origin=origin,
                                              tags=DOWNSTREAM_TAG)
            launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
            tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
            events = [e.message for e in instance.all_logs(run.run_id)]

    [(path, body)] = api.received  # type: ignore[attr-defined]
    assert path == "/apis/batch/v1/namespaces/ids-test/jobs"
    pod = body["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api", "execute_run"]
    assert container["envFrom"] == [{"configMapRef": {"name": "ids-lakehouse-env"}},
                                    {"secretRef": {"name": "ids-lakehouse-secrets"}}]
    assert {"name": "DAGSTER_HOME", "value": "/opt/dagster/dagster_home"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "6Gi"},
                                      "limits": {"memory": "8Gi"}}
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "ids-lakehouse-data"}} \
        in pod["volumes"]
    assert pod["serviceAccountName"] == "ids-lakehouse-runs"
    assert body["metadata"]["labels"]["dagster/job"] == "nightly_refresh"
    # the secrets stay in the cluster's Secret: neither the pseudonym key nor the
    # instance's database settings travel as values in the Job
    text = json.dumps(body)
    assert secret not in text and dbname not in text
    # the run's record in PostgreSQL says where it went
    assert tags["dagster/image"] == IMAGE
    assert any("Kubernetes run worker job" in (m or "") for m in events)
