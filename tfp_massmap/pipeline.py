"""The main job's pipeline: mass-mapping estimators by name, and their summary.

`ESTIMATORS` maps a name to an `Estimator`: a callable ``(shear_map,
options) -> Estimate`` taking a `ShearMap` and an `EstimatorOptions`, with a
label for figures and its memory cost. `run_estimators` runs the requested
ones on one shear map, one after another, timing each; `summarise` builds
the JSON summary of a run (seconds and reports of each estimator, RMSE and
Pearson r against the truth when known, posterior interval coverage), and
`strict_json` makes it strict JSON; `statistics_summary` and `peak_tables`
add the summary statistics of the maps and the posterior peak catalogue
(cross-matched with a cluster list). `examples/map_shear.py` (with files,
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
import functools
import math
import time
import typing
import warnings

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import cosmology
from tfp_massmap import joint_posterior
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal_posterior
from tfp_massmap import metrics
from tfp_massmap import posterior
from tfp_massmap import power_spectrum
from tfp_massmap import priors
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import sky
from tfp_massmap import sparse
from tfp_massmap import statistics
from tfp_massmap import wiener

__all__ = [
    'DivergenceError',
    'ESTIMATORS',
    'Estimate',
    'Estimator',
    'EstimatorOptions',
    'EstimatorResult',
    'map_statistics',
    'memory_need_bytes',
    'peak_probability_baseline',
    'peak_tables',
    'run_estimators',
    'statistics_summary',
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
    prior: the prior of ``posterior``: a `tfp_massmap.priors.Prior`, or a
      `JointPrior` for the joint posterior of κ and θ.
    num_samples: posterior samples (chains).
    schedule: posterior noise schedule; None: `posterior.default_schedule`.
    num_sweeps, sweep_schedule: with a joint prior on masked or non-white
      data, the Gibbs sweeps and their κ annealing
      (`joint_posterior.JointPosteriorSampler`; sweep_schedule None: its
      default).
    num_leapfrog_steps: leapfrog steps per transition; None: the default.
    step_size_factor: leapfrog step / σ (dimensionless).
    seed: stateless seed of the posterior.
    allow_pixel_scale_mismatch: sample although the prior was made for
      another pixel scale.
    drop_diverged_chains: drop diverged chains (with a warning) instead of
      raising `DivergenceError`.
    progress: show the posterior's progress bar.
    jit_compile: the posterior compiled with XLA (True) or run as a TF
      graph (False); None: XLA exactly when a GPU is visible
      (`mcmc.driver.default_jit_compile`). On a GPU, XLA samples 3-4x
      faster but its compilation adds about 25 s to the first map of a
      shape (docs/benchmarks.md, "The posterior on a GPU").
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
  num_sweeps: int = joint_posterior.DEFAULT_NUM_SWEEPS
  sweep_schedule: typing.Any = None
  num_leapfrog_steps: int | None = None
  step_size_factor: float = posterior.DEFAULT_STEP_SIZE_FACTOR
  seed: typing.Any = (0, 1)
  allow_pixel_scale_mismatch: bool = False
  drop_diverged_chains: bool = False
  progress: bool = False
  jit_compile: bool | None = None
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
  """Posterior samples under the divergence policy of the options.

  With a joint prior (`priors.is_joint_prior`: a prior over κ and
  cosmological parameters θ) the joint posterior p(κ, θ | γ)
  (`joint_posterior.sample_joint_posterior`): the samples carry
  ``parameters`` and the report their summary under ``'parameters'``
  (`joint_posterior.parameter_summary`).
  """
  joint = priors.is_joint_prior(options.prior)
  sample = (functools.partial(joint_posterior.sample_joint_posterior,
                              num_sweeps=options.num_sweeps,
                              sweep_schedule=options.sweep_schedule)
            if joint else posterior.sample_posterior)
  result = sample(
      shear_map, options.prior, num_samples=options.num_samples,
      schedule=options.schedule, num_leapfrog_steps=options.num_leapfrog_steps,
      step_size_factor=options.step_size_factor, seed=options.seed,
      allow_pixel_scale_mismatch=options.allow_pixel_scale_mismatch,
      jit_compile=options.jit_compile, progress=options.progress)
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
  if joint:
    report['parameters'] = joint_posterior.parameter_summary(result)
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
    their credible intervals. Samplers also get ``data_fit``, truth or
    not: ``dof``, ``reduced_chi2`` and ``z`` of `likelihood.data_fit`, the
    posterior predictive check of their draws against the data. Not yet
    strict JSON: see `strict_json`.

  Warns:
    RuntimeWarning: for a sampler whose draws fit the data with
      |z| > 3, naming it and z.
  """
  mask = np.asarray(shear_map.mask)
  summary = {**fields,
             'map_size': int(mask.shape[-1]),
             'pixel_scale_arcmin': float(shear_map.pixel_scale_arcmin),
             'unmasked_fraction': float(mask.mean()),
             'methods': {}}
  for name, result in results.items():
    entry = {'seconds': result.seconds, **result.report}
    if result.posterior is not None:
      fit = likelihood.data_fit(result.posterior.samples, shear_map)
      entry['data_fit'] = {k: fit[k] for k in ('dof', 'reduced_chi2', 'z')}
      if abs(fit['z']) > 3.:
        warnings.warn(
            f'{name}: its draws fit the shear with reduced χ² '
            f'{fit["reduced_chi2"]:.3f} over {fit["dof"]:.0f} values, '
            f'z = {fit["z"]:+.1f} from what a calibrated posterior gives '
            '(|z| <~ 3): check the noise model (z < 0: noise stated too large; '
            'z > 0: too small) or the prior (z > 0: it pulls the map off the '
            'data). See likelihood.data_fit.', RuntimeWarning)
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


def _without_mean(maps, mask):
  """Maps less their mean on the mask (shear leaves the mean free)."""
  maps = np.asarray(maps, np.float64)
  on = np.asarray(mask) > 0
  return maps - maps[..., on].mean(axis=-1)[..., None, None]


def map_statistics(maps, mask, pixel_scale_arcmin, smoothing_arcmin, bins):
  """The summary statistics of maps ``[B, N, N]`` on the mask, in float64.

  Each map loses its mean on the mask; the power spectrum is that of the
  maps, the others of the maps smoothed by a Gaussian of
  ``smoothing_arcmin`` (module `statistics`).

  Args:
    maps: ``[B, N, N]`` convergence maps (samples, truths, estimates).
    mask: 0/1 ``[N, N]`` mask.
    pixel_scale_arcmin: pixel side in arcmin.
    smoothing_arcmin: Gaussian smoothing std in arcmin.
    bins: dict with ``ell_edges`` (rad⁻¹), ``pdf_edges``, ``peak_edges``
      and ``thresholds`` (κ).

  Returns:
    `dict` of numpy ``[B, ...]``: ``power_spectrum``, ``pdf``,
    ``peak_counts``, ``v0``, ``v1``, ``v2``, ``variance``, ``skewness``,
    ``excess_kurtosis``.
  """
  mask_t = tf.constant(mask, tf.float64)
  raw = tf.constant(_without_mean(maps, mask))
  _, power = statistics.masked_power_spectrum(
      raw, pixel_scale_arcmin, mask=mask_t, ell_edges=bins['ell_edges'])
  smooth = lensing.gaussian_smooth(raw, smoothing_arcmin, pixel_scale_arcmin)
  smooth = tf.constant(_without_mean(smooth.numpy(), mask))
  moments = statistics.moments(smooth, mask=mask_t)
  mf = statistics.minkowski_functionals(smooth, bins['thresholds'],
                                        pixel_scale_arcmin, mask=mask_t)
  return {
      'power_spectrum': power.numpy(),
      'pdf': statistics.one_point_pdf(smooth, bins['pdf_edges'],
                                      mask=mask_t).numpy(),
      'peak_counts': statistics.peak_counts(smooth, bins['peak_edges'],
                                            mask=mask_t).numpy(),
      'v0': mf.v0.numpy(), 'v1': mf.v1.numpy(), 'v2': mf.v2.numpy(),
      'variance': moments.variance.numpy(),
      'skewness': moments.skewness.numpy(),
      'excess_kurtosis': moments.excess_kurtosis.numpy(),
  }


def statistics_summary(shear_map, results, smoothing_arcmin=1.6):
  """Summary statistics of every estimator's map, with posterior bands.

  Each map (and each posterior sample) loses its mean on the mask; the
  power spectrum (`statistics.masked_power_spectrum`, 12 log ℓ bins) is
  of the unsmoothed maps, the one-point PDF, moments, peak counts and
  Minkowski functionals of the maps smoothed by a Gaussian of
  ``smoothing_arcmin``, on the mask. κ bins are fixed multiples of σ_ref,
  the rms of the first map's smoothed values on the mask (the posterior
  mean when there is one): PDF edges −3σ_ref..5σ_ref (16 bins),
  thresholds −2σ_ref..4σ_ref (13), peak heights 0..6σ_ref (6 bins). For a
  posterior, each statistic also has its sample mean and 68 % and 95 %
  bands over the samples (`statistics.band`).

  Args:
    shear_map: the data the estimators ran on.
    results: `run_estimators`'s result.
    smoothing_arcmin: Gaussian smoothing std (arcmin, > 0) of the
      one-point, peak and Minkowski statistics.

  Returns:
    A `dict` (not yet strict JSON: see `strict_json`): ``smoothing_arcmin``,
    ``sigma_ref``, the bins (``ell`` in rad⁻¹, ``pdf_edges``,
    ``thresholds``, ``peak_edges`` in κ), ``methods``: name → statistic →
    values, and ``posterior_bands``: statistic → ``mean``, ``lower_68``,
    ``upper_68``, ``lower_95``, ``upper_95`` (absent without a posterior).
  """
  if not results:
    raise ValueError('results is empty; expected the maps of run_estimators.')
  mask = np.asarray(shear_map.mask, np.float64)
  pix = float(shear_map.pixel_scale_arcmin)
  n = int(mask.shape[-1])
  first = results['posterior'] if 'posterior' in results else next(
      iter(results.values()))
  smooth = lensing.gaussian_smooth(tf.constant(_without_mean(
      first.kappa[None], mask)), smoothing_arcmin, pix).numpy()[0]
  sigma_ref = float(np.std(smooth[mask > 0]))
  ell_edges = power_spectrum.default_ell_edges(n, pix, 12)
  bins = {'ell_edges': ell_edges,
          'pdf_edges': sigma_ref * np.linspace(-3.0, 5.0, 17),
          'thresholds': sigma_ref * np.linspace(-2.0, 4.0, 13),
          'peak_edges': sigma_ref * np.arange(7.0)}
  out = {'smoothing_arcmin': float(smoothing_arcmin), 'sigma_ref': sigma_ref,
         'ell': np.sqrt(ell_edges[1:] * ell_edges[:-1]),
         **{k: v for k, v in bins.items() if k != 'ell_edges'},
         'methods': {}}
  for name, result in results.items():
    values = map_statistics(result.kappa[None], mask, pix, smoothing_arcmin,
                             bins)
    out['methods'][name] = {k: v[0] for k, v in values.items()}
  if 'posterior' in results:
    samples = np.asarray(results['posterior'].posterior.samples, np.float64)
    values = map_statistics(samples, mask, pix, smoothing_arcmin, bins)
    bands = {}
    with warnings.catch_warnings():  # Too few samples for 95 %: said there.
      warnings.simplefilter('ignore', UserWarning)
      for key, value in values.items():
        b68 = statistics.band(value, 0.68)
        b95 = statistics.band(value, 0.95)
        bands[key] = {'mean': b68.mean.numpy(),
                      'lower_68': b68.lower.numpy(), 'upper_68': b68.upper.numpy(),
                      'lower_95': b95.lower.numpy(), 'upper_95': b95.upper.numpy()}
    out['posterior_bands'] = bands
  return out


def _angular_separation_arcmin(ra1, dec1, ra2, dec2):
  """Angles (arcmin) between positions ``[P]`` and ``[Q]``: ``[P, Q]``.

  From the chord |u − v| = 2 sin(θ/2), exact at small angles (arccos of
  the dot product loses half the digits there).
  """
  u = sky.unit_vectors(ra1, dec1)[:, None, :]
  v = sky.unit_vectors(ra2, dec2)[None, :, :]
  chord = np.linalg.norm(u - v, axis=-1)
  return np.degrees(2.0 * np.arcsin(np.minimum(chord / 2.0, 1.0))) * 60.0


def peak_tables(shear_map, result, threshold_snr=2.0, match_radius_arcmin=2.0,
                clusters=None, min_m500=0.0):
  """The posterior peak catalogue, cross-matched with a cluster list.

  Peaks are those of the posterior mean in S/N = mean / posterior std above
  ``threshold_snr`` (`statistics.posterior_peak_catalog`, with sky
  positions through the map's WCS). With ``clusters``: for each cluster on
  the map with M500 >= ``min_m500``, the posterior probability of a peak
  above the threshold within the matching radius of its position
  (`statistics.peak_probability_at`) and the separation of the nearest
  peak of the catalogue; for each peak, the nearest cluster (of any mass)
  and its separation, redshift and mass.

  Args:
    shear_map: the data (its mask, pixel scale and WCS; a WCS is needed).
    result: the ``posterior`` `EstimatorResult` (with its samples).
    threshold_snr: S/N threshold of the peaks (> 0).
    match_radius_arcmin: matching radius in arcmin (> 0).
    clusters: optional structured array with ``id``, ``ra``, ``dec`` (deg),
      ``z`` and ``m500`` (10¹³ M☉), as `catalog.read_cluster_list` reads.
    min_m500: mass cut of the clusters whose peak probability is reported
      (10¹³ M☉).

  Returns:
    ``(peaks, matched)``: dicts of numpy columns (one row per peak, highest
    first; one row per cluster above the cut on the map), ``matched``
    None without clusters. Peak columns: those of
    `statistics.posterior_peak_catalog` (``x``, ``y``, ``kappa``, ``snr``,
    ``ra_deg``, ``dec_deg``, ``probability``, ``position_scatter_arcmin``,
    ``height_lower``, ``height_upper``) plus, with clusters,
    ``nearest_cluster_id``, ``nearest_cluster_arcmin``,
    ``nearest_cluster_z``, ``nearest_cluster_m500``. Cluster columns:
    ``id``, ``ra_deg``, ``dec_deg``, ``z``, ``m500``, ``x``, ``y``,
    ``on_mask``, ``peak_probability``, ``nearest_peak_arcmin``.

  Raises:
    ValueError: without posterior samples or WCS, or for bad thresholds.
  """
  post = getattr(result, 'posterior', None)
  if post is None or post.std is None:
    raise ValueError('peak_tables needs the posterior estimator\'s result with '
                     'at least 2 samples.')
  if shear_map.wcs is None:
    raise ValueError('peak_tables needs a shear map with a WCS (sky positions).')
  threshold = _checks.positive_scalar(threshold_snr, 'threshold_snr', 'S/N')
  samples = np.asarray(post.samples, np.float64)
  mask = np.asarray(shear_map.mask, np.float64)
  std = np.where(mask > 0, np.asarray(post.std, np.float64), 1.0)
  pix = float(shear_map.pixel_scale_arcmin)
  peaks = statistics.posterior_peak_catalog(
      samples, threshold, match_radius_arcmin, pix, mask=mask, noise_std=std,
      wcs=shear_map.wcs)
  if clusters is None:
    return peaks, None
  n = mask.shape[-1]
  x, y = shear_map.wcs.world_to_pixel_values(clusters['ra'], clusters['dec'])
  x, y = np.floor(np.asarray(x) + 0.5), np.floor(np.asarray(y) + 0.5)
  on_map = (x >= 0) & (x < n) & (y >= 0) & (y < n)
  if peaks['x'].size:
    separation = _angular_separation_arcmin(
        peaks['ra_deg'], peaks['dec_deg'], clusters['ra'], clusters['dec'])
    nearest = np.argmin(separation, axis=1)
    peaks['nearest_cluster_id'] = clusters['id'][nearest]
    peaks['nearest_cluster_arcmin'] = separation[np.arange(nearest.size), nearest]
    peaks['nearest_cluster_z'] = clusters['z'][nearest]
    peaks['nearest_cluster_m500'] = clusters['m500'][nearest]
  else:
    for key, dtype in (('id', np.int64), ('arcmin', float), ('z', float),
                       ('m500', float)):
      peaks[f'nearest_cluster_{key}'] = np.zeros(0, dtype)
  chosen = on_map & (clusters['m500'] >= float(min_m500))
  cx, cy = x[chosen].astype(np.int64), y[chosen].astype(np.int64)
  at = statistics.peak_probability_at(
      samples, cx, cy, threshold, match_radius_arcmin, pix, mask=mask,
      noise_std=std)
  matched = {'id': clusters['id'][chosen], 'ra_deg': clusters['ra'][chosen],
             'dec_deg': clusters['dec'][chosen], 'z': clusters['z'][chosen],
             'm500': clusters['m500'][chosen], 'x': cx, 'y': cy,
             'on_mask': mask[cy, cx] > 0,
             'peak_probability': at['probability']}
  if peaks['x'].size:
    matched['nearest_peak_arcmin'] = _angular_separation_arcmin(
        matched['ra_deg'], matched['dec_deg'], peaks['ra_deg'],
        peaks['dec_deg']).min(axis=1)
  else:
    matched['nearest_peak_arcmin'] = np.full(cx.size, np.nan)
  return peaks, matched


def peak_probability_baseline(shear_map, result, threshold_snr=2.0,
                              match_radius_arcmin=2.0, num_positions=400,
                              seed=0):
  """The peak probability at random positions on the mask: the null level.

  `statistics.peak_probability_at` of the posterior samples (S/N = sample /
  posterior std, as `peak_tables`) at ``num_positions`` pixels drawn
  uniformly on the mask: how often noise alone puts a peak above the
  threshold within the matching radius. A cluster's peak probability means
  something only against this level.

  Args:
    shear_map: the data (its mask and pixel scale).
    result: the ``posterior`` `EstimatorResult`.
    threshold_snr: S/N threshold of the peaks (> 0).
    match_radius_arcmin: matching radius in arcmin (> 0).
    num_positions: random positions (int >= 1; fewer when the mask has
      fewer pixels).
    seed: numpy seed of the positions.

  Returns:
    `dict` of Python floats: ``mean``, ``median``, ``p84``, ``p95`` of the
    probability, and ``num_positions``.
  """
  post = getattr(result, 'posterior', None)
  if post is None or post.std is None:
    raise ValueError('peak_probability_baseline needs the posterior '
                     'estimator\'s result with at least 2 samples.')
  threshold = _checks.positive_scalar(threshold_snr, 'threshold_snr', 'S/N')
  num_positions = _checks.positive_int(num_positions, 'num_positions')
  mask = np.asarray(shear_map.mask, np.float64)
  ys, xs = np.nonzero(mask > 0)
  pick = np.random.default_rng(seed).choice(
      ys.size, min(num_positions, ys.size), replace=False)
  std = np.where(mask > 0, np.asarray(post.std, np.float64), 1.0)
  at = statistics.peak_probability_at(
      np.asarray(post.samples, np.float64), xs[pick], ys[pick], threshold,
      match_radius_arcmin, float(shear_map.pixel_scale_arcmin), mask=mask,
      noise_std=std)
  p = at['probability']
  return {'mean': float(p.mean()), 'median': float(np.median(p)),
          'p84': float(np.quantile(p, 0.84)), 'p95': float(np.quantile(p, 0.95)),
          'num_positions': int(p.size)}


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
