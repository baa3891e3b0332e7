"""The ``--comment`` that marks a SLURM job as pman's: pman's marker, its
instance, the request's fingerprint, the job's owner and number of workers.
squeue prints it back, so a list of pman's jobs needs no file of pman's."""

from __future__ import annotations

from urllib.parse import quote, unquote

#: first word of the --comment of every job pman submits
COMMENT_MARKER = "pman"


def encode_comment(instance: str, fingerprint: str, auid: str, workers: int) -> str:
    """The --comment that marks a job as pman's; values are %-quoted (no spaces,
    no '|', so squeue's output stays parseable)."""
    fields = {"instance": instance, "fingerprint": fingerprint, "workers": str(workers)}
    fields["auid"] = auid
    return ";".join([COMMENT_MARKER, *(f"{k}={quote(v, safe='')}" for k, v in fields.items())])


def parse_comment(comment: str) -> dict[str, str] | None:
    """The fields of a pman comment, None for a job pman did not submit."""
    parts = comment.split(";")
    if parts[0] != COMMENT_MARKER:
        return None
    fields = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = unquote(value)
    return fields
