"""Fixtures for the operator's integration tests: the CRDs, hand-made profiles, and one
`yolofit operator` subprocess (webhooks on 127.0.0.1) shared by the module's tests."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from opfixtures import make_two_models  # noqa: E402

from yolofit.estimator.profile import ProfileStore  # noqa: E402


@pytest.fixture(scope="session")
def crds(kubectl: Callable[..., Any]) -> None:
    kubectl("apply", "-f", str(REPO / "deploy" / "crds"))
    # `kubectl wait` fails at once (".status.conditions accessor error") when it reads a CRD
    # before the apiextensions controller wrote any condition: retry until it can wait.
    deadline = time.monotonic() + 60
    while True:
        result = kubectl("wait", "--for=condition=Established", "--timeout=60s",
                         "crd/yolotrainingjobs.yolofit.io", "crd/gpucapacitypolicies.yolofit.io",
                         check=time.monotonic() > deadline)
        if result.returncode == 0:
            return
        time.sleep(0.5)


@pytest.fixture(scope="session")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("profiles")
    make_two_models(d)
    return d


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    """The same two models for the pure tests, in a directory of the module's own (the
    operator may add what it traces to profile_dir)."""
    return make_two_models(tmp_path_factory.mktemp("p"))


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    """Settings of the module's operator on top of the shared ones: a module that needs its
    operator otherwise (other default limits, another gang mode) overrides this fixture."""
    return {}


# Module scope: the operator stops (and kopf removes its webhook configurations) when the
# module's tests end, so other test packages on the same sandbox never meet it.
@pytest.fixture(scope="module")
def operator(sandbox: Any, crds: None, kubectl: Callable[..., Any], profile_dir: Path,
             tmp_path_factory: pytest.TempPathFactory,
             operator_env: dict[str, str]) -> Iterator[Any]:
    from yolofit.operator.testing import OperatorProcess

    kubectl("create", "namespace", "yolofit-system", check=False)
    forget_learned_margins(kubectl)
    op = OperatorProcess(
        sandbox.kubeconfig, tmp_path_factory.mktemp("operator"),
        env={"YOLOFIT_PROFILE_DIR": str(profile_dir),
             "YOLOFIT_OPERATOR_PROFILE_BUILDER": "opfixtures:build_profile",
             "YOLOFIT_OPERATOR_QUEUE_INTERVAL": "0.5",
             "PYTHONPATH": str(HERE), **operator_env})
    op.start()
    try:
        yield op
    finally:
        op.stop(kubectl)
        kubectl("delete", "gpucapacitypolicy", "default", "--ignore-not-found", check=False)
        forget_learned_margins(kubectl)


def forget_learned_margins(kubectl: Callable[..., Any]) -> None:
    """Learned margins persist in a ConfigMap (that is their point): an OOM in one module
    would change the plans of the next. Each module's operator starts without them."""
    kubectl("delete", "configmap", "-n", "yolofit-system", "yolofit-learned-margins",
            "--ignore-not-found", check=False)


@pytest.fixture
def policy(operator: Any, kubectl: Callable[..., Any]) -> Iterator[Callable[..., None]]:
    """set(rules): apply the `default` GPUCapacityPolicy and wait until the operator saw it."""

    def apply(namespaces: list[dict[str, Any]], **spec: Any) -> None:
        body = {"apiVersion": "yolofit.io/v1alpha1", "kind": "GPUCapacityPolicy",
                "metadata": {"name": "default"}, "spec": {"namespaces": namespaces, **spec}}
        out = json.loads(kubectl("apply", "-o", "json", "-f", "-",
                                 input=json.dumps(body)).stdout)
        generation = out["metadata"]["generation"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = kubectl("get", "gpucapacitypolicy", "default", "-o",
                          "jsonpath={.status.observedGeneration}").stdout
            if got and int(got) >= generation:
                return
            time.sleep(0.1)
        raise AssertionError("the operator did not observe the policy")

    yield apply
    kubectl("delete", "gpucapacitypolicy", "default", "--ignore-not-found", check=False)
