"""The compose cluster as users meet it: flows through the published gateway, and its lockdown."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.http import assert_json_error, session_cookie
from tests.support.polling import poll

from .conftest import (
    ADMIN,
    ALICE,
    COMPOSE_TEST_TIMEOUT,
    REPO_ROOT,
    SERVICES,
    ComposeStack,
    Gateway,
)

pytestmark = COMPOSE_TEST_TIMEOUT

README = REPO_ROOT / "README.md"

# Runs inside a container: can this container open a TCP connection to each HOST:PORT and get
# a Redis PONG? Name resolution is bounded too, since an internal network's DNS may answer an
# unknown name only after its forwarders time out.
REDIS_PROBE = """
import json, socket, sys, threading
for target in sys.argv[1:]:
    host, _, port = target.rpartition(":")
    resolved = []
    def resolve():
        try:
            resolved.append(socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][4][:2])
        except OSError as exc:
            resolved.append(exc)
    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(3)
    if not resolved or isinstance(resolved[0], OSError):
        error = repr(resolved[0]) if resolved else "no DNS answer within 3 s"
        print(json.dumps({"target": target, "reached": False, "error": "resolve: " + error}))
        continue
    try:
        with socket.create_connection(resolved[0], timeout=3) as sock:
            sock.sendall(b"PING\\r\\n")
            reply = sock.recv(64).decode()
        print(json.dumps({"target": target, "reached": True, "reply": reply}))
    except OSError as exc:
        print(json.dumps({"target": target, "reached": False, "error": "connect: " + repr(exc)}))
"""


def test_login_token_orders_logout_then_no_more_tokens(gateway: Gateway) -> None:
    login = gateway.post_login(ALICE)
    assert login.status_code == 200, login.text
    cookie = session_cookie(login)
    assert {"httponly", "secure"} <= cookie.attributes.keys()
    assert cookie.attributes["samesite"].lower() == "strict"
    session = gateway.login(ALICE)

    token = gateway.token(session)
    created = gateway.create_order(token, "compose beans")
    listed = gateway.orders(token)
    logout = gateway.logout(session)
    after_logout = gateway.request_token(session)

    assert created.status_code == 201, created.text
    assert listed.status_code == 200, listed.text
    assert created.json()["id"] in [order["id"] for order in listed.json()["orders"]]
    assert logout.status_code == 200, logout.text
    assert_json_error(after_logout, 401)
    assert_json_error(gateway.orders("not-a-token"), 401)


def test_a_token_minted_before_logout_is_refused_once_the_revocation_feed_arrives(gateway: Gateway) -> None:
    session = gateway.login(ALICE)
    token = gateway.token(session)
    assert gateway.orders(token).status_code == 200
    assert gateway.logout(session).status_code == 200

    # The containers carry the feed with no setting: REVOCATIONS_URL defaults to beside JWKS_URL.
    refused = poll(
        lambda: gateway.orders(token),
        until=lambda response: response.status_code == 401,
        within=10,
        what="the pre-logout token refused at the gateway",
    )
    assert refused.json()["error"] == "invalid_token"


def test_auth_records_the_client_the_gateway_saw_not_the_gateway(
    stack: ComposeStack, gateway: Gateway
) -> None:
    # Per-IP login throttling depends on it: behind a gateway it does not trust, auth would see
    # one client, the gateway, and one attacker's failures would refuse everyone's logins.
    session = gateway.login(ALICE)
    listed = gateway.http.get("/auth/sessions", headers=gateway.cookie_headers(session))
    assert listed.status_code == 200, listed.text
    (current,) = [entry for entry in listed.json()["sessions"] if entry["current"]]
    networks = stack.container("gateway").attrs["NetworkSettings"]["Networks"]
    gateway_addresses = {network["IPAddress"] for network in networks.values()}
    assert current["ip"], current
    assert current["ip"] not in gateway_addresses, (current["ip"], gateway_addresses)


def test_demo_users_are_those_of_make_run(gateway: Gateway) -> None:
    alice = gateway.token(gateway.login(ALICE))
    admin = gateway.token(gateway.login(ADMIN))

    assert gateway.orders(admin, {"all": "true"}).status_code == 200
    assert_json_error(gateway.orders(alice, {"all": "true"}), 403)


def test_only_the_gateway_is_published_and_only_on_loopback(stack: ComposeStack) -> None:
    published = {
        service: {
            port: [(binding["HostIp"], binding["HostPort"]) for binding in bindings or []]
            for port, bindings in stack.container(service).attrs["NetworkSettings"]["Ports"].items()
            if bindings
        }
        for service in SERVICES
    }

    assert published == {
        "redis": {},
        "auth": {},
        "orders": {},
        "gateway": {"8000/tcp": [("127.0.0.1", str(stack.gateway_port))]},
    }


def test_without_variables_compose_builds_on_the_official_images_and_publishes_on_loopback_8000(
    stack: ComposeStack,
) -> None:
    unset = ("PYTHON_IMAGE", "REDIS_IMAGE", "GATEWAY_PORT")
    env = {key: value for key, value in stack.env.items() if key not in unset}

    config = json.loads(stack.compose("config", "--format", "json", env=env))
    dockerfile_defaults = dict(
        line.removeprefix("ARG ").split("=", 1)
        for line in (REPO_ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("ARG ") and "_IMAGE=" in line
    )

    services = config["services"]
    assert {services[name]["build"]["args"]["PYTHON_IMAGE"] for name in ("auth", "orders", "gateway")} == {
        "python:3.12-slim"
    }
    assert services["redis"]["build"]["args"]["REDIS_IMAGE"] == "redis:7-alpine"
    assert dockerfile_defaults == {"PYTHON_IMAGE": "python:3.12-slim", "REDIS_IMAGE": "redis:7-alpine"}
    published = [(port["host_ip"], port["published"]) for port in services["gateway"]["ports"]]
    assert published == [("127.0.0.1", "8000")]
    assert all("ports" not in services[name] for name in ("redis", "auth", "orders"))


def test_networks_put_redis_where_only_auth_can_reach_it(stack: ComposeStack) -> None:
    def members(network: str) -> set[str]:
        containers = stack.network(network).attrs["Containers"] or {}
        return {stack.client.containers.get(cid).labels["com.docker.compose.service"] for cid in containers}

    assert members("sessions") == {"auth", "redis"}
    assert members("services") == {"auth", "orders", "gateway"}
    assert members("public") == {"gateway"}
    assert stack.network("sessions").attrs["Internal"] is True
    assert stack.network("services").attrs["Internal"] is True
    assert stack.network("public").attrs["Internal"] is False


def test_orders_and_gateway_cannot_open_a_connection_to_redis(stack: ComposeStack) -> None:
    redis_ip = stack.container("redis").attrs["NetworkSettings"]["Networks"][f"{stack.project}_sessions"][
        "IPAddress"
    ]
    targets = ("redis:6379", f"{redis_ip}:6379")

    def probe(service: str) -> dict[str, dict[str, object]]:
        code, output = stack.exec(service, "python", "-c", REDIS_PROBE, *targets)
        assert code == 0, output
        results = [json.loads(line) for line in output.splitlines()]
        return {result["target"]: result for result in results}

    from_auth = probe("auth")
    from_orders = probe("orders")
    from_gateway = probe("gateway")

    # The probe does reach redis from where it should: its failures below mean isolation.
    for target in targets:
        assert from_auth[target]["reached"] is True, from_auth
        assert from_auth[target]["reply"] == "+PONG\r\n"
        assert from_orders[target]["reached"] is False, from_orders
        assert from_gateway[target]["reached"] is False, from_gateway


def test_every_container_runs_unprivileged_on_a_read_only_root(stack: ComposeStack) -> None:
    for service in SERVICES:
        container = stack.container(service)
        host_config = container.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] is True, service
        assert host_config["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host_config["SecurityOpt"], service

        # What the kernel enforces on the service's own process, not only what was asked for.
        code, status = stack.exec(service, "cat", "/proc/1/status")
        assert code == 0, status
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split()[0] != "0", (service, fields["Uid"])
        assert fields["CapEff"].strip() == "0000000000000000", (service, fields["CapEff"])
        assert fields["NoNewPrivs"].strip() == "1", service
        code, output = stack.exec(service, "touch", "/usr/local/probe")
        assert code != 0, f"{service} could write to its root filesystem: {output}"


def test_private_keys_live_on_a_volume_only_auth_mounts(stack: ComposeStack) -> None:
    mounts = {
        service: {mount.get("Name") for mount in stack.container(service).attrs["Mounts"]}
        for service in SERVICES
    }
    auth_state = f"{stack.project}_auth-state"

    code, listing = stack.exec("auth", "ls", "-ln", "/var/lib/auth/keys", "/var/lib/auth/session-secret")

    assert [service for service, names in mounts.items() if auth_state in names] == ["auth"]
    assert code == 0, listing
    private_files = [line for line in listing.splitlines() if ".pem" in line or "session-secret" in line]
    assert len(private_files) >= 2, listing
    # Readable by auth's own user alone.
    assert all(line.startswith("-rw------- ") for line in private_files), listing
    for service in ("orders", "gateway"):
        code, output = stack.exec(service, "ls", "-A", "/var/lib/auth")
        assert (code, output.strip()) == (0, ""), (service, output)


@pytest.mark.parametrize("service", ["redis", "orders"])
def test_state_lives_on_a_named_volume(stack: ComposeStack, service: str) -> None:
    path = {"redis": "/srv/redis", "orders": "/var/lib/orders"}[service]
    volume = {"redis": "redis-data", "orders": "orders-data"}[service]

    mounts = {mount["Destination"]: mount for mount in stack.container(service).attrs["Mounts"]}

    assert mounts[path]["Type"] == "volume"
    assert mounts[path]["Name"] == f"{stack.project}_{volume}"
    assert mounts[path]["RW"] is True


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_walkthrough_works_against_the_containers(stack: ComposeStack, tmp_path: Path) -> None:
    section = README.read_text().split("## Walkthrough with curl", 1)[1]
    script = section.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "GW=http://localhost:8000\n" in script
    script = script.replace("GW=http://localhost:8000\n", f"GW={stack.public_origin}\n")

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    # curl prints the four JSON bodies back to back: created, listing, logged out, refused.
    decoder, documents, rest = json.JSONDecoder(), [], result.stdout.strip()
    while rest:
        document, end = decoder.raw_decode(rest)
        documents.append(document)
        rest = rest[end:].lstrip()
    created, listing, logged_out, refused = documents
    assert created["id"] in [order["id"] for order in listing["orders"]]
    assert logged_out == {"status": "logged_out"}
    assert refused["error"] == "no_session"


def test_no_secret_reaches_any_container_log(stack: ComposeStack, gateway: Gateway) -> None:
    login = gateway.post_login(ALICE)
    assert login.status_code == 200, login.text
    session = gateway.login(ALICE)
    token = gateway.token(session)
    code, secret = stack.exec("auth", "cat", "/var/lib/auth/session-secret")
    assert code == 0, secret
    code, pem = stack.exec("auth", "sh", "-c", "cat /var/lib/auth/keys/*.pem")
    assert code == 0, pem
    key_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]

    logs = {service: stack.container(service).logs().decode(errors="replace") for service in SERVICES}

    secrets = {
        "password": stack.demo_password,
        "cookie": session.cookie,
        "csrf token": session.csrf_token,
        "access token": token,
        "session secret": secret.strip(),
        **{f"private key line {number}": line for number, line in enumerate(key_lines)},
    }
    assert len(secrets["session secret"]) >= 32
    assert len(key_lines) > 10
    leaks = [
        (name, service) for name, value in secrets.items() for service, text in logs.items() if value in text
    ]
    assert leaks == []
