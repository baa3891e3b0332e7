"""The WDL document and the inputs the cromwell backend generates (checked
with miniwdl's parser)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from pman.backends.cromwell import CromwellBackend
from pman.backends.cromwell.workflow import (
    WORKFLOW_OPTIONS,
    WORKFLOW_WDL,
    build_script,
    cromwell_cpu,
    workflow_inputs,
)
from tests.unit.backends.cromwell.fakes import JID, MANAGED, settings, spec

#: the document pman 4.0.0 generated from a Python string
#: (pman/backends/cromwell.py), before it became the template file job.wdl
WDL_SHA256 = "6bd7a052b77857ead5b7a89129a1b0ddf9875c78b27d19e2c7d6ebdf0f8d9ce3"
WDL_LENGTH = 1279


def test_the_wdl_document_is_the_one_pman_always_sent() -> None:
    data = resources.files("pman.backends.cromwell").joinpath("job.wdl").read_bytes()
    assert len(data) == WDL_LENGTH
    assert hashlib.sha256(data).hexdigest() == WDL_SHA256
    assert WORKFLOW_WDL.encode() == data


def test_the_wdl_and_its_inputs_pass_miniwdls_checks(tmp_path: Path) -> None:
    WDL = pytest.importorskip("WDL")
    doc = WDL.parse_document(WORKFLOW_WDL)
    doc.typecheck()
    assert doc.workflow is not None and doc.workflow.name == "pman"
    assert [t.name for t in doc.tasks] == ["plugin"]
    inputs = workflow_inputs(spec(tmp_path, workers=2), "/sb/in", "/sb/out", 30)
    wf = doc.workflow
    bound = WDL.values_from_json(inputs, wf.available_inputs, wf.required_inputs, namespace="pman")
    values = {b.name: b.value.json for b in bound}
    assert values["workers"] == 2
    assert values["cpu"] == 2  # 1500 millicores: whole cores, rounded up
    assert values["memory"] == "64 MiB"
    assert values["runtime_minutes"] == 30
    assert (values["incoming"], values["outgoing"]) == ("/sb/in", "/sb/out")
    runtime = {k for k in doc.tasks[0].runtime}
    assert {"docker", "cpu", "memory", "gpu", "gpuCount", "runtime_minutes"} <= runtime
    assert {"pman_incoming", "pman_outgoing", "maxRetries"} <= runtime


def test_the_script_runs_the_command_word_for_word(tmp_path: Path) -> None:
    s = spec(tmp_path)
    script = build_script(["printf", "[%s]\\n", *s.command[1:]], s.env)
    script += 'printf "A=%s QUOTED=%s\\n" "$A" "$QUOTED"\necho to-stderr >&2\n'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[--say]",
        "[it's $HOME `x`",
        "next]",
        "[/share/incoming]",
        "[/share/outgoing]",
        "A=1 QUOTED=a 'b' \"c\" $D",
        "to-stderr",  # stderr joins stdout, in order
    ]
    assert out.stderr == ""


def test_submit_form(tmp_path: Path) -> None:
    b = CromwellBackend.from_settings(settings(tmp_path))
    form = b.submit_form(spec(tmp_path))
    assert form["workflowSource"][1] == WORKFLOW_WDL
    assert json.loads(form["labels"][1]) == {MANAGED: "true", JID: "job-1", "team": "x"}
    options = json.loads(form["workflowOptions"][1])
    assert options == WORKFLOW_OPTIONS and options["read_from_cache"] is False
    inputs = json.loads(form["workflowInputs"][1])
    assert inputs["pman.incoming"] == str(tmp_path / "key/in")
    assert inputs["pman.outgoing"] == str(tmp_path / "key/out")
    assert inputs["pman.argv"][0] == "copyplugin"
    assert form["workflowTypeVersion"][1] == "1.0"


@pytest.mark.parametrize(("millicores", "cores"), [(1, 1), (100, 1), (1000, 1), (1001, 2)])
def test_cpu_is_whole_cores_rounded_up(millicores: int, cores: int) -> None:
    assert cromwell_cpu(millicores) == cores
