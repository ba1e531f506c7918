"""The Ray backend: trains groups of runs as Ray tasks, on the cluster at RAY_ADDRESS or on a local Ray instance
(loopback only).

The runner (bench.runner) groups pending runs as it does for every backend (runs that differ only in their seed,
`train.parallel_seeds` per group; a group may be one run), and each group is one Ray task that reserves the suite's
`resources` and trains its runs together (`bench.runner.train_group`). No shared filesystem is assumed: a task
trains each run in its own folder under `checkpoint_dir` on whichever node runs it, and returns each finished run's
result files; the driver writes them atomically under ``<out_dir>/runs/<run_id>/`` (result.json last), exactly where
the local backend puts them, so finished runs are skipped the same way. A task whose worker dies is retried by Ray
(`max_retries`): each run of its group resumes from its own last checkpoint in `checkpoint_dir` (which must be shared
storage for a retry on another node to find it), and a run that an earlier attempt already finished is not retrained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.config import ConfigError, Suite
from bench.folders import make_folder, remove_tree
from bench.grid import RunSpec
from bench.options import DEFAULT_OPTIONS, WorkerOptions
from bench.results import atomic_write_bytes, atomic_write_json, read_json, run_is_finished
from bench.runner import Group, Results, failed_result, load_plugins, train_group
from bench.train import load_checkpoint

log = logging.getLogger("bench")

INSTALL_HINT = "the ray executor needs Ray: pip install -e .[ray] (or make bench EXECUTOR=ray)"
#: what a task sends back, in the order the driver writes them: result.json last, as its presence marks a finished run;
#: checkpoint.pt holds the final weights, so that `ntm-bench evaluate` and `bench.api.load_model` work on Ray runs too
RESULT_FILES = ("spec.json", "curve.csv", "generalization.csv", "samples.npz", "checkpoint.pt", "result.json")
#: the test hook: with this set to 1 in the driver's environment, each task SIGKILLs its worker once, on its first
#: attempt, just after its runs' first checkpoint
KILL_FIRST_ATTEMPT = "BENCH_RAY_KILL_FIRST_ATTEMPT"
#: per run folder under checkpoint_dir: which submission last ran it, how many attempts that submission made at it,
#: and the step the last of them resumed from
ATTEMPTS_FILE = ".ray_attempts.json"
#: on Linux Ray picks the node's outward address (and binds its servers to it) unless told that this is not a cluster
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayNotInstalled(RuntimeError):
    """Ray is not importable; the message says how to install it."""


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayNotInstalled(INSTALL_HINT) from None
    return ray


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While inside, a Ray instance started by this process uses (and listens on) 127.0.0.1 only."""
    previous_env = os.environ.get(_SINGLE_NODE_ENV)
    os.environ[_SINGLE_NODE_ENV] = "0"  # read when ray is first imported, and by the processes Ray starts
    constants = None
    try:
        from ray._private import ray_constants as constants  # ray already imported: the flag is read per call
    except ImportError:
        pass
    previous_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None and previous_flag is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = previous_env
        if constants is not None and previous_flag is not None:
            constants.ENABLE_RAY_CLUSTER = previous_flag


def _init_keeping_sigterm(ray, **kwargs) -> None:
    """`ray.init`, keeping this process's SIGTERM handler: Ray replaces it with one that exits with status 15 at
    once, which would skip cancelling the tasks and rebuilding the CSVs that SIGTERM does (bench.cli)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        try:
            ray.init(**kwargs)
        except BaseException:
            # interrupted or failed half-way: stop whatever Ray had already started (its local processes)
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise
    except SystemExit as error:
        # a SIGTERM during ray.init reached Ray's handler (sys.exit(15)): hand it to ours instead, which stops the
        # suite the usual way
        if callable(previous) and error.code == signal.SIGTERM:
            previous(signal.SIGTERM, None)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[Any]:
    """Yield the `ray` module, connected: to an instance already initialised in this process, else to RAY_ADDRESS,
    else to a new local instance on loopback only (`num_cpus` CPUs; default all). Shuts down only what it started."""
    if not ray_available():
        raise RayNotInstalled(INSTALL_HINT)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray = _import_ray()
        if ray.is_initialized():
            yield ray
            return
        _init_keeping_sigterm(ray, address=address, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()
        return
    with _loopback_only():
        ray = _import_ray()
        if ray.is_initialized():
            yield ray
            return
        _init_keeping_sigterm(ray, num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                              log_to_driver=False)
        try:
            host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
                log.warning("the local Ray instance listens on %s, not on loopback only", host)
            yield ray
        finally:
            ray.shutdown()


# ---- the task (runs on a Ray worker) ----------------------------------------------------------------------------

def train_group_on_worker(specs: list[RunSpec], work_root: str, options: WorkerOptions, submission: str,
                          fresh: bool) -> dict[str, dict[str, Any]]:
    """Train a group of runs that differ only in their seed (`train_group`), each in ``work_root/<run_id>`` and
    resuming from its own checkpoint, and return per run_id its result, its result files' bytes and its attempt.

    `submission` names the driver's invocation: a retry of this task within it is a later attempt at each run it
    trains, while a run that an earlier attempt finished is returned as it is, not retrained. With `fresh`, the first
    attempt of a new submission deletes what an earlier one left on this node. `options` are the worker's
    (`bench.options.WorkerOptions`); a TensorBoard folder among them is a folder on the node.
    """
    load_plugins(options.plugins)
    root = Path(work_root)
    attempts = {spec.run_id: _count_attempt(root / spec.run_id, spec.run_id, submission, fresh) for spec in specs}
    # finished by an earlier attempt, or by an earlier submission whose driver stopped before writing it
    results = {spec.run_id: read_json(root / spec.run_id / "result.json") for spec in specs
               if run_is_finished(root / spec.run_id, spec)}
    to_train = [spec for spec in specs if spec.run_id not in results]
    if to_train:
        first_attempt = max(attempts[spec.run_id]["attempts"] for spec in to_train) == 1
        with _kill_hook(to_train[0], first_attempt):
            results.update(train_group(to_train, root, options))
    return {spec.run_id: {"result": results[spec.run_id], "files": _result_files(root / spec.run_id),
                          "attempt": attempts[spec.run_id]["attempts"],
                          "resumed_from_step": attempts[spec.run_id].get("resumed_from_step")} for spec in specs}


def _count_attempt(work_dir: Path, run_id: str, submission: str, fresh: bool) -> dict[str, Any]:
    """Count this task's attempt at one run in the run's ATTEMPTS_FILE and return the record. A run that an earlier
    attempt of the same submission finished keeps its record (this attempt does not train it)."""
    marker = work_dir / ATTEMPTS_FILE
    previous = _read_attempts(marker)
    if previous.get("submission") == submission:
        if run_is_finished(work_dir):
            return previous
        attempt = previous["attempts"] + 1
    else:
        attempt = 1
        if fresh:
            remove_tree(work_dir, ignore_errors=True)
    record = {"submission": submission, "attempts": attempt,
              "resumed_from_step": _checkpoint_step(work_dir, run_id) if attempt > 1 else None}
    make_folder(work_dir)
    atomic_write_json(marker, record)
    return record


@contextmanager
def _kill_hook(spec: RunSpec, first_attempt: bool) -> Iterator[None]:
    """KILL_FIRST_ATTEMPT: on a task's first attempt, SIGKILL the worker at the step after the first checkpoint (so
    that the retry has something to resume), through bench.train's fault hook. A Ray worker process runs many tasks:
    its environment is left as it was."""
    saved_fault = os.environ.get("BENCH_FAULT")
    if first_attempt and os.environ.get(KILL_FIRST_ATTEMPT) == "1":
        os.environ["BENCH_FAULT"] = f"step:{min(spec.train.checkpoint_every + 1, spec.train.steps)}:kill"
    try:
        yield
    finally:
        if saved_fault is None:
            os.environ.pop("BENCH_FAULT", None)
        else:
            os.environ["BENCH_FAULT"] = saved_fault


def _result_files(work_dir: Path) -> dict[str, bytes]:
    return {name: (work_dir / name).read_bytes() for name in RESULT_FILES if (work_dir / name).exists()}


def _read_attempts(marker: Path) -> dict[str, Any]:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}


def _checkpoint_step(work_dir: Path, run_id: str) -> int | None:
    state = load_checkpoint(work_dir, run_id)
    return None if state is None else int(state["step"])


# ---- the driver -------------------------------------------------------------------------------------------------

def check_device(suite: Suite) -> None:
    """An explicit cuda device needs GPUs reserved per task: Ray shows a task only the GPUs it reserved."""
    if suite.resources.num_gpus <= 0 and suite.device.startswith("cuda"):
        raise ConfigError(f"{suite.path}: device: {suite.device} needs resources.num_gpus > 0 on the ray executor")


class RayBackend:
    """One Ray task per group, each reserving the suite's `resources`; `max_retries` (default: the suite's) is how
    often Ray reruns a task whose worker died. Runs train under the suite's `checkpoint_dir` on the node that runs
    them (default: the output folder's runs/), and the driver writes their result files into ``runs_dir``.
    `options` go to every task as they are: a TensorBoard folder among them (``--tensorboard``) is a folder on each
    node that trains runs, which a shared filesystem gathers."""

    def __init__(self, options: WorkerOptions = DEFAULT_OPTIONS, fresh: bool = False,
                 max_retries: int | None = None):
        self.options = options
        self.fresh = fresh
        self.max_retries = max_retries
        self.suite: Suite | None = None
        self.ray = None

    def device_type(self, suite: Suite) -> str:
        # Ray shows a task only the GPUs it reserved (see adapt)
        return "cuda" if suite.resources.num_gpus > 0 and suite.device != "cpu" else "cpu"

    def memory(self, suite: Suite) -> tuple[int, int] | None:
        return None  # each task trains on a node of its own, whose memory the driver does not know

    def adapt(self, suite: Suite, spec: RunSpec) -> RunSpec:
        """`device: auto` without reserved GPUs trains on the CPU; an explicit cuda device needs them."""
        check_device(suite)
        if suite.resources.num_gpus > 0:
            return spec
        return dataclasses.replace(spec, device="cpu") if spec.device == "auto" else spec

    @contextmanager
    def session(self, suite: Suite, groups: list[Group]) -> Iterator[int]:
        """Connect to Ray (only when there is something to train); yields how many groups the cluster runs at
        once."""
        self.suite = suite
        if not groups:
            yield 1
            return
        with ray_session() as ray:
            self.ray = ray
            try:
                yield _tasks_at_once(ray, suite, len(groups))
            finally:
                self.ray = None

    def train(self, groups: list[Group], runs_dir: Path) -> Iterator[tuple[Group, Results]]:
        """Submit one task per group, then write and yield each group's runs as its task finishes."""
        if not groups:
            return
        ray, suite = self.ray, self.suite
        retries = suite.max_retries if self.max_retries is None else self.max_retries
        work_root = (Path(suite.checkpoint_dir).expanduser().resolve() if suite.checkpoint_dir
                     else Path(runs_dir).resolve())
        hook = os.environ.get(KILL_FIRST_ATTEMPT)
        task = ray.remote(train_group_on_worker).options(
            num_cpus=suite.resources.num_cpus, num_gpus=suite.resources.num_gpus, max_retries=retries,
            runtime_env={"env_vars": {KILL_FIRST_ATTEMPT: hook}} if hook else None)
        submission = uuid.uuid4().hex
        refs = {task.remote(group, str(work_root), self.options, submission, self.fresh): group for group in groups}
        try:
            remaining = list(refs)
            while remaining:
                done, remaining = ray.wait(remaining, num_returns=1)
                for ref in done:
                    group = refs.pop(ref)
                    try:
                        replies, lost = ray.get(ref), None
                    except ray.exceptions.RayError as error:  # its worker died more often than max_retries allows
                        replies, lost = {}, error
                    yield group, {spec.run_id: _record_lost_run(spec, runs_dir / spec.run_id, lost) if lost
                                  else _record_reply(spec, runs_dir / spec.run_id, replies[spec.run_id])
                                  for spec in group}
        finally:
            # interrupted (Ctrl-C, or SIGTERM/SIGHUP, which bench.cli turns into a KeyboardInterrupt), or closed
            # early by the runner: stop what is still queued or training on the cluster
            for ref in refs:
                ray.cancel(ref, force=True)


def _write_run(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a task's result files atomically, in RESULT_FILES order (result.json last)."""
    for name in RESULT_FILES:
        if name in files:
            atomic_write_bytes(run_dir / name, files[name])


def _record_lost_run(spec: RunSpec, run_dir: Path, error: BaseException) -> dict[str, Any]:
    """A run of a task Ray gave up on (its retries spent): a `failed` result.json, retried on the next invocation."""
    result = failed_result(error)
    if not (run_dir / "spec.json").exists():  # collect() reads it for the run's labels
        atomic_write_json(run_dir / "spec.json", spec.to_json())
    atomic_write_json(run_dir / "result.json", result)
    return result


def _record_reply(spec: RunSpec, run_dir: Path, reply: dict[str, Any]) -> dict[str, Any]:
    """Write one run's files from its task's reply, log a retried attempt, and return the run's result."""
    _write_run(run_dir, reply["files"])
    if reply["attempt"] > 1:
        resumed = reply["resumed_from_step"]
        log.info("%s/%s/seed %d: attempt %d after its worker died; %s", spec.task, spec.model, spec.seed,
                 reply["attempt"], f"resumed from step {resumed}" if resumed else "started over (no checkpoint yet)")
    return reply["result"]


def _tasks_at_once(ray, suite: Suite, tasks: int) -> int:
    """How many tasks the cluster can run at once with the suite's resources; errors if it cannot run any."""
    available = ray.cluster_resources()
    limits = []
    for key, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        wanted = getattr(suite.resources, key)
        if wanted <= 0:
            continue
        have = available.get(resource, 0.0)
        if have < wanted:
            raise ConfigError(f"{suite.path}: resources.{key}: each task (a run or a group of seeds) needs "
                              f"{wanted:g} but the Ray cluster has {have:g} {resource}(s) in all; lower it or add "
                              "nodes")
        limits.append(int(have // wanted))
    return max(1, min([tasks, *limits]))
