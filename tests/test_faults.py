"""Faults: Ctrl-C during training, a process killed while saving, and bit-identical
results across fresh processes. The subprocess tests run real interpreters, as a user's
notebook kernel or shell would."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae.models import _nmf_solver, lda_vb
from scgen_ae.models.dae import DAEModule
from scgen_ae.models.vae import VAEModule

from .conftest import FAST

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def _wait_for_line(proc: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    proc.kill()
    raise AssertionError(f"{marker!r} never printed; output:\n{''.join(lines)}")


def test_ctrl_c_mid_epoch_keeps_best_model_and_adata(sim, snapshot, monkeypatch):
    """A KeyboardInterrupt raised inside a training step (Ctrl-C in a notebook)."""
    snap = snapshot(sim)
    calls = {"n": 0}
    original = VAEModule.loss

    def loss_then_interrupt(self, mb, kl_weight=1.0):
        calls["n"] += 1
        if calls["n"] == 40:  # a few epochs in, in the middle of one
            raise KeyboardInterrupt
        return original(self, mb, kl_weight)

    monkeypatch.setattr(VAEModule, "loss", loss_then_interrupt)
    with pytest.warns(UserWarning, match="interrupted .*adata was left unchanged"):
        model = sa.tl.vae(sim, batch_key="batch", max_epochs=500, **FAST)
    snap.assert_unchanged(sim)
    assert model.history["interrupted"]
    assert 0 < len(model.history["train_loss"]) < 500
    monkeypatch.setattr(VAEModule, "loss", original)
    z = model.get_latent(sim)
    assert z.shape == (sim.n_obs, 10) and np.isfinite(z).all()


def _interrupt_on_call(monkeypatch, owner, name: str, n: int) -> None:
    """Make ``owner.name`` raise KeyboardInterrupt on its ``n``-th call (Ctrl-C mid-fit)."""
    original, calls = getattr(owner, name), {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupting)


@pytest.mark.parametrize("front", ["nmf", "classic_lda"])
def test_ctrl_c_in_nmf_and_classic_lda_as_in_the_neural_fronts(sim, snapshot, monkeypatch, front):
    """Ctrl-C in the third pass / iteration: the shared warning, adata unchanged, and the
    returned model's History marks the interruption and keeps the two finished passes."""
    snap = snapshot(sim)
    if front == "nmf":
        _interrupt_on_call(monkeypatch, _nmf_solver, "_end_of_pass", 3)
        with pytest.warns(UserWarning, match="interrupted .*adata was left unchanged"):
            model = sa.tl.nmf(sim, n_components=4, max_iter=50, tol=0.0)
    else:
        _interrupt_on_call(monkeypatch, lda_vb, "e_step", 3)
        with pytest.warns(UserWarning, match="interrupted .*adata was left unchanged"):
            model = sa.tl.lda(sim, n_topics=4, method="classic", max_iter=50)
    snap.assert_unchanged(sim)
    assert model.history["interrupted"] and not model.history["stopped_early"]
    assert len(model.history["train_loss"]) == 2 and model.history["best_epoch"] == 1
    assert np.isfinite(model.transform(sim)).all()


@pytest.mark.parametrize("method", ["dae", "vae"])
def test_ctrl_c_in_denoise_warns_once_with_its_own_advice(sim, snapshot, monkeypatch, method):
    """denoise's VAE trains through tl.vae: one warning still, denoise's (pass the model back)."""
    snap = snapshot(sim)
    _interrupt_on_call(monkeypatch, DAEModule if method == "dae" else VAEModule, "loss", 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sa.tl.denoise(sim, method=method, batch_key="batch", max_epochs=50, **FAST)
    hits = [w for w in caught if "interrupted (Ctrl-C)" in str(w.message)]
    assert len(hits) == 1 and "denoise(adata, model=model)" in str(hits[0].message), [str(w.message) for w in hits]
    assert hits[0].filename == __file__  # points at the caller's line
    snap.assert_unchanged(sim)
    assert model.history["interrupted"]


def test_sigint_to_training_process_then_save(tmp_path):
    """A real SIGINT to a training process: it returns the best model, which saves and loads."""
    path = tmp_path / "interrupted.npz"
    proc = _python("""
        import signal, sys, scgen_ae as sa
        from scgen_ae.models.vae import VAEModule
        # a shell's background job (`pytest &`) inherits SIGINT as ignored: restore Python's handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        adata = sa.datasets.simulate(n_cells=600, n_genes=300)
        original, steps = VAEModule.loss, [0]
        def loss(self, mb, kl_weight):  # announce once training is really under way
            steps[0] += 1
            if steps[0] == 20:
                print("training", flush=True)
            return original(self, mb, kl_weight)
        VAEModule.loss = loss
        model = sa.tl.vae(adata, batch_key="batch", max_epochs=100000, early_stopping=False, progress=False)
        assert "X_vae" not in adata.obsm, "adata was modified"
        model.save(sys.argv[1])
        print("saved", len(model.history["train_loss"]), model.history["interrupted"], flush=True)
    """, str(path))
    _wait_for_line(proc, "training")
    time.sleep(1)  # some more steps in (20 steps are done): the signal must land inside training
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "saved" in out and "True" in out, out
    model = sa.VAE.load(path)
    assert model.history["interrupted"]
    adata = sa.datasets.simulate(n_cells=600, n_genes=300)
    assert np.isfinite(model.get_latent(adata)).all()


def test_kill_during_repeated_saves_leaves_a_valid_file(tmp_path):
    """SIGKILL at an arbitrary moment of a save loop: the file at the path always loads."""
    path = tmp_path / "model.npz"
    proc = _python("""
        import sys, scgen_ae as sa
        adata = sa.datasets.simulate(n_cells=300, n_genes=200)
        model = sa.tl.vae(adata, batch_key="batch", max_epochs=2, progress=False)
        model.save(sys.argv[1])
        print("first save done", flush=True)
        while True:
            model.save(sys.argv[1])
    """, str(path))
    _wait_for_line(proc, "first save done")
    for delay in (0.05, 0.13, 0.31):
        time.sleep(delay)
        sa.VAE.load(path)  # readable while another process keeps replacing it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    model = sa.VAE.load(path)
    assert model.config.n_genes > 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.npz"]
    # a temporary file may survive a SIGKILL, but never under the model's name
    assert all(name.startswith(".tmp-") for name in leftovers), leftovers


LATENT_SCRIPT = """
    import hashlib, scgen_ae as sa
    adata = sa.datasets.simulate(n_cells=500, n_genes=300, seed=3)
    sa.tl.vae(adata, batch_key="batch", max_epochs=8, seed=11, progress=False, n_threads=1)
    print("digest", hashlib.sha256(adata.obsm["X_vae"].tobytes()).hexdigest(), flush=True)
"""


def test_same_seed_bit_identical_in_fresh_processes():
    digests = []
    for _ in range(2):
        proc = _python(LATENT_SCRIPT)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        digests.append([ln.split()[1] for ln in out.splitlines() if ln.startswith("digest")][0])
    assert digests[0] == digests[1]
    # and the in-process result agrees with the fresh processes
    adata = sa.datasets.simulate(n_cells=500, n_genes=300, seed=3)
    sa.tl.vae(adata, batch_key="batch", max_epochs=8, seed=11, progress=False, n_threads=1)
    assert hashlib.sha256(adata.obsm["X_vae"].tobytes()).hexdigest() == digests[0]


def test_ctrl_c_in_map_query_leaves_the_query_unchanged(snapshot, monkeypatch):
    """Ctrl-C while the query rows train: the shared warning, nothing written to the query, and
    the returned model marks the interruption and still embeds the query."""
    sim3 = sa.datasets.simulate(n_cells=300, n_genes=120, n_batches=3, n_groups=3, seed=1)
    ref = sim3[sim3.obs["batch"] != "batch2"].copy()
    model = sa.tl.vae(ref, batch_key="batch", n_latent=4, n_hidden=32, max_epochs=2, **FAST)
    query = sim3[sim3.obs["batch"] == "batch2"].copy()
    snap = snapshot(query)
    _interrupt_on_call(monkeypatch, VAEModule, "loss", 3)
    with pytest.warns(UserWarning, match="interrupted .*adata was left unchanged"):
        mapped = model.map_query(query, batch_key="batch", max_epochs=20, **FAST)
    snap.assert_unchanged(query)
    assert mapped.history["interrupted"]
    assert np.isfinite(mapped.get_latent(query, batch_key="batch")).all()
