"""Precision by capability (trainer.precision=auto) and the guarded fast ops: the choice follows what the backend
runs natively, explicit bf16 never crashes where it is emulated, and each private op's fallback computes the same."""
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coordexp import pointwise, precision
from coordexp.precision import native_bf16, resolve_precision
from coordexp.run import train
from conftest import make_cfg

pytestmark = pytest.mark.steps
ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.canvas=16", "data.square=5", "debug=fast", "trainer.plots=false"]
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def in_fresh_process(code: str, **env) -> str:
    """The last line `code` prints, run in a new interpreter with `env` added (the ISA limits act at start-up)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env}, cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("native, requested, expected", [
    (True, "auto", "bf16"), (False, "auto", "fp32"),
    (True, "bf16", "bf16"), (False, "bf16", "bf16"),
    (True, "fp32", "fp32"), (False, "fp32", "fp32"),
])
def test_auto_is_bf16_exactly_where_it_is_native_and_explicit_choices_stand(monkeypatch, caplog, native, requested,
                                                                            expected):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    precision._warn_emulated.cache_clear()
    with caplog.at_level(logging.WARNING, logger="coordexp.precision"):
        assert resolve_precision(requested, torch.device("cpu")) == expected
    emulated = [r for r in caplog.records if "emulated" in r.getMessage()]
    assert len(emulated) == (requested == "bf16" and not native)


@pytest.mark.parametrize("limit", ["AVX2", "AVX512_CORE"])
def test_a_cpu_without_native_bf16_resolves_auto_to_fp32(limit):
    # an ISA limit is invisible in the CPU's flags; the probe reads what oneDNN will actually run
    code = ("import torch; from coordexp.precision import resolve_precision, native_bf16; "
            "print(native_bf16('cpu'), resolve_precision('auto', torch.device('cpu')))")
    assert in_fresh_process(code, ONEDNN_MAX_CPU_ISA=limit) == "False fp32"


def test_the_probe_agrees_with_the_cpu_flags_when_nothing_limits_them():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if not flags:
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    has_bf16 = bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
    assert in_fresh_process("from coordexp.precision import native_bf16; print(native_bf16('cpu'))",
                            ONEDNN_MAX_CPU_ISA="ALL") == str(has_bf16)


def test_the_probe_is_not_fooled_by_onednn_having_run_before():
    # oneDNN prints its instruction set once a process: a probe after other oneDNN work reads its kernel instead
    code = ("import torch\nx = torch.ones(1, 16, 8, 8, dtype=torch.bfloat16)\n"
            "with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):\n"
            "    torch.nn.functional.conv2d(x, torch.ones(16, 16, 3, 3, dtype=torch.bfloat16))\n"
            "from coordexp.precision import native_bf16\nprint(native_bf16('cpu'))")
    first = in_fresh_process("from coordexp.precision import native_bf16; print(native_bf16('cpu'))")
    assert in_fresh_process(code) == first


def test_an_auto_run_records_the_precision_it_used(tmp_path):
    cfg = make_cfg("task=classification", "model=coordconv", *SMALL)
    assert cfg.trainer.precision == "auto"  # the recipe's
    metrics = train(cfg, tmp_path)
    used = resolve_precision("auto", torch.device("cpu"))
    assert metrics["precision"] == used == ("bf16" if native_bf16("cpu") else "fp32")
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == used
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["precision_used"].string_value == used and hparams["trainer.precision"].string_value == "auto"


def test_explicit_bf16_trains_where_it_is_emulated():
    # the renderer in bf16 under an AVX2 limit: oneDNN cannot build the fused op there, the public ops run it
    code = ("from pathlib import Path; import tempfile; from coordexp.run import train; "
            "from conftest import make_cfg; "
            f"m = train(make_cfg('task=rendering', 'model=coordconv', 'trainer.precision=bf16', *{SMALL!r}), "
            "Path(tempfile.mkdtemp())); print(m['status'], m['precision'])")
    assert in_fresh_process(code, **AVX2) == "completed bf16"


@pytest.fixture(params=[False, True], ids=["guarded-private", "public-only"])
def side(request, monkeypatch):
    monkeypatch.setattr(pointwise, "PUBLIC_ONLY", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_sides_of_the_guard_compute_the_same_stack(side, dtype):
    torch.manual_seed(0)
    x = torch.randn(300, 8)
    weights = [torch.randn(16, 8), torch.randn(16, 16), torch.randn(4, 16)]
    biases = [torch.randn(16), torch.randn(16), torch.randn(4)]
    params = [p.requires_grad_() for p in (*weights, *biases)]
    out = pointwise.linear_relu_stack(x.to(dtype), weights, biases)
    h = x
    for w, b in zip(weights[:-1], biases[:-1]):  # the reference: layer by layer, public ops, fp32
        h = torch.relu(h @ w.t() + b)
    reference = h @ weights[-1].t() + biases[-1]
    tolerance = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(out.float(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())
    grads = torch.autograd.grad(out.float().sum(), params)
    expected = torch.autograd.grad(reference.sum(), params)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * want.abs().max().item())


def test_the_private_ops_are_taken_only_where_the_guard_allows(monkeypatch):
    calls = []
    monkeypatch.setattr(pointwise, "_fused_linear_relu", lambda *args: calls.append("fused") or
                        torch.relu(torch.addmm(args[2], args[0], args[1].t())))
    x, w, b = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2)
    monkeypatch.setattr(pointwise, "fused_works", lambda dtype: True)
    pointwise.linear_relu(x, w, b)
    pointwise.linear_relu(x.double(), w.double(), b.double())  # a dtype oneDNN's op is not used for
    monkeypatch.setattr(pointwise, "fused_works", lambda dtype: False)
    pointwise.linear_relu(x, w, b)
    monkeypatch.setattr(pointwise, "fused_works", lambda dtype: True)
    monkeypatch.setattr(pointwise, "PUBLIC_ONLY", True)
    pointwise.linear_relu(x, w, b)
    assert calls == ["fused"]


def test_the_fused_op_is_not_taken_on_an_untested_architecture(monkeypatch):
    monkeypatch.setattr(pointwise.platform, "machine", lambda: "aarch64")
    pointwise.fused_works.cache_clear()
    try:
        assert not pointwise.fused_works(torch.float32)
    finally:
        pointwise.fused_works.cache_clear()


def test_without_native_bf16_the_fused_op_is_probed_out_in_bf16_only():
    code = "import torch; from coordexp.pointwise import fused_works; print(fused_works(torch.float32), " \
           "fused_works(torch.bfloat16))"
    native = in_fresh_process(code)
    limited = in_fresh_process(code, **AVX2)
    assert limited.split()[1] == "False"
    assert limited.split()[0] == native.split()[0]  # fp32 is unaffected by the limit


def test_no_private_torch_op_outside_the_guarded_module():
    private = re.compile(r"torch\.ops\.|torch\._(?!_)|\btorch\._C\b")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for folder in ("coordexp", "scripts", "hydra_plugins")
                 for path in (ROOT / folder).rglob("*.py") if path.name != "pointwise.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert offenders == []


def test_a_run_continued_on_a_machine_that_resolves_auto_otherwise_says_both(tmp_path, monkeypatch, caplog):
    budget = ["task=classification", "model=coordconv", "trainer.progress=false", "trainer.plots=false",
              "trainer.max_steps_per_epoch=2", "data.canvas=16", "data.square=5"]
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: True)
    assert train(make_cfg(*budget, "trainer.epochs=1"), tmp_path)["precision"] == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: False)
    with caplog.at_level(logging.WARNING, logger="coordexp.run"):
        resumed = train(make_cfg(*budget, "trainer.epochs=2"), tmp_path, resume=True)
    assert resumed["status"] == "completed" and resumed["epochs"] == 2
    assert resumed["precision"] == "bf16, then fp32"
    assert any("trained in bf16 before" in r.getMessage() for r in caplog.records)
    again = train(make_cfg(*budget, "trainer.epochs=3"), tmp_path, resume=True)  # fp32 again: nothing new to say
    assert again["epochs"] == 3 and again["precision"] == "bf16, then fp32"
