"""The registry on SQLite and on a real PostgreSQL, with the same code."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pman.errors import JobExists, JobNotFound
from pman.lifecycle import Missing, Phase
from pman.models import JobInfo, JobRequest, JobSpec, JobState, Reason
from pman.registry import Registry, Withdrawing, metadata
from pman.settings import load_settings
from pman.storage import Storage
from pman.tracker import FileLock, PostgresAdvisoryLock, leader_lock_for
from tests.helpers import job_body


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "sqlite":
        reg = Registry.from_url(f"sqlite:///{tmp_path / 'pman.db'}")
    else:
        # the session's own database (see conftest.postgresql_url), emptied per test
        reg = Registry.from_url(request.getfixturevalue("postgresql_url"))
        metadata.drop_all(reg.engine)
        metadata.create_all(reg.engine)
    yield reg
    reg.close()


def spec(tmp_path: Path, **overrides: object) -> JobSpec:
    from pman.jobs import build_spec

    base = tmp_path / "sb"
    (base / "key-1" / "incoming").mkdir(parents=True, exist_ok=True)
    s = load_settings({"STOREBASE": str(base), "JOB_LABELS": "site=test"})
    return build_spec(JobRequest(**job_body(**overrides)), s, Storage(s))


def info(jid: str, state: JobState, **kw: object) -> JobInfo:
    return JobInfo(name=jid, state=state, **kw)  # type: ignore[arg-type]


def test_create_and_one_active_job_per_jid(registry: Registry, tmp_path: Path) -> None:
    s = spec(tmp_path, jid="a")
    rec = registry.create(s, "docker")
    registry.record(rec.id, info("a", JobState.RUNNING, native_id="c0ffee"))
    assert registry.get(rec.id).native_id == "c0ffee"
    assert (rec.jid, rec.state, rec.message) == ("a", JobState.QUEUED, "submitting")
    assert rec.labels["site"] == "test"
    assert rec.submitted_at.tzinfo is not None
    with pytest.raises(JobExists) as e:
        registry.create(s, "docker")
    assert e.value.existing is not None and e.value.existing.fingerprint == s.fingerprint


def test_transitions_make_events_and_finished_is_final(registry: Registry, tmp_path: Path) -> None:
    rec = registry.create(spec(tmp_path, jid="t"), "docker")
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert registry.record(rec.id, info("t", JobState.RUNNING, message="started", started_at=t))
    assert not registry.record(rec.id, info("t", JobState.RUNNING, message="still"))
    done = info(
        "t", JobState.FAILED, exit_code=3, message="exited with code 3", reason=Reason.EXIT_CODE
    )
    assert registry.record(rec.id, done, logs="boom\n")
    assert not registry.record(rec.id, info("t", JobState.RUNNING)), "finished is final"
    got = registry.active("t")
    assert (got.state, got.exit_code, got.logs, got.started_at) == (JobState.FAILED, 3, "boom\n", t)
    assert got.finished_at is not None
    states = [e.state for e in registry.events(rec.id)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.FAILED]


def test_delete_keeps_history_and_frees_the_jid(registry: Registry, tmp_path: Path) -> None:
    first = registry.create(spec(tmp_path, jid="d"), "docker")
    registry.record(first.id, info("d", JobState.RUNNING))
    registry.mark_deleted(first.id)
    with pytest.raises(JobNotFound):
        registry.active("d")
    old = registry.get(first.id)
    assert (old.active, old.state, old.reason) == (False, JobState.CANCELLED, "deleted")
    assert registry.events(first.id)[-1].message == "deleted"
    second = registry.create(spec(tmp_path, jid="d", cpu_limit=2000), "docker")
    assert second.id != first.id
    assert registry.latest("d").id == second.id


def test_forget_leaves_nothing(registry: Registry, tmp_path: Path) -> None:
    rec = registry.create(spec(tmp_path, jid="f"), "docker")
    registry.forget(rec.id)
    assert registry.find_active("f") is None
    assert registry.list(include_deleted=True).records == []


def test_list_filters_and_pages(registry: Registry, tmp_path: Path) -> None:
    ids = []
    for i in range(25):
        s = spec(tmp_path, jid=f"j{i:02d}", auid="alice" if i % 2 else "bob")
        s = replace(s, labels={**s.labels, "batch": str(i % 3)})
        rec = registry.create(s, "docker")
        state = JobState.SUCCEEDED if i % 5 == 0 else JobState.RUNNING
        registry.record(rec.id, info(s.name, state))
        ids.append(rec.id)
    page = registry.list(limit=10)
    assert [r.jid for r in page.records] == [f"j{i:02d}" for i in range(24, 14, -1)]
    seen = [r.jid for r in page.records]
    while page.next_cursor:
        page = registry.list(limit=10, cursor=page.next_cursor)
        seen += [r.jid for r in page.records]
    assert seen == [f"j{i:02d}" for i in range(24, -1, -1)]
    done = registry.list(states=[JobState.SUCCEEDED])
    assert [r.jid for r in done.records] == ["j20", "j15", "j10", "j05", "j00"]
    alice = registry.list(auid="alice", labels={"batch": "0"})
    assert [r.jid for r in alice.records] == ["j21", "j15", "j09", "j03"]
    assert all(r.labels["batch"] == "0" for r in alice.records)
    with pytest.raises(ValueError):
        registry.list(cursor="garbage")


def test_adopt_and_unfinished(registry: Registry, tmp_path: Path) -> None:
    registry.adopt(info("stray", JobState.RUNNING, image="img"), "docker", "carol", {"x": "1"})
    rec = registry.active("stray")
    assert (rec.auid, rec.labels, rec.state) == ("carol", {"x": "1"}, JobState.RUNNING)
    assert [r.jid for r in registry.unfinished()] == ["stray"]
    assert "adopted" in registry.events(rec.id)[0].message


def test_leader_lock_is_exclusive(registry: Registry) -> None:
    a, b = leader_lock_for(registry), leader_lock_for(registry)
    assert isinstance(
        a, PostgresAdvisoryLock if registry.engine.dialect.name == "postgresql" else FileLock
    )
    assert a.try_acquire()
    assert a.try_acquire(), "re-acquiring a held lock is a no-op"
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()


@pytest.mark.sqlite
def test_poll_lookup_uses_an_index_whatever_the_history(tmp_path: Path) -> None:
    """The GET path must not scan the table: its cost stays flat with 10,000 records."""
    from sqlalchemy.dialects import sqlite

    from pman.registry.schema import ACTIVE_BY_JID

    reg = Registry.from_url(f"sqlite:///{tmp_path / 'pman.db'}")
    sql = str(ACTIVE_BY_JID.compile(dialect=sqlite.dialect()))
    with reg.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, ("x",)).fetchall()
    assert "USING INDEX jobs_by_jid (jid=? AND active=?)" in str(plan)
    reg.close()


# ---- pman's capacity queue (PMAN_MAX_RUNNING) ------------------------------------------
def test_queue_decisions_order_and_dequeue(registry: Registry, tmp_path: Path) -> None:
    from pman.registry import QUEUE_REASON

    recs = [registry.create(spec(tmp_path, jid=f"q{i}"), "docker", max_running=2) for i in range(5)]
    assert [r.reason == QUEUE_REASON for r in recs] == [False, False, True, True, True]
    assert recs[2].message.startswith("queued by pman: 0 jobs ahead")
    assert recs[4].message.startswith("queued by pman: 2 jobs ahead")
    # another backend's jobs have a capacity of their own
    other = registry.create(spec(tmp_path, jid="k"), "kubernetes", max_running=2)
    assert other.reason == ""
    assert registry.claim_next("docker", 2) is None, "two are on the engine"
    registry.record(recs[0].id, info("q0", JobState.SUCCEEDED, exit_code=0))
    assert registry.dequeue(recs[2].id), "q2 still waits: deleted from the queue"
    assert not registry.dequeue(recs[2].id)
    assert registry.find_active("q2") is None
    claimed = registry.claim_next("docker", 2)
    assert claimed is not None and claimed.jid == "q3", "oldest waiting first"
    assert (claimed.reason, claimed.message) == ("", "submitting")
    assert not registry.dequeue(claimed.id), "it left the queue"
    assert registry.claim_next("docker", 2) is None
    assert registry.refresh_queue_messages("docker", 2) == 1
    assert registry.active("q4").message.startswith("queued by pman: 0 jobs ahead")
    registry.unclaim(claimed.id, "waiting for the engine")
    assert registry.active("q3").reason == QUEUE_REASON
    again = registry.claim_next("docker", 2)
    assert again is not None and again.jid == "q3", "back in its place"
    data, labels, fingerprint = registry.queued_spec(again.id)
    assert data["name"] == "q3" and labels["site"] == "test"
    assert fingerprint == spec(tmp_path, jid="q3").fingerprint


def test_concurrent_submissions_never_exceed_the_capacity(
    registry: Registry, tmp_path: Path
) -> None:
    """Many HTTP workers at once: the gate lets exactly max_running through."""
    import threading

    from pman.registry import QUEUE_REASON

    specs = [spec(tmp_path, jid=f"c{i}") for i in range(12)]
    results: list[object] = []
    barrier = threading.Barrier(len(specs))

    def submit(s: JobSpec) -> None:
        barrier.wait()
        results.append(registry.create(s, "docker", max_running=3))

    threads = [threading.Thread(target=submit, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12
    direct = [r for r in results if r.reason != QUEUE_REASON]  # type: ignore[attr-defined]
    assert len(direct) == 3, [r.jid for r in direct]  # type: ignore[attr-defined]


def test_transitions_queue_webhook_deliveries_in_their_transaction(
    registry: Registry, tmp_path: Path
) -> None:
    registry.configure_webhooks("http://global.example/hook")
    rec = registry.create(spec(tmp_path, jid="w", callback_url="http://cb.example/x"), "docker")
    assert registry.get(rec.id).callback_url == "http://cb.example/x"
    assert registry.pending_deliveries()[0].submitting, "its submission is still in flight"
    registry.record(rec.id, info("w", JobState.FAILED, exit_code=2, message="exited with code 2"))
    registry.mark_deleted(rec.id)
    pending = registry.pending_deliveries()
    assert [(d.target, d.payload["state"], d.payload["exit_code"]) for d in pending] == [
        ("callback", "queued", None),
        ("global", "queued", None),
        ("callback", "failed", 2),
        ("global", "failed", 2),
        ("callback", "failed", 2),
        ("global", "failed", 2),
    ]
    assert not any(d.submitting for d in pending), "the job has left its submission"
    registry.delivery_attempted(pending[0].id, outcome="pending", error="HTTP 500", retry_at=None)
    registry.delivery_attempted(pending[1].id, outcome="delivered")
    registry.delivery_attempted(pending[2].id, outcome="failed", error="HTTP 404")
    shown = {d.id: d for d in registry.deliveries(rec.id)}
    assert (shown[pending[0].id].state, shown[pending[0].id].attempts) == ("pending", 1)
    assert shown[pending[0].id].last_error == "HTTP 500"
    assert shown[pending[1].id].state == "delivered" and shown[pending[1].id].finished_at
    assert shown[pending[2].id].state == "failed"
    assert len(registry.pending_deliveries()) == 4
    registry.configure_webhooks(None)
    other = registry.create(spec(tmp_path, jid="quiet"), "docker")
    registry.record(other.id, info("quiet", JobState.RUNNING))
    assert registry.deliveries(other.id) == [], "no target, no delivery"


def test_a_users_cancel_is_final(registry: Registry, tmp_path: Path) -> None:
    rec = registry.create(spec(tmp_path, jid="cancel-me"), "docker")
    registry.record(rec.id, info("cancel-me", JobState.RUNNING))
    asked = datetime.now(UTC)
    # the engine's view of the kill arrives before the cancel is recorded
    registry.record(rec.id, info("cancel-me", JobState.FAILED, exit_code=137))
    assert registry.mark_cancelled(rec.id, asked, logs="last line\n")
    got = registry.get(rec.id)
    assert (got.state, got.reason, got.message, got.logs) == (
        JobState.CANCELLED,
        "cancelled",
        "cancelled",
        "last line\n",
    )
    assert [e.state for e in registry.events(rec.id)][-1] is JobState.CANCELLED
    assert not registry.mark_cancelled(rec.id, asked)  # once
    registry.record(rec.id, info("cancel-me", JobState.FAILED, exit_code=137))
    assert registry.get(rec.id).state is JobState.CANCELLED
    # a job that had ended before the cancel keeps its outcome
    done = registry.create(spec(tmp_path, jid="ended"), "docker")
    registry.record(done.id, info("ended", JobState.SUCCEEDED, exit_code=0))
    assert not registry.mark_cancelled(done.id, datetime.now(UTC) + timedelta(seconds=1))
    assert registry.get(done.id).state is JobState.SUCCEEDED


def test_each_write_moves_the_phase(registry: Registry, tmp_path: Path) -> None:
    """The phase, not the client-visible columns, says where pman has got with a job."""
    rec = registry.create(spec(tmp_path, jid="p"), "docker")
    assert (rec.phase, rec.message) == (Phase.ACCEPTED, "submitting")
    assert registry.pending_deliveries() == [], "no webhook target configured"
    registry.record(rec.id, info("p", JobState.RUNNING))
    assert registry.get(rec.id).phase is Phase.ON_ENGINE
    assert registry.mark_cancelled(rec.id, datetime.now(UTC))
    assert registry.get(rec.id).phase is Phase.CANCELLED
    assert not registry.report(rec.id, Missing()), "a cancelled job stays cancelled"
    registry.mark_deleted(rec.id)
    gone = registry.get(rec.id)
    assert (gone.phase, gone.active, gone.state) == (Phase.DELETED, False, JobState.CANCELLED)
    # a withdrawn submission keeps its jid taken, and is no job
    w = registry.create(spec(tmp_path, jid="w"), "docker")
    registry.withdraw(w.id, "withdrawn: the engine did not answer")
    assert registry.get(w.id).phase is Phase.WITHDRAWN
    assert "w" not in [r.jid for r in registry.list(include_deleted=True).records]
    with pytest.raises(Withdrawing):
        registry.create(spec(tmp_path, jid="w"), "docker")
    # pman's queue
    first = registry.create(spec(tmp_path, jid="q-1"), "local", max_running=1)
    waiting = registry.create(spec(tmp_path, jid="q-2"), "local", max_running=1)
    assert (first.phase, waiting.phase) == (Phase.ACCEPTED, Phase.QUEUED)
    registry.record(first.id, info("q-1", JobState.SUCCEEDED, exit_code=0))
    claimed = registry.claim_next("local", 1)
    assert claimed is not None and claimed.phase is Phase.ACCEPTED
    registry.unclaim(claimed.id, "waiting for the engine")
    assert registry.get(claimed.id).phase is Phase.QUEUED
    assert registry.dequeue(claimed.id)
    assert registry.get(claimed.id).phase is Phase.DELETED
