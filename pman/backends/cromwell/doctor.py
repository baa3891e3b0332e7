"""``pman doctor`` for a Cromwell resource: the server answers its version endpoint."""

from __future__ import annotations

from dataclasses import replace

from pman.backends.cromwell.client import CromwellClient
from pman.backends.cromwell.config import CromwellConfig
from pman.backends.kit.doctor import Check, DoctorContext, Finding, ok, problem
from pman.errors import PmanError


def checks(context: DoctorContext) -> list[Check]:
    config = CromwellConfig.from_resource(context.resource, context.core)
    config = replace(config, timeout=min(config.timeout, context.timeout))
    url_var = context.name_of("CROMWELL_URL")
    return [Check("engine", lambda: [version(config, url_var)])]


def version(config: CromwellConfig, variable: str) -> Finding:
    client = CromwellClient(config)
    try:
        answer = client.call("GET", "/engine/v1/version", "answering its version")
    except PmanError as e:
        return problem(
            "engine",
            e.message,
            f"start the Cromwell server in server mode (`cromwell server`), or set {variable} "
            "to its address",
        )
    finally:
        client.close()
    return ok("engine", f"Cromwell {answer.get('cromwell', '?')} at {config.url}")
