"""Bad input on the command line: a short message naming the value and the choices, non-zero exit, no files."""
import subprocess
import sys

import pytest
import torch

CASES = [
    (["split=diagonal"], ["diagonal", "quarter", "uniform"]),
    (["model=resnet"], ["resnet", "conv", "coordconv", "mlp", "coordmlp"]),
    (["task=segmentation"], ["segmentation", "classification", "regression", "rendering"]),
    (["optimizer=lbfgs"], ["lbfgs", "adam", "sgd"]),
    (["optimizer.lr=-1"], ["optimizer.lr", "-1", "(0, inf]"]),
    (["trainer.epochs=0"], ["trainer.epochs", "0", "integer >= 1"]),
    (["trainer.epochs=abc"], ["trainer.epochs", "abc"]),
    (["data.test_fraction=1.5"], ["data.test_fraction", "1.5", "(0, 1)"]),
    (["task=rendering", "task.loss=hinge"], ["task.loss", "hinge", "bce, mse"]),
    (["device=tpu"], ["device", "tpu", "auto, cpu, cuda"]),
]
if not torch.cuda.is_available():
    CASES.append((["device=cuda"], ["device", "cuda", "not available", "auto, cpu, cuda"]))


@pytest.mark.parametrize("overrides, expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_fails_cleanly(tmp_path, overrides, expected):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "coordexp.train", *overrides, f"hydra.run.dir={run_dir}", "debug=fast"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "metrics.json").exists()
    assert not run_dir.exists(), list(run_dir.iterdir())
