"""Command line: ``python -m bench run | validate | report | list | keys``.

Errors in what the user gave (a suite file, a name, an option) exit with status 2 and print one line to stderr,
without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from bench.config import ConfigError
from bench.registry import RegistryError

REPO = Path(__file__).resolve().parents[1]
REPORTS_DIR = REPO / "reports"
EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _suite_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="quick", help="a suite name in suites/ or a path to a YAML file")
    parser.add_argument("--out", help="output folder (default: reports/<suite name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite key, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so its @register_model/@register_task run (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train every run of a suite (skipping finished ones), then report")
    _suite_args(run)
    run.add_argument("--seeds", type=int, help="use seeds 1..N instead of the suite's seeds")
    run.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the suite)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: this machine (--workers processes); ray: one Ray task per group of seeds "
                          "(train.parallel_seeds), on the cluster at RAY_ADDRESS or a local Ray instance (the suite's "
                          "resources, max_retries, checkpoint_dir)")
    run.add_argument("--workers", type=int, default=1, help="runs trained at once in separate processes")
    run.add_argument("--threads", type=int, default=1,
                     help="torch threads per run (default 1; CPU results are bit-identical at equal --threads)")
    run.add_argument("--no-estimate", action="store_true", help="skip the up-front cost estimate")
    run.add_argument("--fresh", action="store_true", help="delete this suite's run folders and start over")
    run.add_argument("--no-report", action="store_true", help="skip writing the HTML report")

    validate = sub.add_parser("validate", help="check a suite file without training")
    validate.add_argument("file", help="a suite name or YAML path")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    validate.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")

    report = sub.add_parser("report", help="(re)write the HTML report from a suite's CSVs")
    report.add_argument("--suite", default="quick")
    report.add_argument("--out", help="the suite's output folder (default: reports/<suite name>)")

    sub.add_parser("list", help="list registered tasks, models and suites")
    keys = sub.add_parser("keys", help="print the suite-file reference (markdown)")
    keys.add_argument("--write-readme", action="store_true", help="rewrite the table in README.md in place")
    return parser


def _load(suite: str, overrides: list[str], plugins: list[str]):
    from bench import registry
    from bench.grid import load_suite

    registry.load_all()
    for plugin in plugins:
        registry.load_plugin(plugin)
    return load_suite(suite, overrides)


def _out_dir(args, suite_name: str) -> Path:
    return Path(args.out) if args.out else REPORTS_DIR / suite_name


def cmd_run(args) -> int:
    overrides = list(args.overrides)
    if args.seeds is not None:
        if args.seeds < 1:
            raise CliError(f"--seeds: must be >= 1, got {args.seeds}")
        overrides.append(f"seeds={args.seeds}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.workers < 1:
        raise CliError(f"--workers: must be >= 1, got {args.workers}")
    if args.executor == "ray":
        from bench.ray_backend import INSTALL_HINT, ray_available

        if not ray_available():
            raise CliError(INSTALL_HINT)
        if args.workers > 1:
            raise CliError("--workers: the ray executor runs as many runs at once as the cluster fits (the suite's "
                           "resources); leave --workers out")
    if args.threads < 1:
        raise CliError(f"--threads: must be >= 1, got {args.threads}")
    suite = _load(args.suite, overrides, args.plugins)
    out_dir = _out_dir(args, suite.name)
    from bench.runner import run_suite

    if args.executor == "ray":
        from bench.ray_backend import RayBackend

        backend = RayBackend(threads=args.threads, plugins=tuple(args.plugins), fresh=args.fresh)
    else:
        from bench.local_backend import LocalBackend

        backend = LocalBackend(workers=args.workers, threads=args.threads, plugins=tuple(args.plugins))
    outcome = run_suite(suite, out_dir, backend, fresh=args.fresh, estimate=not args.no_estimate)
    if outcome.failed:
        print(f"{len(outcome.failed)} run(s) failed; see their result.json; rerun to retry them", file=sys.stderr)
    print(f"results: {out_dir}/runs.csv, curves.csv, generalization.csv")
    if not args.no_report:
        from bench.report import write_report

        print(f"report: {write_report(out_dir)}")  # the last line: what to open
    return 1 if outcome.failed else 0


def cmd_validate(args) -> int:
    from bench.grid import expand, memory_overflows

    suite = _load(args.file, args.overrides, args.plugins)
    runs = expand(suite)
    for problem in memory_overflows(suite):
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{suite.path}: ok: {len(suite.tasks)} task(s) x {len(runs) // max(1, len(suite.tasks) * len(suite.seeds))}"
          f" model variant(s) x {len(suite.seeds)} seed(s) = {len(runs)} runs of {suite.train.steps} steps")
    return 0


def cmd_report(args) -> int:
    from bench.report import write_report

    out_dir = Path(args.out) if args.out else REPORTS_DIR / Path(args.suite).stem
    if not (out_dir / "suite.json").exists():
        raise CliError(f"{out_dir}: no results to report (run `python -m bench run --suite {args.suite}` first)")
    print(f"report: {write_report(out_dir)}")
    return 0


def cmd_list(args) -> int:
    from bench import registry
    from bench.config import available_suites

    registry.load_all()
    print("tasks:  " + ", ".join(sorted(registry.TASKS)))
    print("models: " + ", ".join(sorted(registry.MODELS)))
    print("suites: " + ", ".join(available_suites()))
    return 0


def cmd_keys(args) -> int:
    from bench.config import reference_rows

    table = reference_markdown(reference_rows())
    if not args.write_readme:
        print(table)
        return 0
    readme = REPO / "README.md"
    text = readme.read_text()
    if "<!-- keys:start -->" not in text:
        raise CliError(f"{readme}: no <!-- keys:start --> / <!-- keys:end --> markers to write between")
    block = f"<!-- keys:start -->\n{table}\n<!-- keys:end -->"
    text = re.sub(r"<!-- keys:start -->.*<!-- keys:end -->", lambda _: block, text, flags=re.S)
    readme.write_text(text)
    print(f"{readme}: suite reference updated")
    return 0


def reference_markdown(rows) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, text in rows:
        shown = f"`{default}`" if default else ""
        kind = str(kind).replace(" | ", " or ")  # a bare | would split the markdown cell
        lines.append(f"| `{key}` | {kind} | {shown} | {text} |")
    return "\n".join(lines)


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "report": cmd_report, "list": cmd_list, "keys": cmd_keys}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, RegistryError, CliError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, and a rerun resumes the rest from their checkpoints",
              file=sys.stderr)
        return 130
