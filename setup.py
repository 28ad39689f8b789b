"""The compiled part of wsproto-core; everything else is in pyproject.toml.

``wsproto_core._speedups`` (masking, RFC 6455 §5.3) is optional: without a C
compiler or the Python headers the build warns and the install goes on, pure
Python, and ``wsproto_core.mask`` uses its pure functions. It uses only the
limited C API of 3.11, so where the interpreter allows (not on free-threaded
builds, which have no stable ABI yet) one ``abi3`` wheel serves every later
CPython.
"""

import platform
import sysconfig

from setuptools import Extension, setup

LIMITED_API = platform.python_implementation() == "CPython" and not sysconfig.get_config_var(
    "Py_GIL_DISABLED"
)

setup(
    ext_modules=[
        Extension(
            "wsproto_core._speedups",
            sources=["src/wsproto_core/_speedups.c"],
            optional=True,
            py_limited_api=LIMITED_API,
            define_macros=[("Py_LIMITED_API", "0x030B0000")] if LIMITED_API else [],
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if LIMITED_API else {},
)
