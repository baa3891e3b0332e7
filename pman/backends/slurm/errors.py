"""Failures of SLURM's commands as pman's errors: THE one translation
(:func:`translate`, applied by :class:`~pman.backends.kit.errors.ErrorTranslator`),
with what sbatch's complaints say about a job's request (:func:`request_error`).

slurmctld not answering, a command that timed out or cannot be run: 503
(BackendUnavailable); a request no node of the partition can meet: 400
naming the request's fields (UnsupportedOption); a partition, account, QoS
or time limit SLURM refuses: 502 naming the setting; anything else: 502.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pman.backends.slurm.runner import SlurmCommandError
from pman.errors import BackendError, BackendUnavailable, PmanError, UnsupportedOption
from pman.models import JobSpec, Resources

#: SLURM's words in its commands' errors that mean slurmctld did not answer
UNREACHABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "zero bytes were transmitted",
    "communication connection failure",
    "transport endpoint",
    "slurm_persist_conn_open",
)
#: sbatch errors caused by the request's resources
RESOURCE_ERRORS = (
    "requested node configuration is not available",
    "memory specification can not be satisfied",
    "more processors requested than permitted",
    "cpu count per node can not be satisfied",
    "invalid generic resource",
    "invalid gres",
    "node count specification invalid",
)
#: words of an invalid setting in sbatch's errors, and the setting to check
SETTING_WORDS = (
    ("SLURM_PARTITION", "partition"),
    ("SLURM_ACCOUNT", "account"),
    ("SLURM_QOS", "qos"),
    ("TIMELIMIT_MINUTES", "time limit"),
)
#: scancel's words for a job with nothing left to stop
NOTHING_TO_CANCEL = ("already completing or completed", "invalid job id")


def _text(e: SlurmCommandError) -> str:
    return (e.stderr or e.stdout).strip()


def unavailable(e: SlurmCommandError, doing: str, where: str, timeout: float) -> PmanError | None:
    """BackendUnavailable when ``e`` means the cluster could not be asked at all."""
    text = _text(e)
    if e.timed_out:
        return BackendUnavailable(
            f"{where} did not answer within {timeout:g} s while {doing} (`{' '.join(e.argv)}`)"
        )
    if e.returncode is None:
        return BackendUnavailable(
            f"cannot run SLURM's commands while {doing}: {text} "
            "(install SLURM's client tools or set SLURM_BIN_DIR)"
        )
    if any(words in text.lower() for words in UNREACHABLE):
        return BackendUnavailable(f"{where}: slurmctld is unreachable while {doing}: {text}")
    return None


def translate(
    e: Exception,
    doing: str,
    *,
    where: str,
    timeout: float,
    request: Callable[[SlurmCommandError], PmanError | None] | None = None,
) -> PmanError:
    """The pman error for ``e``, raised by a SLURM command (or a file of the
    job's) while ``doing``; ``where`` names the cluster, ``timeout`` is
    PMAN_ENGINE_TIMEOUT. ``request`` (sbatch's errors) says what a refusal
    that is not the cluster's fault means for the job's request."""
    if not isinstance(e, SlurmCommandError):
        return BackendError(f"{where}: {doing} failed: {e}")
    down = unavailable(e, doing, where, timeout)
    if down is not None:
        return down
    if request is not None:
        refused = request(e)
        if refused is not None:
            return refused
    text = _text(e)
    low = text.lower()
    for setting, words in SETTING_WORDS:
        if words in low and "invalid" in low:
            return BackendError(f"{where} refused {doing}: {text} (check {setting})", detail=text)
    return BackendError(f"{where} failed {doing}: {e}", detail=text)


def request_error(
    e: SlurmCommandError, spec: JobSpec, too_big: Callable[[], list[str]]
) -> PmanError | None:
    """UnsupportedOption naming the request's fields when sbatch refused the
    job for what it asks (too many workers for the cluster's arrays, more
    than a node has); ``too_big`` says which resource fields no node can give."""
    r = spec.resources
    text = _text(e)
    low = text.lower()
    if "array" in low and "invalid" in low:
        return UnsupportedOption(
            f"number_of_workers={r.number_of_workers} is refused by SLURM: {text}",
            fields={"number_of_workers": "too many for the cluster's job arrays"},
        )
    if any(words in low for words in RESOURCE_ERRORS) or "policy" in low:
        fields = too_big()
        names = ", ".join(f"{f}={getattr(r, f)}" for f in fields)
        return UnsupportedOption(
            f"the SLURM cluster cannot run this job ({names}): {text}",
            fields={f: "more than a node of the partition has" for f in fields},
        )
    return None


def nothing_to_cancel(e: SlurmCommandError) -> bool:
    """scancel failed as the job has ended already, or SLURM forgot it."""
    low = (e.stderr or "").lower()
    return any(words in low for words in NOTHING_TO_CANCEL)


def fields_too_big(r: Resources, nodes: list[tuple[int, int, str]] | None) -> list[str]:
    """The resource fields no node of ``nodes`` ((CPUs, memory MiB, generic
    resources) each) can give; all of the requested ones when SLURM cannot
    say (``nodes`` None or empty: the nodes could not be listed)."""
    asked = ["cpu_limit", "memory_limit"] + (["gpu_limit"] if r.gpu_limit else [])
    if not nodes:
        return asked
    cpus = math.ceil(r.cpu_limit / 1000)
    too_big = []
    if all(cpus > n_cpus for n_cpus, _, _ in nodes):
        too_big.append("cpu_limit")
    if all(r.memory_limit > mem for _, mem, _ in nodes):
        too_big.append("memory_limit")
    if r.gpu_limit and all(gpus(gres) < r.gpu_limit for _, _, gres in nodes):
        too_big.append("gpu_limit")
    return too_big or asked


def gpus(gres: str) -> int:
    """GPUs in a node's generic resources, e.g. ``gpu:2,gpu:a100:4(S:0-1)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total
