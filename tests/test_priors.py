"""load_prior: the shipped prior by name (it beats the linear denoiser), a
network of one's own by path, clear errors for anything else."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import lognormal
from tfp_massmap import priors
from tfp_massmap.score_network import ScoreNetwork
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb


def test_shipped_prior_beats_wiener_denoiser_on_held_out_maps():
  net = priors.load_prior()
  assert net.gaussian_pixel_scale_arcmin == 0.8 and net.depth == 3
  assert net.pixel_scale_arcmin == 0.8  # SHIPPED_PRIORS, checked by sampling
  config = lkb.Builder.builder_configs['lognormal_128']
  field = lognormal.LognormalField(config.shift, 128, 0.8, dtype=tf.float64)
  first_validation = config.split_sizes[0]
  maps = field.maps_from_seeds(range(first_validation, first_validation + 6))
  sigma = 0.02
  noisy = (maps + sigma * np.random.default_rng(0).standard_normal(maps.shape)).astype(np.float32)
  wiener = priors.GaussianPrior(tf.cast(field.power_grid, tf.float32))
  mse_learned = np.mean((net.denoise(noisy, sigma).numpy() - maps)**2)
  mse_wiener = np.mean((wiener.denoise(noisy, sigma).numpy() - maps)**2)
  # Measured on 32 maps: 0.79; a broken or missing network gives >= 1.
  assert mse_learned < 0.9 * mse_wiener


def test_unknown_prior_name_raises():
  with pytest.raises(ValueError, match="unknown prior 'massivenus_512'; "
                     r"expected one of \['lognormal_128'\] or the path of a "
                     r'\.keras file'):
    priors.load_prior('massivenus_512')
  with pytest.raises(ValueError, match='name_or_path must be the name of a '
                     'shipped prior.*got 3'):
    priors.load_prior(3)


def test_a_path_loads_that_network(tmp_path, monkeypatch):
  network = ScoreNetwork(depth=1, base_channels=4, embedding_dim=8, seed=0,
                         pixel_scale_arcmin=0.29)
  network.save(tmp_path / 'score_network.keras')
  x = tf.random.stateless_normal([2, 8, 8], seed=[3, 4]) * 0.02
  expected = network.denoise(x, 0.05)
  monkeypatch.chdir(tmp_path)
  for path in (tmp_path / 'score_network.keras',  # os.PathLike
               str(tmp_path / 'score_network.keras'),  # with a separator
               'score_network.keras'):  # the extension
    loaded = priors.load_prior(path)
    assert isinstance(loaded, ScoreNetwork)
    assert loaded.pixel_scale_arcmin == 0.29  # from the file
    np.testing.assert_array_equal(loaded.denoise(x, 0.05), expected)


def test_bad_paths_say_what_is_wrong(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match='runs/missing.keras does not '
                     'exist'):
    priors.load_prior('runs/missing.keras')
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'prior.fits').write_bytes(b'SIMPLE  =' + b' ' * 71)
  # An existing file: a path even without a separator or .keras.
  with pytest.raises(ValueError, match='prior.fits is not a Keras archive.*'
                     'a FITS file'):
    priors.load_prior('prior.fits')
