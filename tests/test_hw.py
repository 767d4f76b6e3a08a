"""Checks on the real bench. Skipped unless PRIVLENS_HW=1; PRIVLENS_RIG_CONFIG names the rig
config (``rig config --out rig.yaml``, then set every backend to ``real``)."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.hw


@pytest.fixture(scope="module")
def rig():
    from hardware.config import load_rig_config
    from hardware.rig import Rig

    cfg = load_rig_config(os.environ.get("PRIVLENS_RIG_CONFIG"))
    assert not cfg.any_sim, "PRIVLENS_HW=1 expects a rig config with every backend 'real'"
    with Rig(cfg, prompt=lambda msg: None) as r:
        yield r


def test_mirror_limits_and_flat(rig):
    m = rig.mirror
    assert m.segment_count == 40 and m.voltage_max_v > m.voltage_min_v
    m.relax()
    v = m.get_voltages()
    assert np.all((v >= m.voltage_min_v) & (v <= m.voltage_max_v))


def test_pair_capture(rig):
    pair = rig.capture()
    assert pair.privacy.image.ndim == 3 and pair.reference is not None
    assert abs(pair.skew_s) < 0.5
