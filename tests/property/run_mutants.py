"""Run the lifecycle machine once per planted defect and print which ones it catches.

    .venv/bin/python -m tests.property.run_mutants [NAME ...]

Each mutant runs in its own pytest process (FEESVC_MUTANT=<name>, profile `lifecycle-mutants`:
the long size, 300 examples of up to 100 steps, without the example database, so that one
mutant's stored failure is not replayed against the next). Caught = the test failed; "steps"
counts the rule calls of the shrunk failing example hypothesis printed; "failed with" is the
first error line. Not a pytest test: it runs the machine many times over.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.property.mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[2]
STEP = re.compile(r"^[\s|]*state\.(?!teardown\b)(\w+)\(", re.MULTILINE)
FIRST_ERROR = re.compile(r"^[\s|]*E\s+(\S.*)$", re.MULTILINE)


def run(name: str) -> tuple[bool, int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / ".venv/bin/pytest"), "tests/property/test_lifecycle_machine.py", "-q", "-x",
         "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "FEESVC_MUTANT": name, "FEESVC_LIFECYCLE_PROFILE": "lifecycle-mutants"})
    output = result.stdout + result.stderr
    steps = [s for s in STEP.findall(output) if s != "database_agrees_with_model"]
    first = FIRST_ERROR.search(output)
    where = first.group(1)[:90].replace("|", "/") if first else "?"
    return result.returncode != 0, len(steps), where, time.monotonic() - started


def main(names: list[str]) -> int:
    print("| mutant | caught | steps of the shrunk failure | failed with | seconds |")
    print("|---|---|---|---|---|")
    missed = 0
    for name in names or list(MUTANTS):
        caught, steps, where, seconds = run(name)
        missed += not caught
        print(f"| `{name}` | {'yes' if caught else 'NO'} | {steps if caught else '-'} | "
              f"{where if caught else '-'} | {seconds:.0f} |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
