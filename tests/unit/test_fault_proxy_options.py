"""FaultProxy's options, lifecycle and binding (no upstream needed for these)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

import shardflow
from shardflow import KinesisLimits
from shardflow.testing import COUNTS, FaultConfig, FaultProxy

UPSTREAM = "http://127.0.0.1:9"  # nothing listens on the discard port


def test_testing_is_public() -> None:
    assert shardflow.testing.FaultProxy is FaultProxy
    assert "testing" in shardflow.__all__
    assert set(shardflow.testing.__all__) <= set(dir(shardflow.testing))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"throttle_fraction": 1.5}, ValueError),
        ({"throttle_fraction": -0.1}, ValueError),
        ({"throttle_fraction": "0.1"}, TypeError),
        ({"error_5xx_fraction": True}, TypeError),
        ({"throttle_fraction": 0.6, "internal_failure_fraction": 0.6}, ValueError),
        ({"reset_before_fraction": 0.5, "reset_after_fraction": 0.6}, ValueError),
        ({"expire_iterator_fraction": 0.7, "read_throttle_fraction": 0.4}, ValueError),
        ({"latency": -1.0}, ValueError),
        ({"latency": float("inf")}, ValueError),
        ({"latency": float("nan")}, ValueError),
        ({"stall": 1}, TypeError),
        ({"enforce_write_limits": "yes"}, TypeError),
        ({"operations": "PutRecords"}, TypeError),
        ({"operations": {""}}, TypeError),
        ({"limits": {"shard_write_records_per_s": 5}}, TypeError),
        ({"port": 70000}, ValueError),
        ({"port": -1}, ValueError),
        ({"seed": "7"}, TypeError),
    ],
)
def test_bad_options_are_refused_at_construction(
    options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        FaultProxy(UPSTREAM, **options)


@pytest.mark.parametrize("url", ["", "127.0.0.1:4567", "ftp://127.0.0.1/", "http://"])
def test_upstream_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="upstream_url"):
        FaultProxy(url)


def test_configure_validates_and_changes_nothing_on_error() -> None:
    proxy = FaultProxy(UPSTREAM, throttle_fraction=0.1)
    with pytest.raises(TypeError, match="unknown"):
        proxy.configure(throttle=0.5)
    with pytest.raises(TypeError, match="port"):
        proxy.configure(port=1234)
    with pytest.raises(ValueError, match="throttle_fraction"):
        proxy.configure(throttle_fraction=2.0)
    with pytest.raises(TypeError, match="seed"):
        proxy.configure(seed=1.5, throttle_fraction=0.3)
    assert proxy.config.throttle_fraction == 0.1
    proxy.configure(throttle_fraction=0.3, operations=["PutRecords"], seed=3)
    assert proxy.config == FaultConfig(throttle_fraction=0.3, operations=frozenset({"PutRecords"}))


def test_operations_default_to_the_data_plane() -> None:
    config = FaultConfig()
    assert {op for op in ("PutRecord", "PutRecords", "GetRecords") if config.applies_to(op)} == {
        "PutRecord",
        "PutRecords",
        "GetRecords",
    }
    assert not config.applies_to("ListShards")
    assert FaultConfig(operations=frozenset({"*"})).applies_to("ListShards")
    assert not FaultConfig(operations=frozenset({"ListShards"})).applies_to("PutRecords")


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FaultProxy(UPSTREAM).url


async def test_counts_start_at_zero_with_every_documented_key() -> None:
    async with FaultProxy(UPSTREAM, limits=KinesisLimits()) as proxy:
        assert dict(proxy.counts) == dict.fromkeys(COUNTS, 0)
        snapshot = proxy.counts
    assert snapshot == proxy.counts


async def test_binds_loopback_only() -> None:
    async with FaultProxy(UPSTREAM) as proxy:
        parts = urlsplit(proxy.url)
        assert parts.hostname == "127.0.0.1"
        assert parts.port
        with socket.create_connection(("127.0.0.1", parts.port), timeout=5):
            pass
        # Every other address of this host must refuse: 127.0.0.2 (another loopback
        # address on Linux) and the address of the outward interface, if any.
        others = ["127.0.0.2"]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("10.255.255.255", 1))  # no packet is sent
                others.append(probe.getsockname()[0])
        except OSError:
            pass
        for host in others:
            if host == "127.0.0.1":
                continue
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, parts.port), timeout=2).close()


async def test_a_taken_port_fails_to_start_and_leaves_nothing_running() -> None:
    async with FaultProxy(UPSTREAM) as first:
        port = urlsplit(first.url).port
        assert port is not None
        second = FaultProxy(UPSTREAM, port=port)
        with pytest.raises(OSError, match=r"(?i)in use"):
            await second.start()
        with anyio.fail_after(5):
            await second.aclose()


async def test_start_twice_is_an_error_and_close_is_idempotent() -> None:
    proxy = FaultProxy(UPSTREAM)
    await proxy.start()
    with pytest.raises(RuntimeError):
        await proxy.start()
    with anyio.fail_after(5):
        await proxy.aclose()
        await proxy.aclose()


async def test_an_unreachable_upstream_resets_the_client() -> None:
    import aiohttp

    async with FaultProxy(UPSTREAM) as proxy, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(proxy.url, data=b"{}") as resp:
                await resp.read()
        assert proxy.counts["upstream_unreachable"] == 1


def test_every_count_is_documented() -> None:
    doc = shardflow.testing.__doc__ or ""
    for key, meaning in COUNTS.items():
        assert f"``{key}``" in doc
        assert meaning


async def test_a_client_leaving_mid_request_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import aiohttp

    caplog.set_level(logging.DEBUG)
    async with FaultProxy(UPSTREAM) as proxy:
        port = urlsplit(proxy.url).port
        assert port is not None
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"a"')
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(proxy.url, data=b"{}") as resp:
                    await resp.read()
        assert proxy.counts["requests"] == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
