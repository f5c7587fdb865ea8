r"""What a map's power spectrum alone says about θ = (Ωm, σ8).

A map x ``[N, N]`` (dimensionless convergence) read as a Gaussian random
field of the spectrum C_ℓ(θ) of `cosmology.convergence_cl` seen through
white noise of variance σ² per pixel has the likelihood

  log p_G(x | θ) = −½ Σ_{k ≠ 0} [ |x̂_k|² / (S_k(θ) + σ²) + ln 2π (S_k(θ) + σ²) ],

x̂ the unitary DFT of x and S_k(θ) = C(ℓ_k; θ) / Δ² the spectrum's
eigenvalue at mode k (Δ the pixel side in radians; `CosmoSpectrum`). The
k = 0 mode, the map mean, is left out: shear does not see it, and the
Kaiser-Squires E-mode map has mean 0. For a Gaussian field this is the exact
field-level likelihood; for a non-Gaussian one (the lognormal ``cosmo_<N>``
maps, N-body maps) it is the Gaussian power-spectrum likelihood: it uses
the map's |x̂_k|² and nothing else, and ignores the non-Gaussian covariance
of the band powers. It is the reference of the issue's "what the power
spectrum alone constrains", evaluated over the prior box rather than by a
Fisher matrix (which ignores the box and the Ωm–σ8 degeneracy's curvature).

`PowerSpectrumLikelihood.log_ratio` is log p_G(x | θ) − log p_G(x), with the
evidence p_G(x) = ∫ p_G(x | θ) p(θ) dθ of θ uniform over
`cosmology.COSMO_PARAMETER_BOUNDS` by the midpoint rule: the logit of the
Bayes-optimal classifier of (map, θ) pairs if the maps were Gaussian fields,
the reference row of ``benchmarks/bench_ratio_loss.py`` (on the lognormal
maps it is overconfident at low noise, where their small scales are far
from Gaussian: docs/benchmarks.md). `PowerSpectrumLikelihood.grid_posterior`
is the posterior p_G(θ | x) on a grid over the box, the power-spectrum
reference of the θ benchmarks (``bench_joint_posterior.py``).

Sums run over groups of modes of equal |k|² (135 groups at N = 32, 1621 at
N = 128), on which S_k is constant, so the evidence's quadrature costs
(maps × grid points × groups), not × N². Everything is computed in float64.
"""

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import cosmology
from tfp_massmap import lensing

__all__ = [
    'CosmoSpectrum',
    'PowerSpectrumLikelihood',
]

_LOG_2PI = float(np.log(2. * np.pi))


class CosmoSpectrum:
  """S_k(θ) = C(ℓ_k; θ) / Δ² of every mode of an N×N grid, differentiable in θ.

  log C_ℓ is bilinear in (log Ωm, log σ8) between the nodes of the shipped
  pyccl grid (`cosmology.convergence_cl_grid`), as in
  `cosmology.convergence_cl`, and log-linear in ℓ between its multipoles
  (the rule of `power_spectrum.power_spectrum_grid`); S_0 = 0. θ outside
  the grid is held at its nearest edge.

  Args:
    map_size: pixels per side N (int >= 2).
    pixel_scale_arcmin: pixel side Δ [arcmin] (> 0).
    dtype: float32 or float64 of what `power_grid` returns.

  Raises:
    ValueError: for a bad size, pixel scale or dtype.
  """

  def __init__(self, map_size, pixel_scale_arcmin, dtype=tf.float64):
    n = _checks.positive_int(map_size, 'map_size', minimum=2)
    pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                  'arcmin')
    self._dtype = _checks.float_dtype(dtype, 'dtype')
    self._map_size = n
    log_om, log_s8, ell, log_cl = cosmology.convergence_cl_grid()
    self._log_om = tf.constant(log_om, dtype)
    self._log_s8 = tf.constant(log_s8, dtype)
    self._log_cl = tf.constant(log_cl, dtype)  # [I, J, L]
    log_ell = np.log(ell)
    log_l = np.log(np.clip(lensing.multipoles(n, pix, tf.float64).numpy(),
                           ell[0], ell[-1])).reshape(-1)
    low = np.clip(np.searchsorted(log_ell, log_l, side='right') - 1, 0,
                  ell.size - 2)
    self._ell_low = tf.constant(low, tf.int32)
    self._ell_weight = tf.constant(
        (log_l - log_ell[low]) / (log_ell[low + 1] - log_ell[low]), dtype)
    not_mean = np.ones((n, n))
    not_mean[0, 0] = 0.
    delta = pix * lensing.ARCMIN_TO_RAD
    self._grid_factor = tf.constant(not_mean / delta**2, dtype)

  def _bilinear(self, nodes, log_value):
    """(i, t) of each value [B]: at fraction t of [nodes[i], nodes[i + 1]]."""
    count = int(nodes.shape[0])
    i = tf.clip_by_value(
        tf.searchsorted(nodes, log_value, side='right') - 1, 0, count - 2)
    left = tf.gather(nodes, i)
    right = tf.gather(nodes, i + 1)
    t = tf.clip_by_value((log_value - left) / (right - left), 0., 1.)
    return i, t

  def power_grid(self, theta):
    """S_k(θ) ``[..., N, N]`` (0 at k = 0) for θ = (Ωm, σ8) ``[..., 2]``."""
    theta = tf.convert_to_tensor(theta, self._dtype)
    n = self._map_size
    flat = self._power(theta, self._ell_low, self._ell_weight,
                       tf.reshape(self._grid_factor, [-1]))
    return tf.reshape(flat, tf.concat([tf.shape(theta)[:-1], [n, n]], 0))

  def power_at(self, theta, modes):
    """S_k(θ) ``[..., M]`` at M modes given by flat index (row-major k)."""
    theta = tf.convert_to_tensor(theta, self._dtype)
    modes = tf.convert_to_tensor(modes, tf.int32)
    return self._power(theta, tf.gather(self._ell_low, modes),
                       tf.gather(self._ell_weight, modes),
                       tf.gather(tf.reshape(self._grid_factor, [-1]), modes))

  def _power(self, theta, ell_low, ell_weight, factor):
    """S at the modes of (ℓ node, weight, 1/Δ² or 0) ``[M]`` → ``[..., M]``."""
    batch = tf.shape(theta)[:-1]
    flat = tf.reshape(theta, [-1, 2])
    i, t = self._bilinear(self._log_om, tf.math.log(flat[:, 0]))
    j, u = self._bilinear(self._log_s8, tf.math.log(flat[:, 1]))
    corner = lambda a, b: tf.gather_nd(self._log_cl, tf.stack([a, b], -1))
    t, u = t[:, tf.newaxis], u[:, tf.newaxis]
    log_c = ((1 - t) * ((1 - u) * corner(i, j) + u * corner(i, j + 1)) +
             t * ((1 - u) * corner(i + 1, j) + u * corner(i + 1, j + 1)))
    log_s = ((1 - ell_weight) * tf.gather(log_c, ell_low, axis=-1) +
             ell_weight * tf.gather(log_c, ell_low + 1, axis=-1))
    power = tf.exp(log_s) * factor
    return tf.reshape(power, tf.concat([batch, tf.shape(factor)], 0))


class PowerSpectrumLikelihood:
  """The Gaussian-field likelihood of θ for N×N maps; see the module docstring.

  Args:
    map_size: pixels per side N (int >= 2).
    pixel_scale_arcmin: pixel side [arcmin] (> 0).
    evidence_points: cells per axis of the midpoint rule over the prior box
      for the evidence (int >= 1; 32: 1024 cells).

  Raises:
    ValueError: for a bad size, pixel scale or number of points.

  #### Examples

  ```python
  like = PowerSpectrumLikelihood(map_size=32, pixel_scale_arcmin=0.8)
  like.log_likelihood(kappa_e, [0.3, 0.8], sigma=0.047)  # nats
  ```
  """

  def __init__(self, map_size, pixel_scale_arcmin, evidence_points=32):
    n = _checks.positive_int(map_size, 'map_size', minimum=2)
    points = _checks.positive_int(evidence_points, 'evidence_points')
    self._map_size = n
    self._spectrum = CosmoSpectrum(n, pixel_scale_arcmin, tf.float64)
    freq = np.rint(np.fft.fftfreq(n) * n).astype(np.int64)
    key = (freq[:, None]**2 + freq[None, :]**2).reshape(-1)
    # Group 0 is k = 0 alone (|k|² = 0); it is dropped from every sum.
    unique, first, inverse, counts = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True)
    self._num_groups = unique.size
    self._groups = tf.constant(inverse, tf.int32)
    self._first = tf.constant(first, tf.int32)
    self._multiplicity = tf.constant(
        np.concatenate([[0.], counts[1:]]), tf.float64)
    self._seen = tf.constant(np.concatenate([[0.], np.ones(counts.size - 1)]),
                             tf.float64)
    self._bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS, np.float64)
    _, grid = self._cells(points)
    self._evidence_spectra = self._group_spectra(
        grid.reshape(-1, 2))  # [G, R]

  @property
  def map_size(self):
    """Pixels per side N."""
    return self._map_size

  @property
  def theta_bounds(self):
    """The prior box ``[2, 2]`` of θ (`cosmology.COSMO_PARAMETER_BOUNDS`)."""
    return self._bounds.copy()

  def _cells(self, points):
    """Cell centres of each parameter (list of ``[P]``) and θ ``[P, P, 2]``."""
    centres = [low + (np.arange(points) + 0.5) * (high - low) / points
               for low, high in self._bounds]
    return centres, np.stack(np.meshgrid(*centres, indexing='ij'), -1)

  def _group_spectra(self, theta):
    """S of each |k|² group ``[..., R]``."""
    return self._spectrum.power_at(tf.cast(theta, tf.float64), self._first)

  def _group_powers(self, x):
    """Σ |x̂_k|² over each |k|² group ``[..., R]`` (unitary DFT), float64."""
    x = tf.cast(tf.convert_to_tensor(x), tf.float64)
    n = self._map_size
    _checks.square_map_shape(x.shape, 'x')
    if x.shape[-1] is not None and x.shape[-1] != n:
      raise ValueError(f'this PowerSpectrumLikelihood is for {n}x{n} maps, '
                       f'got {x.shape[-1]}x{x.shape[-1]}.')
    modes = tf.signal.fft2d(tf.complex(x, tf.zeros_like(x)))
    power = tf.reshape(tf.math.real(modes * tf.math.conj(modes)) / n**2,
                       [-1, n * n])
    grouped = tf.transpose(tf.math.unsorted_segment_sum(
        tf.transpose(power), self._groups, self._num_groups))
    return tf.reshape(grouped, tf.concat([tf.shape(x)[:-2],
                                          [self._num_groups]], 0))

  def _log_likelihood_of_groups(self, powers, spectra, sigma):
    variance = spectra + tf.square(sigma)[..., tf.newaxis]
    # The weights are 0 on group 0, k = 0: the map mean is not read.
    return -0.5 * tf.reduce_sum(
        self._seen * powers / variance +
        self._multiplicity * (tf.math.log(variance) + _LOG_2PI), axis=-1)

  def log_likelihood(self, x, theta, sigma):
    """The log-likelihood log p_G(x | θ) ``[...]`` (nats, float64); leading axes broadcast.

    Args:
      x: maps ``[..., N, N]`` (dimensionless).
      theta: (Ωm, σ8) ``[..., 2]``.
      sigma: white noise std per pixel ``[...]`` (dimensionless, > 0).
    """
    sigma = tf.cast(tf.convert_to_tensor(sigma), tf.float64)
    return self._log_likelihood_of_groups(
        self._group_powers(x), self._group_spectra(theta), sigma)

  def log_evidence(self, x, sigma):
    """The log-evidence log ∫ p_G(x | θ) p(θ) dθ ``[...]`` over the uniform prior box.

    Args:
      x: maps ``[..., N, N]``; sigma: ``[...]``, broadcasting with them.
    """
    sigma = tf.cast(tf.convert_to_tensor(sigma), tf.float64)
    return self._log_evidence_of_groups(self._group_powers(x), sigma)

  def _log_evidence_of_groups(self, powers, sigma):
    log_like = self._log_likelihood_of_groups(
        powers[..., tf.newaxis, :], self._evidence_spectra,
        sigma[..., tf.newaxis])  # [..., G]
    count = tf.cast(tf.shape(self._evidence_spectra)[0], tf.float64)
    return tf.reduce_logsumexp(log_like, axis=-1) - tf.math.log(count)

  def log_ratio(self, x, theta, sigma):
    """The log ratio log p_G(x | θ) − log p_G(x) ``[...]`` (nats, float64).

    Arguments as `log_likelihood`'s. The evidence is computed once per
    (map, σ) of the broadcast of x's and σ's leading axes, then broadcast
    against θ's: a grid of θ for one map costs one evidence.
    """
    sigma = tf.cast(tf.convert_to_tensor(sigma), tf.float64)
    powers = self._group_powers(x)
    return (self._log_likelihood_of_groups(
        powers, self._group_spectra(theta), sigma) -
            self._log_evidence_of_groups(powers, sigma))

  def grid_posterior(self, x, sigma, num_points=81):
    """p_G(θ | x) of one map on a grid of cell centres over the prior box.

    Args:
      x: one map ``[N, N]`` (dimensionless), e.g. the Kaiser-Squires E-mode
        map of fully observed white-noise data.
      sigma: its white noise std per pixel (dimensionless, > 0).
      num_points: cells per axis (int >= 1).

    Returns:
      (centres, weights): the cell centres of each parameter, a list of two
      ``[num_points]`` numpy arrays (Ωm, σ8), and the posterior mass of each
      cell ``[num_points, num_points]`` (numpy, sums to 1; axis 0 Ωm).
    """
    centres, grid = self._cells(_checks.positive_int(num_points,
                                                     'num_points'))
    log_like = self.log_likelihood(x, grid, sigma).numpy()
    weights = np.exp(log_like - log_like.max())
    return centres, weights / weights.sum()
