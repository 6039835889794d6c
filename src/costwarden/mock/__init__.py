"""Mock LLM upstream (OpenAI + Anthropic wire formats) for tests, the demo and benchmarks."""

from costwarden.mock.server import (
    CONFIG_FIELDS,
    STATE_KEY,
    MockServer,
    MockState,
    create_mock_app,
    main_mock,
    run_mock,
    serve_mock,
)

__all__ = [
    "CONFIG_FIELDS",
    "STATE_KEY",
    "MockServer",
    "MockState",
    "create_mock_app",
    "main_mock",
    "run_mock",
    "serve_mock",
]
