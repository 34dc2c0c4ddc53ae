# Cython declarations for breaker.py (an augmenting .pxd; see httpserver.pxd).
cdef class CircuitBreakers:
    cdef public object threshold
    cdef public double cooldown
    cdef public object _clock
    cdef public dict _states

    cpdef bint allow(self, key)
    cpdef record(self, key, bint ok)
