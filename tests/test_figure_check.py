"""The figure check the notebook tests use (tests/_figures.py) fails on what a file-size check let through."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lverse_core.config import load_profile  # noqa: E402
from lverse_core.report import save_figure  # noqa: E402
from tests._figures import assert_figure_shows, figure_panels  # noqa: E402


@pytest.fixture
def cfg(tmp_path):
    return load_profile("ci", reports_dir=str(tmp_path / "reports"))


def test_a_figure_with_two_drawn_panels_passes_and_records_them(cfg):
    fig, (a, b) = plt.subplots(1, 2, figsize=(4, 2))
    a.plot(np.arange(10), np.arange(10) ** 2)
    a.set_title("loss")
    b.imshow(np.random.default_rng(0).random((8, 8)))
    path = save_figure(cfg, "two", fig)
    plt.close(fig)
    shown = assert_figure_shows(path, panels=2)
    assert [p["title"] for p in shown] == ["loss", ""] and all(p["drawn"] >= 1 for p in shown)


def test_a_blank_figure_fails(cfg):
    fig = plt.figure(figsize=(3, 3))
    path = save_figure(cfg, "blank", fig)
    plt.close(fig)
    assert figure_panels(path) == []
    with pytest.raises(AssertionError, match="distinct colours|one colour"):
        assert_figure_shows(path)


def test_an_empty_panel_beside_a_drawn_one_fails_but_a_spare_grid_slot_turned_off_does_not(cfg):
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(6, 2))
    a.plot([0, 1], [1, 0])
    c.axis("off")  # a spare slot of an image grid
    path = save_figure(cfg, "half", fig)
    plt.close(fig)
    assert len(figure_panels(path)) == 2
    with pytest.raises(AssertionError, match="draw nothing"):
        assert_figure_shows(path)


def test_the_panel_count_is_checked(cfg):
    fig, a = plt.subplots(figsize=(3, 2))
    a.bar(["x", "y"], [1, 2])
    path = save_figure(cfg, "one", fig)
    plt.close(fig)
    assert_figure_shows(path, panels=1)
    with pytest.raises(AssertionError, match="1 panels, expected 2"):
        assert_figure_shows(path, panels=2)


def test_colour_counts_are_those_of_a_row_unique():
    from tests._figures import colour_counts

    rng = np.random.default_rng(0)
    px = rng.integers(0, 4, (5000, 3), dtype=np.uint8) * np.array([85, 1, 64], dtype=np.uint8)  # 64 colours
    rows, row_counts = np.unique(px, axis=0, return_counts=True)
    packed, counts = colour_counts(px)
    assert len(packed) == len(rows) == 64
    assert packed.tolist() == [int(r) << 16 | int(g) << 8 | int(b) for r, g, b in rows]
    assert counts.tolist() == row_counts.tolist()
