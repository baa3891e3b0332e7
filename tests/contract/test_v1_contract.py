"""The v1 wire contract is that of release 4.0.0: the recorded answers of
4.0.0 (v1-4.0.0.json, tests/contract/record.py) to the fixed scenario
(scenario.py) are compared with this code's, through `pman serve` on the
local backend. Only what always differs is left out (normalise.py); what
changed on purpose is listed in changes.py."""

from __future__ import annotations

import copy
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.contract import scenario
from tests.contract.changes import ADDED, CHANGES, EXTENDED, extends

pytestmark = [pytest.mark.local, pytest.mark.timeout(600)]

RECORDING = Path(__file__).with_name("v1-4.0.0.json")
#: differing exchanges shown in full in a failure's message
SHOWN = 12


def expected_now(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recording with the changes of changes.py applied; each must differ."""
    expected = copy.deepcopy(recorded)
    for change in CHANGES:
        assert change.exchange in expected, f"changes.py names no exchange: {change.exchange}"
        *parents, last = change.path
        holder = expected[change.exchange]
        for key in parents:
            holder = holder[key]
        assert holder[last] != change.now, (
            f"changes.py: {change.exchange} {list(change.path)} is what 4.0.0 answered: "
            "no longer a change, remove it"
        )
        holder[last] = change.now
    for added in ADDED:
        found = [0]

        def add(value: Any, added: Any = added, found: list[int] = found) -> None:
            if isinstance(value, dict):
                for v in value.values():
                    add(v)
                if added.where(value):
                    assert added.field not in value, f"{added.field} was there in 4.0.0"
                    value[added.field] = added.value
                    found[0] += 1
            elif isinstance(value, list):
                for v in value:
                    add(v)

        for exchange in expected.values():
            response = exchange.get("response")
            if isinstance(response, dict):  # HTTP answers (not webhooks received)
                add(response.get("body"))
        assert found[0], f"changes.py: {added.field} is added to no answer: remove it"
    return expected


def _text(value: Any) -> list[str]:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False).splitlines()


def describe(name: str, want: Any, got: Any) -> str:
    request = (want or got or {}).get("request", {})
    what = f"{request.get('method', '')} {request.get('path', '')}".strip() or str(request)
    if want is None:
        return f"== {name} ({what}): not in the recording (the scenario changed: re-record)"
    if got is None:
        return f"== {name} ({what}): recorded, but the scenario did not send it"
    hint = ""
    if want.get("request") != got.get("request"):
        hint = " -- the REQUEST differs: the scenario changed; re-record 4.0.0 (record.py)"
    diff = difflib.unified_diff(
        _text(want),
        _text(got),
        "expected (4.0.0 recorded, changes.py applied)",
        "this code",
        n=2,
        lineterm="",
    )
    return f"== {name} ({what}){hint}\n" + "\n".join(diff)


def test_v1_answers_are_those_of_4_0_0(tmp_path: Path) -> None:
    recorded = json.loads(RECORDING.read_text())["exchanges"]
    expected = expected_now(recorded)
    pman = Path(sys.executable).with_name("pman")
    got = scenario.run(pman, tmp_path)
    for extended in EXTENDED:
        *parents, last = extended.path
        want, have = expected[extended.exchange], got.get(extended.exchange, {})
        for key in parents:
            want, have = want[key], have.get(key, {})
        assert have.get(last) != want[last], (
            f"changes.py: {extended.exchange} is what 4.0.0 answered: no longer extended"
        )
        assert extends(have.get(last), want[last]), (
            f"{extended.exchange} {list(extended.path)}: not only added to 4.0.0's answer\n"
            + describe(extended.exchange, expected[extended.exchange], got[extended.exchange])
        )
        want[last] = have[last]
    names = list(expected) + [n for n in got if n not in expected]
    differ = [n for n in names if expected.get(n) != got.get(n)]
    if differ:
        shown = "\n\n".join(describe(n, expected.get(n), got.get(n)) for n in differ[:SHOWN])
        more = f"\n\n... and {len(differ) - SHOWN} more" if len(differ) > SHOWN else ""
        pytest.fail(
            f"{len(differ)} of {len(names)} answers differ from release 4.0.0's "
            f"({', '.join(differ)}):\n\n{shown}{more}",
            pytrace=False,
        )
