import matplotlib.pyplot as plt
import numpy as np
import pytest

from utils.plotting import bar, heatmap, lines
from utils.stats import bootstrap_ci, fmt_ci, wilson_ci


def test_bootstrap_ci_brackets_mean():
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    m, lo, hi = bootstrap_ci(x)
    assert lo < m < hi and lo < 1.0 < hi and hi - lo < 0.4
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_wilson_ci():
    p, lo, hi = wilson_ci(50, 100)
    assert p == 0.5 and lo == pytest.approx(0.404, abs=1e-3) and hi == pytest.approx(0.596, abs=1e-3)
    p, lo, hi = wilson_ci(0, 20)
    assert p == 0 and lo == 0 and 0.1 < hi < 0.2
    assert fmt_ci(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"


def test_plots_render_to_png(tmp_path):
    for fig in (heatmap(np.random.rand(3, 4), title="h", xticks=list("abcd")), bar([1, 2], ["a", "b"], errors=[0.1, 0.2], hline=1),
                lines({"x": [1, 2, 3]}, bands={"x": ([0, 1, 2], [2, 3, 4])}, hline=0)):
        path = tmp_path / "f.png"
        fig.savefig(path)
        assert path.stat().st_size > 1000
        plt.close(fig)
