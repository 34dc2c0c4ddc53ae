# Cython declarations for rules.py (an augmenting .pxd; see graph_router/httpserver.pxd).


cdef class HeadMeter:
    cdef public Py_ssize_t limit
    cdef public Py_ssize_t seen

    cpdef reset(self)
