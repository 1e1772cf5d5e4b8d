"""stadv_ref backend 'cupy' (work in progress: see the open issue)."""
raise ImportError("the cupy backend is not implemented yet")
