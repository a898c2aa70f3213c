"""Session-wide fixtures: isolated AWS environment, one moto and one kinesalite server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import Server, isolate_aws_environment, start_kinesalite, start_moto

isolate_aws_environment()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Server]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kinesalite_server() -> Iterator[Server]:
    server = start_kinesalite()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_url(moto_server: Server) -> str:
    return moto_server.url


@pytest.fixture(scope="session")
def kinesalite_url(kinesalite_server: Server) -> str:
    return kinesalite_server.url


@pytest.fixture(params=["moto", "kinesalite"])
def kinesis_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once against moto and once against kinesalite."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
