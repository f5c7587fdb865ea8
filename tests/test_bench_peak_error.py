"""The bookkeeping of benchmarks/bench_peak_error.py, on known answers."""

import numpy as np
import pytest

import conftest

bench = conftest.load_script('benchmarks/bench_peak_error.py',
                             'bench_peak_error')


def test_schedules_parse_and_bad_ones_are_refused():
  assert bench.parse_schedule('90x3', 0.5) == (90, 3, False, 0.5)
  assert bench.parse_schedule('30x9mh', 0.5) == (30, 9, True, 0.5)
  assert bench.parse_schedule('90x3f0.25', 0.5) == (90, 3, False, 0.25)
  with pytest.raises(ValueError, match=r"'90-3' must read LxS"):
    bench.parse_schedule('90-3', 0.5)


def test_peak_box_wraps_around_the_edges():
  truth = np.zeros((8, 8))
  truth[0, 7] = 1.
  peak, box = bench.peak_box(truth)
  assert peak == (0, 7)
  marked = np.zeros((8, 8))
  marked[box] = 1.
  assert marked.sum() == 9
  assert marked[7, 6] == marked[1, 0] == marked[0, 7] == 1.


def test_near_peak_share_counts_the_disc_of_radius_two():
  error = np.ones((16, 16))
  # 13 pixels have |d|² <= 4 on the grid: the share is 13 / 256.
  np.testing.assert_allclose(bench.near_peak_share(error, (0, 0)), 13 / 256)
  error[3, 3] = 0.  # Outside the disc: only the total changes.
  np.testing.assert_allclose(bench.near_peak_share(error, (0, 0)), 13 / 255)


def test_level_readings_read_the_last_transition_of_each_level():
  # Two chains, 6 transitions at 3 levels (2 each); the state of transition
  # t is t everywhere except the peak (10 t) and one neighbour (t + 8).
  sigma = np.array([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
  states = np.arange(6.)[:, None, None, None] * np.ones((6, 2, 8, 8))
  peak, box = bench.peak_box(np.pad([[1.]], ((3, 4), (3, 4))))
  states[:, :, 3, 3] *= 10
  states[:, :, 2, 3] += 8
  readings = bench.level_readings(states, sigma, peak, box, num_levels=3)
  assert [r['sigma'] for r in readings] == [0.1, 0.01, 0.001]
  np.testing.assert_allclose([r['peak'] for r in readings], [10, 30, 50])
  np.testing.assert_allclose([r['neighbours'] for r in readings],
                             [2, 4, 6])
  # Fewer levels asked: every other one, the last kept.
  assert [r['sigma'] for r in bench.level_readings(
      states, sigma, peak, box, num_levels=2)] == [0.1, 0.001]


def test_predicted_shift_is_the_gaussian_posterior_mean_shift():
  # Prior N(0, τ²) per pixel, data y with noise σ_n, annealed at level σ:
  # the target's mean solves −x / (τ² + σ²) + (y − x) / σ_n² = 0. Adding a
  # bias δ to the (exact, linear) denoiser τ² x / (τ² + σ²) adds δ / σ² to
  # the score; the mean then moves by exactly the predicted shift.
  tau, sigma, noise_std, y, delta = 0.05, 0.01, 0.047, 0.3, 0.004
  precision = 1 / (tau**2 + sigma**2) + 1 / noise_std**2
  mean = (y / noise_std**2) / precision
  biased = (y / noise_std**2 + delta / sigma**2) / precision
  jacobian = tau**2 / (tau**2 + sigma**2)
  np.testing.assert_allclose(
      bench.predicted_shift(delta, jacobian, sigma, noise_std), biased - mean,
      rtol=1e-12)
  # A denoiser that passes the pixel through (J → 1) leaves only the
  # likelihood to hold it: δ σ_n² / σ², here 22 δ.
  np.testing.assert_allclose(bench.predicted_shift(delta, 1., sigma,
                                                   noise_std),
                             delta * noise_std**2 / sigma**2)


def test_markdown_tables_of_a_record():
  arm = dict(rmse=0.02, near_peak_share=0.5, box_mean=0.3, peak_mean=0.6,
             peak_quantiles=[0.5, 0.6, 0.7], log_likelihood=3300.,
             data_fit_z=2.5)
  row = dict(state='truth', sigma=0.01, peak_state=0.48, peak_learned=0.45,
             peak_exact=0.48, box_state=0.148, box_learned=0.153,
             box_exact=0.149, neighbours_state=0.106, neighbours_learned=0.116,
             neighbours_exact=0.108, neighbours_jacobian=0.928,
             predicted_shift=0.065)
  record = dict(seed=7, theta=[0.3, 0.8], peak_truth=0.48,
                truth_log_likelihood=3380., truth_data_fit_z=-0.58,
                arms={'90x3': arm}, denoise=[row],
                levels={'90x3': [dict(sigma=0.01, peak=0.49, neighbours=0.2)]})
  text = bench.markdown([record])
  assert 'data fit z -0.58' in text
  assert ('| 90x3 | 0.0200 | 0.500 | 0.300 | 0.600 | 0.500 / 0.600 / 0.700 | '
          '3300.0 | +2.50 |') in text
  assert '| 0.0100 |' in text and '| κ | 0.490 / 0.200 |' in text
  assert ('| truth | 0.01 | 0.480 / 0.450 / 0.480 | 0.148 / 0.153 / 0.149 | '
          '0.106 / 0.116 / 0.108 | 0.928 | +0.065 |') in text
