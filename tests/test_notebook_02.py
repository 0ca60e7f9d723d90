"""Notebook 02 on the ci profile (needs notebook 01's AugVAE-SL checkpoint and codes), and its helpers."""
import json
import subprocess
import sys

import pandas as pd
import torch

from lverse_core.pipeline.biart_run import loss_curves, plot_loss_curves

from lverse_core.pipeline.figures import image_grid_figure
from lverse_core.config import REPO_ROOT, load_profile
from lverse_core.training.loop import CSVLog
from ._limits import HANG_GUARD_S


def test_loss_curves_are_read_per_direction_and_part(tmp_path):
    cfg = load_profile("ci", runs_dir=str(tmp_path))
    log = CSVLog(cfg.runs_root / "logs" / "biart.csv", ["loss", "t2i_ref", "t2i_gen", "i2t_ref", "i2t_gen", "lr"])
    log.write(10, loss=5.0, t2i_ref=3.0, t2i_gen=4.0, i2t_ref=4.5, i2t_gen=2.5, lr=1e-3)
    log.write(20, loss=4.0, t2i_ref=2.0, t2i_gen=3.5, i2t_ref=4.0, i2t_gen=1.5, lr=1e-3)
    df = loss_curves(cfg)
    assert len(df) == 8 and set(df["direction"]) == {"text->image", "image->text"}
    last = df[df["step"] == 20].set_index(["direction", "part"])["nll"]
    assert last[("text->image", "[REF]")] == 2.0 and last[("image->text", "[GEN]")] == 1.5
    assert len(plot_loss_curves(df).axes) == 2
    fig = image_grid_figure([torch.zeros(3, 3, 8, 8)] * 2, ["a", "b"], 3)
    assert fig.axes[3].get_title(loc="left") == "a"  # row 1 under the header row
    headers = [t.get_text() for ax in fig.axes[:3] for t in ax.texts]
    assert headers[0] == "real image" and headers[1].startswith("generated #1")


def test_notebook_02_outputs_on_ci(ci_outputs):
    cfg = ci_outputs
    res = json.loads((cfg.reports_root / "results" / "02_biart.json").read_text())
    assert res["steps"] == cfg.biart_train.steps and res["test_images_captioned"] == cfg.data.n_test
    assert all(v is not None and v > 0 for v in res["final_nll"].values())
    log = pd.read_csv(cfg.runs_root / "logs" / "biart.csv")
    assert log["step"].iloc[-1] == cfg.biart_train.steps
    assert (cfg.reports_root / "figures" / "02_biart_image_examples.png").exists()


def test_biart_train_cli_resumes_finished_run(ci_outputs):
    """``python -m lverse_core.training.biart_train`` (the torchrun entry) finds the finished checkpoint and stops there."""
    cfg = ci_outputs
    before = torch.load(cfg.runs_root / "biart.pt", weights_only=True)["step"]
    done = subprocess.run([sys.executable, "-m", "lverse_core.training.biart_train", "--profile", "ci"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(cfg.runs_root / "biart.pt", weights_only=True)["step"] == before == cfg.biart_train.steps


