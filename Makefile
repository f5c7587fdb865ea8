# Convenience targets. The README's two commands are the supported entry points.
.PHONY: install test demo bazel-check bazel-test

install:
	bash scripts/install.sh

test:
	bash scripts/test.sh

demo:
	bash scripts/run_demo.sh

# Bazel 4 is Debian's bazel-bootstrap:
#   apt-get install bazel-bootstrap bazel-platforms
# It runs Python with the interpreter of ./.venv (an absolute path: Bazel 4
# does not expand %workspace% in .bazelrc flags).
BAZEL_FLAGS = --python_path=$(CURDIR)/tools/venv_python

# Seconds: BUILD loads and builds, and its deps match the imports of every
# module and test (tools/check_layering.py).
bazel-check:
	bazel build //... $(BAZEL_FLAGS)
	python3 tools/check_layering.py

# Runs every py_test target of BUILD (one per pytest file, slow tests excluded
# as in pytest.ini).
bazel-test: install bazel-check
	bazel test //... $(BAZEL_FLAGS) \
	  --test_env=TFP_MASSMAP_SHARED_DATA=$(abspath $(CURDIR)/../shared/data)
