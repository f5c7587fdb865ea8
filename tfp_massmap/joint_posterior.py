"""The joint posterior of a convergence map and cosmological parameters.

`JointPosteriorSampler` draws independent samples of

  p(κ, θ | γ) ∝ p(γ | κ) p(κ, θ)

for a joint prior (`tfp_massmap.priors.conditional.JointPrior`: a score over
κ and θ, a prior range and density over θ) with the annealed HMC of
`tfp_massmap.posterior`, its state of two parts, [κ maps ``[C, N, N]``, θ
``[C, D]``], through `tfp.mcmc.sample_chain`. The annealed target at noise
level σ is the shear likelihood with variance σ_pix² + σ² (as for κ alone)
times the joint prior smoothed in κ, p_σ(κ, θ) (θ itself is not smoothed:
see the conditional module's docstring).

#### Two routes for θ

``theta_update='marginal'`` (the default) uses p(κ, θ | γ) = p(θ | γ)
p(κ | γ, θ): θ comes from its field-level marginal posterior, with κ
integrated out exactly (`tfp_massmap.theta_posterior`: for data on every
pixel with white noise, p(γ | θ) ∝ p_σn(κ_E | θ), the prior's
``field_log_likelihood``, drawn by quadrature for D <= 2 or by TFP's
Metropolis-corrected HMC: ``theta_method``), and
each chain then anneals κ with its θ held (u's leapfrog step 0, ∇u = 0):
the conditional posterior sampler, so κ needs no ``num_final_steps``.
θ never crosses the funnel between itself and κ's noise-dominated modes.
``theta_update='annealed'`` moves θ inside the annealed HMC with κ (the
rest of this docstring); it holds where most modes are measured (16² test
maps) and fails where noise dominates (at the demo's 128² and noise σ8
sticks near the top of its range: docs/benchmarks.md).

#### Masks and coloured noise (the marginal route)

With masked pixels or noise that varies, κ_E's noise is no longer white
and the identity fails. The sampler then augments the data: with σ_w the
smallest observed noise, γ = y + δ where y = Aκ + n_w is white-noise data
on the full grid (n_w ~ N(0, σ_w²)) and δ ~ N(0, σ_pix² − σ_w²) on the
observed pixels, which is exactly the likelihood. A partially collapsed
Gibbs sampler (κ integrated out of θ's step) runs ``num_sweeps`` sweeps of

  κ ~ p(κ | γ, θ) (annealed HMC, θ held), y ~ p(y | κ, γ) (per pixel,
  `theta_posterior.impute_white_shear`), θ ~ p(θ | y) (field-level),

then a last κ run at the final θ. Each sweep costs one κ run. Through the
imputed pixels θ reads the power of the sweeps' κ samples where the data
do not constrain κ, so those runs use their own, finer annealing
(``sweep_schedule``, default 300 levels): with the default 30 levels the κ
samples carry 12–17 % excess power in prior-dominated modes, and on the
demo's COSMOS footprint the sweeps then ratchet σ8 up to 0.905 ± 0.036
(0.917 after 16 sweeps), against 0.801 ± 0.032 with 300 levels and
0.797 ± 0.030 with exact Wiener samples in the sweeps (docs/benchmarks.md).
With accurate κ the mean θ settles within one or two sweeps, but each
chain forgets its start (θ drawn from the prior) more slowly: after 3
sweeps the σ8 std there is 0.042–0.044, after 8 0.030–0.032 (default
``num_sweeps`` 8; measured with HMC draws of θ, whose chains also start
from the previous sweep's θ; the grid's draws are independent given y).
The mean θ after each sweep is in
``diagnostics['theta_posterior']['sweep_theta_means']``, and a mean still
moving by more than 3 Monte Carlo errors in the last sweep warns.

#### θ inside its bounds

The chains move an unconstrained u ∈ ℝ^D with θ = low + (high − low) Φ(u)
(`theta_bijector`: Φ the standard normal CDF, `tfb.NormalCDF` then
`tfb.Scale` and `tfb.Shift`), and the target in u holds the log-det
Jacobian: ∇u log p = (∂θ/∂u) ∇θ log p_σ(κ, θ) + ∇u log|∂θ/∂u|
(`joint_posterior_score_fn`). So θ never leaves its range, and a uniform θ
prior is u ~ N(0, I): a chain that wanders towards a bound is pulled back
with force |u|. (With `tfb.Sigmoid`
the prior of u is logistic, whose tails are flat where the likelihood is
saturated: on a 16² test map one chain in 128 stayed stuck at the upper
bound.) θ starts uniform over its range (u ~ N(0, I)), or at
``initial_theta``.

#### Step sizes

κ takes leapfrog steps ``step_size_factor · σ`` as in `PosteriorSampler`
(stable below √2 σ, `AnnealedHamiltonianMonteCarlo`). u takes steps

  ε_u = max(theta_step_size_factor · σ, theta_step_size),

set before each transition by a wrapper kernel (as TFP's step-size
adaptation kernels set ``step_size``). θ is not smoothed, so its posterior
width does not shrink with σ: steps ∝ σ move it at large σ, where κ's
excess power drives it, and the floor ``theta_step_size`` keeps it moving
at the last levels, where steps ∝ σ would freeze it. Leapfrog on u is stable
while ε_u < 2 w_u, w_u the width of u's conditional given κ (about 0.1 for
the amplitude of a 16² map, smaller for larger maps: scale
``theta_step_size`` down as 1/√(number of modes)). Too large a step shows in
a low would-be acceptance and in diverged chains.

#### What the annealing does to θ

The annealed target's θ-marginal is p(θ) ∫ p_σ(γ | κ) p_σ(κ | θ) dκ: for
the Gaussian amplitude prior the data's E-mode power is explained by
A S + σ_pix² + 2σ², so at σ² comparable to the signal power the θ-marginal
leans towards small amplitudes (to the lower bound on a 16² map at
σ ≈ 0.015) and recovers only as σ → σ_min, while the steps shrink. So the
sampler runs ``num_final_steps`` (default 100) more transitions at σ_min,
where θ and κ settle. On 16² maps (full mask, white noise, amplitude
uniform on (0.2, 5), 128 chains, default schedule) the amplitude posterior
mean comes out low by 0.5 to 1.9 posterior std without them, and by 0.1 to
0.4 with 100 (σ_pix = 0.005, most modes measured; std within 5 %). Where
noise dominates many modes (σ_pix = 0.015) κ's prior-dominated modes
(width √(A S)) and θ (narrow given κ) form a funnel that steps ∝ σ for κ
cross slowly: there the mean is off by up to 0.8 posterior std with 100
final steps. tests/test_joint_posterior.py pins the first regime.

#### Divergence

As in `PosteriorSampler`, a chain whose state ever held a NaN, an inf or a
value beyond ``divergence_bound`` diverged, with the kernel's running max
over both parts: |κ| (dimensionless) or |u|; |u| > 10 is θ within 1e-23 of
its range's width from a bound, where u has run away.

`sample_joint_posterior` is the one-call form, `parameter_summary` the mean,
std and 68/95 % intervals of each parameter, and
`JointPosteriorSampler.sample_conditional` the conditional posterior
p(κ | γ, θ) at a fixed θ (`PosteriorSampler` with ``joint_prior.given(θ)``).
Shear, convergence and noise levels are dimensionless; θ has its own units.
"""

import warnings

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.bijectors import normal_cdf
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import special_math
from tensorflow_probability.python.mcmc import kernel as kernel_base

from tfp_massmap import _checks
from tfp_massmap import likelihood as likelihood_lib
from tfp_massmap import posterior
from tfp_massmap import theta_posterior
from tfp_massmap.mcmc import annealed_hmc
from tfp_massmap.mcmc import driver
from tfp_massmap.mcmc import results
from tfp_massmap.mcmc import schedules
from tfp_massmap.priors import conditional

__all__ = [
    'DEFAULT_NUM_FINAL_STEPS',
    'DEFAULT_NUM_SWEEPS',
    'DEFAULT_SWEEP_NUM_LEVELS',
    'DEFAULT_THETA_STEP_SIZE',
    'DEFAULT_THETA_STEP_SIZE_FACTOR',
    'THETA_UPDATES',
    'default_sweep_schedule',
    'JointPosteriorSampler',
    'grid_parameter_summary',
    'joint_posterior_score_fn',
    'parameter_summary',
    'sample_joint_posterior',
    'theta_bijector',
]

# Transitions at σ_min after the annealing ("What the annealing does to θ").
DEFAULT_NUM_FINAL_STEPS = 100
# How θ moves (`JointPosteriorSampler`): from its field-level marginal, or
# inside the annealed HMC.
THETA_UPDATES = ('marginal', 'annealed')
# Gibbs sweeps of the marginal route for masked or non-white data, and the
# levels of their κ runs (docs/benchmarks.md, "At the demo's size").
DEFAULT_NUM_SWEEPS = 8
DEFAULT_SWEEP_NUM_LEVELS = 300
# u's leapfrog step max(factor · σ, floor): "Step sizes" in the docstring.
DEFAULT_THETA_STEP_SIZE_FACTOR = 5.
DEFAULT_THETA_STEP_SIZE = 0.05

# How far the divergence bound on |u| must lie above the largest start |u|.
_U_MARGIN = 3.


theta_bijector = theta_posterior.theta_bijector


def joint_posterior_score_fn(shear, noise_std, mask, joint_prior, bounds,
                             hold_theta=False):
  """The annealed joint posterior score ([κ, u], σ) ↦ [∇κ, ∇u] log p_σ.

  ∇κ = ∇κ log p_σ(γ | κ) + ∇κ log p_σ(κ, θ) (the `ShearLikelihood` with
  variance noise_std² + σ², by automatic differentiation, plus the prior's
  κ score) and, with θ = low + (high − low) Φ(u) (`theta_bijector`),

    ∇u = (high − low) φ(u) ∇θ log p_σ(κ, θ) − u,

  the last term the gradient of the log-det Jacobian log φ(u) (closed form:
  TFP bijectors cache θ from u, and a gradient through that cache can miss
  the Jacobian term). The likelihood does not depend on θ. One call of
  ``joint_prior.score`` per evaluation; with ``hold_theta`` ∇u is 0 (θ is
  fixed per chain) and the κ part comes from the prior's ``score_kappa``
  when it has one (a learned prior then skips its ratio network).

  Args:
    shear: observed mean ellipticity ``[N, N, 2]``.
    noise_std: ``[N, N]`` or ``[N, N, 2]``.
    mask: ``[N, N]`` 0/1.
    joint_prior: a `JointPrior`.
    bounds: ``[D, 2]`` (low, high), the prior range of θ.
    hold_theta: Python bool; the score of p(κ | γ, θ) per chain, ∇u = 0.

  Returns:
    A callable ``([κ [..., N, N], u [..., D]], sigma) -> [∇κ, ∇u]``.
  """
  bounds = np.asarray(bounds, np.float64)

  def score(parts, sigma):
    kappa, u = parts
    with tf.GradientTape() as tape:
      tape.watch(kappa)
      log_likelihood = likelihood_lib.ShearLikelihood(
          kappa, noise_std, mask, extra_variance=tf.square(sigma)).log_prob(
              shear)
    likelihood_score = tape.gradient(log_likelihood, kappa)
    width = tf.constant(bounds[:, 1] - bounds[:, 0], u.dtype)
    theta = tf.constant(bounds[:, 0], u.dtype) + width * special_math.ndtr(u)
    if hold_theta:
      score_kappa = getattr(joint_prior, 'score_kappa', None)
      prior_kappa = (score_kappa(kappa, theta, sigma) if callable(score_kappa)
                     else joint_prior.score(kappa, theta, sigma)[0])
      return [likelihood_score + prior_kappa, tf.zeros_like(u)]
    prior_kappa, prior_theta = joint_prior.score(kappa, theta, sigma)
    normal_density = tf.exp(-0.5 * tf.square(u)) / np.sqrt(2. * np.pi)
    score_u = width * normal_density * prior_theta - u
    return [likelihood_score + prior_kappa, score_u]
  return score


class _ThetaStepSize(kernel_base.TransitionKernel):
  """Sets the u part's leapfrog step to max(factor · σ, floor) at every σ.

  Wraps an `AnnealedHamiltonianMonteCarlo` on [κ, u] and, like TFP's
  step-size adaptation kernels, sets the ``step_size`` of its results before
  each transition: κ keeps its factor (step ∝ σ), u gets the factor
  max(``theta_step_size_factor``, ``theta_step_size`` / σ) at the next
  transition's noise level σ.
  """

  def __init__(self, inner_kernel, theta_step_size_factor, theta_step_size):
    self._parameters = dict(inner_kernel=inner_kernel,
                            theta_step_size_factor=theta_step_size_factor,
                            theta_step_size=theta_step_size)

  @property
  def inner_kernel(self):
    return self._parameters['inner_kernel']

  @property
  def parameters(self):
    return self._parameters

  @property
  def is_calibrated(self):
    return self.inner_kernel.is_calibrated

  def _set_theta_factor(self, kernel_results):
    kappa_factor = kernel_results.step_size[0]
    sigma = tf.cast(self.inner_kernel.schedule.sigma(kernel_results.step),
                    kappa_factor.dtype)
    dtype = kappa_factor.dtype
    theta_factor = tf.maximum(
        tf.constant(self._parameters['theta_step_size_factor'], dtype),
        tf.constant(self._parameters['theta_step_size'], dtype) / sigma)
    return kernel_results._replace(step_size=[kappa_factor, theta_factor])

  def one_step(self, current_state, previous_kernel_results, seed=None):
    state, kernel_results = self.inner_kernel.one_step(
        current_state, previous_kernel_results, seed=seed)
    return state, self._set_theta_factor(kernel_results)

  def bootstrap_results(self, init_state):
    return self._set_theta_factor(
        self.inner_kernel.bootstrap_results(init_state))


def parameter_summary(result):
  """Mean, std and central 68 % and 95 % intervals of each parameter.

  Args:
    result: a `PosteriorSamples` with ``parameters`` (from
      `JointPosteriorSampler.sample`, before or after ``drop_diverged``).

  Returns:
    `dict` from each parameter name to a dict of Python floats: ``mean``,
    ``std`` (1/S normalisation), ``interval_68`` and ``interval_95``
    (``[lower, upper]`` lists, `credible_interval`: 95 % needs 39 samples).

  Raises:
    ValueError: if ``result`` holds no parameter samples or fewer than 2.
  """
  parameters = getattr(result, 'parameters', None)
  if not parameters:
    raise ValueError('result holds no parameter samples (its parameters '
                     'field is None): parameter_summary takes the result of '
                     'a joint posterior sampler (sample_joint_posterior).')
  summary = {}
  for name, value in parameters.items():
    value = np.asarray(value, np.float64)
    summary[name] = dict(
        mean=float(value.mean()), std=float(value.std()),
        **{f'interval_{round(100 * level)}':
           results.credible_interval(value, level).numpy().tolist()
           for level in (0.68, 0.95)})
  return summary


def grid_parameter_summary(centres, weights, names, truth=None):
  """`parameter_summary` of a posterior tabulated on a grid of cells.

  Each weight is the posterior mass of a cell of the grid, spread uniformly
  across the cell, so each marginal's CDF is piecewise linear between cell
  edges (half-way between centres, and half a cell beyond the end ones) and
  its variance holds the w²/12 of the cells. Cells of the box, as in
  `PowerSpectrumLikelihood.grid_posterior` or
  `theta_posterior.sample_u_grid`, give the midpoint rule.

  Args:
    centres: the cell centres of each parameter, a list of D increasing,
      equally spaced 1-d arrays (the parameter's units), D >= 1.
    weights: the posterior mass of each cell, ``[P_1, ..., P_D]`` (>= 0,
      not all 0; normalised here). Axis d belongs to ``centres[d]``.
    names: the D parameter names, in axis order.
    truth: optional D values (the parameters' units), e.g. the true θ of a
      simulated map; each parameter's entry then also holds
      ``cdf_at_truth``, its marginal CDF there (the PIT of a calibration
      test: uniform over maps when the posterior is calibrated).

  Returns:
    `dict` from each name to a dict of Python floats: ``mean``, ``std``,
    ``interval_68`` and ``interval_95`` (central intervals, ``[lower,
    upper]`` lists), as `parameter_summary` gives for samples, and
    ``cdf_at_truth`` when ``truth`` is given.

  Raises:
    ValueError: for centres that are not increasing and equally spaced, a
      weights shape other than the centres', negative or all-zero weights,
      or ``names`` or ``truth`` not of length D.
  """
  centres = [np.asarray(c, np.float64) for c in centres]
  weights = np.asarray(weights, np.float64)
  dims = len(centres)
  shape = tuple(c.size for c in centres)
  if dims == 0 or weights.shape != shape:
    raise ValueError(f'weights has shape {weights.shape}; expected one axis '
                     f'per parameter, the sizes of the centres {shape}.')
  if len(names) != dims:
    raise ValueError(f'names {list(names)} has {len(names)} entries; expected '
                     f'one per axis of the grid ({dims}).')
  if truth is not None and len(truth) != dims:
    raise ValueError(f'truth {list(truth)} has {len(truth)} values; expected '
                     f'one per axis of the grid ({dims}).')
  if not np.all(np.isfinite(weights)) or np.any(weights < 0.):
    raise ValueError('weights must be finite and >= 0; got a minimum of '
                     f'{weights.min()}.')
  total = weights.sum()
  if total <= 0.:
    raise ValueError('weights are all 0; expected posterior masses that '
                     'are not all 0.')
  summary = {}
  for d, (name, axis) in enumerate(zip(names, centres)):
    steps = np.diff(axis)
    if axis.ndim != 1 or axis.size < 1 or (
        axis.size > 1 and (np.any(steps <= 0.) or
                           np.ptp(steps) > 1e-6 * steps.mean())):
      raise ValueError(f'centres of {name} must be a 1-d array of '
                       f'increasing, equally spaced values; got {axis}.')
    width = steps.mean() if axis.size > 1 else 0.
    mass = np.sum(weights, axis=tuple(a for a in range(dims) if a != d))
    mass /= total
    mean = float(mass @ axis)
    edges = np.concatenate([axis - width / 2., axis[-1:] + width / 2.])
    cdf = np.concatenate([[0.], np.cumsum(mass)])
    part = dict(
        mean=mean,
        std=float(np.sqrt(mass @ (axis - mean)**2 + width**2 / 12.)),
        **{f'interval_{round(100 * level)}': np.interp(
            [(1. - level) / 2., (1. + level) / 2.], cdf, edges).tolist()
           for level in (0.68, 0.95)})
    if truth is not None:
      part['cdf_at_truth'] = float(np.interp(truth[d], edges, cdf))
    summary[name] = part
  return summary


def default_sweep_schedule():
  """The κ annealing of the Gibbs sweeps: σ 0.1 → 1e-3 in 300 levels.

  10× the levels of `posterior.default_schedule` (902 score evaluations
  per sweep with 3 leapfrog steps): under a Gaussian prior its samples'
  power in prior-dominated modes is right to 1–2 % (12–17 % high with the
  default 30 levels), and θ | y reads that power in the imputed pixels.
  """
  return schedules.GeometricSchedule(
      sigma_max=posterior.DEFAULT_SIGMA_MAX,
      sigma_min=posterior.DEFAULT_SIGMA_MIN,
      num_levels=DEFAULT_SWEEP_NUM_LEVELS)


def _warn_if_drifting(sweep_means, theta, names, num_sweeps):
  """Warns when the mean θ moved > 3 Monte Carlo errors in the last sweep."""
  last, before = np.asarray(sweep_means[-1]), np.asarray(sweep_means[-2])
  error = theta.std(axis=0) / np.sqrt(theta.shape[0])
  moved = np.abs(last - before) / np.maximum(error, 1e-300)
  if np.any(moved > 3.):
    i = int(np.argmax(moved))
    warnings.warn(
        f'the mean {names[i]} still moved from {before[i]:.4g} to '
        f'{last[i]:.4g} ({moved[i]:.1f} Monte Carlo errors) in the last of '
        f'{num_sweeps} Gibbs sweeps: the theta samples may not have '
        'converged; raise num_sweeps (diagnostics["theta_posterior"]'
        '["sweep_theta_means"] traces them).', RuntimeWarning)


class JointPosteriorSampler(posterior.AnnealedSampler):
  """Annealed-HMC sampler of p(κ, θ | γ), compiled once, for many shear maps.

  Like `tfp_massmap.posterior.PosteriorSampler` (same schedule, method and
  κ settings, same compile-once behaviour: the data, the starting states
  and the seeds are tensor arguments), with a state of two parts [κ, u] and
  θ = `theta_bijector`(u) (module docstring). Each of ``num_samples``
  chains starts at κ = ``initial_state + σ_max · z`` and θ uniform over its
  range (or ``initial_theta``), anneals through the schedule and
  ``num_final_steps`` more transitions at its last level, and its final
  (κ, θ), κ denoised at σ_min at that θ when ``tweedie``, is one sample of
  the joint posterior; the κ samples alone are samples of the marginal
  p(κ | γ).

  #### Example

  ```python
  fiducial = GaussianPrior.from_power_spectrum(ell, cl, n, pixel_scale)
  joint = AmplitudeGaussianPrior(fiducial, (0.6, 1.0), sigma8_fiducial=0.8)
  sampler = JointPosteriorSampler(joint, num_final_steps=100)
  result = sampler.sample(shear_map, num_samples=64, seed=(1, 2))
  result.parameters['sigma8']            # [64] σ8 samples
  parameter_summary(result)['sigma8']    # mean, std, 68/95 % intervals
  ```
  """

  def __init__(self,
               joint_prior,
               *,
               theta_update='marginal',
               theta_method=None,
               num_sweeps=DEFAULT_NUM_SWEEPS,
               sweep_schedule=None,
               schedule=None,
               num_final_steps=None,
               method='hmc',
               num_leapfrog_steps=None,
               step_size_factor=posterior.DEFAULT_STEP_SIZE_FACTOR,
               theta_step_size_factor=DEFAULT_THETA_STEP_SIZE_FACTOR,
               theta_step_size=DEFAULT_THETA_STEP_SIZE,
               metropolis_correction=None,
               tweedie=True,
               jit_compile=None):
    """Builds the sampler; checks every setting.

    Args:
      joint_prior: a `tfp_massmap.priors.conditional.JointPrior`, e.g. an
        `AmplitudeGaussianPrior`.
      theta_update: ``'marginal'`` (default): θ from its field-level
        marginal p(θ | γ) (`tfp_massmap.theta_posterior`: exact, for data on
        every pixel with white noise, and a prior with
        ``field_log_likelihood``), then κ from p(κ | γ, θ) by the annealed
        HMC with each chain's θ held; ``'annealed'``: θ moves in the
        annealed HMC with κ (any mask and noise; module docstring for where
        it fails).
      theta_method: with ``theta_update='marginal'``, how θ | γ (and
        θ | y in the sweeps) is drawn: ``'grid'`` (quadrature, D <= 2) or
        ``'hmc'`` (`tfp_massmap.theta_posterior`); default
        `theta_posterior.default_theta_method` (grid for D <= 2).
      num_sweeps: with ``theta_update='marginal'``, the sweeps of the
        partially collapsed Gibbs sampler for masked or non-white data
        (module docstring, "Masks and coloured noise"; int >= 1, default
        8); unused for fully observed white-noise data.
      sweep_schedule: the annealing of the κ runs inside those sweeps
        (default `default_sweep_schedule`: 300 levels, 902 evaluations;
        θ sees their κ through the imputed pixels, so they must be
        accurate where the data do not constrain κ); the last κ run uses
        ``schedule``.
      schedule, method, num_leapfrog_steps, metropolis_correction, tweedie,
        jit_compile: as in `PosteriorSampler` (default schedule:
        `posterior.default_schedule()`).
      num_final_steps: transitions at the schedule's last noise level after
        it (int >= 0); default 100 with ``theta_update='annealed'``, where θ
        and κ settle (module docstring, "What the annealing does to θ"), 0
        with ``'marginal'`` (κ given θ needs none, as `PosteriorSampler`).
      step_size_factor: κ's leapfrog step / σ, in (0, √2) (default 0.5; 1
        suits an exact prior score).
      theta_step_size_factor, theta_step_size: u's leapfrog step is
        max(theta_step_size_factor · σ, theta_step_size) (positive floats,
        dimensionless; u is N(0, 1) under a uniform θ prior); defaults 5 and
        0.05 (module docstring, "Step sizes"); unused with
        ``theta_update='marginal'``.

    Raises:
      ValueError: for a joint prior with missing or malformed members
        (`conditional.joint_prior_properties`), or a bad setting.
    """
    self._properties = conditional.joint_prior_properties(joint_prior)
    if theta_update not in THETA_UPDATES:
      raise ValueError(f'theta_update must be one of {THETA_UPDATES}, got '
                       f'{theta_update!r}.')
    self._theta_update = theta_update
    self._theta_method = theta_posterior.checked_theta_method(
        theta_method, joint_prior)
    self._num_sweeps = _checks.positive_int(num_sweeps, 'num_sweeps')
    self._sweep_schedule = posterior._checked_schedule(  # pylint: disable=protected-access
        default_sweep_schedule() if sweep_schedule is None else sweep_schedule)
    self._sweeper = None
    if num_final_steps is None:
      num_final_steps = (DEFAULT_NUM_FINAL_STEPS if theta_update == 'annealed'
                         else 0)
    self._num_final_steps = _checks.positive_int(
        num_final_steps, 'num_final_steps', minimum=0)
    self._annealing = posterior._checked_schedule(schedule)  # pylint: disable=protected-access
    self._theta_step_size_factor = _checks.positive_scalar(
        theta_step_size_factor, 'theta_step_size_factor')
    self._theta_step_size = _checks.positive_scalar(theta_step_size,
                                                    'theta_step_size')
    self._setup(joint_prior,
                schedules.HeldSchedule(self._annealing, self._num_final_steps),
                method=method, num_leapfrog_steps=num_leapfrog_steps,
                step_size_factor=step_size_factor,
                metropolis_correction=metropolis_correction, tweedie=tweedie,
                jit_compile=jit_compile)

  @property
  def schedule(self):
    """The annealing schedule (without the ``num_final_steps``)."""
    return self._annealing

  @property
  def theta_names(self):
    return self._properties.theta_names

  @property
  def theta_update(self):
    """``'marginal'`` or ``'annealed'`` (``__init__``)."""
    return self._theta_update

  @property
  def settings(self):
    """`dict` of the sampler's settings, as recorded in the diagnostics."""
    return dict(theta_update=self._theta_update,
                theta_method=self._theta_method, num_sweeps=self._num_sweeps,
                sweep_schedule=self._sweep_schedule, schedule=self._annealing,
                num_final_steps=self._num_final_steps,
                num_steps=self._schedule.num_steps, method=self._method,
                num_leapfrog_steps=self._num_leapfrog_steps,
                step_size_factor=self._step_size_factor,
                theta_step_size_factor=self._theta_step_size_factor,
                theta_step_size=self._theta_step_size,
                metropolis_correction=self._metropolis_correction,
                tweedie=self._tweedie, jit_compile=self._jit_compile)

  def _bijector(self, dtype):
    return theta_bijector(self._properties.theta_bounds, dtype)

  def _make_kernel(self, target_score_fn):
    held = self._theta_update == 'marginal'  # u's leapfrog step is then 0.
    return _ThetaStepSize(
        annealed_hmc.AnnealedHamiltonianMonteCarlo(
            target_score_fn=target_score_fn,
            schedule=self._schedule,
            step_size_factor=[self._step_size_factor] * 2,
            num_leapfrog_steps=self._num_leapfrog_steps,
            metropolis_correction=self._metropolis_correction),
        0. if held else self._theta_step_size_factor,
        0. if held else self._theta_step_size)

  def _kernel(self, shear, noise_std, mask):
    return self._make_kernel(joint_posterior_score_fn(
        shear, noise_std, mask, self._prior, self._properties.theta_bounds,
        hold_theta=self._theta_update == 'marginal'))

  def _start_fn(self, maps, u, seed, shear, noise_std, mask):
    sigma = tf.cast(self._schedule.sigma(0), maps.dtype)
    state = [maps + sigma * samplers.normal(tf.shape(maps), dtype=maps.dtype,
                                            seed=seed), u]
    return state, self._kernel(shear, noise_std, mask).bootstrap_results(
        state)

  def _finish_fn(self, state):
    kappa, u = state
    theta = self._bijector(u.dtype).forward(u)
    if self._tweedie:
      sigma = tf.cast(self._schedule.sigma(self._schedule.num_steps - 1),
                      kappa.dtype)
      kappa = conditional.denoise_given(self._prior, kappa, theta, sigma)
    return kappa, theta

  def _initial_u(self, initial_theta, num_samples, dtype, seed):
    """Starting u ``[num_samples, D]``: of the given θ, or N(0, I)."""
    bounds = self._properties.theta_bounds
    num_params = bounds.shape[0]
    if initial_theta is None:  # θ uniform over its range.
      return samplers.normal([num_samples, num_params], dtype=dtype,
                             seed=seed)
    theta = np.asarray(initial_theta, np.float64)
    if theta.shape not in ((num_params,), (num_samples, num_params)):
      raise ValueError(
          f'initial_theta must have shape [D] or [{num_samples}, D] with '
          f'D = {num_params} (parameters {self.theta_names}), got shape '
          f'{theta.shape}.')
    for row in theta.reshape(-1, num_params):
      conditional.check_theta(self._prior, row, 'initial_theta')
    unit = (theta - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0])
    if np.any(unit <= 0.) or np.any(unit >= 1.):
      raise ValueError('initial_theta must lie strictly inside '
                       f'theta_bounds {bounds.tolist()} (θ at a bound is '
                       f'u = ±inf), got {theta.tolist()}.')
    return tf.broadcast_to(
        normal_cdf.NormalCDF().inverse(tf.constant(unit, dtype)),
        [num_samples, num_params])

  def sample(self,
             shear_map,
             *,
             num_samples=64,
             initial_state=None,
             initial_theta=None,
             batch_size=None,
             seed=None,
             divergence_bound=posterior.DEFAULT_DIVERGENCE_BOUND,
             allow_pixel_scale_mismatch=False,
             progress=False):
    """Independent samples of p(κ, θ | γ) for one shear map.

    Args:
      shear_map, num_samples, initial_state, batch_size, seed,
        allow_pixel_scale_mismatch, progress: as in `PosteriorSampler.sample`
        (the prior's dtype, map size and pixel scale are checked against the
        data the same way).
      initial_theta: optional θ ``[D]`` or ``[num_samples, D]`` strictly
        inside ``theta_bounds`` where the chains start; default uniform over
        the range, drawn from ``seed``.
      divergence_bound: a chain with |κ| or |u| above this at any step has
        diverged (module docstring); default 10. Must exceed the reach of the
        starting maps (max|initial_state| + 6 σ_max) and the largest
        starting |u| + 3.

    Returns:
      A `PosteriorSamples`: ``samples`` ``[S, N, N]`` and the per-pixel
      summaries of κ, ``parameters`` a dict from each name of
      ``theta_names`` to its samples ``[S]`` (the same chains; their
      summary: `parameter_summary`), and ``diagnostics``, those of
      `PosteriorSampler.sample` without the trace settings, with
      ``settings`` (``num_final_steps``, ``theta_step_size_factor``,
      ``theta_step_size``), ``theta_names`` and ``theta_bounds``;
      ``max_abs_kappa`` per chain is the running max of |κ| and |u|,
      ``final_step_size_factor`` κ's factor; with ``theta_update=
      'marginal'`` also ``theta_posterior``, the θ stage's diagnostics
      (`theta_posterior.sample_u`'s, with ``noise_level``, ``num_sweeps``
      and ``sweep_theta_means``); the score-evaluation counts are those of
      the last κ run (the sweeps add ``num_sweeps`` runs of
      ``sweep_schedule``), the wall time that of all κ runs.

    Raises:
      ValueError: before sampling, as `PosteriorSampler.sample`, or for a
        bad ``initial_theta`` or ``divergence_bound``.

    Warns:
      RuntimeWarning: when chains diverged, naming how many.
    """
    # pylint: disable=protected-access
    data, pixel_scales = posterior._checked_data(
        shear_map, self._prior, allow_pixel_scale_mismatch,
        'sample_joint_posterior')
    dtype = data.shear.dtype
    n = int(data.shear.shape[0])
    num_samples = _checks.positive_int(num_samples, 'num_samples')
    batch_size = (num_samples if batch_size is None else min(
        _checks.positive_int(batch_size, 'batch_size'), num_samples))
    seed = samplers.sanitize_seed(seed, salt='sample_joint_posterior')
    theta_seed, seed = samplers.split_seed(seed)
    start_maps = posterior._initial_state(
        initial_state, num_samples, n, dtype, 'initial_state')
    if self._theta_update == 'marginal':
      if initial_theta is not None:
        raise ValueError(
            "initial_theta is for theta_update='annealed'; with 'marginal' "
            'theta is drawn from its marginal posterior p(theta | gamma).')
      theta_posterior.check_field_level(self._prior)
      start_seed, theta_seed = samplers.split_seed(theta_seed)
      # θ uniform over its range.
      start_u = self._initial_u(None, num_samples, dtype, start_seed)
    else:
      start_u = self._initial_u(initial_theta, num_samples, dtype, theta_seed)
    divergence_bound = posterior._check_divergence_bound(
        divergence_bound, start_maps, self._schedule)
    data_args = (data.shear, data.noise_std, data.mask)
    # pylint: enable=protected-access

    def run(sampler, start_u, seed, desc):
      return sampler._run_kappa(  # pylint: disable=protected-access
          start_maps, start_u, seed, data_args, batch_size,
          divergence_bound, progress, desc)

    if self._theta_update == 'marginal':
      kappa, theta, finals, wall_time, theta_diagnostics = (
          self._sample_marginal(data, start_u, theta_seed, seed, run))
    else:
      kappa, theta, finals, wall_time = run(self, start_u, seed,
                                            'joint annealed HMC')
    diagnostics = self._diagnostics(kappa, theta, finals, divergence_bound,
                                    wall_time)
    diagnostics.update(batch_size=batch_size, **pixel_scales)
    if self._theta_update == 'marginal':
      diagnostics['theta_posterior'] = theta_diagnostics
    diverged = diagnostics['num_diverged_chains']
    if diverged:
      warnings.warn(
          f'{diverged} of {num_samples} chains diverged (a state with NaN, '
          f'inf, |kappa| > {divergence_bound:g} or |u| > '
          f'{divergence_bound:g}; indices in '
          "diagnostics['diverged_chains']): their samples are junk. Use a "
          f'smaller step_size_factor (now {self._step_size_factor:g}), '
          f'theta_step_size_factor (now {self._theta_step_size_factor:g}) or '
          f'theta_step_size (now {self._theta_step_size:g}); '
          'PosteriorSamples.drop_diverged() removes them.', RuntimeWarning)
    parameters = {name: theta[:, i]
                  for i, name in enumerate(self.theta_names)}
    return results.from_samples(kappa, diagnostics, parameters=parameters)

  def _run_kappa(self, start_maps, start_u, seed, data_args, batch_size,
                 divergence_bound, progress, desc):
    """The annealed HMC from (maps, u): (κ, θ, final results, seconds)."""
    u_reach = float(tf.reduce_max(tf.abs(start_u))) + _U_MARGIN
    if divergence_bound <= u_reach:
      raise ValueError(
          f'divergence_bound={divergence_bound!r} must exceed the largest '
          f'starting |u| + {_U_MARGIN:g} = {u_reach:.3g} (u, the '
          'unconstrained theta, counts in the divergence check), or chains '
          'would count as diverged from the start.')
    num_steps = self._schedule.num_steps
    chunks = driver.chunk_lengths(num_steps, posterior._MAX_CHUNK_STEPS)  # pylint: disable=protected-access

    def run_batch(first, batch_seed, bar):
      init_seed, run_seed = samplers.split_seed(batch_seed)
      batch = slice(first, first + batch_size)
      state, kernel_results = self._start(
          start_maps[batch], start_u[batch], init_seed, *data_args)
      state, kernel_results, _ = driver.run_chunks(
          self._advance, state, kernel_results, chunks, run_seed,
          *data_args, progress_bar=bar)
      return self._finish(state), kernel_results

    outputs, wall_time = driver.run_batches(
        run_batch, int(start_u.shape[0]), batch_size, seed,
        num_steps=num_steps, desc=desc, progress=progress)
    return (tf.concat([kappa for (kappa, _), _ in outputs], axis=0),
            tf.concat([theta for (_, theta), _ in outputs], axis=0),
            [kernel_results for _, kernel_results in outputs], wall_time)

  def _sweep_sampler(self):
    """The κ | θ sampler of the Gibbs sweeps (``sweep_schedule``), built once."""
    if self._sweeper is None:
      self._sweeper = JointPosteriorSampler(
          self._prior, theta_update='marginal', schedule=self._sweep_schedule,
          num_final_steps=0, method=self._method,
          num_leapfrog_steps=self._num_leapfrog_steps,
          step_size_factor=self._step_size_factor,
          metropolis_correction=self._metropolis_correction,
          tweedie=self._tweedie, jit_compile=self._jit_compile)
    return self._sweeper

  def _sample_marginal(self, data, start_u, theta_seed, seed, run):
    """θ from p(θ | γ), then κ given θ (``theta_update='marginal'``).

    Fully observed white-noise data: one θ draw (`theta_posterior`), one κ
    run. Otherwise the partially collapsed Gibbs sampler of the module
    docstring: ``num_sweeps`` times κ ~ p(κ | γ, θ), y ~ p(y | κ, γ),
    θ ~ p(θ | y), then a last κ run.
    """
    dtype = data.shear.dtype
    bijector = self._bijector(dtype)
    noise_level, white = theta_posterior.augmentation_noise_level(data)
    num_sweeps = 0 if white else self._num_sweeps
    seeds = samplers.split_seed(seed, n=num_sweeps + 1)
    theta_seeds = samplers.split_seed(theta_seed, n=2 * num_sweeps + 1)
    num_samples = int(start_u.shape[0])
    wall_time = 0.
    sweep_means = []
    if white:
      u, diagnostics = self._sample_u(data.shear, noise_level, num_samples,
                                      theta_seeds[0])
    else:
      u = start_u
      for sweep in range(num_sweeps):
        kappa, _, _, seconds = run(self._sweep_sampler(), u, seeds[sweep],
                                   f'joint κ | θ, sweep {sweep + 1}')
        wall_time += seconds
        imputed = theta_posterior.impute_white_shear(
            data, kappa, noise_level, theta_seeds[2 * sweep + 1])
        u, diagnostics = self._sample_u(imputed, noise_level, num_samples,
                                        theta_seeds[2 * sweep + 2],
                                        None if sweep == 0 else u)
        sweep_means.append(
            tf.reduce_mean(bijector.forward(u), axis=0).numpy().tolist())
    if num_sweeps >= 2:
      _warn_if_drifting(sweep_means, bijector.forward(u).numpy(),
                        self.theta_names, num_sweeps)
    kappa, theta, finals, seconds = run(self, u, seeds[-1], 'joint κ | θ')
    diagnostics.update(noise_level=noise_level, num_sweeps=num_sweeps,
                       sweep_theta_means=sweep_means)
    return kappa, theta, finals, wall_time + seconds, diagnostics

  def _sample_u(self, shear, noise_level, num_samples, seed, start=None):
    """Draws u of p(θ | data) by ``theta_method`` (HMC starts at ``start``)."""
    if self._theta_method == 'grid':
      return theta_posterior.sample_u_grid(shear, noise_level, self._prior,
                                           num_samples=num_samples, seed=seed)
    return theta_posterior.sample_u(shear, noise_level, self._prior,
                                    num_samples=num_samples, seed=seed,
                                    start=start)

  def _diagnostics(self, kappa, theta, finals, divergence_bound, wall_time):
    """The diagnostics dict of `sample`, from the final kernel results."""
    num_samples = int(kappa.shape[0])
    finite = (np.all(np.isfinite(kappa.numpy()), axis=(1, 2)) &
              np.all(np.isfinite(theta.numpy()), axis=1))
    return dict(
        **posterior.chain_diagnostics(
            self, finals, finite, divergence_bound, wall_time,
            [self._step_size_factor] * num_samples),
        theta_names=list(self.theta_names),
        theta_bounds=self._properties.theta_bounds.tolist())

  def sample_conditional(self, shear_map, theta, **kwargs):
    """Samples of the conditional posterior p(κ | γ, θ) at a fixed θ.

    `posterior.PosteriorSampler` with ``joint_prior.given(theta)`` and this
    sampler's annealing schedule and κ settings (method, leapfrog steps,
    ``step_size_factor``, correction, Tweedie step, XLA): the same samples
    as ``sample_posterior(shear_map, joint_prior.given(theta), ...)`` with
    those settings and seed. Each call builds (and traces) a new sampler.

    Args:
      shear_map: the data, as in `sample`.
      theta: one θ ``[D]`` inside ``theta_bounds``.
      **kwargs: the arguments of `PosteriorSampler.sample` (``num_samples``,
        ``seed``, ...).

    Returns:
      A `PosteriorSamples` of κ (``parameters`` None).

    Raises:
      ValueError: for a θ outside the prior range, or as
        `PosteriorSampler.sample`.
    """
    conditional.check_theta(self._prior, theta)
    sampler = posterior.PosteriorSampler(
        self._prior.given(theta), schedule=self._annealing,
        method=self._method, num_leapfrog_steps=self._num_leapfrog_steps,
        step_size_factor=self._step_size_factor,
        metropolis_correction=self._metropolis_correction,
        tweedie=self._tweedie, jit_compile=self._jit_compile)
    return sampler.sample(shear_map, **kwargs)


def sample_joint_posterior(shear_map,
                           joint_prior,
                           *,
                           num_samples=64,
                           theta_update='marginal',
                           theta_method=None,
                           num_sweeps=DEFAULT_NUM_SWEEPS,
                           sweep_schedule=None,
                           schedule=None,
                           num_final_steps=None,
                           method='hmc',
                           num_leapfrog_steps=None,
                           step_size_factor=posterior.DEFAULT_STEP_SIZE_FACTOR,
                           theta_step_size_factor=(
                               DEFAULT_THETA_STEP_SIZE_FACTOR),
                           theta_step_size=DEFAULT_THETA_STEP_SIZE,
                           metropolis_correction=None,
                           tweedie=True,
                           initial_state=None,
                           initial_theta=None,
                           batch_size=None,
                           seed=None,
                           divergence_bound=posterior.DEFAULT_DIVERGENCE_BOUND,
                           allow_pixel_scale_mismatch=False,
                           jit_compile=None,
                           progress=True):
  """Independent samples of the joint posterior p(κ, θ | γ).

  The one-call form of `JointPosteriorSampler`:
  ``JointPosteriorSampler(joint_prior, schedule=..., ...).sample(shear_map,
  num_samples=..., ...)`` (a new sampler, traced anew, per call; keep a
  `JointPosteriorSampler` to map many shear maps).

  Args:
    shear_map: the data, a `tfp_massmap.ShearMap`.
    joint_prior: a `JointPrior`, e.g. an `AmplitudeGaussianPrior`.
    theta_update, theta_method, num_sweeps, sweep_schedule, schedule,
      num_final_steps, method, num_leapfrog_steps, step_size_factor, theta_step_size_factor,
      theta_step_size, metropolis_correction, tweedie, jit_compile: as in
      `JointPosteriorSampler`.
    num_samples, initial_state, initial_theta, batch_size, seed,
      divergence_bound, allow_pixel_scale_mismatch, progress: as in
      `JointPosteriorSampler.sample`.

  Returns:
    A `PosteriorSamples` with ``parameters`` (`JointPosteriorSampler.sample`).

  Raises:
    ValueError: as `JointPosteriorSampler` and its ``sample``, before any
      sampling.

  Warns:
    RuntimeWarning: when chains diverged, naming how many.
  """
  sampler = JointPosteriorSampler(
      joint_prior, theta_update=theta_update, theta_method=theta_method,
      num_sweeps=num_sweeps,
      sweep_schedule=sweep_schedule, schedule=schedule,
      num_final_steps=num_final_steps,
      method=method, num_leapfrog_steps=num_leapfrog_steps,
      step_size_factor=step_size_factor,
      theta_step_size_factor=theta_step_size_factor,
      theta_step_size=theta_step_size,
      metropolis_correction=metropolis_correction, tweedie=tweedie,
      jit_compile=jit_compile)
  return sampler.sample(
      shear_map, num_samples=num_samples, initial_state=initial_state,
      initial_theta=initial_theta, batch_size=batch_size, seed=seed,
      divergence_bound=divergence_bound,
      allow_pixel_scale_mismatch=allow_pixel_scale_mismatch,
      progress=progress)
