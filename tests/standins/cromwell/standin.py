"""A Cromwell server stand-in: Cromwell's REST API over miniwdl runs.

No Cromwell server can be installed on the test machines. This serves the
endpoints pman uses, with the shapes and status codes of Cromwell's REST API
(https://cromwell.readthedocs.io/en/stable/api/RESTAPI/), and runs every
submitted WDL workflow for real: one ``miniwdl run`` process per workflow
(tests/standins/cromwell/miniwdl_runner.py), each task a Docker swarm service on the
local engine.

What it implements:

- ``POST /api/workflows/v1``: multipart form (workflowSource, workflowInputs,
  labels, workflowOptions, workflowType, workflowTypeVersion,
  workflowOnHold); 201 ``{"id", "status": "Submitted"}``; 400 ``{"status":
  "fail", "message"}`` for a WDL document miniwdl cannot parse or type-check,
  inputs it does not take, labels or options that are not JSON objects, and
  labels Cromwell refuses (key empty, key or value over 255 characters);
- ``GET .../{id}/status``, ``.../metadata`` (includeKey/excludeKey),
  ``.../logs``, ``GET``/``PATCH .../labels``, ``POST .../abort`` (200
  Aborting, or Aborted for a workflow not started; 403 once it has ended),
  ``POST .../releaseHold``; 400 for an id that is not a UUID, 404 for an
  unknown one;
- ``GET``/``POST /api/workflows/v1/query``: label (AND), labelor,
  excludeLabelAnd, excludeLabelOr, status, id, name (OR within each),
  submission/start/end, page/pageSize, additionalQueryResultFields; newest
  first; ``{"results", "totalResultsCount"}``; 400 for unknown keys or values;
- ``/engine/v1/version`` and ``/engine/v1/status``.

What it simplifies, as a real Cromwell would not: it validates the WDL and
the inputs at submission (Cromwell may accept them and fail the workflow when
it materialises it); a workflow is "Running" from the moment its miniwdl
process starts (Cromwell: once materialised) and at most ``max_running`` run
at once (the others stay "Submitted"); a workflow appears in ``/query`` at
once (Cromwell's summary lags a few seconds); one attempt per call; an
aborted workflow's miniwdl process is sent SIGTERM, which removes its swarm
services, and ``stop()`` removes anything left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.standins.cromwell.miniwdl_runner import MINUTE_ENV, STANDIN_LABEL

ROOT = Path(__file__).resolve().parents[3]
TERMINAL = ("Succeeded", "Failed", "Aborted")
STATUSES = ("Submitted", "Running", "Aborting", "Failed", "Succeeded", "Aborted", "On Hold")
QUERY_KEYS = frozenset(
    {
        "label",
        "labelor",
        "excludeLabelAnd",
        "excludeLabelOr",
        "status",
        "id",
        "name",
        "submission",
        "start",
        "end",
        "page",
        "pageSize",
        "additionalQueryResultFields",
        "includeSubworkflows",
    }
)
LABEL_MAX = 255
MINIWDL_CFG = """\
[scheduler]
container_backend = pman_standin
# Cromwell's workflow_failure_mode ContinueWhilePossible: a failed call stops no other
fail_fast = false
[task_runtime]
command_shell = /bin/sh
memory_limit_multiplier = 1.0
[docker_swarm]
polling_period_seconds = 1.0
auto_init = false
[file_io]
chown = false
[call_cache]
put = false
get = false
"""


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # tests count requests themselves (CromwellStandIn.requests)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fail(code: int, message: str, status: str = "fail") -> Response:
    resp = jsonify({"status": status, "message": message})
    resp.status_code = code
    return resp


class BadRequest(Exception):
    pass


@dataclass
class Workflow:
    id: str
    source: str
    inputs: dict[str, Any]
    labels: dict[str, str]
    options: dict[str, Any]
    name: str
    type_version: str
    run_dir: Path
    status: str = "Submitted"
    submission: datetime = field(default_factory=_now)
    start: datetime | None = None
    end: datetime | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    abort_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _validate_labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise BadRequest("Error(s): labels must be a JSON object of string keys and values")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(value, str):
            raise BadRequest(f"Invalid label: {key!r}: the value must be a string")
        if not key or len(key) > LABEL_MAX:
            raise BadRequest(
                f"Invalid label: {key!r}: a key must be 1 to {LABEL_MAX} characters long"
            )
        if len(value) > LABEL_MAX:
            raise BadRequest(
                f"Invalid label: {key}: its value of {len(value)} characters exceeds the "
                f"maximum of {LABEL_MAX}"
            )
        out[key] = value
    return out


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest(f"Error(s): {what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"Error(s): {what} must be a JSON object")
    return value


def check_workflow(source: str, inputs: dict[str, Any]) -> str:
    """Parse and type-check ``source`` and its inputs with miniwdl; the
    workflow's name. Raises BadRequest with miniwdl's message."""
    import WDL

    try:
        doc = WDL.parse_document(source)
        doc.typecheck()
    except (WDL.Error.SyntaxError, WDL.Error.ValidationError) as e:
        pos = getattr(e, "pos", None)
        where = f" (line {pos.line}, column {pos.column})" if pos else ""
        raise BadRequest(f"Workflow input processing failed: {e}{where}") from None
    except WDL.Error.MultipleValidationErrors as e:
        raise BadRequest(
            "Workflow input processing failed: " + "; ".join(str(x) for x in e.exceptions)
        ) from None
    if doc.workflow is None:
        raise BadRequest("Workflow input processing failed: the document has no workflow")
    wf = doc.workflow
    missing = [
        f"{wf.name}.{b.name}" for b in wf.required_inputs if f"{wf.name}.{b.name}" not in inputs
    ]
    if missing:
        raise BadRequest(
            "Workflow input processing failed: "
            + "; ".join(f"Required workflow input '{m}' not specified" for m in missing)
        )
    try:
        WDL.values_from_json(inputs, wf.available_inputs, wf.required_inputs, namespace=wf.name)
    except WDL.Error.InputError as e:
        raise BadRequest(f"Workflow input processing failed: {e}") from None
    except Exception as e:  # a value of the wrong type
        raise BadRequest(f"Workflow input processing failed: {e}") from None
    return wf.name


class CromwellStandIn:
    """The stand-in server: ``start()`` binds 127.0.0.1 on a free port and
    serves in a background thread; ``stop()`` aborts every running workflow,
    removes what its tasks left on the Docker engine and its folder."""

    def __init__(
        self,
        workdir: Path,
        *,
        max_running: int = 4,
        minute_seconds: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        self.workdir = Path(workdir)
        self.instance = uuid.uuid4().hex[:12]
        self.max_running = max_running
        self.minute_seconds = minute_seconds
        self.python = python
        self.workflows: dict[str, Workflow] = {}
        #: every request served, as (method, path), for tests to count
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_running)
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.url = ""
        self.app = self._build_app()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "miniwdl.cfg").write_text(MINIWDL_CFG)
        self._server = make_server(
            "127.0.0.1", 0, self.app, threaded=True, request_handler=_QuietHandler
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self.url

    def stop(self) -> None:
        with self._lock:
            workflows = list(self.workflows.values())
        for wf in workflows:
            self._abort(wf)
        for wf in workflows:
            wf.done.wait(90)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.remove_leftovers()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def remove_leftovers(self) -> None:
        """Remove swarm services and containers of this stand-in's tasks."""
        import docker
        import docker.errors

        api = docker.APIClient(version="1.41", timeout=30)
        try:
            selector = {"label": f"{STANDIN_LABEL}={self.instance}"}
            for svc in api.services(filters=selector):
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_service(svc["ID"])
            for c in api.containers(all=True, filters=selector):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_container(c["Id"], force=True)
        finally:
            api.close()

    def count(self, path_suffix: str, method: str | None = None) -> int:
        """How many requests so far ended their path with ``path_suffix``."""
        with self._lock:
            return sum(
                1
                for m, p in self.requests
                if p.endswith(path_suffix) and (method is None or m == method)
            )

    def wait(self, workflow_id: str, timeout: float = 120) -> str:
        """Wait until a workflow has ended; its status."""
        wf = self.workflows[workflow_id]
        if not wf.done.wait(timeout):
            raise AssertionError(f"workflow {workflow_id} still {wf.status} after {timeout}s")
        return wf.status

    # ------------------------------------------------------------ running
    def _run(self, wf: Workflow) -> None:
        try:
            if wf.status == "On Hold":
                while wf.status == "On Hold" and not wf.abort_requested:
                    wf.done.wait(0.2)
            with self._slots:
                with self._lock:
                    if wf.abort_requested or wf.status in TERMINAL:
                        return
                    wf.status = "Running"
                    wf.start = _now()
                    wf.process = self._spawn(wf)
                wf.process.wait()
            self._finish(wf, wf.process.returncode)
        except Exception as e:
            with self._lock:
                wf.status = "Failed"
                wf.end = _now()
                wf.failures = [{"message": f"stand-in failed to run the workflow: {e}"}]
        finally:
            wf.done.set()

    def _spawn(self, wf: Workflow) -> subprocess.Popen[bytes]:
        d = wf.run_dir
        (d / "source.wdl").write_text(wf.source)
        (d / "inputs.json").write_text(json.dumps(wf.inputs))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            STANDIN_LABEL: self.instance,
            MINUTE_ENV: str(self.minute_seconds),
        }
        argv = [
            self.python,
            "-m",
            "tests.standins.cromwell.miniwdl_runner",
            "run",
            str(d / "source.wdl"),
            "-i",
            str(d / "inputs.json"),
            "--dir",
            str(d / "run") + "/.",
            "--cfg",
            str(self.workdir / "miniwdl.cfg"),
            "--error-json",
            "-o",
            str(d / "result.json"),
        ]
        with open(d / "miniwdl.log", "wb") as log:
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _finish(self, wf: Workflow, returncode: int) -> None:
        result = _json_or_none(wf.run_dir / "result.json")
        with self._lock:
            wf.end = _now()
            if wf.abort_requested:
                wf.status = "Aborted"
            elif returncode == 0:
                wf.status = "Succeeded"
            else:
                wf.status = "Failed"
                causes = [f for _, call in self._calls(wf) for f in call.get("failures", [])] or [
                    _failure(_error_message(result) or f"miniwdl exited with {returncode}")
                ]
                wf.failures = [{"message": "Workflow failed", "causedBy": causes}]

    def _abort(self, wf: Workflow) -> str:
        with self._lock:
            if wf.status in TERMINAL:
                return wf.status
            wf.abort_requested = True
            if wf.process is None:
                wf.status = "Aborted"
                wf.end = _now()
                wf.done.set()
                return wf.status
            wf.status = "Aborting"
            # miniwdl stops its tasks (removes their swarm services) on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                wf.process.send_signal(signal.SIGTERM)
            return wf.status

    # ------------------------------------------------------------ metadata
    def _calls(self, wf: Workflow) -> list[tuple[str, dict[str, Any]]]:
        """(call name, call metadata) of every task run, from miniwdl's task
        folders ("call-plugin-3": shard 3 of task "plugin")."""
        calls = []
        run = wf.run_dir / "run"
        dirs = sorted(run.glob("call-*"), key=lambda p: _shard_of(p.name))
        for d in dirs:
            task = d.name[len("call-") :].rpartition("-")[0] or d.name[len("call-") :]
            shard = _shard_of(d.name)
            attrs = _json_or_none(d / "runtime_attributes.json") or {}
            rc_text = _read(d / "rc")
            rc = int(rc_text) if rc_text and rc_text.strip().lstrip("-").isdigit() else None
            error = _json_or_none(d / "error.json")
            started = _read(d / "started")
            status = "Starting"
            failures: list[dict[str, Any]] = []
            if error is not None:
                cause = error.get("cause") or {}
                if cause.get("error") == "Terminated" or wf.abort_requested:
                    status = "Aborted"
                else:
                    status = "Failed"
                    failures = [_failure(_call_failure(wf, task, shard, rc, cause))]
            elif rc is not None:
                status = "Done" if rc == 0 else "Failed"
                if rc:
                    failures = [_failure(_call_failure(wf, task, shard, rc, {}))]
            elif wf.status in ("Aborting", "Aborted"):
                status = "Aborting" if wf.status == "Aborting" else "Aborted"
            elif started:
                status = "Running"
            call: dict[str, Any] = {
                "executionStatus": status,
                "shardIndex": shard,
                "attempt": 1,
                "backend": "MiniwdlSwarm",
                "runtimeAttributes": attrs,
                "commandLine": _read(d / "command") or "",
                "inputs": _json_or_none(d / "inputs.json") or {},
                "stdout": str(d / "stdout.txt"),
                "stderr": str(d / "stderr.txt"),
                "callRoot": str(d),
                "start": started or _iso(_mtime(d)),
            }
            if rc is not None:
                call["returnCode"] = rc
            if status in ("Done", "Failed", "Aborted"):
                ended = _mtime(d / "error.json") or _mtime(d / "rc")
                call["end"] = _iso(ended)
            if failures:
                call["failures"] = failures
            calls.append((f"{wf.name}.{task}", call))
        return calls

    def _calls_by_name(self, wf: Workflow) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name, call in self._calls(wf):
            out.setdefault(name, []).append(call)
        return out

    def _labels(self, wf: Workflow) -> dict[str, str]:
        return {"cromwell-workflow-id": f"cromwell-{wf.id}", **wf.labels}

    def metadata(self, wf: Workflow) -> dict[str, Any]:
        md: dict[str, Any] = {
            "id": wf.id,
            "workflowName": wf.name,
            "status": wf.status,
            "submission": _iso(wf.submission),
            "labels": self._labels(wf),
            "inputs": wf.inputs,
            "outputs": {},
            "calls": self._calls_by_name(wf),
            "workflowRoot": str(wf.run_dir / "run"),
            "actualWorkflowLanguage": "WDL",
            "actualWorkflowLanguageVersion": wf.type_version,
            "submittedFiles": {
                "workflow": wf.source,
                "inputs": json.dumps(wf.inputs),
                "labels": json.dumps(wf.labels),
                "options": json.dumps(wf.options),
                "workflowType": "WDL",
                "workflowTypeVersion": wf.type_version,
            },
        }
        if wf.start:
            md["start"] = _iso(wf.start)
        if wf.end:
            md["end"] = _iso(wf.end)
        if wf.failures:
            md["failures"] = wf.failures
        return md

    def query_result(self, wf: Workflow, fields: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": wf.id,
            "name": wf.name,
            "status": wf.status,
            "submission": _iso(wf.submission),
            "metadataArchiveStatus": "Unarchived",
        }
        if wf.start:
            out["start"] = _iso(wf.start)
        if wf.end:
            out["end"] = _iso(wf.end)
        if "labels" in fields:
            out["labels"] = self._labels(wf)
        return out

    # ------------------------------------------------------------ query
    def query(self, criteria: list[tuple[str, str]]) -> dict[str, Any]:
        unknown = sorted({k for k, _ in criteria} - QUERY_KEYS)
        if unknown:
            raise BadRequest(f"Unrecognized query keys: {', '.join(unknown)}")
        by: dict[str, list[str]] = {}
        for k, v in criteria:
            by.setdefault(k, []).append(v)

        def pairs(key: str) -> list[tuple[str, str]]:
            out = []
            for v in by.get(key, []):
                k, sep, val = v.partition(":")
                if not sep or not k:
                    raise BadRequest(f"Label values must be specified as key:value: {v!r}")
                out.append((k, val))
            return out

        for s in by.get("status", []):
            if s not in STATUSES:
                raise BadRequest(f"Unrecognized status values: {s}")
        for i in by.get("id", []):
            if not _is_uuid(i):
                raise BadRequest(f"Invalid workflow IDs: {i}")
        for key in ("submission", "start", "end"):
            if len(by.get(key, [])) > 1:
                raise BadRequest(f"{key} may be specified at most once")
        bounds = {}
        for key in ("submission", "start", "end"):
            if key in by:
                try:
                    bounds[key] = datetime.fromisoformat(by[key][0])
                except ValueError:
                    raise BadRequest(f"{key}: not an ISO 8601 date-time: {by[key][0]}") from None
        try:
            page = int(by.get("page", ["1"])[0])
            size = int(by.get("pageSize", ["0"])[0])
        except ValueError:
            raise BadRequest("page and pageSize must be integers") from None
        fields = by.get("additionalQueryResultFields", [])
        for f in fields:
            if f not in ("labels", "parentWorkflowId"):
                raise BadRequest(f"Unrecognized additionalQueryResultFields: {f}")
        label_and, label_or = pairs("label"), pairs("labelor")
        ex_and, ex_or = pairs("excludeLabelAnd"), pairs("excludeLabelOr")

        with self._lock:
            workflows = list(self.workflows.values())
        matched = []
        for wf in workflows:
            labels = self._labels(wf)

            def has(kv: tuple[str, str], labels: dict[str, str] = labels) -> bool:
                return labels.get(kv[0]) == kv[1]

            if label_and and not all(map(has, label_and)):
                continue
            if label_or and not any(map(has, label_or)):
                continue
            if ex_and and all(map(has, ex_and)):
                continue
            if ex_or and any(map(has, ex_or)):
                continue
            if "status" in by and wf.status not in by["status"]:
                continue
            if "id" in by and wf.id not in by["id"]:
                continue
            if "name" in by and wf.name not in by["name"]:
                continue
            if "submission" in bounds and wf.submission < bounds["submission"]:
                continue
            if "start" in bounds and (wf.start is None or wf.start < bounds["start"]):
                continue
            if "end" in bounds and (wf.end is None or wf.end > bounds["end"]):
                continue
            matched.append(wf)
        matched.sort(key=lambda w: w.submission, reverse=True)
        total = len(matched)
        if size > 0:
            matched = matched[(page - 1) * size : page * size]
        return {
            "results": [self.query_result(w, fields) for w in matched],
            "totalResultsCount": total,
        }

    # ------------------------------------------------------------ HTTP
    def _build_app(self) -> Flask:
        app = Flask("cromwell-standin")
        base = "/api/workflows/v1"

        @app.before_request
        def _count() -> None:
            with self._lock:
                self.requests.append((request.method, request.path))

        @app.errorhandler(BadRequest)
        def _bad(e: BadRequest) -> Response:
            return _fail(400, str(e))

        def workflow_route(view: Callable[[Workflow], Any]) -> Callable[[str], Any]:
            def wrapped(workflow_id: str) -> Any:
                if not _is_uuid(workflow_id):
                    return _fail(400, f"Invalid workflow ID: '{workflow_id}'.")
                wf = self.workflows.get(workflow_id)
                if wf is None:
                    return _fail(404, f"Unrecognized workflow ID: {workflow_id}")
                return view(wf)

            wrapped.__name__ = view.__name__
            return wrapped

        @app.post(base)
        def submit() -> Any:
            files = request.files
            form = request.form

            def part(name: str) -> str | None:
                if name in files:
                    return files[name].read().decode()
                return form.get(name)

            source = part("workflowSource")
            if not source:
                raise BadRequest("Error(s): Either workflow source or url has to be supplied")
            wtype = part("workflowType") or "WDL"
            if wtype.upper() != "WDL":
                raise BadRequest(f"Error(s): unsupported workflowType {wtype!r}: only WDL here")
            inputs = _json_object(part("workflowInputs"), "workflowInputs")
            labels = _validate_labels(_json_object(part("labels"), "labels"))
            options = _json_object(part("workflowOptions"), "workflowOptions")
            name = check_workflow(source, inputs)
            on_hold = (part("workflowOnHold") or "").lower() == "true"
            workflow_id = str(uuid.uuid4())
            run_dir = self.workdir / workflow_id
            run_dir.mkdir(parents=True)
            wf = Workflow(
                id=workflow_id,
                source=source,
                inputs=inputs,
                labels=labels,
                options=options,
                name=name,
                type_version=part("workflowTypeVersion") or "1.0",
                run_dir=run_dir,
                status="On Hold" if on_hold else "Submitted",
            )
            answer = {"id": workflow_id, "status": wf.status}
            with self._lock:
                self.workflows[workflow_id] = wf
            t = threading.Thread(target=self._run, args=(wf,), daemon=True)
            self._threads.append(t)
            t.start()
            resp = jsonify(answer)
            resp.status_code = 201
            return resp

        @app.get(f"{base}/<workflow_id>/status")
        @workflow_route
        def status(wf: Workflow) -> Any:
            return jsonify({"id": wf.id, "status": wf.status})

        @app.get(f"{base}/<workflow_id>/metadata")
        @workflow_route
        def metadata(wf: Workflow) -> Any:
            include = request.args.getlist("includeKey")
            exclude = request.args.getlist("excludeKey")
            if include and exclude:
                raise BadRequest("includeKey and excludeKey may not be specified together")
            md = self.metadata(wf)
            if include:
                md = _include(md, ("id", *include))
            if exclude:
                md = _exclude(md, exclude)
            return jsonify(md)

        @app.get(f"{base}/<workflow_id>/logs")
        @workflow_route
        def logs(wf: Workflow) -> Any:
            calls = {
                name: [
                    {k: c[k] for k in ("stdout", "stderr", "shardIndex", "attempt")} for c in shards
                ]
                for name, shards in self._calls_by_name(wf).items()
            }
            return jsonify({"id": wf.id, "calls": calls})

        @app.get(f"{base}/<workflow_id>/labels")
        @workflow_route
        def get_labels(wf: Workflow) -> Any:
            return jsonify({"id": wf.id, "labels": self._labels(wf)})

        @app.patch(f"{base}/<workflow_id>/labels")
        @workflow_route
        def patch_labels(wf: Workflow) -> Any:
            try:
                body = json.loads(request.get_data(as_text=True) or "null")
            except json.JSONDecodeError:
                raise BadRequest("Error(s): labels must be a JSON object") from None
            new = _validate_labels(body)
            with self._lock:
                wf.labels.update(new)
            return jsonify({"id": wf.id, "labels": new})

        @app.post(f"{base}/<workflow_id>/abort")
        @workflow_route
        def abort(wf: Workflow) -> Any:
            before = wf.status
            if before in TERMINAL:
                return _fail(
                    403,
                    f"Couldn't abort {wf.id} because workflow is in terminal state {before}",
                    status="error",
                )
            return jsonify({"id": wf.id, "status": self._abort(wf)})

        @app.post(f"{base}/<workflow_id>/releaseHold")
        @workflow_route
        def release(wf: Workflow) -> Any:
            with self._lock:
                if wf.status != "On Hold":
                    message = f"Couldn't change status of workflow {wf.id} as it is not On Hold"
                    return _fail(403, message, status="error")
                wf.status = "Submitted"
            return jsonify({"id": wf.id, "status": wf.status})

        @app.route(f"{base}/query", methods=["GET", "POST"])
        def query() -> Any:
            if request.method == "GET":
                criteria = list(request.args.items(multi=True))
            else:
                try:
                    body = json.loads(request.get_data(as_text=True) or "[]")
                except json.JSONDecodeError:
                    raise BadRequest("the query must be a JSON array of objects") from None
                if not isinstance(body, list) or not all(isinstance(x, dict) for x in body):
                    raise BadRequest("the query must be a JSON array of objects")
                criteria = [(str(k), str(v)) for item in body for k, v in item.items()]
            return jsonify(self.query(criteria))

        @app.get("/engine/v1/version")
        def version() -> Any:
            from importlib.metadata import version as dist_version

            return jsonify({"cromwell": f"stand-in (miniwdl {dist_version('miniwdl')})"})

        @app.get("/engine/v1/status")
        def engine_status() -> Any:
            return jsonify({"Engine Database": {"ok": True}})

        return app


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _shard_of(dirname: str) -> int:
    tail = dirname.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def _json_or_none(path: Path) -> Any:
    text = _read(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _error_message(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    cause = result.get("cause") or {}
    return str(cause.get("message") or result.get("message") or cause.get("error") or "")


def _failure(message: str) -> dict[str, Any]:
    """One of Cromwell's FailureMessage objects."""
    return {"message": message, "causedBy": []}


def _call_failure(wf: Workflow, task: str, shard: int, rc: int | None, cause: dict) -> str:
    if rc is None and isinstance(cause.get("exit_status"), int):
        rc = cause["exit_status"]
    if rc:
        # Cromwell's own words for a non-zero return code
        return (
            f"Job {wf.name}.{task}:{shard}:1 exited with return code {rc} which has not "
            "been declared as a valid return code. See 'continueOnReturnCode' runtime "
            "attribute for more details."
        )
    return str(cause.get("message") or cause.get("error") or "the task failed")


def _include(md: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    keys = tuple(keys)
    out = {k: v for k, v in md.items() if k.startswith(keys)}
    if "calls" in md and any(k.startswith("calls") or k in ("executionStatus",) for k in keys):
        out["calls"] = md["calls"]
    return out


def _exclude(value: Any, keys: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _exclude(v, keys) for k, v in value.items() if not k.startswith(tuple(keys))}
    if isinstance(value, list):
        return [_exclude(v, keys) for v in value]
    return value
