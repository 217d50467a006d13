"""Private Numba kernels. Nothing here validates input, allocates tables or draws seeds:
the public wrappers (``dlnmc.simulate``, ``dlnmc.flow``) do that and call in here."""
