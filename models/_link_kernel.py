"""The DNC's fused temporal link update with both directional reads: `fused_link_update` and what runs it.

`models.addressing.update_link_and_read` calls `fused_link_update`, which computes ``update_link`` followed by
``directional_read_weights`` in one step with a hand-written backward, on one of two paths:

- the C++ CPU kernel in ``models/link_kernel.cpp``, an op with its own backward (float32 and float64 on the CPU,
  when `link_ops()` has it loaded). Its forward reads L once and writes L_new once, forming both reads from each row
  while it is in L1; its backward reads the incoming link gradient and L once and writes the old links' gradient once,
  recomputing L_new row by row instead of reading it.
- `_LinkUpdateAndRead`, in PyTorch, everywhere else. It makes about four times as many passes over [B, N, N].

The extension (`LINK`) is built on first use from ``link_kernel.cpp``, shipped beside this module as package data,
by `models._cpp` (the build, cache and fallback machinery shared with the NTM's kernel). Its ops are registered with
the dispatcher as ``forward`` and ``backward`` for CPU, in a namespace named like the extension, with fake
implementations (torch.compile treats them as opaque), vmap rules (the population folded into the batch) and the
forward's backward formula. When the build fails `link_ops()` returns None and the PyTorch path
is used; NTM_BENCH_NO_CPP_KERNELS=1 forces that path without trying to build.
"""

from __future__ import annotations

import torch

from models._cpp import CppKernel, fold_population, register_op


# ---- the C++ extension ----------------------------------------------------------------------------------------------
def _register(namespace: str) -> None:
    """The ops' fake implementations, vmap rules and backward formula (`models._cpp.register_op`)."""

    def forward_fake(link, precedence, write_weights, read_weights):
        return torch.empty_like(link), torch.empty_like(read_weights), torch.empty_like(read_weights)

    def backward_fake(grad_link, grad_forward, grad_backward, link, precedence, write_weights, read_weights):
        return (torch.empty_like(link), torch.empty_like(precedence), torch.empty_like(write_weights),
                torch.empty_like(read_weights))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_link, grad_forward, grad_backward):
        link, precedence, write_weights, read_weights = ctx.saved_tensors
        zeros = torch.zeros_like
        return LINK.library.backward(zeros(link) if grad_link is None else grad_link,
                                     zeros(read_weights) if grad_forward is None else grad_forward,
                                     zeros(read_weights) if grad_backward is None else grad_backward,
                                     link, precedence, write_weights, read_weights)

    register_op(namespace, "forward", forward_fake, backward, setup_context)
    register_op(namespace, "backward", backward_fake)


#: the extension; its name starts with the prefix, then a digest of the sources, flags and torch version
LINK = CppKernel("ntm_bench_link_v3", "link_kernel.cpp", _register, "DNC link")


def link_ops():
    """The loaded ops' namespace (``torch.ops.ntm_bench_link_v3_<digest>``), building the extension on the first
    call; None when NTM_BENCH_NO_CPP_KERNELS=1 or the build failed (logged once)."""
    return LINK.ops()


# ---- the two paths as autograd functions, and the choice between them -----------------------------------------------
class _LinkUpdateAndRead(torch.autograd.Function):
    """`models.addressing.update_link` followed by `directional_read_weights` (one write head), with a hand-written
    backward.

    The link matrix is the only O(N^2) state of the DNC; composed from elementwise ops, autograd spends about ten
    passes over a [B, N, N] tensor per step on it, and stores extra [B, N, N] intermediates for every step. Here the
    forward makes two elementwise passes (a broadcast lerp, then one addcmul) plus the two reads, and stores nothing
    beyond the inputs and the new links (which the next step holds anyway); the backward recomputes the
    (1 - w_i - w_j) factor instead of storing it, and in eager allocates two fresh [B, N, N] tensors, not three. Same
    values and gradients as the composition to float32 round-off (tests/test_dnc.py checks both, at N = 128 in
    float32, under vmap, and with gradcheck in float64). docs/PERFORMANCE.md#the-dnc-against-pytorch-dnc measures it.
    """

    @staticmethod
    def forward(link, precedence, write_weights, read_weights):
        w_i = write_weights.unsqueeze(-1)  # [B, N, 1]
        w_j = write_weights.unsqueeze(-2)  # [B, 1, N]
        # (1 - w_i - w_j) L + w_i p_j = lerp(L, p_j, w_i) - w_j L: two passes over [B, N, N] (one broadcast lerp
        # does (1 - w_i) L + w_i p_j), where three separate products and sums took four
        new_link = torch.lerp(link, precedence.unsqueeze(-2), w_i)
        if torch.compiler.is_compiling():  # under compile (and vmap) out of place: in-place ops have no batching rule
            new_link = torch.addcmul(new_link, link, w_j, value=-1.0)
        else:  # eager, in place
            new_link.addcmul_(link, w_j, value=-1.0)
        new_link.diagonal(dim1=-2, dim2=-1).zero_()
        forward = torch.matmul(read_weights, new_link.transpose(-1, -2))  # [B, R, N]: L w_r
        backward = torch.matmul(read_weights, new_link)  # [B, R, N]: L^T w_r
        return new_link, forward, backward

    @staticmethod
    def setup_context(ctx, inputs, output):
        link, precedence, write_weights, read_weights = inputs
        ctx.save_for_backward(link, precedence, write_weights, read_weights, output[0])

    @staticmethod
    def vmap(info, in_dims, *inputs):
        """Seed-parallel training vmaps the step over a population axis P: fold it into the batch (every input is
        [B, ...]), so the vmapped call is one call on [P * B, ...] tensors, not a per-seed fallback loop."""
        return fold_population(_LinkUpdateAndRead.apply, info, in_dims, inputs)

    @staticmethod
    def backward(ctx, grad_link, grad_forward, grad_backward):
        link, precedence, write_weights, read_weights, new_link = ctx.saved_tensors
        # the gradient reaching the new links: from later steps, and from this step's two reads
        compiling = torch.compiler.is_compiling()  # out of place when compiling, as in forward
        # grad_link + g_f^T w_r + w_r^T g_b as ONE baddbmm of inner size 2R: one pass over [B, N, N], not two
        grad = torch.baddbmm(grad_link, torch.cat([grad_forward, read_weights], dim=-2).transpose(-1, -2),
                             torch.cat([read_weights, grad_backward], dim=-2))
        grad.diagonal(dim1=-2, dim2=-1).zero_()  # the diagonal is held at 0
        grad_read = torch.matmul(grad_forward, new_link) + torch.matmul(grad_backward, new_link.transpose(-1, -2))
        w_i = write_weights.unsqueeze(-1)
        w_j = write_weights.unsqueeze(-2)
        weighted = grad * link  # d/dw_k of -(w_i + w_j) L[i, j]: row k and column k of grad * L
        # sum_j grad[k, j] p_j as a row vector times grad^T: the same product, but torch's CPU matmul is much slower
        # for a [B, N, N] @ [B, N, 1] column than for this [B, 1, N] @ [B, N, N]^T row
        grad_write = (torch.matmul(precedence.unsqueeze(-2), grad.transpose(-1, -2)).squeeze(-2)
                      - weighted.sum(-1) - weighted.sum(-2))
        grad_precedence = torch.matmul(write_weights.unsqueeze(-2), grad).squeeze(-2)  # sum_i grad[i, j] w_i
        # grad * (1 - w_i - w_j): the broadcast factor is materialised, then multiplied; in eager both go into the
        # buffer of `weighted`, which is no longer needed: a fresh [B, N, N] tensor costs ~500 page faults on a CPU
        if compiling:
            grad_old_link = ((1.0 - w_i) - w_j) * grad
        else:
            grad_old_link = torch.sub(1.0 - w_i, w_j, out=weighted).mul_(grad)
        return grad_old_link, grad_precedence, grad_write, grad_read


@torch.compiler.assume_constant_result
def _kernel_loaded() -> bool:
    """Whether the C++ link kernels are built and loaded (building them on the first call). A constant to
    torch.compile, which then traces the chosen path."""
    return link_ops() is not None


def fused_link_update(link: torch.Tensor, precedence: torch.Tensor, write_weights: torch.Tensor,
                      read_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new links, forward reads, backward reads) through the C++ kernel where it runs (float32 or float64 on the CPU,
    with the kernel loaded), else through `_LinkUpdateAndRead`. Shapes as in `models.addressing.update_link_and_read`.
    """
    if link.device.type == "cpu" and link.dtype in (torch.float32, torch.float64) and _kernel_loaded():
        return LINK.library.forward(link, precedence, write_weights, read_weights)
    return _LinkUpdateAndRead.apply(link, precedence, write_weights, read_weights)
