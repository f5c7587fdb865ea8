r"""Writes the ΛCDM convergence power spectra shipped with tfp_massmap.

Development tool: it needs pyccl (and camb for the linear power spectrum),
which are NOT runtime dependencies of the package; the package only reads the
files it writes. Two kinds:

* ``--kind=table`` (default): the fiducial table
  ``tfp_massmap/data/cl_kappa_cosmos.txt`` (text, two columns ℓ, C_ℓ);
* ``--kind=grid``: ``tfp_massmap/data/cl_kappa_grid.npz``, the same spectrum
  on a grid of (Ωm, σ8), read by ``tfp_massmap.cosmology.convergence_cl``.
  Nodes are uniform in log Ωm and log σ8 over the prior range
  (``--omega_m_range``, ``--sigma8_range``), with the fiducial values added as
  one more node on each axis so that the grid holds the fiducial table
  exactly. Arrays: ``omega_m`` [I], ``sigma8`` [J], ``ell`` [L],
  ``log_cl`` [I, J, L] (natural log of C_ℓ in sr, float32) and ``provenance``
  (the header text).

Model (all choices are written into the table's header):

* cosmology: flat ΛCDM of IllustrisTNG / κTNG (Planck 2015):
  Ωm = 0.3089, Ωb = 0.0486, h = 0.6774, n_s = 0.9667, σ8 = 0.8159, Mν = 0;
  on the grid Ωm and σ8 vary and Ωb, h, n_s, Mν stay at these values
  (Ω_c = Ωm − Ωb);
* matter power: CAMB linear spectrum, halofit (Takahashi et al. 2012) for
  the nonlinear part, as implemented in CCL;
* sources: a Smail et al. (1994) redshift distribution
  n(z) ∝ z^α exp[−(z/z0)^β] with α = 2, β = 1.5 and median redshift 1.2,
  standing in for the deep HST/ACS COSMOS source sample (Schrabback et al.
  2010, median redshift about 1.0–1.3), sampled on 0 ≤ z ≤ 5;
* observable: the convergence auto spectrum C_ℓ (sr), Limber approximation,
  convergence prefactor ℓ(ℓ+1) (not the shear one), at 200 log-spaced
  multipoles 10 ≤ ℓ ≤ 1e5 (rad⁻¹).

Usage:

  python scripts/make_cl_table.py --output tfp_massmap/data/cl_kappa_cosmos.txt
  python scripts/make_cl_table.py --kind=grid \
      --output tfp_massmap/data/cl_kappa_grid.npz
"""

import datetime
import sys

from absl import app
from absl import flags
import numpy as np
from scipy import special

FLAGS = flags.FLAGS

flags.DEFINE_enum('kind', 'table', ['table', 'grid'],
                  'table: the fiducial C_ell table (text); grid: C_ell on a '
                  '(Omega_m, sigma8) grid (npz).')
flags.DEFINE_string('output', 'tfp_massmap/data/cl_kappa_cosmos.txt',
                    'Path of the file to write.')
flags.DEFINE_float('z_median', 1.2, 'Median source redshift of the Smail n(z) '
                   '(dimensionless).')
flags.DEFINE_float('nz_alpha', 2.0, 'Power-law exponent α of the Smail n(z).')
flags.DEFINE_float('nz_beta', 1.5, 'Exponential exponent β of the Smail n(z).')
flags.DEFINE_float('ell_min', 10.0, 'Smallest multipole of the table, rad^-1.')
flags.DEFINE_float('ell_max', 1e5, 'Largest multipole of the table, rad^-1.')
flags.DEFINE_integer('num_ell', 200, 'Number of log-spaced multipoles.')
flags.DEFINE_list('omega_m_range', ['0.2', '0.4'],
                  'Grid: lowest and highest Omega_m (dimensionless).')
flags.DEFINE_list('sigma8_range', ['0.6', '1.0'],
                  'Grid: lowest and highest sigma8 (dimensionless).')
flags.DEFINE_integer('num_omega_m', 21, 'Grid: log-spaced Omega_m nodes '
                     '(before the fiducial node is added).')
flags.DEFINE_integer('num_sigma8', 11, 'Grid: log-spaced sigma8 nodes '
                     '(before the fiducial node is added).')

# IllustrisTNG / κTNG cosmology (Planck 2015, Planck XIII 2016 TT,TE,EE+lowP+lensing+ext).
COSMOLOGY = dict(Omega_m=0.3089, Omega_b=0.0486, h=0.6774, n_s=0.9667,
                 sigma8=0.8159, m_nu=0.0)


def smail_nz(z, z_median, alpha, beta):
  """Unnormalised Smail n(z) ∝ z^α exp[−(z/z0)^β] with the given median."""
  # The median of this generalised gamma law is z0 * P^{-1}((α+1)/β, 1/2)^{1/β}.
  z0 = z_median / special.gammaincinv((alpha + 1.0) / beta, 0.5)**(1.0 / beta)
  return z**alpha * np.exp(-(z / z0)**beta), z0


def convergence_cl(ccl, omega_m, sigma8, ell):
  """C_ℓ (sr) of the COSMOS-like sources at (Ωm, σ8), other parameters fixed."""
  c = COSMOLOGY
  cosmo = ccl.Cosmology(
      Omega_c=omega_m - c['Omega_b'], Omega_b=c['Omega_b'], h=c['h'],
      n_s=c['n_s'], sigma8=sigma8, m_nu=c['m_nu'],
      transfer_function='boltzmann_camb', matter_power_spectrum='halofit')
  z = np.linspace(0.0, 5.0, 1001)
  nz, _ = smail_nz(z, FLAGS.z_median, FLAGS.nz_alpha, FLAGS.nz_beta)
  tracer = ccl.Tracer()
  tracer.add_tracer(cosmo, kernel=ccl.get_lensing_kernel(cosmo, dndz=(z, nz)),
                    der_bessel=-1, der_angles=1)
  return ccl.angular_cl(cosmo, tracer, tracer, ell)


def grid_axis(bounds, num, fiducial):
  """Nodes uniform in log between the two bounds, plus the fiducial value."""
  low, high = (float(b) for b in bounds)
  return np.unique(np.append(np.geomspace(low, high, num), fiducial))


def main(argv):
  """Computes the C_ell table or grid with pyccl and writes it."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import pyccl as ccl  # pylint: disable=g-import-not-at-top
  import camb  # pylint: disable=g-import-not-at-top

  c = COSMOLOGY
  ell = np.geomspace(FLAGS.ell_min, FLAGS.ell_max, FLAGS.num_ell)
  _, z0 = smail_nz(1.0, FLAGS.z_median, FLAGS.nz_alpha, FLAGS.nz_beta)
  header = [
      'Convergence angular power spectrum C_ell of a COSMOS-like source sample '
      '(flat-sky use).',
      'Columns: ell [rad^-1], C_ell [sr].',
      f'Library: pyccl {ccl.__version__} (CAMB {camb.__version__} linear P(k), '
      'halofit nonlinear, Limber, convergence prefactor ell(ell+1)).',
      'Cosmology: flat LCDM, IllustrisTNG/kappaTNG (Planck 2015): '
      + ', '.join(f'{k}={v}' for k, v in c.items()) + '.',
      f'n(z): Smail et al. 1994, z^{FLAGS.nz_alpha:g} exp(-(z/z0)^{FLAGS.nz_beta:g}), '
      f'z0={z0:.4f}, median z={FLAGS.z_median:g}, on 0<=z<=5 '
      '(stand-in for the COSMOS sources of Schrabback et al. 2010).',
      f'Date: {datetime.date.today().isoformat()}.',
      'Command: python ' + ' '.join(sys.argv) + '.',
  ]
  if FLAGS.kind == 'table':
    cl = convergence_cl(ccl, c['Omega_m'], c['sigma8'], ell)
    np.savetxt(FLAGS.output, np.column_stack([ell, cl]), fmt='%.8e',
               header='\n'.join(header))
    print(f'wrote {FLAGS.output}: {ell.size} multipoles, '
          f'C_ell({ell[0]:.0f}) = {cl[0]:.3e}, C_ell({ell[-1]:.0f}) = {cl[-1]:.3e}')
    return

  omega_m = grid_axis(FLAGS.omega_m_range, FLAGS.num_omega_m, c['Omega_m'])
  sigma8 = grid_axis(FLAGS.sigma8_range, FLAGS.num_sigma8, c['sigma8'])
  log_cl = np.empty((omega_m.size, sigma8.size, ell.size), np.float32)
  for i, om in enumerate(omega_m):
    for j, s8 in enumerate(sigma8):
      log_cl[i, j] = np.log(convergence_cl(ccl, om, s8, ell))
    print(f'Omega_m = {om:.4f} done ({i + 1}/{omega_m.size})', flush=True)
  header[1] = ('Arrays: omega_m [I], sigma8 [J] (grid nodes, log-spaced plus '
               'the fiducial values), ell [L] rad^-1, log_cl [I, J, L] = '
               'ln(C_ell / sr), float32.')
  header[3] = header[3].replace('Cosmology:', 'Cosmology (Omega_m and sigma8 '
                                'vary on the grid, Omega_c = Omega_m - Omega_b):')
  with open(FLAGS.output, 'wb') as f:
    np.savez_compressed(f, omega_m=omega_m, sigma8=sigma8, ell=ell,
                        log_cl=log_cl, provenance=np.array('\n'.join(header)))
  print(f'wrote {FLAGS.output}: {omega_m.size} x {sigma8.size} cosmologies, '
        f'{ell.size} multipoles')


if __name__ == '__main__':
  app.run(main)
