"""Google Gemini (the Generative Language API) as a codec upstream.

The adapter presents itself as an OpenAI one (``wire = "openai"``): an OpenAI client's
request reaches it as a Chat Completions payload, an Anthropic client's after the gateway's
Anthropic -> OpenAI translation. At its edge it speaks Gemini:

- the request goes to ``{base_url}/models/{model}:generateContent`` (a stream to
  ``:streamGenerateContent?alt=sse``, embeddings to ``:batchEmbedContents``) with the key in
  ``x-goog-api-key`` -- never in the URL, which ends up in logs;
- :meth:`GeminiAdapter.encode` turns the payload into a ``GenerateContentRequest``: messages
  into ``contents`` (roles ``user`` / ``model``) and ``systemInstruction``; text and base64
  images; tool calls and results into ``functionCall`` / ``functionResponse`` parts; tools
  into ``functionDeclarations`` (schemas mapped by :mod:`~costwarden.providers.
  gemini_schema`); ``tool_choice`` into ``toolConfig``; the sampling fields and JSON modes
  into ``generationConfig``. What Gemini cannot do as asked (``n`` > 1, audio, logprobs,
  image URLs, ...) raises :class:`~costwarden.providers.translate.TranslationError`, a 400,
  rather than being served as something the client did not ask for;
- the answers come back through :mod:`costwarden.providers.gemini_stream`.

Gemini's ``functionResponse`` names the function, not the call, so a tool message's
``tool_call_id`` is resolved through the assistant message that made the call.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from costwarden.pricing import TokenUsage
from costwarden.providers import openai_reader as reader
from costwarden.providers.base import ProviderAdapter, ProviderSpec, StreamDecoder, StreamMeter
from costwarden.providers.gemini_schema import gemini_schema
from costwarden.providers.gemini_stream import (
    GeminiStreamDecoder,
    embeddings_usage,
    openai_completion,
    openai_embeddings,
    token_usage,
)
from costwarden.providers.openai import OpenAIStreamMeter
from costwarden.providers.openai_reader import bad

JSON = dict[str, Any]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

# Fields of an OpenAI request whose meaning Gemini cannot honour here.
_REFUSED: dict[str, str] = {
    "audio": "audio output is not supported through Gemini",
    "functions": "legacy functions are not translated; use tools",
    "function_call": "legacy function_call is not translated; use tool_choice",
    "web_search_options": "OpenAI web search cannot be performed by Gemini",
    "logit_bias": "Gemini has no logit bias",
    "top_logprobs": "log probabilities are not translated to Gemini",
}
# Gemini's inline image types.
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
_MAX_STOP = 5  # Gemini takes at most five stop sequences
# reasoning_effort as Google's own OpenAI-compatible endpoint maps it to a thinking budget.
_THINKING_BUDGET: dict[str, int] = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}
_PENALTIES = (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"))
_TOOL_MODES: dict[str, str] = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


class GeminiAdapter(ProviderAdapter):
    """The OpenAI format to its clients, Gemini's to Google (see the module)."""

    wire = "openai"
    codec = True
    endpoints: ClassVar[dict[str, str]] = {
        "chat.completions": ":generateContent",
        "embeddings": ":batchEmbedContents",
    }

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        self._urls: dict[tuple[str, str, bool], str] = {}

    def url(self, endpoint: str, model: str, stream: bool) -> str:
        key = (endpoint, model, stream)
        found = self._urls.get(key)
        if found is None:
            action = self.endpoints[endpoint]
            if stream and endpoint == "chat.completions":
                action = ":streamGenerateContent?alt=sse"
            found = f"{self.base_url}/models/{quote(_bare(model), safe='')}{action}"
            self._urls[key] = found
        return found

    def headers(self, client_headers: dict[bytes, bytes], url: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["x-goog-api-key"] = self._api_key
        return headers

    def models_url(self) -> str | None:
        return self.base_url + "/models?pageSize=1000"  # Google's largest page: one request

    def model_ids(self, body: Any) -> set[str]:
        """The ids in Google's ``ListModelsResponse`` (``models[].name``, ``models/`` off)."""
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise ValueError("the models list has no models array")
        names = (m.get("name") for m in models if isinstance(m, dict))
        return {_bare(name) for name in names if isinstance(name, str)}

    def usage_from_body(self, endpoint: str, body: dict[str, Any]) -> TokenUsage:
        if endpoint == "embeddings":
            return embeddings_usage(body)
        return token_usage(body.get("usageMetadata") if isinstance(body, dict) else None)

    def stream_meter(self, *, client_wants_usage: bool) -> StreamMeter:
        return OpenAIStreamMeter(client_wants_usage=client_wants_usage)

    def prepare(self, endpoint: str, payload: dict[str, Any], stream: bool) -> bool:
        return False  # Gemini reports usage in every stream: nothing to ask for

    def encode(self, endpoint: str, payload: dict[str, Any]) -> bytes:
        if endpoint == "embeddings":
            return orjson.dumps(embeddings_request(payload))
        return orjson.dumps(generate_request(payload))

    def decode(self, endpoint: str, body: dict[str, Any], model: str) -> dict[str, Any]:
        if endpoint == "embeddings":
            return openai_embeddings(body, model)
        return openai_completion(body, model)

    def stream_decoder(self, model: str) -> StreamDecoder:
        return GeminiStreamDecoder(model)


def _bare(model: str) -> str:
    """The model id without the ``models/`` its resource name starts with."""
    return model.removeprefix("models/")


# --------------------------------------------------------------------------- embeddings


def embeddings_request(payload: JSON) -> JSON:
    """A ``batchEmbedContentsRequest`` for an OpenAI embeddings request."""
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "must be a non-empty string")
    inputs = payload.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise bad("input", "must be a string or a non-empty array of strings")
    if not all(isinstance(text, str) for text in inputs):
        raise bad("input", "Gemini embeds text only, not token arrays")
    if any(not text for text in inputs):
        raise bad("input", "Gemini cannot embed an empty string")
    dims = payload.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise bad("dimensions", "must be a positive integer")
    name = "models/" + _bare(model)
    requests: list[JSON] = []
    for text in inputs:
        request: JSON = {"model": name, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            request["outputDimensionality"] = dims
        requests.append(request)
    return {"requests": requests}


# --------------------------------------------------------------------------- chat


def generate_request(payload: JSON) -> JSON:
    """A ``GenerateContentRequest`` equivalent to an OpenAI chat completions request."""
    _refuse(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "must be a non-empty array")
    system, contents = _contents(messages)
    if not contents:
        raise bad("messages", "Gemini needs at least one user or assistant message")
    out: JSON = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    _tools(payload, out)
    config = _generation_config(payload)
    if config:
        out["generationConfig"] = config
    return out


def _refuse(payload: JSON) -> None:
    for name, why in _REFUSED.items():
        if payload.get(name) is not None:
            raise bad(name, why)
    if payload.get("logprobs") not in (None, False):
        raise bad("logprobs", "log probabilities are not translated to Gemini")
    reader.refuse_more_than_text(payload, "Gemini")


def _contents(messages: list[Any]) -> tuple[list[JSON], list[JSON]]:
    """(systemInstruction parts, contents) of the messages; neighbours of one role merged."""
    system: list[JSON] = []
    turns: list[tuple[str, list[JSON]]] = []
    names: dict[str, str] = {}  # tool call id -> function name, from the assistant turns
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), param))
        elif role == "user":
            turns.append(("user", _user_parts(message.get("content"), param)))
        elif role == "assistant":
            turns.append(("model", _model_parts(message, param, names)))
        elif role == "tool":
            turns.append(("user", [_function_response(message, param, names)]))
        elif role == "function":
            raise bad(param, "legacy role 'function' is not translated; use tool messages")
        else:
            raise bad(param, f"role {role!r} cannot be translated to Gemini")
    contents: list[JSON] = []
    for role, parts in turns:
        if not parts:
            continue  # Gemini refuses a content without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": list(parts)})
    return system, contents


def _text_parts(content: Any, param: str) -> list[JSON]:
    """Text parts of a message whose content may only be text (empty texts left out:
    Gemini refuses an empty text part)."""
    return [{"text": text} for text in reader.texts(content, param)]


def _user_parts(content: Any, param: str) -> list[JSON]:
    return reader.user_parts(content, param, "Gemini", lambda t: {"text": t}, _image)


def _image(image: Any, param: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        raise bad(f"{param}.image_url.url", "must be a string")
    match = reader.DATA_URL.fullmatch(url)
    if match is None:
        raise bad(param, "Gemini takes images as base64 data URLs, not links")
    media = match["media"].lower()
    if media not in _IMAGE_TYPES:
        raise bad(param, f"Gemini takes png, jpeg, webp, heic or heif images, not {media}")
    return {"inlineData": {"mimeType": media, "data": match["data"]}}


def _model_parts(message: JSON, param: str, names: dict[str, str]) -> list[JSON]:
    """An assistant turn as Gemini's parts; ``names`` learns each call's function name
    (Gemini matches a result to its call by name, not by id)."""
    found, calls = reader.assistant(message, param, "Gemini")
    parts: list[JSON] = [{"text": text} for text in found]
    for call in calls:
        names[call.id] = call.name
        parts.append({"functionCall": {"name": call.name, "args": call.arguments}})
    return parts


def _function_response(message: JSON, param: str, names: dict[str, str]) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{param}.tool_call_id", "must be a non-empty string")
    name = names.get(call_id)
    if name is None:
        # Gemini matches a result to its call by the function's name.
        raise bad(f"{param}.tool_call_id", f"{call_id!r} answers no earlier assistant tool call")
    text = "".join(p["text"] for p in _text_parts(message.get("content"), param))
    return {"functionResponse": {"name": name, "response": {"output": text}}}


def _tools(payload: JSON, out: JSON) -> None:
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad("tools", "must be an array")
    declarations = [_declaration(t, f"tools[{i}]") for i, t in enumerate(tools or [])]
    choice = payload.get("tool_choice")
    config: JSON | None = None
    if isinstance(choice, str) and choice in _TOOL_MODES:
        config = {"mode": _TOOL_MODES[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad("tool_choice", "a function choice needs function.name")
        config = {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    elif choice is not None:
        raise bad("tool_choice", "must be auto, required, none or a named function")
    if not declarations:
        if config is not None and config["mode"] == "ANY":
            raise bad("tool_choice", "requires a tool call, but the request has no tools")
        return  # Gemini takes no tool config without tools
    out["tools"] = [{"functionDeclarations": declarations}]
    # (parallel_tool_calls has no Gemini equivalent: the model decides, as OpenAI's does.)
    if config is not None:
        out["toolConfig"] = {"functionCallingConfig": config}


def _declaration(tool: Any, param: str) -> JSON:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise bad(param, f"tool type {kind!r} cannot be translated; only function tools can")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{param}.function.name", "must be a non-empty string")
    out: JSON = {"name": name}
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    schema = fn.get("parameters")
    # Gemini refuses an object schema without properties: a function without parameters
    # is declared without a schema.
    if isinstance(schema, dict) and (schema.get("properties") or schema.get("type") != "object"):
        out["parameters"] = gemini_schema(schema, f"{param}.function.parameters")
    return out


def _generation_config(payload: JSON) -> JSON:
    config: JSON = {}
    cap = reader.positive_int(payload, "max_completion_tokens")
    if cap is None:
        cap = reader.positive_int(payload, "max_tokens")
    if cap is not None:
        config["maxOutputTokens"] = cap
    for key, name in (("temperature", "temperature"), ("top_p", "topP")):
        value = reader.number(payload, key)
        if value is not None:
            config[name] = value
    for key, name in _PENALTIES:
        value = reader.number(payload, key)
        if value:  # zero is the default: not sent, as not every Gemini model takes these
            config[name] = value
    seed = payload.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise bad("seed", "must be an integer")
        config["seed"] = seed
    stop = _stop(payload.get("stop"))
    if stop:
        config["stopSequences"] = stop
    _response_format(payload.get("response_format"), config)
    effort = payload.get("reasoning_effort")
    if effort is not None:
        if effort not in _THINKING_BUDGET:
            raise bad("reasoning_effort", f"must be one of {', '.join(_THINKING_BUDGET)}")
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGET[effort]}
    return config


def _response_format(fmt: Any, config: JSON) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad("response_format.json_schema.schema", "must be a JSON schema object")
        config["responseMimeType"] = "application/json"
        config["responseSchema"] = gemini_schema(schema, "response_format.json_schema.schema")
        return
    raise bad("response_format", f"{kind!r} cannot be honoured by Gemini")


def _stop(value: Any) -> list[str]:
    stop = reader.stop_list(value, "stop")
    if len(stop) > _MAX_STOP:
        raise bad("stop", f"Gemini takes at most {_MAX_STOP} stop sequences, got {len(stop)}")
    return stop
