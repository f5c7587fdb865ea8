"""The Gaussian likelihood of observed shear given a convergence map.

The data model of docs/design.md §1: the mean ellipticity of the galaxies in a
pixel is e = Aκ + n with n ~ N(0, σ_pix²) independently per pixel and shear
component, where A is the shear operator (`lensing.shear_from_convergence`).
Pixels without galaxies carry no information (mask = 0). Adding a variance
σ² to every pixel gives the annealed likelihood p_σ(γ | κ) used by the
annealed samplers (variance σ_pix² + σ²).

`ShearLikelihood` is a `tfd.Distribution` over the shear map, with the
convergence as a parameter: its `log_prob` differentiated with respect to the
convergence is the likelihood score the posterior samplers need. Shear and
convergence are dimensionless; so are the noise standard deviations.
`data_fit` is the posterior predictive check of any sampler's draws
against the shear they were drawn from.
"""

import functools

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.bijectors import identity as identity_bijector
from tensorflow_probability.python.bijectors import softplus as softplus_bijector
from tensorflow_probability.python.distributions import distribution
from tensorflow_probability.python.internal import assert_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import reparameterization
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import tensor_util

from tfp_massmap import _checks
from tfp_massmap import lensing

__all__ = [
    'ShearLikelihood',
    'data_fit',
    'identity_operator',
]


def identity_operator(convergence):
  """The identity forward model: ``[..., N, N]`` → ``[..., N, N, 1]``.

  With it, `ShearLikelihood` is the likelihood of a pure denoising problem:
  the data are the map itself plus Gaussian pixel noise.
  """
  return tf.convert_to_tensor(convergence)[..., tf.newaxis]


@functools.lru_cache(maxsize=64)
def _operator_channels(operator, n, dtype):
  """Channel count C of ``operator`` applied to an ``[N, N]`` map.

  The operator is traced once by `tf.function` (nothing runs, nothing is
  added to the caller's graph; an operator may close over eager tensors,
  which the trace captures); the answer is cached per (operator, N, dtype).
  """
  traced = tf.function(lambda kappa: tf.convert_to_tensor(operator(kappa)),
                       autograph=False)
  out_shape = traced.get_concrete_function(
      tf.TensorSpec([n, n], dtype)).structured_outputs.shape
  if (out_shape.rank != 3 or out_shape[:2] != [n, n] or
      out_shape[-1] is None):
    raise ValueError(
        f'operator must map a convergence map [N, N] = [{n}, {n}] to '
        f'[N, N, C] with a static channel count C, got output shape '
        f'{out_shape}.')
  return out_shape[-1]


def _check_float_dtypes(**parameters):
  """The float dtype the parameters declare (or None); raises if they differ.

  Tensors, variables and numpy arrays declare a dtype; Python numbers and
  numpy scalars do not (they take the common one). The first declared dtype
  (the convergence's when it has one) is the reference.
  """
  declared = [(name, _checks.declared_float_dtype(value))
              for name, value in parameters.items()]
  declared = [(name, dtype) for name, dtype in declared if dtype is not None]
  for name, dtype in declared[1:]:
    reference_name, reference = declared[0]
    if dtype != reference:
      raise ValueError(
          f'{name} has dtype {dtype.name} but {reference_name} has dtype '
          f'{reference.name}; cast {name} to {reference.name} (every float '
          'parameter of a ShearLikelihood has one dtype).')
  return declared[0][1] if declared else None


def _first_index(bad):
  """Index tuple of the first True entry of a boolean array."""
  return tuple(int(i) for i in np.argwhere(bad)[0])


def _noise_is_per_component(noise_shape, n):
  """Whether noise_std is ``[..., N, N, C]`` (True) or ``[..., N, N]``."""
  shape = tf.TensorShape(noise_shape)
  if shape.rank is None or shape.rank < 2:
    raise ValueError(
        f'noise_std must have shape [..., N, N] or [..., N, N, C] with N = {n} '
        f'(the convergence map size), got shape {shape}.')
  if shape[-2:] == [n, n]:
    return False
  if shape.rank >= 3 and shape[-3:-1] == [n, n]:
    return True
  raise ValueError(
      f'noise_std has shape {shape}, which ends neither in the convergence map '
      f'shape [N, N] = [{n}, {n}] nor in [N, N, C].')


class ShearLikelihood(distribution.AutoCompositeTensorDistribution):
  """Gaussian likelihood of a shear map given a convergence map.

  For a convergence map κ, per-pixel noise standard deviations σ_pix, a mask
  m (the 0/1 indicator of `shear_map`: 1 where the pixel has data, 0 where it
  has none; a weight belongs in σ_pix) and an extra variance
  σ² ≥ 0, the shear γ ``[N, N, C]`` has, independently per pixel and
  component,

    γ ~ N(Aκ, σ_pix² + σ²)  where m = 1,    γ = 0 where m = 0,

  and

    log p(γ | κ) = Σ_{m=1} [ −½ (γ − Aκ)² / v − ½ log(2π v) ],
    v = σ_pix² + σ².

  Masked pixels contribute exactly 0 to `log_prob` whatever their shear and
  noise values (so noise maps may hold 0, inf or NaN there). The default
  forward model A is `lensing.shear_from_convergence` (C = 2);
  `identity_operator` (C = 1) turns this into a pure denoising likelihood.
  `sample` is the package's one simulator of observations: the data of a
  truth κ seen by a survey are ``ShearLikelihood(κ, noise_std,
  mask).sample(seed=seed)``.

  Values are checked at construction, whatever ``validate_args``, when they
  are known then (numpy arrays, Python numbers, eager tensors, constants
  inside `tf.function`): a mask value other than 0 and 1, a mask with no
  nonzero pixel in some map, a noise_std that is NaN, infinite or negative at a pixel with data, a
  noise_std of 0 at a pixel with data while extra_variance is 0, and a NaN
  or negative extra_variance raise `ValueError`. Not checked without
  ``validate_args=True``: values of `tf.Variable`s and of tensors computed
  inside `tf.function` (with ``validate_args=True``, run-time assertions
  cover the mask values, noise_std and extra_variance; an empty mask is
  never asserted at run time). Float parameters (and the shear given to `log_prob`, when it is a
  tensor) must share one dtype: a mismatch raises `ValueError` naming the
  argument to cast.

  The batch shape broadcasts the leading axes of ``convergence[..., N, N]``,
  ``noise_std[..., N, N]`` (or ``[..., N, N, C]``), ``mask[..., N, N]`` and
  ``extra_variance[...]``; the event shape is ``[N, N, C]``. `log_prob` is
  differentiable with respect to the convergence, and everything works
  inside `tf.function` (XLA included) in float32 and float64.

  #### Examples

  ```python
  kappa = tf.zeros([8, 64, 64])            # 8 chains
  likelihood = ShearLikelihood(kappa, noise_std=std_maps, mask=mask)
  likelihood.log_prob(observed_shear)      # shape [8]
  tfp.math.value_and_gradient(
      lambda k: ShearLikelihood(k, std_maps, mask).log_prob(observed_shear),
      kappa)                               # likelihood score
  ```
  """

  def __init__(self,
               convergence,
               noise_std,
               mask=None,
               extra_variance=0.,
               operator=None,
               validate_args=False,
               allow_nan_stats=True,
               name='ShearLikelihood'):
    """Builds the likelihood of shear maps given convergence maps.

    Args:
      convergence: float tensor ``[..., N, N]`` (dimensionless); N must be
        statically known.
      noise_std: float tensor, the noise standard deviation of the mean
        ellipticity per pixel (dimensionless): ``[..., N, N]`` (same for every
        shear component) or ``[..., N, N, C]`` (per component, like the
        COSMOS std1/std2 maps). A shape ending in ``[N, N]`` is read as the
        first form. Must be >= 0 where there is data.
      mask: optional tensor ``[..., N, N]`` (bool, int or float): 1 where
        the pixel has data, 0 where it has none (no other value). Default:
        every pixel has data.
      extra_variance: float tensor σ² >= 0 added to noise_std² in every pixel
        (the annealing variance), scalar or with batch shape ``[...]``.
      operator: callable mapping convergence ``[..., N, N]`` to the predicted
        data ``[..., N, N, C]``. Default: `lensing.shear_from_convergence`.
      validate_args: Python `bool`; when True, checks (at run time) that
        noise_std is neither NaN nor negative where there is data, that
        extra_variance is >= 0, and that noise_std² + extra_variance > 0 where
        there is data.
      allow_nan_stats: Python `bool`, as in every `tfd.Distribution`.
      name: Python `str` name prefixed to the ops this class creates.

    Raises:
      ValueError: if the map shapes of convergence, noise_std and mask differ,
        if they are not square, if the batch shapes do not broadcast, if
        convergence, noise_std and extra_variance declare different float
        dtypes, if the dtype is not float32/float64, or for a bad value known
        at construction (class docstring: mask value other than 0 and 1;
        empty mask; NaN, infinite or
        negative noise_std at a pixel with data; zero variance there; NaN or
        negative extra_variance).
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = _check_float_dtypes(
          convergence=convergence, noise_std=noise_std,
          extra_variance=extra_variance) or dtype_util.common_dtype(
              [convergence, noise_std, extra_variance], dtype_hint=tf.float32)
      _checks.float_dtype(dtype, 'ShearLikelihood dtype')
      self._convergence = tensor_util.convert_nonref_to_tensor(
          convergence, dtype=dtype, name='convergence')
      self._noise_std = tensor_util.convert_nonref_to_tensor(
          noise_std, dtype=dtype, name='noise_std')
      self._mask = tensor_util.convert_nonref_to_tensor(
          mask, dtype_hint=dtype, name='mask')
      self._extra_variance = tensor_util.convert_nonref_to_tensor(
          extra_variance, dtype=dtype, name='extra_variance')
      if operator is None:
        operator = lensing.shear_from_convergence
      if not callable(operator):
        raise ValueError(
            f'operator must be a callable mapping convergence [..., N, N] to '
            f'[..., N, N, C], got {operator!r}.')
      self._operator = operator

      n = _checks.square_map_shape(self._convergence.shape, 'convergence')
      if n is None:
        raise ValueError(
            'convergence must have a statically known square map shape '
            f'[..., N, N], got shape {self._convergence.shape}.')
      self._map_size = n
      self._channels = _operator_channels(operator, n, dtype)
      self._noise_per_component = _noise_is_per_component(
          self._noise_std.shape, n)
      if self._noise_per_component:
        _checks.square_map_shape(self._noise_std.shape, 'noise_std',
                                 channels=self._channels)
      if self._mask is not None:
        _checks.square_map_shape(self._mask.shape, 'mask')
        _checks.same_map_shape(self._convergence.shape, self._mask.shape,
                               'convergence', 'mask')

      super().__init__(
          dtype=dtype,
          reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
          validate_args=validate_args,
          allow_nan_stats=allow_nan_stats,
          parameters=parameters,
          name=name)
      self._check_known_values()

  def _check_known_values(self):
    """Raises for bad values of the mask, noise and extra variance known now.

    Cheap numpy checks of whatever is concrete (eager, numpy or constant);
    variables and symbolic tensors are skipped (see `validate_args`).
    """
    def known(x):
      if x is None or tensor_util.is_ref(x):
        return None
      value = tf.get_static_value(x)
      return None if value is None else np.asarray(value)

    mask = known(self._mask)
    noise = known(self._noise_std)
    extra = known(self._extra_variance)
    if extra is not None and np.any(np.isnan(extra) | (extra < 0)):
      raise ValueError(
          f'extra_variance holds NaN or negative value(s) (first: '
          f'{float(extra[_first_index(np.isnan(extra) | (extra < 0))])}); it '
          'is a variance, expected values >= 0.')
    n = self._map_size
    if mask is not None:
      _checks.zero_one_mask(mask)
      mask = mask.astype(bool)
      empty = ~mask.reshape(mask.shape[:-2] + (n * n,)).any(axis=-1)
      if np.any(empty):
        raise ValueError(
            f'mask has no pixel with data (mask != 0) in {int(empty.sum())} of '
            f'{empty.size} map(s); such a map has log_prob 0 whatever the '
            'convergence. Expected at least one nonzero mask value per map.')
    if noise is None or (self._mask is not None and mask is None):
      return  # Where the data are is not known: any value may be off-mask.
    if not self._noise_per_component:
      noise = noise[..., np.newaxis]
    has_data = (np.ones([n, n, 1], bool) if mask is None else
                mask[..., np.newaxis])
    noise, has_data = np.broadcast_arrays(noise, has_data)
    bad = has_data & ~(np.isfinite(noise) & (noise >= 0))
    if bad.any():
      first = _first_index(bad)
      raise ValueError(
          f'noise_std holds {int(bad.sum())} NaN, infinite or negative '
          f'value(s) at pixels with data (mask != 0); the first, '
          f'{float(noise[first])}, at index {first} ([..., row, column, '
          'component]). Expected finite values > 0 where there is data.')
    if extra is None:
      return
    variance = np.square(noise) + extra[..., np.newaxis, np.newaxis, np.newaxis]
    zero = np.broadcast_to(has_data, variance.shape) & (variance == 0)
    if zero.any():
      raise ValueError(
          f'noise_std is 0 at {int(zero.sum())} pixel value(s) with data '
          f'(mask != 0), the first at index {_first_index(zero)} ([..., row, '
          'column, component]), while extra_variance is 0: the variance '
          'noise_std² + extra_variance must be > 0 where there is data.')

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    map_shape_fn = lambda event_shape: event_shape[:-1]  # [N, N, C] -> [N, N]
    return dict(
        convergence=parameter_properties.ParameterProperties(
            event_ndims=2, shape_fn=map_shape_fn),
        noise_std=parameter_properties.ParameterProperties(
            event_ndims=lambda self: 3 if self._noise_per_component else 2,  # pylint: disable=protected-access
            shape_fn=map_shape_fn,
            default_constraining_bijector_fn=(
                lambda: softplus_bijector.Softplus(low=dtype_util.eps(dtype)))),
        mask=parameter_properties.ParameterProperties(
            event_ndims=2, shape_fn=map_shape_fn,
            default_constraining_bijector_fn=(
                parameter_properties.BIJECTOR_NOT_IMPLEMENTED),
            is_preferred=False),
        extra_variance=parameter_properties.ParameterProperties(
            event_ndims=0,
            shape_fn=lambda event_shape: [],
            default_constraining_bijector_fn=softplus_bijector.Softplus))

  @property
  def convergence(self):
    """Convergence maps ``[..., N, N]``."""
    return self._convergence

  @property
  def noise_std(self):
    """Per-pixel noise std ``[..., N, N]`` or ``[..., N, N, C]``."""
    return self._noise_std

  @property
  def mask(self):
    """Data mask ``[..., N, N]`` (1 = data, 0 = none), or None (all data)."""
    return self._mask

  @property
  def extra_variance(self):
    """Variance σ² added to noise_std² in every pixel."""
    return self._extra_variance

  @property
  def operator(self):
    """The forward model: convergence ``[..., N, N]`` → ``[..., N, N, C]``."""
    return self._operator

  def _event_shape(self):
    return tf.TensorShape([self._map_size, self._map_size, self._channels])

  def _event_shape_tensor(self):
    return tf.constant([self._map_size, self._map_size, self._channels],
                       dtype=tf.int32)

  def _has_data(self, mask):
    """Boolean ``[..., N, N, 1]`` (or a scalar True when there is no mask)."""
    if mask is None:
      return tf.constant(True)
    return tf.cast(mask, tf.bool)[..., tf.newaxis]

  def _pixel_variance(self, noise_std, extra_variance, has_data):
    """σ_pix² + σ², broadcastable to ``[..., N, N, C]``; 1 + σ² off the mask.

    Replacing the noise off the mask keeps every term finite there (noise maps
    may hold 0 or NaN where there are no galaxies), values and gradients.
    """
    if not self._noise_per_component:
      noise_std = noise_std[..., tf.newaxis]
    noise_std = tf.where(has_data, noise_std, tf.ones([], self.dtype))
    return (tf.square(noise_std) +
            extra_variance[..., tf.newaxis, tf.newaxis, tf.newaxis])

  def _moments(self):
    """(has_data, predicted data Aκ, variance), broadcastable to the shape."""
    has_data = self._has_data(self._mask)
    variance = self._pixel_variance(
        tf.convert_to_tensor(self._noise_std),
        tf.convert_to_tensor(self._extra_variance), has_data)
    return has_data, self._operator(self._convergence), variance

  def _full_shape(self, x):
    return tf.broadcast_to(
        x, ps.concat([self.batch_shape_tensor(), self.event_shape_tensor()],
                     axis=0))

  def _residual(self, shear):
    """(has_data, γ − Aκ (0 off the mask), variance) for a checked shear."""
    if shear.dtype != self.dtype:
      raise ValueError(
          f'shear has dtype {shear.dtype.name} but this ShearLikelihood has '
          f'dtype {self.dtype.name}; cast shear to {self.dtype.name}.')
    _checks.square_map_shape(shear.shape, 'shear', channels=self._channels)
    _checks.same_map_shape(shear.shape[:-1], self._convergence.shape,
                           'shear', 'convergence')
    has_data, predicted, variance = self._moments()
    residual = tf.where(has_data, shear - predicted, tf.zeros([], self.dtype))
    return has_data, residual, variance

  def _log_prob(self, shear):
    has_data, residual, variance = self._residual(shear)
    log_density = -0.5 * (
        tf.square(residual) / variance +
        tf.math.log(tf.constant(2. * np.pi, self.dtype) * variance))
    log_density = tf.where(has_data, log_density, tf.zeros([], self.dtype))
    return tf.reduce_sum(log_density, axis=[-3, -2, -1])

  def chi_squared(self, shear, name='chi_squared'):
    """χ² = Σ (γ − Aκ)² / v over the pixels with data and all components.

    ``log_prob(shear) = −χ² / 2 − ½ Σ log(2π v)``. If ``shear`` was drawn
    from this distribution, χ² follows a χ² distribution with as many
    degrees of freedom as there are data values (C × the pixels with data).

    Args:
      shear: float tensor ``[..., N, N, C]`` of this distribution's dtype.
      name: name scope.

    Returns:
      χ², float tensor of the batch shape (dimensionless).
    """
    with tf.name_scope(name):
      shear = tf.convert_to_tensor(shear)
      _, residual, variance = self._residual(shear)
      return tf.reduce_sum(tf.square(residual) / variance, axis=[-3, -2, -1])

  def _sample_n(self, n, seed=None):
    seed = samplers.sanitize_seed(seed, salt='ShearLikelihood')
    has_data, predicted, variance = self._moments()
    shape = ps.concat(
        [[n], self.batch_shape_tensor(), self.event_shape_tensor()], axis=0)
    noise = samplers.normal(shape=shape, dtype=self.dtype, seed=seed)
    return tf.where(has_data, predicted + tf.sqrt(variance) * noise,
                    tf.zeros([], self.dtype))

  def _mean(self):
    has_data, predicted, _ = self._moments()
    return self._full_shape(
        tf.where(has_data, predicted, tf.zeros([], self.dtype)))

  _mode = _mean

  def _variance(self):
    has_data, _, variance = self._moments()
    return self._full_shape(
        tf.where(has_data, variance, tf.zeros([], self.dtype)))

  def _default_event_space_bijector(self):
    return identity_bijector.Identity(validate_args=self.validate_args)

  def _parameter_control_dependencies(self, is_init):
    if is_init:
      try:
        self._batch_shape()
      except ValueError:
        raise ValueError(
            'The batch shapes of convergence, noise_std, mask and '
            'extra_variance must broadcast; got convergence.shape='
            f'{self._convergence.shape}, noise_std.shape={self._noise_std.shape}'
            f', mask.shape={None if self._mask is None else self._mask.shape}, '
            f'extra_variance.shape={self._extra_variance.shape}.') from None

    if not self.validate_args:
      return []

    assertions = []
    if is_init != tensor_util.is_ref(self._extra_variance):
      assertions.append(assert_util.assert_non_negative(
          self._extra_variance,
          message='extra_variance must be >= 0 (it is a variance)'))
    if self._mask is not None and is_init != tensor_util.is_ref(self._mask):
      mask = tf.convert_to_tensor(self._mask)
      assertions.append(assert_util.assert_equal(
          tf.reduce_all(tf.equal(mask, 0) | tf.equal(mask, 1)), True,
          message='mask holds values other than 0 and 1; it is the 0/1 '
          'indicator of pixels with data, not a weight'))
    if is_init != any(tensor_util.is_ref(p) for p in (
        self._noise_std, self._mask, self._extra_variance)):
      has_data = self._has_data(self._mask)
      noise_std = tf.convert_to_tensor(self._noise_std)
      if not self._noise_per_component:
        noise_std = noise_std[..., tf.newaxis]
      noise_on_data = tf.where(has_data, noise_std, tf.ones([], self.dtype))
      assertions.append(assert_util.assert_equal(
          tf.reduce_any(tf.math.is_nan(noise_on_data)), False,
          message='noise_std holds NaN at pixels with data (mask != 0); '
          'expected numbers >= 0'))
      assertions.append(assert_util.assert_non_negative(
          noise_on_data,
          message='noise_std holds negative values at pixels with data '
          '(mask != 0); expected values >= 0'))
      assertions.append(assert_util.assert_positive(
          self._pixel_variance(
              tf.convert_to_tensor(self._noise_std),
              tf.convert_to_tensor(self._extra_variance), has_data),
          message='noise_std is 0 at pixels with data (mask != 0) while '
          'extra_variance is 0: the variance noise_std² + extra_variance must '
          'be > 0 where there is data'))
    return assertions


def data_fit(samples, shear_map):
  """How well posterior draws of κ fit the shear data they were drawn from.

  A posterior predictive check that needs no truth. Per draw s,
  χ²_s = Σ (γ − Aκ_s)² / σ_pix² over the observed pixels and both shear
  components (`ShearLikelihood.chi_squared`). If the draws come from the
  posterior of the model that made the data (prior and noise model both
  right), each draw and the data are distributed jointly as the truth and
  the data are, so each χ²_s follows χ² with d = 2 × (observed pixels)
  degrees of freedom, whatever form the prior has. The report is the
  draws' mean χ² and z = (mean χ² − d) / √(2d). Since the mean over draws scatters at
  most as much as one draw, |z| ≳ 3 flags a map whose draws fit the data
  worse (z > 0: e.g. a prior that pulls them off the data, or noise
  stated too small) or better (z < 0: noise stated too large) than a
  calibrated posterior's would. The converse does not hold: a small |z|
  does not certify the map (docs/benchmarks.md, "The high-σ8 map": at
  the COSMOS noise, draws 0.15 too high on the 8 pixels around one peak
  gave z = +2.5, the exact posterior's draws −0.7).

  Args:
    samples: κ draws ``[S, ..., N, N]`` (dimensionless), e.g. a
      `PosteriorSamples`'s ``samples``.
    shear_map: the data (`ShearMap`-like: ``shear`` ``[..., N, N, 2]``,
      ``noise_std`` ``[..., N, N]`` or ``[..., N, N, 2]``, ``mask``
      ``[..., N, N]`` or None).

  Returns:
    A `dict`: ``chi2_per_sample`` ``[S, ...]``, and ``dof`` d,
    ``chi2_mean``, ``reduced_chi2`` (mean χ² / d) and ``z``, each
    ``[...]``: Python floats (a list per sample) for one map, numpy arrays
    for a batch.

  Raises:
    ValueError: as `ShearLikelihood` for bad noise or mask values, and
      when the draws' map shape is not the data's.
  """
  shear = np.asarray(shear_map.shear, np.float64)
  kappa = np.asarray(samples, np.float64)
  if kappa.ndim < 3 or kappa.shape[-2:] != shear.shape[-3:-1]:
    raise ValueError(
        f'samples must have shape [S, ..., N, N] with the data\'s map shape '
        f'[N, N] = {list(shear.shape[-3:-1])}, got shape {list(kappa.shape)}.')
  mask = shear_map.mask
  likelihood = ShearLikelihood(
      kappa, np.asarray(shear_map.noise_std, np.float64),
      None if mask is None else np.asarray(mask, np.float64))
  chi2 = likelihood.chi_squared(shear).numpy()
  observed = np.ones(shear.shape[:-1]) if mask is None else np.asarray(mask)
  dof = np.broadcast_to(shear.shape[-1] * (observed != 0).sum(axis=(-2, -1)),
                        chi2.shape[1:]).astype(np.float64)
  mean = chi2.mean(axis=0)
  fit = dict(chi2_per_sample=chi2, dof=dof, chi2_mean=mean,
             reduced_chi2=mean / dof, z=(mean - dof) / np.sqrt(2. * dof))
  if np.ndim(mean) == 0:
    fit = {k: np.asarray(v).tolist() for k, v in fit.items()}
  return fit
