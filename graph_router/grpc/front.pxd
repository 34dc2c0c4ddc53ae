# Compiled (see setup.py): every gRPC front call runs this module's code.
from ..server cimport Router
from .server cimport Call
from ..upstream cimport StepResponse

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

cdef object _set_raw_request
cdef object _reset_raw_request
cpdef bint _unbounded(object plan, Call call)
cpdef object _whole(StepResponse result)
cpdef bytes _reply(StepResponse result, bytes answer)
