"""Azure OpenAI: the OpenAI wire format, with a deployment per model named in the URL, the
API version in the query, and the credential in ``api-key`` (or an Entra ID token as a
bearer).

A deployment's ``model`` is the Azure deployment name (``/openai/deployments/<name>/...``);
the body's ``model`` field is sent as well, and ignored by Azure. Prices come from
genai-prices' ``azure`` provider under the model the deployment runs (``price_model`` in
the config when the deployment's name is not a model id).
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from costwarden.providers.base import ProviderSpec
from costwarden.providers.openai import OpenAIAdapter

AUTHS = ("api-key", "entra")


class AzureOpenAIAdapter(OpenAIAdapter):
    endpoints: ClassVar[dict[str, str]] = {
        "chat.completions": "/chat/completions",
        "embeddings": "/embeddings",
    }

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        if not spec.api_version:
            raise ValueError(f"provider {spec.name}: Azure OpenAI needs an api_version")
        if spec.auth not in (None, *AUTHS):
            raise ValueError(f"provider {spec.name}: auth must be one of {AUTHS}")
        self._query = "?api-version=" + quote(spec.api_version, safe="")
        self._bearer = spec.auth == "entra"
        self._urls: dict[tuple[str, str], str] = {}

    def url(self, endpoint: str, model: str, stream: bool) -> str:
        found = self._urls.get((endpoint, model))
        if found is None:
            found = (
                f"{self.base_url}/openai/deployments/{quote(model, safe='')}"
                f"{self.endpoints[endpoint]}{self._query}"
            )
            self._urls[(endpoint, model)] = found
        return found

    def models_url(self) -> str | None:
        # The models the resource can deploy: deployments themselves are not listed by the
        # data-plane API, so a deployment counts as served when the model it runs is here.
        return f"{self.base_url}/openai/models{self._query}"

    def headers(self, client_headers: dict[bytes, bytes], url: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            if self._bearer:
                headers["authorization"] = "Bearer " + self._api_key
            else:
                headers["api-key"] = self._api_key
        return headers
