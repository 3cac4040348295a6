"""The Helm chart, rendered and linted offline with helm-python-sdk (Helm's Go SDK, no cluster).

Rendered manifests are validated against the Kubernetes 1.31 OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail) and the KEDA objects against tests/deploy/schemas/.
"""

from __future__ import annotations

import copy
import re
from functools import cache, lru_cache
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy._support import CHART_DIR, SCHEMAS, flatten_keys, load_json, load_yaml

KUBE_VERSION = "1.31.0"
RELEASE = "pc"
NAMESPACE = "ml"
FULLNAME = "pc-product-categorizer"

SASL_SECRET = "kafka-scram-creds"
STORE_URI = "s3://acme-ml-bundles/product-categorizer/store"
STORE_PATH = "/srv/bundle-store"
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "eks": load_yaml(CHART_DIR / "values-eks.yaml"),
    "keda-sasl": {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"existingSecret": SASL_SECRET}}},
    "hpa": {"autoscaling": {"kind": "hpa", "minReplicas": 2, "maxReplicas": 4}},
    "no-autoscaling": {"autoscaling": {"enabled": False}, "replicaCount": 3},
    "networkpolicy": {
        "networkPolicy": {"enabled": True},
        # A private CA for TLS brokers, mounted from a Secret.
        "kafka": {"securityProtocol": "SSL", "sslCaFile": "/etc/kafka-ca/ca.pem"},
        "extraVolumes": [{"name": "kafka-ca", "secret": {"secretName": "kafka-ca"}}],
        "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True}],
    },
    "bundle-volume": {
        "bundle": {"volume": {"persistentVolumeClaim": {"claimName": "bundle-v2", "readOnly": True}}},
        "serviceMonitor": {"enabled": True},
        "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None},
    },
    # Bundles from an S3 store (init container + sync sidecar, IRSA), a pinned shadow, a NetworkPolicy.
    "bundle-store": {
        "bundle": {"store": {"enabled": True, "s3Uri": STORE_URI, "path": STORE_PATH, "region": "eu-west-1",
                             "syncIntervalSeconds": 30}},
        "worker": {"bundlePollSeconds": 2.5, "shadow": {"version": "944a4eac02196e31", "share": 0.05}},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/categorizer"}},
        "networkPolicy": {"enabled": True},
    },
}
# Kinds kubernetes-validate knows; the others are checked against their own schemas below.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}


@lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


@cache
def _render(name: str) -> tuple[tuple[str, str], ...]:
    manifests = chart().render(copy.deepcopy(VALUE_SETS[name]), name=RELEASE, namespace=NAMESPACE)
    return tuple(sorted(manifests.items()))


def render(name: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of a value set (fresh copies: tests may mutate them)."""
    docs: list[dict[str, Any]] = []
    for path, text in _render(name):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in render(name) if d["kind"] == kind]


def one(name: str, kind: str) -> dict[str, Any]:
    found = objects(name, kind)
    assert len(found) == 1, f"{name}: expected one {kind}, got {len(found)}"
    return found[0]


def worker_container(name: str) -> dict[str, Any]:
    containers = one(name, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def pod_containers(name: str) -> list[dict[str, Any]]:
    """Init containers and containers of the worker pod."""
    pod = one(name, "Deployment")["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def env_by_name(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ---- lint and schema validation ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_has_no_warnings(name: str) -> None:
    report = helm.lint(CHART_DIR, copy.deepcopy(VALUE_SETS[name]), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, f"helm lint ({name}): {report}"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_manifests_validate_against_kubernetes(name: str) -> None:
    docs = render(name)
    assert docs, f"{name}: nothing rendered"
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {KUBE_VERSION}: "
                        f"{exc.message}")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_keda_objects_match_their_schema(name: str) -> None:
    for kind, schema_file in (("ScaledObject", "keda-scaledobject.schema.json"),
                              ("TriggerAuthentication", "keda-triggerauthentication.schema.json")):
        validator = jsonschema.Draft202012Validator(load_json(SCHEMAS / schema_file))
        for doc in objects(name, kind):
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            assert not errors, f"{name}: {kind} invalid: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_keda_schema_catches_non_string_trigger_metadata() -> None:
    # The classic mistake: an unquoted number in trigger metadata (KEDA wants map[string]string).
    scaled = one("defaults", "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 1000
    validator = jsonschema.Draft202012Validator(load_json(SCHEMAS / "keda-scaledobject.schema.json"))
    assert any("lagThreshold" in map(str, e.absolute_path) for e in validator.iter_errors(scaled))


@pytest.mark.parametrize("name", ["defaults", "eks", "hpa"])
def test_scaling_behavior_is_a_valid_hpa_v2_behavior(name: str) -> None:
    # KEDA copies advanced.horizontalPodAutoscalerConfig.behavior into the HPA it owns: check it
    # with the Kubernetes autoscaling/v2 schema by wrapping it in a minimal HPA.
    for doc in objects(name, "ScaledObject"):
        behavior = doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "behavior-check"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                     "maxReplicas": 2, "behavior": behavior},
        }
        kubernetes_validate.validate(hpa, KUBE_VERSION, strict=True)


def test_service_monitor_scrapes_the_metrics_port() -> None:
    monitor = one("bundle-volume", "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one("bundle-volume", "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert not objects("defaults", "ServiceMonitor"), "ServiceMonitor must be opt-in (needs the operator CRDs)"


# ---- values.schema.json rejects bad values with a message naming the key ------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"kafka": {"securityProtocol": "SASL_TLS"}}, "/kafka/securityProtocol"),
        ({"kafka": {"sasl": {"password": "hunter2"}}}, "'password' not allowed"),
        ({"kafka": {"partitions": 0}}, "/kafka/partitions"),
        ({"kafka": {"brokers": "kafka"}}, "/kafka/brokers"),
        ({"autoscaling": {"maxReplicas": "6"}}, "/autoscaling/maxReplicas"),
        ({"autoscaling": {"kind": "vpa"}}, "/autoscaling/kind"),
        ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
        ({"worker": {"extraSettings": {"LOG_LEVEL": "debug"}}}, "/worker/extraSettings"),
        ({"replicas": 3}, "'replicas' not allowed"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"bundle": {"store": {"s3Uri": "https://acme.s3.amazonaws.com/store"}}}, "/bundle/store/s3Uri"),
        ({"bundle": {"store": {"path": "models/store"}}}, "/bundle/store/path"),
        ({"worker": {"shadow": {"share": 1.5}}}, "/worker/shadow/share"),
        ({"worker": {"bundlePollSeconds": 0}}, "/worker/bundlePollSeconds"),
        ({"worker": {"shadow": {"version": "../x"}}}, "/worker/shadow/version"),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmValuesError) as excinfo:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    assert expected in str(excinfo.value), str(excinfo.value)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_value_sets_pass_the_schema(name: str) -> None:
    chart().validate_schema(copy.deepcopy(VALUE_SETS[name]))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"autoscaling": {"maxReplicas": 12}}, "autoscaling.maxReplicas (12) exceeds kafka.partitions (6)"),
        ({"kafka": {"partitions": 3}, "autoscaling": {"kind": "hpa"}}, "exceeds kafka.partitions (3)"),
        ({"autoscaling": {"enabled": False}, "replicaCount": 7}, "replicaCount (7) exceeds kafka.partitions (6)"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}, "minReplicas (5) is greater than"),
        ({"autoscaling": {"kind": "hpa", "minReplicas": 0}}, "only KEDA can scale to zero"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "set kafka.sasl.existingSecret"),
        ({"worker": {"extraSettings": {"STREAM_SASL_PASSWORD": "x"}}}, "looks like a credential"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "only one of minAvailable and maxUnavailable"),
        ({"bundle": {"store": {"enabled": True}}}, "bundle.store.enabled needs bundle.store.s3Uri"),
        ({"bundle": {"store": {"enabled": True, "s3Uri": STORE_URI},
                     "volume": {"persistentVolumeClaim": {"claimName": "b"}}}}, "are exclusive"),
        ({"bundle": {"store": {"enabled": True, "s3Uri": STORE_URI, "path": "/tmp/store"}}}, "must not be under /tmp"),
        ({"worker": {"shadow": {"version": "944a4eac02196e31"}}}, "set bundle.store.enabled"),
        ({"worker": {"shadow": {"topic": "drift"}}}, "must differ from the kafka.topics"),
    ],
)
def test_render_fails_on_inconsistent_values(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmRenderError) as excinfo:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    assert expected in str(excinfo.value), str(excinfo.value)


# ---- the Deployment ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pod_is_hardened(name: str) -> None:
    pod = one(name, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod_containers(name):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc.get("privileged") is not True
    # Writable /tmp (STREAM_DATA_DIR lives there) on an emptyDir, since the root fs is read-only.
    tmp_volume = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp_volume
    mounts = {m["mountPath"]: m for m in worker_container(name)["volumeMounts"]}
    assert mounts["/tmp"]["name"] == "tmp"
    settings = one(name, "ConfigMap")["data"]
    assert settings["STREAM_DATA_DIR"].startswith("/tmp/")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_probes_and_port(name: str) -> None:
    container = worker_container(name)
    assert container["ports"] == [{"name": "http", "containerPort": 6066, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The startup probe must leave time to load the bundle before liveness can kill the pod.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert one(name, "ConfigMap")["data"]["STREAM_WEB_PORT"] == "6066"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_resources_are_bounded(name: str) -> None:
    resources = worker_container(name)["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_worker_runs_the_worker_command_from_the_configured_image() -> None:
    container = worker_container("defaults")
    assert container["args"] == ["worker"]
    assert container["image"] == f"product-categorizer:{chart().metadata['appVersion']}"
    assert container["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    digest = "sha256:" + "a" * 64
    rendered = chart().render({"image": {"digest": digest}}, name=RELEASE, namespace=NAMESPACE)
    assert f"product-categorizer@{digest}" in rendered["product-categorizer/templates/deployment.yaml"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_topology_spread_across_zones(name: str) -> None:
    pod_template = one(name, "Deployment")["spec"]["template"]
    constraints = pod_template["spec"]["topologySpreadConstraints"]
    zone = next(c for c in constraints if c["topologyKey"] == "topology.kubernetes.io/zone")
    assert zone["labelSelector"]["matchLabels"].items() <= pod_template["metadata"]["labels"].items()


def test_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE)
        text = rendered["product-categorizer/templates/deployment.yaml"]
        return re.search(r"checksum/config: (\w+)", text).group(1)

    assert checksum({}) != checksum({"worker": {"batchSize": 64}})
    assert checksum({}) == checksum({"podLabels": {"team": "ml"}})


def test_private_ca_is_mounted_where_the_settings_point() -> None:
    ca_file = one("networkpolicy", "ConfigMap")["data"]["STREAM_SSL_CAFILE"]
    mounts = worker_container("networkpolicy")["volumeMounts"]
    assert any(ca_file.startswith(m["mountPath"] + "/") and m["name"] == "kafka-ca" for m in mounts)
    (trigger,) = one("networkpolicy", "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["tls"] == "enable"


def test_bundle_volume_is_mounted_read_only_at_the_bundle_path() -> None:
    pod = one("bundle-volume", "Deployment")["spec"]["template"]["spec"]
    assert {"name": "bundle", "persistentVolumeClaim": {"claimName": "bundle-v2", "readOnly": True}} in pod["volumes"]
    mount = next(m for m in worker_container("bundle-volume")["volumeMounts"] if m["name"] == "bundle")
    assert mount["readOnly"] is True
    assert mount["mountPath"] == one("bundle-volume", "ConfigMap")["data"]["STREAM_BUNDLE_PATH"] == "/models/default"
    assert all(v["name"] != "bundle" for v in one("defaults", "Deployment")["spec"]["template"]["spec"]["volumes"])


# ---- settings and secrets ---------------------------------------------------------------------


# Set only when the bundle store is enabled (the settings refuse a shadow version without a store).
STORE_ONLY_SETTINGS = {"STREAM_BUNDLE_STORE", "STREAM_SHADOW_VERSION"}


@pytest.mark.parametrize("name", ["defaults", "bundle-store"])
def test_configmap_holds_every_setting_as_a_string(name: str, tmp_path: Any) -> None:
    from stream_app.settings import ENV_PREFIX, Settings, load_settings

    data = one(name, "ConfigMap")["data"]
    # Credentials come from the Secret, the CA file only with TLS, the worker id from the pod name.
    elsewhere = {"STREAM_SASL_USERNAME", "STREAM_SASL_PASSWORD", "STREAM_SSL_CAFILE", "STREAM_WORKER_ID"}
    every = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    assert elsewhere | STORE_ONLY_SETTINGS <= every, "the exclusions name settings that no longer exist"
    store = name == "bundle-store"
    expected = every - elsewhere - (set() if store else STORE_ONLY_SETTINGS)
    assert expected <= data.keys(), f"missing: {sorted(expected - data.keys())}"
    if not store:
        assert not STORE_ONLY_SETTINGS & data.keys(), "store settings rendered without the store"
    assert not elsewhere & data.keys()
    assert all(isinstance(v, str) for v in data.values())
    # Helm keeps numbers as float64: without int64 these would render as 1e+06 and break the settings.
    assert data["STREAM_MAX_MESSAGE_BYTES"] == "1000000" and data["STREAM_MAX_OUTPUT_BYTES"] == "1048576"
    assert float(data["STREAM_DRIFT_ALPHA"]) == pytest.approx(1e-6)
    overrides = {k[len(ENV_PREFIX):].lower(): v for k, v in data.items()}
    if store:
        assert data["STREAM_BUNDLE_STORE"] == STORE_PATH
        overrides["bundle_store"] = str(tmp_path)  # the settings check that the directory exists
    settings = load_settings(**overrides)
    assert settings.max_bytes_in_flight == 32 * 1_048_576
    if store:
        assert settings.bundle_poll_seconds == 2.5 and settings.shadow_share == pytest.approx(0.05)
        assert settings.shadow_version == "944a4eac02196e31" and settings.shadow_topic == "shadow"
        assert settings.shadow_topic in settings.topic_partitions()
    else:
        assert settings.bundle_store is None and settings.shadow_version is None


def test_worker_id_is_the_pod_name() -> None:
    env = {e["name"]: e for e in worker_container("defaults")["env"]}
    assert env["STREAM_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_configmap_renders_extra_settings() -> None:
    values = {"worker": {"extraSettings": {"STREAM_SOME_FLAG": True, "STREAM_RATIO": 0.5}}}
    rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE)["product-categorizer/templates/configmap.yaml"]
    data = yaml.safe_load(rendered)["data"]
    assert data["STREAM_SOME_FLAG"] == "true" and data["STREAM_RATIO"] == "0.5"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_no_credentials_in_configmaps(name: str) -> None:
    credential_key = re.compile(r"PASSWORD|SECRET|TOKEN|USERNAME", re.IGNORECASE)
    for config_map in objects(name, "ConfigMap"):
        leaked = [k for k in config_map.get("data", {}) if credential_key.search(k)]
        assert not leaked, f"{name}: credential-like keys in ConfigMap {config_map['metadata']['name']}: {leaked}"
    assert not objects(name, "Secret"), "the chart must not create Secrets: credentials come from an existing one"


@pytest.mark.parametrize("name", ["keda-sasl", "eks"])
def test_sasl_credentials_come_only_from_the_existing_secret(name: str) -> None:
    values = chart().merge_values(copy.deepcopy(VALUE_SETS[name]))
    sasl = values["kafka"]["sasl"]
    env = env_by_name(worker_container(name))
    for var, key in (("STREAM_SASL_USERNAME", sasl["usernameKey"]), ("STREAM_SASL_PASSWORD", sasl["passwordKey"])):
        assert "value" not in env[var], f"{var} must not be a plain value"
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": sasl["existingSecret"], "key": key}
    # KEDA's scaler authenticates with the very same Secret.
    scaled = one(name, "ScaledObject")
    auth = one(name, "TriggerAuthentication")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert refs["username"] == {"parameter": "username", "name": sasl["existingSecret"], "key": sasl["usernameKey"]}
    assert refs["password"] == {"parameter": "password", "name": sasl["existingSecret"], "key": sasl["passwordKey"]}
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"


def test_plaintext_has_no_sasl_wiring() -> None:
    env = env_by_name(worker_container("defaults"))
    assert "STREAM_SASL_USERNAME" not in env and "STREAM_SASL_PASSWORD" not in env
    assert not objects("defaults", "TriggerAuthentication")
    (trigger,) = one("defaults", "ScaledObject")["spec"]["triggers"]
    assert "authenticationRef" not in trigger and "sasl" not in trigger["metadata"]


# ---- ServiceAccount, PDB, Service -------------------------------------------------------------


def test_service_account_for_irsa() -> None:
    account = one("eks", "ServiceAccount")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role), role
    assert account["automountServiceAccountToken"] is False
    pod = one("eks", "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert "annotations" not in one("defaults", "ServiceAccount")["metadata"]


# ---- bundle store on S3 (init container + sync sidecar) -----------------------------------------


def sync_containers(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(name, "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "bundle-sync")
    return init, sidecar


def test_bundle_store_is_opt_in() -> None:
    pod = one("defaults", "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod and [c["name"] for c in pod["containers"]] == ["worker"]
    assert all(not v["name"].startswith("bundle") for v in pod["volumes"])


@pytest.mark.parametrize("name", ["bundle-store", "eks"])
def test_bundle_store_is_synced_by_an_init_container_and_a_sidecar(name: str) -> None:
    values = chart().merge_values(copy.deepcopy(VALUE_SETS[name]))
    store = values["bundle"]["store"]
    assert store["enabled"]
    init, sidecar = sync_containers(name)
    assert (init["name"], sidecar["name"]) == ("bundle-init", "bundle-sync")
    image = f"{store['image']['repository']}:{store['image']['tag']}"
    for container, mode in ((init, "once"), (sidecar, "loop")):
        assert container["image"] == image
        assert container["command"][:2] == ["/bin/sh", "-c"] and container["command"][3:] == ["bundle-sync", mode]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["BUNDLE_S3_URI"] == store["s3Uri"] and env["BUNDLE_STORE"] == store["path"]
        assert env["BUNDLE_SYNC_INTERVAL_SECONDS"] == str(store["syncIntervalSeconds"])
        assert env["AWS_REGION"] == store["region"]
        # IRSA only (no fallback to the node role); the CLI's cache on the writable /tmp.
        assert env["AWS_EC2_METADATA_DISABLED"] == "true" and env["HOME"] == "/tmp"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[store["path"]]["name"] == "bundle-store" and not mounts[store["path"]].get("readOnly")
        assert mounts["/tmp"]["name"] == "bundle-sync-tmp"
        assert container["resources"] == store["resources"]
    assert init["command"][2] == sidecar["command"][2], "one script for both"
    # The worker reads the same volume, read-only, where STREAM_BUNDLE_STORE points.
    mount = next(m for m in worker_container(name)["volumeMounts"] if m["name"] == "bundle-store")
    assert mount["readOnly"] is True
    assert mount["mountPath"] == store["path"] == one(name, "ConfigMap")["data"]["STREAM_BUNDLE_STORE"]
    volumes = {v["name"]: v for v in one(name, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bundle-store"]["emptyDir"] == {"sizeLimit": store["sizeLimit"]}
    assert "emptyDir" in volumes["bundle-sync-tmp"]
    assert "bundle" not in volumes, "the store replaces bundle.volume"


def test_bundle_store_path_is_the_configured_one() -> None:
    assert one("bundle-store", "ConfigMap")["data"]["STREAM_BUNDLE_STORE"] == STORE_PATH
    init, _ = sync_containers("bundle-store")
    assert {m["mountPath"] for m in init["volumeMounts"]} == {STORE_PATH, "/tmp"}
    assert {m["mountPath"] for m in worker_container("bundle-store")["volumeMounts"]} == {STORE_PATH, "/tmp"}


def test_bundle_sync_writes_versions_before_pointers() -> None:
    _, sidecar = sync_containers("bundle-store")
    script = sidecar["command"][2]
    assert script == (CHART_DIR / "files" / "bundle-sync.sh").read_text(encoding="utf-8")
    body = script[script.index("sync_once() {"):]
    body = body[:body.index("\n}\n")].replace("\\\n", " ")  # join continued lines
    steps = [line.strip() for line in body.splitlines() if line.strip().startswith(("aws s3 sync", "publish "))]
    pointers, versions, serving, shadow = steps
    # 1. the pointers are read first, into a hidden staging folder, never straight into the store;
    assert '"$stage/pointers/"' in pointers and "--include serving.json --include shadow.json" in pointers
    assert "--exact-timestamps" in pointers  # same-size rewrites of a pointer are fetched too
    # 2. then the versions, without the pointers;
    assert '"$store/"' in versions and "--exclude serving.json --exclude shadow.json" in versions
    assert "--delete" not in versions
    # 3. then the pointers are published (serving first), each only when its version is complete.
    assert serving.startswith("publish serving.json") and shadow.startswith("publish shadow.json")
    publish = script[script.index("publish() {"):script.index("sync_once() {")]
    assert publish.index('complete "$v"') < publish.index("mv -f")
    assert "sha256sum -c" in script[script.index("complete() {"):script.index("publish() {")]
    # The sidecar stops at once on SIGTERM instead of waiting out the grace period.
    assert "trap " in script and 'sleep "$interval" & wait $!' in script


def test_bundle_store_needs_https_egress_with_a_network_policy() -> None:
    egress = one("bundle-store", "NetworkPolicy")["spec"]["egress"]
    https = [rule for rule in egress if {"port": 443, "protocol": "TCP"} in rule["ports"]]
    assert https and https[0]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    worker_egress = one("networkpolicy", "NetworkPolicy")["spec"]["egress"]
    assert not any({"port": 443, "protocol": "TCP"} in rule["ports"] for rule in worker_egress)


@pytest.mark.parametrize("name", ["bundle-store", "eks"])
def test_bundle_store_uses_irsa(name: str) -> None:
    account = one(name, "ServiceAccount")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role), role
    pod = one(name, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    # No static AWS credentials anywhere in the pod.
    for container in pod_containers(name):
        names = {e["name"] for e in container.get("env", [])}
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def test_shadow_settings_roll_the_pods() -> None:
    # Promotion is a pointer in S3, outside the chart; the shadow and sync settings are in the
    # ConfigMap (checksum) or the pod template, so changing them rolls the pods.
    base = copy.deepcopy(VALUE_SETS["bundle-store"])
    text = chart().render(base, name=RELEASE, namespace=NAMESPACE)["product-categorizer/templates/deployment.yaml"]
    changed = copy.deepcopy(base)
    changed["worker"]["shadow"]["share"] = 0.2
    other = chart().render(changed, name=RELEASE, namespace=NAMESPACE)["product-categorizer/templates/deployment.yaml"]
    assert re.search(r"checksum/config: (\w+)", text).group(1) != re.search(r"checksum/config: (\w+)", other).group(1)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pdb_selects_the_worker_pods(name: str) -> None:
    pdb = one(name, "PodDisruptionBudget")
    pod_labels = one(name, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert ("maxUnavailable" in pdb["spec"]) != ("minAvailable" in pdb["spec"])


def test_metrics_service_targets_the_named_port() -> None:
    service = one("defaults", "Service")
    assert service["spec"]["ports"] == [{"name": "http", "port": 6066, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = one("defaults", "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


# ---- autoscaling ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "eks", "keda-sasl"])
def test_scaled_object_scales_the_deployment_on_consumer_lag(name: str) -> None:
    values = chart().merge_values(copy.deepcopy(VALUE_SETS[name]))
    scaled = one(name, "ScaledObject")
    spec = scaled["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert metadata["bootstrapServers"] == values["kafka"]["brokers"]
    assert metadata["consumerGroup"] == values["kafka"]["groupId"] == one(name, "ConfigMap")["data"]["STREAM_GROUP_ID"]
    assert metadata["topic"] == values["kafka"]["topics"]["input"]
    assert metadata["lagThreshold"] == str(values["autoscaling"]["keda"]["lagThreshold"])
    assert metadata["activationLagThreshold"] == str(values["autoscaling"]["keda"]["activationLagThreshold"])
    assert metadata["allowIdleConsumers"] == "false"
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= values["kafka"]["partitions"]
    # The HPA owns the replica count: the Deployment must not fight it on every upgrade.
    assert "replicas" not in one(name, "Deployment")["spec"]
    assert not objects(name, "HorizontalPodAutoscaler"), "KEDA creates its own HPA"


@pytest.mark.parametrize("name", ["defaults", "eks", "hpa"])
def test_scale_down_is_slower_than_scale_up(name: str) -> None:
    if objects(name, "ScaledObject"):
        behavior = one(name, "ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    else:
        behavior = one(name, "HorizontalPodAutoscaler")["spec"]["behavior"]
    down, up = behavior["scaleDown"], behavior["scaleUp"]
    # Every scale event is a rebalance that redelivers in-flight messages: remove pods rarely.
    assert down["stabilizationWindowSeconds"] >= 300
    assert down["stabilizationWindowSeconds"] > up.get("stabilizationWindowSeconds", 0)
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])
    assert min(p["periodSeconds"] for p in down["policies"]) >= 120


def test_max_replicas_is_capped_by_partitions_in_the_template() -> None:
    for values in ({"kafka": {"partitions": 4}, "autoscaling": {"maxReplicas": 4}},
                   {"kafka": {"partitions": 12}, "autoscaling": {"maxReplicas": 9}}):
        rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE)
        text = rendered["product-categorizer/templates/scaledobject.yaml"]
        assert yaml.safe_load(text)["spec"]["maxReplicaCount"] == values["autoscaling"]["maxReplicas"]
    template = next(t["data"] for t in chart().templates if t["name"].endswith("scaledobject.yaml"))
    assert "min (int .Values.autoscaling.maxReplicas) (int .Values.kafka.partitions)" in template


def test_hpa_on_cpu_when_keda_is_off() -> None:
    hpa = one("hpa", "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == FULLNAME
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 4
    assert not objects("hpa", "ScaledObject") and not objects("hpa", "TriggerAuthentication")
    assert "replicas" not in one("hpa", "Deployment")["spec"]


def test_fixed_replicas_without_autoscaling() -> None:
    assert one("no-autoscaling", "Deployment")["spec"]["replicas"] == 3
    for kind in ("ScaledObject", "HorizontalPodAutoscaler", "TriggerAuthentication"):
        assert not objects("no-autoscaling", kind)


# ---- NetworkPolicy ----------------------------------------------------------------------------


def test_network_policy_is_opt_in_and_narrow() -> None:
    assert not objects("defaults", "NetworkPolicy")
    policy = one("networkpolicy", "NetworkPolicy")
    pod_labels = one("networkpolicy", "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {9092, 9096, 53} <= egress_ports
    eks = one("eks", "NetworkPolicy")
    assert {p["port"] for p in eks["spec"]["egress"][0]["ports"]} == {9096}


# ---- values-eks.yaml and the README -----------------------------------------------------------


def test_eks_example_uses_ecr_msk_scram_tls() -> None:
    values = VALUE_SETS["eks"]
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/product-categorizer",
                        values["image"]["repository"])
    brokers = values["kafka"]["brokers"].split(",")
    assert len(brokers) >= 2 and all(b.endswith(":9096") and ".kafka." in b for b in brokers)
    assert values["kafka"]["securityProtocol"] == "SASL_SSL"
    assert values["kafka"]["saslMechanism"] == "SCRAM-SHA-512"
    assert worker_container("eks")["image"].startswith(values["image"]["repository"] + ":")
    assert one("eks", "ScaledObject")["spec"]["maxReplicaCount"] == values["kafka"]["partitions"]


def test_readme_documents_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    keys = set(flatten_keys(load_yaml(CHART_DIR / "values.yaml")))
    assert not keys - documented, (f"values not documented in helm/product-categorizer/README.md: "
                                   f"{sorted(keys - documented)}")
    assert not documented - keys, f"README documents values that do not exist: {sorted(documented - keys)}"


def test_schema_covers_every_value() -> None:
    schema = load_json(CHART_DIR / "values.schema.json")

    def walk(tree: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in tree.items():
            props = node.get("properties", {})
            assert key in props, f"values.schema.json has no entry for {path}{key}"
            if isinstance(value, dict) and props[key].get("properties"):
                walk(value, props[key], f"{path}{key}.")

    walk(load_yaml(CHART_DIR / "values.yaml"), schema, "")
    assert schema["additionalProperties"] is False
