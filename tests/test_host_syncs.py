"""No training step that does not log reads the device back to the host (AugVAE ML and SL, BiART, the CLIP
reranker, the judge). On a GPU each such read stalls the host until the device has caught up, and an idle queue
is what left the GPU 38-51% busy in the measured gpu runs.

Two nets catch such reads on the CPU: a ``TorchDispatchMode`` that records the ops that read data back or whose
output size depends on data (``_local_scalar_dense`` behind ``.item()``/``float()``/``bool()``, ``nonzero``,
``bincount``, ``masked_select``, indexing with a boolean mask), attributed to the training step that ran them; and
a step of the models on fake tensors (``FakeTensorMode``), where any read of a value, ``.tolist()`` and
``.numpy()`` included, raises. The counter's own test, and the steps that must read (the codebook's first
initialisation, k-means, a plateau check, the judge's log rows), show that it sees reads. (Log lines read their
means with ``.tolist()``, which the counter does not see on the CPU; on a GPU that is one device-to-host copy.)"""
from __future__ import annotations

import csv

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lverse_core.config import load_profile
from lverse_core.data.decoded import DecodedImages, to_uint8
from lverse_core.models.quantize import EMAVectorQuantizer
from tests.test_augvae import synthetic_images

READS = {"_local_scalar_dense", "nonzero", "bincount", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}
INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _has_mask(indices) -> bool:
    return any(t is not None and torch.is_tensor(t) and t.dtype in (torch.bool, torch.uint8) for t in indices)


class HostReads(TorchDispatchMode):
    """Records (step, op) for every host read / data-dependent op; ``step`` is set by the wrapped step function,
    so the ops a step loop runs after a step (accumulating, logging) count for that step."""

    def __init__(self):
        super().__init__()
        self.step: int | None = None
        self.hits: list[tuple[int | None, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in READS or (name in INDEXING and len(args) > 1 and _has_mask(args[1])):
            self.hits.append((self.step, name))
        return func(*args, **kwargs)

    def at(self, step: int) -> list[str]:
        return [name for s, name in self.hits if s == step]


class _FusedAdamW(torch.optim.AdamW):
    """AdamW with the fused kernel, as the trainers use it on a GPU. The CPU's default AdamW reads each
    parameter's step count, a CPU tensor on every device (so never a device sync), which the counter would see."""

    def __init__(self, *args, **kwargs):
        kwargs["fused"] = True
        super().__init__(*args, **kwargs)


@pytest.fixture
def fused_adamw(monkeypatch):
    monkeypatch.setattr(torch.optim, "AdamW", _FusedAdamW)


def counting(monkeypatch, module, mode: HostReads, kwarg: str = "step_fn"):
    """Patch ``module.run_steps`` so that the whole loop runs under ``mode`` and every step sets ``mode.step``."""
    real = module.run_steps

    def run_steps(step_fn, **kwargs):
        def wrapped(step):
            mode.step = step
            return step_fn(step)
        with mode:
            return real(wrapped, **kwargs)
    monkeypatch.setattr(module, "run_steps", run_steps)


def augvae_cfg(tmp_path, **over):
    base = {"runs_dir": str(tmp_path / "runs"), "reports_dir": str(tmp_path / "reports"),
            "augvae_train.ml_steps": 8, "augvae_train.sl_steps": 8, "augvae_train.log_every": 4,
            "augvae_train.ckpt_every": 8, "augvae_train.unquantized_steps": 2, "augvae_train.kmeans_batches": 2,
            "augvae_train.plateau_every": 8, "augvae.dead_code_threshold": 1.0, "augvae.data_init": True}
    return load_profile("ci", **{**base, **over})


def test_augvae_ml_and_sl_steps_that_do_not_log_read_nothing_back(tmp_path, monkeypatch, fused_adamw):
    import lverse_core.training.augvae_train as A

    # a patience of one step: codes are restarted in the quiet steps too (the log says so below)
    cfg = augvae_cfg(tmp_path, **{"augvae.restart_patience": 1})
    data = DecodedImages(to_uint8(synthetic_images(16, cfg.data.image_size)), train=True)
    for variant, quiet in (("ml", [1, 2, 4, 5, 6]), ("sl", [0, 2, 4, 5, 6])):
        # steps (0-based) that neither log (log_every 4: after steps 3 and 7) nor check the plateau nor save; for
        # SL steps 0 and 1 are the unquantized start (1 sets the codebook by k-means), 2 its first quantized step
        mode = HostReads()
        counting(monkeypatch, A, mode)
        A.train_augvae(cfg, variant, dataset=data, progress=False)
        for step in quiet:
            assert mode.at(step) == [], (variant, step, mode.at(step))
        # the counter sees the reads of the steps that must read: the first ML step reads whether the codebook is
        # initialised; SL's step 1 sets it by k-means; ML's step 7 is a plateau check (it reads the mean loss)
        assert "_local_scalar_dense" in mode.at(0 if variant == "ml" else 1)
        if variant == "ml":
            assert "_local_scalar_dense" in mode.at(7)
        with open(cfg.runs_root / "logs" / f"augvae_{variant}.csv") as f:
            rows = list(csv.DictReader(f))
        # the steps above did restart codes, and the log counts them as dead (read after the restarts, it was 0)
        assert any(float(r["restarted"]) > 0 and float(r["dead"]) > 0 for r in rows), (variant, rows)


def test_the_restart_reads_nothing_back():
    """Codes are restarted (due: below the threshold, idle for the patience) without a host read; the counter sees
    the read of a count."""
    q = EMAVectorQuantizer(8, 2, dead_code_threshold=1.0, restart_patience=2).train()
    mode = HostReads()
    with mode:  # codes 1..7 never get a vector: due at the first update (never hit), then every second one
        outs = [q.update_(torch.randn(16, 2), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    assert mode.hits == []
    assert [int(o["restarted"].sum()) for o in outs] == [7, 0, 7] and not any(o["restarted"][0] for o in outs)
    with mode:
        int(outs[0]["restarted"].sum())
    assert [n for _, n in mode.hits] == ["_local_scalar_dense"]


def test_restarted_codes_take_distinct_vectors_of_the_batch_and_follow_the_seed():
    """The due codes take distinct encoder vectors of the batch (when it has as many as the codes), and the same
    seed restarts the same codes with the same vectors."""
    flat = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    codes = torch.tensor([0, 0, 3] * 13 + [3])
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        q = EMAVectorQuantizer(10, 3, dead_code_threshold=1.0, restart_patience=1).train()
        q.cluster_size.fill_(0.5)  # all but codes 0 and 3 (which get vectors) fall below the threshold
        q.cluster_size[[0, 3]] = 5.0
        out = q.update_(flat, codes)
        results.append({k: v.clone() for k, v in q.state_dict().items()})
        restarted = out["restarted"]
        assert restarted.sum() == 8 and torch.equal(restarted, q.cluster_size == 1.0)
        rows = [next(i for i, r in enumerate(flat) if torch.equal(q.embed[j], r)) for j in restarted.nonzero()[:, 0]]
        assert len(set(rows)) == 8  # every restarted code took its own vector of the batch
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_biart_steps_that_do_not_log_read_nothing_back(tmp_path, monkeypatch, fused_adamw):
    import lverse_core.training.biart_train as B
    from tests.test_biart_train import PAD, VT, cfg_for, data_for

    for direction in ("alternate", "mixed"):
        cfg = cfg_for(tmp_path / direction, **{"biart_train.steps": 6, "biart_train.log_every": 3,
                                               "biart_train.ckpt_every": 6, "biart_train.direction": direction})
        mode = HostReads()
        counting(monkeypatch, B, mode)
        B.train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
        for step in (0, 1, 3, 4):
            assert mode.at(step) == [], (direction, step, mode.at(step))


def test_clip_reranker_steps_that_do_not_log_read_nothing_back(tmp_path, monkeypatch):
    import lverse_core.sampling.clip_reranker as C

    monkeypatch.setattr(C, "LOG_EVERY", 3)
    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"clip.train_steps": 6, "clip.batch_size": 4})
    g = torch.Generator().manual_seed(0)
    ds = [{"image": torch.rand(3, 32, 32, generator=g) * 2 - 1, "captions": [f"a {i % 3} square."]}
          for i in range(8)]
    mode = HostReads()
    counting(monkeypatch, C, mode)
    C.train_clip_reranker(cfg, ds)
    for step in (0, 1, 3, 4):
        # the only reads left are the host-side choice of captions (a CPU generator's draw, not the device)
        assert mode.at(step) == ["_local_scalar_dense"] * 4, (step, mode.at(step))  # one draw per image of 4


def test_judge_steps_read_nothing_back_until_the_log_rows(tmp_path, monkeypatch, fused_adamw):
    import lverse_core.evaluation.judge as J
    from lverse_core.data import shapes

    cfg = load_profile("ci")
    judge = J.build_judge(cfg, shapes.SHAPES, shapes.COLOURS, shapes.SIZES)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, cfg.data.image_size, cfg.data.image_size), dtype=torch.uint8, generator=g)
    objs = [[{"shape": shapes.SHAPES[i % 3], "colour": shapes.COLOURS[i % 4], "size": shapes.SIZES[0],
              "x": 10.0, "y": 12.0}] for i in range(16)]
    mode = HostReads()
    steps = iter(range(100))
    real_loss = J.JudgeNet.loss

    def loss(self, logits, targets):  # marks each step as it starts its loss (after the batch is drawn)
        mode.step = next(steps)
        return real_loss(self, logits, targets)
    monkeypatch.setattr(J.JudgeNet, "loss", loss)
    log = J.CSVLog(tmp_path / "judge.csv", ["loss"])
    with mode:
        losses = J.fit_judge(judge, x, objs, steps=6, batch_size=8, lr=1e-3, seed=0, log=log, log_every=5)
    assert len(losses) == 6
    for step in (1, 2, 3, 4):
        assert mode.at(step) == [], (step, mode.at(step))
    assert mode.at(0) and mode.at(5)  # the log rows after steps 1 and 6 read the loss


def test_model_steps_run_on_fake_tensors():
    """One training step of AugVAE (ML, SL quantized and unquantized, with the restart) and of BiART
    on fake tensors: any ``.item()``, ``float()``, ``bool()``, ``.tolist()`` or ``.numpy()`` of a value raises."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lverse_core.models.augvae import AugVAE
    from lverse_core.models.biart import I2T, T2I, BiART

    cfg = load_profile("ci", **{"augvae.dead_code_threshold": 1.0, "augvae.data_init": False})
    s = cfg.data.image_size
    with FakeTensorMode(allow_non_fake_inputs=False):
        for variant, quantize in (("ml", True), ("sl", True), ("sl", False)):
            model = AugVAE.from_config(cfg, variant).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            recon, out = model(torch.rand(4, 3, s, s) * 2 - 1, quantize=quantize)
            out["loss"].backward()
            opt.step()
            assert all(torch.is_tensor(v) for k, v in out.items() if k != "vectors")
        model = BiART(BiART.args_from_config(cfg, 30, 0)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        text = torch.randint(1, 30, (4, model.args.text_len))
        image = torch.randint(0, model.args.image_vocab, (4, model.args.image_tokens))
        for direction in (T2I, I2T):
            parts = model(text, image, direction)
            (parts["ref"] + parts["gen"]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
