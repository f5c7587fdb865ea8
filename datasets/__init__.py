"""TFDS builders of tfp_massmap, installed as ``tfp_massmap.datasets``.

Importing this package registers the builders with ``tensorflow_datasets``
so that ``tfds.load('massivenus')`` resolves.
"""
