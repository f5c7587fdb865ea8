"""Offline stand-in for @rules_cc//cc:defs.bzl: forwards to Bazel 4's native rules.

Debian's bazel-bootstrap (Bazel 4.2) loads @rules_cc from its own tools even
for pure-Python targets and would otherwise download it.
"""

cc_binary = native.cc_binary
cc_library = native.cc_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
objc_library = native.objc_library
