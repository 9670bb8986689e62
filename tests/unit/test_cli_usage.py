"""An unknown flag is reported with the usage of whatever it was given to."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.cli import build_parser, main


@pytest.mark.parametrize(
    ("argv", "blamed"),
    [
        (["sessions", "--bogus"], "tether sessions: error: unrecognized arguments: --bogus"),
        (["migrations", "path", "--bogus"], "tether migrations path: error: unrecognized"),
        (["--bogus", "sessions"], "tether: error: unrecognized arguments: --bogus"),
    ],
)
def test_an_unknown_flag_is_blamed_on_what_it_was_given_to(
    argv: list[str], blamed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert blamed in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        # Digits of other scripts: int() and float() read them, nobody means them.
        (["sessions", "--limit", "\uff15\uff10"], "not a whole number"),
        (["dev", "--port", "\uff13\uff10\uff10\uff11"], "not a port"),
        # Port 0 would listen on a port no banner, dev.json or endpoint could name.
        (["dev", "--port", "0"], "a port between 1 and 65535"),
        # Refused, they blamed a malformed TETHER_CONNECTIONS_ENDPOINT nobody had set.
        (["dev", "--host", "bad host"], "argument --host: an IP address or a host name"),
        (["dev", "--host", ""], "argument --host: an IP address or a host name"),
        (["dev", "--host", "127.0.0.1:80"], "argument --host: an IP address or a host name"),
        # A burst under one message: every message would be refused.
        (["dev", "--message-rate", "0.4"], "a rate of at least 0.5"),
        (["simulate", "--clients", "\u0968"], "not a whole number"),
        # Taken, they filled memory before a single client connected.
        (["simulate", "--clients", "1000000000"], "at most 10,000"),
        (["chaos", "--clients", "10001"], "at most 10,000"),
        # A sweep run every millisecond: the laptop would run little else.
        (["dev", "--sweep-interval", "0.001s"], "at least 0.1s"),
        (["dev", "--check-every", "0.05s"], "at least 0.1s"),
        (["sweep", "--time-limit", "\uff11m"], "not a duration"),
        # Past any run meant, a typo: taken, they ran on (or tried) for ever.
        (["sweep", "--time-limit", "99999999999999999999d", "--keep-checking"], "at most 1d"),
        (["sweep", "--time-limit", "1d1s"], "argument --time-limit: at most 1d, got '1d1s'"),
        (["simulate", "--duration", "99999999999999999999d"], "argument --duration: at most 1d"),
        (["adopt", "--apply", "--attempts", "999999999999"], "argument --attempts: at most 1000"),
        (["migrate", "--attempts", "1001"], "argument --attempts: at most 1000, got '1001'"),
        (["simulate", "--settle", "99999999999999999999d"], "argument --settle: at most 1d"),
        (["simulate", "--heartbeat", "1d1s"], "argument --heartbeat: at most 1d, got '1d1s'"),
        (["dev", "--handshake-timeout", "99999999999999999999d"], "at most 10m"),
        (["dev", "--handshake-timeout", "11m"], "argument --handshake-timeout: at most 10m"),
        (["dev", "--max-connections", "999999999999999"], "at most 1,000,000, got"),
        (["dev", "--max-connections", "1000001"], "argument --max-connections: at most 1,000,000"),
        (["deploy", "--memory", "\uff11\uff12\uff18"], "not a whole number"),
        (["chaos", "--seed", "\u0663"], "not a whole number"),
        # Taken, -11 ran the run 11 names, and a seed of any length was read.
        (["chaos", "--seed", "-11"], "argument --seed: a seed between 0 and 4294967295, got '-11'"),
        (["chaos", "--seed", "4294967296"], "argument --seed: a seed between 0 and 4294967295"),
        # Taken, a deploy waited that long between two looks at its stack.
        (["deploy", "--poll-seconds", "1e9"], "argument --poll-seconds: '1e9': not a duration"),
        (["deploy", "--poll-seconds", "99999"], "argument --poll-seconds: at most 1m, got '99999'"),
        (["destroy", "--poll-seconds", "61s"], "argument --poll-seconds: at most 1m, got '61s'"),
        (["deploy", "--poll-seconds", "nan"], "argument --poll-seconds: 'nan': not a duration"),
        (["chaos", "--minutes", "\u0661"], "not a duration"),
        # Taken, AWS was asked, and botocore's refusal was a failure (exit 1).
        (["destroy", "--stack", "s", "--region", "us east 1"], "not an AWS region's name"),
        # Taken as no flag, $AWS_PROFILE's account (or the default's) was used unsaid.
        (["deploy", "--stack", "s", "--profile", ""], "argument --profile: empty: name a"),
        (["destroy", "--stack", "s", "--profile", " "], "argument --profile: empty: name a"),
        (["deploy", "--stack", "s", "--region", "eu-west-1;x"], "not an AWS region's name"),
        (["destroy", "--stack", "s", "--region", ""], "argument --region: empty"),
        # What websockets cannot connect to: each client crashed on it (a port out of
        # range), or said the URL back with the --token appended to it.
        (["simulate", "--url", "ws://127.0.0.1:99999"], "its port a number up to 65535"),
        (["simulate", "--url", "ws://127.0.0.1:3001/#top"], "without a #fragment"),
        (["simulate", "--url", "ws://127.0.0.1:3001/#"], "without a #fragment"),
        (["simulate", "--url", "ws://hunter2-secret@127.0.0.1:3001"], "needs its password"),
        # Read before anything runs, and never repeated: a URL may hold a password.
        (["migrate", "--database-url", "mysql://u:hunter2-secret@h/db"], "postgresql://"),
        (["sweep", "--database-url", "postgresql://u:p@ss@h/db"], "more than one '@'"),
        # The example it gives is whole, not scrubbed into user:***@host.
        (["sweep", "--database-url", "not a url"], "must look like postgresql://user@host:5432"),
    ],
)
def test_a_flag_value_it_cannot_use_is_a_usage_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert "hunter2-secret" not in err
    assert "p@ss" not in err
    assert "***" not in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["migrate", "--status", "--embedded", "--database-url", "postgresql://u@h/db"],
            "not both",
        ),
        (
            [
                *("simulate", "--url", "ws://127.0.0.1:9", "--database-url", "postgresql:///x"),
                *("--drop-rate", "0.6", "--silent-rate", "0.5"),
            ],
            "add up to more than 1",
        ),
        (["migrations", "export", "--version-prefix", "abc", "--to", "."], "YYYYMMDDHHMMSS"),
        # A dry run takes no batches: a time limit given to it was taken and did nothing.
        (
            ["sweep", "--dry-run", "--time-limit", "5m", "--database-url", "postgresql://u@h/db"],
            "--dry-run counts once and runs nothing: it takes no --time-limit",
        ),
        # Durations said as they are written (they read "(120s)", and 99999d "(8.64e+09s)").
        (
            ["dev", "--check-every", "2m", "--sweep-interval", "1m"],
            "--check-every (2m) must not be longer than --sweep-interval (1m)",
        ),
        (
            ["dev", "--check-every", "99999d", "--sweep-interval", "1m"],
            "--check-every (99999d) must not be longer",
        ),
        # Said back as it was written (it read "got 180s").
        (["deploy", "--stack", "x", "--sweep-rate", "3m"], "one of 1m, 2m, 5m, 10m, got 3m"),
        # Refused only once AWS was asked: unreachable, a failure (exit 1), not a typo.
        (
            [
                "deploy",
                "--stack",
                "s",
                "--endpoint-url",
                "http://127.0.0.1:9",
                "--database-secret",
                "",
            ],
            "--database-secret: the value given is not allowed: empty",
        ),
        (
            [
                "deploy",
                "--stack",
                "s",
                "--endpoint-url",
                "http://127.0.0.1:9",
                "--jwt-audience",
                " ",
            ],
            "--jwt-audience: is empty",
        ),
        # Taken and ignored, as if the rewrite's lock could be cut into batches.
        (
            ["adopt", "--finish", "--batch-size", "100", "--database-url", "postgresql://u@h/db"],
            "--batch-size: --finish rewrites the table in one statement, not in batches",
        ),
        # Taken and ignored, as if --check asked before a change, or waited for a lock.
        (
            ["adopt", "--check", "--yes", "--database-url", "postgresql://u@h/db"],
            "--yes: --check changes nothing and takes no lock: leave it out",
        ),
        (
            ["adopt", "--check", "--attempts", "3", "--database-url", "postgresql://u@h/db"],
            "--attempts: --check changes nothing and takes no lock: leave it out",
        ),
    ],
)
def test_flags_that_contradict_each_other_exit_2_having_done_nothing(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_sweep_help_says_the_time_limit_a_run_takes_when_none_is_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "new batches after this long (default: 5m, at most 1d)" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "--time-limit", "1d"],
        ["simulate", "--duration", "1d"],
        ["adopt", "--apply", "--attempts", "1000"],
        ["migrate", "--attempts", "1000"],
        ["simulate", "--settle", "1d"],
        ["simulate", "--heartbeat", "1d"],
        ["dev", "--handshake-timeout", "10m"],
        ["dev", "--max-connections", "1000000"],
    ],
    ids=[
        "sweep-time-limit",
        "simulate-duration",
        "adopt-attempts",
        "migrate-attempts",
        "simulate-settle",
        "simulate-heartbeat",
        "dev-handshake-timeout",
        "dev-max-connections",
    ],
)
def test_a_value_at_its_upper_bound_is_taken(argv: list[str]) -> None:
    build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("simulate", "how long to wait for the sweep after the clients are done (at most 1d)"),
        ("simulate", "heartbeat interval, as tether asks of clients (0: none; at most 1d)"),
        ("dev", "by then (408; at most 10m)"),
        ("dev", "file limit allows, at most 1,000,000)"),
    ],
    ids=["simulate-settle", "simulate-heartbeat", "dev-handshake-timeout", "dev-max-connections"],
)
def test_help_says_each_upper_bound(
    command: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert says in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("text", "minutes"), [("1", 1.0), (".5", 0.5), ("1.", 1.0), ("90s", 1.5)])
def test_chaos_minutes_are_a_bare_number_or_a_duration(text: str, minutes: float) -> None:
    assert build_parser().parse_args(["chaos", "--minutes", text]).minutes == minutes


@pytest.mark.parametrize("command", ["dev", "simulate", "chaos"])
def test_help_shows_no_python_value_for_an_option_without_a_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tether dev --help` showed "(default: None)" beside --database-url, --fault-file
    and simulate's --token, "(default: False)" beside --json, "(default: [])" beside
    --route: Python's words, not a default anyone can give."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for python_value in ("(default: None)", "(default: False)", "(default: [])"):
        assert python_value not in shown
    if command != "chaos":
        # Where the database comes from when the flag is left out, as the command reads it.
        assert "(default: $TETHER_DATABASE_URL, then $DATABASE_URL, else" in shown


@pytest.mark.parametrize("folder", [pytest.param("", id="empty"), pytest.param("  ", id="spaces")])
def test_migrations_export_refuses_a_blank_folder_and_writes_nothing(
    folder: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--to ""` wrote every migration into the current folder, and `--to " "` into a
    new folder named by the spaces."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["migrations", "export", "--to", folder])
    assert exited.value.code == 2
    assert "argument --to: a folder is required" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "dev-box.lan"],  # noqa: S104 - under test
)
def test_dev_listens_on_an_address_or_a_host_name(host: str) -> None:
    assert build_parser().parse_args(["dev", "--host", host]).host == host


@pytest.mark.parametrize(
    ("bucket", "rule"),
    [
        ("Bad_Bucket", "lowercase letters, digits, periods (.) and hyphens (-) only"),
        ("ab", "between 3 and 63 characters, got 2"),
        ("b" * 64, "between 3 and 63 characters, got 64"),
        ("-bundles", "must begin and end with a letter or a digit"),
        ("bundles.", "must begin and end with a letter or a digit"),
        ("my..bundles", "must not hold two adjacent periods"),
        ("192.168.5.4", "must not be formatted as an IP address"),
        ("xn--bundles", "must not begin with xn--, which S3 reserves"),
        ("sthree-bundles", "must not begin with sthree-, which S3 reserves"),
        ("amzn-s3-demo-bundles", "must not begin with amzn-s3-demo-, which S3 reserves"),
        ("bundles-s3alias", "must not end with -s3alias, which S3 reserves"),
        ("bundles--ol-s3", "must not end with --ol-s3, which S3 reserves"),
        ("bundles.mrap", "must not end with .mrap, which S3 reserves"),
        ("bundles--x-s3", "must not end with --x-s3, which S3 reserves"),
        ("bundles--table-s3", "must not end with --table-s3, which S3 reserves"),
    ],
    ids=lambda value: value[:24],
)
@pytest.mark.parametrize("command", ["deploy", "destroy"])
def test_a_bucket_name_s3_refuses_is_a_usage_error_naming_the_rule(
    command: str, bucket: str, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """tether deploy --bucket Bad_Bucket built the bundle before S3 refused the name (and
    an emulator took it): the name is now checked as the command line is read."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--stack", "x", f"--bucket={bucket}", "--region", "us-east-1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"--bucket: {bucket!r} is not an S3 bucket name: {rule}" in err


@pytest.mark.parametrize(
    "bucket", ["tether-deploy-123456789012-us-east-1", "my.bundles.example", "b0x", "1.2.3"]
)
def test_a_bucket_name_s3_takes_is_taken(bucket: str) -> None:
    parsed = build_parser().parse_args(["deploy", "--stack", "x", "--bucket", bucket])
    assert parsed.bucket == bucket


def test_the_readme_says_a_refusal_for_what_was_found_exits_1() -> None:
    """kick without an @connections endpoint and adopt --finish before --apply refuse,
    nothing done, with 1 (tests/integration): the README said 2 was for every refusal
    where nothing was done."""
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    exits = readme[readme.index("Every command exits 0") :]
    exits = exits[: exits.index("130 when interrupted")]
    usage, failure = exits.split(", 1 when it failed", 1)
    assert "2 when it refused the command line as given" in usage
    assert "refused for what it found rather than for what it was given" in failure
    assert "`kick` without an `@connections` endpoint" in failure
    assert "`adopt --finish` before `--apply`" in failure


@pytest.mark.parametrize(
    ("argv", "blamed"),
    [
        # The URL given without its flag.
        (["migrate", "postgresql://app:S3cr3tPW-xyz@db.example.com/app"], "postgresql://app:***@"),
        (["sessions", "host=db.example.com password=S3cr3tPW-xyz"], "password=***"),
        # A misspelt flag, its value joined or apart.
        (["migrate", "--databse-url=postgresql://app:S3cr3tPW-xyz@db/app"], ": --databse-url\n"),
        (["simulate", "--tokn", "S3cr3tPW-xyz-opaque"], ": --tokn\n"),
        (["simulate", "--tokn=S3cr3tPW-xyz-opaque"], ": --tokn\n"),
        # A %-escape that is no UTF-8: refused as such, not as the value repeated.
        (["migrate", "--database-url", "postgresql://app:S3cr3tPW-xyz%E9@db/app"], "not UTF-8"),
        # An abbreviation that fits more than one flag.
        (["deploy", "--stack", "s", "--data=postgresql://app:S3cr3tPW-xyz@db/app"], "--data could"),
    ],
)
def test_arguments_it_cannot_place_are_named_without_their_secrets(
    argv: list[str], blamed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert blamed in err
    assert "S3cr3tPW" not in err


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_a_password_cut_by_a_raw_ampersand_is_explained_in_words_the_cli_keeps(
    given: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the refusal says survives the hiding of secrets on its way out: it read
    "after its ?password= *** named: it may be ...", its own words taken for a password."""
    url = "postgresql://app@db.example.com/app?password=Pa&S3cr3tPW-xyz"
    if given == "flag":
        with pytest.raises(SystemExit) as exited:
            main(["migrate", "--database-url", url])
        assert exited.value.code == 2
    else:
        monkeypatch.setenv("DATABASE_URL", url)
        assert main(["migrate"]) != 0
    err = capsys.readouterr().err
    assert "(not named: it may be the rest of the password; write" in err, err
    assert "***" not in err, err
    assert "S3cr3tPW" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "postgresql://app:S3cr3t PW-xyz@db.example.com/app"],
        ["postgresql://app:S3cr3t PW-xyz@db.example.com/app"],
        ["migrate", "--databse-url", "postgresql://app:S3cr3t PW-xyz@db.example.com/app"],
        ["deploy", "--stack", "s", "--data=postgresql://app:S3cr3t PW-xyz@db.example.com/app"],
    ],
)
def test_a_url_whose_password_has_a_space_is_not_repeated_when_misplaced(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A password typed with a space in it (not %20) ends where no pattern can tell: the
    URL given without its flag was named with the password whole."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "S3cr3t" not in err and "PW-xyz" not in err, err
