"""A cromwell job's log: its tasks' files, tailed."""

from __future__ import annotations

from pathlib import Path

from pman.backends.cromwell.logs import tail_lines
from tests.unit.backends.cromwell.fakes import WID, FakeSession, backend, found


def test_tail_lines_reads_only_the_end(tmp_path: Path) -> None:
    f = tmp_path / "stdout"
    f.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(str(f), 3) == ["line 99997\n", "line 99998\n", "line 99999\n"]
    assert tail_lines(str(f), 0) == []
    # a read limit cuts: only whole lines inside it
    assert tail_lines(str(f), 1000, limit=40) == [f"line {i}\n" for i in range(99997, 100_000)]
    f.write_text("a\r\nno newline at the end")
    assert tail_lines(str(f), 5) == ["a\n", "no newline at the end"]


def test_logs_tail_every_worker(tmp_path: Path) -> None:
    for shard in (0, 1):
        (tmp_path / f"out{shard}").write_text("".join(f"w{shard} {i}\n" for i in range(5)))
        (tmp_path / f"err{shard}").write_text("")
    logs = {
        "id": WID,
        "calls": {
            "pman.plugin": [
                {
                    "stdout": str(tmp_path / f"out{i}"),
                    "stderr": str(tmp_path / f"err{i}"),
                    "shardIndex": i,
                    "attempt": 1,
                }
                for i in (0, 1)
            ]
        },
    }
    s = FakeSession(("GET", "/query", 200, found()), ("GET", "/logs", 200, logs))
    text = backend(tmp_path, s).logs("job-1", 3)
    assert text == "[worker 1] w1 2\n[worker 1] w1 3\n[worker 1] w1 4\n"
    # files pman cannot see: said so, not a failure; a file not written yet: nothing
    remote = {"stdout": "gs://bucket/x/stdout", "stderr": str(tmp_path / "none")}
    s = FakeSession(
        ("GET", "/query", 200, found()),
        ("GET", "/logs", 200, {"id": WID, "calls": {"pman.plugin": [remote]}}),
    )
    text = backend(tmp_path, s).logs("job-1", 3)
    assert text == "pman cannot read the job's stdout at gs://bucket/x/stdout\n"
