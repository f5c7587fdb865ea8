r"""Times Kaiser-Squires and the Wiener filter in TF beside plain numpy.

KS at 360² and 1024² (random shear), and the Wiener filter on the real COSMOS
mask, noise maps (std1/std2) and ellipticity grids at 360², 0.29 arcmin, with
a power-law prior C_ℓ ∝ ℓ^-1.2 scaled to a pixel std of 0.02. Each TF case
runs eagerly and inside ``tf.function``; the numpy reference does the same
maths (numpy FFT KS; numpy PCG on the same whitened system, preconditioner and
stopping rule). Times are medians over repeats after warm-up calls, in ms per
call. Prints a markdown table.

  python benchmarks/bench_classical.py [--cosmos_dir=...] [--dtypes=float32]
"""

import os
import pathlib
import platform
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum
from tfp_massmap.priors import GaussianPrior
from tfp_massmap.wiener import wiener_filter

_DEFAULT_COSMOS = pathlib.Path(
    os.environ.get('TFP_MASSMAP_SHARED_DATA',
                   pathlib.Path(__file__).resolve().parents[2] / 'shared' /
                   'data')) / 'cosmos'

_COSMOS_DIR = flags.DEFINE_string(
    'cosmos_dir', str(_DEFAULT_COSMOS),
    'Folder with the COSMOS std1.fits, std2.fits and '
    'cosmos_full_e{1,2}_0.29arcmin360.fits grids (360², 0.29 arcmin).')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'float64'],
                            'Float dtypes to time (float32 and/or float64).')
_KS_SIZES = flags.DEFINE_list('ks_sizes', ['360', '1024'],
                              'Map sizes N (pixels) for the KS timings.')
_KS_REPEATS = flags.DEFINE_integer('ks_repeats', 20, 'Timed KS calls per case.')
_WIENER_REPEATS = flags.DEFINE_integer('wiener_repeats', 5,
                                       'Timed Wiener calls per case.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls before timing.')
_TOL = flags.DEFINE_float('tol', 1e-6,
                          'Wiener CG relative-residual target (dimensionless).')
_PRIOR_STD = flags.DEFINE_float('prior_pixel_std', 0.02,
                                'Prior pixel std of κ (dimensionless).')

PIXEL_ARCMIN = 0.29


def _median_ms(fn, repeats, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def _ks_kernel(n):
  freq = 2. * np.pi * np.fft.fftfreq(n)
  k2, k1 = np.meshgrid(freq, freq, indexing='ij')
  ksq = k1**2 + k2**2
  safe = np.where(ksq > 0, ksq, 1.)
  return np.where(ksq > 0, (k1**2 - k2**2 + 2j * k1 * k2) / safe, 0.)


def numpy_kaiser_squires(shear, kernel):
  """(κ_E, κ_B) = F⁻¹[conj(D) F(γ1 + iγ2)], periodic, in numpy."""
  k = np.fft.ifft2(kernel.conj() * np.fft.fft2(shear[..., 0] + 1j * shear[..., 1]))
  return k.real, k.imag


class NumpyWiener:
  """PCG on (I + S½ Aᵀ N⁻¹ A S½) z = S½ Aᵀ N⁻¹ e, as tfp_massmap.wiener."""

  def __init__(self, spectrum, noise_std, mask, dtype):
    n = spectrum.shape[-1]
    self.n = n
    self.kernel = _ks_kernel(n).astype(np.complex64 if dtype == np.float32
                                       else np.complex128)
    self.half = slice(0, n // 2 + 1)
    self.sqrt_s = np.sqrt(spectrum).astype(dtype)[:, self.half]
    observed = (mask > 0)[..., None]  # The 0/1 mask of tfp_massmap.shear_map.
    safe = np.where(observed, noise_std, 1.)
    self.inverse_noise = np.where(observed, 1. / safe**2, 0.).astype(dtype)
    flipped = np.roll(self.kernel[::-1, ::-1], 1, axis=(0, 1))
    w1sq = np.abs(self.kernel + flipped.conj())**2 / 4.
    w2sq = np.abs(self.kernel - flipped.conj())**2 / 4.
    c = self.inverse_noise.mean(axis=(0, 1))
    self.precond = (1. / (1. + spectrum * (c[0] * w1sq + c[1] * w2sq))).astype(
        dtype)[:, self.half]
    self.dtype = dtype

  def _filter(self, x, half_transfer):
    return np.fft.irfft2(half_transfer * np.fft.rfft2(x), s=(self.n, self.n))

  def _adjoint(self, shear):
    return self._filter(numpy_kaiser_squires(shear, self.kernel)[0],
                        self.sqrt_s)

  def _operator(self, z):
    g = np.fft.ifft2(self.kernel * np.fft.fft2(self._filter(z, self.sqrt_s)))
    shear = np.stack([g.real, g.imag], axis=-1).astype(self.dtype)
    return z + self._adjoint(self.inverse_noise * shear)

  def __call__(self, shear, tol, max_iterations=1000):
    b = self._adjoint(self.inverse_noise * np.where(
        self.inverse_noise > 0, shear, 0.).astype(self.dtype))
    b_norm = np.linalg.norm(b)
    z = np.zeros_like(b)
    r = b.copy()
    y = self._filter(r, self.precond)
    p, ry = y.copy(), np.sum(r * y)
    iterations = 0
    while iterations < max_iterations and np.linalg.norm(r) > tol * b_norm:
      mp = self._operator(p)
      alpha = ry / np.sum(p * mp)
      z += alpha * p
      r -= alpha * mp
      iterations += 1
      y = self._filter(r, self.precond)
      ry, ry_old = np.sum(r * y), ry
      p = y + (ry / ry_old) * p
    residual = np.linalg.norm(b - self._operator(z)) / b_norm
    return self._filter(z, self.sqrt_s), iterations, residual


def _row(case, tf_eager, tf_graph, numpy_ms, extra=''):
  best = min(tf_eager, tf_graph)
  return (f'| {case} | {tf_eager:.1f} | {tf_graph:.1f} | {numpy_ms:.1f} | '
          f'{best / numpy_ms:.2f} | {extra} |')


def bench_ks(n, dtype):
  rng = np.random.default_rng(0)
  shear_np = rng.normal(0., 0.1, (n, n, 2)).astype(dtype)
  shear = tf.constant(shear_np)
  kernel = _ks_kernel(n).astype(np.complex64 if dtype == np.float32
                                else np.complex128)
  graph = tf.function(lensing.kaiser_squires)
  eager_ms = _median_ms(lambda: lensing.kaiser_squires(shear)[0].numpy(),
                        _KS_REPEATS.value, _WARMUP.value)
  graph_ms = _median_ms(lambda: graph(shear)[0].numpy(), _KS_REPEATS.value,
                        _WARMUP.value)
  numpy_ms = _median_ms(lambda: numpy_kaiser_squires(shear_np, kernel),
                        _KS_REPEATS.value, _WARMUP.value)
  diff = np.abs(lensing.kaiser_squires(shear)[0].numpy() -
                numpy_kaiser_squires(shear_np, kernel)[0]).max()
  return _row(f'KS {n}² {np.dtype(dtype).name}', eager_ms, graph_ms, numpy_ms,
              f'max abs diff {diff:.1e}')


def bench_wiener(cosmos_dir, dtype):
  from astropy.io import fits  # pylint: disable=g-import-not-at-top
  std = np.stack([fits.getdata(cosmos_dir / 'std1.fits'),
                  fits.getdata(cosmos_dir / 'std2.fits')], -1).astype(np.float64)
  shear = np.stack(
      [fits.getdata(cosmos_dir / 'cosmos_full_e1_0.29arcmin360.fits'),
       fits.getdata(cosmos_dir / 'cosmos_full_e2_0.29arcmin360.fits')],
      -1).astype(np.float64)
  mask = (std[..., 0] > 0).astype(np.float64)
  n = mask.shape[-1]
  ell = np.geomspace(10., 1e6, 200)
  spectrum = power_spectrum.power_spectrum_grid(ell, ell**-1.2, n, PIXEL_ARCMIN,
                                                tf.float64).numpy()
  spectrum *= _PRIOR_STD.value**2 / spectrum.mean()
  prior = GaussianPrior(tf.constant(spectrum, dtype))
  args = [tf.constant(a, dtype) for a in (shear, std, mask)]
  tol = _TOL.value

  def run_eager():
    return wiener_filter(*args, prior, tol=tol)

  graph = tf.function(lambda e, s, m: wiener_filter(e, s, m, prior, tol=tol))
  eager_ms = _median_ms(lambda: run_eager()[0].numpy(), _WIENER_REPEATS.value,
                        _WARMUP.value)
  graph_ms = _median_ms(lambda: graph(*args)[0].numpy(), _WIENER_REPEATS.value,
                        _WARMUP.value)
  reference = NumpyWiener(spectrum, std, mask, dtype)
  numpy_ms = _median_ms(lambda: reference(shear, tol), _WIENER_REPEATS.value,
                        _WARMUP.value)
  kappa, info = graph(*args)
  kappa_np, iterations_np, residual_np = reference(shear, tol)
  diff = np.abs(kappa.numpy() - kappa_np).max() / np.abs(kappa_np).max()
  extra = (f'TF: {int(info.iterations)} it, residual '
           f'{float(info.relative_residual):.1e}; numpy: {iterations_np} it, '
           f'residual {residual_np:.1e}; max rel diff {diff:.1e}')
  return _row(f'Wiener COSMOS {n}² {np.dtype(dtype).name}', eager_ms, graph_ms,
              numpy_ms, extra)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  dtypes = []
  for name in _DTYPES.value:
    if name not in ('float32', 'float64'):
      raise app.UsageError(f'--dtypes entries must be float32 or float64, got {name!r}.')
    dtypes.append(np.dtype(name).type)
  print(f'# {platform.node()}, {os.cpu_count()} CPU(s), TF {tf.__version__}, '
        f'numpy {np.__version__}, load average at start '
        f'{os.getloadavg()[0]:.1f}')
  print('| case | TF eager [ms] | TF tf.function [ms] | numpy [ms] | '
        'best TF / numpy | notes |')
  print('| --- | --- | --- | --- | --- | --- |')
  for dtype in dtypes:
    for n in _KS_SIZES.value:
      print(bench_ks(int(n), dtype), flush=True)
  cosmos_dir = pathlib.Path(_COSMOS_DIR.value)
  if not (cosmos_dir / 'std1.fits').exists():
    print(f'Wiener benchmark skipped: COSMOS noise maps not found in {cosmos_dir} '
          '(set --cosmos_dir).')
  else:
    for dtype in dtypes:
      print(bench_wiener(cosmos_dir, dtype), flush=True)
  print(f'# load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  app.run(main)
