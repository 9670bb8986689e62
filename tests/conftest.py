"""Test harness: a real Postgres, a template built from the migrations once per
run, and a fresh database copied from it for every test that needs one."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from tests import pg15 as pg15_support
from tests.support import AUDIENCE, HS256_SECRET, ISSUER
from tether import migrate, runtime
from tether.cli.common import configured_url
from tether.drivers.postgres import PostgresStore
from tether.local import embedded

ROOT = Path(__file__).resolve().parents[1]
# pytest-xdist runs the suite in workers (gw0, gw1, ...): each has a server of its own,
# so one worker's databases, connections and terminations never touch another's.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEST_DATA_DIR = ROOT / ".tether" / "-".join(filter(None, ("test-pgdata", XDIST_WORKER)))


LAYERS = ("unit", "integration", "e2e")
MOST_WORKERS = 8
"""Each worker has a Postgres (and, where its tests need them, a Postgres 15 and a wheel)
of its own, and takes a test file at a time: past this, the longest files set the time."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two workers a core (``--numprocesses=auto``): much of the suite waits, on a
    command starting, a timer, a browser, a server it froze; on two cores, three workers
    left two fifths of the CPU idle, four kept it busy."""
    del config
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(MOST_WORKERS, 2 * (cores or 1)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its layer, taken from its folder."""
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(autouse=True)
def logs_stay_on_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run in the test process (``tether.cli.main``) sends logs to stderr for
    good; the tests after it expect the functions' logs on stdout, as Lambda writes them."""
    from tether.aws import observability  # noqa: PLC0415

    monkeypatch.setattr(observability._stream, "to_stderr", observability._stream.to_stderr)


def with_database(url: str, dbname: str) -> str:
    """The same server URL, pointed at another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def allow_connections(server_url: str, database_url: str, allowed: bool) -> None:
    """Let clients connect to the test database again, or turn them away and end every
    connection it has: the database gone, as far as tether can tell."""
    name = str(conninfo_to_dict(database_url)["dbname"])
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("alter database {} allow_connections {}").format(
                sql.Identifier(name), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            # Waits (up to 5 s) until each is gone, so none answers one more query.
            admin.execute(
                "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
                " where datname = %s and pid <> pg_backend_pid()",
                (name,),
            )


def set_for_database(database_url: str, setting: str, value: str) -> None:
    """A setting every new connection to the test database starts with, as a server
    (or its administrator) may have it: a time zone, a date style, an isolation level."""
    name = str(conninfo_to_dict(database_url)["dbname"])
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("alter database {} set {} = {}").format(
                sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)
            )
        )


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A Postgres server for the run: DATABASE_URL if given, else the embedded one."""
    configured = configured_url()
    if configured:
        yield configured
        return
    server = embedded.start(TEST_DATA_DIR)
    yield server.url
    if server.started_here:
        server.stop()


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A database holding exactly the migrated schema; tests copy it."""
    name = f"tether_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        migrate.migrate(with_database(server_url, name))
        yield name
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def _copy_strategy(server_url: str) -> sql.Composable:
    with psycopg.connect(server_url, autocommit=True) as admin:
        row = admin.execute("show server_version_num").fetchone()
    version = int(row[0]) if row else 0
    # FILE_COPY (Postgres 15+) copies a small template far faster than WAL_LOG.
    return sql.SQL("strategy file_copy") if version >= 150000 else sql.SQL("")


@pytest.fixture
def database_url(
    server_url: str, template_database: str, _copy_strategy: sql.Composable
) -> Iterator[str]:
    """A database of this test's own, with the full schema and no rows."""
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create database {} template {} {}").format(
                sql.Identifier(name), sql.Identifier(template_database), _copy_strategy
            )
        )
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    name = f"tether_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def plain_owner_url(server_url: str, template_database: str) -> Iterator[str]:
    """An empty database owned by a role that is no superuser and has no BYPASSRLS (a
    self-hosted Postgres's application owner), as that role: tether's functions, which
    it would own once it migrates, are judged by row level security a table forces."""
    # The roles tether's migrations grant to are the server's, made by the template's.
    del template_database
    owner = f"tether_owner_{uuid.uuid4().hex[:10]}"
    name = f"tether_plain_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login nosuperuser nobypassrls").format(sql.Identifier(owner))
        )
        admin.execute(
            sql.SQL("create database {} owner {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    try:
        yield make_conninfo(with_database(server_url, name), user=owner)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(owner)))


@pytest.fixture
def noinherit_policy_role(server_url: str, plain_owner_url: str) -> Iterator[str]:
    """A role whose member ``plain_owner_url``'s owner is without inheriting its
    privileges (NOINHERIT): a policy for it does not apply to the owner."""
    role = f"tether_policy_{uuid.uuid4().hex[:10]}"
    target = conninfo_to_dict(plain_owner_url)
    owner, database = sql.Identifier(str(target["user"])), str(target["dbname"])
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
        # Before the grant: from Postgres 16 a grant takes its role's INHERIT as it is then.
        admin.execute(sql.SQL("alter role {} noinherit").format(owner))
        admin.execute(sql.SQL("grant {} to {}").format(sql.Identifier(role), owner))
    try:
        yield role
    finally:
        # Its policies are in the owner's database, dropped after this.
        with psycopg.connect(with_database(server_url, database), autocommit=True) as admin:
            admin.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A plain connection to the test's database, for setup and assertions."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    postgres_store = PostgresStore(database_url)
    yield postgres_store
    postgres_store.close()


class SessionFactory:
    """Places sessions in any state, straight in the table, for setting up tests."""

    def __init__(self, conn: psycopg.Connection[dict[str, object]]) -> None:
        self._conn = conn

    def __call__(
        self,
        *,
        connection_id: str | None = None,
        user_id: uuid.UUID | None = None,
        started_seconds_ago: float = 0.0,
        seen_seconds_ago: float | None = None,
        ended_seconds_ago: float | None = None,
        end_reason: str = "client_disconnect",
        announced: bool = False,
        failed_announcements: int = 0,
    ) -> dict[str, object]:
        seen = started_seconds_ago if seen_seconds_ago is None else seen_seconds_ago
        row = self._conn.execute(
            """
            insert into public.conversation_sessions
              (connection_id, user_id, session_start, last_seen_at, session_end, end_reason,
               announced_at)
            values (
              %(connection_id)s, %(user_id)s,
              now() - make_interval(secs => %(started)s),
              now() - make_interval(secs => %(seen)s),
              now() - make_interval(secs => %(ended)s),
              case when %(ended)s::float8 is null then null else %(reason)s end,
              case when %(announced)s and %(ended)s::float8 is not null then now() end
            )
            returning *
            """,
            {
                "connection_id": connection_id or f"conn-{uuid.uuid4().hex[:12]}=",
                "user_id": user_id,
                "started": float(started_seconds_ago),
                "seen": float(seen),
                "ended": None if ended_seconds_ago is None else float(ended_seconds_ago),
                "reason": end_reason,
                "announced": announced,
            },
        ).fetchone()
        assert row is not None
        if row["session_end"] is not None and not announced:
            # Ended and not yet announced: in the outbox, free to be claimed.
            self._conn.execute(
                "insert into public.conversation_session_announcements (session_id, claim_count)"
                " values (%s, %s)",
                (row["session_id"], failed_announcements),
            )
        return row


@pytest.fixture
def make_session(db: psycopg.Connection[dict[str, object]]) -> SessionFactory:
    return SessionFactory(db)


# --- AWS through a moto server, and the Lambda environment -------------------------

AWS_REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port: AWS APIs over real HTTP."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    # Named localhost: moto's CloudFormation finds a template's bucket in the path of
    # its S3 address only when the address says localhost (a template over 51,200
    # bytes goes through S3), and reads it as a bucket name otherwise.
    yield f"http://localhost:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Fake credentials pointed at a freshly reset moto server."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    # moto's own reset endpoint: every test starts with no AWS resources.
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(reset, timeout=10):  # noqa: S310
        pass
    yield moto_endpoint


@dataclass
class EventBus:
    name: str
    queue_url: str
    sqs: Any

    def received(self, wait_seconds: int = 1) -> list[dict[str, Any]]:
        """Every event the bus delivered to the test's queue so far."""
        events: list[dict[str, Any]] = []
        while True:
            reply = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
            )
            messages = reply.get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            wait_seconds = 0


@pytest.fixture
def event_bus(aws: str) -> EventBus:
    """A custom bus with a rule for SessionEnded that targets an SQS queue."""
    events = boto3.client("events", endpoint_url=aws, region_name=AWS_REGION)
    sqs = boto3.client("sqs", endpoint_url=aws, region_name=AWS_REGION)
    bus = "tether-test-bus"
    events.create_event_bus(Name=bus)
    queue_url = sqs.create_queue(QueueName="session-ended")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="session-ended",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["tether"], "detail-type": ["SessionEnded"]}),
    )
    events.put_targets(
        Rule="session-ended", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )
    return EventBus(bus, queue_url, sqs)


@pytest.fixture
def lambda_env(
    database_url: str, event_bus: EventBus, aws: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.MonkeyPatch]:
    """The functions' environment: this test's database, the test bus, HS256 tokens."""
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TETHER_DATABASE_URL", database_url)
    monkeypatch.setenv("TETHER_AWS_ENDPOINT_URL", aws)
    monkeypatch.setenv("TETHER_EVENT_BUS_NAME", event_bus.name)
    monkeypatch.setenv("TETHER_JWT_SECRET", HS256_SECRET)
    monkeypatch.setenv("TETHER_JWT_ISSUER", ISSUER)
    monkeypatch.setenv("TETHER_JWT_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("TETHER_HEARTBEAT_THROTTLE_SECONDS", "0")
    runtime.reset()
    yield monkeypatch
    runtime.reset()


# --- Postgres 15 and the Supabase CLI, where this machine has them -------------------

SUPABASE_CLI = ROOT / ".tether" / "tools" / "node_modules" / ".bin" / "supabase"


@pytest.fixture(scope="session")
def pg15() -> Iterator[pg15_support.Cluster]:
    why = pg15_support.unavailable()
    if why:
        pytest.skip(why)
    cluster = pg15_support.start(ROOT / ".tether" / f"pg15-{os.getpid()}")
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.data_dir, ignore_errors=True)


@pytest.fixture
def pg15_database(pg15: pg15_support.Cluster) -> Iterator[str]:
    """An empty database of this test's own on Postgres 15."""
    name = f"tether_pg15_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield pg15.url(name)
    finally:
        with psycopg.connect(pg15.url(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def supabase_cli() -> Path:
    if not SUPABASE_CLI.exists():
        pytest.skip(
            "the Supabase CLI is not installed: `make test` installs it with npm"
            " (npm i -E supabase@2.117.0) where npm exists"
        )
    return SUPABASE_CLI
