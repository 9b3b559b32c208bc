"""Build hook for the one compiled part of progsynth, the optional bit-packed gate kernel.

Everything else is declared in pyproject.toml. The extension is ``optional``: where no C compiler
is found, installation goes on without it and ``progsynth.core.boolean`` evaluates circuits with
numpy instead (same results, slower; ``PACKED_BACKEND`` says which is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "progsynth.core._packed",
            sources=["src/progsynth/core/_packed.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
