"""``pman doctor``: what an operator gets wrong, checked on the server's
machine with the server's environment, never over HTTP and without
submitting a job (but SLURM's test job, with ``--submit-test``).

- the configuration: each bad variable a problem, with what it means as the
  fix; what can still be checked despite them is;
- per resource (PMAN_RESOURCES, or ``default``): its engine's own checks,
  ``pman/backends/<engine>/doctor.py`` (reachability and version,
  permissions, the folders pman writes);
- the registry reachable and at this pman's schema, and this machine's clock
  against the database server's (:mod:`.registry`).

Each check is bounded in time (:mod:`.runner`); the findings are a table or
JSON (:mod:`.report`). Exit status: 0 no problem, 1 a problem, 2 usage.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from pman.backends import REGISTRY
from pman.backends.kit.doctor import Check, DoctorContext, Finding, Status, problem, skipped
from pman.doctor import configuration, registry, report
from pman.doctor.runner import run_groups
from pman.settings.declare import Environ

__all__ = ["EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "Finding", "Status", "diagnose", "main"]

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
#: seconds each check may take (an engine call, a folder probe) unless it says otherwise
DEFAULT_TIMEOUT = 10.0


class UnknownResource(ValueError):
    pass


def diagnose(
    environ: Mapping[str, str] | None = None,
    *,
    submit_test: bool = False,
    resource: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Finding]:
    """Every finding, in order: the configuration's, each resource's, the registry's."""
    environ = os.environ if environ is None else environ
    config = configuration.read(environ)
    resources, broken = config.resources, config.broken
    if resource is not None:
        known = [r.name for r in resources] + broken
        if resource not in known:
            raise UnknownResource(
                f"no resource named {resource!r} (resources: {', '.join(known) or 'none'})"
            )
        resources = [r for r in resources if r.name == resource]
        broken = [b for b in broken if b == resource]
    groups: list[tuple[str, Sequence[Check]]] = []
    for res in resources:
        context = DoctorContext(
            resource=res,
            core=config.core,
            instance=config.registry.instance if config.registry else "",
            timeout=timeout,
            submit_test=submit_test,
            name_of=Environ(environ, res.prefix).name_of,
        )
        groups.append((res.name, engine_checks(context)))
    for name in broken:
        why = "not checked: its configuration has problems (see the configuration rows)"
        groups.append((name, [Check("engine", lambda why=why: [skipped("engine", why)])]))
    groups.append(("", registry.checks(config.registry, timeout)))
    return [*config.findings, *run_groups(groups, timeout)]


def engine_checks(context: DoctorContext) -> list[Check]:
    """The checks of the resource's engine (``pman.backends.<engine>.doctor``)."""
    kind = context.resource.container_env
    package = REGISTRY[kind].partition(":")[0]
    try:
        module = importlib.import_module(f"{package}.doctor")
        return list(module.checks(context))
    except ImportError as e:
        extra = f"pip install 'pman[{kind}]'" if kind == "kubernetes" else "reinstall pman"
        return [_fixed(problem("engine", f"{kind} needs a library that is missing: {e}", extra))]


def _fixed(finding: Finding) -> Check:
    return Check(finding.check, lambda: [finding])


def main(
    *,
    as_json: bool = False,
    submit_test: bool = False,
    resource: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``pman doctor``: print the findings; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        findings = diagnose(submit_test=submit_test, resource=resource, timeout=timeout)
    except UnknownResource as e:
        print(f"pman doctor: {e}", file=err)
        return EXIT_USAGE
    if as_json:
        out.write(report.as_json(findings) + "\n")
    else:
        width = shutil.get_terminal_size((120, 24)).columns if out.isatty() else 120
        out.write(report.as_table(findings, width))
    out.flush()
    return EXIT_PROBLEM if any(f.status is Status.PROBLEM for f in findings) else EXIT_OK
