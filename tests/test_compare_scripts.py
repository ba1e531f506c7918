"""The comparison scripts' own side, without the other implementation's checkout: scripts/compare_pytorch_dnc.py and
scripts/compare_pytorch_ntm.py."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.conftest import REPO


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compare_dnc():
    return _load_script("compare_pytorch_dnc")


def test_compare_dnc_times_our_side_without_a_checkout(compare_dnc, one_thread):
    task, batch = compare_dnc.copy_batch()
    assert batch.inputs.shape == (32, 41, 9) and batch.targets.shape == (32, 41, 8)
    steps, warmups, ours = compare_dnc.our_train_steps(task, batch, ["eager"], warmup=0)
    assert list(steps) == ["ours, eager"] and warmups == {"ours, eager": 0}
    assert ours.parameter_count() == 62_256  # the paper config
    rates = compare_dnc.interleaved_rates(steps, steps=1, repeats=1, warmups=warmups, batch_size=32)
    assert len(rates["ours, eager"]) == 1 and math.isfinite(rates["ours, eager"][0]) and rates["ours, eager"][0] > 0


def test_compare_dnc_rejects_a_checkout_without_dnc(compare_dnc, one_thread, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_dnc.main(["--checkout", str(tmp_path)])  # sets torch's threads (to 1); the fixture restores them
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "dnc/dnc.py" in err


def test_compare_ntm_rejects_a_checkout_without_ntm(one_thread, tmp_path, capsys):
    compare_ntm = _load_script("compare_pytorch_ntm")
    with pytest.raises(SystemExit) as exit_info:
        compare_ntm.main(["--checkout", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "ntm/aio.py" in err
