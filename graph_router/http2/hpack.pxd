# Cython declarations for hpack.py (an augmenting .pxd; see graph_router/httpserver.pxd).

cdef class Decoder:
    cdef public Py_ssize_t max_allowed
    cdef public Py_ssize_t max_size
    cdef public Py_ssize_t size
    cdef public Py_ssize_t max_string
    cdef public list table
    cdef public dict _cache

    # Called for every header block a connection receives: a C call, not a Python method call.
    cpdef list decode(self, bytes block)
