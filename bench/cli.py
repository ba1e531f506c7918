"""Command line of ntm-bench (``ntm-bench`` or ``python -m bench``): run | validate | report | evaluate | list | keys.

Errors in what the user gave (a suite file, a name, an option, an output folder) and errors of the system (a full
disk, a folder it cannot write) exit with status 2 and print one line to stderr, without a traceback; so does an
unexpected error, as "internal error"; ``--debug`` shows the traceback. SIGINT, SIGTERM and SIGHUP stop the
workers, keep finished runs, rebuild the suite's CSVs and exit with 128 + the signal number (130, 143, 129).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
from pathlib import Path

from bench.api import (
    REPORTS_DIR,
    UsageError,
    check_bundles,
    check_device,
    check_options,
    check_out_dir,
    check_tensorboard,
    load,
    make_backend,
)
from bench.config import ConfigError
from bench.options import WorkerOptions
from bench.registry import RegistryError

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = ("Train NTM, DNC, LSTM and other models on Graves' algorithmic tasks from a YAML suite, and report on "
               "them. A suite is a name (see `list`) or a path to a YAML file.")
EXIT_USAGE = 2
#: the signals that stop a suite the way Ctrl-C does
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class CliError(UsageError):
    """A user error: printed as one line, exit status 2."""


class Stopped(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGHUP arrives, so that it unwinds exactly like Ctrl-C: every
    backend stops its workers on the way out and the runner still rebuilds the CSVs. `signum` gives the exit
    status (128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


#: the last stop signal received in this process: some code between here and the signal (Ray's waits) catches the
#: KeyboardInterrupt and raises a new plain one, losing `Stopped.signum`; the exit status is taken from here then
_last_signal: int | None = None


def _raise_stopped(signum, frame) -> None:
    global _last_signal
    _last_signal = signum
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_interrupt():
    """While inside, SIGTERM and SIGHUP raise `Stopped` (as SIGINT raises KeyboardInterrupt); the previous handlers
    come back afterwards. Only the main thread can set handlers; elsewhere (a test calling main from a thread) this
    does nothing."""
    global _last_signal
    _last_signal = None
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, _raise_stopped)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def one_line(text: str) -> str:
    """A message on one line: its lines joined, so stderr gets exactly one line per error."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def os_error_message(error: OSError) -> str:
    """``path: reason`` for an OSError, or the reason alone when it names no file."""
    reason = error.strerror or str(error)
    if error.filename is not None:
        return f"{error.filename}: {reason}"
    return reason


def _suite_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="quick", help="a suite name in suites/ or a path to a YAML file")
    parser.add_argument("--out", help="output folder (default: reports/<suite name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite key, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so its @register_model/@register_task run (repeatable)")


def program_name() -> str:
    """How the tool was called: ``ntm-bench`` for the console script, ``python -m bench`` for the module."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m bench" if called in ("", "__main__.py", "-c") else called


def version() -> str:
    """The installed distribution's version, or the source tree's when it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    import bench

    try:
        return dist_version("ntm-bench")
    except PackageNotFoundError:
        return bench.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(), description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
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
    run.add_argument("--gpu-memory-fraction", type=float, metavar="F",
                     help="on a GPU, each worker process uses at most this share of its memory, in (0, 1] (for "
                          "several --workers on one GPU; default: no cap)")
    run.add_argument("--deterministic", action="store_true",
                     help="torch's deterministic algorithms: repeat runs on one GPU give the same bits (slower; an "
                          "op without a deterministic version fails its run)")
    run.add_argument("--no-estimate", action="store_true", help="skip the up-front cost estimate")
    run.add_argument("--fresh", action="store_true", help="delete this suite's run folders and start over")
    run.add_argument("--no-report", action="store_true", help="skip writing the HTML report")
    run.add_argument("--reuse", action="append", default=[], metavar="BUNDLE",
                     help="take every run of this bundle (a shipped bundle's name or a folder) that the suite has as "
                          "finished, and train only the rest (repeatable)")
    _reference_args(run)
    run.add_argument("--tensorboard", metavar="DIR",
                     help="also log each run's loss and error curves for TensorBoard, at every evaluation, under "
                          "DIR/<suite>/<task>/<model>/seed<k> (needs the tensorboard package)")

    validate = sub.add_parser("validate", help="check a suite file without training")
    validate.add_argument("file", help="a suite name or YAML path")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    validate.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")

    report = sub.add_parser("report", help="(re)write the HTML report from a suite's CSVs")
    report.add_argument("--suite", default="quick")
    report.add_argument("--out", help="the suite's output folder (default: reports/<suite name>)")
    _reference_args(report)

    export = sub.add_parser("export", help="write a compact reference bundle of a suite's results (no checkpoints)")
    export.add_argument("folder", metavar="OUT_DIR", help="a suite's output folder (finished or partly finished)")
    export.add_argument("--to", required=True, metavar="BUNDLE_DIR", help="the bundle folder to write (or refresh)")

    compare = sub.add_parser("compare", help="one report from several output folders or bundles (or one's own)")
    compare.add_argument("sources", nargs="+", metavar="DIR_OR_BUNDLE",
                         help="output folders, bundle folders or shipped bundle names (one gives its own report, "
                              "written to --out)")
    compare.add_argument("--out", required=True, help="the folder to write the report into")
    compare.add_argument("--prefix", action="append", default=[], metavar="TEXT",
                         help="a prefix for each source's model labels, in order (give one per source)")
    compare.add_argument("--seeds", metavar="LIST",
                         help="only these seeds' runs, e.g. 101-105 or 1,3,10-12 (the seeds the sources share)")

    evaluate = sub.add_parser("evaluate", help="score a finished run's model at any test sizes (and draw figures)")
    evaluate.add_argument("run_folder", metavar="RUN_FOLDER", help="a finished run's folder, <out>/runs/<run_id>")
    evaluate.add_argument("--sizes", help="test sizes: 30,40,60 for one-part sizes, 3x6,6x6 for two-part sizes "
                                          "(default: the suite's test sizes)")
    evaluate.add_argument("--sequences", type=int,
                          help="sequences per size (default: the suite's generalization_sequences)")
    evaluate.add_argument("--out", metavar="CSV", help="also write the table to this CSV file")
    evaluate.add_argument("--figures", metavar="DIR",
                          help="also draw the sample and memory figures at each size into this folder")
    evaluate.add_argument("--device", default="auto",
                          help="auto | cpu | cuda | cuda:N (default auto: the GPU when there is one)")
    evaluate.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                          help="import MODULE first, for a run of a plugin's model or task (repeatable)")

    sub.add_parser("list", help="list registered tasks, models, suites and shipped reference bundles")
    keys = sub.add_parser("keys", help="print the suite-file reference (markdown)")
    keys.add_argument("--write-readme", action="store_true", help="rewrite the table in README.md in place")
    return parser


def _reference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", action="append", default=[], metavar="NAME|PATH",
                        help="show this bundle's runs on the suite's tasks beside its own, marked as reference, "
                             "without training them (a shipped bundle's name, see `list`, or a folder; repeatable)")
    parser.add_argument("--prefix", default="", metavar="TEXT",
                        help="prefix the reference's model labels (needed when one equals a model of yours)")


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
    check_options(args.executor, args.workers, args.threads, args.gpu_memory_fraction)
    tensorboard = check_tensorboard(args.tensorboard)
    suite = load(args.suite, overrides, args.plugins)
    out_dir = _out_dir(args, suite.name)
    check_out_dir(out_dir)
    check_device(suite, args.executor)
    from bench.runner import run_suite

    reuse, references = check_bundles(suite, args.reuse, args.reference, args.prefix)
    options = WorkerOptions(threads=args.threads, plugins=tuple(args.plugins), tensorboard=tensorboard,
                            gpu_memory_fraction=args.gpu_memory_fraction, deterministic=args.deterministic)
    backend = make_backend(args.executor, args.workers, options, args.fresh)

    def finish(outcome) -> None:  # still the folder's one writer (bench.folders.output_lock)
        if outcome.failed:
            print(f"{len(outcome.failed)} run(s) failed; see their result.json; rerun to retry them", file=sys.stderr)
        print(f"results: {out_dir}/runs.csv, curves.csv, generalization.csv")
        if not args.no_report:
            from bench.report import write_report

            print(f"report: {write_report(out_dir, references=references or None)}")  # the last line: what to open

    outcome = run_suite(suite, out_dir, backend, fresh=args.fresh, estimate=not args.no_estimate, reuse=reuse,
                        then=finish)
    return 1 if outcome.failed else 0


def cmd_validate(args) -> int:
    from bench.grid import expand, memory_overflows

    suite = load(args.file, args.overrides, args.plugins)
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
        raise CliError(f"{out_dir}: no results to report (run `{program_name()} run --suite {args.suite}` first)")
    if args.prefix and not args.reference:
        raise CliError("--prefix: only with --reference (it prefixes the reference's model labels)")
    references = [(r, args.prefix) for r in args.reference] or None
    print(f"report: {write_report(out_dir, references=references)}")
    return 0


def cmd_export(args) -> int:
    from bench import bundles
    from bench.report.page import write_summaries

    manifest = bundles.export(Path(args.folder), Path(args.to), version(), then=write_summaries)
    size = sum(p.stat().st_size for p in Path(args.to).rglob("*") if p.is_file())
    print(f"bundle: {args.to} ({manifest['runs']} of {manifest['runs_in_suite']} runs, {size / 1024:.0f} kB): "
          f"{bundles.describe(manifest)}")
    return 0


def cmd_compare(args) -> int:
    from bench.report.combine import parse_seeds
    from bench.report.page import write_comparison

    if args.prefix and len(args.prefix) != len(args.sources):
        raise CliError(f"--prefix: give one per source ({len(args.sources)}), got {len(args.prefix)}")
    prefixes = args.prefix or [""] * len(args.sources)
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds is not None else None
    print(f"report: {write_comparison(list(zip(args.sources, prefixes)), Path(args.out), seeds)}")
    return 0


#: the columns `evaluate` prints, in order (a task's extra columns follow)
EVALUATE_COLUMNS = ("size", "wrong_bits_per_seq", "loss_bits_per_seq", "seq_accuracy")


def cmd_evaluate(args) -> int:
    from bench import registry
    from bench.results import atomic_write_csv
    from bench.trained import TrainedRunError, check_sequences, evaluate_run, load_run, render_figures

    registry.load_all()
    for plugin in args.plugins:
        registry.load_plugin(plugin)
    if args.sequences is not None:
        try:
            check_sequences(args.sequences, "--sequences")
        except TrainedRunError as error:
            raise CliError(str(error)) from None
    if args.out and Path(args.out).is_dir():
        raise CliError(f"--out {args.out}: is a folder; give a CSV file name")
    if args.figures and Path(args.figures).exists() and not Path(args.figures).is_dir():
        raise CliError(f"--figures {args.figures}: exists and is not a folder")
    try:
        run = load_run(args.run_folder, args.device)
        frame = evaluate_run(run, args.sizes, args.sequences)
        figures = []
        if args.figures:
            for size in zip(*(frame[f"size_{part}"] for part in run.task.size_parts)):
                figures += render_figures(run, tuple(int(v) for v in size), args.figures, warn=False)
    except TrainedRunError as error:
        raise CliError(str(error)) from None
    shown = [c for c in EVALUATE_COLUMNS if c in frame] + \
        [c for c in frame.columns if c not in EVALUATE_COLUMNS and not c.startswith("size_")]
    print(frame[shown].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if args.out:
        atomic_write_csv(Path(args.out), frame)
        print(f"table: {args.out}")
    for path in figures:
        print(f"figure: {path}")
    return 0


def cmd_list(args) -> int:
    from bench import registry
    from bench.config import available_suites

    registry.load_all()
    print("tasks:  " + ", ".join(sorted(registry.TASKS)))
    print("models: " + ", ".join(sorted(registry.MODELS)))
    print("suites: " + ", ".join(available_suites()))
    from bench import bundles

    shipped = bundles.shipped()
    print("reference bundles (--reference NAME, --reuse NAME):" + ("" if shipped else " none"))
    for manifest in shipped:
        print(f"  {manifest['name']}: {bundles.describe(manifest)}")
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


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "report": cmd_report, "evaluate": cmd_evaluate,
            "list": cmd_list, "keys": cmd_keys, "export": cmd_export, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    try:
        with stop_signals_interrupt():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM/SIGHUP (Stopped): workers are stopped by now
        print("interrupted; finished runs are kept, and a rerun resumes the rest from their checkpoints",
              file=sys.stderr)
        return 128 + (getattr(error, "signum", None) or _last_signal or signal.SIGINT)
    except (ConfigError, RegistryError, UsageError) as error:
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # a full disk, a folder it cannot write, a file that vanished
        if args.debug:
            raise
        print(f"error: {one_line(os_error_message(error))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # a bug: still one line, and how to see more
        if args.debug:
            raise
        print(f"error: internal error: {type(error).__name__}: {one_line(error)} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_USAGE
