"""The OpenAPI 3.1 document, generated from the pydantic models in schemas.py."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from pman import __version__
from pman.api import schemas

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "invalid request (the offending fields are named)",
        404: "no such job",
        409: "a job with this jid exists with a different request",
        502: "the engine failed",
        503: "the engine is unreachable",
    }
    return {str(c): _json(_ref("Error"), words[c]) for c in codes}


#: a request as pfcon sends one (the document's example; the fuzz tests run it)
EXAMPLE_JOB: dict[str, Any] = {
    "jid": "chris-jid-1",
    "args": ["--prefix", "copy-"],
    "args_path_flags": [],
    "auid": "chris",
    "number_of_workers": 1,
    "cpu_limit": 1000,
    "memory_limit": 200,
    "gpu_limit": 0,
    "image": "fnndsc/pl-simpledsapp:2.1.0",
    "entrypoint": ["simpledsapp"],
    "type": "ds",
    "env": [],
    "input_dir": "key-1/incoming",
    "output_dir": "key-1/outgoing",
}

#: from a job just answered to what can be asked about it (OpenAPI links:
#: clients and stateful test generators follow them). Not to its events: they
#: outlive a DELETE by design, which a generator would take for a stale resource.
_JOB_LINKS = {
    name: {"operationId": op, "parameters": {"jid": "$response.body#/jid"}}
    for name, op in (("GetJob", "getJob"), ("DeleteJob", "deleteJob"))
}


def _with_links(response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "links": _JOB_LINKS}


@cache
def openapi_document() -> dict[str, Any]:
    models = [
        (schemas.JobRequest, "validation"),
        (schemas.Job, "serialization"),
        (schemas.ServerInfo, "serialization"),
        (schemas.Error, "serialization"),
        (schemas.Health, "serialization"),
        (schemas.JobList, "serialization"),
        (schemas.JobEvents, "serialization"),
    ]
    _, top = models_json_schema(models, ref_template=_REF)
    jid_param = {
        "name": "jid",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "job name",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pman",
            "version": __version__,
            "description": "Run containerised jobs; wire-compatible with upstream pman's v1 API.",
        },
        "paths": {
            "/api/v1/": {
                "get": {
                    "operationId": "serverInfo",
                    "summary": "Server information",
                    "responses": {"200": _json(_ref("ServerInfo"), "server information")},
                },
                "post": {
                    "operationId": "submitJob",
                    "summary": "Submit a job",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _ref("JobRequest"),
                                "example": EXAMPLE_JOB,
                            }
                        },
                    },
                    "responses": {
                        "201": _with_links(_json(_ref("Job"), "job created")),
                        "200": _with_links(
                            _json(_ref("Job"), "the same request again: the existing job")
                        ),
                        **_errors(400, 409, 502, 503),
                    },
                },
            },
            "/api/v1/{jid}/": {
                "parameters": [jid_param],
                "get": {
                    "operationId": "getJob",
                    "summary": "A job's status and latest logs",
                    "responses": {
                        "200": _with_links(_json(_ref("Job"), "the job")),
                        **_errors(404, 502, 503),
                    },
                },
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Stop and remove a job (kept when REMOVE_JOBS=no)",
                    "responses": {
                        "204": {"description": "deleted"},
                        **_errors(404, 502, 503),
                    },
                },
            },
            "/api/v1/{jid}/events/": {
                "parameters": [jid_param],
                "get": {
                    "operationId": "jobEvents",
                    "summary": "The job's state transitions with their times (kept after DELETE)",
                    "responses": {
                        "200": _json(_ref("JobEvents"), "the transitions, oldest first"),
                        **_errors(404, 503),
                    },
                },
            },
            "/api/v1/jobs/": {
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs, newest first, filtered, one page at a time",
                    "parameters": [
                        _query("status", "v1 status or pman state; repeat or comma-separate"),
                        _query("auid", "only this requester's jobs"),
                        {
                            **_query("label", "key=value; repeat for several (all must match)"),
                            "schema": {"type": "string", "pattern": "^[^=]+="},
                        },
                        _query("include_deleted", "true to list deleted jobs too"),
                        _query("cursor", "next_cursor of the previous page"),
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                            "description": "page size (default 50)",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("JobList"), "one page of jobs"),
                        **_errors(400, 503),
                    },
                },
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "200 when the backend and the job registry answer, else 503",
                    "responses": {
                        "200": _json(_ref("Health"), "the backend answers"),
                        "503": _json(_ref("Health"), "the backend does not answer"),
                    },
                }
            },
        },
        "components": {"schemas": top.get("$defs", {})},
    }
