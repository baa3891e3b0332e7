"""The registry's Alembic migrations, on SQLite and on a real PostgreSQL: a
registry written by release 4.0.0 is stamped as the baseline and upgraded,
and every job, event and delivery reads back as 4.0.0 read it; start-ups
racing each other migrate once; a migration that fails changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, inspect, make_url, text

from pman.errors import JobExists
from pman.lifecycle import Missing, Phase
from pman.models import JobInfo, JobState
from pman.registry import Registry, make_engine, metadata, migrate
from pman.registry.migrate import BASELINE, HEAD, VERSION_TABLE
from tests.integration.conftest import REQUIRE_ENGINES

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
#: release 4.0.0
RELEASE = "25ba7ec"

DIALECTS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
]

#: the phase each record of the 4.0.0 registry has once upgraded, by (jid, active)
PHASES = {
    ("in-flight", True): Phase.ACCEPTED,
    ("running", True): Phase.ON_ENGINE,
    ("succeeded", True): Phase.ON_ENGINE,
    ("failed", True): Phase.ON_ENGINE,
    ("oom", True): Phase.ON_ENGINE,
    ("lost", True): Phase.ACCEPTED,
    ("cancelled", True): Phase.CANCELLED,
    ("again", False): Phase.DELETED,
    ("again", True): Phase.ON_ENGINE,
    ("gone", False): Phase.DELETED,
    ("stray", True): Phase.ON_ENGINE,
    ("q-run-1", True): Phase.ON_ENGINE,
    ("q-run-2", True): Phase.ON_ENGINE,
    ("q-a", True): Phase.ACCEPTED,
    ("q-b", True): Phase.ON_ENGINE,
    ("q-c", False): Phase.DELETED,
    ("q-d", True): Phase.CANCELLED,
    ("q-e", True): Phase.ACCEPTED,
    ("q-f", True): Phase.QUEUED,
}


# ---------------------------------------------------------------- databases
@pytest.fixture
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """new_database(dialect) -> the URL of an empty database of this test's own."""
    made: list[tuple[Any, str]] = []

    def new(dialect: str) -> str:
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / f'registry-{uuid.uuid4().hex[:6]}.db'}"
        server = make_url(request.getfixturevalue("postgresql_url"))
        name = f"{server.database}_m{uuid.uuid4().hex[:8]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append((admin, name))
        return server.set(database=name).render_as_string(hide_password=False)

    yield new
    for admin, name in made:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def release_4_0_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 4.0.0's code, from the repository's history."""
    where = tmp_path_factory.mktemp("pman-4.0.0")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", RELEASE, "pman"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        why = f"git cannot give release 4.0.0 ({RELEASE}): {archive.stderr.decode().strip()}"
        if REQUIRE_ENGINES:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def written_by_4_0_0(release: Path, url: str, tmp_path: Path) -> dict[str, Any]:
    """Make a registry at ``url`` with 4.0.0's own code; what 4.0.0 reads in it."""
    out = tmp_path / "read-by-4.0.0.json"
    env = {**os.environ, "PYTHONPATH": str(release)}
    subprocess.run(
        [sys.executable, str(FIXTURES / "make_registry_4_0_0.py"), "--url", url, "--json", out],
        env=env,
        cwd=release,
        check=True,
        timeout=120,
    )
    return json.loads(out.read_text())


def committed_4_0_0(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A copy of the registry 4.0.0 wrote into tests/fixtures, and what 4.0.0 read in it."""
    db = tmp_path / "registry-4.0.0.sqlite"
    shutil.copy(FIXTURES / "registry-4.0.0.sqlite", db)
    return f"sqlite:///{db}", json.loads((FIXTURES / "registry-4.0.0.json").read_text())


# ---------------------------------------------------------------- reading back
def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def same(want: Any, got: Any) -> Any:
    """``got`` as ``want`` has it: only its keys, and times as instants (a server's
    time zone may write one instant another way)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return {k: same(v, got.get(k)) for k, v in want.items()}
    if isinstance(want, list) and isinstance(got, list):
        return [same(w, g) for w, g in zip(want, got, strict=False)] + got[len(want) :]
    if isinstance(want, str) and isinstance(got, str) and got != want:
        try:
            if datetime.fromisoformat(want) == datetime.fromisoformat(got):
                return want
        except ValueError:
            pass
    return got


def assert_reads_as_4_0_0_did(registry: Registry, expected: dict[str, Any]) -> None:
    for want in expected["records"]:
        got = registry.get(want["id"])
        assert same(want, plain(got)) == want, f"record {want['id']} ({want['jid']})"
        assert got.phase is PHASES[(got.jid, got.active)], got.jid
        events = plain(registry.events(got.id))
        assert same(expected["events"][str(got.id)], events) == expected["events"][str(got.id)]
        deliveries = plain(registry.deliveries(got.id))
        want_d = expected["deliveries"][str(got.id)]
        assert same(want_d, deliveries) == want_d, f"deliveries of {got.jid}"
    listed = registry.list(include_deleted=True, limit=1000).records
    assert sorted(r.id for r in listed) == [r["id"] for r in expected["records"]]
    assert [[d.id, d.submitting] for d in registry.pending_deliveries()] == expected["pending"]
    assert registry.count_queued() == expected["count_queued"]
    assert (
        sorted([*k, v] for k, v in registry.count_by_state().items())
        == (expected["count_by_state"])
    )
    unfinished = sorted(registry.unfinished(), key=lambda r: r.id)
    assert sorted(r.jid for r in unfinished) == expected["unfinished"]
    assert [r.jid for r in unfinished if r.phase is Phase.QUEUED] == expected["queue"]
    # migration 0003: every job of 4.0.0 ran on its one resource, "default"
    assert {r.resource for r in listed} == {"default"}
    by_resource: dict[tuple[str, str], int] = {}
    for (_, state), n in registry.count_by_state().items():
        by_resource[("default", state)] = by_resource.get(("default", state), 0) + n
    assert registry.count_by_resource() == by_resource
    assert registry.count_queued_by_resource() == (
        {"default": expected["count_queued"]} if expected["count_queued"] else {}
    )
    assert registry.list(resources=["hpc"], include_deleted=True).records == []


def assert_goes_on_as_4_0_0_left_it(registry: Registry, expected: dict[str, Any]) -> None:
    """The upgraded registry's jobs carry on: a cancel stays final, the queue
    hands out its next job, a submission that never got there says so."""
    by_jid = {(r["jid"], r["active"]): r["id"] for r in expected["records"]}
    cancelled = by_jid[("cancelled", True)]
    assert not registry.mark_cancelled(cancelled, datetime.now(UTC)), "cancelled once"
    registry.record(cancelled, JobInfo(name="cancelled", state=JobState.FAILED, exit_code=137))
    assert registry.get(cancelled).state is JobState.CANCELLED
    assert registry.claim_next("slurm", 10, resource="hpc") is None, "the queue is default's"
    claimed = registry.claim_next("slurm", 10)
    assert claimed is not None and claimed.jid == expected["queue"][0]
    assert claimed.resource == "default"
    assert claimed.phase is Phase.ACCEPTED and claimed.message == "submitting"
    assert registry.report(by_jid[("in-flight", True)], Missing())
    lost = registry.get(by_jid[("in-flight", True)])
    assert (lost.state, lost.reason) == (JobState.SYSTEM_ERROR, "never_submitted")
    with pytest.raises(JobExists):
        registry.create(_spec("running"), "docker")


def _spec(jid: str) -> Any:
    from pman.models import JobSpec, Mounts, Resources

    return JobSpec(
        name=jid,
        image="img",
        command=["x"],
        env=[],
        resources=Resources(1, 1000, 300, 0),
        mounts=Mounts("key-1/incoming", f"key-1/out-{jid}"),
        plugin_type="ds",
        auid="alice",
        fingerprint=f"fp-{jid}-new",
    )


def version_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[Any]:
    """What autogenerate would change to make the database's schema the code's."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the tests
@pytest.mark.sqlite
def test_the_committed_4_0_0_registry_is_stamped_and_upgraded(tmp_path: Path) -> None:
    """tests/fixtures/registry-4.0.0.sqlite, as 4.0.0's code wrote it
    (tests/fixtures/make_registry_4_0_0.py): no git history needed."""
    url, expected = committed_4_0_0(tmp_path)
    assert version_of(url) is None
    engine = make_engine(url)
    done = migrate.upgrade(engine)
    assert done is not None and done.legacy and done.after == HEAD
    assert migrate.upgrade(engine) is None, "once"
    engine.dispose()
    assert version_of(url) == HEAD
    assert schema_differences(url) == []
    registry = Registry.from_url(url)
    try:
        assert_reads_as_4_0_0_did(registry, expected)
        assert_goes_on_as_4_0_0_left_it(registry, expected)
    finally:
        registry.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_registry_written_by_release_4_0_0_is_upgraded(
    dialect: str, release_4_0_0: Path, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    """4.0.0's own code (from git history) writes the registry, on SQLite and on
    PostgreSQL; today's reads every job and event back after upgrading it."""
    url = new_database(dialect)
    expected = written_by_4_0_0(release_4_0_0, url, tmp_path)
    assert version_of(url) is None, "4.0.0 had no migrations"
    # a submission withdrawn by a release after 4.0.0 (same schema, reason pman_withdraw)
    engine = make_engine(url)
    with engine.begin() as conn:
        gone = conn.execute(
            text("SELECT id FROM jobs WHERE jid = 'q-e' AND active = :t"), {"t": True}
        ).scalar_one()
        conn.execute(
            text("UPDATE jobs SET reason = 'pman_withdraw', message = 'withdrawn' WHERE id = :i"),
            {"i": gone},
        )
    engine.dispose()
    registry = Registry.from_url(url)
    try:
        assert version_of(url) == HEAD
        assert schema_differences(url) == []
        withdrawn = registry.get(gone)
        assert (withdrawn.phase, withdrawn.reason) == (Phase.WITHDRAWN, "pman_withdraw")
        assert gone not in [r.id for r in registry.list(include_deleted=True).records]
        # as it was before the withdrawal
        with registry.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE jobs SET reason = '', message = 'submitting', phase = 'accepted' "
                    "WHERE id = :i"
                ),
                {"i": gone},
            )
        assert_reads_as_4_0_0_did(registry, expected)
        assert_goes_on_as_4_0_0_left_it(registry, expected)
    finally:
        registry.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_empty_database_gets_every_migration(
    dialect: str, new_database: Callable[[str], str]
) -> None:
    url = new_database(dialect)
    engine = make_engine(url)
    done = migrate.upgrade(engine)
    assert done is not None and (done.before, done.legacy, done.after) == (None, False, HEAD)
    assert migrate.upgrade(engine) is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM pman_gate")).scalars().all() == ["queue"]
    engine.dispose()
    assert schema_differences(url) == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_registry_from_before_4_0_0_gets_what_it_lacks(
    dialect: str, new_database: Callable[[str], str]
) -> None:
    """An earlier release's registry: no outbox, no gate, no callback_url."""
    from pman.registry.migrations import baseline_4_0_0 as baseline

    url = new_database(dialect)
    engine = make_engine(url)
    tables = [baseline.jobs, baseline.job_labels, baseline.job_events]
    baseline.metadata.create_all(engine, tables=tables)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN callback_url")
        conn.execute(
            text(
                "INSERT INTO jobs (jid, active, backend, state, reason, message, image, cmd, "
                "auid, submitted_at, updated_at) VALUES ('old', :t, 'docker', 'running', '', "
                "'', 'img', '[]', '', :now, :now)"
            ),
            {"t": True, "now": datetime.now(UTC)},
        )
    done = migrate.upgrade(engine)
    assert done is not None and done.legacy
    engine.dispose()
    assert schema_differences(url) == []
    registry = Registry.from_url(url)
    try:
        old = registry.active("old")
        assert (old.phase, old.callback_url, old.state) == (Phase.ON_ENGINE, None, JobState.RUNNING)
        assert registry.claim_next("docker", 1) is None, "the gate is there"
    finally:
        registry.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_migration_that_fails_changes_nothing(
    dialect: str, new_database: Callable[[str], str]
) -> None:
    """One transaction, DDL included (SQLite too): a start-up that fails part
    way leaves the registry as it found it."""
    url = new_database(dialect)
    engine = make_engine(url)
    with engine.begin() as conn:
        # an unversioned registry whose jobs somehow have a phase already:
        # the baseline is stamped, then migration 0002 fails to add the column
        from pman.registry.migrations import baseline_4_0_0 as baseline

        baseline.metadata.create_all(conn)
        conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN phase VARCHAR(16)")
    with pytest.raises(sa.exc.SQLAlchemyError):
        migrate.upgrade(engine)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert VERSION_TABLE not in tables, "the stamp was rolled back with the rest"
        assert conn.execute(text("SELECT count(*) FROM pman_gate")).scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_downgrade_and_upgrade_again(dialect: str, new_database: Callable[[str], str]) -> None:
    """Back to the baseline (4.0.0's schema, whose columns still say everything
    the phase does), and forward again: the phases come back."""
    from alembic import command

    url = new_database(dialect)
    registry = Registry.from_url(url)
    queued = [registry.create(_spec(f"q{i}"), "docker", max_running=1) for i in range(3)]
    registry.record(queued[0].id, JobInfo(name="q0", state=JobState.RUNNING))
    registry.mark_cancelled(queued[0].id, datetime.now(UTC))
    registry.close()
    engine = make_engine(url)
    with engine.begin() as conn:
        config = migrate._config(conn)
        command.downgrade(config, BASELINE)
    assert not {"phase", "resource"} & {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert version_of(url) == BASELINE
    assert migrate.upgrade(engine) is not None
    engine.dispose()
    registry = Registry.from_url(url)
    try:
        assert [registry.get(q.id).phase for q in queued] == [
            Phase.CANCELLED,
            Phase.QUEUED,
            Phase.QUEUED,
        ]
        assert {registry.get(q.id).resource for q in queued} == {"default"}
    finally:
        registry.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_0003_keeps_each_resource_s_queue_and_survives_a_downgrade(
    dialect: str, new_database: Callable[[str], str]
) -> None:
    """Migration 0003: a job's resource is stored, each resource has its own
    queue; down to 0002 the column goes, up again every job is "default"'s."""
    from alembic import command

    url = new_database(dialect)
    registry = Registry.from_url(url)
    try:
        hpc = [registry.create(_spec(f"h{i}"), "docker", 1, resource="hpc") for i in range(2)]
        gpu = registry.create(_spec("g0"), "docker", 1, resource="gpu")
        assert [r.phase for r in hpc] == [Phase.ACCEPTED, Phase.QUEUED]
        assert (gpu.phase, gpu.resource) == (Phase.ACCEPTED, "gpu"), "its own capacity"
        assert [r.jid for r in registry.list(resources=["hpc"]).records] == ["h1", "h0"]
        assert registry.count_queued_by_resource() == {"hpc": 1}
        assert registry.claim_next("docker", 1, resource="gpu") is None
        registry.record(hpc[0].id, JobInfo(name="h0", state=JobState.SUCCEEDED, exit_code=0))
        assert registry.claim_next("docker", 1, resource="gpu") is None, "not gpu's"
        claimed = registry.claim_next("docker", 1, resource="hpc")
        assert claimed is not None and (claimed.jid, claimed.resource) == ("h1", "hpc")
        assert registry.count_by_resource()[("gpu", JobState.QUEUED.value)] == 1
    finally:
        registry.close()
    engine = make_engine(url)
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), "0002")
    assert "resource" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert migrate.upgrade(engine) is not None
    engine.dispose()
    assert schema_differences(url) == []
    registry = Registry.from_url(url)
    try:
        assert {r.resource for r in registry.list(include_deleted=True).records} == {"default"}
    finally:
        registry.close()


# ---------------------------------------------------------------- start-ups racing
_STARTER = """
import json, sys, time
from pathlib import Path
from pman.registry import make_engine, migrate
url, go = sys.argv[1], Path(sys.argv[2])
engine = make_engine(url)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
done = migrate.upgrade(engine)
print(json.dumps(None if done is None else {"before": done.before, "legacy": done.legacy}))
"""


def start_together(url: str, tmp_path: Path, n: int = 4) -> list[Any]:
    """``n`` processes call migrate.upgrade at the same moment; what each did."""
    go = tmp_path / f"go-{uuid.uuid4().hex[:6]}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, url, str(go)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("start", ["empty", "4.0.0"])
def test_workers_starting_together_migrate_once(
    dialect: str, start: str, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    if start == "empty":
        url = new_database(dialect)
    elif dialect == "sqlite":
        url, _ = committed_4_0_0(tmp_path)
    else:
        url = new_database(dialect)
        _copy_committed_4_0_0(url, tmp_path)
    started = time.monotonic()
    results = start_together(url, tmp_path)
    did = [r for r in results if r is not None]
    assert len(did) == 1, results
    assert did[0]["legacy"] is (start == "4.0.0")
    assert version_of(url) == HEAD
    assert schema_differences(url) == []
    assert time.monotonic() - started < 60
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM pman_gate")).scalar() == 1
    engine.dispose()


def _copy_committed_4_0_0(url: str, tmp_path: Path) -> None:
    """The committed 4.0.0 registry's rows in a PostgreSQL database with 4.0.0's schema."""
    from pman.registry.migrations import baseline_4_0_0 as baseline

    source_url, _ = committed_4_0_0(tmp_path)
    source, target = make_engine(source_url), make_engine(url)
    baseline.metadata.create_all(target)
    with source.connect() as src, target.begin() as dst:
        for table in baseline.metadata.sorted_tables:
            rows = [dict(r) for r in src.execute(sa.select(table)).mappings()]
            if rows:
                dst.execute(table.insert(), rows)
        for table in ("jobs", "job_events", "webhook_deliveries"):
            dst.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
    source.dispose()
    target.dispose()
