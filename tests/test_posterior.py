"""sample_posterior, PosteriorSampler and map_estimate against the exact
Gaussian posterior.

With the analytic Gaussian prior the posterior is Gaussian; on a 32² map its
mean and per-pixel standard deviation come from
`tfp_massmap.testing.exact_gaussian_posterior` (a dense float64 solve,
independent of the package's conjugate-gradient Wiener filter). The data
(`testing.gaussian_problem`) have a COSMOS-like mask (footprint and star
holes) and non-uniform noise.
"""

import collections
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import priors
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import testing
from tfp_massmap.mcmc import ConstantSchedule
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.mcmc import driver
from tfp_massmap.posterior import PosteriorSampler
from tfp_massmap.posterior import PosteriorSamples
from tfp_massmap.posterior import credible_interval
from tfp_massmap.posterior import map_estimate
from tfp_massmap.posterior import sample_posterior

NPIX = 32
PIXEL_ARCMIN = 3.2

# An annealing that meets the targets on this problem with 62 score
# evaluations per sample (benchmarks/annealed_hmc_gaussian.py).
FAST = dict(schedule=GeometricSchedule(0.05, 1e-3, num_levels=12),
            num_leapfrog_steps=5, step_size_factor=1.0)


@pytest.fixture(scope='module')
def problem():
  data, _, prior = testing.gaussian_problem(NPIX, PIXEL_ARCMIN, seed=0)
  mean, covariance = testing.exact_gaussian_posterior(data, prior)
  return dict(data=data, mask=data.mask, prior=prior, mean=mean,
              std=np.sqrt(np.diag(covariance)).reshape(NPIX, NPIX))


def _replace(problem, **arrays):
  """The problem's data with some of shear, noise_std and mask replaced."""
  return problem['data']._replace(**arrays)


def _errors(mean, std, problem, where):
  """(RMS mean error / RMS exact std, std ratio) on the selected pixels."""
  exact_var = problem['std'][where]**2
  mean_error = np.sqrt(np.mean((mean[where] - problem['mean'][where])**2) /
                       np.mean(exact_var))
  std_ratio = np.sqrt(np.mean(std[where]**2) / np.mean(exact_var))
  return mean_error, std_ratio


def test_annealed_hmc_matches_exact_gaussian_posterior(problem):
  result = sample_posterior(problem['data'], problem['prior'],
                            num_samples=256, seed=(1, 2), progress=False,
                            **FAST)
  assert isinstance(result, PosteriorSamples)
  # Monte Carlo floor of the mean error with 256 chains: 1/16 = 0.0625.
  for where in (np.ones([NPIX, NPIX], bool), problem['mask'] > 0):
    mean_error, std_ratio = _errors(result.mean.numpy(), result.std.numpy(),
                                    problem, where)
    assert mean_error <= 0.1
    assert 0.9 <= std_ratio <= 1.1
  d = result.diagnostics
  # 1 bootstrap + 12 steps x 5 leapfrog + 1 Tweedie step.
  assert d['score_evaluations_per_sample'] == 62
  assert d['num_score_evaluations'] == 62 * 256
  assert d['acceptance_rate'] == 1.
  assert d['wall_time_s'] > 0 and d['num_steps'] == 12
  # No chain diverged, and the leapfrog is accurate (0.92 measured).
  assert d['num_diverged_chains'] == 0 and d['diverged_chains'] == []
  assert 0.85 < d['mean_would_be_acceptance'] < 1.


def test_too_short_annealing_is_detected(problem):
  """The exactness check can fail: 4 levels of 1 leapfrog step are too few."""
  result = sample_posterior(
      problem['data'], problem['prior'], num_samples=128, seed=(1, 2),
      progress=False, schedule=GeometricSchedule(0.1, 1e-3, num_levels=4),
      num_leapfrog_steps=1, step_size_factor=1.0)
  _, std_ratio = _errors(result.mean.numpy(), result.std.numpy(), problem,
                         np.ones([NPIX, NPIX], bool))
  assert std_ratio > 1.1


def test_mala_matches_exact_gaussian_posterior(problem):
  result = sample_posterior(
      problem['data'], problem['prior'], num_samples=128, method='mala',
      schedule=GeometricSchedule(0.05, 1e-3, num_levels=60),
      step_size_factor=1.3, seed=(3, 4), progress=False)
  mean_error, std_ratio = _errors(result.mean.numpy(), result.std.numpy(),
                                  problem, np.ones([NPIX, NPIX], bool))
  assert mean_error <= 0.15  # floor 1/√128 = 0.088
  assert 0.9 <= std_ratio <= 1.1
  d = result.diagnostics
  assert d['metropolis_correction'] and d['num_leapfrog_steps'] == 1
  assert 0.3 < d['acceptance_rate'] < 1.
  # Bootstrap, 60 one-step leapfrogs, a refresh at each of the 59 new noise
  # levels (the Metropolis test needs the end score at the step's σ), Tweedie.
  assert d['score_evaluations_per_sample'] == 1 + 60 + 59 + 1


def test_mala_adapts_its_step_to_a_target_acceptance(problem):
  """At σ = 0.01 a fixed factor 1.3 accepts few MALA proposals on this map;
  with target_accept_prob the factor shrinks until about that many are."""
  kwargs = dict(num_samples=16, method='mala', step_size_factor=1.3,
                schedule=ConstantSchedule(0.01, num_steps=40), seed=(4, 4),
                progress=False, tweedie=False)
  fixed = sample_posterior(problem['data'], problem['prior'], **kwargs)
  adapted = sample_posterior(problem['data'], problem['prior'],
                             target_accept_prob=0.6, **kwargs)
  assert fixed.diagnostics['acceptance_rate'] < 0.3
  assert fixed.diagnostics['final_step_size_factor'] == pytest.approx(
      [1.3] * 16)
  assert 0.45 < adapted.diagnostics['acceptance_rate'] < 0.75
  factors = adapted.diagnostics['final_step_size_factor']
  assert len(set(factors)) == 1 and factors[0] < 1.3
  assert adapted.diagnostics['target_accept_prob'] == 0.6


def test_summaries_seeds_and_batches(problem):
  kwargs = dict(num_samples=12, batch_size=6,
                schedule=GeometricSchedule(0.05, 1e-3, num_levels=3),
                num_leapfrog_steps=2, seed=(5, 6), progress=False)
  with pytest.warns(UserWarning, match='12 samples cannot resolve a 95%'):
    result = sample_posterior(problem['data'], problem['prior'], **kwargs)
  samples = result.samples.numpy()
  assert samples.shape == (12, NPIX, NPIX)
  assert result.diagnostics['batch_size'] == 6
  # Each batch has its own seed.
  assert not np.allclose(samples[:6], samples[6:])
  np.testing.assert_allclose(result.mean.numpy(), samples.mean(0), atol=1e-6)
  np.testing.assert_allclose(result.std.numpy(), samples.std(0), atol=1e-6)
  # Plotting positions q(S + 1) (numpy's 'weibull'); 12 samples cannot
  # resolve 95 %, so that interval is [min, max].
  np.testing.assert_allclose(
      result.interval_68.numpy(),
      np.percentile(samples, [16, 84], axis=0, method='weibull'), atol=1e-6)
  np.testing.assert_allclose(
      result.interval_95.numpy(),
      np.stack([samples.min(0), samples.max(0)]), atol=1e-6)
  assert np.all(result.interval_95[0] <= result.interval_68[0])
  assert np.all(result.interval_68[1] <= result.interval_95[1])
  # The Tweedie step removes the mean mode, on which the Gaussian prior puts
  # no variance.
  np.testing.assert_allclose(samples.mean(axis=(1, 2)), 0., atol=1e-6)
  assert result.trace is None
  # Same seed, same samples; any ShearMap-like object is the same data, and
  # an equal schedule object reuses the compiled sampler (no new trace).
  ShearMapLike = collections.namedtuple('ShearMapLike',
                                        'shear noise_std mask')
  data = problem['data']
  kwargs['schedule'] = GeometricSchedule(0.05, 1e-3, num_levels=3)
  with pytest.warns(UserWarning):
    again = sample_posterior(
        ShearMapLike(data.shear, data.noise_std, data.mask),
        prior=problem['prior'], **kwargs)
  np.testing.assert_array_equal(again.samples.numpy(), samples)
  assert again.diagnostics['tracing_count'] == (
      result.diagnostics['tracing_count'])


def test_sampler_maps_new_data_without_retracing(problem):
  """One PosteriorSampler, three observations of one shape: one trace each of
  its functions; the samples follow the data (same seed, other shear)."""
  sampler = PosteriorSampler(problem['prior'], num_leapfrog_steps=2,
                             schedule=GeometricSchedule(0.05, 1e-3, 4))
  data = problem['data']
  kwargs = dict(num_samples=2, seed=(1, 1))
  first = sampler.sample(data, **kwargs)
  traced = sampler.tracing_count()
  assert traced == first.diagnostics['tracing_count'] > 0
  flipped = sampler.sample(data._replace(shear=-data.shear), **kwargs)
  other_noise = sampler.sample(data._replace(noise_std=2 * data.noise_std),
                               **kwargs)
  assert sampler.tracing_count() == traced
  assert other_noise.diagnostics['tracing_count'] == traced
  # The posterior is linear in the shear (Gaussian prior): the chains' noise
  # is the same, so the samples are reflected about the zero-data ones.
  zero = sampler.sample(data._replace(shear=0 * data.shear), **kwargs)
  np.testing.assert_allclose(
      (first.samples + flipped.samples).numpy(), 2 * zero.samples.numpy(),
      atol=1e-5)
  assert not np.allclose(other_noise.samples.numpy(), first.samples.numpy())
  # A new chain count is a new shape: traced once more, then reused.
  sampler.sample(data, num_samples=3, seed=(1, 1))
  retraced = sampler.tracing_count()
  assert retraced > traced
  sampler.sample(data, num_samples=3, seed=(2, 2))
  assert sampler.tracing_count() == retraced


def test_trace_has_a_chain_axis_for_tfp_diagnostics(problem):
  """Steps at one noise level, [T, chains, N, N]: TFP's R-hat and ESS read
  chains from axis 1 as documented."""
  schedule = ConstantSchedule(0.02, num_steps=12)
  kwargs = dict(num_samples=4, schedule=schedule, num_leapfrog_steps=2,
                tweedie=False, seed=(3, 3), progress=False)
  result = sample_posterior(problem['data'], problem['prior'],
                            num_trace_steps=12, **kwargs)
  trace = result.trace
  assert trace.states.shape == (12, 4, NPIX, NPIX)
  np.testing.assert_allclose(trace.sigma.numpy(), 0.02)
  accept = trace.accept_probability.numpy()
  assert accept.shape == (12, 4) and np.all((accept > 0) & (accept <= 1))
  # The last traced state of each chain is its sample (no Tweedie step).
  np.testing.assert_array_equal(trace.states[-1].numpy(),
                                result.samples.numpy())
  r_hat = tfp.mcmc.potential_scale_reduction(trace.states)
  assert r_hat.shape == (NPIX, NPIX)
  d = result.diagnostics
  assert d['num_trace_steps'] == 12
  assert d['acceptance_per_chain'] == [1.] * 4
  # Per chain, the would-be acceptance is the mean over its steps.
  np.testing.assert_allclose(accept.mean(axis=0), d['would_be_acceptance'],
                             rtol=1e-5)
  # Tracing the last 5 steps only.
  last = sample_posterior(problem['data'], problem['prior'],
                          num_trace_steps=5, **kwargs)
  assert last.trace.states.shape == (5, 4, NPIX, NPIX)
  np.testing.assert_array_equal(last.trace.states[-1].numpy(),
                                last.samples.numpy())
  with pytest.raises(ValueError, match='num_trace_steps must be at most'):
    sample_posterior(problem['data'], problem['prior'], schedule=schedule,
                     num_trace_steps=13, progress=False)


def test_driver_chunks():
  """At most two distinct chunk lengths, multiples of the unit, summing up."""
  assert driver.chunk_lengths(92, 100) == [92]
  assert driver.chunk_lengths(250, 100) == [84, 84, 82]
  assert driver.chunk_lengths(300, 50, unit=4) == [44] * 6 + [36]
  assert driver.chunk_lengths(8, 3, unit=4) == [4, 4]
  assert driver.default_jit_compile(None) == bool(
      tf.config.list_physical_devices('GPU'))
  assert driver.default_jit_compile(0) is False


@pytest.mark.parametrize('num_samples', [16, 40])
def test_credible_intervals_cover_a_further_draw(num_samples):
  """A further draw from the sampled distribution falls inside the interval
  with the nominal probability, for few samples too (skewed distribution)."""
  rng = np.random.default_rng(0)
  draws = rng.lognormal(sigma=0.5, size=(num_samples + 1, 200_000))
  samples, truth = draws[:-1], draws[-1]
  levels = (0.68, 0.95) if num_samples >= 39 else (0.5, 0.68)
  for level in levels:
    lower, upper = credible_interval(tf.constant(samples), level).numpy()
    hit = np.mean((truth >= lower) & (truth <= upper))
    # Interpolating between order statistics leaves < 1 point of bias.
    assert abs(hit - level) < 0.01, (level, hit)
  # The usual positions q(S - 1) fall short with 16 samples.
  if num_samples == 16:
    lower, upper = np.percentile(samples, [16, 84], axis=0)
    assert np.mean((truth >= lower) & (truth <= upper)) < 0.63


def test_credible_interval_bad_input():
  with pytest.raises(ValueError, match='level must be in'):
    credible_interval(tf.zeros([4, 3]), 95)
  with pytest.raises(ValueError, match='at least 2 samples'):
    credible_interval(tf.zeros([1, 3]), 0.68)
  with pytest.warns(UserWarning, match='needs 39'):
    lower, upper = credible_interval(tf.constant([[1.], [3.], [2.]]), 0.95)
  np.testing.assert_array_equal([lower, upper], [[1.], [3.]])


def test_schedule_object_and_nan_outside_mask(problem):
  data = problem['data']
  shear = np.where(data.mask[..., None] > 0, data.shear, np.nan)
  result = sample_posterior(
      _replace(problem, shear=shear), problem['prior'], num_samples=4,
      schedule=GeometricSchedule(0.05, 1e-3, num_levels=2),
      num_leapfrog_steps=1, tweedie=False, seed=(7, 8), progress=False)
  assert np.all(np.isfinite(result.samples.numpy()))
  assert result.diagnostics['score_evaluations_per_sample'] == 1 + 2


def test_map_estimate_is_the_wiener_filter(problem):
  kappa, info = map_estimate(
      problem['data'], problem['prior'],
      schedule=GeometricSchedule(0.05, 1e-3, num_levels=100),
      step_size_factor=0.9)
  assert kappa.shape == (NPIX, NPIX)
  mean_error, _ = _errors(kappa.numpy(), problem['std'], problem,
                          np.ones([NPIX, NPIX], bool))
  assert mean_error <= 0.05
  assert info['num_score_evaluations'] == 100


def test_map_estimate_same_with_xla(problem):
  schedule = GeometricSchedule(0.05, 1e-3, num_levels=10)
  plain, _ = map_estimate(problem['data'], problem['prior'],
                          schedule=schedule, jit_compile=False)
  compiled, _ = map_estimate(problem['data'], problem['prior'],
                             schedule=schedule, jit_compile=True)
  np.testing.assert_allclose(compiled.numpy(), plain.numpy(), rtol=1e-4,
                             atol=1e-6)


@pytest.mark.slow
def test_sample_posterior_with_xla_matches_exact_posterior(problem):
  """XLA (the default on GPU); its stateless RNG differs, so compare moments."""
  result = sample_posterior(problem['data'], problem['prior'],
                            num_samples=256, seed=(1, 2), progress=False,
                            jit_compile=True, **FAST)
  mean_error, std_ratio = _errors(result.mean.numpy(), result.std.numpy(),
                                  problem, np.ones([NPIX, NPIX], bool))
  assert mean_error <= 0.1
  assert 0.9 <= std_ratio <= 1.1
  assert result.diagnostics['jit_compile']
  assert result.diagnostics['score_evaluations_per_sample'] == 62


class _DividedPrior:
  """A stand-in for a network prior needing maps divisible by 8."""
  size_divisor = 8

  def score(self, x, sigma):
    del sigma
    return -x


@pytest.mark.parametrize('change, match', [
    (dict(shear_nan_inside=True), 'non-finite value'),
    (dict(mask=np.zeros([NPIX, NPIX], np.float32)), 'no observed pixel'),
    (dict(mask=np.full([NPIX, NPIX], 0.5, np.float32)),
     'mask holds 1024 value.s. other than 0 and 1'),
    (dict(noise_std=np.zeros([NPIX, NPIX, 2], np.float32)), 'noise_std holds'),
    (dict(noise_std=np.ones([NPIX, 16], np.float32)), 'noise_std must have'),
    (dict(shear=np.zeros([NPIX, NPIX], np.float32)), 'shear must have shape'),
    (dict(shear=np.zeros([2, NPIX, NPIX, 2], np.float32)),
     'shear must be one map'),
    (dict(noise_std=np.ones([3, NPIX, NPIX], np.float32)),
     'noise_std must have shape .N, N. or .N, N, 2. with N = 32 .one map.'),
    (dict(mask=np.ones([16, 16], np.float32)), 'mask must have shape'),
    (dict(prior=priors.GaussianPrior(tf.ones([16, 16]))),
     'defined on 16x16 maps but the shear map is 32x32'),
    (dict(prior=object()), 'score'),
    (dict(kwargs=dict(method='nuts')), 'method must be one of'),
    (dict(kwargs=dict(method='mala', num_leapfrog_steps=3)),
     'one leapfrog step'),
    (dict(kwargs=dict(method='ula', metropolis_correction=True)),
     'metropolis_correction=False'),
    (dict(kwargs=dict(schedule=object())), 'schedule must have a sigma'),
    (dict(kwargs=dict(num_samples=0)), 'num_samples'),
    (dict(kwargs=dict(num_trace_steps=-1)), 'num_trace_steps'),
    (dict(kwargs=dict(step_size_factor=[0.5])),
     'step_size_factor must be a positive number'),
    (dict(kwargs=dict(target_accept_prob=1.5)),
     'target_accept_prob must be in .0, 1.'),
    (dict(kwargs=dict(initial_state=np.zeros([3, 3]))), 'initial_state'),
])
def test_bad_inputs_raise(problem, change, match):
  data = problem['data']
  shear = data.shear
  if change.get('shear_nan_inside'):
    shear = shear.copy()
    inside = np.argwhere(data.mask > 0)[0]
    shear[inside[0], inside[1], 0] = np.nan
  arrays = dict(shear=change.get('shear', shear),
                noise_std=change.get('noise_std', data.noise_std),
                mask=change.get('mask', data.mask))
  with pytest.raises(ValueError, match=match):
    sample_posterior(data._replace(**arrays),
                     change.get('prior', problem['prior']),
                     **change.get('kwargs', {}), progress=False)


def test_prior_size_divisor_and_arrays_raise(problem):
  data = problem['data']
  n = 20  # not divisible by 8
  small = shear_map_lib.ShearMap(data.shear[:n, :n], data.noise_std[:n, :n],
                                 data.mask[:n, :n])
  with pytest.raises(ValueError, match='divisible by its size_divisor = 8'):
    sample_posterior(small, _DividedPrior(), progress=False)
  with pytest.raises(ValueError, match='takes the data as a ShearMap .* got '
                     r'ndarray; for arrays pass tfp_massmap.ShearMap\(shear'):
    sample_posterior(data.shear, problem['prior'], progress=False)
  with pytest.raises(ValueError, match='step_size_factor must be in'):
    map_estimate(data, problem['prior'], step_size_factor=1.5)


_TWO_DEVICE_SCRIPT = textwrap.dedent('''
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfp_massmap import posterior, testing
    from tfp_massmap.mcmc import GeometricSchedule
    data, _, prior = testing.gaussian_problem(32, 3.2, seed=1)
    sampler = posterior.PosteriorSampler(
        prior, schedule=GeometricSchedule(0.05, 1e-3, 6))
    one = sampler.sample(data, num_samples=8, batch_size=4, seed=(3, 4))
    two = sampler.sample(data, num_samples=8, seed=(3, 4),
                         devices=['/cpu:0', '/cpu:1'])
    assert two.diagnostics['batch_size'] == 4
    assert two.diagnostics['devices'] == ['/cpu:0', '/cpu:1']
    np.testing.assert_array_equal(one.samples.numpy(), two.samples.numpy())
    try:
      sampler.sample(data, num_samples=8, seed=(3, 4), devices=['/gpu:7'])
    except ValueError as e:
      assert 'are not logical devices of this process' in str(e), e
    else:
      raise AssertionError('an unknown device was accepted')
    print('ok')
''')


def test_chains_of_one_map_spread_over_two_logical_devices(tmp_path):
  """Two logical CPUs (a process of its own: they must be set before
  TensorFlow starts): one batch per device, the same samples as the same
  batches on one device."""
  script = tmp_path / 'two_devices.py'
  script.write_text(_TWO_DEVICE_SCRIPT)
  out = subprocess.run([sys.executable, str(script)], capture_output=True,
                       text=True, timeout=600, check=False)
  assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-3000:]
