"""API keys, roles, tenants, mTLS, and the per-tenant limits, against a service that requires
keys and client certificates (made by the test)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aether.memory.v1 import (
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.app import Running, serve
from aether_memory.settings import Settings
from aether_memory.stores.redis.api_keys import ApiKeys, Role
from aether_memory.stores.redis.keys import TenantKeys

from .conftest import failure


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    ca_pem: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("aether test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", server_key, ca.subject, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("an agent", client_key, ca.subject, ca_key)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (root / "ca.pem").write_bytes(ca_pem)
    (root / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (root / "server.key").write_bytes(_pem_key(server_key))
    return Pki(
        root / "ca.pem",
        root / "server.pem",
        root / "server.key",
        client.public_bytes(serialization.Encoding.PEM),
        _pem_key(client_key),
        ca_pem,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secured(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    settings = Settings(
        port=0,
        data_dir=tmp_path_factory.mktemp("redis-secured"),
        redis_url=None,
        require_api_keys=True,
        api_key_cache_s=0,
        rate_limit_per_s=20,
        rate_limit_burst=10,
        max_streams_per_tenant=3,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
        maintenance_interval_s=3600,
        index_episodes=False,
        grace_s=1.0,
    )
    async with serve(settings) as running:
        yield running


def tls_channel(running: Running, pki: Pki, with_client_cert: bool = True) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem,
        private_key=pki.client_key if with_client_cert else None,
        certificate_chain=pki.client_cert if with_client_cert else None,
    )
    return grpc.aio.secure_channel(f"localhost:{running.port}", credentials)


@pytest_asyncio.fixture(loop_scope="session")
async def channel(secured: Running, pki: Pki) -> AsyncIterator[grpc.aio.Channel]:
    async with tls_channel(secured, pki) as ch:
        yield ch


async def key(running: Running, tenant: str, role: Role = Role.WRITE) -> str:
    _, secret = await ApiKeys(running.redis).create(tenant, role, "test")
    return secret


def bearer(secret: str, tenant: str | None = None) -> tuple[tuple[str, str], ...]:
    md = [("authorization", f"Bearer {secret}")]
    if tenant:
        md.append(("aether-tenant", tenant))
    return tuple(md)


async def store(channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...], text: str) -> str:
    response = await memory_service_pb2_grpc.MemoryServiceStub(channel).StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=memory_pb2.Memory(agent_id="a", content=text)),
        metadata=md,
    )
    return response.memory.id


async def get(channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...], memory_id: str) -> str:
    response = await memory_service_pb2_grpc.MemoryServiceStub(channel).GetMemory(
        memory_service_pb2.GetMemoryRequest(id=memory_id), metadata=md
    )
    return response.memory.content


async def test_calls_without_a_valid_key_are_unauthenticated(
    secured: Running, channel: grpc.aio.Channel
) -> None:
    for md, reason in [
        ((), "API_KEY_MISSING"),
        (bearer("aek_0123456789abcdef_forged"), "API_KEY_INVALID"),
        (bearer("not-a-key"), "API_KEY_INVALID"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await store(channel, md, "should not be stored")
        f = failure(info.value)
        assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING  # health needs no key


async def test_a_read_key_reads_but_cannot_write(
    secured: Running, channel: grpc.aio.Channel
) -> None:
    writer, reader = await key(secured, "sec-roles"), await key(secured, "sec-roles", Role.READ)
    memory_id = await store(channel, bearer(writer), "Readable by a read key.")
    assert await get(channel, bearer(reader), memory_id) == "Readable by a read key."
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await store(channel, bearer(reader), "A read key cannot write this.")
    f = failure(info.value)
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_FORBIDDEN")


async def test_a_key_acts_only_for_its_own_tenant(
    secured: Running, channel: grpc.aio.Channel
) -> None:
    alice, bob = await key(secured, "sec-alice"), await key(secured, "sec-bob")
    memory_id = await store(channel, bearer(alice), "Alice's secret.")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get(channel, bearer(bob, tenant="sec-alice"), memory_id)
    f = failure(info.value)
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "TENANT_FORBIDDEN")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get(channel, bearer(bob), memory_id)  # Bob's key reads Bob's tenant: not there
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert await get(channel, bearer(alice, tenant="sec-alice"), memory_id) == "Alice's secret."


async def test_a_revoked_key_stops_working(secured: Running, channel: grpc.aio.Channel) -> None:
    keys = ApiKeys(secured.redis)
    key_id, secret = await keys.create("sec-revoke", Role.WRITE, "to revoke")
    await store(channel, bearer(secret), "Written before revocation.")
    assert await keys.revoke(key_id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await store(channel, bearer(secret), "Written after revocation.")
    assert failure(info.value).reason == "API_KEY_INVALID"
    raw = await secured.redis.hgetall(f"aether:apikey:{key_id}")
    assert raw == {}  # and the stored record never held the key itself:
    _, other = await keys.create("sec-revoke", Role.READ, "kept")
    stored = await secured.redis.hgetall(f"aether:apikey:{other.split('_')[1]}")
    assert other.encode() not in b"".join(stored.values())


async def test_without_a_client_certificate_the_handshake_fails(secured: Running, pki: Pki) -> None:
    async with tls_channel(secured, pki, with_client_cert=False) as bare:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(bare).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_per_tenant_rate_limit_answers_resource_exhausted_with_retry_info(
    secured: Running, channel: grpc.aio.Channel
) -> None:
    busy, calm = (
        await key(secured, "sec-busy", Role.READ),
        await key(secured, "sec-calm", Role.READ),
    )
    stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
    request = memory_service_pb2.ListMemoriesRequest(agent_id="a")
    results = await asyncio.gather(
        *(stub.ListMemories(request, metadata=bearer(busy)) for _ in range(40)),
        return_exceptions=True,
    )
    limited = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert 20 <= len(limited) <= 31  # burst 10 (+ refill) passes, the rest are refused
    f = failure(limited[0])
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    retry = [d for d in f.status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert retry
    await stub.ListMemories(request, metadata=bearer(calm))  # another tenant is unaffected


async def test_concurrent_streams_per_tenant_are_capped(
    secured: Running, channel: grpc.aio.Channel
) -> None:
    secret = await key(secured, "sec-streams", Role.READ)
    stub = episode_service_pb2_grpc.EpisodeServiceStub(channel)
    request = episode_service_pb2.SubscribeEpisodesRequest()
    open_calls = [stub.SubscribeEpisodes(request, metadata=bearer(secret)) for _ in range(3)]
    await asyncio.sleep(0.5)
    extra = stub.SubscribeEpisodes(request, metadata=bearer(secret))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in extra:
            pass
    f = failure(info.value)
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    open_calls[0].cancel()
    await asyncio.sleep(0.3)
    again = stub.SubscribeEpisodes(request, metadata=bearer(secret))
    await asyncio.sleep(0.3)
    assert not again.done()  # admitted: it is waiting for events
    for call in [*open_calls, again]:
        call.cancel()


async def test_without_keys_the_server_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    settings = Settings(port=0, host="0.0.0.0", data_dir=tmp_path, redis_url=None)
    with pytest.raises(RuntimeError, match="without API keys"):
        async with serve(settings):
            pass


async def test_the_keys_cli_creates_and_revokes(secured: Running) -> None:
    env = {**os.environ, "AETHER_REDIS_URL": secured.redis_url}
    created = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "aether_memory",
            "keys",
            "create",
            "--tenant",
            "sec-cli",
            "--role",
            "read",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    made = json.loads(created.stdout)
    principal = await ApiKeys(secured.redis).authenticate(made["key"])
    assert principal is not None and (principal.tenant, principal.role) == ("sec-cli", Role.READ)
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "aether_memory", "keys", "revoke", made["key_id"]],
        env=env,
        check=True,
        capture_output=True,
    )
    assert await ApiKeys(secured.redis).authenticate(made["key"]) is None


async def test_a_read_keys_reads_count_no_accesses_and_promote_nothing(
    secured: Running, channel: grpc.aio.Channel
) -> None:
    writer, reader = await key(secured, "sec-reads"), await key(secured, "sec-reads", Role.READ)
    stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
    stored = await stub.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(
                agent_id="a", content="A working note.", tier=memory_pb2.MEMORY_TIER_WORKING
            )
        ),
        metadata=bearer(writer),
    )
    memory_id = stored.memory.id
    for _ in range(4):  # more than the reads that promote a working memory
        assert await get(channel, bearer(reader), memory_id) == "A working note."
        await stub.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(agent_id="a", query="working note"),
            metadata=bearer(reader),
        )
    assert await get(channel, bearer(writer), memory_id) == "A working note."
    access = TenantKeys("sec-reads").access(memory_id)
    for _ in range(100):  # the access recorder writes within 50 ms
        if await secured.redis.hget(access, "count"):
            break
        await asyncio.sleep(0.05)
    assert await secured.redis.hget(access, "count") == b"1"  # the writer's read alone


async def test_the_health_command_speaks_tls_with_the_servers_certificate(
    secured: Running, pki: Pki, tmp_path: Path
) -> None:
    """`aether-memory health` (the image's HEALTHCHECK) over TLS: with --ca-file, or by itself
    where AETHER_TLS_CERT_FILE names the server's certificate; plaintext cannot pass."""
    (tmp_path / "client.pem").write_bytes(pki.client_cert)
    (tmp_path / "client.key").write_bytes(pki.client_key)
    client_cert = ["--cert-file", str(tmp_path / "client.pem")]
    client_cert += ["--key-file", str(tmp_path / "client.key")]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}

    def health(*extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "aether_memory", "health", "--target", secured.address]
        return subprocess.run(
            [*command, *extra],
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    with_ca = await asyncio.to_thread(health, "--ca-file", str(pki.ca), *client_cert)
    assert (with_ca.returncode, with_ca.stdout.strip()) == (0, "SERVING"), with_ca.stderr
    # The server's own certificate, from the environment; this one carries no CA, so the
    # chain must be given too: the CA file appended, as a deployment's PEM bundle would.
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.server_cert.read_bytes() + pki.ca_pem)
    from_env = await asyncio.to_thread(health, *client_cert, AETHER_TLS_CERT_FILE=str(bundle))
    assert from_env.returncode == 0, from_env.stderr
    plain = await asyncio.to_thread(health, "--timeout", "2")
    assert plain.returncode == 1 and "SERVING" not in plain.stdout
