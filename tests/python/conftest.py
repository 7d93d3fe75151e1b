"""Fixtures: one fake server per session (reset before each test) and clients bound to it."""
from __future__ import annotations

from typing import AsyncIterator, Iterator

import pytest

import tpserve
from fake_server import FakeServer


@pytest.fixture(scope="session")
def _server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def server(_server: FakeServer) -> FakeServer:
    _server.reset()
    return _server


@pytest.fixture
def client(server: FakeServer) -> Iterator[tpserve.Client]:
    with tpserve.Client(server.address, timeout=10) as c:
        yield c


@pytest.fixture
async def aclient(server: FakeServer) -> AsyncIterator[tpserve.AsyncClient]:
    async with tpserve.AsyncClient(server.address, timeout=10) as c:
        yield c
