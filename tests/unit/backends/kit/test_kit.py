"""The engine kit: error translation, times, log tails, container paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pman.backends.kit.errors import ErrorTranslator
from pman.backends.kit.files import tail_lines
from pman.backends.kit.paths import rewrite_arg, rewrite_text
from pman.backends.kit.times import parse_time
from pman.errors import BackendError, BackendUnavailable, JobNotFound, PmanError


def _translate(e: Exception, doing: str) -> PmanError:
    if isinstance(e, ConnectionError):
        return BackendUnavailable(f"engine unreachable while {doing}")
    return BackendError(f"engine failed {doing}: {e}")


errors = ErrorTranslator(_translate)


def test_a_block_translates_engine_errors_and_keeps_the_cause() -> None:
    with (
        pytest.raises(BackendUnavailable, match="while inspecting 'a'") as caught,
        errors.doing("inspecting 'a'"),
    ):
        raise ConnectionError("refused")
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_pman_errors_pass_through_unchanged() -> None:
    with pytest.raises(JobNotFound, match="no job"), errors.doing("inspecting 'a'"):
        raise JobNotFound("no job")


def test_the_decorator_names_the_call_with_its_arguments() -> None:
    class Adapter:
        @errors.call("stopping {name!r}")
        def cancel(self, name: str) -> None:
            raise ValueError("boom")

        @errors.call("listing")
        def list(self) -> list[str]:
            return ["a"]

    with pytest.raises(BackendError, match="engine failed stopping 'job-1': boom"):
        Adapter().cancel("job-1")
    assert Adapter().list() == ["a"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        # Docker's nanoseconds
        ("2024-05-01T10:00:00.123456789Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00.5+02:00", datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("N/A", None),
        ("Unknown", None),
        ("", None),
        (None, None),
        ("not a time", None),
        (12, None),
    ],
)
def test_parse_time(text: object, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_parse_time_reads_a_zoneless_time_as_local_when_asked() -> None:
    parsed = parse_time("2024-05-01T10:00:00", naive_is_local=True)
    assert parsed is not None and parsed.utcoffset() == timedelta(0)
    local = datetime(2024, 5, 1, 10).astimezone()
    assert parsed == local.astimezone(UTC)


def test_tail_lines(tmp_path) -> None:
    p = tmp_path / "log"
    p.write_bytes(b"".join(f"{i}\n".encode() for i in range(100_000)))
    assert tail_lines(p, 3) == "99997\n99998\n99999\n"
    assert tail_lines(p, 0) == ""
    assert tail_lines(tmp_path / "missing", 5) == ""
    short = tmp_path / "short"
    short.write_text("a\nb")
    assert tail_lines(short, 10) == "a\nb"
    # a byte limit leaves out the line it cut
    assert tail_lines(p, 1000, limit=20) == "99997\n99998\n99999\n"


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("/share/incoming", "/in"),
        ("/share/outgoing/x/y", "/out/x/y"),
        ("/share/outgoingx", "/share/outgoingx"),
        ("--out=/share/outgoing", "--out=/share/outgoing"),
    ],
)
def test_rewrite_arg(arg: str, expected: str) -> None:
    assert rewrite_arg(arg, "/in", "/out") == expected


def test_rewrite_text_finds_folders_anywhere() -> None:
    text = "--out=/share/outgoing/x cp /share/incoming/a /data/share/incoming"
    assert rewrite_text(text, "/in", "/out") == "--out=/out/x cp /in/a /data/share/incoming"
