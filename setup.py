"""Installs tfp_massmap and its TFDS builders (``datasets/`` → ``tfp_massmap.datasets``)."""

import setuptools

# The verified stack (DEVELOPERS.md): these pins install and work together on
# Python 3.11.
INSTALL_REQUIRES = [
    'tensorflow==2.21.0',
    'tf-keras==2.21.0',  # tensorflow-probability will not import without it
    'tensorflow-probability==0.25.0',
    'tensorflow-datasets==4.9.10',
    'importlib_resources',  # used by tensorflow-datasets, undeclared there
    'astropy==8.0.2',
    'absl-py==2.5.1',
    'numpy==2.4.6',
    'scipy',
    'matplotlib',
    'h5py',
    'tqdm',
    'healpy==1.20.1',  # survey maps: HEALPix products, curved-sky Kaiser-Squires
    'dask[distributed]==2026.8.0',  # survey maps: tiles as tasks
    # survey maps in HealSparse files (pure Python; its one dependency,
    # hpgeom, is a 0.6 MB wheel; both install in under a second).
    'healsparse==1.15.0',
]

# HATS catalogues as survey input (survey_job.read_survey_catalog): lsdb and
# hats bring pandas, numba and ~30 packages (~340 MB), so they are optional.
HATS_REQUIRE = ['lsdb==0.11.1', 'hats==0.11.1']

EXTRAS_REQUIRE = {
    # dill: tfds.testing; ruff: lint; lenspack: agreement tests (pure Python);
    # the HATS packages, so that the HATS reading test runs (their install
    # adds about 20 s).
    'tests': ['pytest', 'dill', 'ruff==0.17.6', 'lenspack==1.0.0'] +
             HATS_REQUIRE,
    'hats': HATS_REQUIRE,
    'gpu': ['tensorflow[and-cuda]==2.21.0'],
}

setuptools.setup(
    name='tfp_massmap',
    version='0.1.0',
    description=('Probabilistic weak-lensing mass mapping with TensorFlow '
                 'Probability: shear likelihood, classical baselines and '
                 'annealed score-based posterior sampling.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=(
        setuptools.find_packages(include=['tfp_massmap', 'tfp_massmap.*']) +
        ['tfp_massmap.datasets.' + p for p in setuptools.find_packages('datasets')] +
        ['tfp_massmap.datasets']),
    package_dir={'tfp_massmap.datasets': 'datasets'},
    # Data files are declared here, per package, and nowhere else: with
    # include_package_data, setuptools would also read them from its file
    # manifest and warn that data folders with importable names
    # (dummy_data/...) are not listed as packages. They are data, not code.
    package_data={
        'tfp_massmap': ['data/*'],
        'tfp_massmap.datasets': ['*/*.tsv', '*/*.txt', '*/*.bib', '*/*.md',
                                 '*/dummy_data/**/*'],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license='MIT',
)
