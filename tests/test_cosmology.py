"""Tests of tfp_massmap.cosmology: the C_ℓ grid over (Ωm, σ8), the shift, the labels."""

import importlib.resources
import re

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lognormal

FIDUCIAL = (cosmology.FIDUCIAL_OMEGA_M, cosmology.FIDUCIAL_SIGMA8)
(OM_LOW, OM_HIGH), (S8_LOW, S8_HIGH) = cosmology.COSMO_PARAMETER_BOUNDS


def _data_file(name):
  return importlib.resources.files('tfp_massmap').joinpath('data', name)


def test_fiducial_constants_are_the_shipped_tables_cosmology():
  header = _data_file('cl_kappa_cosmos.txt').read_text(encoding='utf-8')
  assert f'Omega_m={cosmology.FIDUCIAL_OMEGA_M},' in header
  assert f'sigma8={cosmology.FIDUCIAL_SIGMA8},' in header
  assert OM_LOW < FIDUCIAL[0] < OM_HIGH and S8_LOW < FIDUCIAL[1] < S8_HIGH


def test_grid_spans_exactly_the_prior_range_and_holds_the_fiducial_nodes():
  with np.load(_data_file('cl_kappa_grid.npz').open('rb')) as grid:
    omega_m, sigma8 = grid['omega_m'], grid['sigma8']
    provenance = str(grid['provenance'])
  assert (omega_m[0], omega_m[-1]) == (OM_LOW, OM_HIGH)
  assert (sigma8[0], sigma8[-1]) == (S8_LOW, S8_HIGH)
  assert FIDUCIAL[0] in omega_m and FIDUCIAL[1] in sigma8
  assert re.search(r'CAMB [0-9.]+ linear P\(k\), halofit', provenance)


def test_grid_reproduces_the_shipped_table_at_the_fiducial_cosmology():
  ell, cl = cosmology.convergence_cl(*FIDUCIAL)
  ell_table, cl_table = cosmology.cosmos_convergence_cl()
  np.testing.assert_allclose(ell, ell_table, rtol=1e-8)  # table: 9 digits
  # Same pyccl model and node; only the float32 storage of log C_ell differs.
  np.testing.assert_allclose(cl, cl_table, rtol=5e-6)


@pytest.mark.parametrize('theta, ell_index, expected', [
    # scripts/make_cl_table.convergence_cl (pyccl 3.3.6, CAMB 2.0.5, halofit)
    # at points off the grid's nodes, ℓ = 10, 101, 1023, 10353, 1e5.
    ((0.25, 0.7), [0, 50, 100, 150, 199], [3.467468e-08, 5.652354e-09, 2.239232e-10, 6.434910e-12,
      5.200318e-14]),
    ((0.37, 0.93), [0, 50, 100, 150, 199], [5.341163e-08, 1.452414e-08, 9.035254e-10, 2.176569e-11,
      1.497809e-13]),
])
def test_interpolation_matches_pyccl_off_the_grid(theta, ell_index, expected):
  _, cl = cosmology.convergence_cl(*theta)
  np.testing.assert_allclose(cl[ell_index], expected, rtol=1e-3)


def test_cl_scales_close_to_sigma8_squared_at_fixed_omega_m():
  ell, low = cosmology.convergence_cl(0.3, 0.7)
  _, high = cosmology.convergence_cl(0.3, 0.9)
  ratio = (high / low) / (0.9 / 0.7)**2
  # In linear theory C_ell ∝ σ8² exactly. It is not exact here because
  # halofit changes the power even on the largest scales a little, and
  # ℓ ≤ 30 still takes some nonlinear k from the lowest source redshifts:
  # 0.2 % measured, 0.3 % allowed.
  np.testing.assert_allclose(ratio[ell <= 30], 1.0, atol=3e-3)
  # Quasi-linear scales grow faster than σ8² (about σ8^2.9 at ℓ ≈ 1000) and
  # the deep one-halo regime slower (about σ8^1.7 at ℓ = 1e5), as in halofit.
  assert ratio[(ell >= 300) & (ell <= 3000)].max() > 1.2
  assert ratio[-1] < 0.95


def test_cl_grows_with_sigma8_everywhere_and_with_omega_m_above_ell_40():
  ell, base = cosmology.convergence_cl(0.3, 0.8)
  assert np.all(cosmology.convergence_cl(0.3, 0.82)[1] > base)
  # At fixed σ8 a larger Ωm moves the matter spectrum's turnover to smaller
  # scales, so the largest scales (ℓ ≲ 30) lose power while the lensing
  # efficiency (∝ Ωm) raises it everywhere else.
  more_matter = cosmology.convergence_cl(0.32, 0.8)[1]
  assert np.all(more_matter[ell >= 40] > base[ell >= 40])
  assert more_matter[0] < base[0]


def test_shift_is_cosmos_shift_at_the_fiducial_and_scales_as_omega_m_to_0_8():
  assert cosmology.lognormal_shift(*FIDUCIAL) == cosmology.COSMOS_SHIFT
  assert cosmology.lognormal_shift(FIDUCIAL[0], S8_LOW) == cosmology.COSMOS_SHIFT
  np.testing.assert_allclose(
      cosmology.lognormal_shift(OM_HIGH, 0.7) /
      cosmology.lognormal_shift(OM_LOW, 0.7), 2.0**0.8, rtol=1e-12)
  np.testing.assert_allclose(
      [cosmology.lognormal_shift(OM_LOW, 0.8),
       cosmology.lognormal_shift(OM_HIGH, 0.8)], [0.02472, 0.04304], atol=1e-5)


@pytest.mark.parametrize('omega_m, sigma8', [
    (OM_LOW, S8_LOW), (OM_LOW, S8_HIGH), (OM_HIGH, S8_LOW), (OM_HIGH, S8_HIGH)])
def test_every_corner_of_the_range_makes_a_valid_demo_field(omega_m, sigma8):
  ell, cl = cosmology.convergence_cl(omega_m, sigma8)
  shift = cosmology.lognormal_shift(omega_m, sigma8)
  field = lognormal.LognormalField(shift, 128, 0.8, ell=ell, cl=cl,
                                   dtype=tf.float64)
  assert field.clipped_fraction < 1e-3
  # Skewness = 3 (σ/λ) + (σ/λ)³ (lognormal.one_point_moments): more
  # non-Gaussian at high σ8, between nearly Gaussian and N-body-like values.
  assert 0.5 < field.skewness < 6.0


def test_fiducial_field_skewness_is_unchanged():
  ell, cl = cosmology.convergence_cl(*FIDUCIAL)
  field = lognormal.LognormalField(cosmology.lognormal_shift(*FIDUCIAL), 128,
                                   0.8, ell=ell, cl=cl, dtype=tf.float64)
  assert field.skewness == pytest.approx(2.3, abs=0.05)  # module docstring


@pytest.mark.parametrize('omega_m, sigma8, match', [
    (0.19, 0.8, r'omega_m=0\.19 is outside .*\[0\.2, 0\.4\]'),
    (0.3, 1.01, r'sigma8=1\.01 is outside .*\[0\.6, 1\.0\]'),
    (float('nan'), 0.8, 'omega_m=nan is outside'),
    (0.3, float('inf'), 'sigma8=inf is outside'),
    ('0.3', 0.8, 'omega_m must be a real number'),
    (0.3, True, 'sigma8 must be a real number'),
])
@pytest.mark.parametrize('function', [cosmology.convergence_cl,
                                      cosmology.lognormal_shift])
def test_values_outside_the_grid_are_refused(function, omega_m, sigma8, match):
  with pytest.raises(ValueError, match=match):
    function(omega_m, sigma8)


def test_range_bounds_are_accepted():
  for theta in [(OM_LOW, S8_LOW), (OM_HIGH, S8_HIGH), (np.float32(0.3), 0.8)]:
    _, cl = cosmology.convergence_cl(*theta)
    assert np.all(np.isfinite(cl)) and np.all(cl > 0)


def test_cosmo_labels_are_uniform_in_the_range_and_reproducible():
  theta = np.array([cosmology.cosmo_kappa_parameters(s) for s in range(2000)])
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  assert np.all(theta >= bounds[:, 0]) and np.all(theta <= bounds[:, 1])
  u = (theta - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0])
  # Uniform: mean 1/2 and variance 1/12 within about 5 standard errors.
  np.testing.assert_allclose(u.mean(axis=0), 0.5, atol=0.035)
  np.testing.assert_allclose(u.var(axis=0), 1 / 12, atol=0.01)
  assert abs(np.corrcoef(u.T)[0, 1]) < 0.1
  # The documented draw, the same every time.
  u_17 = np.random.default_rng([17, 1]).uniform(size=2)
  assert cosmology.cosmo_kappa_parameters(17) == (0.2 + 0.2 * u_17[0],
                                                  0.6 + 0.4 * u_17[1])
  assert cosmology.cosmo_kappa_parameters(np.int64(17)) == tuple(theta[17])


@pytest.mark.parametrize('seed', [-1, 1.5, True, '3'])
def test_cosmo_labels_refuse_bad_seeds(seed):
  with pytest.raises(ValueError, match='seed must be a non-negative integer'):
    cosmology.cosmo_kappa_parameters(seed)


def test_cosmo_settings():
  assert cosmology.cosmo_kappa_setting(64) == (64, 0.8, (2048, 256, 256))
  assert cosmology.cosmo_kappa_setting(128).split_sizes == (4096, 512, 512)
  with pytest.raises(ValueError, match=r'no cosmo_48 maps.*\[64, 128, 32\]'):
    cosmology.cosmo_kappa_setting(48)
