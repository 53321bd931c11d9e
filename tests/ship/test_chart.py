"""The Helm chart, rendered with the real Helm (no cluster): lint, generated files up to date,
and the properties a platform team checks before installing it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from yolofit.cli import build_parser

from .conftest import CHART, MONITORING_API, ROOT

Render = Callable[..., list[dict[str, Any]]]
GENERATED_CRDS = sorted((ROOT / "deploy" / "crds").glob("*.yaml"))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found


@pytest.mark.parametrize("args", [
    [],
    ["--set", "webhook.certificates.mode=certManager",
     "--set", "gpuCapacityPolicy.create=true", "--set", "monitoring.operator.kind=ServiceMonitor"],
], ids=["defaults", "everything-on"])
def test_helm_lint_strict(helm: str, args: list[str]) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART), *args],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- generated files are up to date -------------------------------------------------------

def test_chart_crds_are_the_generated_ones_byte_for_byte() -> None:
    assert GENERATED_CRDS, "deploy/crds is empty: run `yolofit crds --write`"
    chart_crds = {p.name for p in (CHART / "crds").glob("*.yaml")} - {"kopf-peering.yaml"}
    assert chart_crds == {p.name for p in GENERATED_CRDS}, "run scripts/update-chart.sh"
    for src in GENERATED_CRDS:
        assert (CHART / "crds" / src.name).read_bytes() == src.read_bytes(), (
            f"charts/yolofit/crds/{src.name} differs from deploy/crds: run scripts/update-chart.sh")


@pytest.mark.parametrize("generator", ["dashboards/gen.py", "rbac/gen.py"])
def test_generated_chart_files_are_up_to_date(generator: str) -> None:
    result = subprocess.run([sys.executable, str(CHART / generator), "--check"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("which,path", [("crds", "deploy/manifests/crds.yaml"),
                                        ("operator", "deploy/manifests/yolofit.yaml")])
def test_plain_manifests_are_the_charts_defaults(helm: str, which: str, path: str) -> None:
    result = subprocess.run([str(ROOT / "scripts" / "render-manifests.sh"), which],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "HELM": helm})
    assert result.stdout == (ROOT / path).read_text(), (
        f"{path} is stale: run scripts/update-chart.sh")
    assert "tls.key" not in result.stdout and "PRIVATE KEY" not in result.stdout


# --- the operator Deployment ----------------------------------------------------------------

def test_operator_runs_restricted_with_probes_and_resources(render: Render) -> None:
    objects = render()
    deploy = one(objects, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/yolofit/operator:0.1.0"
    # Pod Security Standard "restricted".
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert set(ports) == {"webhook", "metrics", "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == spec["selector"]


def test_operator_args_and_env_are_ones_the_operator_accepts(render: Render) -> None:
    from yolofit.operator.settings import OperatorSettings

    deploy = one(render(), "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    args = [a.replace("$(POD_NAMESPACE)", "yolofit-system") for a in container["args"]]
    parsed = build_parser().parse_args(["operator", *args])  # exits on an unknown flag
    assert parsed.install_webhooks and parsed.webhook_mode == "service"
    assert parsed.peering == one(render(), "ClusterKopfPeering")["metadata"]["name"]
    settings = {f"YOLOFIT_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    ours = {e["name"] for e in container["env"] if e["name"].startswith("YOLOFIT_OPERATOR_")}
    assert ours <= settings, f"not operator settings: {sorted(ours - settings)}"


def test_trace_budget_and_memory_limit_come_from_one_value(render: Render) -> None:
    """The operator kills a trace worker above its budget; the container's limit is the
    budget plus the operator's own share, so the budget, not the OOM killer, stops a trace."""
    from yolofit.operator.settings import OperatorSettings
    from yolofit.units import parse_bytes

    def container(*args: str) -> dict[str, Any]:
        deploy = one(render(*args), "Deployment")
        (c,) = deploy["spec"]["template"]["spec"]["containers"]
        return c

    for args, budget, workers, limit in (
            ((), "3072Mi", 1, 4096 * 2**20),
            (("--set", "profiling.memoryBudgetMiB=6144"), "6144Mi", 1, 7168 * 2**20),
            (("--set", "profiling.workers=3"), "3072Mi", 3, (3 * 3072 + 1024) * 2**20),
            (("--set", "resources.limits.memory=10Gi"), "3072Mi", 1, 10 * 2**30)):
        c = container(*args)
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["YOLOFIT_OPERATOR_TRACE_MEMORY_BUDGET"] == budget
        assert env["YOLOFIT_OPERATOR_TRACE_WORKERS"] == str(workers)
        settings = OperatorSettings(trace_memory_budget=budget,
                                    trace_workers=env["YOLOFIT_OPERATOR_TRACE_WORKERS"])
        assert settings.trace_memory_budget_bytes == parse_bytes(budget)
        assert settings.trace_workers == workers
        assert parse_bytes(c["resources"]["limits"]["memory"]) == limit
        # room for the operator itself next to every worker's budget
        assert limit - workers * parse_bytes(budget) >= 1024 * 2**20


def test_two_replicas_coordinate_through_a_kopf_peering(render: Render) -> None:
    objects = render("--include-crds")
    crds = {c["metadata"]["name"] for c in by_kind(objects, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    assert {"yolotrainingjobs.yolofit.io", "gpucapacitypolicies.yolofit.io"} <= crds
    peering = one(objects, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"


def test_model_config_maps_are_mounted_read_only_where_model_dirs_point(render: Render) -> None:
    """Custom model YAMLs reach admission as ConfigMaps under /etc/yolofit/models/<name>, a
    directory the GPUCapacityPolicy's modelDirs can name; nothing is mounted by default."""
    def pod(*args: str) -> dict[str, Any]:
        return dict(one(render(*args), "Deployment")["spec"]["template"]["spec"])

    spec = pod("--set", "operator.modelConfigMaps={yolo-custom,team-b-models}")
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name in ("yolo-custom", "team-b-models"):
        assert mounts[f"models-{name}"] == {"name": f"models-{name}", "readOnly": True,
                                            "mountPath": f"/etc/yolofit/models/{name}"}
        assert volumes[f"models-{name}"]["configMap"] == {"name": name}
    assert not [v for v in pod()["volumes"] if v["name"].startswith("models-")]


# --- RBAC ---------------------------------------------------------------------------------

def test_rbac_is_the_operators_own_list_without_webhook_configurations(
        render: Render) -> None:
    from yolofit.operator import rbac

    objects = render()
    owned = {"mutatingwebhookconfigurations", "validatingwebhookconfigurations",
             "validatingadmissionpolicies", "validatingadmissionpolicybindings"}
    cluster = {r["metadata"]["name"]: r["rules"] for r in by_kind(objects, "ClusterRole")}
    assert cluster["yolofit"] == [r for r in rbac.RULES if not owned & set(r["resources"])]
    assert cluster["yolofit-workloads"] == rbac.WORKLOAD_RULES
    assert one(objects, "Role")["rules"] == rbac.NAMESPACED_RULES


def test_rbac_is_per_namespace_when_the_chart_lists_them(render: Render) -> None:
    from yolofit.operator import rbac

    objects = render("--set", "operator.namespaces={team-a,team-b}")
    assert [r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")] == ["yolofit"]
    roles = {r["metadata"]["namespace"]: r["rules"] for r in by_kind(objects, "Role")
             if r["metadata"]["name"] == "yolofit-workloads"}
    assert roles == {"team-a": rbac.WORKLOAD_RULES, "team-b": rbac.WORKLOAD_RULES}
    cluster_rules = one([o for o in by_kind(objects, "ClusterRole")], "ClusterRole")["rules"]
    assert not any("pods" in r["resources"] for r in cluster_rules)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env["YOLOFIT_OPERATOR_NAMESPACES"]) == ["team-a", "team-b"]


def test_admission_policies_name_the_operators_service_account(render: Render) -> None:
    objects = render()
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "ValidatingAdmissionPolicy")}
    user = "system:serviceaccount:yolofit-system:yolofit"
    status = policies["yolofit-status"]["spec"]
    assert status["matchConstraints"]["resourceRules"][0]["resources"] == [
        "yolotrainingjobs/status"]
    assert status["validations"][0]["expression"] == f"request.userInfo.username == '{user}'"
    owned = policies["yolofit-owned-pods"]["spec"]
    assert owned["matchConditions"][0]["expression"] == f"request.userInfo.username == '{user}'"
    bindings = {b["spec"]["policyName"] for b in by_kind(objects,
                                                         "ValidatingAdmissionPolicyBinding")}
    assert bindings == set(policies)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["YOLOFIT_OPERATOR_OPERATOR_USERNAME"] == user


def test_rbac_grants_no_secrets_wildcards_or_escalation(render: Render) -> None:
    objects = render()
    rules = [r for kind in ("ClusterRole", "Role") for o in by_kind(objects, kind)
             for r in o["rules"]]
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert not {"secrets", "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
                    "clusterroles", "clusterrolebindings", "roles", "rolebindings"} & set(
                        rule["resources"]), rule
    (node_rule,) = [r for r in rules if "nodes" in r["resources"]]
    assert set(node_rule["verbs"]) <= {"get", "list", "watch"}
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "yolofit-system"
    assert [r["resources"] for r in role["rules"]] == [["configmaps"]]


# --- webhooks and certificates --------------------------------------------------------------

def webhooks(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
            for w in one(objects, kind)["webhooks"]]


def test_self_signed_webhook_certificate_is_valid_for_the_service(render: Render) -> None:
    objects = render()
    secret = one(objects, "Secret")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    service = one(objects, "Service")
    names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                .value.get_values_for_type(x509.DNSName))
    svc = service["metadata"]["name"]
    assert {svc, f"{svc}.yolofit-system", f"{svc}.yolofit-system.svc",
            f"{svc}.yolofit-system.svc.cluster.local", "localhost"} <= names
    deploy = one(objects, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    hooks = webhooks(objects)
    assert {w["clientConfig"]["service"]["path"] for w in hooks} == {
        "/mutate", "/validate", "/validate-policy"}
    for hook in hooks:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == data["ca.crt"]
        assert hook["clientConfig"]["service"]["name"] == svc
        assert hook["sideEffects"] == "None" and hook["failurePolicy"] == "Fail"
        assert hook["rules"][0]["resources"] in (["yolotrainingjobs"], ["gpucapacitypolicies"])
    volumes = deploy["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": secret["metadata"]["name"],
                                      "defaultMode": 0o440}} in volumes


def test_chart_webhooks_are_the_operators_own_configuration(render: Render) -> None:
    """The chart renders what yolofit/operator/webhook_config.py builds for the sandbox
    (names, paths, rules, matchConditions), with the chart's Service and identity."""
    from yolofit.operator import webhook_config

    user = "system:serviceaccount:yolofit-system:yolofit"
    mutating, validating = webhook_config.webhook_configurations(
        "x", b"ca", service={"namespace": "yolofit-system", "name": "yolofit-webhook",
                             "port": 443}, operator_username=user)
    want = {w["name"]: w for w in mutating["webhooks"] + validating["webhooks"]}
    got = {w["name"]: w for w in webhooks(render())}
    assert set(got) == set(want)
    for name, hook in got.items():
        for key in ("rules", "matchConditions", "failurePolicy", "sideEffects",
                    "admissionReviewVersions", "matchPolicy"):
            assert hook[key] == want[name][key], (name, key)
        assert hook["clientConfig"]["service"]["path"] == \
            want[name]["clientConfig"]["service"]["path"]


def test_cert_manager_mode_uses_a_certificate_and_the_ca_injector(render: Render) -> None:
    objects = render("--set", "webhook.certificates.mode=certManager")
    assert not by_kind(objects, "Secret")
    cert = one(objects, "Certificate")
    assert one(objects, "Issuer")["spec"] == {"selfSigned": {}}
    secret_volume = next(v for v in one(objects, "Deployment")["spec"]["template"]["spec"][
        "volumes"] if v["name"] == "tls")
    assert cert["spec"]["secretName"] == secret_volume["secret"]["secretName"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = one(objects, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"yolofit-system/{cert['metadata']['name']}")
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])
    external = render("--set", "webhook.certificates.mode=certManager",
                      "--set", "webhook.certificates.certManager.issuerRef.name=corp-ca",
                      "--set", "webhook.certificates.certManager.issuerRef.kind=ClusterIssuer")
    assert not by_kind(external, "Issuer")
    assert one(external, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca",
                                                                 "kind": "ClusterIssuer"}


def test_webhooks_off_renders_no_certificate_or_configuration(render: Render) -> None:
    objects = render("--set", "webhook.enabled=false")
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"Secret", "Service", "MutatingWebhookConfiguration",
                        "ValidatingWebhookConfiguration"}
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--install-webhooks" not in container["args"]


# --- policy, monitoring, dashboard ---------------------------------------------------------

def test_gpu_capacity_policy_from_values(render: Render) -> None:
    assert not by_kind(render(), "GPUCapacityPolicy")
    policy = one(render("--set", "gpuCapacityPolicy.create=true",
                        "--set", "gpuCapacityPolicy.spec.classes[0].name=t4",
                        "--set", "gpuCapacityPolicy.spec.preference[0]=t4"), "GPUCapacityPolicy")
    assert policy["metadata"]["name"] == "default"
    assert policy["spec"] == {"classes": [{"name": "t4"}], "preference": ["t4"]}


MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_monitoring_objects_only_where_the_prometheus_operator_is(render: Render) -> None:
    assert not {o["kind"] for o in render()} & MONITORING_KINDS
    on = render("--api-versions", MONITORING_API)
    assert [o["kind"] for o in on if o["kind"] in MONITORING_KINDS] == [
        "PodMonitor", "PodMonitor", "PrometheusRule"]
    off = render("--api-versions", MONITORING_API, "--set", "monitoring.operator.enabled=false",
                 "--set", "monitoring.trainer.enabled=false",
                 "--set", "prometheusRule.enabled=false")
    assert not {o["kind"] for o in off} & MONITORING_KINDS
    svc = render("--api-versions", MONITORING_API,
                 "--set", "monitoring.operator.kind=ServiceMonitor")
    monitor = one(svc, "ServiceMonitor")
    metrics_service = next(s for s in by_kind(svc, "Service")
                           if s["metadata"]["name"].endswith("-metrics"))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        metrics_service["metadata"]["labels"].items())


def test_monitors_keep_exporter_labels_and_name_the_scrape_jobs(render: Render) -> None:
    objects = render("--api-versions", MONITORING_API)
    jobs = {}
    for monitor in by_kind(objects, "PodMonitor"):
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        relabel = {r.get("targetLabel"): r for r in endpoint["relabelings"]}
        if monitor["metadata"]["name"].endswith("-trainer"):
            # Targets are not trusted: namespace and job come from the pod's metadata.
            assert endpoint["honorLabels"] is False
            assert relabel["namespace"]["sourceLabels"] == ["__meta_kubernetes_namespace"]
            assert relabel["job"]["sourceLabels"] == [
                "__meta_kubernetes_pod_label_yolofit_io_job"]
            jobs[monitor["metadata"]["name"]] = ("yolofit-trainer", monitor["spec"])
            continue
        assert endpoint["honorLabels"] is True  # the operator's own metrics
        jobs[monitor["metadata"]["name"]] = (relabel["job"]["replacement"], monitor["spec"])
    op_job, op_spec = jobs["yolofit-operator"]
    assert op_job == "yolofit-operator"
    deploy = one(objects, "Deployment")
    assert op_spec["selector"]["matchLabels"].items() <= (
        deploy["spec"]["template"]["metadata"]["labels"].items())
    tr_job, tr_spec = jobs["yolofit-trainer"]
    assert tr_job == "yolofit-trainer" and tr_spec["namespaceSelector"] == {"any": True}
    from yolofit.operator import launch

    assert tr_spec["selector"]["matchLabels"] == {launch.METRICS_LABEL: "true"}


def test_prometheus_rule_embeds_the_rules_file(render: Render) -> None:
    source = yaml.safe_load((CHART / "rules" / "yolofit-rules.yaml").read_text())
    rule = one(render("--api-versions", MONITORING_API), "PrometheusRule")
    assert rule["spec"]["groups"] == source["groups"]
    labelled = one(render("--api-versions", MONITORING_API,
                          "--set", "prometheusRule.ruleLabels.team=ml"), "PrometheusRule")
    for group in labelled["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["team"] == "ml" and r["labels"]["severity"]


def test_dashboard_configmap_is_for_the_grafana_sidecar(render: Render) -> None:
    cm = one(render(), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["yolofit.json"]) == json.loads(
        (CHART / "dashboards" / "yolofit.json").read_text())
    moved = one(render("--set", "dashboard.namespace=monitoring"), "ConfigMap")
    assert moved["metadata"]["namespace"] == "monitoring"


def test_packaged_chart_leaves_out_the_generator(helm: str, tmp_path: Path) -> None:
    subprocess.run([helm, "package", str(CHART), "-d", str(tmp_path)], check=True,
                   capture_output=True)
    (archive,) = tmp_path.glob("yolofit-*.tgz")
    import tarfile

    names = tarfile.open(archive).getnames()
    assert "yolofit/dashboards/yolofit.json" in names
    assert "yolofit/rules/yolofit-rules.yaml" in names
    assert not [n for n in names if n.endswith(".py")]


@pytest.mark.parametrize("setting", ["webhook.certificates.mode=selfsigned",
                                     "monitoring.operator.kind=Pod", "replicaCount=0",
                                     "webhook.timeoutSeconds=60", "profiling.workers=0",
                                     "operator.modelConfigMaps={Bad_Name}"])
def test_values_schema_refuses_a_bad_choice_by_name(helm: str, setting: str) -> None:
    result = subprocess.run([helm, "template", "x", str(CHART), "--set", setting],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "/" + setting.split("=")[0].replace(".", "/") in result.stderr, result.stderr
