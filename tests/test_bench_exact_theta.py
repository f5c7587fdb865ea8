"""benchmarks/bench_exact_theta.py: per-map summaries and the paired table.

Known answers: draws from a known normal give the coverage and z of that
normal; a learned posterior twice as wide as the exact one and shifted by
half its std gives a std ratio of 2 and a mean shift of 0.5 on every map.
"""

import json

import numpy as np
import pytest

import conftest

bench = conftest.load_script('benchmarks/bench_exact_theta.py',
                             'bench_exact_theta')


def test_summary_of_draws_gives_mean_std_coverage_and_z():
  rng = np.random.default_rng(0)
  draws = np.stack([0.3 + 0.02 * rng.standard_normal(20000),
                    0.8 + 0.05 * rng.standard_normal(20000)], -1)
  # Truths at +0.5 std (inside 68 %) and +1.5 std (inside 95 % only).
  summary = bench.summary_of(draws, np.array([0.31, 0.875]))
  omega, sigma = summary['omega_m'], summary['sigma8']
  np.testing.assert_allclose([omega['std'], sigma['std']], [0.02, 0.05],
                             rtol=0.03)
  np.testing.assert_allclose([omega['z'], sigma['z']], [-0.5, -1.5],
                             atol=0.05)
  assert omega['covered_68'] and omega['covered_95']
  assert not sigma['covered_68'] and sigma['covered_95']
  # Normal: the 68 % interval is mean ± std.
  np.testing.assert_allclose(omega['interval_68'], [0.28, 0.32], atol=0.002)
  # PIT = Φ(z): 0.691 at +0.5 std, 0.933 at +1.5.
  np.testing.assert_allclose([omega['pit'], sigma['pit']], [0.691, 0.933],
                             atol=0.01)


def _record(exact_std, shift, pit=None):
  exact = {name: dict(mean=0.5, std=exact_std, z=0.0, covered_68=True,
                      covered_95=True, pit=pit)
           for name in ('omega_m', 'sigma8')}
  learned = {name: dict(mean=0.5 + shift * exact_std, std=2 * exact_std,
                        z=0.0, covered_68=False, covered_95=True)
             for name in ('omega_m', 'sigma8')}
  return dict(exact=exact, learned=learned)


def test_summarise_pairs_the_methods_map_by_map():
  records = [_record(std, 0.5) for std in (0.01, 0.03, 0.05)]
  rows = bench.summarise(records)
  learned = [r for r in rows if r['method'] == 'learned']
  exact = [r for r in rows if r['method'] == 'exact']
  assert len(learned) == len(exact) == 2
  for row in learned:
    np.testing.assert_allclose(row['std_ratio'], [2., 0.], atol=1e-12)
    np.testing.assert_allclose(row['mean_shift'], [0.5, 0.], atol=1e-12)
    assert row['coverage_68'][0] == 0. and row['coverage_95'][0] == 1.
  for row in exact:
    assert 'std_ratio' not in row and row['coverage_68'][0] == 1.
  table = bench.markdown(rows, len(records))
  assert '2.00 ± 0.00' in table and '0.50 ± 0.00' in table
  assert all(row['pit_ks_p'] is None for row in rows)  # Older records.


def test_pit_uniformity_tells_calibrated_from_over_wide():
  # PITs spread over (0, 1) pass; PITs all near 0.5 (a posterior far wider
  # than the scatter of its truths) fail.
  spread = [_record(0.01, 0., pit) for pit in np.linspace(0.025, 0.975, 20)]
  narrow = [_record(0.01, 0., pit) for pit in np.linspace(0.4, 0.6, 20)]
  exact_p = lambda records: [r['pit_ks_p'] for r in bench.summarise(records)
                             if r['method'] == 'exact']
  assert min(exact_p(spread)) > 0.9
  assert max(exact_p(narrow)) < 0.01


def test_a_rerun_refuses_another_runs_records(tmp_path):
  path = tmp_path / 'records.json'
  path.write_text(json.dumps(dict(settings={'num_maps': 3}, maps=[{}])))
  assert bench._load_records(str(path), {'num_maps': 3}) == [{}]
  with pytest.raises(ValueError, match='other settings'):
    bench._load_records(str(path), {'num_maps': 4})
  assert bench._load_records(str(tmp_path / 'none.json'), {}) == []
