"""SLURM's commands' output parsed, without a cluster."""

from __future__ import annotations

import pytest

from pman.backends.slurm.client import parse_sbatch, parse_sinfo, parse_squeue, squeue_format
from pman.backends.slurm.comment import encode_comment, parse_comment

# ---------------------------------------------------------------- parsing

# real output of `squeue --noheader --array --me --Format=<squeue_format()>`
SQUEUE_OUT = """\
3|1|1|FAILED|256|2026-11-26T12:32:28|2026-11-26T12:32:28|2026-11-26T12:32:28|NonZeroExitCode|my.job-1|pman;instance=abc;fingerprint=123;workers=2;auid=ch%20ris|
1|1|2|FAILED|512|2026-11-26T12:32:28|2026-11-26T12:32:28|2026-11-26T12:32:28|NonZeroExitCode|my.job-1|pman;instance=abc;fingerprint=123;workers=2;auid=ch%20ris|
2|2|N/A|RUNNING|0|2026-11-26T12:32:28|2026-11-26T12:32:28|NONE|None|sleepy|(null)|
weird|line
"""


def test_parse_squeue() -> None:
    rows = parse_squeue(SQUEUE_OUT)
    assert len(rows) == 3
    first = rows[0]
    assert (first.job_id, first.array_job_id, first.array_task_id) == ("3", "1", 1)
    assert (first.state, first.exit_status, first.name) == ("FAILED", 256, "my.job-1")
    assert parse_comment(first.comment) == {
        "instance": "abc",
        "fingerprint": "123",
        "workers": "2",
        "auid": "ch ris",
    }
    assert rows[2].array_task_id is None and parse_comment(rows[2].comment) is None


def test_squeue_format_asks_every_field_in_full() -> None:
    fmt = squeue_format()
    assert fmt.startswith("JobID:|,ArrayJobID:|,")
    assert "exit_code:|" in fmt and fmt.endswith("Comment:|")


def test_parse_sbatch_and_sinfo() -> None:
    assert parse_sbatch("42\n") == "42"
    assert parse_sbatch("42;cluster\n") == "42"
    with pytest.raises(ValueError):
        parse_sbatch("sbatch: error\n")
    assert parse_sinfo("2|24105|(null)\n8+|64000|gpu:a100:4(S:0)\n") == [
        (2, 24105, "(null)"),
        (8, 64000, "gpu:a100:4(S:0)"),
    ]


def test_comment_round_trip_with_awkward_auid() -> None:
    comment = encode_comment("i1", "fp", "a user|with;odd=chars", 3)
    assert " " not in comment and "|" not in comment
    assert parse_comment(comment) == {
        "instance": "i1",
        "fingerprint": "fp",
        "workers": "3",
        "auid": "a user|with;odd=chars",
    }
