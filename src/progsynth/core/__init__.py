"""The categorical learning core: lenses over the reals (torch) and over Z2 (bit-packed words).

Imports nothing else from progsynth except ``progsynth.errors``.
"""

from progsynth.core.allocator import keep_freed_memory

keep_freed_memory()
