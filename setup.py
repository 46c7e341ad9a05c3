"""Build glue: the C core is compiled by cffi from csrc/ (see csrc/build_native.py)."""

from setuptools import setup

setup(cffi_modules=["csrc/build_native.py:ffibuilder"])
