"""lognormal_kappa: synthetic COSMOS-like convergence maps, made offline.

Every map is a deterministic function of its integer ``seed`` (the example
key): white noise z = ``numpy.random.default_rng(seed).standard_normal``
``((N, N))`` is mapped to κ by ``tfp_massmap.lognormal.LognormalField``
(``convergence_from_white``) with the shipped ΛCDM C_ℓ table. Seeds are
0 .. n_train − 1 for train, then validation, then test, so the splits never
share a map; configs with the same N share seeds, so e.g. ``gaussian_128``
and ``lognormal_128`` maps of the same seed come from the same white noise.

The ``cosmo_<N>`` configs vary the cosmology θ = (Ωm, σ8) from map to map:
map s has θ = ``cosmology.cosmo_kappa_parameters(s)``, uniform over
``cosmology.COSMO_PARAMETER_BOUNDS`` (Ωm 0.2–0.4, σ8 0.6–1.0), the C_ℓ
``cosmology.convergence_cl(θ)`` and the shift ``cosmology.lognormal_shift(θ)``,
and carries θ as the features ``omega_m`` and ``sigma8``. Their white noise
is that of the same seed in the other configs of that N.
Nothing is downloaded.
"""

import dataclasses

from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfp_massmap import cosmology
from tfp_massmap import lognormal

_BATCH_PIXELS = 2**20  # maps are generated in batches of about this many pixels


@dataclasses.dataclass(eq=False)
class LognormalKappaConfig(tfds.core.BuilderConfig):
  """A map size, pixel scale, field type and split sizes.

  Attributes:
    map_size: pixels per side N.
    pixel_scale_arcmin: pixel side in arcmin.
    shift: the lognormal shift λ (dimensionless), or None for the Gaussian
      field with the same κ power spectrum; unused when
      ``vary_cosmology``.
    split_sizes: number of maps in (train, validation, test).
    vary_cosmology: each map has its own (Ωm, σ8), drawn from its seed, with
      the matching spectrum and lognormal shift (the ``cosmo_<N>`` configs).
  """
  map_size: int = 128
  pixel_scale_arcmin: float = 0.8
  shift: float | None = cosmology.COSMOS_SHIFT
  split_sizes: tuple[int, int, int] = (4096, 512, 512)
  vary_cosmology: bool = False


def _config(kind, map_size, pixel_scale_arcmin, split_sizes):
  if kind == 'cosmo':
    (om_low, om_high), (s8_low, s8_high) = cosmology.COSMO_PARAMETER_BOUNDS
    field = (f'lognormal fields of Omega_m ~ U({om_low}, {om_high}) and '
             f'sigma8 ~ U({s8_low}, {s8_high}) drawn per map')
  elif kind == 'lognormal':
    field = f'lognormal field (shift {cosmology.COSMOS_SHIFT})'
  else:
    field = 'Gaussian field with the same power spectrum'
  return LognormalKappaConfig(
      name=f'{kind}_{map_size}',
      description=(f'{map_size}x{map_size} maps at {pixel_scale_arcmin} arcmin '
                   f'per pixel, {field}; train/validation/test = '
                   f'{"/".join(str(s) for s in split_sizes)} maps.'),
      map_size=map_size,
      pixel_scale_arcmin=pixel_scale_arcmin,
      shift=cosmology.COSMOS_SHIFT if kind != 'gaussian' else None,
      split_sizes=split_sizes,
      vary_cosmology=kind == 'cosmo')


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic lognormal / Gaussian convergence maps (COSMOS-like C_ℓ)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Map sizes, pixel scales and split sizes: `tfp_massmap.cosmology`.
  BUILDER_CONFIGS = [
      _config(kind, *setting) for kind in ('lognormal', 'gaussian')
      for setting in cosmology.LOGNORMAL_KAPPA_SETTINGS
  ] + [_config('cosmo', *setting) for setting in cosmology.COSMO_KAPPA_SETTINGS]

  # TFDS derives these paths from the module name, which points into
  # tfp_massmap/ for an editable install (tfp_massmap.datasets is mapped to
  # the top-level datasets/ folder); README.md, CITATIONS.bib, TAGS.txt,
  # checksums.tsv and dummy_data/ live next to this module.
  code_path = epath.Path(__file__)
  pkg_dir_path = code_path.parent

  def _info(self) -> tfds.core.DatasetInfo:
    n = self.builder_config.map_size
    scalar = tfds.features.Scalar
    features = {
        # Raw bytes: a float-list proto costs more to write than the map.
        'kappa': tfds.features.Tensor(
            shape=(n, n), dtype=np.float32,
            encoding=tfds.features.Encoding.BYTES,
            doc=f'convergence (dimensionless), [{n}, {n}], periodic; '
            'computed in float64, stored as float32'),
        'pixel_scale_arcmin': scalar(np.float32,
                                     doc='pixel side, arcmin'),
        'shift': scalar(np.float32, doc='lognormal shift λ '
                        '(dimensionless); 0 for the gaussian_* configs; '
                        'cosmology.lognormal_shift(Ωm, σ8) for cosmo_*'),
        'seed': scalar(np.int64, doc='seed s of the white noise numpy.'
                       'random.default_rng(s).standard_normal((N, N)); '
                       'also the example key'),
    }
    if self.builder_config.vary_cosmology:
      features['omega_m'] = scalar(
          np.float32, doc='matter density Ωm (dimensionless), '
          'cosmology.cosmo_kappa_parameters(seed)[0]')
      features['sigma8'] = scalar(
          np.float32, doc='amplitude σ8 (dimensionless), '
          'cosmology.cosmo_kappa_parameters(seed)[1]')
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        supervised_keys=None,
        # The maps are made by this package, which has no web page; without a
        # homepage TFDS would show a tensorflow.org catalogue page that does
        # not exist. CCL computed the shipped C_ℓ table the maps follow.
        homepage='https://github.com/LSSTDESC/CCL',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    n_train, n_val, n_test = self.builder_config.split_sizes
    return {
        'train': self._generate_examples(0, n_train),
        'validation': self._generate_examples(n_train, n_val),
        'test': self._generate_examples(n_train + n_val, n_test),
    }

  def _generate_examples(self, first_seed, num_examples):
    if self.builder_config.vary_cosmology:
      yield from self._generate_cosmo_examples(first_seed, num_examples)
      return
    cfg = self.builder_config
    n = cfg.map_size
    field = lognormal.LognormalField(cfg.shift, n, cfg.pixel_scale_arcmin,
                                     dtype=tf.float64)
    batch = max(1, _BATCH_PIXELS // (n * n))
    for start in range(first_seed, first_seed + num_examples, batch):
      seeds = range(start, min(start + batch, first_seed + num_examples))
      kappa = field.maps_from_seeds(seeds)
      for seed, k in zip(seeds, kappa):
        yield seed, {
            'kappa': k,
            'pixel_scale_arcmin': cfg.pixel_scale_arcmin,
            'shift': cfg.shift or 0.0,
            'seed': seed,
        }

  def _generate_cosmo_examples(self, first_seed, num_examples):
    """Maps of the ``cosmo_<N>`` configs, one field per map's (Ωm, σ8)."""
    cfg = self.builder_config
    for seed in range(first_seed, first_seed + num_examples):
      maps = lognormal.cosmo_maps([seed], cfg.map_size, cfg.pixel_scale_arcmin)
      yield seed, {
          'kappa': maps['kappa'][0],
          'pixel_scale_arcmin': cfg.pixel_scale_arcmin,
          'shift': maps['shift'][0],
          'seed': seed,
          'omega_m': maps['omega_m'][0],
          'sigma8': maps['sigma8'][0],
      }
