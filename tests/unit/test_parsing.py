"""The pure functions that read what users and API Gateway hand us."""

from __future__ import annotations

import argparse

import pytest

from tether.auth import looks_like_jwt, split_protocols
from tether.aws.connections import stage_endpoint
from tether.cli.deploy import whole_seconds
from tether.durations import describe_seconds, estimate, parse_duration
from tether.errors import InvalidInputError
from tether.lifecycle import reason_for_close
from tether.local.dev import selection_key
from tether.local.simulate import percentile
from tether.models import EndReason

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d12h", 129600.0),
        (" 2H ", 7200.0),
        ("1.5m", 90.0),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "0h0m"])
def test_zero_where_it_means_none(text: str) -> None:
    assert parse_duration(text, zero_allowed=True) == 0.0


@pytest.mark.parametrize(
    # Full-width and Devanagari digits: Python's float() reads them, nobody types them.
    "text",
    [
        *("", "soon", "-2h", "2x", "h", "2h3", "0s", "1e3", "5m5m", "30m1h"),
        *("\uff12h", "\uff19\uff10", "\u0969m"),
    ],
)
def test_bad_durations_say_what_a_duration_is(text: str) -> None:
    with pytest.raises(InvalidInputError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [("0", "more than 0"), ("0s", "more than 0"), ("0h0m", "more than 0"), ("9" * 400, "too long")],
)
def test_durations_are_more_than_nothing_and_finite(text: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says) as refused:
        parse_duration(text)
    assert repr(text) not in str(refused.value)  # the API answers with the message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (20.4, "20 seconds"),
        (59.6, "1 minute"),
        (60, "1 minute"),
        (90, "90 seconds"),
        (119.6, "2 minutes"),
        (3600, "1 hour"),
        (5400, "90 minutes"),
        (7200, "2 hours"),
        (9000, "2.5 hours"),
        (86400, "24 hours"),
        (172800, "2 days"),
        (444 * 3600, "18.5 days"),
    ],
)
def test_durations_are_described_for_people(seconds: float, text: str) -> None:
    """As a person says them: "2.0 hours" was "2 hours" to anyone reading it."""
    assert describe_seconds(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "under a second"),
        (12.4, "about 12 seconds"),
        (150, "about 3 minutes"),
        (210, "about 4 minutes"),
    ],
)
def test_estimates_say_durations_in_the_same_words(seconds: float, text: str) -> None:
    assert estimate(seconds) == text


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1000, None, EndReason.CLIENT_DISCONNECT),
        (1005, None, EndReason.CLIENT_DISCONNECT),
        (1006, None, EndReason.CONNECTION_LOST),
        (1009, None, EndReason.MESSAGE_TOO_BIG),
        (1012, None, EndReason.SHUTDOWN),
        (1001, None, EndReason.SERVER_DISCONNECT),
        (1001, "Idle timeout exceeded", EndReason.IDLE_TIMEOUT),
        (1001, "Maximum connection duration exceeded", EndReason.MAX_DURATION),
        (4321, "application code", EndReason.CLIENT_DISCONNECT),
        # The client's own close frame, whatever its code: a browser tab closing sends
        # 1001, and a client may send any code it likes.
        (1001, "Client-side close frame status code", EndReason.CLIENT_DISCONNECT),
        (1009, "Client-side close frame status code", EndReason.CLIENT_DISCONNECT),
        (1012, "Client-side close frame status code", EndReason.CLIENT_DISCONNECT),
        # 1006 is never sent in a close frame: the connection was lost, whatever the text.
        (1006, "Client-side close frame status code", EndReason.CONNECTION_LOST),
        (None, None, EndReason.CLIENT_DISCONNECT),
    ],
)
def test_close_codes_map_to_end_reasons(
    code: int | None, reason: str | None, expected: EndReason
) -> None:
    assert reason_for_close(code, reason) is expected


@pytest.mark.parametrize(
    ("header", "token", "protocols"),
    [
        (None, None, []),
        ("", None, []),
        ("tether", None, ["tether"]),
        (f"tether, {TOKEN}", TOKEN, ["tether"]),
        (f"{TOKEN}", TOKEN, []),
        (f" , chat ,{TOKEN}, {TOKEN}x", TOKEN, ["chat", f"{TOKEN}x"]),
        ("eyJ.only-two", None, ["eyJ.only-two"]),
    ],
)
def test_sub_protocols_split_into_token_and_offers(
    header: str | None, token: str | None, protocols: list[str]
) -> None:
    assert split_protocols(header) == (token, protocols)


def test_only_three_part_tokens_look_like_jwts() -> None:
    assert looks_like_jwt(TOKEN)
    assert not looks_like_jwt("tether")
    assert not looks_like_jwt("eyJ..x")


@pytest.mark.parametrize(
    ("expression", "key"),
    [
        ("$request.body.action", "action"),
        ("${request.body.type}", "type"),
        ("request.body.op", "op"),
    ],
)
def test_route_selection_expressions(expression: str, key: str) -> None:
    assert selection_key(expression) == key


@pytest.mark.parametrize("expression", ["$request.header.x", "$request.body.", "action", "$x"])
def test_unsupported_route_selection_is_refused(expression: str) -> None:
    with pytest.raises(InvalidInputError, match="route selection"):
        selection_key(expression)


def test_percentiles() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile([], 0.5) is None
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_verbose_goes_before_or_after_the_command() -> None:
    from tether.cli import build_parser  # noqa: PLC0415

    parser = build_parser()
    assert parser.parse_args(["-v", "sweep"]).verbose is True
    assert parser.parse_args(["sweep", "-v"]).verbose is True
    assert getattr(parser.parse_args(["sweep"]), "verbose", False) is False


def test_every_dev_and_simulate_option_has_help_and_shows_its_default() -> None:
    from tether.cli import build_parser  # noqa: PLC0415

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("dev", "simulate"):
        sub = commands.choices[name]  # type: ignore[index]
        options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
        assert all(a.help for a in options), [a.dest for a in options if not a.help]
        # Every option with a default to show says it in its help.
        formatter = sub.formatter_class(sub.prog)
        with_defaults = [
            a for a in options if a.default not in (None, argparse.SUPPRESS, False, [])
        ]
        assert with_defaults
        unsaid = [
            a.dest for a in with_defaults if "(default:" not in str(formatter._get_help_string(a))
        ]
        assert unsaid == [], (name, unsaid)
    assert "(default: 3001)" in commands.choices["dev"].format_help()  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "whole"),
    [("4.1m", 246), ("8.3m", 498), ("0.1h", 360), ("90s", 90), ("0.4s", None), ("10.5s", None)],
)
def test_stack_durations_are_whole_seconds_despite_floating_point(
    text: str, whole: int | None
) -> None:
    # 4.1m parses to 245.99999999999997: whole, and 246 as the stack's parameter.
    assert whole_seconds(parse_duration(text)) == whole


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("https://a1.execute-api.eu-west-1.amazonaws.com/prod", "https://a1.execute-api.eu-west-1.amazonaws.com/prod"),
        ("https://a1.execute-api.eu-west-1.amazonaws.com/prod/", "https://a1.execute-api.eu-west-1.amazonaws.com/prod"),
        ("https://a1.execute-api.eu-west-1.amazonaws.com/prod/@connections", "https://a1.execute-api.eu-west-1.amazonaws.com/prod"),
        ("http://127.0.0.1:3001/local/@connections/{id}", "http://127.0.0.1:3001/local"),
        ("https://a1/prod/@connections/{connection_id}", "https://a1/prod"),
        ("https://a1/prod/@connections/%7BconnectionId%7D", "https://a1/prod"),
        # A real connection id is not a placeholder: left for the call to refuse.
        ("https://a1/prod/@connections/Cz1bXfH0oAMCIxQ=", "https://a1/prod/@connections/Cz1bXfH0oAMCIxQ="),
    ],
)  # fmt: skip
def test_the_connections_endpoint_is_the_stage_s_url_however_it_is_given(
    given: str, endpoint: str
) -> None:
    assert stage_endpoint(given) == endpoint
