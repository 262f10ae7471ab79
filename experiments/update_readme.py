"""Regenerate the README's sample outputs by running the commands they show.

    python experiments/update_readme.py            # rewrite README.md in place (atomically, jaxscratch.fileio)
    python experiments/update_readme.py --check    # exit 1 if a block is missing its command

A sample output in README.md is a ```text block preceded by a marker line::

    <!-- output: jaxscratch gradcheck | keep 5 3 -->

Each command (``;``-separated for several) runs in the repository root with ``MPLBACKEND=Agg``;
the block becomes ``$ command`` followed by what it printed (stdout and stderr), for every command
in the marker. Options, each after a ``|``: ``keep HEAD TAIL`` abridges a long
output to its first HEAD and last TAIL lines with a ``...`` line between; ``fresh DIR`` removes
the directory DIR (inside the repository, e.g. a run directory) before the commands run. The sample outputs are therefore never edited by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from jaxscratch.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- output: (?P<cmd>[^|]+?)(?P<opts>(?: \| [^|]+?)*) -->\n"
                    r"```text\n(?P<body>.*?)```\n", re.M | re.S)  # fmt: skip


def run(command: str) -> str:
    """``$ command`` and its combined output, as the README shows it."""
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    return f"$ {command}\n{proc.stdout}{proc.stderr}"


def abridge(text: str, head: int | None, tail: int | None) -> str:
    """The first ``head`` and last ``tail`` lines with ``...`` between, when that is shorter."""
    lines = text.rstrip("\n").split("\n")
    if head is None or tail is None or len(lines) <= head + tail + 1:
        return "\n".join(lines) + "\n"
    return "\n".join(lines[:head] + ["..."] + lines[len(lines) - tail :]) + "\n"


def regenerate(readme: str) -> str:
    """``readme`` with every marked block replaced by its commands' fresh output."""

    def block(m: re.Match[str]) -> str:
        head = tail = None
        for opt in filter(None, (o.strip() for o in m["opts"].split("|"))):
            word, *args = opt.split()
            if word == "keep" and len(args) == 2:
                head, tail = int(args[0]), int(args[1])
            elif word == "fresh" and len(args) == 1:
                target = (ROOT / args[0]).resolve()
                if ROOT not in target.parents:
                    raise ValueError(f"update_readme: fresh {args[0]} is outside the repository")
                shutil.rmtree(target, ignore_errors=True)
            else:
                raise ValueError(f"update_readme: unknown option {opt!r} in {m.group(0)!r}")
        outputs = [abridge(run(c.strip()), head, tail) for c in m["cmd"].split(";")]
        marker = m.group(0).split("\n", 1)[0]
        return f"{marker}\n```text\n{''.join(outputs)}```\n"

    return MARKER.sub(block, readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="only list the marked blocks")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    text = args.readme.read_text()
    found = [m["cmd"] for m in MARKER.finditer(text)]
    if args.check:
        print("\n".join(found) or "no marked output blocks")
        return 0 if found else 1
    new = regenerate(text)
    atomic_write(args.readme, lambda f: f.write(new), mode="w")
    print(f"regenerated {len(found)} output blocks in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
