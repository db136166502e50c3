"""benchmarks/gpu_check.sh and gpu_check.py: the GPU check cannot run here, so its steps are
rehearsed on the CPU on a few hundred cells, and the script must refuse a machine without CUDA."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(out: Path) -> dict:
    # the subprocess imports this checkout's scgen_ae, one thread each
    return {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_resampled_cells_come_from_the_real_cells(gpu_check):
    import numpy as np

    adata = gpu_check.resampled(2000, seed=1)
    assert adata.n_vars == 799 and 1990 <= adata.n_obs <= 2000
    assert set(adata.obs["batch"]) == {"10x", "CEL-seq2", "Drop-seq"}
    assert np.all(adata.X.data == np.round(adata.X.data)) and adata.obs_names.is_unique


def test_every_step_runs_on_the_cpu(gpu_check, tmp_path):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    steps = results["steps"]
    assert set(steps) == {"data", "vae_fp32", "vae_bf16", "scvi", "denoise", "lda", "nmf"}
    assert all(s["status"] == "ok" for s in steps.values()), steps
    for name in ("vae_fp32", "vae_bf16", "scvi"):
        assert steps[name]["cells_per_s"] > 0 and steps[name]["epochs"] == 2
    assert results["vae_fp32_over_scvi"] > 0


def test_a_failing_step_is_recorded_and_fails_the_run(gpu_check, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "_vae", broken)
    assert gpu_check.main(["--device", "cpu", "--tiny", "--skip-scvi", "--out", str(tmp_path)]) == 1
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert steps["vae_fp32"]["status"] == "FAILED" and "illegal memory access" in steps["vae_fp32"]["error"]
    assert steps["nmf"]["status"] == "ok"  # the other steps still ran


def test_ddp_worker_under_torchrun_on_the_cpu(tmp_path):
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--ddp-worker",
                          "--out", str(tmp_path)], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "ddp_rank0.json").read_text())
    assert result["status"] == "ok" and result["world_size"] == 1 and result["epochs"] == 2
    assert result["backend"] == "gloo", "the data-parallel path was not taken"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_refuses_a_machine_without_cuda(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT)], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 3
    assert "CUDA is not available" in run.stderr and "--cpu-tiny" in run.stderr
    assert not (tmp_path / "results.json").exists()  # nothing ran
