"""Optional bearer-token check for every HTTP surface that serves data (query API, web UI)."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from processor.config.components import HttpAuth
from processor.errors import ConfigError


class BearerAuth:
    """Checks `Authorization: Bearer <token>`; with no token configured, everything passes.

    Built once at start from an `HttpAuth` config (`from_config`), so a token variable that
    is named but unset stops the start-up instead of leaving the door open.
    """

    def __init__(self, token: str = "") -> None:
        self._expected = f"Bearer {token}".encode() if token else b""

    @classmethod
    def from_config(cls, cfg: HttpAuth, where: str,
                    environ: Mapping[str, str] | None = None) -> BearerAuth:
        """``where``: the config key path of ``cfg``, for the error message."""
        name = cfg.bearer_token_env
        if not name:
            return cls()
        token = (os.environ if environ is None else environ).get(name, "")
        if not token.strip():
            raise ConfigError(f"{where}.bearer_token_env: environment variable {name} is unset or "
                              "empty; set it to the API token, or clear the key to serve without auth")
        return cls(token.strip())

    @property
    def enabled(self) -> bool:
        return bool(self._expected)

    def allows(self, authorization: str | None) -> bool:
        """Whether a request with this Authorization header may pass (constant-time compare)."""
        if not self._expected:
            return True
        return hmac.compare_digest((authorization or "").strip().encode(), self._expected)

    def headers(self) -> dict[str, str]:
        """What a client (`otel-insights query`) sends."""
        return {"Authorization": self._expected.decode()} if self._expected else {}
