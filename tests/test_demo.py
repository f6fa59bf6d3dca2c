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
    assert result.drift_rms_error_px < 0.5
    assert result.defocus_mean_error_percent < 5.0
    assert result.pick_recall >= 0.8
    assert result.pick_precision >= 0.6
    # 150-odd particles in a 40 px box at 2.5 A/px: the gold-standard map is far from
    # Nyquist (5 A) but must be a real reconstruction, not noise (box/2 would be 100 A).
    assert result.final_resolution_A < 20.0
