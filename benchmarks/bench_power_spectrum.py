r"""Times `measure_power_spectrum` beside a plain numpy bincount estimator.

Both compute the same binned spectrum of one random N×N map (20 log ℓ bins
from the fundamental mode to Nyquist, pixels of 0.29 arcmin): the FFT, |κ̂|²
and the per-bin means. The numpy reference (``numpy.fft.fft2`` and
``numpy.bincount``) assigns the modes to bins on every call;
`measure_power_spectrum` does so on its first call for an (N, pixel scale,
edges) and caches the assignment, so its first call includes that work and
the later ones do not.

Each (implementation, N) case runs in its own Python process, so its peak
memory is its own: the process first builds the map and makes one call on a
16² map (imports, thread pools and TF's kernels are then loaded), reads its
peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), makes
one call at N² (timed: "first call") and reads the peak again. The reported
memory is the difference, the extra resident memory one call needs (0 when
it fits in memory the process already held at its earlier peak). Times are
then the median over ``--repeats`` calls. Prints a markdown table and the
largest relative difference between the two spectra per N.

  python benchmarks/bench_power_spectrum.py [--sizes=128,360,1024]
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum

_SIZES = flags.DEFINE_list('sizes', ['128', '360', '1024'],
                           'Map sizes N (pixels).')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed calls per case.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'float64'],
                           'Float dtype of the map (both implementations).')
_NUM_BINS = flags.DEFINE_integer('num_bins', 20, 'Log-spaced ℓ bins.')
_CASE = flags.DEFINE_string(
    'case', None, 'Internal: run one case "implementation:N" in this process '
    'and print its JSON result.')

PIXEL_ARCMIN = 0.29
_WARMUP_SIZE = 16
_IMPLEMENTATIONS = ('tf', 'numpy')


def numpy_power_spectrum(kappa, pixel_scale_arcmin, ell_edges):
  """Binned spectrum with numpy: (mean ℓ per bin, mean P(ℓ) per bin).

  The bins, normalisation and edge rules of `measure_power_spectrum`
  (sr and rad⁻¹; both end edges inclusive; the k = 0 mode left out).
  """
  n = kappa.shape[-1]
  delta = pixel_scale_arcmin * lensing.ARCMIN_TO_RAD
  freq = 2. * np.pi * np.fft.fftfreq(n) / delta
  ell = np.hypot(freq[:, None], freq[None, :]).ravel()
  n_b = len(ell_edges) - 1
  idx = np.digitize(ell, ell_edges) - 1
  idx[np.isclose(ell, ell_edges[0], rtol=1e-10, atol=0.)] = 0
  idx[np.isclose(ell, ell_edges[-1], rtol=1e-10, atol=0.)] = n_b - 1
  idx = np.where((idx >= 0) & (idx < n_b) & (ell > 0), idx, n_b)
  counts = np.bincount(idx, minlength=n_b + 1)[:n_b]
  spec = np.fft.fft2(kappa)
  mod2 = (spec.real**2 + spec.imag**2).ravel() * (delta**2 / n**2)
  sums = np.bincount(idx, mod2, minlength=n_b + 1)[:n_b]
  with np.errstate(invalid='ignore'):  # NaN for a bin with no mode.
    return (np.bincount(idx, ell, minlength=n_b + 1)[:n_b] / counts,
            sums / counts)


def _estimate(implementation, kappa):
  """One binned spectrum of ``kappa`` [N, N] as numpy (ℓ, power)."""
  n = kappa.shape[-1]
  edges = power_spectrum.default_ell_edges(n, PIXEL_ARCMIN, _NUM_BINS.value)
  if implementation == 'tf':
    ell, power = power_spectrum.measure_power_spectrum(
        kappa, PIXEL_ARCMIN, ell_edges=edges)
    return ell, power.numpy()
  return numpy_power_spectrum(kappa, PIXEL_ARCMIN, edges)


def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.  # kB → MB


def _run_case(case):
  """Times one case in this process; returns a JSON-ready dict."""
  implementation, n = case.split(':')
  n = int(n)
  dtype = np.dtype(_DTYPE.value)
  rng = np.random.default_rng(0)
  kappa = rng.standard_normal((n, n)).astype(dtype)
  _estimate(implementation,
            rng.standard_normal((_WARMUP_SIZE, _WARMUP_SIZE)).astype(dtype))
  before = _peak_rss_mb()
  start = time.perf_counter()
  _estimate(implementation, kappa)
  first = time.perf_counter() - start
  extra_mb = _peak_rss_mb() - before
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    _estimate(implementation, kappa)
    times.append(time.perf_counter() - start)
  return dict(implementation=implementation, n=n, first_s=first,
              median_s=statistics.median(times), extra_peak_mb=extra_mb,
              peak_mb=_peak_rss_mb())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _CASE.value:
    print(json.dumps(_run_case(_CASE.value)))
    return
  sizes = [int(s) for s in _SIZES.value]
  print(f'# {platform.node()}, {os.cpu_count()} CPU(s), TF {tf.__version__}, '
        f'numpy {np.__version__}, {_DTYPE.value}, load average at start '
        f'{os.getloadavg()[0]:.1f}')
  print('| N | implementation | first call (s) | median of '
        f'{_REPEATS.value} calls (s) | extra peak memory of a call (MB) | '
        'process peak (MB) |')
  print('| --- | --- | --- | --- | --- | --- |')
  for n in sizes:
    for implementation in _IMPLEMENTATIONS:
      command = [sys.executable, os.path.abspath(__file__),
                 f'--case={implementation}:{n}', f'--repeats={_REPEATS.value}',
                 f'--dtype={_DTYPE.value}', f'--num_bins={_NUM_BINS.value}']
      out = subprocess.run(command, check=False, capture_output=True,
                           text=True)
      if out.returncode:
        raise RuntimeError(f'case {implementation}:{n} failed:\n'
                           f'{out.stderr[-3000:]}')
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(f'| {n} | {implementation} | {r["first_s"]:.3f} | '
            f'{r["median_s"]:.3f} | {r["extra_peak_mb"]:.0f} | '
            f'{r["peak_mb"]:.0f} |', flush=True)
  for n in sizes:
    kappa = np.random.default_rng(0).standard_normal((n, n)).astype(
        _DTYPE.value)
    (ell_tf, power_tf), (ell_np, power_np) = (
        _estimate(implementation, kappa) for implementation in _IMPLEMENTATIONS)
    print(f'# N = {n}: largest relative difference tf vs numpy: power '
          f'{np.nanmax(np.abs(power_tf / power_np - 1.)):.1e}, mean ℓ '
          f'{np.nanmax(np.abs(ell_tf / ell_np - 1.)):.1e}; bins without a '
          f'mode (NaN) {int(np.isnan(power_tf).sum())} (tf), '
          f'{int(np.isnan(power_np).sum())} (numpy)')
  print(f'# load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  app.run(main)
