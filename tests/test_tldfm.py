"""The real ctypes backend (hardware/tldfm.py) against the fake TLDFM/TLDFMX C library.

The fake (hardware/sim/fake_tldfm.c) is compiled once per session with gcc; the backend and
the test's FakeMirrorControl load the same file, so they share the fake device's state.
"""

import ctypes
import gc
import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.devices import DeviceError, DeviceLimitError
from hardware.mirror_modes import DEVICE_MODES
from hardware.sim import fake_tldfm
from hardware.sim.fake_tldfm import (
    DEFAULT_HIDDEN,
    FakeError,
    FakeMirrorControl,
    HiddenMirror,
    build_fake_tldfm,
)
from hardware.tldfm import (
    TLDFM_ERROR_EXTERNAL_PWR,
    TLDFM_ERROR_USBCOMM,
    VI_ERROR,
    TLDFMMirror,
    status_hex,
)
from optics.zernike import nm_to_noll, noll_to_nm, pupil_polar_grid, zernike

RESOURCE = "USB0::0x1313::0x8016::M00000000::RAW"


@pytest.fixture(scope="session")
def lib_path(tmp_path_factory):
    return build_fake_tldfm(tmp_path_factory.mktemp("fake_tldfm"))


@pytest.fixture
def fake(lib_path):
    ctl = FakeMirrorControl(lib_path)
    ctl.restore_defaults()
    yield ctl
    ctl.restore_defaults()


@pytest.fixture
def mirror(fake, lib_path):
    m = TLDFMMirror(lib_path)
    yield m
    m._release(raise_errors=False)


def _expected_pattern(fake, amplitudes, state):
    """v = v_flat + gain P a, recomputed here from the documented layout and gain rule."""
    rho, theta = fake.segment_layout()
    p = np.stack([zernike(nm_to_noll(m.n, m.m), rho, theta) for m in DEVICE_MODES], axis=1)
    gain = 0.8 * (state.voltage_max_v - state.voltage_min_v) / 2 / np.abs(p).max()
    return state.voltage_flat_v + gain * p @ np.asarray(amplitudes, float), gain


# ---- build -------------------------------------------------------------------------------
def test_build_is_cached_by_source_hash_and_respects_privlens_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVLENS_HOME", str(tmp_path / "home"))
    first = build_fake_tldfm()
    assert first.parent == tmp_path / "home" / "build"
    assert first.name.startswith("libfake_tldfm-") and first.suffix == ".so"
    mtime = first.stat().st_mtime_ns
    assert build_fake_tldfm() == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp files left


def test_build_without_gcc_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_tldfm.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="gcc not found") as err:
        build_fake_tldfm(tmp_path)
    assert "\n" not in str(err.value)


# ---- open, limits, discovery -------------------------------------------------------------
def test_init_reads_limits_from_the_library(fake, lib_path):
    with TLDFMMirror(lib_path) as m:
        assert (m.segment_count, m.n_modes) == (40, 12)
        assert (m.voltage_min_v, m.voltage_max_v) == (0.0, 300.0)
        assert (m.amplitude_min, m.amplitude_max) == (-1.0, 1.0)
        assert m.resource == RESOURCE and m.info["name"] == "DMH40/M"
        assert fake.state().is_open
    assert not fake.state().is_open
    fake.set_voltage_range(-20.0, 120.0)
    with TLDFMMirror(lib_path, resource=RESOURCE) as m:
        assert (m.voltage_min_v, m.voltage_max_v) == (-20.0, 120.0)
        with pytest.raises(DeviceLimitError):
            m.set_voltages(np.full(40, 150.0))
        m.set_voltages(np.full(40, -10.0))
        assert np.allclose(fake.state().voltages_v, -10.0)
        v = m.set_zernike(np.zeros(12))
        assert np.allclose(v, 50.0)  # flat = mid-range of the new supply
    assert fake.state().rejected_voltage_requests == 0


def test_voltage_range_can_only_change_while_closed(fake, mirror):
    with pytest.raises(FakeError):
        fake.set_voltage_range(0.0, 200.0)


def test_discovery_errors(fake, lib_path):
    fake.set_device_count(0)
    with pytest.raises(DeviceError, match="no Thorlabs deformable mirror"):
        TLDFMMirror(lib_path)
    fake.set_device_count(1)
    with pytest.raises(DeviceError, match="'USB0::nope' not found"):
        TLDFMMirror(lib_path, resource="USB0::nope")
    with TLDFMMirror(lib_path):
        with pytest.raises(DeviceError, match="all in use"):
            TLDFMMirror(lib_path)
        with pytest.raises(DeviceError, match=r"TLDFMX_init failed: .*in use"):
            TLDFMMirror(lib_path, resource=RESOURCE)


def test_reset_at_open_puts_segments_at_minimum(fake, lib_path):
    with TLDFMMirror(lib_path) as m:
        m.set_zernike(np.zeros(12))
    with TLDFMMirror(lib_path) as m:  # no reset: the device keeps its voltages
        assert np.allclose(m.get_voltages(), 150.0)
    with TLDFMMirror(lib_path, reset=True) as m:
        assert np.allclose(m.get_voltages(), 0.0)


# ---- every status path -------------------------------------------------------------------
OPEN_FUNCTIONS = ["TLDFM_get_device_count", "TLDFM_get_device_information", "TLDFMX_init",
                  "TLDFM_get_device_configuration", "TLDFMX_get_parameters",
                  "TLDFM_enable_hysteresis_compensation"]


@pytest.mark.parametrize("function", OPEN_FUNCTIONS)
def test_fault_at_open_raises_with_thorlabs_text_and_releases(fake, lib_path, function):
    fake.inject_fault(TLDFM_ERROR_EXTERNAL_PWR, function=function)
    with pytest.raises(DeviceError) as err:
        TLDFMMirror(lib_path)
    msg = str(err.value)
    assert function in msg and "No external power supply" in msg
    assert status_hex(TLDFM_ERROR_EXTERNAL_PWR) in msg
    assert not fake.state().is_open  # a half-open session was closed again
    TLDFMMirror(lib_path).close()  # and the device can be opened afterwards


OPERATIONS = {
    "set_voltages": ("TLDFM_set_segment_voltages", lambda m: m.set_voltages(np.full(40, 100.0))),
    "get_voltages": ("TLDFM_get_segment_voltages", lambda m: m.get_voltages()),
    "zernike_calc": ("TLDFMX_calculate_zernike_pattern", lambda m: m.set_zernike(np.zeros(12))),
    "zernike_apply": ("TLDFM_set_segment_voltages", lambda m: m.set_zernike(np.zeros(12))),
    "relax": ("TLDFMX_relax", lambda m: m.relax()),
    "relax_apply": ("TLDFM_set_segment_voltages", lambda m: m.relax()),
    "hysteresis": ("TLDFM_enable_hysteresis_compensation",
                   lambda m: m.enable_hysteresis_compensation("mirror")),
    "hysteresis_params": ("TLDFM_set_hysteresis_parameters",
                          lambda m: m.set_hysteresis_parameters("mirror", 0.5, [1, 2], [3, 4])),
    "self_test": ("TLDFM_self_test", lambda m: m.self_test()),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_fault_in_operation_raises_with_thorlabs_text(fake, mirror, op):
    function, action = OPERATIONS[op]
    before = fake.state().voltages_v
    fake.inject_fault(TLDFM_ERROR_USBCOMM, function=function)
    with pytest.raises(DeviceError, match=rf"{function} failed: USB communication error"):
        action(mirror)
    if op != "relax_apply":  # (a failed apply leaves the device as it was)
        np.testing.assert_array_equal(fake.state().voltages_v, before)
    action(mirror)  # one-shot fault: the next call works


def test_fault_mid_relax_then_relax_restarts(fake, mirror):
    fake.inject_fault(TLDFM_ERROR_EXTERNAL_PWR, after_n_calls=3, function="TLDFMX_relax")
    with pytest.raises(DeviceError, match="TLDFMX_relax failed"):
        mirror.relax()
    assert fake.state().relax_count == 0
    assert mirror.relax() == 10
    assert fake.state().relax_count == 1


def test_unknown_status_code_still_raises(fake, mirror):
    code = VI_ERROR + 0x1234
    fake.inject_fault(code)
    with pytest.raises(DeviceError, match=r"Unknown status code 0x80001234"):
        mirror.get_voltages()


def test_fault_at_close_still_forgets_the_session(fake, lib_path):
    m = TLDFMMirror(lib_path)
    fake.inject_fault(TLDFM_ERROR_EXTERNAL_PWR, function="TLDFMX_close")
    with pytest.raises(DeviceError, match="TLDFMX_close failed"):
        m.close()
    assert not m.is_open
    m.close()  # idempotent


def test_warning_status_is_logged_not_raised(mirror, fake, caplog):
    with caplog.at_level(logging.WARNING, logger="hardware.tldfm"):
        mirror.enable_hysteresis_compensation("both")
    assert "no tilt arms" in caplog.text
    with pytest.raises(DeviceError, match="not supported by this device"):
        mirror.enable_hysteresis_compensation("tilt")
    with pytest.raises(ValueError, match="target must be one of"):
        mirror.enable_hysteresis_compensation("arms")


# ---- voltages, Zernike, surface ----------------------------------------------------------
def test_set_get_voltages_round_trip(fake, mirror):
    rng = np.random.default_rng(0)
    v = rng.uniform(0.0, 300.0, 40)
    applied = mirror.set_voltages(v)
    np.testing.assert_array_equal(applied, v)
    np.testing.assert_array_equal(mirror.get_voltages(), v)
    np.testing.assert_array_equal(fake.state().voltages_v, v)


def test_out_of_range_voltages_refused_or_clipped(fake, mirror, caplog):
    mirror.set_voltages(np.full(40, 100.0))
    bad = np.full(40, 100.0)
    bad[[3, 17]] = [-5.0, 301.0]
    with pytest.raises(DeviceLimitError, match="2 segment voltage"):
        mirror.set_voltages(bad)
    assert np.allclose(fake.state().voltages_v, 100.0)
    with caplog.at_level(logging.WARNING):
        applied = mirror.set_voltages(bad, clip=True)
    assert "clipped" in caplog.text
    assert applied[3] == 0.0 and applied[17] == 300.0
    np.testing.assert_array_equal(fake.state().voltages_v, applied)
    assert fake.state().rejected_voltage_requests == 0


def test_set_zernike_gives_the_documented_pattern(fake, mirror):
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.2, 0.2, 12)
    v = mirror.set_zernike(a)
    state = fake.state()
    expected, gain = _expected_pattern(fake, a, state)
    np.testing.assert_allclose(v, expected, atol=1e-9)
    np.testing.assert_allclose(state.voltages_v, expected, atol=1e-9)
    assert state.gain_v == pytest.approx(gain)
    np.testing.assert_array_equal(mirror.amplitudes, a)
    rho, theta = fake.segment_layout()  # the documented ring layout
    assert np.allclose(sorted(set(np.round(rho, 6))), [0.22, 0.53, 0.84])
    assert [int(np.sum(np.isclose(rho, r))) for r in (0.22, 0.53, 0.84)] == [4, 12, 24]


def test_single_modes_fit_the_range_but_combinations_can_exceed_it(fake, mirror):
    for k in range(12):
        for sign in (-1.0, 1.0):
            a = np.zeros(12)
            a[k] = sign
            v = mirror.set_zernike(a)
            assert v.min() >= 0.0 and v.max() <= 300.0
    mirror.set_zernike(np.zeros(12))
    before = fake.state().voltages_v
    a = np.array([1.0, 1.0, 1.0, 0, 0, 0, 0, 0, 0, 1.0, 1.0, 1.0])
    with pytest.raises(DeviceLimitError, match="outside the range"):
        mirror.set_zernike(a)
    np.testing.assert_array_equal(fake.state().voltages_v, before)
    v = mirror.set_zernike(a, clip=True)
    assert v.min() >= 0.0 and v.max() <= 300.0
    assert (v == 300.0).any() or (v == 0.0).any()
    assert fake.state().rejected_voltage_requests == 0


def test_out_of_range_amplitudes_never_reach_the_library(fake, mirror):
    with pytest.raises(DeviceLimitError, match="mode amplitude"):
        mirror.set_zernike(np.full(12, 1.5))
    with pytest.raises(DeviceLimitError, match="expected 12"):
        mirror.set_zernike(np.zeros(11))
    v = mirror.set_zernike(np.r_[1.5, np.zeros(11)], clip=True)
    np.testing.assert_allclose(mirror.amplitudes, np.r_[1.0, np.zeros(11)])
    np.testing.assert_allclose(v, _expected_pattern(fake, mirror.amplitudes, fake.state())[0])
    assert fake.state().rejected_amplitude_requests == 0


def test_surface_is_D_times_amplitudes(fake, mirror):
    rng = np.random.default_rng(2)
    for _ in range(5):
        a = rng.uniform(-0.25, 0.25, 12)
        mirror.set_zernike(a)
        np.testing.assert_allclose(fake.surface_noll_um(), DEFAULT_HIDDEN.matrix() @ a,
                                   atol=1e-9)
    other = HiddenMirror(scales_um=tuple(np.linspace(0.3, 1.2, 12)), signs=(-1,) + (1,) * 11,
                         rotation_deg=-10.0)
    fake.set_mode_map(other)
    np.testing.assert_allclose(fake.surface_noll_um(), other.matrix() @ a, atol=1e-9)
    fake.set_mode_map(np.eye(15, 12, k=-3))  # a plain matrix works too
    np.testing.assert_allclose(fake.surface_noll_um(), np.eye(15, 12, k=-3) @ a, atol=1e-9)
    with pytest.raises(ValueError):
        fake.set_mode_map(np.zeros((12, 15)))


def test_surface_follows_raw_voltages_too(fake, mirror):
    # a single poked segment is not a pure mode: the surface is the least-squares fit
    v = np.full(40, 150.0)
    v[20] = 200.0
    mirror.set_voltages(v)
    rho, theta = fake.segment_layout()
    p = np.stack([zernike(nm_to_noll(m.n, m.m), rho, theta) for m in DEVICE_MODES], axis=1)
    a_eff = np.linalg.lstsq(p, (v - 150.0) / fake.state().gain_v, rcond=None)[0]
    np.testing.assert_allclose(fake.surface_noll_um(), DEFAULT_HIDDEN.matrix() @ a_eff,
                               atol=1e-9)


def test_relax_runs_to_the_end_and_leaves_the_mirror_flat(fake, mirror):
    mirror.set_zernike(np.full(12, 0.1))
    writes = fake.state().voltage_writes
    assert mirror.relax() == 10
    state = fake.state()
    assert state.voltage_writes - writes == 10
    assert state.relax_count == 1 and not state.relax_active
    np.testing.assert_allclose(state.voltages_v, 150.0)
    np.testing.assert_allclose(fake.surface_noll_um(), 0.0, atol=1e-12)
    np.testing.assert_array_equal(mirror.amplitudes, np.zeros(12))


def test_relax_patterns_decay_and_alternate(lib_path, fake, mirror):
    lib = ctypes.CDLL(str(lib_path))
    buf, arms, rem = (ctypes.c_double * 40)(), (ctypes.c_double * 1)(), ctypes.c_int32()
    offsets, first = [], 1
    while True:
        assert lib.TLDFMX_relax(ctypes.c_uint32(mirror._handle), 0, first, 0, buf, arms,
                                ctypes.byref(rem)) == 0
        first = 0
        offsets.append(buf[0] - 150.0)
        if rem.value == 0:
            break
    assert len(offsets) == 10 and offsets[-1] == 0.0
    assert all(np.sign(offsets[i]) == -np.sign(offsets[i + 1]) for i in range(8))
    assert all(abs(offsets[i + 1]) < abs(offsets[i]) for i in range(9))
    # without a first step there is no sequence to continue
    assert lib.TLDFMX_relax(ctypes.c_uint32(mirror._handle), 0, 0, 0, buf, arms,
                            ctypes.byref(rem)) < 0


def test_hysteresis_calls_reach_the_device(fake, lib_path):
    with TLDFMMirror(lib_path, hysteresis=False) as m:
        assert not fake.state().hysteresis_mirror
        m.enable_hysteresis_compensation("mirror")
        assert fake.state().hysteresis_mirror
        m.set_hysteresis_parameters("mirror", 0.3, [10.0, 20.0, 30.0], [0.1, 0.2, 0.3])
        assert fake.state().hysteresis_points == 3
        with pytest.raises(DeviceError, match="TLDFM_set_hysteresis_parameters failed"):
            m.set_hysteresis_parameters("mirror", 0.3, np.zeros(17), np.zeros(17))
        assert m.self_test()[0] == 0


def test_close_is_idempotent_and_the_context_manager_and_finaliser_close(fake, lib_path):
    with TLDFMMirror(lib_path) as m:
        assert m.is_open
    assert not fake.state().is_open
    m.close()
    with pytest.raises(DeviceError, match="closed"):
        m.get_voltages()
    m = TLDFMMirror(lib_path)
    del m
    gc.collect()
    assert not fake.state().is_open


# ---- the fake enforces its own limits (so the counters below mean something) -------------
def test_fake_refuses_and_counts_out_of_range_requests(lib_path, fake, mirror):
    lib = ctypes.CDLL(str(lib_path))
    h = ctypes.c_uint32(mirror._handle)
    lib.TLDFM_set_segment_voltage.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_double]
    assert lib.TLDFM_set_segment_voltage(h, 40, 100.0) < 0  # bad index: not counted
    assert lib.TLDFM_set_segment_voltage(h, 3, 300.5) < 0
    assert lib.TLDFM_set_segment_voltage(ctypes.c_uint32(12345), 3, 100.0) < 0  # bad handle
    bad = (ctypes.c_double * 40)(*([100.0] * 39 + [math.nan]))
    assert lib.TLDFM_set_segment_voltages(h, bad) < 0
    amps, out = (ctypes.c_double * 12)(*([0.0] * 11 + [1.01])), (ctypes.c_double * 40)()
    assert lib.TLDFMX_calculate_zernike_pattern(h, 0xFFF, amps, out) < 0
    assert lib.TLDFMX_calculate_zernike_pattern(h, 0x7FF, amps, out) == 0  # Z15 not selected
    state = fake.state()
    assert state.rejected_voltage_requests == 2
    assert state.rejected_amplitude_requests == 1
    msg = ctypes.create_string_buffer(512)
    lib.TLDFM_error_message(h, VI_ERROR + 0x3FFF000E, msg)
    assert b"session" in msg.value


# ---- property: nothing out of range ever reaches the library -----------------------------
_any_float = st.one_of(st.floats(-400.0, 700.0), st.floats(allow_nan=True, allow_infinity=True))
_any_amp = st.one_of(st.floats(-1.0, 1.0), st.floats(-3.0, 3.0),
                     st.floats(allow_nan=True, allow_infinity=True))


def test_no_out_of_range_request_ever_reaches_the_library(fake, mirror, caplog):
    caplog.set_level(logging.ERROR, logger="hardware.devices")  # silence "clipped" warnings
    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(v=st.one_of(st.lists(_any_float, min_size=40, max_size=40),
                       st.lists(_any_float, max_size=45)),
           clip=st.booleans())
    def voltages(v, clip):
        finite = len(v) == 40 and all(math.isfinite(x) for x in v)
        try:
            applied = mirror.set_voltages(v, clip=clip)
        except DeviceLimitError:
            assert not (clip and finite)
            return
        assert applied.min() >= 0.0 and applied.max() <= 300.0
        np.testing.assert_array_equal(fake.state().voltages_v, applied)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(a=st.one_of(st.lists(_any_amp, min_size=12, max_size=12),
                       st.lists(_any_amp, max_size=14)),
           scale=st.sampled_from([1.0, 1e6, 1e300]), clip=st.booleans())
    def amplitudes(a, scale, clip):
        a = [x * scale if x < -1 or x > 1 else x for x in a]  # huge stays huge
        finite = len(a) == 12 and all(math.isfinite(x) for x in a)
        try:
            applied = mirror.set_zernike(a, clip=clip)
        except DeviceLimitError:
            assert not (clip and finite)
            return
        assert applied.min() >= 0.0 and applied.max() <= 300.0
        np.testing.assert_array_equal(fake.state().voltages_v, applied)

    voltages()
    amplitudes()
    state = fake.state()
    assert state.rejected_voltage_requests == 0
    assert state.rejected_amplitude_requests == 0
    assert state.voltage_writes > 20  # the property test really drove the device


# ---- the hidden response -----------------------------------------------------------------
def test_default_hidden_matches_the_library_default(fake):
    np.testing.assert_array_equal(fake.mode_map(), DEFAULT_HIDDEN.matrix())
    assert all(0.3 <= s <= 1.2 for s in DEFAULT_HIDDEN.scales_um)
    assert DEFAULT_HIDDEN.signs.count(-1) == 2
    assert 0 < abs(DEFAULT_HIDDEN.rotation_deg) < 15


def test_rotation_convention_against_a_rotated_sampled_surface():
    """HiddenMirror(rotation_deg=phi) column k = Noll expansion of Z_k(rho, theta - phi),
    the nominal shape turned counter-clockwise by phi."""
    phi_deg = 17.0
    hidden = HiddenMirror(scales_um=(1.0,) * 12, signs=(1,) * 12, rotation_deg=phi_deg)
    d = hidden.matrix()
    rho, theta = pupil_polar_grid(96, xp=np)
    inside = rho <= 1
    basis = np.stack([zernike(j, rho, theta)[inside] for j in range(1, 16)], axis=1)
    for k, mode in enumerate(DEVICE_MODES):
        rotated = zernike(mode.noll, rho, theta - math.radians(phi_deg))[inside]
        coeffs = np.linalg.lstsq(basis, rotated, rcond=None)[0]
        np.testing.assert_allclose(coeffs, d[:, k], atol=1e-9, err_msg=mode.label)
    # explicit sign: Ast0 (cos 2 theta) turned by +45 deg is +Ast45 (sin 2 theta)
    d45 = HiddenMirror((1.0,) * 12, (1,) * 12, 45.0).matrix()
    z6 = [m.label for m in DEVICE_MODES].index("Z6")
    assert noll_to_nm(6) == (2, 2) and d45[5 - 1, z6] == pytest.approx(1.0)
    assert d45[6 - 1, z6] == pytest.approx(0.0, abs=1e-12)


def test_hidden_mirror_scale_and_sign_and_validation():
    hidden = HiddenMirror(scales_um=tuple(0.1 * (k + 1) for k in range(12)),
                          signs=(1, -1) * 6, rotation_deg=0.0)
    d = hidden.matrix()
    for k, mode in enumerate(DEVICE_MODES):
        col = np.zeros(15)
        col[mode.noll - 1] = 0.1 * (k + 1) * (1, -1)[k % 2]
        np.testing.assert_allclose(d[:, k], col, atol=1e-15)
    with pytest.raises(ValueError):
        HiddenMirror((1.0,) * 11, (1,) * 12)
    with pytest.raises(ValueError):
        HiddenMirror((1.0,) * 11 + (-0.5,), (1,) * 12)
    with pytest.raises(ValueError):
        HiddenMirror((1.0,) * 12, (1,) * 11 + (0,))
