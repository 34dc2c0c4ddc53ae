# Cython declarations for metrics.py (an augmenting .pxd; see ../httpserver.pxd): the
# series a request updates are extension types, so the recorder adds to them in C.

cimport cython


cdef class Histogram:
    cdef public tuple bounds
    cdef public list counts
    cdef public double sum

    @cython.locals(i=Py_ssize_t, n=Py_ssize_t, bound=double)
    cpdef add(self, double value)

cdef class GraphSeries:
    cdef public str name
    cdef public dict by_code
    cdef public Histogram overhead
    cdef public Py_ssize_t in_flight

cdef class PlanSeries:
    cdef public GraphSeries graph
    cdef public dict steps
