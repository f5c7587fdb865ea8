"""TFDS builder test of lognormal_kappa: builds the tiny configs offline."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfp_massmap import cosmology
from tfp_massmap import lognormal

from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder


class LognormalKappaTest(tfds.testing.DatasetBuilderTestCase):
  """Generates and reads back the 32² configs (64/16/16 maps)."""
  DATASET_CLASS = lognormal_kappa_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ['lognormal_32', 'gaussian_32', 'cosmo_32']
  SPLITS = {'train': 64, 'validation': 16, 'test': 16}
  SKIP_CHECKSUMS = True  # Nothing is downloaded.


class LognormalKappaContentTest(tfds.testing.TestCase):
  """The stored maps are the documented deterministic function of the seed."""

  def test_examples_are_deterministic_and_paired(self):
    builder_cls = lognormal_kappa_dataset_builder.Builder
    examples = {}
    for name in ('lognormal_32', 'gaussian_32'):
      builder = builder_cls(config=name, data_dir=self.get_temp_dir())
      examples[name] = dict(builder._generate_examples(80, 3))  # pylint: disable=protected-access
    self.assertEqual(sorted(examples['lognormal_32']), [80, 81, 82])
    ln = examples['lognormal_32'][81]
    ga = examples['gaussian_32'][81]
    self.assertEqual(ln['shift'], cosmology.COSMOS_SHIFT)
    self.assertEqual(ga['shift'], 0.0)
    self.assertEqual(ln['kappa'].dtype, np.float32)
    self.assertGreater(ln['kappa'].min(), -ln['shift'])
    # Same white noise: the lognormal map is a monotone transform of a field
    # close to the Gaussian one, so the two are strongly correlated.
    self.assertGreater(np.corrcoef(ln['kappa'].ravel(), ga['kappa'].ravel())[0, 1], 0.9)
    again = builder_cls(config='lognormal_32', data_dir=self.get_temp_dir())
    np.testing.assert_array_equal(
        dict(again._generate_examples(81, 1))[81]['kappa'], ln['kappa'])  # pylint: disable=protected-access

  def test_cosmo_examples_carry_their_seeds_cosmology(self):
    builder = lognormal_kappa_dataset_builder.Builder(
        config='cosmo_32', data_dir=self.get_temp_dir())
    examples = dict(builder._generate_examples(80, 3))  # pylint: disable=protected-access
    self.assertEqual(sorted(examples), [80, 81, 82])
    for seed, example in examples.items():
      omega_m, sigma8 = cosmology.cosmo_kappa_parameters(seed)
      self.assertEqual((example['omega_m'], example['sigma8']), (omega_m, sigma8))
      self.assertEqual(example['shift'],
                       cosmology.lognormal_shift(omega_m, sigma8))
      self.assertGreater(example['kappa'].min(), -example['shift'])
    # Three different cosmologies, each map the documented function of its
    # seed: the field of (convergence_cl(θ), lognormal_shift(θ)) on the
    # white noise default_rng(seed).
    self.assertLen({e['omega_m'] for e in examples.values()}, 3)
    ex = examples[81]
    ell, cl = cosmology.convergence_cl(ex['omega_m'], ex['sigma8'])
    field = lognormal.LognormalField(ex['shift'], 32, 0.8, ell=ell, cl=cl,
                                     dtype=tf.float64)
    np.testing.assert_array_equal(ex['kappa'], field.maps_from_seeds([81])[0])
    # Same white noise as lognormal_32's map 81, another spectrum and shift.
    fiducial = dict(lognormal_kappa_dataset_builder.Builder(
        config='lognormal_32', data_dir=self.get_temp_dir())
                    ._generate_examples(81, 1))[81]  # pylint: disable=protected-access
    self.assertGreater(
        np.corrcoef(ex['kappa'].ravel(), fiducial['kappa'].ravel())[0, 1], 0.9)
    self.assertFalse(np.allclose(ex['kappa'], fiducial['kappa']))

  def test_cosmo_configs_come_from_the_cosmology_module(self):
    configs = lognormal_kappa_dataset_builder.Builder.builder_configs
    for setting in cosmology.COSMO_KAPPA_SETTINGS:
      config = configs[f'cosmo_{setting.map_size}']
      self.assertEqual((config.map_size, config.pixel_scale_arcmin,
                        tuple(config.split_sizes)), tuple(setting))
      self.assertTrue(config.vary_cosmology)
    self.assertFalse(configs['lognormal_32'].vary_cosmology)

  def test_cosmo_features_are_documented(self):
    builder = lognormal_kappa_dataset_builder.Builder(
        config='cosmo_64', data_dir=self.get_temp_dir())
    self.assertEqual(builder.builder_config.split_sizes,
                     cosmology.cosmo_kappa_setting(64).split_sizes)
    docs = {name: feature.doc.desc
            for name, feature in builder.info.features.items()}
    self.assertCountEqual(docs, ['kappa', 'pixel_scale_arcmin', 'shift', 'seed',
                                 'omega_m', 'sigma8'])
    self.assertIn('Ωm', docs['omega_m'])
    self.assertIn('cosmo_kappa_parameters', docs['sigma8'])
    self.assertEqual(builder.info.features['sigma8'].dtype, np.float32)

  def test_info_has_a_homepage_and_documented_features(self):
    builder = lognormal_kappa_dataset_builder.Builder(
        config='lognormal_32', data_dir=self.get_temp_dir())
    # Without one, TFDS shows a tensorflow.org catalogue page that does not
    # exist for this dataset.
    self.assertNotIn('tensorflow.org/datasets/catalog', builder.info.homepage)
    docs = {name: feature.doc.desc
            for name, feature in builder.info.features.items()}
    self.assertCountEqual(docs, ['kappa', 'pixel_scale_arcmin', 'shift', 'seed'])
    self.assertIn('dimensionless', docs['kappa'])
    self.assertIn('arcmin', docs['pixel_scale_arcmin'])
    self.assertIn('λ', docs['shift'])
    self.assertIn('default_rng', docs['seed'])

if __name__ == '__main__':
  tfds.testing.test_main()
