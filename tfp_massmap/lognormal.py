r"""Lognormal convergence fields on the periodic flat-sky FFT grid.

Model. A shifted lognormal convergence field with shift λ > 0 (dimensionless)

    κ(x) = λ [exp(g(x) − σ_g² / 2) − 1],

where g is a zero-mean stationary Gaussian field with one-point variance σ_g²,
so that ⟨κ⟩ = 0 and κ > −λ everywhere. Its two-point function follows from the
Gaussian moment identity,

    ξ_κ(r) = λ² [exp(ξ_g(r)) − 1],   i.e.   ξ_g(r) = log(1 + ξ_κ(r) / λ²).

``LognormalField`` applies this exactly on the N×N periodic grid: the target
κ pixel covariance is diagonal in the orthonormal 2-D DFT basis with
eigenvalues S_k = C(ℓ_k) / Δ² (``power_spectrum.power_spectrum_grid``), its
correlation function is ξ_κ = ifft2d(S), the latent correlation is
ξ_g = log(1 + ξ_κ / λ²), and the latent eigenvalues are P_g = fft2d(ξ_g).
P_g can come out slightly negative (always at k = 0, since Σ_x ξ_g ≤ Σ_x
ξ_κ / λ² = 0 when S_0 = 0, and at a few high-ℓ modes when the field is very
non-Gaussian); those values are clipped to 0 and ``clipped_fraction`` reports
how much latent variance that removed. Every derived quantity below is that
of the field actually sampled, i.e. of the clipped P_g: σ_g² = mean_k P_g,
the κ eigenvalues ``power_grid`` = fft2d(λ² (exp(ifft2d(P_g)) − 1)).

One-point moments. With Y = exp(g − σ_g²/2), ⟨Yⁿ⟩ = exp(n(n−1)σ_g²/2), so the
pixel variance and skewness of κ are

    σ² = λ² (e^{σ_g²} − 1),
    skewness = ⟨κ³⟩ / σ³ = (e^{σ_g²} + 2) √(e^{σ_g²} − 1) = 3 (σ/λ) + (σ/λ)³.

The shift for COSMOS-like sources is ``cosmology.COSMOS_SHIFT`` (0.035);
`tfp_massmap.cosmology` says how it was chosen.

Whitened parametrisation. With z a white standard-normal map, g = S_g^{1/2} z
with S_g^{1/2} = F⁻¹ diag(√P_g) F (F the 2-D DFT) is exactly the latent field,
and κ(z) is smooth in z (modes with P_g = 0, such as k = 0, have no effect):
``latent_from_white``, ``convergence_from_white``. Samplers can run in z,
where the prior is N(0, I).

Units: ℓ in rad⁻¹, C_ℓ in sr, pixel scale in arcmin, κ and the shift
dimensionless.
"""

import contextlib

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import _checks
from tfp_massmap import cosmology
from tfp_massmap import power_spectrum

__all__ = [
    'cosmo_field',
    'cosmo_maps',
    'one_point_moments',
    'white_from_seeds',
    'LognormalField',
]

_COMPLEX = {tf.float32: tf.complex64, tf.float64: tf.complex128}


def _mirror(grid):
  """grid[-k] for every FFT mode k of an [N, N] numpy grid."""
  return np.roll(np.flip(grid, axis=(0, 1)), 1, axis=(0, 1))


def _check_power_grid(grid, n):
  grid = np.asarray(grid, dtype=np.float64)
  if grid.shape != (n, n):
    raise ValueError(f'power_grid must have shape [{n}, {n}] (map_size), got '
                     f'{grid.shape}.')
  _checks.non_negative(grid, 'power_grid')
  scale = max(float(grid.max()), np.finfo(np.float64).tiny)
  asym = float(np.max(np.abs(grid - _mirror(grid))))
  if asym > 1e-9 * scale:
    raise ValueError('power_grid must be symmetric under k -> -k (the spectrum '
                     f'of a real field); largest asymmetry {asym:.3g} for a '
                     f'largest value {scale:.3g}.')
  return grid


def one_point_moments(shift, latent_variance):
  """Pixel variance and skewness of κ = λ (exp(g − σ_g²/2) − 1).

  Args:
    shift: the shift λ (dimensionless), or None for the Gaussian field g.
    latent_variance: the one-point variance σ_g² of the latent field g.

  Returns:
    (variance, skewness) floats: λ² (e^{σ_g²} − 1) and
    (e^{σ_g²} + 2) √(e^{σ_g²} − 1); (σ_g², 0) when ``shift`` is None.
  """
  if shift is None:
    return float(latent_variance), 0.0
  w = float(np.expm1(latent_variance))
  return shift**2 * w, float((w + 3.0) * np.sqrt(w))


class LognormalField:
  """A shifted lognormal (or Gaussian) convergence field on an N×N grid.

  Construction does the spectral bookkeeping once (in float64 numpy, so call
  it eagerly); the sampling and transform methods are plain TF ops that work
  eagerly and inside ``tf.function``, batched over leading axes, in the
  constructor's dtype. Its prior (log density and score, the
  `tfp_massmap.priors.Prior` protocol) is
  ``tfp_massmap.priors.LognormalPrior(field)``.

  #### Examples

  ```python
  field = tfp_massmap.LognormalField(
      shift=tfp_massmap.cosmology.COSMOS_SHIFT, map_size=128,
      pixel_scale_arcmin=0.8)          # shipped COSMOS-like C_ell table
  kappa = field.sample(16, seed=[1, 2])  # [16, 128, 128]
  field.skewness                         # one-point skewness of kappa
  ```
  """

  def __init__(self,
               shift,
               map_size,
               pixel_scale_arcmin,
               ell=None,
               cl=None,
               power_grid=None,
               dtype=tf.float32,
               name='LognormalField'):
    """Builds the latent spectrum of the field.

    Args:
      shift: the shift λ > 0 (dimensionless; κ > −λ), or None for the
        Gaussian field with the same spectrum (the λ → ∞ limit).
      map_size: pixels per side N (int ≥ 2).
      pixel_scale_arcmin: pixel side in arcmin.
      ell: multipoles of a C_ℓ table, rad⁻¹ (with ``cl``).
      cl: C_ℓ of the table, sr. When neither a table nor ``power_grid`` is
        given, the shipped ``cosmos_convergence_cl()`` table is used.
      power_grid: alternatively, the target κ eigenvalues S_k ``[N, N]``
        (dimensionless, orthonormal-DFT basis, symmetric under k → −k).
      dtype: float32 or float64, the dtype of every tensor this returns.
      name: name scope of the methods.

    Raises:
      ValueError: invalid sizes, spectra or shift, including a shift too
        small for the spectrum (λ² ≤ −min ξ_κ leaves log(1 + ξ_κ/λ²)
        undefined).
    """
    parameters = dict(locals())
    parameters.pop('self')
    dtype = _checks.float_dtype(dtype, 'dtype')
    if (isinstance(map_size, bool) or not isinstance(map_size, (int, np.integer))
        or map_size < 2):
      raise ValueError(f'map_size must be an integer >= 2, got {map_size!r}.')
    n = int(map_size)
    pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
    if shift is not None:
      shift = _checks.positive_scalar(shift, 'shift')

    if power_grid is not None:
      if ell is not None or cl is not None:
        raise ValueError('Give either a C_ell table (ell, cl) or power_grid, '
                         'not both.')
      target = _check_power_grid(power_grid, n)
    else:
      if (ell is None) != (cl is None):
        raise ValueError('ell and cl must be given together, got '
                         f'ell={"None" if ell is None else "array"} and '
                         f'cl={"None" if cl is None else "array"}.')
      if ell is None:
        ell, cl = cosmology.cosmos_convergence_cl()
      target = power_spectrum.power_spectrum_grid(ell, cl, n, pix, tf.float64).numpy()

    if shift is None:
      latent = target
      clipped = 0.0
      kappa_grid = target
    else:
      xi_kappa = np.fft.ifft2(target).real
      u_min = float(xi_kappa.min()) / shift**2
      if u_min <= -1.0:
        raise ValueError(
            f'shift={shift!r} is too small for this power spectrum: the '
            'lognormal model needs shift**2 > -min(xi_kappa) = '
            f'{-float(xi_kappa.min()):.4g}.')
      latent = np.fft.fft2(np.log1p(xi_kappa / shift**2)).real
      clipped = float(-latent[latent < 0].sum())
      latent = np.maximum(latent, 0.0)
      clipped /= float(latent.sum())
      kappa_grid = np.fft.fft2(shift**2 * np.expm1(np.fft.ifft2(latent).real)).real

    self._shift = shift
    self._map_size = n
    self._pixel_scale_arcmin = pix
    self._dtype = dtype
    self._name = name
    self._parameters = parameters
    self._latent_variance = float(latent.mean())
    self._clipped_fraction = clipped
    self._target_power_grid = tf.constant(target, dtype=dtype)
    self._latent_power_grid = tf.constant(latent, dtype=dtype)
    self._power_grid = tf.constant(kappa_grid, dtype=dtype)
    self._amplitude = tf.constant(np.sqrt(latent), dtype=_COMPLEX[dtype])

  @contextlib.contextmanager
  def _name_scope(self, name):
    with tf.name_scope(self._name):
      with tf.name_scope(name) as scope:
        yield scope

  @property
  def shift(self):
    """The shift λ (dimensionless), or None for the Gaussian field."""
    return self._shift

  @property
  def map_size(self):
    """Pixels per side N."""
    return self._map_size

  @property
  def pixel_scale_arcmin(self):
    """Pixel side in arcmin."""
    return self._pixel_scale_arcmin

  @property
  def dtype(self):
    return self._dtype

  @property
  def name(self):
    return self._name

  @property
  def parameters(self):
    """The constructor arguments, as a dict."""
    return dict(self._parameters)

  @property
  def target_power_grid(self):
    """Requested κ eigenvalues S_k ``[N, N]`` (dimensionless), as given."""
    return self._target_power_grid

  @property
  def latent_power_grid(self):
    """Eigenvalues P_g ``[N, N]`` of the latent Gaussian field (clipped ≥ 0)."""
    return self._latent_power_grid

  @property
  def power_grid(self):
    """Exact κ eigenvalues ``[N, N]`` of the sampled field (C(ℓ_k)/Δ²).

    Equals ``target_power_grid`` up to the effect of clipping P_g; its k = 0
    entry (the variance of the map mean) is nonzero for a lognormal field.
    """
    return self._power_grid

  @property
  def latent_variance(self):
    """One-point variance σ_g² of the latent field (float)."""
    return self._latent_variance

  @property
  def variance(self):
    """One-point (pixel) variance of κ, λ² (e^{σ_g²} − 1) (float)."""
    return one_point_moments(self._shift, self._latent_variance)[0]

  @property
  def skewness(self):
    """One-point skewness ⟨κ³⟩/σ³ = (e^{σ_g²} + 2)√(e^{σ_g²} − 1); 0 if Gaussian."""
    return one_point_moments(self._shift, self._latent_variance)[1]

  @property
  def clipped_fraction(self):
    """Negative latent variance clipped away, as a fraction of σ_g²·N² (float)."""
    return self._clipped_fraction

  def _check_map(self, x, arg_name):
    x = tf.convert_to_tensor(x, dtype_hint=self._dtype)
    if x.dtype != self._dtype:
      raise ValueError(f'{arg_name} must have dtype {self._dtype.name} (the '
                       f"field's dtype), got {x.dtype.name}.")
    n = _checks.square_map_shape(x.shape, arg_name)
    if n is not None and n != self._map_size:
      raise ValueError(f'{arg_name} must have shape [..., {self._map_size}, '
                       f'{self._map_size}] (map_size), got {x.shape}.')
    return x

  def latent_from_white(self, white, name=None):
    """Latent Gaussian field g = S_g^{1/2} z from white noise.

    Args:
      white: standard-normal maps z ``[..., N, N]`` in the field's dtype.
      name: optional name scope.

    Returns:
      g ``[..., N, N]``: zero-mean Gaussian maps with eigenvalues P_g.
    """
    with self._name_scope(name or 'latent_from_white'):
      white = self._check_map(white, 'white')
      spec = tf.signal.fft2d(tf.cast(white, _COMPLEX[self._dtype]))
      return tf.math.real(tf.signal.ifft2d(self._amplitude * spec))

  def convergence_from_latent(self, latent, name=None):
    """κ = λ (exp(g − σ_g²/2) − 1) from latent maps g ``[..., N, N]``.

    The identity for the Gaussian field (shift None).
    """
    with self._name_scope(name or 'convergence_from_latent'):
      latent = self._check_map(latent, 'latent')
      if self._shift is None:
        return tf.identity(latent)
      shift = tf.constant(self._shift, self._dtype)
      return shift * tf.math.expm1(
          latent - tf.constant(0.5 * self._latent_variance, self._dtype))

  def convergence_from_white(self, white, name=None):
    """κ from white standard-normal maps z ``[..., N, N]`` (the whitened map)."""
    with self._name_scope(name or 'convergence_from_white'):
      return self.convergence_from_latent(self.latent_from_white(white))

  def maps_from_seeds(self, seeds):
    """The maps of integer ``seeds``, one per seed, as the datasets store them.

    Map s comes from the white noise ``numpy.random.default_rng(s)
    .standard_normal((N, N))`` (the ``lognormal_kappa`` dataset's example
    keys), so a map can be regenerated from its seed alone.

    Args:
      seeds: iterable of non-negative ints.

    Returns:
      numpy float32 array ``[len(seeds), N, N]``.
    """
    white = white_from_seeds(seeds, self._map_size)
    return self.convergence_from_white(
        tf.constant(white, self._dtype)).numpy().astype(np.float32)

  def sample(self, sample_shape=(), seed=None, name=None):
    """Draws independent convergence maps.

    Args:
      sample_shape: int or 1-D shape of leading sample dimensions.
      seed: stateless seed (an int or a shape-[2] int tensor, as
        ``tfp.random.sanitize_seed`` accepts); the same seed gives the same
        maps.
      name: optional name scope.

    Returns:
      κ ``[*sample_shape, N, N]`` in the field's dtype.
    """
    with self._name_scope(name or 'sample'):
      seed = tfp.random.sanitize_seed(seed, salt='LognormalField')
      shape = tf.concat([tf.reshape(tf.cast(sample_shape, tf.int32), [-1]),
                         [self._map_size, self._map_size]], axis=0)
      white = tf.random.stateless_normal(shape, seed=seed, dtype=self._dtype)
      return self.convergence_from_white(white)


def white_from_seeds(seeds, map_size):
  """The white maps z of the datasets' seeds, ``[S, N, N]`` float64 numpy.

  z_s = ``numpy.random.default_rng(s).standard_normal((N, N))``: the latent
  white noise from which `LognormalField.maps_from_seeds` (and so every
  ``lognormal_kappa`` map, whose example key is its seed) makes map s.

  Args:
    seeds: iterable of non-negative ints.
    map_size: pixels per side N.
  """
  n = int(map_size)
  return np.stack([np.random.default_rng(int(s)).standard_normal((n, n))
                   for s in seeds])


def cosmo_field(omega_m, sigma8, map_size, pixel_scale_arcmin):
  """The float64 `LognormalField` of the ``cosmo_<N>`` maps at (Ωm, σ8).

  Spectrum `cosmology.convergence_cl` (Ωm, σ8), shift
  `cosmology.lognormal_shift` (Ωm, σ8).

  Args:
    omega_m, sigma8: the cosmology, inside `cosmology.COSMO_PARAMETER_BOUNDS`.
    map_size: pixels per side N.
    pixel_scale_arcmin: pixel side [arcmin].
  """
  ell, cl = cosmology.convergence_cl(omega_m, sigma8)
  return LognormalField(cosmology.lognormal_shift(omega_m, sigma8), map_size,
                        pixel_scale_arcmin, ell=ell, cl=cl, dtype=tf.float64)


def cosmo_maps(seeds, map_size, pixel_scale_arcmin):
  """The maps of the ``lognormal_kappa`` ``cosmo_<N>`` generator, by seed.

  Map s has the cosmology θ_s = (Ωm, σ8) = `cosmology.cosmo_kappa_parameters`
  (s), the spectrum `cosmology.convergence_cl` (θ_s), the shift
  `cosmology.lognormal_shift` (θ_s) and the white noise of seed s
  (`LognormalField.maps_from_seeds`): the dataset's map of that seed when
  ``map_size`` and ``pixel_scale_arcmin`` are a config's.

  Args:
    seeds: iterable of non-negative ints.
    map_size: pixels per side N.
    pixel_scale_arcmin: pixel side [arcmin].

  Returns:
    dict of numpy arrays: ``kappa`` float32 ``[S, N, N]`` (dimensionless
    convergence), ``omega_m`` and ``sigma8`` float64 ``[S]``, ``shift``
    float64 ``[S]``, ``seed`` int64 ``[S]``.
  """
  seeds = [int(s) for s in seeds]
  kappa = np.empty((len(seeds), map_size, map_size), np.float32)
  theta = np.empty((len(seeds), 2))
  shift = np.empty(len(seeds))
  for i, seed in enumerate(seeds):
    theta[i] = cosmology.cosmo_kappa_parameters(seed)
    field = cosmo_field(*theta[i], map_size, pixel_scale_arcmin)
    shift[i] = field.shift
    kappa[i] = field.maps_from_seeds([seed])[0]
  return {'kappa': kappa, 'omega_m': theta[:, 0], 'sigma8': theta[:, 1],
          'shift': shift, 'seed': np.asarray(seeds, np.int64)}
