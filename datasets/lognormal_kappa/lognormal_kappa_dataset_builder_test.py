"""TFDS builder test of lognormal_kappa: builds the tiny configs offline."""

import numpy as np
import tensorflow_datasets as tfds

from tfp_massmap import cosmology

from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder


class LognormalKappaTest(tfds.testing.DatasetBuilderTestCase):
  """Generates and reads back the 32² configs (64/16/16 maps)."""
  DATASET_CLASS = lognormal_kappa_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ['lognormal_32', 'gaussian_32']
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
