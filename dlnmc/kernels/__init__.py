"""Private Numba kernels. Nothing here validates input, allocates tables or draws seeds:
the public wrappers (``dlnmc.simulate``, ``dlnmc.flow``) do that and call in here.

GD kernels form a registry: :data:`KERNELS` lists them in order of preference and
:func:`choose` picks the first whose ``fits(task)`` holds (the contract a kernel module meets
is in :mod:`dlnmc.kernels.task`).  Adding a kernel is one module and one entry here.
"""
from dlnmc.kernels import block, blas, gd

KERNELS = (block, blas, gd)
"""GD kernel modules, preferred first: the block kernel (tiny d, lanes of trajectories), the
BLAS kernel (large d, one BLAS call per product) and the generic kernel (any shapes)."""


def choose(task):
    """The first kernel module of :data:`KERNELS` that fits ``task``."""
    for kernel in KERNELS:
        if kernel.fits(task):
            return kernel
    raise ValueError(f"no GD kernel runs {task.optimizer!r} on layer dimensions {task.dims}")

