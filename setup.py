"""Build hook for the two compiled parts of progsynth, both optional kernels.

- ``progsynth.core._packed``: the bit-packed gate kernel. Without it ``progsynth.core.boolean``
  evaluates circuits with numpy (same results, slower; ``PACKED_BACKEND`` says which is in use).
- ``progsynth.models._rowsum``: weighted sums of table rows and their reverse derivative, the
  transformer's per-example work before the MLP. Without it ``progsynth.models.rowsum`` uses
  ``torch.nn.functional.embedding_bag`` (same results, slower; ``ROWSUM_BACKEND`` says which). Its
  dot products may be summed in any order (``-fassociative-math``), so they vectorise.

Everything else is declared in pyproject.toml. Both extensions are ``optional``: where no C
compiler is found, installation goes on without them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "progsynth.core._packed",
            sources=["src/progsynth/core/_packed.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "progsynth.models._rowsum",
            sources=["src/progsynth/models/_rowsum.c"],
            extra_compile_args=["-O3", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
                                "-fno-trapping-math"],
            optional=True,
        ),
    ]
)
