"""progsynth.compare: many runs at once: similarity of representations (``similarity``: linear CKA,
mutual k-nearest-neighbour alignment, linear stitching, and their pairwise matrices over a list of
runs) and convergence across runs (``convergence``: do different seeds, architectures and
optimizers learn the same program), on representations read at fixed sites (``representations``).
"""
