"""Hostile path and name fields: every one is refused, and nothing is created.

Each request below names a path or a name meant to reach outside STOREBASE
or to read differently elsewhere: ``..``, absolute paths, a symbolic link
pointing out of STOREBASE, NUL bytes, unicode look-alikes (fullwidth
``\uff0e\uff0e\uff0f``, right-to-left override, zero-width characters, decomposed
forms, unpaired surrogates), invalid UTF-8 (overlong forms of ``.`` and
``/``) and very long strings. Every one must be answered 400 (404 for a jid
in a URL, which is only ever looked up), and afterwards: no file or folder
appeared anywhere (inside STOREBASE or next to it), the registry has no
record, and the engine no container or process.

Absolute paths are upstream's convention for "relative to STOREBASE"
(``/key-1/incoming`` is ``STOREBASE/key-1/incoming``), so ``/etc`` names
``STOREBASE/etc``: refused as an input folder that does not exist, never the
host's ``/etc``. The argument after a path flag is replaced by
/share/incoming, so a ``..`` there never reaches a path (checked too).
"""

from __future__ import annotations

import http.client
import os
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import Pman

pytestmark = pytest.mark.traversal

BACKENDS = [
    pytest.param("local", marks=pytest.mark.local),
    pytest.param("docker", marks=pytest.mark.docker),
]

LONG = "a" * 300
DEEP = "/".join(["d" * 200] * 30)  # 6 kB: each name fine, the path too long

#: (field, value) pairs for POST /api/v1/, each of which must be 400
PATH_CASES: list[tuple[str, Any]] = [
    (field, value)
    for field in ("input_dir", "output_dir")
    for value in (
        "..",
        "../",
        "../outside",
        "../../../../../../etc",
        "key-1/../../outside",
        "key-1/incoming/../../../outside",
        "/../outside",
        "./../outside",
        "key-1/\x00/incoming",
        "\x00",
        "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0foutside",  # fullwidth: NFKC makes it ../../outside
        "key-1/\uff0e\uff0e",
        "key-1/\u202eemocni",  # right-to-left override
        "key\u200b-1/incoming",  # zero-width space
        "key-1/inco\u0301ming",  # a combining accent: not NFKC
        "caf\u0065\u0301",  # decomposed \u00e9
        "key-1/\ud800",  # unpaired surrogate
        "\ufb01le",  # a ligature NFKC turns into "file"
        "key-1/" + LONG,
        DEEP,
        "key-1/link-out",  # symlink to a folder outside STOREBASE
        "key-1/link-out/new-folder",
        "key-1/link-etc",  # symlink to /etc
    )
] + [
    ("input_dir", "/etc"),  # STOREBASE/etc: not there
    ("input_dir", "/"),  # STOREBASE itself as input is allowed: output then must differ
]
NAME_CASES: list[tuple[str, Any]] = [
    *[
        ("jid", v)
        for v in (
            "..",
            "../outside",
            "/../outside",
            "a/../../b",
            "a/b",
            "a\x00b",
            "\uff0e\uff0e",
            "\u202ejob",
            "jo\u200bb",
            "j\ud800",
            "%2e%2e",
            "a" * 300,
        )
    ],
    *[
        ("auid", v)
        for v in (
            "..",
            "../../outside",
            "/etc/passwd",
            "chris\x00",
            "\uff0e\uff0e",
            "\u202echris",
            "chr\u200bis",
            "chris\ud800",
            "a" * 300,
            "",
        )
    ],
    *[
        ("image", v)
        for v in (
            "../../etc/passwd",
            "fnndsc/../../x",
            "ima\x00ge",
            "\uff0e\uff0e\uff0fx",
            "ima\u202ege",
            "imag\u200be",
            "im\ud800",
            "x" * 2000,
            "with space",
        )
    ],
    *[
        ("env", [v])
        for v in (
            "../X=1",
            "A/B=1",
            "A\x00B=1",
            "\uff21=1",  # fullwidth A
            "\u202eA=1",
            "A=\x00",
            "A=\ud800",
            "=1",
            "1A=1",
        )
    ],
    ("args", ["ok", "nul\x00"]),
    ("args", ["\ud800"]),
    ("entrypoint", ["copyplugin\x00"]),
    ("args_path_flags", ["--mask\x00"]),
]

#: jids in URLs (already percent-encoded): never a path, 404 (or 405 for a route)
URL_JIDS = [
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Fetc",
    "..%2f..%2fetc",
    "%252e%252e",
    "%00",
    "a%00b",
    "%EF%BC%8E%EF%BC%8E",  # fullwidth \uff0e\uff0e
    "%E2%80%AEjob",  # RTL override
    "%C0%AE%C0%AE",  # overlong UTF-8 '..'
    "%ED%A0%80",  # an encoded surrogate (invalid UTF-8)
    "a" * 300,
    "%2fetc%2fpasswd",
]


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (without following links), relative to it."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def raw_request(url: str, method: str, path: str) -> int:
    """Send ``path`` byte for byte (requests would normalise it)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def hostile(tmp_path: Path, make_pman: Callable[..., Pman]) -> Callable[[str], Pman]:
    def make(backend: str) -> Pman:
        p = make_pman(backend, PMAN_AUTH="none")
        outside = tmp_path / f"outside-{uuid.uuid4().hex[:6]}"
        outside.mkdir()
        (p.storebase / "key-1" / "link-out").symlink_to(outside)
        (p.storebase / "key-1" / "link-etc").symlink_to("/etc")
        p.outside = outside  # type: ignore[attr-defined]
        return p

    return make


def engine_jobs(p: Pman) -> list[str]:
    """Jobs of this pman on its engine: containers of its instance, local job folders."""
    instance = p.service.settings.registry.instance
    if p.engine is not None:
        found = p.engine.containers(
            all=True, filters={"label": f"org.chrisproject.pman.instance={instance}"}
        )
        return [c["Names"][0] for c in found]
    jobs_dir = p.service.settings.core.data_dir / "local" / "jobs"
    return sorted(os.listdir(jobs_dir)) if jobs_dir.is_dir() else []


@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_paths_and_names_are_400_and_create_nothing(
    backend: str, hostile: Callable[[str], Pman], tmp_path: Path
) -> None:
    p = hostile(backend)
    before = snapshot(tmp_path)
    etc_before = set(os.listdir("/etc"))
    wrong: list[str] = []
    for field, value in PATH_CASES + NAME_CASES:
        body = p.body(**{field: value})
        if field == "jid":
            p.jids.pop()  # not a name the fixture could clean up, nor needs to
        if field == "input_dir" and value == "/":
            body["output_dir"] = "/"  # STOREBASE as output: refused
        resp = p.post(body)
        if resp.status_code != 400:
            wrong.append(f"{field}={value!r:.60}: {resp.status_code} {resp.text[:200]}")
        elif field not in resp.json().get("fields", {}) and field not in ("input_dir",):
            wrong.append(f"{field}={value!r:.60}: 400 without the field named: {resp.text}")
    # bytes that are not UTF-8 (overlong '.' and '/'): not JSON at all
    for raw in (b'{"input_dir": "\xc0\xae\xc0\xae\xc0\xaf"}', b'{"jid": "\xed\xa0\x80"}'):
        resp = requests.post(
            f"{p.url}/api/v1/",
            data=raw.replace(b"}", b', "x": 1}'),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        if resp.status_code != 400:
            wrong.append(f"raw {raw!r}: {resp.status_code}")
    for jid in URL_JIDS:
        for method, suffix in (("GET", "/"), ("DELETE", "/"), ("GET", "/events/")):
            status = raw_request(p.url, method, f"/api/v1/{jid}{suffix}")
            if status != 404:
                wrong.append(f"{method} /api/v1/{jid}{suffix}: {status}")
    assert not wrong, "\n".join(wrong)

    # nothing created: not next to STOREBASE, not in it, not through the links
    assert snapshot(tmp_path) == before
    assert not list(p.outside.iterdir())  # type: ignore[attr-defined]
    assert set(os.listdir("/etc")) == etc_before
    listed = requests.get(f"{p.url}/api/v1/jobs/?include_deleted=true", timeout=30).json()
    assert listed["jobs"] == []
    assert engine_jobs(p) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_flag_arguments_never_reach_a_path(
    backend: str, hostile: Callable[[str], Pman], tmp_path: Path
) -> None:
    p = hostile(backend)
    body = p.body(
        args=["--mask", "../../../../etc/passwd"],
        args_path_flags=["--mask"],
    )
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    cmd = resp.json()["cmd"]
    assert "../" not in cmd and "--mask /share/incoming" in cmd
    done = p.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    # the job saw its own input folder (the local backend's is the host path of it)
    report = (p.out(body) / "report.txt").read_text()
    incoming = "/share/incoming" if backend != "local" else str(p.storebase / "key-1/incoming")
    assert f"mask {incoming}\n" in report, report


@pytest.mark.parametrize("backend", BACKENDS)
def test_absolute_output_dir_stays_inside_storebase(
    backend: str, hostile: Callable[[str], Pman]
) -> None:
    p = hostile(backend)
    name = f"pman-traversal-{uuid.uuid4().hex[:8]}"
    body = p.body(output_dir=f"/tmp/{name}")
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    assert p.wait(body["jid"])["status"] == "finishedSuccessfully"
    assert not Path("/tmp", name).exists()
    assert (p.storebase / "tmp" / name / "out-data.txt").read_text() == "some data\n"


@pytest.mark.local
def test_rejected_job_leaves_no_output_folder(
    hostile: Callable[[str], Pman],
) -> None:
    """The output folder is made before the engine is asked; a refusal removes it."""
    p = hostile("local")
    body = p.body(entrypoint=["no-such-program-here"], output_dir="fresh/new/out")
    resp = p.post(body)
    assert resp.status_code == 400, resp.text
    assert not (p.storebase / "fresh").exists()
