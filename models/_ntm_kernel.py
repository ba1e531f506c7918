"""The NTM's head math of one time step as one fused C++ CPU op: `fused_heads`, `kernel_applies` and what runs them.

`models.ntm.NTMCell.forward` hands steps 2-4 of a time step to `fused_heads` where `kernel_applies` (float32 or
float64 on the CPU, with the kernel loaded), else to its own PyTorch composition, `NTMCell.heads`. Both compute the
same function: the interface's raw values clipped to +-clip; per head the key (tanh), strength (softplus), gate
(sigmoid), shift weights (softmax) and sharpening (1 + softplus); content weighting against the old memory, then
(unless the `content` ablation) interpolation with the previous weights, the circular shift and the sharpening; the
read heads' reads from the old memory; the write heads' erase (sigmoid) and add (tanh), one head after another.

Composed from torch ops that is about 50 small operators forward and 100 backward per time step, each costing more in
dispatch and autograd bookkeeping than in arithmetic at the paper's sizes (batch 32, 128 x 20 memory, 2 heads). The
kernel (``models/ntm_kernel.cpp``) does it in one call each way, one example at a time with its memory in L1:
- **forward**: the three outputs (reads [B, R, M], weights [B, H, N], memory [B, N, M], the memory laid out as the
  transpose of a contiguous [B, M, N]) and, for the backward, per example each head's content, interpolated and
  shifted weights, the log of the floored shifted weights and the cosines, the memory rows' norms and the P
  activations ([B, (5 H + 1) N + P]), so the backward evaluates no exp, log or square root over N;
- **backward**: the gradients of the raw interface values, the previous weights and the old memory, by the chain
  rule written out (the memories between write heads, when there are several, recomputed).

The extension (`HEADS`) is built and loaded by `models._cpp` as the DNC's link kernel is; its ops are ``forward``
and ``backward`` in a namespace named like the extension, with fake implementations (torch.compile treats them as
opaque), vmap rules (the population folded into the batch) and the forward's backward formula. When it cannot be
built, or NTM_BENCH_NO_CPP_KERNELS=1, the PyTorch composition runs.
"""

from __future__ import annotations

import torch

from models._cpp import CppKernel, loop_population, register_op

#: the rows of N values the forward saves per head for the backward, besides the norms and activations (ntm_kernel.cpp's
#: kSavedRows)
SAVED_ROWS = 5


def _memory_like(memory: torch.Tensor) -> torch.Tensor:
    """A new [B, N, M] tensor laid out as the kernel writes memories: the transpose of a contiguous [B, M, N]."""
    return memory.new_empty(memory.shape[0], memory.shape[2], memory.shape[1]).transpose(1, 2)


def _register(namespace: str) -> None:
    """The ops' fake implementations, vmap rules and backward formula (`models._cpp.register_op`).

    ``forward``: (raw [B, P], previous weights [B, H, N], memory [B, N, M], clip, read heads R, shift radius S,
    location addressing) -> (reads [B, R, M], weights [B, H, N], new memory [B, N, M], saved [B, (5 H + 1) N + P]),
    the last for the backward only. Under the `content` ablation the previous weights get no gradient, as on the
    PyTorch path."""

    def forward_fake(raw, prev_weights, memory, clip, read_heads, shift_radius, location):
        batch, heads, locations = prev_weights.shape
        return (raw.new_empty(batch, read_heads, memory.shape[-1]), raw.new_empty(batch, heads, locations),
                _memory_like(memory), raw.new_empty(batch, (heads * SAVED_ROWS + 1) * locations + raw.shape[-1]))

    def backward_fake(grad_reads, grad_weights, grad_memory, raw, prev_weights, memory, weights, saved, clip,
                      read_heads, shift_radius, location):
        return raw.new_empty(raw.shape), raw.new_empty(prev_weights.shape), _memory_like(memory)

    def setup_context(ctx, inputs, output):
        raw, prev_weights, memory, *ctx.options = inputs  # then clip, read heads, shift radius, location
        ctx.mark_non_differentiable(output[3])
        ctx.save_for_backward(raw, prev_weights, memory, output[1], output[3])

    def backward(ctx, grad_reads, grad_weights, grad_memory, _grad_saved):
        raw, prev_weights, memory, weights, saved = ctx.saved_tensors
        read_heads, location = ctx.options[1], ctx.options[3]
        if grad_reads is None:
            grad_reads = memory.new_zeros(memory.shape[0], read_heads, memory.shape[2])
        grad_weights = torch.zeros_like(weights) if grad_weights is None else grad_weights
        grad_memory = torch.zeros_like(memory) if grad_memory is None else grad_memory
        grad_raw, grad_prev, grad_old = HEADS.library.backward(grad_reads, grad_weights, grad_memory, raw,
                                                               prev_weights, memory, weights, saved, *ctx.options)
        return grad_raw, grad_prev if location else None, grad_old, None, None, None, None

    register_op(namespace, "forward", forward_fake, backward, setup_context)
    register_op(namespace, "backward", backward_fake)
    _register_sequence(namespace)


#: the sequence op's outputs that are values (logits, then the last state's h, c, reads, weights and memory); the
#: rest are saved for its backward
SEQUENCE_VALUES = 6


def _register_sequence(namespace: str) -> None:
    """``sequence_forward``: (inputs [B, T, I], h0 [B, U], c0 [B, U], reads0 [B, R, M], weights0 [B, H, N], memory0
    [B, N, M], the controller's w_ih, b_ih, w_hh, b_hh, the interface's weight and bias, the output layer's weight
    and bias, clip, read heads R, shift radius S, location addressing, keep) -> (logits [B, T, O], h, c, reads,
    weights, memory, then eight tensors for the backward, empty unless `keep`): `models.ntm.NTMCell.sequence`.
    Without `keep` (no gradient wanted) the op holds two time steps' values at a time, not T."""

    def forward_fake(x, h0, c0, reads0, weights0, memory0, w_ih, b_ih, w_hh, b_hh, w_if, b_if, w_out, b_out, clip,
                     read_heads, shift_radius, location, keep):
        (batch, time, _), units = x.shape, h0.shape[1]
        heads, locations = weights0.shape[1:]
        width, interface = memory0.shape[2], w_if.shape[0]
        new = x.new_empty
        values = (new(batch, time, w_out.shape[0]), new(batch, units), new(batch, units),
                  new(batch, read_heads, width), new(batch, heads, locations), _memory_like(memory0))
        if not keep:
            return (*values, *(new(0) for _ in range(8)))
        return (*values, new(time + 1, batch, units + read_heads * width), new(time, batch, 4 * units),
                new(time + 1, batch, units), new(time, batch, interface), new(time + 1, batch, heads, locations),
                new(time + 1, batch, width, locations),
                new(time, batch, (heads * SAVED_ROWS + 1) * locations + interface), new(time, batch, w_out.shape[0]))

    def backward_fake(grad_logits, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x, w_ih, w_hh, w_if, w_out,
                      *rest):
        return (x.new_empty(x.shape), grad_h.new_empty(grad_h.shape), grad_c.new_empty(grad_c.shape),
                grad_reads.new_empty(grad_reads.shape), grad_weights.new_empty(grad_weights.shape),
                _memory_like(grad_memory), w_ih.new_empty(w_ih.shape), w_ih.new_empty(w_ih.shape[0]),
                w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0]), w_if.new_empty(w_if.shape),
                w_if.new_empty(w_if.shape[0]), w_out.new_empty(w_out.shape), w_out.new_empty(w_out.shape[0]))

    def setup_context(ctx, inputs, output):
        x, *_, w_ih, _b_ih, w_hh, _b_hh, w_if, _b_if, w_out, _b_out = inputs[:14]
        ctx.options = inputs[14:18]  # clip, read heads, shift radius, location (then keep, True here)
        ctx.mark_non_differentiable(*output[SEQUENCE_VALUES:])
        ctx.set_materialize_grads(False)  # else autograd fills zero gradients for the saved tensors (tens of MB)
        ctx.save_for_backward(x, w_ih, w_hh, w_if, w_out, *output[SEQUENCE_VALUES:])

    def backward(ctx, *grads):
        x, w_ih, w_hh, w_if, w_out, *saved = ctx.saved_tensors
        states = saved[0]  # [T + 1, B, U + R M]
        weights, memory = saved[4], saved[5]
        batch, units, width = x.shape[0], w_hh.shape[1], memory.shape[2]
        read_heads = ctx.options[1]
        likes = (x.new_zeros(batch, x.shape[1], w_out.shape[0]), states.new_zeros(batch, units),
                 states.new_zeros(batch, units), states.new_zeros(batch, read_heads, width),
                 torch.zeros_like(weights[0]), memory.new_zeros(batch, memory.shape[3], width))
        grads = [like if grad is None else grad for grad, like in zip(grads[:SEQUENCE_VALUES], likes)]
        out = list(HEADS.library.sequence_backward(*grads, x, w_ih, w_hh, w_if, w_out, *saved, *ctx.options))
        if not ctx.options[3]:  # the `content` ablation: the previous weights get no gradient
            out[4] = None
        return (*out, None, None, None, None, None)

    register_op(namespace, "sequence_forward", forward_fake, backward, setup_context, vmap_rule=loop_population)
    register_op(namespace, "sequence_backward", backward_fake, vmap_rule=loop_population)


#: the extension; its name starts with the prefix, then a digest of the sources, flags and torch version
HEADS = CppKernel("ntm_bench_heads_v1", "ntm_kernel.cpp", _register, "NTM head")


@torch.compiler.assume_constant_result
def _kernel_loaded() -> bool:
    """Whether the C++ head kernels are built and loaded (building them on the first call). A constant to
    torch.compile, which then traces the chosen path."""
    return HEADS.ops() is not None


def kernel_applies(raw: torch.Tensor) -> bool:
    """Whether `fused_heads` can run on these values: float32 or float64 on the CPU, with the kernel loaded."""
    return raw.device.type == "cpu" and raw.dtype in (torch.float32, torch.float64) and _kernel_loaded()


def fused_heads(raw: torch.Tensor, prev_weights: torch.Tensor, memory: torch.Tensor, clip: float, read_heads: int,
                shift_radius: int, location: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reads [B, R, M], weights [B, H, N], new memory [B, N, M]) of one NTM time step from the interface's unclipped
    output raw [B, P], the previous weights [B, H, N] and the memory [B, N, M], through the C++ kernel (check
    `kernel_applies` first). Same values and gradients as `models.ntm.NTMCell.heads` to round-off."""
    reads, weights, new_memory, _ = HEADS.library.forward(raw, prev_weights, memory, float(clip), int(read_heads),
                                                          int(shift_radius), bool(location))
    return reads, weights, new_memory


def sequence_applies(inputs: torch.Tensor, controller_layers: int) -> bool:
    """Whether `fused_sequence` can run the NTM over these inputs: a one-layer controller, float32 or float64 on the
    CPU, with the kernel loaded."""
    return controller_layers == 1 and kernel_applies(inputs)


def fused_sequence(inputs: torch.Tensor, state: tuple, params: tuple, clip: float, read_heads: int,
                   shift_radius: int, location: bool) -> tuple[torch.Tensor, ...]:
    """(logits [B, T, O], h, c, reads, weights, memory) of the NTM over inputs [B, T, I] from `state` (h0, c0,
    reads0, weights0, memory0) and `params` (the controller's w_ih, b_ih, w_hh, b_hh; the interface's weight and
    bias; the output layer's weight and bias), through the C++ sequence op (check `sequence_applies` first)."""
    # the values for a backward unless gradients are off (evaluation, which keeps two time steps' at a time). Not
    # decided from requires_grad: under vmap the tensors the op sees do not carry it
    keep = torch.is_grad_enabled()
    outputs = HEADS.library.sequence_forward(inputs, *state, *params, float(clip), int(read_heads),
                                             int(shift_radius), bool(location), keep)
    return outputs[:SEQUENCE_VALUES]
