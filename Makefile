# Convenience targets. The README's two commands are the supported entry points.
.PHONY: install test demo bazel-test

install:
	bash scripts/install.sh

test:
	bash scripts/test.sh

demo:
	bash scripts/run_demo.sh

# Runs the BUILD file's py_test targets with Debian's bazel-bootstrap (Bazel 4):
#   apt-get install bazel-bootstrap bazel-platforms
bazel-test: install
	bazel test //... --python_path=$(CURDIR)/tools/venv_python \
	  --test_env=TFP_MASSMAP_SHARED_DATA=$(abspath $(CURDIR)/../shared/data)
