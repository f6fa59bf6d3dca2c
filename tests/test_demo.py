"""``make demo``'s pipeline at a smaller size: every job succeeds and the results match truth."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryokube.operator.local import demo


@pytest.mark.slow
def test_small_demo_recovers_the_truth(tmp_path: Path) -> None:
    out = io.StringIO()
    code, result = demo.run_demo(state=tmp_path / "state", size="small", slots=1, out=out)
    assert code == 0, out.getvalue()
    assert "against the truth of the simulation" in out.getvalue()
    assert result is not None
    # the bars: global motion under 0.2 px RMS, picking precision and recall >= 0.9
    # (0.07 px, 0.1 % and 1.00 / 1.00 measured)
    assert result.drift_rms_error_px < 0.2
    assert result.defocus_mean_error_percent < 2.0
    assert result.pick_recall >= 0.9
    assert result.pick_precision >= 0.9
    # 64 particles in a 40 px box at 2.5 A/px. The map, superposed on the truth, must resemble
    # it (0.77 measured; an inverted-contrast map scores about 0.4). The gold-standard figure
    # only has to be a real one (box/2 would be 100 A): with so few particles a small change in
    # the data moves its 0.143 crossing between 11 and 20 A.
    assert result.map_truth_correlation > 0.65
    assert result.final_resolution_A <= 25.0
