"""Record the v1 contract of a pman source tree (done once, for release 4.0.0).

    REF=~/.cache/pman-ref/$(git rev-parse 25ba7ec)   # bench/compare.py makes the same
    git worktree add --detach $REF 25ba7ec
    PMAN_VENV=$REF/.venv bash $REF/scripts/dev.sh venv
    .venv/bin/python -m tests.contract.record --source $REF --out tests/contract/v1-4.0.0.json

Recorded so from 25ba7ec (4.0.0); run it again (to a file elsewhere) and
compare to see that the recording is deterministic: it was, 5 times in 5.

The scenario (tests/contract/scenario.py) is this tree's; the server is the
source tree's own ``pman serve``, from its virtualenv (``--pman`` to name
another command).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from tests.contract import scenario


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True, help="the pman source tree to record")
    p.add_argument("--pman", type=Path, help="its pman command (default SOURCE/.venv/bin/pman)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    pman = args.pman or args.source / ".venv" / "bin" / "pman"
    commit = subprocess.run(
        ["git", "-C", str(args.source), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    version = subprocess.run(
        [str(pman), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="pman-contract-") as workdir:
        exchanges = scenario.run(pman, Path(workdir))
    recording = {
        "recorded_from": {"commit": commit, "pman --version": version},
        "exchanges": exchanges,
    }
    args.out.write_text(json.dumps(recording, indent=1) + "\n")
    print(f"{len(exchanges)} exchanges of {commit[:12]} written to {args.out}")


if __name__ == "__main__":
    main()
