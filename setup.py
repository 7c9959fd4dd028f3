"""Build of the compiled geometry core (everything else is configured in pyproject.toml).

``guard.geometry._native`` is a C++ extension (pybind11; sources in guard/geometry/native/). It
is optional: where no C++ compiler is available the build warns and goes on, and
guard.geometry.native falls back to the numpy code paths at run time (with a logged warning).
Rebuild it in place after editing the C++ sources: ``python setup.py build_ext --inplace``
(``make setup`` does it when a source changed).
"""

from __future__ import annotations

import platform

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

# -O3 and explicit SIMD reductions only (`omp simd`, no OpenMP runtime): no -ffast-math, whose
# value-changing rewrites the rounding bounds of the certified scans do not cover.
flags = ["-O3", "-fopenmp-simd", "-fno-math-errno"]
if platform.system() == "Windows":
    flags = ["/O2"]

setup(
    ext_modules=[
        Pybind11Extension(
            "guard.geometry._native",
            ["guard/geometry/native/module.cpp"],
            depends=[
                "guard/geometry/native/kernels.hpp",
                "guard/geometry/native/wolfe.hpp",
                "guard/geometry/native/hull_core.hpp",
                "guard/geometry/native/union_core.hpp",
                "guard/geometry/native/hull_pair.hpp",
                "guard/geometry/native/margin_qp.hpp",
            ],
            cxx_std=17,
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
