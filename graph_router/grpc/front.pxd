# Compiled (see setup.py): every gRPC front call runs this module's code.
from ..server cimport Router
from .server cimport Call

cdef class GRPCFront:
    cdef public Router _router
    cdef public object _server
    cdef public object _lean
    cdef public tuple _raw_for
    cdef public dict _methods
    cdef public dict _streams

    # The synchronous part of every ModelInfer call: C methods, the router's fields read in C.
    cpdef object _plan_for(self, Call call)
    cpdef tuple _request(self, object plan, Call call)
