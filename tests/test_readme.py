"""The README's Python example runs as written, so it can never go stale.

The block is the first ```python fence under the heading ``## Train a model of your own``; it is
run in a fresh temporary directory (it saves and reloads a model there), in a separate namespace.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Train a model of your own"


def readme_example(text: str) -> str:
    """The code of the first python block after :data:`HEADING`; ValueError if there is none."""
    start = text.find(HEADING)
    if start < 0:
        raise ValueError(f"README.md has no heading {HEADING!r}")
    m = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    if m is None:
        raise ValueError(f"README.md has no python block under {HEADING!r}")
    return m.group(1)


def test_the_example_is_a_real_training_run():
    code = readme_example(README.read_text())
    lines = [line for line in code.splitlines() if line.strip()]
    assert 20 <= len(lines) <= 32, f"the example has {len(lines)} lines; keep it 20-30"
    for name in ("js.fit(", "js.predict(", "js.init_params(", "js.save(", "js.load("):
        assert name in code, f"the README example no longer shows {name}"


def test_the_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_example(README.read_text())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README) + ":example", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "best epoch" in out, out


def test_a_broken_example_fails(tmp_path, monkeypatch):
    """The runner can fail: an example calling a name the face lacks raises."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AttributeError):
        exec("import jaxscratch as js\njs.no_such_function()\n", {})
    with pytest.raises(ValueError, match="no heading"):
        readme_example("# nothing here\n")
