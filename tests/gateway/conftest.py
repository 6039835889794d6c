"""Shared by the gateway tests: the official SDKs pointed at the test's gateway (each test
module defines its ``gw`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from tests.helpers import LiveGateway


@pytest.fixture
async def oa(gw: LiveGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
        yield c


@pytest.fixture
async def an(gw: LiveGateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        yield c
