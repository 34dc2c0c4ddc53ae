# Cython declarations for conditions.py (an augmenting .pxd; see httpserver.pxd).

cdef class _Exists:
    cdef readonly tuple keys

cdef class _IsList:
    cdef readonly tuple keys

cdef class _FirstMatch:
    cdef readonly tuple keys
    cdef readonly tuple sub
    cdef readonly _Comparison compare

cdef class _Comparison:
    cdef readonly int op
    cdef readonly str text
    cdef readonly double number
    cdef readonly bint equal
    cdef readonly bint ordered

    cpdef bint matches(self, value) except -1
