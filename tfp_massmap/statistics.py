"""Summary statistics of convergence maps, batched over samples or maps.

What cosmologists measure on a mass map, as TensorFlow ops on maps
``[..., N, N]`` (leading axes: posterior samples, maps, or both), float32 or
float64, eager or inside `tf.function`: peaks and their counts, the one-point
PDF and moments, Minkowski functionals, aperture mass, the power spectrum;
and the posterior summaries of any of them (`band`, `interval_coverage`,
`posterior_peak_catalog`).

Conventions (docs/design.md §4). Maps are ``[..., N, N]`` with row = y and
column = x, pixel indices 0-based; shear is ``[..., N, N, 2]`` (γ1, γ2) in
the convention of `lensing.shear_from_convergence`. Convergence is
dimensionless, angles in arcmin, densities per arcmin². ``mask`` is the 0/1
indicator of observed pixels, ``[..., N, N]`` with leading axes that
broadcast against the maps'; statistics use the pixels where it is 1 (the
whole map when it is None). ``noise_std`` is the standard deviation of the
map's noise per pixel (κ units for peaks, per shear component for the
aperture mass), > 0 on the mask, ignored off it.

Peaks. A peak is a pixel strictly higher than its 8 neighbours, all 9 pixels
on the mask, off the map border (a border pixel lacks neighbours). Peaks are
found on the detection map: κ, or the S/N map ν = κ / noise_std when a noise
map is given; thresholds and histogram edges are in the same units. "Above a
threshold" is strictly greater; histogram bins are [e_i, e_{i+1}), the last
one closed.

One-point PDF and moments. The PDF is the fraction of the mask's pixels per
bin divided by the bin width (density per unit κ): pixels outside the bins
count in the normalisation but in no bin, so the PDF integrates to the
fraction of the mask's pixels inside the bin range. `moments` gives the
mean, the variance (1/n normalisation), the skewness m3 / m2^{3/2} and the
excess kurtosis m4 / m2² − 3 of the mask's pixels.

Minkowski functionals. For the excursion set {κ ≥ t} of a map of area A,

    V0(t) = area fraction                       (dimensionless),
    V1(t) = contour length / (4A)               (arcmin⁻¹),
    V2(t) = Euler characteristic / A            (arcmin⁻²),

estimated on pixels (Kratochvil et al. 2012, PRD 85, 103513) as

    V0 = ⟨Θ(κ − t)⟩,   V1 = ¼ ⟨δ(κ − t) |∇κ|⟩,
    V2 = 1/(2π) ⟨δ(κ − t) (2κ_x κ_y κ_xy − κ_x² κ_yy − κ_y² κ_xx) / |∇κ|²⟩,

averages over the pixels whose 3×3 neighbourhood lies on the mask and off
the border; derivatives are central finite differences (per arcmin) and δ is
a top hat of width ``bin_width`` centred on t. By Gauss-Bonnet the last
integrand sums the curvature of the contours, 2π per component of the
excursion set and −2π per hole. For a Gaussian field of mean μ, variance
σ0² = ⟨(κ − μ)²⟩ and σ1² = ⟨|∇κ|²⟩ (arcmin⁻²), with ν = (t − μ)/σ0,

    V0 = ½ erfc(ν/√2),
    V1 = σ1 / (8√2 σ0) · exp(−ν²/2),
    V2 = σ1² / (2σ0²) · ν exp(−ν²/2) / (2π)^{3/2}.

(V1: Rice's formula, the contour length per area is p(t) E|∇κ|, with ∇κ
independent of κ and |∇κ| Rayleigh of mean σ1 √π / 2. V2: the expected
Euler characteristic density det(Λ)^{1/2} ν e^{−ν²/2}/(2π)^{3/2} of Adler's
theorem, Λ = Cov(∇κ/σ0) = σ1²/(2σ0²) I; the pixel estimator gives it since
E[κ_xx | κ = t] = −(σ1²/2) ν/σ0 and the second derivatives are independent
of the first.) The total density of peaks (maxima) of such a field is
(Bond & Efstathiou 1987, MNRAS 226, 655)

    n_pk = σ2² / (8√3 π σ1²)   per arcmin²,   σ2² = ⟨(∇²κ)²⟩:

p(∇κ = 0) = 1/(π σ1²) times E[|det H| ; H < 0] = σ2²/(8√3) for the
isotropic Hessian H. `gaussian_minkowski_functionals` and
`gaussian_peak_density` evaluate these. The finite differences bias the
pixel estimates by O((pixel / smoothing scale)²): for a field smoothed by a
Gaussian of 5 pixels they see a σ1 1 % low (V1 1 % low), and the peak
density is within its 1.3 % sampling error of the formula
(tests/test_statistics.py).

Aperture mass. M_ap(θ0) = ∫ d²θ U(|θ − θ0|) κ(θ) = ∫ d²θ Q(|θ − θ0|) γ_t(θ)
(Schneider et al. 1998, MNRAS 296, 873), with γ_t = −Re[(γ1 + iγ2)
e^{−2iφ}] the tangential shear about θ0 and Q(θ) = (2/θ²) ∫_0^θ θ' U dθ' − U
(θ). Filters, x = θ/R for the scale R (``scale_arcmin``):

* ``'polynomial'`` (Schneider et al. 1998, ℓ = 1), zero beyond R:
  U = 9/(πR²) (1 − x²)(1/3 − x²),  Q = 6/(πR²) x² (1 − x²);
* ``'exponential'`` (Crittenden et al. 2002, ApJ 568, 20), cut at 5R:
  U = 1/(2πR²) (1 − x²/2) e^{−x²/2},  Q = x²/(4πR²) e^{−x²/2}.

Both are compensated (∫ U d²θ = 0). For a singular isothermal sphere κ =
θ_E/(2θ) (γ_t = θ_E/(2θ)) at the centre M_ap = 4θ_E/(5R) (polynomial) and
θ_E √(2π)/(8R) (exponential). The filters are sampled at the pixel centres
and applied by FFT convolution, periodic or with zero padding (no wrap).
From κ the mean over the mask is removed first, so a mass sheet has no
effect, as it has none on shear. The sampled filters are not exactly
consistent: on the shear of a smooth periodic field the κ and shear maps
differ by about 1 % rms at R = 8 pixels with the polynomial filter (its kink
at R; the difference falls as 1/R²), by 2e-5 with the smooth exponential
one (tests/test_statistics.py). A uniform per-component shear noise σ gives
a noise std σ Δ (∫ Q² d²θ)^{1/2}, = σ Δ √(6/(5π)) / R for the polynomial
filter (Δ the pixel side); `aperture_mass_noise_std` computes it per pixel.

Power spectrum and masks. `masked_power_spectrum` zeroes the maps off the
mask and measures with `power_spectrum.measure_power_spectrum` (or
`power_spectrum.measure_cross_spectrum`); the expectation of that pseudo
spectrum is the true spectrum convolved with the mask's window, which is
close to the true spectrum times the observed fraction f_sky (mean of the
mask) wherever the spectrum varies slowly across the window's width in ℓ.
The function returns the pseudo spectrum divided by f_sky (no mean
removal, no deconvolution of the window): an unbiased estimate for a flat
spectrum, biased where the window mixes ℓ bins of different power (the
lowest bins, below about the inverse of the mask's smallest extent). Compare
maps (truth, samples) through the same mask.
"""

import collections
import functools
import math

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import power_spectrum
from tfp_massmap.mcmc import results

__all__ = [
    'Band',
    'MinkowskiFunctionals',
    'Moments',
    'aperture_mass_from_shear',
    'aperture_mass_map',
    'aperture_mass_noise_std',
    'band',
    'find_peaks',
    'gaussian_minkowski_functionals',
    'gaussian_peak_density',
    'interval_coverage',
    'masked_power_spectrum',
    'minkowski_functionals',
    'moments',
    'one_point_pdf',
    'peak_catalog',
    'peak_counts',
    'peak_probability_at',
    'posterior_peak_catalog',
]


class Moments(collections.namedtuple(
    'Moments', ['mean', 'variance', 'skewness', 'excess_kurtosis'])):
  """One-point moments of maps over their mask, each a tensor ``[...]``.

  Attributes:
    mean: mean κ (dimensionless).
    variance: ⟨(κ − mean)²⟩ with 1/n normalisation.
    skewness: m3 / m2^{3/2} (dimensionless).
    excess_kurtosis: m4 / m2² − 3 (0 for a Gaussian).
  """
  __slots__ = ()


class MinkowskiFunctionals(collections.namedtuple(
    'MinkowskiFunctionals', ['v0', 'v1', 'v2'])):
  """Minkowski functionals per threshold, each ``[..., n_thresholds]``.

  Attributes:
    v0: area fraction of {κ ≥ t} (dimensionless).
    v1: contour length per unit area / 4 (arcmin⁻¹).
    v2: Euler characteristic per unit area (arcmin⁻²).
  """
  __slots__ = ()


class Band(collections.namedtuple('Band', ['mean', 'lower', 'upper'])):
  """A statistic's posterior mean and central credible band.

  Attributes:
    mean: mean over the samples.
    lower: lower bound of the central credible interval.
    upper: upper bound.
  """
  __slots__ = ()


# The 8 neighbours (row offset, column offset) of a pixel.
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                    if dy or dx)


# ---------------------------------------------------------------------------
# Argument checks.


def _as_maps(kappa, name, min_size=3):
  """``kappa`` as a float tensor ``[..., N, N]``; returns (tensor, N)."""
  kappa = tf.convert_to_tensor(kappa)
  if kappa.dtype.is_integer:
    kappa = tf.cast(kappa, tf.float32)
  _checks.float_dtype(kappa.dtype, f'{name} dtype')
  n = _checks.square_map_shape(kappa.shape, name)
  if n is None:
    raise ValueError(f'{name} must have a static map shape [..., N, N], got '
                     f'shape {kappa.shape}.')
  if n < min_size:
    raise ValueError(f'{name} must be at least {min_size}×{min_size} pixels, '
                     f'got shape {kappa.shape}.')
  return kappa, n


def _check_broadcast(a_shape, b_shape, a_name, b_name):
  """Raises if the leading axes of two map shapes do not broadcast."""
  a, b = tf.TensorShape(a_shape), tf.TensorShape(b_shape)
  if a.rank is None or b.rank is None:
    return
  try:
    tf.broadcast_static_shape(a[:-2], b[:-2])
  except ValueError:
    raise ValueError(f'{a_name} has leading axes {a[:-2]} and {b_name} has '
                     f'{b[:-2]}; they must broadcast.') from None


def _as_mask(mask, kappa, name='kappa'):
  """The 0/1 mask as a tensor of kappa's dtype, or None."""
  if mask is None:
    return None
  _checks.zero_one_mask(mask)
  mask = tf.convert_to_tensor(mask)
  _checks.same_map_shape(mask.shape, kappa.shape, 'mask', name)
  _check_broadcast(mask.shape, kappa.shape, 'mask', name)
  if not mask.dtype.is_bool:
    mask = mask > 0
  return tf.cast(mask, kappa.dtype)


def _as_noise(noise_std, kappa, mask, name='kappa'):
  """noise_std as a tensor of kappa's dtype, 1 off the mask, or None."""
  if noise_std is None:
    return None
  _checks.same_float_dtype(noise_std, kappa.dtype, 'noise_std', name)
  noise_std = tf.convert_to_tensor(noise_std, kappa.dtype)
  _checks.same_map_shape(noise_std.shape, kappa.shape, 'noise_std', name)
  _check_broadcast(noise_std.shape, kappa.shape, 'noise_std', name)
  observed = (tf.ones_like(noise_std) if mask is None else
              mask * tf.ones_like(noise_std))
  if tf.executing_eagerly():
    values = np.broadcast_to(noise_std.numpy(), observed.shape)
    bad = (observed.numpy() > 0) & ~(np.isfinite(values) & (values > 0))
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f'noise_std holds {int(bad.sum())} value(s) <= 0 or non-finite on '
          f'the mask; the first, {float(values[first])}, at index {first}. '
          'Expected a standard deviation > 0 on every observed pixel.')
  return tf.where(observed > 0, noise_std, tf.ones_like(noise_std))


def _increasing(values, name, min_size):
  """A finite, strictly increasing 1-D float64 array of >= min_size values."""
  array = np.asarray(values, dtype=np.float64)
  if (array.ndim != 1 or array.size < min_size or
      not np.all(np.isfinite(array)) or np.any(np.diff(array) <= 0)):
    raise ValueError(f'{name} must be a 1-D array of >= {min_size} finite, '
                     f'strictly increasing values, got {values!r}.')
  return array


def _check_some_pixels(count, what):
  """Raises if a concrete pixel count is 0 for some map."""
  if tf.executing_eagerly() and np.any(np.asarray(count) == 0):
    raise ValueError(f'mask leaves no {what}; expected at least one.')


# ---------------------------------------------------------------------------
# Building blocks.


def _interior(x):
  """The interior ``[..., N-2, N-2]`` of maps ``[..., N, N]``."""
  return x[..., 1:-1, 1:-1]


def _shifted(x, dy, dx):
  """The maps at (row + dy, column + dx) of each interior pixel, ``[..., N-2, N-2]``."""
  n = x.shape[-1]
  return x[..., 1 + dy:n - 1 + dy, 1 + dx:n - 1 + dx]


def _pad_border(x):
  """Pads the interior ``[..., N-2, N-2]`` back to ``[..., N, N]`` with 0."""
  return tf.pad(x, [[0, 0]] * (len(x.shape) - 2) + [[1, 1], [1, 1]])


def _stencil_mask(mask, n, dtype):
  """1 on interior pixels whose 3×3 neighbourhood is on the mask, ``[..., N-2, N-2]``."""
  if mask is None:
    return tf.ones([n - 2, n - 2], dtype)
  inside = _interior(mask)
  for dy, dx in _NEIGHBOURS:
    inside = inside * _shifted(mask, dy, dx)
  return inside


def _local_maxima(x):
  """Interior pixels strictly higher than their 8 neighbours, bool ``[..., N-2, N-2]``."""
  centre = _interior(x)
  is_max = None
  for dy, dx in _NEIGHBOURS:
    higher = centre > _shifted(x, dy, dx)
    is_max = higher if is_max is None else is_max & higher
  return is_max


def _bin_sums(values, weights, lower, upper):
  """Σ over the map of weights · [lower_i <= values < upper_i], ``[..., B]``.

  One pass per bin (memory linear in the map size). ``lower`` and ``upper``
  are numpy arrays; ``weights`` broadcasts against ``values``.
  """
  dtype = values.dtype.as_numpy_dtype
  sums = []
  for lo, hi in zip(np.asarray(lower, dtype), np.asarray(upper, dtype)):
    inside = tf.cast((values >= lo) & (values < hi), values.dtype)
    sums.append(tf.reduce_sum(inside * weights, axis=[-2, -1]))
  return tf.stack(sums, axis=-1)


def _histogram_bounds(edges, dtype):
  """Lower and upper bounds of bins [e_i, e_{i+1}), the last one closed."""
  np_dtype = dtype.as_numpy_dtype
  upper = np.asarray(edges[1:], np_dtype).copy()
  upper[-1] = np.nextafter(upper[-1], np_dtype(np.inf))
  return edges[:-1], upper


def _check_threshold(threshold):
  if threshold is not None and not math.isfinite(float(threshold)):
    raise ValueError(f'threshold must be a finite number or None, got '
                     f'{threshold!r}.')


def _peaks(kappa, n, threshold, noise_std, mask):
  """(is_peak bool ``[..., N, N]``, detection map) of checked inputs."""
  detection = kappa if noise_std is None else kappa / noise_std
  is_peak = _local_maxima(detection) & (
      _stencil_mask(mask, n, kappa.dtype) > 0)
  if threshold is not None:
    is_peak = is_peak & (_interior(detection) > float(threshold))
  return _pad_border(tf.cast(is_peak, tf.int8)) > 0, detection


# ---------------------------------------------------------------------------
# Peaks.


def find_peaks(kappa, threshold=None, noise_std=None, mask=None, name=None):
  """Peaks of maps ``[..., N, N]``: pixels higher than their 8 neighbours.

  A pixel is a peak when it is strictly higher than each of its 8
  neighbours on the detection map (κ, or κ / noise_std when ``noise_std`` is
  given), all 9 pixels are on the mask, it is off the map border, and its
  detection value is strictly above ``threshold``.

  Args:
    kappa: float tensor ``[..., N, N]`` (N >= 3).
    threshold: peak height threshold, in κ, or in S/N when ``noise_std`` is
      given; None for every local maximum.
    noise_std: optional ``[..., N, N]`` noise standard deviation of κ per
      pixel (> 0 on the mask).
    mask: optional 0/1 ``[..., N, N]`` indicator of observed pixels.
    name: optional name scope.

  Returns:
    bool tensor ``[..., N, N]`` (the leading axes of kappa, mask and
    noise_std broadcast), True at the peaks.

  Raises:
    ValueError: for a map that is not square or smaller than 3×3, a mask
      with values other than 0 and 1 or of another map shape, a noise_std
      <= 0 or non-finite on the mask, or a non-finite threshold.
  """
  with tf.name_scope(name or 'find_peaks'):
    _check_threshold(threshold)
    kappa, n = _as_maps(kappa, 'kappa')
    mask = _as_mask(mask, kappa)
    noise_std = _as_noise(noise_std, kappa, mask)
    return _peaks(kappa, n, threshold, noise_std, mask)[0]


def peak_counts(kappa, bin_edges, noise_std=None, mask=None, name=None):
  """Histogram of peak heights ``[..., n_bins]``.

  Args:
    kappa: float tensor ``[..., N, N]``.
    bin_edges: increasing edges (>= 2) in κ, or in S/N when ``noise_std``
      is given; bins are [e_i, e_{i+1}), the last closed. Peaks outside the
      edges are not counted.
    noise_std: optional ``[..., N, N]`` noise std of κ (see `find_peaks`).
    mask: optional 0/1 ``[..., N, N]`` mask (see `find_peaks`).
    name: optional name scope.

  Returns:
    Tensor ``[..., n_bins]`` of peak counts, in kappa's dtype.

  Raises:
    ValueError: if ``bin_edges`` is not increasing, or as `find_peaks`.
  """
  with tf.name_scope(name or 'peak_counts'):
    kappa, n = _as_maps(kappa, 'kappa')
    edges = _increasing(bin_edges, 'bin_edges', 2)
    mask = _as_mask(mask, kappa)
    noise_std = _as_noise(noise_std, kappa, mask)
    is_peak, detection = _peaks(kappa, n, None, noise_std, mask)
    lower, upper = _histogram_bounds(edges, kappa.dtype)
    return _bin_sums(detection, tf.cast(is_peak, kappa.dtype), lower, upper)


def _check_wcs(wcs):
  if wcs is not None and not getattr(wcs, 'has_celestial', False):
    raise ValueError(f'wcs must be a 2-D celestial astropy.wcs.WCS, got {wcs!r}.')


def _sky_columns(wcs, x, y):
  """RA and Dec (deg) of 0-based pixel positions (x = column, y = row)."""
  world = wcs.pixel_to_world_values(np.asarray(x, np.float64),
                                    np.asarray(y, np.float64))
  return (np.asarray(world[wcs.wcs.lng], np.float64),
          np.asarray(world[wcs.wcs.lat], np.float64))


def peak_catalog(kappa, threshold=None, noise_std=None, mask=None, wcs=None):
  """The peaks of ONE map as a catalogue (numpy), highest first.

  Pixel positions follow numpy and astropy: 0-based, x the column, y the
  row, a pixel's centre at integer (x, y) (astropy's pixel convention, so
  ``wcs.pixel_to_world_values(x, y)`` is the sky position).

  Args:
    kappa: ``[N, N]`` map.
    threshold: as `find_peaks` (κ, or S/N with ``noise_std``).
    noise_std: optional ``[N, N]`` noise std of κ.
    mask: optional 0/1 ``[N, N]`` mask.
    wcs: optional celestial `astropy.wcs.WCS` of the map.

  Returns:
    `dict` of numpy arrays, one entry per peak (``astropy.table.Table(
    catalog)`` makes a table of it): ``x``, ``y`` (int pixel column and
    row), ``kappa`` (height); ``snr`` (κ / noise_std) when ``noise_std``
    is given; ``ra_deg``, ``dec_deg`` when ``wcs`` is given. Sorted by the
    detection height (S/N with noise, else κ), highest first.

  Raises:
    ValueError: if ``kappa`` is not one ``[N, N]`` map, ``wcs`` is not a
      celestial WCS, or as `find_peaks`.
  """
  kappa = np.asarray(kappa)
  if kappa.ndim != 2:
    raise ValueError(f'peak_catalog takes one map [N, N], got shape '
                     f'{kappa.shape}; loop over maps, or use find_peaks for a '
                     'batch.')
  _check_wcs(wcs)
  is_peak = find_peaks(kappa, threshold, noise_std, mask).numpy()
  y, x = np.nonzero(is_peak)
  catalog = {'x': x, 'y': y, 'kappa': kappa[y, x]}
  order_by = catalog['kappa']
  if noise_std is not None:
    catalog['snr'] = kappa[y, x] / np.broadcast_to(
        np.asarray(noise_std), kappa.shape)[y, x]
    order_by = catalog['snr']
  if wcs is not None:
    catalog['ra_deg'], catalog['dec_deg'] = _sky_columns(wcs, x, y)
  order = np.argsort(-order_by, kind='stable')
  return {key: value[order] for key, value in catalog.items()}


# ---------------------------------------------------------------------------
# One-point statistics.


def _mask_weights(mask, kappa):
  """The mask broadcast to kappa's shape (ones when None)."""
  ones = tf.ones_like(kappa)
  return ones if mask is None else mask * ones


def one_point_pdf(kappa, bin_edges, mask=None, name=None):
  """The one-point PDF of κ on the mask, ``[..., n_bins]`` (per unit κ).

  The count of mask pixels per bin over (pixels on the mask × bin width).
  Pixels outside the edges count in the normalisation but in no bin: the
  PDF integrates to the fraction of the mask's pixels inside the edges.

  Args:
    kappa: float tensor ``[..., N, N]``.
    bin_edges: increasing κ edges (>= 2); bins [e_i, e_{i+1}), the last
      closed.
    mask: optional 0/1 ``[..., N, N]`` mask.
    name: optional name scope.

  Returns:
    Tensor ``[..., n_bins]`` (κ⁻¹), in kappa's dtype.

  Raises:
    ValueError: if ``bin_edges`` is not increasing, or for a bad mask (also
      one selecting no pixel).
  """
  with tf.name_scope(name or 'one_point_pdf'):
    kappa, _ = _as_maps(kappa, 'kappa', min_size=1)
    edges = _increasing(bin_edges, 'bin_edges', 2)
    weights = _mask_weights(_as_mask(mask, kappa), kappa)
    count = tf.reduce_sum(weights, axis=[-2, -1])
    _check_some_pixels(count, 'pixel')
    lower, upper = _histogram_bounds(edges, kappa.dtype)
    sums = _bin_sums(kappa, weights, lower, upper)
    widths = tf.constant(np.diff(edges), kappa.dtype)
    return sums / (count[..., tf.newaxis] * widths)


def moments(kappa, mask=None, name=None):
  """Mean, variance, skewness and excess kurtosis of κ on the mask.

  Args:
    kappa: float tensor ``[..., N, N]``.
    mask: optional 0/1 ``[..., N, N]`` mask.
    name: optional name scope.

  Returns:
    A `Moments` of tensors ``[...]`` (the broadcast leading axes).

  Raises:
    ValueError: for a bad mask (also one selecting no pixel).
  """
  with tf.name_scope(name or 'moments'):
    kappa, _ = _as_maps(kappa, 'kappa', min_size=1)
    weights = _mask_weights(_as_mask(mask, kappa), kappa)
    count = tf.reduce_sum(weights, axis=[-2, -1])
    _check_some_pixels(count, 'pixel')

    def average(x):
      return tf.reduce_sum(weights * x, axis=[-2, -1]) / count

    mean = average(kappa)
    d = kappa - mean[..., tf.newaxis, tf.newaxis]
    d2 = d * d
    m2, m3, m4 = average(d2), average(d2 * d), average(d2 * d2)
    return Moments(mean=mean, variance=m2, skewness=m3 / m2**1.5,
                   excess_kurtosis=m4 / (m2 * m2) - 3.)


# ---------------------------------------------------------------------------
# Minkowski functionals.


def minkowski_functionals(kappa, thresholds, pixel_scale_arcmin, mask=None,
                          bin_width=None, name=None):
  """Minkowski functionals V0, V1, V2 of maps as functions of threshold.

  The pixel estimator of the module docstring, on the pixels whose 3×3
  neighbourhood is on the mask and off the border (area A = their number
  × pixel area).

  Args:
    kappa: float tensor ``[..., N, N]`` (N >= 3).
    thresholds: increasing κ thresholds t.
    pixel_scale_arcmin: pixel side in arcmin.
    mask: optional 0/1 ``[..., N, N]`` mask.
    bin_width: width (κ) of the top-hat δ(κ − t) of V1 and V2; default the
      mean spacing of the thresholds (needed with a single threshold).
    name: optional name scope.

  Returns:
    `MinkowskiFunctionals` (v0 dimensionless, v1 arcmin⁻¹, v2 arcmin⁻²),
    each a tensor ``[..., n_thresholds]``.

  Raises:
    ValueError: for thresholds not increasing, a bin_width <= 0 or missing
      with one threshold, a pixel_scale_arcmin <= 0, a bad mask (also one
      that leaves no pixel with its 3×3 neighbourhood inside).
  """
  with tf.name_scope(name or 'minkowski_functionals'):
    kappa, n = _as_maps(kappa, 'kappa')
    t = _increasing(thresholds, 'thresholds', 1)
    pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                  'arcmin')
    if bin_width is None:
      if t.size < 2:
        raise ValueError('bin_width is needed with a single threshold; got '
                         f'thresholds {thresholds!r} and bin_width None.')
      bin_width = (t[-1] - t[0]) / (t.size - 1)
    width = _checks.positive_scalar(bin_width, 'bin_width', 'κ')
    inside = _stencil_mask(_as_mask(mask, kappa), n, kappa.dtype)
    centre = _interior(kappa)
    weights = inside * tf.ones_like(centre)
    count = tf.reduce_sum(weights, axis=[-2, -1])
    _check_some_pixels(count, 'pixel with its 3×3 neighbourhood on the mask')

    # Central differences in pixel units.
    right, left = _shifted(kappa, 0, 1), _shifted(kappa, 0, -1)
    up, down = _shifted(kappa, 1, 0), _shifted(kappa, -1, 0)
    kx, ky = 0.5 * (right - left), 0.5 * (up - down)
    kxx, kyy = right - 2. * centre + left, up - 2. * centre + down
    kxy = 0.25 * (_shifted(kappa, 1, 1) - _shifted(kappa, 1, -1) -
                  _shifted(kappa, -1, 1) + _shifted(kappa, -1, -1))
    grad2 = kx * kx + ky * ky
    curvature = tf.math.divide_no_nan(
        2. * kx * ky * kxy - kx * kx * kyy - ky * ky * kxx, grad2)

    dtype = kappa.dtype.as_numpy_dtype
    far = np.full_like(t, np.inf)
    v0 = _bin_sums(centre, weights, t, far) / count[..., tf.newaxis]
    lower, upper = t - 0.5 * width, t + 0.5 * width
    norm = count[..., tf.newaxis] * tf.constant(width, kappa.dtype)
    v1 = _bin_sums(centre, weights * tf.sqrt(grad2), lower, upper) / norm
    v2 = _bin_sums(centre, weights * curvature, lower, upper) / norm
    return MinkowskiFunctionals(
        v0=v0, v1=v1 * dtype(0.25 / pix),
        v2=v2 * dtype(1. / (2. * math.pi * pix * pix)))


def gaussian_minkowski_functionals(thresholds, sigma0, sigma1, mean=0.):
  """Expected Minkowski functionals of a Gaussian field (module docstring).

  Args:
    thresholds: κ thresholds t (array).
    sigma0: standard deviation of κ (> 0).
    sigma1: ⟨|∇κ|²⟩^{1/2} in arcmin⁻¹ (> 0).
    mean: mean of κ.

  Returns:
    `MinkowskiFunctionals` of numpy arrays shaped like ``thresholds``
    (arcmin⁻¹ for v1, arcmin⁻² for v2).
  """
  s0 = _checks.positive_scalar(sigma0, 'sigma0')
  s1 = _checks.positive_scalar(sigma1, 'sigma1', 'arcmin⁻¹')
  nu = (np.asarray(thresholds, np.float64) - float(mean)) / s0
  gauss = np.exp(-0.5 * nu * nu)
  erfc = np.vectorize(math.erfc)
  return MinkowskiFunctionals(
      v0=0.5 * erfc(nu / math.sqrt(2.)),
      v1=s1 / (8. * math.sqrt(2.) * s0) * gauss,
      v2=s1**2 / (2. * s0**2) * nu * gauss / (2. * math.pi)**1.5)


def gaussian_peak_density(sigma1, sigma2):
  """Total density of maxima of a Gaussian field, σ2² / (8√3 π σ1²) per arcmin².

  Args:
    sigma1: ⟨|∇κ|²⟩^{1/2} in arcmin⁻¹ (> 0).
    sigma2: ⟨(∇²κ)²⟩^{1/2} in arcmin⁻² (> 0).
  """
  s1 = _checks.positive_scalar(sigma1, 'sigma1', 'arcmin⁻¹')
  s2 = _checks.positive_scalar(sigma2, 'sigma2', 'arcmin⁻²')
  return s2**2 / (8. * math.sqrt(3.) * math.pi * s1**2)


# ---------------------------------------------------------------------------
# Aperture mass.


def _polynomial_u(x):
  return np.where(x < 1., 9. / np.pi * (1. - x * x) * (1. / 3. - x * x), 0.)


def _polynomial_q(x):
  return np.where(x < 1., 6. / np.pi * x * x * (1. - x * x), 0.)


def _exponential_u(x):
  return np.where(x < 5., (1. - 0.5 * x * x) * np.exp(-0.5 * x * x) /
                  (2. * np.pi), 0.)


def _exponential_q(x):
  return np.where(x < 5., x * x * np.exp(-0.5 * x * x) / (4. * np.pi), 0.)


# name: (support radius in units of R, R² U(x), R² Q(x)).
_APERTURE_FILTERS = {
    'polynomial': (1., _polynomial_u, _polynomial_q),
    'exponential': (5., _exponential_u, _exponential_q),
}


def _check_filter(filter):  # pylint: disable=redefined-builtin
  if filter not in _APERTURE_FILTERS:
    raise ValueError(f'filter must be one of {sorted(_APERTURE_FILTERS)}, got '
                     f'{filter!r}.')
  return filter


@functools.lru_cache(maxsize=32)
def _aperture_spectra(m, scale_px, filter, kinds):  # pylint: disable=redefined-builtin
  """Real-FFT spectra of aperture kernels on an m×m grid (numpy, cached).

  The kernels are sampled at the pixel offsets (FFT order, offset 0 at
  index 0), in pixel units (U Δ², so a pixel sum is the integral). Kinds:
  ``u`` U; ``q_cos``, ``q_sin`` −Q cos 2φ, −Q sin 2φ (the tangential-shear
  weights of γ1, γ2); ``q2`` Q²; ``q2_cos2``, ``q2_sin2`` Q² cos² 2φ, Q² sin² 2φ.
  """
  _, u, q = _APERTURE_FILTERS[filter]
  offsets = np.fft.fftfreq(m) * m
  dy, dx = np.meshgrid(offsets, offsets, indexing='ij')
  r2 = dx * dx + dy * dy
  x = np.sqrt(r2) / scale_px
  safe = np.where(r2 > 0, r2, 1.)
  cos2 = np.where(r2 > 0, (dx * dx - dy * dy) / safe, 0.)
  sin2 = np.where(r2 > 0, 2. * dx * dy / safe, 0.)
  area = 1. / scale_px**2  # Δ²/R² of U = u(x) / R².
  q_px = q(x) * area
  kernels = {
      'u': lambda: u(x) * area,
      'q_cos': lambda: -q_px * cos2,
      'q_sin': lambda: -q_px * sin2,
      'q2': lambda: q_px**2,
      'q2_cos2': lambda: (q_px * cos2)**2,
      'q2_sin2': lambda: (q_px * sin2)**2,
  }
  spectra = tuple(np.fft.rfft2(kernels[kind]()) for kind in kinds)
  for s in spectra:
    s.flags.writeable = False
  return spectra


def _aperture_grid(n, scale_arcmin, pixel_scale_arcmin, filter, periodic):  # pylint: disable=redefined-builtin
  """(scale in pixels, FFT size m) for an aperture convolution of N×N maps."""
  scale = _checks.positive_scalar(scale_arcmin, 'scale_arcmin', 'arcmin')
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                'arcmin')
  support = _APERTURE_FILTERS[_check_filter(filter)][0]
  scale_px = scale / pix
  reach = int(math.ceil(support * scale_px))  # Pixels.
  if periodic:
    if reach > n // 2:
      raise ValueError(
          f'scale_arcmin = {scale_arcmin!r}: the {filter} filter reaches '
          f'{support * scale:g} arcmin, more than half the map side '
          f'({n * pix / 2:g} arcmin), so the periodic filter would overlap '
          'itself; use a smaller scale or periodic=False.')
    return scale_px, n
  # Zero padding: an output pixel sees inputs up to N − 1 pixels away, and
  # their images in the padded period at >= m − N + 1 > reach.
  return scale_px, max(n + reach + 1, 2 * reach + 2)


def _convolve(x, spectra, n, m):
  """Σ_k irfft2(rfft2(x_k) · spectrum_k) over pairs, cropped to N×N."""
  total = None
  for map_, spectrum in zip(x, spectra):
    complex_dtype = tf.complex64 if map_.dtype == tf.float32 else tf.complex128
    term = tf.signal.rfft2d(map_, fft_length=[m, m]) * tf.constant(
        spectrum, complex_dtype)
    total = term if total is None else total + term
  return tf.signal.irfft2d(total, fft_length=[m, m])[..., :n, :n]


def aperture_mass_map(kappa, scale_arcmin, pixel_scale_arcmin,
                      filter='polynomial', mask=None, periodic=False,  # pylint: disable=redefined-builtin
                      name=None):
  """Aperture mass M_ap = ∫ U κ d²θ at every pixel (module docstring).

  Args:
    kappa: float tensor ``[..., N, N]`` (dimensionless).
    scale_arcmin: filter scale R in arcmin (> 0).
    pixel_scale_arcmin: pixel side in arcmin.
    filter: ``'polynomial'`` or ``'exponential'`` (module docstring).
    mask: optional 0/1 ``[..., N, N]`` mask: κ is set to 0 off it after its
      mean on the mask is removed.
    periodic: True for a periodic convolution (the filter must fit in half
      the map), False to zero-pad (no wrap-around; the map is 0 beyond its
      edges, as off the mask).
    name: optional name scope.

  Returns:
    ``[..., N, N]`` aperture mass (dimensionless).

  Raises:
    ValueError: for scale_arcmin or pixel_scale_arcmin <= 0, an unknown
      filter, a periodic filter wider than half the map, or a bad mask.
  """
  with tf.name_scope(name or 'aperture_mass_map'):
    kappa, n = _as_maps(kappa, 'kappa', min_size=1)
    scale_px, m = _aperture_grid(n, scale_arcmin, pixel_scale_arcmin, filter,
                                 periodic)
    mask = _as_mask(mask, kappa)
    weights = _mask_weights(mask, kappa)
    count = tf.reduce_sum(weights, axis=[-2, -1])
    _check_some_pixels(count, 'pixel')
    mean = tf.reduce_sum(weights * kappa, axis=[-2, -1]) / count
    centred = (kappa - mean[..., tf.newaxis, tf.newaxis]) * weights
    (spectrum,) = _aperture_spectra(m, scale_px, filter, ('u',))
    return _convolve([centred], [spectrum], n, m)


def aperture_mass_from_shear(shear, scale_arcmin, pixel_scale_arcmin,
                             filter='polynomial', mask=None, periodic=False,  # pylint: disable=redefined-builtin
                             name=None):
  """Aperture mass M_ap = ∫ Q γ_t d²θ from shear at every pixel.

  The classical shear-only statistic: the same as `aperture_mass_map` of
  the convergence for noise-free data, up to discretisation (module
  docstring).

  Args:
    shear: float tensor ``[..., N, N, 2]`` (γ1, γ2).
    scale_arcmin: filter scale R in arcmin (> 0).
    pixel_scale_arcmin: pixel side in arcmin.
    filter: ``'polynomial'`` or ``'exponential'``.
    mask: optional 0/1 ``[..., N, N]`` mask; the shear is taken as 0 off it
      (it may hold NaN there).
    periodic: as `aperture_mass_map`.
    name: optional name scope.

  Returns:
    ``[..., N, N]`` aperture mass (dimensionless).

  Raises:
    ValueError: for a shear not ``[..., N, N, 2]``, or as
      `aperture_mass_map`.
  """
  with tf.name_scope(name or 'aperture_mass_from_shear'):
    shear = tf.convert_to_tensor(shear)
    _checks.float_dtype(shear.dtype, 'shear dtype')
    n = _checks.square_map_shape(shear.shape, 'shear', channels=2)
    if n is None:
      raise ValueError(f'shear must have a static shape [..., N, N, 2], got '
                       f'{shear.shape}.')
    g1, g2 = shear[..., 0], shear[..., 1]
    mask = _as_mask(mask, g1, 'shear')
    if mask is not None:
      g1 = tf.where(mask > 0, g1, tf.zeros_like(g1))
      g2 = tf.where(mask > 0, g2, tf.zeros_like(g2))
    scale_px, m = _aperture_grid(n, scale_arcmin, pixel_scale_arcmin, filter,
                                 periodic)
    spectra = _aperture_spectra(m, scale_px, filter, ('q_cos', 'q_sin'))
    return _convolve([g1, g2], spectra, n, m)


def aperture_mass_noise_std(noise_std, scale_arcmin, pixel_scale_arcmin,
                            filter='polynomial', mask=None, periodic=False,  # pylint: disable=redefined-builtin
                            name=None):
  """Noise std of `aperture_mass_from_shear` for independent pixel noise.

  Var M_ap = Σ_pixels Q² Δ⁴ (σ1² cos² 2φ + σ2² sin² 2φ), = Σ Q² Δ⁴ σ² for
  the same σ on both components; pixels off the mask contribute nothing.
  The aperture-mass S/N map is ``aperture_mass_from_shear(...) /
  aperture_mass_noise_std(...)``.

  Args:
    noise_std: ``[..., N, N]`` (both components) or ``[..., N, N, 2]`` (per
      component) std of the pixel shear (> 0 on the mask).
    scale_arcmin: filter scale R in arcmin (> 0).
    pixel_scale_arcmin: pixel side in arcmin.
    filter: ``'polynomial'`` or ``'exponential'``.
    mask: optional 0/1 ``[..., N, N]`` mask.
    periodic: as `aperture_mass_map`.
    name: optional name scope.

  Returns:
    ``[..., N, N]`` noise standard deviation of M_ap (dimensionless).

  Raises:
    ValueError: for a noise_std <= 0 or non-finite on the mask, or as
      `aperture_mass_map`.
  """
  with tf.name_scope(name or 'aperture_mass_noise_std'):
    noise_std = tf.convert_to_tensor(noise_std)
    _checks.float_dtype(noise_std.dtype, 'noise_std dtype')
    shape = noise_std.shape
    if shape.rank is not None and shape.rank >= 3 and shape[-1] == 2 and (
        shape[-2] == shape[-3]):
      components = [noise_std[..., 0], noise_std[..., 1]]
      kinds = ('q2_cos2', 'q2_sin2')
    else:
      components, kinds = [noise_std], ('q2',)
    n = _checks.square_map_shape(components[0].shape, 'noise_std')
    if n is None:
      raise ValueError(f'noise_std must have a static map shape, got {shape}.')
    mask = _as_mask(mask, components[0], 'noise_std')
    variances = []
    for sigma in components:
      sigma = _as_noise(sigma, sigma, mask, 'noise_std')  # Checks > 0.
      off = tf.zeros_like(sigma)
      variances.append(sigma * sigma if mask is None else
                       tf.where(mask > 0, sigma * sigma, off))
    scale_px, m = _aperture_grid(n, scale_arcmin, pixel_scale_arcmin, filter,
                                 periodic)
    spectra = _aperture_spectra(m, scale_px, filter, kinds)
    variance = _convolve(variances, spectra, n, m)
    return tf.sqrt(tf.maximum(variance, tf.zeros_like(variance)))


# ---------------------------------------------------------------------------
# Power spectrum with a mask.


def masked_power_spectrum(kappa, pixel_scale_arcmin, mask=None, kappa_b=None,
                          ell_edges=None, n_bins=20, name=None):
  """Pseudo power (or cross) spectrum on the mask, divided by f_sky.

  See the module docstring for what it estimates. Without a mask it is
  `power_spectrum.measure_power_spectrum` (or `measure_cross_spectrum`).

  Args:
    kappa: float tensor ``[..., N, N]``.
    pixel_scale_arcmin: pixel side in arcmin.
    mask: optional 0/1 ``[..., N, N]`` mask.
    kappa_b: optional second maps for a cross spectrum (same dtype and map
      shape; leading axes broadcast).
    ell_edges: ℓ bin edges in rad⁻¹; default log bins (`power_spectrum`).
    n_bins: number of default bins.
    name: optional name scope.

  Returns:
    (ell, power): mean ℓ per bin (rad⁻¹, numpy ``[n_bins]``) and the
    spectrum (sr) ``[..., n_bins]``.

  Raises:
    ValueError: for a bad mask (also one selecting no pixel), or as the
      `power_spectrum` functions.
  """
  with tf.name_scope(name or 'masked_power_spectrum'):
    kappa, _ = _as_maps(kappa, 'kappa', min_size=1)
    mask = _as_mask(mask, kappa)
    if kappa_b is not None:
      _checks.same_float_dtype(kappa_b, kappa.dtype, 'kappa_b', 'kappa')
      kappa_b = tf.convert_to_tensor(kappa_b, kappa.dtype)
    f_sky = None
    if mask is not None:
      kappa = tf.where(mask > 0, kappa, tf.zeros_like(kappa))
      if kappa_b is not None:
        kappa_b = tf.where(mask > 0, kappa_b, tf.zeros_like(kappa_b))
      f_sky = tf.reduce_mean(mask, axis=[-2, -1])
      _check_some_pixels(f_sky, 'pixel')
    if kappa_b is None:
      ell, power = power_spectrum.measure_power_spectrum(
          kappa, pixel_scale_arcmin, ell_edges, n_bins)
    else:
      ell, power = power_spectrum.measure_cross_spectrum(
          kappa, kappa_b, pixel_scale_arcmin, ell_edges, n_bins)
    if f_sky is not None:
      power = power / f_sky[..., tf.newaxis]
    return ell, power


# ---------------------------------------------------------------------------
# Posterior summaries.


def band(values, level=0.68, axis=0, name=None):
  """Posterior mean and central credible band of a statistic.

  The bounds are `mcmc.results.credible_interval` of the samples (its
  plotting positions q (S + 1), so that a further draw falls inside with
  probability ``level``; it warns when S is too small for the level). A
  position with a NaN sample (e.g. an empty ℓ bin) has NaN bounds.

  Args:
    values: float tensor with S >= 2 samples along ``axis``, e.g. peak
      counts ``[S, n_bins]``.
    level: credible level in (0, 1).
    axis: the sample axis.
    name: optional name scope.

  Returns:
    A `Band` of tensors shaped like ``values`` without ``axis``.

  Raises:
    ValueError: for fewer than 2 samples or a level outside (0, 1).
  """
  with tf.name_scope(name or 'band'):
    values = tf.convert_to_tensor(values)
    rank = values.shape.rank
    axis = int(axis)
    if rank is None or not -rank <= axis < rank:
      raise ValueError(f'axis {axis} is out of range for values of shape '
                       f'{values.shape}.')
    axis %= rank
    values = tf.transpose(
        values, [axis] + [i for i in range(rank) if i != axis])
    lower, upper = tf.unstack(results.credible_interval(values, level))
    has_nan = tf.reduce_any(tf.math.is_nan(values), axis=0)
    nan = tf.fill(tf.shape(lower), tf.constant(np.nan, values.dtype))
    return Band(mean=tf.reduce_mean(values, axis=0),
                lower=tf.where(has_nan, nan, lower),
                upper=tf.where(has_nan, nan, upper))


def interval_coverage(truth, lower, upper):
  """Per bin, the fraction of maps whose true statistic lies in [lower, upper].

  Args:
    truth: ``[..., n_bins]`` the truth's statistic (one map or many).
    lower, upper: bounds broadcasting against ``truth`` (e.g. a `Band`'s).

  Returns:
    numpy ``[n_bins]``: the coverage per bin over every leading axis; maps
    where the truth or a bound is NaN are left out, NaN when none is left.

  Raises:
    ValueError: if the shapes do not broadcast.
  """
  truth = np.asarray(truth, np.float64)
  lower = np.asarray(lower, np.float64)
  upper = np.asarray(upper, np.float64)
  try:
    truth, lower, upper = np.broadcast_arrays(truth, lower, upper)
  except ValueError:
    raise ValueError(f'truth {truth.shape}, lower {lower.shape} and upper '
                     f'{upper.shape} must broadcast.') from None
  if truth.ndim == 0:
    raise ValueError('truth must have a bin axis [..., n_bins], got a scalar.')
  valid = np.isfinite(truth) & np.isfinite(lower) & np.isfinite(upper)
  hit = valid & (truth >= lower) & (truth <= upper)
  axes = tuple(range(truth.ndim - 1))
  counts = valid.sum(axis=axes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(counts > 0, hit.sum(axis=axes) / counts, np.nan)


def _disc_offsets(radius_px):
  """Integer (dy, dx) with dy² + dx² <= radius², radius in pixels."""
  r = int(math.floor(radius_px))
  d = np.arange(-r, r + 1)
  dy, dx = np.meshgrid(d, d, indexing='ij')
  inside = dy * dy + dx * dx <= radius_px * radius_px
  return dy[inside], dx[inside]


def peak_probability_at(samples, x, y, threshold, match_radius_arcmin,
                        pixel_scale_arcmin, mask=None, noise_std=None,
                        level=0.68):
  """How firmly posterior samples hold a peak near given pixel positions.

  At each position, over the S samples: the probability that a sample has
  a peak above ``threshold`` within ``match_radius_arcmin``; the scatter of
  the positions of those matched peaks (the highest one in the disc of
  each sample); and the central credible interval of the height, the
  highest detection value of each sample on the mask within the radius
  (all S samples, matched or not). Positions are those of the peaks of the
  posterior mean (`posterior_peak_catalog`) or of known objects, e.g.
  X-ray clusters through a WCS.

  Args:
    samples: ``[S, N, N]`` posterior samples of one map (S >= 2).
    x, y: 1-D integer pixel columns and rows (0-based; positions off the map
      or off the mask get probability 0 and NaN heights).
    threshold: peak threshold, κ or S/N with ``noise_std``.
    match_radius_arcmin: matching radius in arcmin (> 0).
    pixel_scale_arcmin: pixel side in arcmin.
    mask: optional 0/1 ``[N, N]`` mask.
    noise_std: optional ``[N, N]`` noise std of κ (heights in S/N).
    level: credible level of the height interval.

  Returns:
    `dict` of numpy ``[len(x)]`` arrays: ``probability`` (fraction of
    samples with a matched peak), ``position_scatter_arcmin`` (RMS
    distance of the matched peaks from their centroid; NaN with fewer than
    2 matches), ``height_lower``, ``height_upper``.

  Raises:
    ValueError: for samples not ``[S, N, N]`` with S >= 2, a
      match_radius_arcmin or pixel_scale_arcmin <= 0, a level outside
      (0, 1), x and y of different shapes, or as `find_peaks`.
  """
  samples = np.asarray(samples)
  if samples.ndim != 3 or samples.shape[0] < 2:
    raise ValueError(f'samples must be [S, N, N] with S >= 2 samples of one '
                     f'map, got shape {samples.shape}.')
  radius = _checks.positive_scalar(match_radius_arcmin, 'match_radius_arcmin',
                                   'arcmin')
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                'arcmin')
  if not 0. < level < 1.:
    raise ValueError(f'level must be in (0, 1), got {level!r}.')
  x = np.asarray(x).astype(np.int64)
  y = np.asarray(y).astype(np.int64)
  if x.ndim != 1 or x.shape != y.shape:
    raise ValueError(f'x and y must be 1-D arrays of one shape, got shapes '
                     f'{x.shape} and {y.shape}.')
  kappa, n = _as_maps(samples, 'samples')
  mask_t = _as_mask(mask, kappa, 'samples')
  is_peak, detection = _peaks(kappa, n, threshold,
                              _as_noise(noise_std, kappa, mask_t, 'samples'),
                              mask_t)
  is_peak, detection = is_peak.numpy(), detection.numpy()
  observed = (np.ones((n, n), bool) if mask is None else
              np.broadcast_to(np.asarray(mask) > 0, (n, n)))
  dy, dx = _disc_offsets(radius / pix)
  num = samples.shape[0]
  out = {key: np.full(x.size, np.nan) for key in (
      'probability', 'position_scatter_arcmin', 'height_lower', 'height_upper')}
  out['probability'][:] = 0.0
  heights, where = [], []
  for i, (y0, x0) in enumerate(zip(y, x)):
    ys, xs = y0 + dy, x0 + dx
    keep = (ys >= 0) & (ys < n) & (xs >= 0) & (xs < n)
    ys, xs = ys[keep], xs[keep]
    keep = observed[ys, xs]
    ys, xs = ys[keep], xs[keep]
    if ys.size == 0:
      continue
    values = detection[:, ys, xs]  # [S, D]
    peaks = is_peak[:, ys, xs]
    matched = peaks.any(axis=1)
    best = np.argmax(np.where(peaks, values, -np.inf), axis=1)[matched]
    if matched.sum() >= 2:
      positions = np.stack([ys[best], xs[best]], axis=1) * pix
      spread = positions - positions.mean(axis=0)
      out['position_scatter_arcmin'][i] = math.sqrt(
          (spread**2).sum(axis=1).mean())
    out['probability'][i] = matched.sum() / num
    heights.append(values.max(axis=1))
    where.append(i)
  if heights:
    bounds = np.asarray(results.credible_interval(
        np.stack(heights, axis=1), level), np.float64)
    out['height_lower'][where], out['height_upper'][where] = bounds
  return out


def posterior_peak_catalog(samples, threshold, match_radius_arcmin,
                           pixel_scale_arcmin, mask=None, noise_std=None,
                           wcs=None, level=0.68):
  """Peaks of the posterior mean and how firmly the samples hold each.

  The peaks of the posterior mean above ``threshold`` (`peak_catalog`),
  each with `peak_probability_at` its position.

  Args:
    samples: ``[S, N, N]`` posterior samples of one map (S >= 2).
    threshold: peak threshold, κ or S/N with ``noise_std``.
    match_radius_arcmin: matching radius in arcmin (> 0).
    pixel_scale_arcmin: pixel side in arcmin.
    mask: optional 0/1 ``[N, N]`` mask.
    noise_std: optional ``[N, N]`` noise std of κ (heights in S/N).
    wcs: optional celestial `astropy.wcs.WCS` (adds ``ra_deg``, ``dec_deg``).
    level: credible level of the height interval.

  Returns:
    `dict` of numpy arrays, one entry per peak of the mean, highest first:
    the columns of `peak_catalog` of the posterior mean, and those of
    `peak_probability_at`.

  Raises:
    ValueError: as `peak_probability_at` and `peak_catalog`.
  """
  samples = np.asarray(samples)
  if samples.ndim != 3 or samples.shape[0] < 2:
    raise ValueError(f'samples must be [S, N, N] with S >= 2 samples of one '
                     f'map, got shape {samples.shape}.')
  catalog = peak_catalog(samples.mean(axis=0), threshold, noise_std, mask, wcs)
  catalog.update(peak_probability_at(
      samples, catalog['x'], catalog['y'], threshold, match_radius_arcmin,
      pixel_scale_arcmin, mask=mask, noise_std=noise_std, level=level))
  return catalog
