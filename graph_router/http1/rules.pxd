# Cython declarations for rules.py (an augmenting .pxd; see graph_router/httpserver.pxd).
cimport cython

cdef class FieldName:
    @staticmethod
    @cython.locals(k=Py_ssize_t)
    cdef bint equals(const unsigned char* p, Py_ssize_t start, const unsigned char* lowercase, Py_ssize_t size)


cdef class HeadMeter:
    cdef public Py_ssize_t limit
    cdef public Py_ssize_t seen

    cpdef reset(self)
