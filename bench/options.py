"""How a worker trains, whatever the backend: `WorkerOptions`, handed unchanged from the API and the command line
through the backends to `bench.train.train_population`. None of it changes what a run computes or its run_id
(`deterministic` changes only the order of a GPU's float sums, and so their last bits).

A new worker option is a field here and the code that reads it (the training loop, or `bench.runner.train_group`);
the backends only carry the object along. It is a frozen dataclass of plain values, so it pickles to a worker
process or a Ray task as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

#: torch threads per run unless --threads says otherwise. Fixed, not derived from --workers, because CPU results
#: are bit-identical only at the same thread count (reductions split differently); 1 suits these small models.
DEFAULT_THREADS = 1
#: the most ``--threads`` and ``--workers`` take: far above any machine's cores, low enough that a typo (100000)
#: fails in one line instead of starting that many threads or processes
MAX_THREADS = 256
MAX_WORKERS = 256


@dataclass(frozen=True)
class WorkerOptions:
    #: torch threads per run (``--threads``)
    threads: int = DEFAULT_THREADS
    #: modules imported in every worker before training, to register their tasks and models (``--plugin``)
    plugins: tuple[str, ...] = ()
    #: a folder where each run also logs its curves for TensorBoard (``--tensorboard``), or None
    tensorboard: str | None = None
    #: at most this share of the GPU's memory per worker process, in (0, 1] (``--gpu-memory-fraction``), or None:
    #: for several workers on one GPU (`bench.gpu.worker_settings`); nothing on a CPU
    gpu_memory_fraction: float | None = None
    #: torch's deterministic algorithms (``--deterministic``): repeatable on a GPU, at some cost in speed
    deterministic: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", tuple(self.plugins))


#: the options of a worker told nothing else
DEFAULT_OPTIONS = WorkerOptions()
