"""AWS Bedrock (bedrock-runtime's Converse and ConverseStream APIs) as a *codec* adapter.

It presents itself as an ``openai`` provider: an OpenAI client's request reaches it as a
Chat Completions payload (an Anthropic client's is translated Anthropic -> OpenAI first), and
it converts at its edge -- the request into a Converse request (:func:`converse_request`),
the Converse answer back into a ``chat.completion`` (:func:`chat_completion`), and the
ConverseStream's binary event stream into ``chat.completion.chunk`` events
(:mod:`costwarden.providers.bedrock_stream`). A request that Converse cannot carry
faithfully (``n > 1``, audio, JSON mode, an image by URL ...) is a TranslationError, a 400,
never something the client did not ask for.

Calls go to ``{base_url}/model/{modelId}/converse`` (``/converse-stream`` for a stream),
signed with AWS Signature Version 4 by botocore's own signer (service ``bedrock``, the
provider's region) over the exact URL and body bytes sent. botocore is the optional extra
``costwarden[bedrock]``, imported only when a bedrock provider is built, so costwarden runs
without it. Signing costs about 60 µs a request: ``timeit`` of :meth:`BedrockAdapter.headers`,
5 runs of 5,000 calls (botocore 1.44, CPython 3.11, this project's 2-core machine), 57-61 µs
on a 1 KiB body and 115-121 µs on 100 KiB (the body's SHA-256 is part of the signature).
botocore's signer is used rather than a copy of the algorithm: a signature is pass or fail,
and botocore's is the one AWS tests.

Prices are genai-prices' ``aws`` entries under the model id
(``anthropic.claude-3-5-sonnet-20241022-v2:0``, ``amazon.nova-lite-v1:0``); Converse
reports cache reads and writes, which are billed at their own rates.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from costwarden.core.errors import ConfigError
from costwarden.pricing import TokenUsage
from costwarden.providers import openai_reader as reader
from costwarden.providers.base import ProviderAdapter, ProviderSpec, StreamDecoder, StreamMeter
from costwarden.providers.bedrock_stream import (
    ConverseStreamDecoder,
    completion_id,
    finish_reason,
    openai_usage,
    token_usage,
)
from costwarden.providers.openai import OpenAIStreamMeter
from costwarden.providers.openai_reader import bad

JSON = dict[str, Any]

SERVICE = "bedrock"  # SigV4's signing name of bedrock-runtime
EXTRA_HINT = "pip install 'costwarden[bedrock]'"
DEFAULT_BASE_URL = "https://bedrock-runtime.{region}.amazonaws.com"

_IMAGE_FORMATS = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
}
# Fields of an OpenAI request whose meaning Converse cannot honour. Others it has no field
# for and whose absence does not change what the answer means (seed, logprobs, user, ...)
# are dropped, as the OpenAI <-> Anthropic translation drops them.
_REFUSED: dict[str, str] = {
    "audio": "audio output is not supported by Bedrock Converse",
    "functions": "legacy functions are not translated; use tools",
    "function_call": "legacy function_call is not translated; use tool_choice",
    "web_search_options": "OpenAI web search cannot be performed by Bedrock",
    "prediction": "predicted outputs are not supported by Bedrock Converse",
}
_EMPTY_SCHEMA: JSON = {"type": "object", "properties": {}}


def botocore_missing() -> str | None:
    """Why a bedrock provider cannot be built here (botocore is not installed), or None."""
    try:
        import botocore.auth  # noqa: F401
    except ImportError:
        return f"the bedrock provider needs botocore: {EXTRA_HINT}"
    return None


class BedrockAdapter(ProviderAdapter):
    wire = "openai"
    codec = True
    stream_type = "application/vnd.amazon.eventstream"
    endpoints: ClassVar[dict[str, str]] = {"chat.completions": "/converse"}

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        missing = botocore_missing()
        if missing is not None:
            raise ConfigError(f"provider {spec.name}: {missing}")
        if not spec.region:
            raise ValueError(f"provider {spec.name}: Bedrock needs a region")
        if not spec.api_key or not spec.secret_key:
            raise ValueError(f"provider {spec.name}: Bedrock needs AWS credentials")
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        self._secret_key = spec.secret_key
        self._session_token = spec.session_token
        credentials = Credentials(spec.api_key, spec.secret_key, spec.session_token)
        self._signer = SigV4Auth(credentials, SERVICE, spec.region)
        self._request = AWSRequest
        self._urls: dict[tuple[str, bool], str] = {}

    def url(self, endpoint: str, model: str, stream: bool) -> str:
        found = self._urls.get((model, stream))
        if found is None:
            # The model id may be an ARN or carry a version (":0"): one path segment, quoted.
            action = "/converse-stream" if stream else "/converse"
            found = f"{self.base_url}/model/{quote(model, safe='')}{action}"
            self._urls[(model, stream)] = found
        return found

    def headers(self, client_headers: dict[bytes, bytes], url: str, body: bytes) -> dict[str, str]:
        # Signed: content-type, host (from the URL, as the client sends it), x-amz-date and
        # the session token; the signature covers the body's SHA-256.
        request = self._request(
            method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
        )
        self._signer.add_auth(request)
        return {name.lower(): value for name, value in request.headers.items()}

    def models_url(self) -> str | None:
        # The model list is the control plane's (bedrock., not bedrock-runtime.), and it
        # leaves out the inference profiles (us.anthropic...) most deployments call.
        return None

    def usage_from_body(self, endpoint: str, body: dict[str, Any]) -> TokenUsage:
        return token_usage(body.get("usage"))

    def stream_meter(self, *, client_wants_usage: bool) -> StreamMeter:
        return OpenAIStreamMeter(client_wants_usage=client_wants_usage)

    def prepare(self, endpoint: str, payload: dict[str, Any], stream: bool) -> bool:
        return False  # ConverseStream always reports usage: nothing to ask for

    def secrets(self) -> list[str]:
        return [s for s in (self._api_key, self._secret_key, self._session_token) if s]

    def encode(self, endpoint: str, payload: dict[str, Any]) -> bytes:
        return orjson.dumps(converse_request(payload))

    def decode(self, endpoint: str, body: dict[str, Any], model: str) -> dict[str, Any]:
        return chat_completion(body, model)

    def stream_decoder(self, model: str) -> StreamDecoder:
        return ConverseStreamDecoder(model)


# --------------------------------------------------------------------------- requests


def converse_request(payload: JSON) -> JSON:
    """The Converse request equivalent to an OpenAI chat completions request (the model and
    streaming are in the URL, not the body)."""
    _refuse(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "must be a non-empty array")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_texts(message.get("content"), param))
        elif role == "user":
            turns.append({"role": "user", "content": _user_blocks(message.get("content"), param)})
        elif role == "assistant":
            turns.append({"role": "assistant", "content": _assistant_blocks(message, param)})
        elif role == "tool":
            turns.append({"role": "user", "content": [_tool_result(message, param)]})
        else:
            raise bad(param, f"role {role!r} cannot be sent to Bedrock Converse")
    out: JSON = {"messages": _merge(turns)}
    if not out["messages"]:
        raise bad("messages", "every message is empty")
    if system:
        out["system"] = system
    config = _inference_config(payload)
    if config:
        out["inferenceConfig"] = config
    tools = _tool_config(payload, out["messages"])
    if tools is not None:
        out["toolConfig"] = tools
    return out


def _refuse(payload: JSON) -> None:
    for name, why in _REFUSED.items():
        if payload.get(name) is not None:
            raise bad(name, why)
    reader.refuse_more_than_text(payload, "Bedrock")
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise bad("response_format", f"{fmt.get('type')!r} cannot be honoured by Bedrock")
    if payload.get("logit_bias"):
        raise bad("logit_bias", "token biases cannot be sent to Bedrock")
    if payload.get("parallel_tool_calls") is False and payload.get("tools"):
        raise bad("parallel_tool_calls", "Bedrock Converse cannot limit a turn to one tool call")


def _texts(content: Any, param: str) -> list[JSON]:
    """Text blocks of a message whose content may only be text (Converse refuses blank
    text blocks, which say nothing anyway)."""
    return [{"text": text} for text in reader.texts(content, param)]


def _user_blocks(content: Any, param: str) -> list[JSON]:
    return reader.user_parts(content, param, "Bedrock", lambda t: {"text": t}, _image)


def _image(image: Any, param: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        raise bad(f"{param}.image_url.url", "must be a string")
    match = reader.DATA_URL.fullmatch(url)
    if match is None:
        # Converse takes image bytes (or an S3 location), never a URL it would fetch.
        raise bad(param, "Bedrock takes images as base64 data URLs only, not by URL")
    image_format = _IMAGE_FORMATS.get(match["media"].lower())
    if image_format is None:
        raise bad(param, f"Bedrock takes jpeg, png, gif or webp images, not {match['media']}")
    # A blob travels base64-encoded in Converse's JSON: the data URL's payload as it is.
    return {"image": {"format": image_format, "source": {"bytes": match["data"]}}}


def _assistant_blocks(message: JSON, param: str) -> list[JSON]:
    found, calls = reader.assistant(message, param, "Bedrock")
    blocks: list[JSON] = [{"text": text} for text in found]
    blocks.extend(
        {"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}} for c in calls
    )
    return blocks


def _tool_result(message: JSON, param: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{param}.tool_call_id", "must be a non-empty string")
    return {"toolResult": {"toolUseId": call_id, "content": _texts(message.get("content"), param)}}


def _merge(turns: list[JSON]) -> list[JSON]:
    """Converse wants user and assistant turns to alternate (the results of an assistant's
    tool calls all in the next user turn, first): neighbours are merged."""
    merged: list[JSON] = []
    for turn in turns:
        if not turn["content"]:
            continue
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1]["content"] = merged[-1]["content"] + turn["content"]
        else:
            merged.append({"role": turn["role"], "content": list(turn["content"])})
    for turn in merged:
        if turn["role"] == "user":
            blocks = turn["content"]
            results = [b for b in blocks if "toolResult" in b]
            turn["content"] = results + [b for b in blocks if "toolResult" not in b]
    return merged


def _inference_config(payload: JSON) -> JSON:
    config: JSON = {}
    cap = reader.positive_int(payload, "max_completion_tokens")
    if cap is None:
        cap = reader.positive_int(payload, "max_tokens")
    if cap is not None:
        config["maxTokens"] = cap
    temperature = reader.number(payload, "temperature")
    if temperature is not None:
        # OpenAI's range is 0..2, Converse's 0..1: clamping keeps the request servable.
        config["temperature"] = min(temperature, 1)
    top_p = reader.number(payload, "top_p")
    if top_p is not None:
        config["topP"] = top_p
    stop = reader.stop_list(payload.get("stop"), "stop")
    if stop:
        config["stopSequences"] = stop
    return config


def _tool_config(payload: JSON, messages: list[JSON]) -> JSON | None:
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad("tools", "must be an array")
    choice = payload.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise bad("tool_choice", "a tool choice needs tools")
        return None
    specs = [{"toolSpec": _tool_spec(t, f"tools[{i}]")} for i, t in enumerate(tools)]
    config: JSON = {"tools": specs}
    if choice == "none":
        # Converse has no "none" choice: a model offered no tools can call none, but a
        # conversation holding tool calls must declare its tools.
        if any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"]):
            raise bad("tool_choice", "'none' cannot be sent to Bedrock with tool calls in it")
        return None
    if choice in ("auto", "required"):
        config["toolChoice"] = {"auto": {}} if choice == "auto" else {"any": {}}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad("tool_choice", "a function choice needs function.name")
        config["toolChoice"] = {"tool": {"name": fn["name"]}}
    elif choice is not None:
        raise bad("tool_choice", "must be auto, required, none or a named function")
    return config


def _tool_spec(tool: Any, param: str) -> JSON:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise bad(param, f"tool type {kind!r} cannot be sent to Bedrock; only function tools")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{param}.function.name", "must be a non-empty string")
    schema = fn.get("parameters")
    spec: JSON = {
        "name": name,
        "inputSchema": {"json": schema if isinstance(schema, dict) else _EMPTY_SCHEMA},
    }
    description = fn.get("description")
    if isinstance(description, str) and description:  # Converse refuses an empty one
        spec["description"] = description
    return spec


# --------------------------------------------------------------------------- responses


def chat_completion(body: JSON, model: str) -> JSON:
    """An OpenAI ``chat.completion`` for a Converse response (KeyError or TypeError when the
    body is not one: the gateway answers that as an upstream error)."""
    blocks = body["output"]["message"]["content"]
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise TypeError("output.message.content is not a list of content blocks")
    texts: list[str] = []
    calls: list[JSON] = []
    for block in blocks:
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            tool = block["toolUse"]
            calls.append(
                {
                    "id": tool["toolUseId"],
                    "type": "function",
                    "function": {
                        "name": tool["name"],
                        "arguments": orjson.dumps(tool.get("input", {})).decode(),
                    },
                }
            )
        # reasoningContent: OpenAI's format has no place for it (its tokens are billed).
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(body.get("stopReason")),
            }
        ],
        "usage": openai_usage(body.get("usage")),
    }
