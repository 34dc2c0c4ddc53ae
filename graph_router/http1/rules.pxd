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

cdef class FieldLine:
    cdef public Py_ssize_t name_end
    cdef public Py_ssize_t value_start
    cdef public Py_ssize_t value_end

    @cython.locals(token=cython.p_uchar, start=Py_ssize_t, end=Py_ssize_t)
    cdef Py_ssize_t scan(self, const unsigned char* p, Py_ssize_t i, Py_ssize_t n)
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t, value=Py_ssize_t, k=Py_ssize_t)
    cdef Py_ssize_t number(self, const unsigned char* p)
