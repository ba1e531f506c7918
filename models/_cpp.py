"""What the C++ CPU kernels of `models` share: building and loading an extension (`CppKernel`), the switch that turns
them all off, and registering their ops' fake implementations, vmap rules and backward formulas (`register_op`).

Each kernel is one C++ source shipped beside this module as package data (``link_kernel.cpp``: the DNC's link,
loaded by `models._link_kernel`; ``ntm_kernel.cpp``: the NTM's heads, loaded by `models._ntm_kernel`), which
includes ``kernel_common.h``. It is built on first use with `torch.utils.cpp_extension.load_inline` (plain -O3, no
OpenMP, no -march flags) into torch's extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions),
under a name that carries a digest of its source, the header, the Python that registers its ops, the flags and the
torch version, so later processes only load it (about 0.1 s). Its ops are registered with the dispatcher for CPU in a
namespace of that same name, so torch.compile's on-disk caches, keyed by the graph, never reuse a graph traced
against another version of the ops. The kernel's module registers for them fake implementations (torch.compile
treats the ops as opaque calls), vmap rules and backward formulas (`register_op`). When the build fails (no
compiler, no ninja, a build error, a missing source file) `CppKernel.ops` logs one warning and returns None, and the
kernel's module takes its PyTorch path; NTM_BENCH_NO_CPP_KERNELS=1 forces that path without trying to build.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import torch

LOGGER = logging.getLogger(__name__)

#: set to anything but "" or "0", the PyTorch paths run and no kernel is built
DISABLE_VARIABLE = "NTM_BENCH_NO_CPP_KERNELS"
#: the header every kernel includes
HEADER = Path(__file__).with_name("kernel_common.h")
_CFLAGS = ["-O3"]


def disabled() -> bool:
    """Whether NTM_BENCH_NO_CPP_KERNELS turns the C++ kernels off."""
    return os.environ.get(DISABLE_VARIABLE, "") not in ("", "0")


class CppKernel:
    """One C++ extension of `models`: ``CppKernel(prefix, "x_kernel.cpp", register, "what")``.

    `ops()` gives the loaded ops' namespace (``torch.ops.<name>``), building the extension on the first call, or None
    (see the module's docstring); after a successful build `library` holds the same, for the kernel's module to call.
    `prefix` starts the extension's name (and its folder in the build cache); bump it whenever the way the library is
    built changes, so two versions never share a build folder. `register(namespace)` is called once, after the library
    is loaded, to register the ops' fake implementations, vmap rules and backward formulas (`register_op`). `what`
    names the kernel in the warning.
    """

    def __init__(self, prefix: str, source: str, register: Callable[[str], None], what: str):
        self.prefix = prefix
        self.source = Path(__file__).with_name(source)
        self.register = register
        self.what = what
        self.library = None
        self._lock = threading.Lock()
        self._state: dict[str, object] = {}

    def _build(self):
        from torch.utils.cpp_extension import get_default_build_root, load_inline

        source, header = self.source.read_text(), HEADER.read_text()
        # the name carries a hash of the sources, flags and torch version: a built library of that name is loaded
        # directly (skipping load_inline's up-to-date check, which runs ninja and costs far more); otherwise
        # load_inline builds it. The Python that registers the ops (this module and the kernel's) is hashed too: the
        # ops' namespace is this name, and torch.compile's on-disk caches would otherwise hand back graphs traced
        # through an earlier version's fake, vmap or backward registrations
        python = [Path(__file__).read_text(), Path(sys.modules[self.register.__module__].__file__).read_text()]
        digest = hashlib.sha256("\0".join([source, header, *python, *_CFLAGS, torch.__version__]).encode())
        digest = digest.hexdigest()[:16]
        name = f"{self.prefix}_{digest}"
        library = os.path.join(get_default_build_root(), name, f"{name}.so")
        loaded = False
        if os.path.exists(library):
            try:
                torch.ops.load_library(library)
                loaded = True
            except OSError:  # half written by a concurrent build, say: load_inline waits for that build's lock
                pass
        if not loaded:
            load_inline(name=name, cpp_sources=[source], functions=None,
                        extra_cflags=[*_CFLAGS, f"-DKERNEL_NAMESPACE={name}"],
                        extra_include_paths=[str(HEADER.parent)], is_python_module=False, verbose=False)
        self.register(name)
        self.library = getattr(torch.ops, name)
        return self.library

    def ops(self):
        """The loaded ``torch.ops.<namespace>``, building the extension on the first call; None when
        NTM_BENCH_NO_CPP_KERNELS=1 or the build failed (logged once)."""
        if disabled():
            return None
        if "ops" not in self._state:
            with self._lock:
                if "ops" not in self._state:
                    try:
                        self._state["ops"] = self._build()
                    except Exception as error:  # no compiler, no ninja, a build or load error: the PyTorch path
                        LOGGER.warning("%s C++ kernel unavailable, using the PyTorch path: %s", self.what, error)
                        self._state["ops"] = None
        return self._state["ops"]


def fold_population(call: Callable, info, in_dims, inputs):
    """The vmap rule of the kernels' ops (and of the DNC link's PyTorch autograd function), whose tensor inputs and
    outputs are all [B, ...]: fold the population axis P into the batch and `call` once on [P * B, ...] tensors (other
    inputs pass through); returns (outputs, out_dims) as a vmap rule does."""
    population = info.batch_size

    def fold(value, dim: int | None):
        if not isinstance(value, torch.Tensor):
            return value
        value = value.movedim(dim, 0) if dim is not None else value.expand(population, *value.shape)
        return value.reshape(-1, *value.shape[2:])

    outputs = call(*(fold(v, d) for v, d in zip(inputs, in_dims)))
    return tuple(o.reshape(population, -1, *o.shape[1:]) for o in outputs), (0,) * len(outputs)


def loop_population(call: Callable, info, in_dims, inputs):
    """The vmap rule of ops whose inputs include parameters, which differ between the runs of a population: `call`
    once per run on its slices (other inputs pass through), the outputs stacked; returns (outputs, out_dims)."""

    def member(index: int):
        return call(*(v.select(d, index) if isinstance(v, torch.Tensor) and d is not None else v
                      for v, d in zip(inputs, in_dims)))

    outputs = [member(index) for index in range(info.batch_size)]
    return tuple(torch.stack(parts) for parts in zip(*outputs)), (0,) * len(outputs[0])


def register_op(namespace: str, name: str, fake: Callable, backward: Callable | None = None,
                setup_context: Callable | None = None, vmap_rule: Callable = fold_population) -> None:
    """Register with torch what one op of a kernel needs besides its CPU kernel: its fake implementation (for
    torch.compile), its vmap rule (`fold_population`, or `loop_population` for ops that take parameters) and, for a
    forward op, its backward formula (for autograd).

    The autograd and vmap rules belong to the op itself, not to an autograd.Function around it: torch.compile of a
    vmapped step (seed-parallel training, and every compiled run of the harness) traces the op as it is, and an op
    without them would be batched example by example and pass no gradient."""
    qualname = f"{namespace}::{name}"
    op = getattr(getattr(torch.ops, namespace), name)
    torch.library.register_fake(qualname)(fake)
    torch.library.register_vmap(qualname, lambda info, in_dims, *args: vmap_rule(op, info, in_dims, args))
    if backward is not None:
        torch.library.register_autograd(qualname, backward, setup_context=setup_context)
