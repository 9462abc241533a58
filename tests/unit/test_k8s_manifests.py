"""deploy/k8s: valid against the Kubernetes API schemas, and true to the architecture.

No cluster and no kustomize binary are needed. The kustomization uses only ``resources``, a
``namespace`` and env-file ConfigMap generators, so it is rendered here (and a kustomization
using anything more fails the render rather than being half understood). Every object is
validated with the schemas kubernetes-validate bundles. Each invariant is a ``check_*``
function; ``test_a_broken_manifest_fails_its_check`` feeds each one a deliberately broken copy,
so none of them can pass by accident.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from services.auth.settings import Settings as AuthSettings
from services.gateway.assets import STATIC_PREFIX
from services.gateway.domain import ROUTE_TABLE
from services.gateway.settings import GatewaySettings
from services.orders.settings import OrdersSettings
from shared.core import SettingsError

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# The oldest Kubernetes the manifests are for (the preStop sleep action is on by default from
# 1.30) and the newest whose schemas kubernetes-validate bundles.
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")
RENDERED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
SETTINGS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "auth": AuthSettings.from_env,
    "orders": OrdersSettings.from_env,
    "gateway": GatewaySettings.from_env,
}
# Secrets only auth may hold: the private signing keys, the cookie signing secret and Redis's password.
AUTH_ONLY_SECRETS = {"auth-signing-keys", "auth-session-secret", "redis-auth"}
PROBE_HIDDEN_PATHS = ("/healthz", "/readyz", "/metrics")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a pod's own address; the Service and the policies guard it


def read_env_file(path: Path) -> dict[str, str]:
    """An env file as kustomize reads it: ``KEY=VALUE`` lines; blank lines and ``#`` comments skipped."""
    data: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        assert separator, f"{path.name}: {line!r} is not KEY=VALUE"
        assert key not in data, f"{path.name}: {key} is set twice"
        data[key] = value
    return data


def load_kustomization() -> Obj:
    document: Obj = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return document


def render(kustomization: Obj) -> list[Obj]:
    """What ``kustomize build`` makes of the base, less the ConfigMaps' hash suffixes."""
    unknown = set(kustomization) - RENDERED_FIELDS
    assert not unknown, f"this test renders only {sorted(RENDERED_FIELDS)}; kustomization.yaml has {unknown}"
    objects: list[Obj] = []
    for name in kustomization["resources"]:
        objects += [document for document in yaml.safe_load_all((BASE / name).read_text()) if document]
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "envs"}, f"generator {generator} uses more than env files"
        data: dict[str, str] = {}
        for env_file in generator["envs"]:
            data |= read_env_file(BASE / env_file)
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    for obj in objects:
        if obj["kind"] != "Namespace":
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def load_redis_values() -> Obj:
    values: Obj = yaml.safe_load((K8S / "redis-values.yaml").read_text())
    return values


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """Every workload with the pod spec it runs."""
    for obj in objects:
        if obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] in WORKLOADS:
            yield obj, obj["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (``matchLabels`` and ``matchExpressions``) against a set of labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def secret_names(spec: Obj) -> set[str]:
    """The Secrets a pod can read: volumes (also projected) and environment references."""
    names = set()
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
        names |= {
            v["valueFrom"]["secretKeyRef"]["name"]
            for v in container.get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})
        }
    return names


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every variable asked for, present or not."""

    def __init__(self, data: Mapping[str, str]):
        super().__init__(data)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


_REFERENCE = re.compile(r"\$\((\w+)\)")


def container_env(
    objects: list[Obj], spec: Obj, container: Obj, files: Path
) -> tuple[dict[str, str], set[str]]:
    """The container's environment as the kubelet builds it, and the names only used inside ``$(...)``.

    Secret values are random stand-ins; files in mounted Secret volumes are created under ``files``
    and paths into those mounts rewritten to point there.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "only ConfigMaps are loaded whole; name each secret variable"
        env |= named(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    referenced: set[str] = set()
    for variable in container.get("env", []):
        if "value" in variable:
            for name in _REFERENCE.findall(variable["value"]):
                assert name in env, f"{variable['name']} refers to $({name}), which is not defined before it"
                referenced.add(name)
            env[variable["name"]] = _REFERENCE.sub(lambda m: env[m.group(1)], variable["value"])
        else:
            assert "secretKeyRef" in variable["valueFrom"], f"{variable['name']}: only secrets come from refs"
            env[variable["name"]] = secrets.token_hex(16)
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        local = files / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for item in secret.get("items", []):
            (local / item["path"]).write_text(secrets.token_urlsafe(48))
        prefix = mount["mountPath"].rstrip("/")
        for name, value in env.items():
            if value == prefix or value.startswith(prefix + "/"):
                env[name] = str(local) + value[len(prefix) :]
    return env, referenced


def load_settings(objects: list[Obj], workload: Obj, files: Path) -> tuple[Any, Obj]:
    """The service's own settings class built from the Deployment's environment; the container."""
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["name"] in SETTINGS, f"no settings known for container {container['name']}"
    env, referenced = container_env(objects, spec, container, files / workload["metadata"]["name"])
    environ = RecordingEnviron(env)
    settings = SETTINGS[container["name"]](environ)
    unread = set(env) - environ.read - referenced
    assert not unread, (
        f"{container['name']} never reads {sorted(unread)}: misspelt, or meant for another service?"
    )
    return settings, container


def container_port(container: Obj, name: str = "http") -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def check_kustomization_lists_every_file(kustomization: Obj, folder: Path) -> None:
    listed = set(kustomization["resources"])
    listed_env = {name for g in kustomization.get("configMapGenerator", []) for name in g["envs"]}
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    present_env = {p.name for p in folder.glob("*.env")}
    assert listed == present, f"resources {sorted(listed)} but the folder has {sorted(present)}"
    assert listed_env == present_env, (
        f"env files {sorted(listed_env)} but the folder has {sorted(present_env)}"
    )
    assert not set(p.name for p in folder.iterdir()) - present - present_env - {"kustomization.yaml"}


def check_containers_are_locked_down(objects: list[Obj]) -> None:
    specs = list(pod_specs(objects))
    assert specs
    for workload, spec in specs:
        where = workload["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False, f"{where}: no service needs an API token"
        assert spec.get("enableServiceLinks") is False, f"{where}: service links set <NAME>_PORT=tcp://..."
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, f"{where}: pod may run as root"
        assert pod.get("runAsUser", 0) != 0, f"{where}: pod runs as root"
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod without seccomp"
        mounts_tmp = True
        for container in spec["containers"]:
            name = f"{where}/{container['name']}"
            assert container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", name
            assert container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", name
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{name}: requests cpu and memory"
            assert "memory" in resources.get("limits", {}), f"{name}: no memory limit"
            context = container.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, f"{name}: may run as root"
            assert context.get("allowPrivilegeEscalation") is False, f"{name}: may escalate privileges"
            assert context.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem writable"
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: keeps capabilities"
            assert not context.get("capabilities", {}).get("add"), f"{name}: adds capabilities"
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: no seccomp"
            assert not context.get("privileged"), f"{name}: privileged"
            mounts_tmp &= any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", []))
        assert mounts_tmp, f"{where}: a read-only root needs a writable /tmp"


def check_auth_secrets_stay_in_auth(objects: list[Obj]) -> None:
    assert not of_kind(objects, "Secret"), "secrets are created in the cluster, never committed"
    holders = {
        name: [w["metadata"]["name"] for w, spec in pod_specs(objects) if name in secret_names(spec)]
        for name in AUTH_ONLY_SECRETS
    }
    assert holders == {name: ["auth"] for name in AUTH_ONLY_SECRETS}, holders
    spec = named(objects, "Deployment", "auth")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    for mount in container["volumeMounts"]:
        if "secret" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, f"auth mounts secret volume {mount['name']} writable"
            assert "subPath" not in mount, "a subPath mount never sees a rotated Secret"
    (keys_volume,) = [
        v["name"] for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "auth-signing-keys"
    ]
    (keys_path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == keys_volume]
    configured = named(objects, "ConfigMap", "auth-config")["data"]
    assert configured["AUTH_KEYS_DIR"] == keys_path, "auth looks for its keys where the Secret is not"
    assert configured["SESSION_SECRET_FILE"].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "session-secret") + "/"
    )


def check_settings_accept_the_configuration(objects: list[Obj], files: Path) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    assert set(deployments) == set(SETTINGS), f"deployments {sorted(deployments)}"
    loaded = {}
    for name, deployment in deployments.items():
        settings, container = load_settings(objects, deployment, files)
        assert settings.host == ALL_INTERFACES, f"{name} listens on {settings.host} only"
        assert settings.port == container_port(container), f"{name} listens on {settings.port}"
        loaded[name] = settings
    auth, orders, gateway = loaded["auth"], loaded["orders"], loaded["gateway"]
    assert auth.environment == "production", "the cluster would seed demo users"
    assert auth.cookie_secure
    assert auth.issuer == orders.verifier.issuer == gateway.verifier.issuer, "verifiers expect another iss"
    assert auth.public_origin == auth.issuer
    assert auth.public_origin.startswith("https://")
    ingresses = of_kind(objects, "Ingress")
    hosts = {rule["host"] for ingress in ingresses for rule in ingress["spec"]["rules"]}
    tls_hosts = {host for ingress in ingresses for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    assert hosts == tls_hosts == {urlsplit(auth.public_origin).hostname}, (
        "Ingress host is not PUBLIC_ORIGIN's"
    )
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for url, target in (
        *((url, name) for name, urls in gateway.upstream_urls().items() for url in urls),
        *((url, "auth") for url in gateway.verifier.jwks.urls),
        *((url, "auth") for url in orders.verifier.jwks.urls),
    ):
        parts = urlsplit(url)
        assert parts.hostname == target, f"{url} is not the {target} Service"
        assert parts.port in {p["port"] for p in services[target]["spec"]["ports"]}, (
            f"{url}: not a Service port"
        )


def dockerfile_targets() -> dict[str, set[int]]:
    """Each build target of deploy/Dockerfile with the ports it exposes."""
    targets: dict[str, set[int]] = {}
    current = None
    for line in DOCKERFILE.read_text().splitlines():
        stage = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if stage:
            current = targets.setdefault(stage.group(1), set())
        exposed = re.match(r"EXPOSE\s+(\d+)", line)
        if exposed and current is not None:
            current.add(int(exposed.group(1)))
    return targets


def check_images_and_services_agree(objects: list[Obj]) -> None:
    targets = dockerfile_targets()
    for deployment in of_kind(objects, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        image = re.fullmatch(r"hybrid-auth/([a-z]+):[\w.-]+", container["image"])
        assert image, f"{container['image']} is not hybrid-auth/<target>:<tag>"
        assert image.group(1) == container["name"] == deployment["metadata"]["name"], container["image"]
        assert container_port(container) in targets.get(image.group(1), set()), (
            f"{image.group(1)}: other port"
        )
    for service in of_kind(objects, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "only the Ingress is a way in"
        selector = {"matchLabels": service["spec"]["selector"]}
        backends = [d for d in of_kind(objects, "Deployment") if matches(selector, pod_labels(d))]
        assert len(backends) == 1, (
            f"Service {service['metadata']['name']} selects {len(backends)} deployments"
        )
        (container,) = backends[0]["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in {p["name"] for p in container["ports"]}, port
            assert port["port"] == container_port(container, port["targetPort"]), port


def ingress_paths(objects: list[Obj]) -> Iterator[Obj]:
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            yield from rule["http"]["paths"]


def path_matches(entry: Obj, path: str) -> bool:
    """Ingress matching: ``Exact``, or ``Prefix`` by whole segments (``/auth`` is not ``/authx``)."""
    if entry["pathType"] == "Exact":
        return bool(path == entry["path"])
    prefix = entry["path"].rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def ingress_serves(objects: list[Obj], path: str) -> set[str]:
    """The Services that requests for ``path`` reach through any Ingress."""
    return {e["backend"]["service"]["name"] for e in ingress_paths(objects) if path_matches(e, path)}


def check_only_the_gateway_is_exposed(objects: list[Obj]) -> None:
    ingresses = of_kind(objects, "Ingress")
    assert ingresses, "no Ingress"
    assert not [i for i in ingresses if "defaultBackend" in i["spec"]], "a default backend catches every path"
    backends = {entry["backend"]["service"]["name"] for entry in ingress_paths(objects)}
    assert backends == {"gateway"}, f"the Ingress reaches {sorted(backends)}"
    gateway_ports = named(objects, "Service", "gateway")["spec"]["ports"]
    for entry in ingress_paths(objects):
        port = entry["backend"]["service"]["port"]
        assert any(port in ({"name": p["name"]}, {"number": p["port"]}) for p in gateway_ports), port
    public = ["/", STATIC_PREFIX + "app.js", "/openapi.json"]
    public += [path for route in ROUTE_TABLE for path in (route.prefix, route.prefix + "/x")]
    for path in public:
        assert ingress_serves(objects, path) == {"gateway"}, f"{path} is not routed to the gateway"
    for path in PROBE_HIDDEN_PATHS:
        assert not ingress_serves(objects, path), f"{path} is reachable from outside"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]


NAMESPACE = "hybrid-auth"
# Pods the manifests do not define: Redis from the chart (its standard labels, release "redis"),
# the ingress controller, cluster DNS, a stray pod in the namespace and one elsewhere.
OTHER_PODS = (
    Pod("redis", NAMESPACE, {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}),
    Pod("stray", NAMESPACE, {"app": "debug"}),
    Pod("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}),
    Pod("elsewhere", "default", {"app": "other"}),
)
PROBED_PORTS = (*(("TCP", port) for port in (8000, 8001, 8002, 6379, 26379, 53, 443)), ("UDP", 53))
ARCHITECTURE = {
    ("ingress-controller", "gateway", "TCP", 8000),
    ("gateway", "auth", "TCP", 8001),
    ("gateway", "orders", "TCP", 8002),
    ("orders", "auth", "TCP", 8001),
    ("auth", "redis", "TCP", 6379),
    ("auth", "redis", "TCP", 26379),
    ("redis", "redis", "TCP", 6379),
    ("redis", "redis", "TCP", 26379),
} | {
    (pod, "kube-dns", protocol, 53)
    for pod in ("auth", "orders", "gateway", "redis", "stray")
    for protocol in ("UDP", "TCP")
}


def _peer_matches(peer: Obj, policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return True  # pod addresses fall inside address blocks too: count it as reaching everything
    namespace_ok = (
        matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod.namespace})
        if "namespaceSelector" in peer
        else pod.namespace == policy_namespace
    )
    return namespace_ok and matches(peer.get("podSelector", {}), pod.labels)


def _port_matches(rule: Obj, protocol: str, port: int) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        assert isinstance(entry.get("port", 0), int), "name ports by number in policies"
        if entry.get("protocol", "TCP") == protocol and (
            "port" not in entry or entry["port"] <= port <= entry.get("endPort", entry["port"])
        ):
            return True
    return False


def _allowed_by(policies: list[Obj], pod: Pod, direction: str, peer: Pod, protocol: str, port: int) -> bool:
    """Whether the policies of ``pod``'s namespace let ``peer`` traffic in (or out) of it."""
    selecting = []
    for policy in policies:
        spec = policy["spec"]
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        applies = policy["metadata"]["namespace"] == pod.namespace and direction in types
        if applies and matches(spec["podSelector"], pod.labels):
            selecting.append(policy)
    if not selecting:
        return True
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        _port_matches(rule, protocol, port)
        and (not rule.get(peers) or any(_peer_matches(p, pod.namespace, peer) for p in rule[peers]))
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def modelled_pods(objects: list[Obj]) -> list[Pod]:
    ours = [Pod(d["metadata"]["name"], NAMESPACE, pod_labels(d)) for d in of_kind(objects, "Deployment")]
    return ours + list(OTHER_PODS)


def admitted_by_redis(objects: list[Obj]) -> set[str]:
    """The pods Redis's own policies let in, whatever the senders' policies say."""
    policies = of_kind(objects, "NetworkPolicy")
    (redis,) = [pod for pod in OTHER_PODS if pod.name == "redis"]
    return {
        source.name
        for source in modelled_pods(objects)
        for protocol, port in PROBED_PORTS
        if _allowed_by(policies, redis, "Ingress", source, protocol, port)
    }


def reachable(objects: list[Obj]) -> set[tuple[str, str, str, int]]:
    """Each (source, destination, protocol, port) the policies allow, for pairs touching the namespace."""
    policies = of_kind(objects, "NetworkPolicy")
    pods = modelled_pods(objects)
    return {
        (source.name, target.name, protocol, port)
        for source in pods
        for target in pods
        if NAMESPACE in (source.namespace, target.namespace)
        for protocol, port in PROBED_PORTS
        if _allowed_by(policies, source, "Egress", target, protocol, port)
        and _allowed_by(policies, target, "Ingress", source, protocol, port)
    }


def check_network_policies_are_the_architecture(objects: list[Obj]) -> None:
    default_deny = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert default_deny, "no default-deny policy for ingress and egress"
    # Each end guards itself: Redis admits auth even if another pod's egress policy is opened.
    admitted = admitted_by_redis(objects)
    assert admitted == {"auth", "redis"}, f"redis admits {sorted(admitted)}"
    allowed = reachable(objects)
    assert allowed == ARCHITECTURE, (
        f"allowed beyond the architecture: {sorted(allowed - ARCHITECTURE)}; "
        f"blocked although needed: {sorted(ARCHITECTURE - allowed)}"
    )


def check_redis_chart_matches_auth(objects: list[Obj], values: Obj, files: Path) -> None:
    assert values["architecture"] == "replication"
    assert values["sentinel"]["enabled"] is True
    assert values["networkPolicy"]["enabled"] is False, "the chart's policy would admit more than auth"
    assert values["auth"]["enabled"] is True
    assert values["auth"]["sentinel"] is True, "the sentinels would tell anyone where the primary is"
    spec = named(objects, "Deployment", "auth")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (password,) = [v for v in container["env"] if v["name"] == "REDIS_PASSWORD"]
    reference = password["valueFrom"]["secretKeyRef"]
    assert (reference["name"], reference["key"]) == (
        values["auth"]["existingSecret"],
        values["auth"]["existingSecretPasswordKey"],
    ), "auth reads another password than the chart sets"
    env, _ = container_env(objects, spec, container, files)
    url = urlsplit(env["REDIS_URL"])
    assert url.scheme == "redis+sentinel", "auth would not follow a failover"
    assert url.port == 26379, "not the sentinels' port"
    assert url.password == env["REDIS_PASSWORD"], "REDIS_URL does not carry the password"
    assert url.path == "/" + values["sentinel"]["masterSet"], "REDIS_URL names another master set"
    redis_policy = named(objects, "NetworkPolicy", "redis")
    release = redis_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"]
    assert url.hostname == release, f"auth connects to {url.hostname}, the policies guard release {release}"


def check_scaling(objects: list[Obj]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    autoscaled = {}
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment", target
        assert target["name"] in deployments, target
        assert hpa["spec"]["minReplicas"] >= 2, f"{target['name']}: autoscaled down to one pod"
        autoscaled[target["name"]] = hpa["spec"]["minReplicas"]
    assert "gateway" in autoscaled, "the gateway is not autoscaled"
    assert deployments["auth"]["spec"]["replicas"] >= 2, "one auth pod is a single point of failure"
    claims = {c["metadata"]["name"]: c for c in of_kind(objects, "PersistentVolumeClaim")}
    budgets = of_kind(objects, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        volumes = spec["template"]["spec"].get("volumes", [])
        exclusive = [
            v
            for v in volumes
            if "persistentVolumeClaim" in v
            and "ReadWriteOnce" in claims[v["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"]
        ]
        covering = [b for b in budgets if matches(b["spec"]["selector"], pod_labels(deployment))]
        if exclusive:
            assert spec["replicas"] == 1, f"{name}: replicas would share a ReadWriteOnce volume"
            assert name not in autoscaled, f"{name}: replicas would share a ReadWriteOnce volume"
            assert spec["strategy"]["type"] == "Recreate", f"{name}: a rolling update mounts the volume twice"
            assert not covering, f"{name}: a budget on one pod blocks node drains"
            continue
        replicas = autoscaled.get(name, spec["replicas"])
        assert replicas >= 2, f"{name} runs a single pod"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, f"{name}: a roll-out drops capacity"
        assert len(covering) == 1, f"{name} has {len(covering)} disruption budgets"
        assert covering[0]["spec"].get("minAvailable", replicas) < replicas, (
            f"{name}: budget blocks every eviction"
        )


@pytest.fixture(scope="module")
def kustomization() -> Obj:
    return load_kustomization()


@pytest.fixture(scope="module")
def manifests(kustomization: Obj) -> list[Obj]:
    return render(kustomization)


@pytest.fixture(scope="module")
def redis_values() -> Obj:
    return load_redis_values()


def test_kustomization_lists_exactly_the_files_in_the_base_folder(kustomization: Obj) -> None:
    check_kustomization_lists_every_file(kustomization, BASE)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(manifests: list[Obj], version: str) -> None:
    kinds = {obj["kind"] for obj in manifests}
    assert {"Deployment", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    assert {"HorizontalPodAutoscaler", "ConfigMap", "PersistentVolumeClaim", "Namespace"} <= kinds
    for obj in manifests:
        # strict: an unknown or misspelt field is an error, not silently dropped by the API server
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_container_has_probes_resources_and_a_locked_down_security_context(
    manifests: list[Obj],
) -> None:
    check_containers_are_locked_down(manifests)


def test_the_private_key_secret_is_mounted_read_only_into_auth_alone(manifests: list[Obj]) -> None:
    check_auth_secrets_stay_in_auth(manifests)


def test_each_service_accepts_its_configuration_and_reads_every_variable(
    manifests: list[Obj], tmp_path: Path
) -> None:
    check_settings_accept_the_configuration(manifests, tmp_path)


def test_images_ports_and_services_agree_with_the_dockerfile(manifests: list[Obj]) -> None:
    check_images_and_services_agree(manifests)


def test_the_ingress_reaches_the_public_routes_of_the_gateway_only(manifests: list[Obj]) -> None:
    check_only_the_gateway_is_exposed(manifests)


def test_network_policies_allow_exactly_the_architecture(manifests: list[Obj]) -> None:
    check_network_policies_are_the_architecture(manifests)


def test_redis_chart_values_match_how_auth_connects(
    manifests: list[Obj], redis_values: Obj, tmp_path: Path
) -> None:
    check_redis_chart_matches_auth(manifests, redis_values, tmp_path)


def test_replicated_services_have_budgets_and_sqlite_orders_runs_alone(manifests: list[Obj]) -> None:
    check_scaling(manifests)


def _container(objects: list[Obj], name: str) -> Obj:
    container: Obj = named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return container


def _pod_spec(objects: list[Obj], name: str) -> Obj:
    spec: Obj = named(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def _mount_keys_into_orders(objects: list[Obj]) -> None:
    keys = {"name": "keys", "secret": {"secretName": "auth-signing-keys"}}
    _pod_spec(objects, "orders")["volumes"].append(keys)


def _policy_rule(objects: list[Obj], policy: str, key: str) -> list[Obj]:
    rules: list[Obj] = named(objects, "NetworkPolicy", policy)["spec"][key]
    return rules


Mutation = Callable[[list[Obj]], None]
BROKEN: dict[str, tuple[Mutation, Callable[[list[Obj], Path], None]]] = {
    "auth without a readiness probe": (
        lambda o: _container(o, "auth").pop("readinessProbe"),
        lambda o, _: check_containers_are_locked_down(o),
    ),
    "gateway may escalate privileges": (
        lambda o: _container(o, "gateway")["securityContext"].update(allowPrivilegeEscalation=True),
        lambda o, _: check_containers_are_locked_down(o),
    ),
    "orders without a memory limit": (
        lambda o: _container(o, "orders")["resources"].pop("limits"),
        lambda o, _: check_containers_are_locked_down(o),
    ),
    "orders with service links": (
        lambda o: _pod_spec(o, "orders").pop("enableServiceLinks"),
        lambda o, _: check_containers_are_locked_down(o),
    ),
    "signing keys in orders": (_mount_keys_into_orders, lambda o, _: check_auth_secrets_stay_in_auth(o)),
    "signing keys mounted writable": (
        lambda o: _container(o, "auth")["volumeMounts"][0].update(readOnly=False),
        lambda o, _: check_auth_secrets_stay_in_auth(o),
    ),
    "a committed Secret": (
        lambda o: o.append({"kind": "Secret", "metadata": {"name": "auth-session-secret"}}),
        lambda o, _: check_auth_secrets_stay_in_auth(o),
    ),
    "a misspelt variable": (
        lambda o: named(o, "ConfigMap", "gateway-config")["data"].update(GATEWAY_PROT="8000"),
        check_settings_accept_the_configuration,
    ),
    "a variable meant for another service": (
        lambda o: named(o, "ConfigMap", "orders-config")["data"].update(AUTH_URL="http://auth:8001"),
        check_settings_accept_the_configuration,
    ),
    "a malformed value": (
        lambda o: named(o, "ConfigMap", "auth-config")["data"].update(AUTH_PORT="http"),
        check_settings_accept_the_configuration,
    ),
    "a listen port the container does not declare": (
        lambda o: named(o, "ConfigMap", "orders-config")["data"].update(ORDERS_PORT="8080"),
        check_settings_accept_the_configuration,
    ),
    "verifiers expecting another issuer": (
        lambda o: named(o, "ConfigMap", "gateway-config")["data"].update(
            TOKEN_ISSUER="https://other.example"
        ),
        check_settings_accept_the_configuration,
    ),
    "an image of another build target": (
        lambda o: _container(o, "orders").update(image="hybrid-auth/gateway:latest"),
        lambda o, _: check_images_and_services_agree(o),
    ),
    "a Service aimed at a missing port": (
        lambda o: named(o, "Service", "auth")["spec"]["ports"][0].update(port=8080),
        lambda o, _: check_images_and_services_agree(o),
    ),
    "auth behind the Ingress": (
        lambda o: next(ingress_paths(o))["backend"]["service"].update(name="auth"),
        lambda o, _: check_only_the_gateway_is_exposed(o),
    ),
    "the Ingress aimed at a port the gateway Service lacks": (
        lambda o: next(ingress_paths(o))["backend"]["service"].update(port={"number": 80}),
        lambda o, _: check_only_the_gateway_is_exposed(o),
    ),
    "metrics reachable from outside": (
        lambda o: next(ingress_paths(o)).update(pathType="Prefix"),
        lambda o, _: check_only_the_gateway_is_exposed(o),
    ),
    "orders reaching redis": (
        lambda o: _policy_rule(o, "redis", "ingress")[0]["from"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "orders"}}}
        ),
        lambda o, _: check_network_policies_are_the_architecture(o),
    ),
    "no default deny": (
        lambda o: o.remove(named(o, "NetworkPolicy", "default-deny")),
        lambda o, _: check_network_policies_are_the_architecture(o),
    ),
    "auth egress anywhere": (
        lambda o: _policy_rule(o, "auth", "egress").append({}),
        lambda o, _: check_network_policies_are_the_architecture(o),
    ),
    "the gateway open to every pod": (
        lambda o: _policy_rule(o, "gateway", "ingress")[0]["from"].append({"namespaceSelector": {}}),
        lambda o, _: check_network_policies_are_the_architecture(o),
    ),
    "auth cut off from the sentinels": (
        lambda o: _policy_rule(o, "auth", "egress")[0]["ports"].pop(),
        lambda o, _: check_network_policies_are_the_architecture(o),
    ),
    "auth pointed at another master set": (
        lambda o: _container(o, "auth")["env"][1].update(
            value="redis+sentinel://:$(REDIS_PASSWORD)@redis:26379/x"
        ),
        lambda o, files: check_redis_chart_matches_auth(o, load_redis_values(), files),
    ),
    "orders with two replicas": (
        lambda o: named(o, "Deployment", "orders")["spec"].update(replicas=2),
        lambda o, _: check_scaling(o),
    ),
    "orders autoscaled": (
        lambda o: o.append(
            {
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "orders"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "orders"}, "minReplicas": 2},
            }
        ),
        lambda o, _: check_scaling(o),
    ),
    "auth without a disruption budget": (
        lambda o: o.remove(named(o, "PodDisruptionBudget", "auth")),
        lambda o, _: check_scaling(o),
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_broken_manifest_fails_its_check(manifests: list[Obj], broken: str, tmp_path: Path) -> None:
    mutate, check = BROKEN[broken]
    objects = copy.deepcopy(manifests)
    check(objects, tmp_path / "intact")  # the check passes on the real manifests...
    mutate(objects)
    with pytest.raises((AssertionError, SettingsError)):  # ...and fails on the broken copy
        check(objects, tmp_path / "broken")


def test_a_kustomization_missing_a_file_fails_its_check(kustomization: Obj) -> None:
    broken = copy.deepcopy(kustomization)
    broken["resources"].remove("ingress.yaml")
    with pytest.raises(AssertionError):
        check_kustomization_lists_every_file(broken, BASE)


def test_the_redis_values_must_turn_off_the_charts_own_policy(
    manifests: list[Obj], redis_values: Obj, tmp_path: Path
) -> None:
    broken = copy.deepcopy(redis_values)
    broken["networkPolicy"]["enabled"] = True
    with pytest.raises(AssertionError):
        check_redis_chart_matches_auth(manifests, broken, tmp_path)
