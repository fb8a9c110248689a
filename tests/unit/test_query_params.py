"""Query API parameters: typed, bounded, one line per refusal; the bearer-token check."""

from __future__ import annotations

import pytest

from processor.auth import BearerAuth
from processor.config.components import HttpAuth
from processor.errors import ConfigError, ParamError
from processor.since import parse_since
from processor.storage.catalogue import NO_UNTIL_MS
from processor.storage.catalogue_sql import CATALOGUE
from processor.storage.queries import request_params

NOW = 1_800_000_000_000  # epoch ms
HOUR = 3_600_000


def test_defaults_and_typed_values() -> None:
    assert request_params("health", {}, NOW) == {
        "since_ms": NOW - 15 * 60_000, "until_ms": NO_UNTIL_MS, "service": "", "limit": 10_000}
    got = request_params("health", [("since", "2h"), ("until", "30m"), ("service", "checkout"),
                                    ("limit", "50")], NOW)
    assert got == {"since_ms": NOW - 2 * HOUR, "until_ms": NOW - HOUR // 2, "service": "checkout",
                   "limit": 50}


@pytest.mark.parametrize("raw, message", [
    ({"since": "99999999999999999999s"}, "since: '99999999999999999999s' reaches back before 1970"),
    ({"since": "1" + "0" * 100 + "s"}, "is too long"),
    ({"since": "yesterday"}, "since: invalid 'yesterday'"),
    ({"since": "-5m"}, "since: invalid '-5m'"),
    ({"until": "9999999h"}, "until: '9999999h' reaches back before 1970"),
    ({"limit": "-1"}, "limit: -1 is out of range [0, 10000]"),
    ({"limit": "10001"}, "limit: 10001 is out of range"),
    ({"limit": "1e3"}, "limit: '1e3' is not a whole number"),
    ({"limit": "99999999999999999999999"}, "is not a whole number"),
    ({"service": "x" * 1025}, "service: longer than 1024 characters"),
    ({"sql": "SELECT 1"}, "unknown parameter(s) ['sql']"),
    ({"since": "1h", "since_ms": "5"}, "give since or since_ms, not both"),
])
def test_bad_values_are_one_line_refusals(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ParamError) as info:
        request_params("health", raw, NOW)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_name_is_data_whatever_it_holds() -> None:
    # Span names are untrusted but they are names: a newline or quote in one is matched as
    # such (a typed parameter), never refused, or the entity could not be looked at.
    assert request_params("health", {"service": "a\nb' OR 1=1"}, NOW)["service"] == "a\nb' OR 1=1"


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(ParamError, match="since: given more than once"):
        request_params("health", [("since", "1m"), ("since", "2m")], NOW)


def test_the_longest_lookback_reaches_1970_and_no_further() -> None:
    hours = NOW // HOUR
    assert request_params("health", {"since": f"{hours}h"}, NOW)["since_ms"] == NOW - hours * HOUR >= 0
    with pytest.raises(ParamError):
        request_params("health", {"since": f"{hours + 1}h"}, NOW)


def test_every_catalogue_query_takes_the_range_and_a_limit() -> None:
    for q in CATALOGUE.values():
        assert {p.name for p in q.all_params} >= {"since_ms", "until_ms", "limit"}, q.name


def test_the_cli_since_uses_the_same_bounds() -> None:
    assert parse_since("15m", NOW) == NOW - 15 * 60_000
    with pytest.raises(ValueError, match="before 1970"):
        parse_since("99999999999999999999s", NOW)


def test_bearer_auth() -> None:
    open_door = BearerAuth.from_config(HttpAuth(), "api.auth", environ={})
    assert not open_door.enabled and open_door.allows(None) and open_door.headers() == {}
    auth = BearerAuth.from_config(HttpAuth(bearer_token_env="API_TOKEN"), "api.auth",
                                  environ={"API_TOKEN": "s3cret"})
    assert auth.enabled
    assert auth.allows("Bearer s3cret") and auth.allows(auth.headers()["Authorization"])
    assert not auth.allows(None) and not auth.allows("Bearer wrong") and not auth.allows("s3cret")
    assert not auth.allows("Basic czNjcmV0")


def test_a_named_but_unset_token_variable_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="api.auth.bearer_token_env: environment variable API_TOKEN is unset"):
        BearerAuth.from_config(HttpAuth(bearer_token_env="API_TOKEN"), "api.auth", environ={"API_TOKEN": " "})
