"""The categorical learning core: lenses over the reals (torch) and over Z2 (bit-packed words).

Imports nothing else from progsynth except ``progsynth.errors``.
"""
