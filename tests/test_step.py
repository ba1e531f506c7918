"""The training step waits on the device at most once per optimizer step for the whole group; its clipping equals
torch's; the multi-tensor optimizers give the same parameters as the one-tensor loop; and runs that leave a group
keep their slot, masked (`keeps_slots`, as on a GPU), with the same files as runs that are removed."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench import forward as forward_module
from bench import train as train_module
from bench.forward import BatchedForward, stack_batches
from bench.grid import expand, load_suite
from bench.options import WorkerOptions
from bench.registry import build_model, build_task
from bench.train import Member, clip_gradients, make_optimizer, train_population

ONE_THREAD = WorkerOptions(threads=1)
OVERRIDES = ["tasks={copy: {bits: 3, train_sizes: [1, 4], test_sizes: [4, 6]}}", "seeds=3", "train.steps=50",
             "train.eval_every=10", "train.checkpoint_every=20", "train.max_nonfinite=3",
             "models={ntm: {controller_units: 12, memory_locations: 8, memory_width: 4}}"]
NAN_SEED = 2

#: what reads a tensor's value on the host, which on a GPU waits for the device to finish computing it
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


def _specs(extra=()):
    specs = expand(load_suite("smoke", [*OVERRIDES, *extra]))
    assert len(specs) == 3
    return specs


def _nan_batches(monkeypatch, steps):
    """Seed 2's batches at `steps` (a set, or a callable on the step) carry NaN inputs: its loss is non-finite."""
    original = Member.next_batch
    bad = steps if callable(steps) else steps.__contains__

    def next_batch(self):
        batch = original(self)
        if self.spec.seed == NAN_SEED and bad(self.step + 1):
            batch = dataclasses.replace(batch, inputs=batch.inputs * float("nan"))
        return batch

    monkeypatch.setattr(Member, "next_batch", next_batch)


class SyncCounter:
    """Counts host reads of tensors (`READS`, and torch.cuda.synchronize) per training iteration.

    Not counted: the sampler's (`Member.next_batch`: CPU tensors from a CPU generator, whatever the device) and the
    optimizers' reads of their step counters (CPU tensors even when the parameters are on a GPU). Iterations that
    evaluate, checkpoint or finish a run may read more; they are marked and left out by `per_step`."""

    def __init__(self, monkeypatch):
        self.members: list[Member] = []
        self.iterations: list[dict] = []
        self.sampling = 0
        for name in READS:
            self._patch(monkeypatch, torch.Tensor, name)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: self._count("synchronize", None))
        begin = train_module.begin_iteration
        monkeypatch.setattr(train_module, "begin_iteration", lambda options: (self._begin(), begin(options)))
        next_batch = Member.next_batch

        def sampling(member):
            self.sampling += 1
            try:
                return next_batch(member)
            finally:
                self.sampling -= 1

        monkeypatch.setattr(Member, "next_batch", sampling)
        save = train_module.save_checkpoint
        monkeypatch.setattr(train_module, "save_checkpoint", lambda *a: (self._mark(), save(*a))[1])

    def _patch(self, monkeypatch, owner, name):
        original = getattr(owner, name)

        def counted(tensor, *args, **kwargs):
            self._count(name, tensor)
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    def _count(self, name, tensor):
        if not self.iterations or self.sampling:
            return
        if tensor is not None and any(tensor is state.get("step") for member in self.members
                                      for state in member.optimizer.state.values()):
            return
        self.iterations[-1]["reads"].append(name)

    def _begin(self):
        self.iterations.append({"reads": [], "other": False})

    def _mark(self):
        if self.iterations:
            self.iterations[-1]["other"] = True

    # hooks
    def on_eval(self, member, row):
        if member not in self.members:
            self.members.append(member)
        self._mark()

    def on_finish(self, spec, result):
        self._mark()

    def per_step(self) -> list[int]:
        """The reads of each iteration that only trained."""
        return [len(it["reads"]) for it in self.iterations if not it["other"]]


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_at_most_one_device_sync_per_optimizer_step(tmp_path, monkeypatch, clip):
    _nan_batches(monkeypatch, {5, 6, 30})  # non-finite updates take the same path: no extra read
    counter = SyncCounter(monkeypatch)
    specs = _specs([f"train.clip.kind={clip}", "train.clip.value=1.0"])
    results = train_population(specs, [tmp_path / s.run_id for s in specs], ONE_THREAD, [counter])
    assert [r["nonfinite_steps"] for r in results] == [0, 3, 0] and len(counter.members) == 3
    reads = counter.per_step()
    assert len(reads) >= 40  # 50 steps, less those that evaluate (every 10th) or checkpoint
    assert max(reads) <= 1, reads  # the group's one read-back: which updates are finite
    assert sum(reads) == len(reads)


def test_the_counter_sees_a_read(tmp_path, monkeypatch):
    # the loop before this change read each run's loss and gradient norm: 2 per run and step
    counter = SyncCounter(monkeypatch)
    original = Member.clip
    monkeypatch.setattr(Member, "clip", lambda self: torch.tensor(float(original(self))))
    specs = _specs(["train.steps=12", "train.checkpoint_every=100"])
    train_population(specs, [tmp_path / s.run_id for s in specs], ONE_THREAD, [counter])
    assert set(counter.per_step()) == {1 + 3}


def _model_and_grads(scale):
    torch.manual_seed(0)
    model = build_model("lstm", 4, 3, layers=1, units=8)
    model(torch.randn(2, 5, 4)).sum().mul(scale).backward()
    return model, [p for p in model.parameters()]


@pytest.mark.parametrize("kind, value", [("norm", 0.5), ("norm", 1e6), ("value", 0.01), ("none", 1.0)])
def test_clipping_equals_torch(kind, value):
    spec = _specs([f"train.clip.kind={kind}", f"train.clip.value={value}"])[0]
    _, params = _model_and_grads(10.0)
    _, reference = _model_and_grads(10.0)
    norm = clip_gradients(spec, params)
    assert isinstance(norm, torch.Tensor) and norm.dim() == 0
    grads = [p for p in reference if p.grad is not None]
    if kind == "norm":
        expected = torch.nn.utils.clip_grad_norm_(grads, value)
    else:
        expected = torch.nn.utils.get_total_norm([p.grad for p in grads])
        if kind == "value":
            torch.nn.utils.clip_grad_value_(grads, value)
    assert torch.equal(norm, expected)
    for p, q in zip(params, reference, strict=True):
        assert torch.equal(p.grad, q.grad)
    _, params = _model_and_grads(float("nan"))
    assert not torch.isfinite(clip_gradients(spec, params))


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_multi_tensor_optimizer_equals_the_one_tensor_loop(optimizer, one_thread):
    # 300 steps of a small DNC on Copy: the same parameters and state, bit for bit (the fused Adam is not: 2e-7 off)
    spec = _specs([f"train.optimizer={optimizer}"])[0]
    task = build_task("copy", bits=3, train_sizes=[1, 4])
    finals = []

    def one_tensor_loop(params):
        made = make_optimizer(spec, params)
        return type(made)(params, **{**made.defaults, "foreach": False})

    for make in (lambda params: make_optimizer(spec, params), one_tensor_loop):
        torch.manual_seed(0)
        model = build_model("dnc", task.input_size, task.output_size, controller_units=8, memory_locations=6,
                            memory_width=3)
        params = list(model.parameters())
        optimizer_ = make(params)
        generator = torch.Generator().manual_seed(1)
        for _ in range(300):
            batch = task.sample(4, generator, size=task.sample_size(generator))
            optimizer_.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch.inputs), batch.targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer_.step()
        finals.append(([p.detach().clone() for p in params], optimizer_.state_dict()["state"]))
    assert finals[0][1] and all(torch.equal(a, b) for a, b in zip(finals[0][0], finals[1][0], strict=True))
    for state_a, state_b in zip(finals[0][1].values(), finals[1][1].values(), strict=True):
        assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)


def test_stack_batches_pads_and_fills_left_slots_with_zeros():
    task = build_task("copy", bits=3, train_sizes=[1, 4])
    short, long = (task.sample(2, torch.Generator().manual_seed(k), size=n) for k, n in ((0, 1), (1, 4)))
    group = stack_batches([short, None, long], torch.device("cpu"))
    assert group.inputs.shape == (3, 2, 9, 4) and group.targets.shape == (3, 2, 9, 3) and group.mask.shape == (3, 2, 9)
    assert torch.equal(group.inputs[0], short.pad_to(9).inputs) and torch.equal(group.mask[2], long.mask)
    assert not group.inputs[1].any() and not group.mask[1].any()
    alone = stack_batches([long], torch.device("cpu"))
    assert alone.inputs.data_ptr() == long.inputs.data_ptr()  # a run alone: a view, no copy


def _files(folder):
    """Everything a run folder holds, timings aside."""
    result = json.loads((folder / "result.json").read_text())
    for key in ("wall_s", "seq_per_s"):
        result.pop(key)
    checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True)
    for key in ("wall_s", "train_s"):
        checkpoint.pop(key)
    for row in checkpoint["curve"]:
        row.pop("wall_s")
    samples = dict(np.load(io.BytesIO((folder / "samples.npz").read_bytes()))) if result["status"] == "done" else {}
    return {"result": result, "curve": pd.read_csv(folder / "curve.csv").drop(columns=["wall_s"]),
            "generalization": pd.read_csv(folder / "generalization.csv") if result["status"] == "done" else None,
            "checkpoint": checkpoint, "samples": samples}


def _assert_equal(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=True), where
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    else:
        assert a == b or (a != a and b != b), where


def test_runs_that_leave_keep_their_slot_masked(tmp_path, monkeypatch):
    # seed 2 diverges at step 14 and seed 1 stops at convergence at step 20 (a loose rule), while seed 3 trains on,
    # alone, to step 50. Masked (as on a GPU), the forward computes 3 slots to the end; removed (as on a CPU), 3, 2,
    # then 1. Every run's files are the same bit for bit: a slot computes only its own run
    _nan_batches(monkeypatch, lambda step: step >= 12)
    specs = _specs(["tasks={copy: {bits: 3, train_sizes: [1, 4], test_sizes: [4, 6], converge_below: 2.65}}",
                    "train.stop_at_convergence=true", "train.eval_every=5"])
    group_sizes = {}
    call = BatchedForward.__call__

    def recording(self, inputs):
        group_sizes.setdefault(mode, set()).add(inputs.shape[0])
        return call(self, inputs)

    monkeypatch.setattr(BatchedForward, "__call__", recording)
    results = {}
    for mode in ("removed", "masked"):
        monkeypatch.setattr(train_module, "keeps_slots", lambda device, forward, masked=mode == "masked": masked)
        results[mode] = train_population(specs, [tmp_path / mode / s.run_id for s in specs], ONE_THREAD)
    assert group_sizes == {"removed": {1, 2, 3}, "masked": {3}}
    timing = ("wall_s", "seq_per_s")
    for spec, removed, masked in zip(specs, results["removed"], results["masked"]):
        assert (removed["status"], removed["steps"]) == (masked["status"], masked["steps"]) == \
            {1: ("done", 20), 2: ("diverged", 14), 3: ("done", 50)}[spec.seed]
        a, b = _files(tmp_path / "removed" / spec.run_id), _files(tmp_path / "masked" / spec.run_id)
        assert {k: v for k, v in removed.items() if k not in timing} == \
            {k: v for k, v in masked.items() if k not in timing}
        _assert_equal(a, b, spec.run_id)


def test_keeps_slots_in_a_vmapped_group_on_a_gpu_only():
    models = [build_model("ntm", 4, 3, controller_units=8, memory_locations=6, memory_width=3) for _ in range(2)]
    vmapped, one_by_one = BatchedForward(models), BatchedForward([build_model("lstm", 4, 3) for _ in range(2)])
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only the device type is looked at
    assert forward_module.keeps_slots(cuda, vmapped)
    assert not forward_module.keeps_slots(cpu, vmapped) and not forward_module.keeps_slots(cuda, one_by_one)
