"""The shipped prior loads with no arguments and beats the linear denoiser."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import gaussian_prior
from tfp_massmap import lognormal
from tfp_massmap import priors
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
  wiener = gaussian_prior.GaussianPrior(tf.cast(field.power_grid, tf.float32))
  mse_learned = np.mean((net.denoise(noisy, sigma).numpy() - maps)**2)
  mse_wiener = np.mean((wiener.denoise(noisy, sigma).numpy() - maps)**2)
  # Measured on 32 maps: 0.79; a broken or missing network gives >= 1.
  assert mse_learned < 0.9 * mse_wiener


def test_unknown_prior_name_raises():
  with pytest.raises(ValueError, match='unknown prior'):
    priors.load_prior('massivenus_512')
