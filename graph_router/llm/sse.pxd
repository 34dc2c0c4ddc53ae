# Cython declarations for sse.py (an augmenting .pxd; see ../httpserver.pxd): the module is
# compiled for its per-event functions; UsageStream stays a Python class (it extends StepStream).
