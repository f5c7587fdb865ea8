"""The main job's pipeline: mass-mapping estimators by name, and their summary.

`ESTIMATORS` maps a name to an `Estimator`: a callable ``(shear_map,
options) -> Estimate`` taking a `ShearMap` and an `EstimatorOptions`, with a
label for figures and its memory cost. `run_estimators` runs the requested
ones on one shear map, one after another, timing each; `summarise` builds
the JSON summary of a run (seconds and reports of each estimator, RMSE and
Pearson r against the truth when known, posterior interval coverage), and
`strict_json` makes it strict JSON. `examples/map_shear.py` (with files,
flags and exit codes around it), `benchmarks/bench_posterior.py` and the
tests call these.

Estimators (convergence maps are dimensionless):

* ``ks``: Kaiser-Squires, smoothed by a Gaussian of
  ``ks_smoothing_arcmin``.
* ``wiener``: the Wiener filter under ``gaussian_prior``.
* ``posterior``: the mean of `sample_posterior` under ``prior`` (its
  samples in `Estimate.posterior`); chains that diverge raise
  `DivergenceError`, or are dropped with ``drop_diverged_chains``.
* ``sparse``, ``tv``, ``mcalens``: the starlet-ℓ1, total-variation and
  MCALens-like MAP maps of `tfp_massmap.sparse`.
* ``exact_lognormal``: the mean of `lognormal_posterior` under
  ``lognormal_field`` (the Bayes-optimal map on lognormal fields).

The classical estimators run in float64 (the data are cast once); the
posterior runs in the dtype of the data and its prior.
"""

import collections
import dataclasses
import math
import time
import typing
import warnings

import numpy as np
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import lognormal_posterior
from tfp_massmap import metrics
from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import sparse
from tfp_massmap import wiener

__all__ = [
    'DivergenceError',
    'ESTIMATORS',
    'Estimate',
    'Estimator',
    'EstimatorOptions',
    'EstimatorResult',
    'memory_need_bytes',
    'run_estimators',
    'strict_json',
    'summarise',
]

# Peak memory in bytes of a run (see `memory_need_bytes`): fixed, per pixel,
# and per pixel and posterior chain for each kind of prior.
_MEMORY_BASE = 2**30
_MEMORY_PER_PIXEL = 250
_MEMORY_PER_PIXEL_CHAIN = {'learned': 1000, 'gaussian': 250}


class DivergenceError(RuntimeError):
  """Posterior chains diverged and the options do not drop them.

  Attributes:
    num_diverged: chains that diverged.
    num_samples: chains run.
    dropping: whether ``drop_diverged_chains`` was on (then fewer than 2
      chains would have remained).
  """

  def __init__(self, num_diverged, num_samples, dropping):
    self.num_diverged = num_diverged
    self.num_samples = num_samples
    self.dropping = dropping
    kept = num_samples - num_diverged
    super().__init__(
        f'{num_diverged} of {num_samples} posterior chains diverged '
        '(non-finite or runaway states); ' +
        (f'only {kept} chain(s) would remain, too few for a posterior std.'
         if dropping else 'drop_diverged_chains is off.'))


@dataclasses.dataclass(frozen=True)
class EstimatorOptions:
  """Settings of the estimators; each reads its own.

  Attributes:
    ks_smoothing_arcmin: Gaussian smoothing std of the Kaiser-Squires map
      (arcmin); 0 for none.
    gaussian_prior: the `GaussianPrior` of ``wiener`` and ``mcalens``;
      None: the shipped ΛCDM spectrum (`cosmology.cosmos_convergence_cl`)
      at the map's size and pixel scale, in float64.
    sparse_threshold_sigma: ``sparse`` and ``mcalens`` thresholds in units
      of the noise std per starlet scale.
    tv_regularisation: ``tv`` weight in units of the propagated pixel noise.
    prior: the prior of ``posterior`` (a `tfp_massmap.priors.Prior`).
    num_samples: posterior samples (chains).
    schedule: posterior noise schedule; None: `posterior.default_schedule`.
    num_leapfrog_steps: leapfrog steps per transition; None: the default.
    step_size_factor: leapfrog step / σ (dimensionless).
    seed: stateless seed of the posterior.
    allow_pixel_scale_mismatch: sample although the prior was made for
      another pixel scale.
    drop_diverged_chains: drop diverged chains (with a warning) instead of
      raising `DivergenceError`.
    progress: show the posterior's progress bar.
    lognormal_field: the `LognormalField` of ``exact_lognormal``.
    exact_chains, exact_results, exact_burnin: its chains per map, kept
      results per chain and warm-up transitions.
    exact_seed: its stateless seed.
  """
  ks_smoothing_arcmin: float = 1.0
  gaussian_prior: typing.Any = None
  sparse_threshold_sigma: float = 3.0
  tv_regularisation: float = 1.0
  prior: typing.Any = None
  num_samples: int = 40
  schedule: typing.Any = None
  num_leapfrog_steps: int | None = None
  step_size_factor: float = posterior.DEFAULT_STEP_SIZE_FACTOR
  seed: typing.Any = (0, 1)
  allow_pixel_scale_mismatch: bool = False
  drop_diverged_chains: bool = False
  progress: bool = False
  lognormal_field: typing.Any = None
  exact_chains: int = 2
  exact_results: int = 200
  exact_burnin: int = 300
  exact_seed: typing.Any = (0, 7)


class Estimate(collections.namedtuple('Estimate',
                                      ['kappa', 'report', 'posterior'])):
  """What an estimator returns.

  Attributes:
    kappa: the convergence map ``[N, N]`` (dimensionless).
    report: `dict` of JSON-serialisable facts (solver convergence,
      settings, sampler diagnostics).
    posterior: the `PosteriorSamples` of a sampler, else None.
  """
  __slots__ = ()


class Estimator(collections.namedtuple(
    'Estimator', ['fn', 'label', 'memory_bytes_per_pixel'])):
  """A registered estimator.

  Attributes:
    fn: callable ``(shear_map, options) -> Estimate``.
    label: name for figures.
    memory_bytes_per_pixel: its peak memory per map pixel (bytes, measured
      on CPU and rounded up; posterior chains extra, see
      `memory_need_bytes`).
  """
  __slots__ = ()


class EstimatorResult(collections.namedtuple(
    'EstimatorResult', ['kappa', 'seconds', 'report', 'posterior'])):
  """An `Estimate` with ``kappa`` a float32 numpy map and its wall time (s)."""
  __slots__ = ()


def _solver_report(info):
  return {'iterations': int(np.max(info.iterations)),
          'converged': bool(np.all(info.converged))}


def _as_float64(shear_map):
  return shear_map_lib.as_shear_map(shear_map, dtype=tf.float64)


def _gaussian_prior(shear_map, options):
  if options.gaussian_prior is not None:
    return options.gaussian_prior
  ell, cl = cosmology.cosmos_convergence_cl()
  return priors.GaussianPrior.from_power_spectrum(
      ell, cl, int(shear_map.mask.shape[-1]), shear_map.pixel_scale_arcmin,
      dtype=tf.float64)


def _kaiser_squires(shear_map, options):
  kappa, _ = lensing.kaiser_squires(
      np.asarray(shear_map.shear),
      smoothing_arcmin=options.ks_smoothing_arcmin or None,
      pixel_scale_arcmin=shear_map.pixel_scale_arcmin)
  return Estimate(kappa, {'smoothing_arcmin': options.ks_smoothing_arcmin},
                  None)


def _wiener(shear_map, options):
  kappa, info = wiener.wiener_filter(_as_float64(shear_map),
                                     prior=_gaussian_prior(shear_map, options))
  return Estimate(kappa, {
      **_solver_report(info),
      'relative_residual': float(np.max(info.relative_residual))}, None)


def _sparse(shear_map, options):
  kappa, info = sparse.sparse_map(
      _as_float64(shear_map), threshold_sigma=options.sparse_threshold_sigma)
  return Estimate(kappa, {**_solver_report(info),
                          'threshold_sigma': options.sparse_threshold_sigma},
                  None)


def _tv(shear_map, options):
  kappa, info = sparse.tv_map(_as_float64(shear_map),
                              regularisation=options.tv_regularisation)
  return Estimate(kappa, {**_solver_report(info),
                          'regularisation': options.tv_regularisation}, None)


def _mcalens(shear_map, options):
  kappa, info = sparse.mcalens_map(
      _as_float64(shear_map), prior=_gaussian_prior(shear_map, options),
      threshold_sigma=options.sparse_threshold_sigma)
  return Estimate(kappa, {**_solver_report(info),
                          'threshold_sigma': options.sparse_threshold_sigma},
                  None)


def _posterior(shear_map, options):
  """Posterior samples under the divergence policy of the options."""
  result = posterior.sample_posterior(
      shear_map, options.prior, num_samples=options.num_samples,
      schedule=options.schedule, num_leapfrog_steps=options.num_leapfrog_steps,
      step_size_factor=options.step_size_factor, seed=options.seed,
      allow_pixel_scale_mismatch=options.allow_pixel_scale_mismatch,
      progress=options.progress)
  diverged = int(result.diagnostics['num_diverged_chains'])
  diverged_chains = list(result.diagnostics['diverged_chains'])
  num_samples = int(result.samples.shape[0])
  if diverged:
    if not options.drop_diverged_chains or num_samples - diverged < 2:
      raise DivergenceError(diverged, num_samples,
                            options.drop_diverged_chains)
    warnings.warn(
        f'DROPPING DIVERGED CHAINS: {diverged} of {num_samples} posterior '
        f'chains diverged; the posterior summaries use the remaining '
        f'{num_samples - diverged}.', RuntimeWarning)
    result = result.drop_diverged()
  # Counts of the run as sampled (drop_diverged resets the first two).
  report = {key: _jsonable(value) for key, value in result.diagnostics.items()}
  report.update(num_diverged_chains=diverged, diverged_chains=diverged_chains,
                num_samples_kept=int(result.samples.shape[0]))
  return Estimate(result.mean, report, result)


def _exact_lognormal(shear_map, options):
  result = lognormal_posterior.lognormal_posterior(
      _as_float64(shear_map), field=options.lognormal_field,
      num_chains=options.exact_chains, num_results=options.exact_results,
      num_burnin_steps=options.exact_burnin, seed=options.exact_seed,
      progress=options.progress)
  report = {key: _jsonable(value) for key, value in result.diagnostics.items()}
  return Estimate(result.mean, report, result)


# Memory per pixel in bytes: the peak resident memory measured on CPU,
# rounded up (examples/map_shear.py).
ESTIMATORS = collections.OrderedDict([
    ('ks', Estimator(_kaiser_squires, 'Kaiser-Squires', 0)),
    ('wiener', Estimator(_wiener, 'Wiener filter', 1100)),
    ('posterior', Estimator(_posterior, 'Posterior mean', 1000)),
    ('sparse', Estimator(_sparse, 'Sparse (starlet)', 4500)),
    ('tv', Estimator(_tv, 'Total variation', 900)),
    ('mcalens', Estimator(_mcalens, 'MCALens-like', 5600)),
    ('exact_lognormal', Estimator(_exact_lognormal, 'Exact lognormal mean',
                                  1000)),
])


def memory_need_bytes(npix, methods, num_samples, prior_kind):
  """Estimated peak memory of a run in bytes, an upper bound.

  M = 1 GiB + N² · (250 + Σ_methods c_m + [posterior] S · c_prior), with
  c_m the estimators' ``memory_bytes_per_pixel`` (summed: they run one
  after another) and c_prior 1000 bytes per pixel and chain for a learned
  prior, 250 for a Gaussian one (1 GiB is TensorFlow, the prior network and
  the catalogue).

  Args:
    npix: map side N in pixels.
    methods: names of the estimators run (keys of `ESTIMATORS`).
    num_samples: posterior samples S (ignored without the posterior).
    prior_kind: 'learned' or 'gaussian'.
  """
  per_pixel = _MEMORY_PER_PIXEL + sum(
      ESTIMATORS[m].memory_bytes_per_pixel for m in methods)
  if 'posterior' in methods:
    per_pixel += num_samples * _MEMORY_PER_PIXEL_CHAIN[prior_kind]
  return _MEMORY_BASE + float(npix)**2 * per_pixel


def run_estimators(shear_map, methods, options=None, *, callback=None):
  """Runs estimators on one shear map, one after another.

  Args:
    shear_map: the data, a `ShearMap` with its pixel scale.
    methods: names of estimators (keys of `ESTIMATORS`), run in this order.
    options: an `EstimatorOptions`; default all defaults (the posterior
      then needs ``prior``).
    callback: optional callable ``(name, EstimatorResult)`` called as each
      estimator finishes (e.g. to log it).

  Returns:
    An ordered `dict` name → `EstimatorResult`.

  Raises:
    ValueError: for an unknown estimator name, or what the estimators raise
      for their inputs.
    DivergenceError: when posterior chains diverged (see
      `EstimatorOptions.drop_diverged_chains`).
  """
  unknown = [m for m in methods if m not in ESTIMATORS]
  if unknown:
    raise ValueError(f'unknown estimators {unknown}; expected some of '
                     f'{list(ESTIMATORS)}.')
  options = options or EstimatorOptions()
  out = collections.OrderedDict()
  for name in methods:
    began = time.perf_counter()
    estimate = ESTIMATORS[name].fn(shear_map, options)
    out[name] = EstimatorResult(
        kappa=np.asarray(estimate.kappa).astype(np.float32),
        seconds=time.perf_counter() - began, report=estimate.report,
        posterior=estimate.posterior)
    if callback is not None:
      callback(name, out[name])
  return out


def summarise(shear_map, results, truth=None, **fields):
  """The summary of a run: per estimator its time, report and accuracy.

  Args:
    shear_map: the data the estimators ran on.
    results: `run_estimators`'s result.
    truth: the true κ ``[N, N]`` when known (synthetic data), else None.
    **fields: entries placed first (e.g. ``run_id``, ``input``).

  Returns:
    A `dict`: ``fields``, ``map_size``, ``pixel_scale_arcmin``,
    ``unmasked_fraction`` and ``methods``, name → ``seconds``, the report,
    and with a truth ``rmse`` and ``pearson_r`` on the mask (means removed,
    `metrics`) and, for samplers, ``coverage_68`` and ``coverage_95`` of
    their credible intervals. Not yet strict JSON: see `strict_json`.
  """
  mask = np.asarray(shear_map.mask)
  summary = {**fields,
             'map_size': int(mask.shape[-1]),
             'pixel_scale_arcmin': float(shear_map.pixel_scale_arcmin),
             'unmasked_fraction': float(mask.mean()),
             'methods': {}}
  for name, result in results.items():
    entry = {'seconds': result.seconds, **result.report}
    if truth is not None:
      entry['rmse'] = float(metrics.rmse(truth, result.kappa, mask))
      entry['pearson_r'] = float(metrics.pearson_r(truth, result.kappa, mask))
      if result.posterior is not None:
        for level in ('68', '95'):
          lower, upper = (np.asarray(v) for v in
                          getattr(result.posterior, f'interval_{level}'))
          entry[f'coverage_{level}'] = metrics.coverage(truth, lower, upper,
                                                        mask)
    summary['methods'][name] = entry
  return summary


def _jsonable(value):
  """A JSON-serialisable form of a diagnostic value."""
  if hasattr(value, 'parameters'):  # a noise schedule
    return {'type': type(value).__name__, **value.parameters}
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, 'numpy'):
    return np.asarray(value).tolist()
  return value


def strict_json(value):
  """``value`` with non-finite floats as None and tuples as lists."""
  if isinstance(value, dict):
    return {str(k): strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if isinstance(value, (np.ndarray, np.generic)):
    return strict_json(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
