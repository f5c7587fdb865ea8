"""The procedural COSMOS-like footprint has the COSMOS area, density and noise."""

import numpy as np
import pytest

from tfp_massmap import survey


def test_area_density_and_noise_law():
  out = survey.cosmos_like_survey(npix=128, pixel_scale_arcmin=0.8, seed=3)
  pix_area = 0.8**2
  area_deg2 = out['mask'].sum() * pix_area / 3600.0
  # 1.64 deg² minus the star holes (a few per cent).
  assert 1.45 < area_deg2 <= 1.66
  inside = out['mask'] > 0
  density = out['counts'][inside].mean() / pix_area
  assert abs(density - 64.0) < 1.0
  np.testing.assert_allclose(out['noise_std'][inside, 0],
                             0.30 / np.sqrt(out['counts'][inside]), rtol=1e-6)
  assert np.all(out['noise_std'][~inside] == 0)
  assert out['noise_std'].shape == (128, 128, 2)


def test_same_seed_same_survey():
  a = survey.cosmos_like_survey(npix=64, pixel_scale_arcmin=1.6, seed=1)
  b = survey.cosmos_like_survey(npix=64, pixel_scale_arcmin=1.6, seed=1)
  np.testing.assert_array_equal(a['counts'], b['counts'])


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='does not fit'):
    survey.cosmos_like_survey(npix=32, pixel_scale_arcmin=0.8)
  with pytest.raises(ValueError, match='pixel_scale_arcmin'):
    survey.cosmos_like_survey(pixel_scale_arcmin=-1.0)
