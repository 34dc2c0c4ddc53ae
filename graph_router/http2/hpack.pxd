# Cython declarations for hpack.py (an augmenting .pxd; see graph_router/httpserver.pxd).

cdef class Decoder:
    cdef public Py_ssize_t max_allowed
    cdef public Py_ssize_t max_size
    cdef public Py_ssize_t size
    cdef public Py_ssize_t max_string
    cdef public list table
    cdef public dict _cache
