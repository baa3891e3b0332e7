"""Running the doctor's checks, each bounded in time.

The steps of one resource (or of the registry) run in order in a thread of
their own, the resources side by side; each step runs in a daemon thread
that is given up after its time-out: an engine that hangs is reported as not
answering in time, and never holds the doctor (nor its exit) up.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterable, Sequence

from pman.backends.kit.doctor import Check, Finding, Status, problem, skipped


def run_step(check: Check, timeout: float) -> list[Finding]:
    """One step's findings; a problem when it raises or overruns ``timeout``."""
    limit = check.timeout if check.timeout is not None else timeout
    box: list[list[Finding]] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            box.append(list(check.run()))
        except BaseException as e:  # reported as a problem, never raised
            failure.append(e)

    thread = threading.Thread(target=target, name=f"doctor-{check.name}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return [problem(check.name, f"no answer within {limit:g} s", check.hang_fix)]
    if failure:
        e = failure[0]
        where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
        return [problem(check.name, f"{type(e).__name__}: {e}{at}", check.hang_fix)]
    return box[0] if box else []


def run_steps(steps: Sequence[Check], timeout: float) -> list[Finding]:
    """The steps in order; one whose ``needs`` found a problem is skipped."""
    found: list[Finding] = []
    failed: set[str] = set()
    for step in steps:
        if step.needs is not None and step.needs in failed:
            found.append(skipped(step.name, f"not checked: {step.needs} has a problem"))
            failed.add(step.name)
            continue
        results = run_step(step, timeout)
        if any(f.status is Status.PROBLEM for f in results):
            failed.add(step.name)
        found += results
    return found


def run_groups(groups: Iterable[tuple[str, Sequence[Check]]], timeout: float) -> list[Finding]:
    """Each (resource, steps) in a thread of its own; the findings in the groups' order."""
    listed = list(groups)
    results: list[list[Finding]] = [[] for _ in listed]

    def work(i: int, resource: str, steps: Sequence[Check]) -> None:
        results[i] = [f.of(resource) for f in run_steps(steps, timeout)]

    threads = [
        threading.Thread(target=work, args=(i, name, steps), daemon=True)
        for i, (name, steps) in enumerate(listed)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each step is bounded, so each group is
    return [f for found in results for f in found]
