"""stadv_ref backend 'numba' (work in progress: see the open issue)."""
raise ImportError("the numba backend is not implemented yet")
