"""What a request may cost, as the counters' decision reads it (:class:`~costwarden.budgets.
policy.Ask`): its prompt bound by its bytes, its output cap, priced at a deployment's dearest
rates (cached per deployment, in pico-dollars per token, rounded up)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from costwarden.budgets.policy import Ask
from costwarden.budgets.ports import BudgetConfig
from costwarden.providers.base import Deployment

_PICO = Decimal(10**12)


class Asks:
    def __init__(self, config: BudgetConfig) -> None:
        self._config = config
        self._prices: dict[str, tuple[int, int]] = {}

    def ask(
        self, deployment: Deployment, endpoint: str, body_len: int, payload: dict[str, Any]
    ) -> Ask:
        prices = self._prices.get(deployment.id)
        if prices is None:
            per_in, per_out = deployment.rates.bound_rates()
            prices = self._prices[deployment.id] = (_pico(per_in), _pico(per_out))
        in_pico, out_pico = prices
        b = self._config
        bound = body_len + b.prompt_overhead_tokens
        est = (body_len + 3) // 4 or 1  # at least 1 (a length is never negative)
        choices = 1
        if endpoint == "messages":
            want = payload.get("max_tokens")
        else:
            want = payload.get("max_completion_tokens") or payload.get("max_tokens")
            n = payload.get("n")  # validated: absent, null or a positive integer
            if n is not None and n != 1 and endpoint == "chat.completions":
                choices = n
        return Ask(
            in_bound_tokens=bound,
            in_est_tokens=est,
            in_bound_nanos=-(-bound * in_pico // 1000),
            in_est_nanos=-(-est * in_pico // 1000),
            out_pico=out_pico,
            want_out=want if isinstance(want, int) else None,
            max_out=deployment.max_output_tokens or b.default_max_output_tokens,
            min_out=b.min_output_tokens,
            est_out=b.expected_output_tokens,
            has_output=endpoint != "embeddings",
            choices=choices,
        )


def _pico(usd_per_token: Decimal) -> int:
    return int((usd_per_token * _PICO).to_integral_value(rounding=ROUND_CEILING))
