"""Every built-in task's protocol fingerprint at a small fixed evaluation configuration: tests/data/protocols.json.

    python scripts/protocols.py            print each task's version and fingerprint (JSON)
    python scripts/protocols.py --write    rewrite tests/data/protocols.json
    python scripts/protocols.py --check    exit 1, saying what to do, when tests/data/protocols.json is out of date

The file is the record of each task's protocol (docs/TASKS.md, "Protocol versions and fingerprints"): a task's
fingerprint (`bench.protocol.protocol`, default parameters, GOLDEN's settings) changes whenever its evaluation data
or rules do. tests/test_protocol.py fails when a fingerprint changed at the same version (bump the task's
`version` in tasks/<module>.py and say why in CHANGELOG.md), and when a version was bumped but not recorded here;
after either, run this script with --write and commit the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.grid import task_key  # noqa: E402
from bench.protocol import protocol  # noqa: E402
from tasks import TASKS  # noqa: E402

GOLDEN = REPO / "tests" / "data" / "protocols.json"
#: the evaluation configuration the golden fingerprints are taken at: small, so the test is fast; the default seed
SETTINGS = {"eval_sequences": 64, "generalization_sequences": 16, "eval_seed": 20141020}


def current() -> dict[str, dict[str, Any]]:
    """Each built-in task type (`tasks.TASKS`) -> {"version", "fingerprint"} at its default parameters and
    SETTINGS, as the code gives them now."""
    result = {}
    for name, cls in sorted(TASKS.items()):
        found = protocol(cls(), name, {}, SETTINGS["eval_sequences"], SETTINGS["generalization_sequences"],
                         SETTINGS["eval_seed"], task_key(name, {}))
        result[name] = {"version": found["version"], "fingerprint": found["fingerprint"]}
    return result


def text(protocols: dict[str, dict[str, Any]]) -> str:
    return json.dumps(protocols, indent=2, sort_keys=True) + "\n"


def recorded() -> dict[str, dict[str, Any]]:
    """tests/data/protocols.json as committed: task type -> {"version", "fingerprint"} (at SETTINGS)."""
    return json.loads(GOLDEN.read_text())


def problems(found: dict[str, dict[str, Any]], golden: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with the recorded protocols `golden` given the `found` ones (`current()`), one line each: a
    fingerprint changed at the same version (the task must bump its version), a version not recorded yet, a task
    missing from the record or recorded but gone."""
    lines = []
    regenerate = "then run python scripts/protocols.py --write and commit tests/data/protocols.json"
    for name, now in sorted(found.items()):
        module = f"{TASKS[name].__module__.replace('.', '/')}.py" if name in TASKS else f"the module of {name}"
        was = golden.get(name)
        if was is None:
            lines.append(f"task {name} has no recorded protocol: {regenerate}")
        elif now["version"] == was["version"] and now["fingerprint"] != was["fingerprint"]:
            lines.append(f"task {name}: its evaluation data or rules changed at protocol version {now['version']} "
                         f"(fingerprint {was['fingerprint'][:12]} -> {now['fingerprint'][:12]}). If the change is "
                         f"meant, bump `version` in {module} to {now['version'] + 1}, add a line to CHANGELOG.md "
                         f"saying what changed, {regenerate}; if not, undo it (results stop being comparable)")
        elif now["version"] > was["version"]:
            lines.append(f"task {name}: protocol version {now['version']} is not recorded (the record has "
                         f"{was['version']}): {regenerate}")
        elif now["version"] < was["version"]:
            lines.append(f"task {name}: protocol version {now['version']} is lower than the recorded "
                         f"{was['version']}; a version only ever goes up ({module})")
    gone = sorted(set(golden) - set(found))
    lines += [f"task {name} is recorded but no longer built in: {regenerate}" for name in gone]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"rewrite {GOLDEN.relative_to(REPO)}")
    action.add_argument("--check", action="store_true",
                        help=f"exit 1 if {GOLDEN.relative_to(REPO)} is not what the code gives")
    args = parser.parse_args(argv)
    found = current()
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text(found))
        return 0
    if args.check:
        lines = problems(found, recorded() if GOLDEN.is_file() else {})
        for line in lines:
            print(line, file=sys.stderr)
        return 1 if lines else 0
    print(text(found), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
