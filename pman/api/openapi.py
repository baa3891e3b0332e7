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
        401: "no or invalid credentials (see the WWW-Authenticate header)",
        404: "no such job",
        409: "a job with this jid exists with a different request",
        413: "the request body is over PMAN_MAX_REQUEST_BYTES (default 1 MiB)",
        502: "the engine failed",
        503: "the engine is unreachable",
    }
    return {str(c): _json(_ref("Error"), words[c]) for c in (*codes, 401)}


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
        (schemas.WebhookDeliveries, "serialization"),
        (schemas.AuthTokenRequest, "validation"),
        (schemas.AuthToken, "serialization"),
        (schemas.ComputeResources, "serialization"),
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
            "description": "Run containerised jobs; wire-compatible with upstream pman's v1 "
            "API. Every response carries an X-Request-ID header: the request's X-Request-ID "
            "when it is 1-128 letters, digits and ._:- characters, else a new id; pman's log "
            "lines about the request carry the same id.",
        },
        "paths": {
            "/api/v1/": {
                "get": {
                    "operationId": "serverInfo",
                    "summary": "Server information",
                    "responses": {
                        "200": _json(_ref("ServerInfo"), "server information"),
                        **_errors(),
                    },
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
                        **_errors(400, 409, 413, 502, 503),
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
            "/api/v1/{jid}/cancel/": {
                "parameters": [jid_param],
                "post": {
                    "summary": "Stop a job but keep its record and logs "
                    "(status finishedWithError, message 'cancelled'); a finished job is "
                    "answered unchanged",
                    "responses": {
                        "200": _json(_ref("Job"), "the job after the cancel"),
                        "409": _json(_ref("Error"), "the job is still being submitted: try again"),
                        **_errors(400, 404, 502, 503),
                    },
                },
            },
            "/api/v1/{jid}/logs/": {
                "parameters": [jid_param],
                "get": {
                    "summary": "The job's whole log as text, streamed; follow=true streams "
                    "until the job ends",
                    "parameters": [
                        {
                            "name": "tail",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "only the last this many lines",
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                            "description": "only what was written at or after this ISO 8601 "
                            "time (UTC if no zone); backends whose logs have no timestamps "
                            "(local, slurm, cromwell) answer 400",
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean", "default": False},
                            "description": "true: keep the response open (chunked) and send "
                            "what the job writes until it ends",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the log, as the job wrote it",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 404, 502, 503),
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
            "/api/v1/{jid}/webhooks/": {
                "parameters": [jid_param],
                "get": {
                    "summary": "The job's webhook deliveries: one per transition and target, "
                    "with their attempts (kept after DELETE)",
                    "responses": {
                        "200": _json(_ref("WebhookDeliveries"), "the deliveries, oldest first"),
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
                        _query(
                            "compute_resource",
                            "only jobs of this compute resource; repeat or comma-separate",
                        ),
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
            "/api/v1/resources/": {
                "get": {
                    "operationId": "listResources",
                    "summary": "The compute resources, in PMAN_RESOURCES order",
                    "description": "Every path under /api/v1/ is also served under "
                    "/<resource>/api/v1/ for one compute resource alone (URL pinning: a job "
                    "is submitted there, and only its jobs are seen; "
                    "/<resource>/api/v1/resources/ lists it alone).",
                    "responses": {
                        "200": _json(_ref("ComputeResources"), "the compute resources"),
                        **_errors(),
                    },
                },
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document (no credentials needed)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/api/v1/docs/": {
                "get": {
                    "summary": "Interactive documentation of this API (Swagger UI, served by pman "
                    "from bundled files; no credentials needed)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/api/v1/docs/{asset}": {
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "a file of the page: swagger-ui.css, index.css, "
                        "swagger-ui-bundle.js, swagger-ui-standalone-preset.js, "
                        "favicon-32x32.png, favicon-16x16.png",
                    }
                ],
                "get": {
                    "summary": "A file of the documentation page (no credentials needed)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {
                                "text/css": {"schema": {"type": "string"}},
                                "text/javascript": {"schema": {"type": "string"}},
                                "image/png": {"schema": {"type": "string"}},
                            },
                        },
                        "404": _json(_ref("Error"), "no such file"),
                    },
                },
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: requests, engine calls, tracker, jobs by state",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(503),
                    },
                }
            },
            "/api/v1/auth-token/": {
                "post": {
                    "summary": "A bearer token (JWT) for PMAN_AUTH_USER and PMAN_AUTH_PASSWORD",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("AuthTokenRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("AuthToken"), "the token"),
                        **_errors(400),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "200 when the backend and the job registry answer, else 503",
                    "description": "With several compute resources: 200 while the job "
                    "registry and some resource's engine answer; each resource's health is "
                    "in resources.",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Health"), "the backend answers"),
                        "503": _json(_ref("Health"), "the backend does not answer"),
                    },
                }
            },
        },
        # every operation needs a bearer token unless it says otherwise
        # (the operator may turn authentication off: PMAN_AUTH=none)
        "security": [{"bearer": []}],
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token of PMAN_AUTH_TOKENS, or a JWT from "
                    "POST /api/v1/auth-token/",
                }
            },
        },
    }
