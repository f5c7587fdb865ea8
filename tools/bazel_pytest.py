"""Runs one pytest file as a Bazel py_test (Bazel 4 has no native pytest rule)."""

import os
import sys

import pytest

if __name__ == '__main__':
  # Bazel runs tests from the runfiles tree; point pytest at the workspace's
  # pytest.ini so markers and the default "not slow" selection apply.
  workspace = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.exit(pytest.main(['-q', '-c', os.path.join(workspace, 'pytest.ini'),
                        '--rootdir', workspace] + sys.argv[1:]))
