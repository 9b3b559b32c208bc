"""progsynth.geometry: the parameter-function map w ↦ f_w and the loss that factors through it.

- ``factorisation``: the function-space gradient ∇ℓ at f_w and the identity ∇_w L = J_fᵀ ∇ℓ,
  computed through the lens decomposition (the model's put of the loss's put).
- ``ntk``: the empirical neural tangent kernel Θ = J Jᵀ on a subset of inputs (matrix-free
  Lanczos on jvp/vjp), its spectrum and effective rank, and the Fourier content of its top
  eigenfunctions; ``run_ntk`` measures it at a run's checkpoints.
- ``align``: permutation alignment of hidden units between two networks (weight matching, as in
  Git Re-Basin).
- ``paths``: straight paths between two checkpoints, in parameter space and in function space,
  with losses, barriers, mechanism measures and the switch interval.
- ``contrast``: two checkpoints that agree on the training set, compared as programs.
"""
