"""The examples in `clients/python/examples/` run as a reader would run them:
each is a script, started with the `mandate` binary the tests use, and must
show the denied call refused (its tool never ran, the model read why), the
allowed one run, and both in the task's history, within a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mandate_bin

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str) -> str:
    env = dict(os.environ)
    env["MANDATE_BIN"] = mandate_bin()
    src = str(EXAMPLES.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, script],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"{script} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


@pytest.mark.parametrize(
    ("script", "denied", "allowed"),
    [
        (
            "langgraph_mail_agent.py",
            "tool send_email (error): Mandate did not allow this call (deny): "
            "a recipient is not among the task's allowed recipients. The tool did not run.",
            "tool read_inbox (success): inbox: 2 messages from carol@example.com",
        ),
        (
            "openai_agents_mail_agent.py",
            "tool output: Mandate did not allow this call (deny): "
            "a recipient is not among the task's allowed recipients. The tool did not run.",
            "tool output: inbox: 2 messages from carol@example.com",
        ),
    ],
)
def test_the_example_runs_and_mandate_decides_its_calls(
    script: str, denied: str, allowed: str
) -> None:
    out = run(script)
    assert denied in out, out
    assert allowed in out, out
    assert "sent to mallory" not in out, out
    assert "history: send_email deny" in out, out
    assert "history: read_inbox allow" in out, out
    assert "agent: " in out, out
