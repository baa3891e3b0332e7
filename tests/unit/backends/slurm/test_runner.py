"""THE helper that runs SLURM's commands, with fake tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from pman.backends.slurm.runner import LocalRunner, SlurmCommandError

# ---------------------------------------------------------------- the command helper


def fake_tools(tmp_path: Path, **scripts: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\n" + body)
        tool.chmod(0o755)
    return bin_dir


def test_command_helper_raises_with_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = fake_tools(
        tmp_path,
        squeue='echo "partial out"; echo "squeue: error: boom" >&2; exit 3\n',
        sinfo='echo "$SBATCH_PARTITION|${SQUEUE_FORMAT:-unset}|$SLURM_CONF"\n',
        sleepy="exec sleep 30\n",  # exec: killed at the timeout, its pipes with it
    )
    monkeypatch.setenv("SBATCH_PARTITION", "leaked")
    monkeypatch.setenv("SQUEUE_FORMAT", "%i")
    # long enough for a loaded machine to run the quick tools, short for the sleepy one
    runner = LocalRunner(bin_dir=bin_dir, timeout=3, conf="/etc/other.conf")
    with pytest.raises(SlurmCommandError) as e:
        runner.run(["squeue", "--me"])
    err = e.value
    assert err.argv == (str(bin_dir / "squeue"), "--me")
    assert (err.returncode, err.stdout, err.stderr) == (3, "partial out\n", "squeue: error: boom\n")
    assert "exited with code 3: squeue: error: boom" in str(err)
    # the tools' own variables are never passed on; SLURM_CONF is the setting
    assert runner.run(["sinfo"]).stdout == "|unset|/etc/other.conf\n"
    with pytest.raises(SlurmCommandError) as e:
        runner.run(["sleepy"])
    assert e.value.timed_out
    with pytest.raises(SlurmCommandError) as e:
        runner.run(["no-such-tool"])
    assert e.value.returncode is None
    assert runner.calls == {"squeue": 1, "sinfo": 1, "sleepy": 1, "no-such-tool": 1}
