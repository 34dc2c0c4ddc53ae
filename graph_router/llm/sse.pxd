# Cython declarations for sse.py (an augmenting .pxd; see ../httpserver.pxd): the module is
# compiled for its per-event functions, and UsageStream is an extension type (of
# upstream.StepStream): one is made and read for every streamed OpenAI answer before its
# first byte goes on, and a Python class's slot attributes cost a descriptor call each.
from ..upstream cimport StepStream

cdef class UsageStream(StepStream):
    cdef public object _inner
    cdef public object _tally
    cdef public bint _strip
    cdef public bint _sse
    cdef public bytes _tail
    cdef public bytes _sep
    cdef public object _plain
    cdef public Py_ssize_t _size
    cdef public bint _scan
    cdef public bint _ended
    cdef public list _later

    cpdef bytes _keep(self, bytes chunk)
    cpdef bytes _events(self, bytes chunk)
    cpdef _tally_later(self)
    cpdef Py_ssize_t _tally_events(self, events, double stamp)
    cpdef _end(self)
