"""Runs one pytest file as a Bazel py_test (Bazel 4 has no native pytest rule)."""

import importlib.abc
import importlib.util
import os
import sys

import pytest


class _DatasetsFinder(importlib.abc.MetaPathFinder):
  """Imports `tfp_massmap.datasets` from the runfiles' top-level datasets/.

  setup.py maps that folder to `tfp_massmap.datasets` at install time; here
  the runfiles copy is used, so a test sees only the builder files the BUILD
  declares.
  """

  def __init__(self, datasets_dir):
    self._datasets_dir = datasets_dir

  def find_spec(self, fullname, path=None, target=None):
    del path, target  # Unused.
    if fullname != 'tfp_massmap.datasets':
      return None
    return importlib.util.spec_from_file_location(
        fullname, os.path.join(self._datasets_dir, '__init__.py'),
        submodule_search_locations=[self._datasets_dir])


class _CountDeselected:
  """Pytest plugin: counts the tests that the -m selection leaves out."""

  def __init__(self):
    self.count = 0

  def pytest_deselected(self, items):
    self.count += len(items)


if __name__ == '__main__':
  # Bazel runs tests from the runfiles tree; point pytest at the workspace's
  # pytest.ini so markers and the default "not slow" selection apply.
  workspace = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # Import tfp_massmap only from the runfiles, which hold the modules the
  # test's deps name: drop the finder of the editable install (`pip install
  # -e .`), which would fall back to every module of the checkout.
  sys.meta_path[:] = [
      finder for finder in sys.meta_path
      if not getattr(finder, '__module__', '').startswith(
          '__editable___tfp_massmap')
  ]
  sys.meta_path.insert(0, _DatasetsFinder(os.path.join(workspace, 'datasets')))
  deselected = _CountDeselected()
  exit_code = pytest.main(
      ['-q', '-c', os.path.join(workspace, 'pytest.ini'), '--rootdir',
       workspace] + sys.argv[1:], plugins=[deselected])
  # A file whose tests are all slow (pytest.ini deselects them) passes.
  if exit_code == pytest.ExitCode.NO_TESTS_COLLECTED and deselected.count:
    exit_code = pytest.ExitCode.OK
  sys.exit(exit_code)
