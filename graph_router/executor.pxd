# Cython declarations for executor.py (an augmenting .pxd; see httpserver.pxd).
from .telemetry.recorder cimport RequestProbe
from .upstream cimport UpstreamClient

cdef class Executor:
    cdef public UpstreamClient _client
    cdef public object _rng
    cdef public dict _kinds

    cpdef object _call(self, step, str url, bytes body, headers, RequestContext ctx, bint tail)

cdef class RequestContext:
    cdef public object headers
    cdef public object step_timeout
    cdef public object explain
    cdef public bytes request_body
    cdef public RequestProbe probe
    cdef public object deadline
    cdef public object early

    cpdef object early_for(self, policy, bint tail)

cdef class _Members:
    cdef public list tasks
    cdef public object finished
    cdef public list failures
    cdef public Py_ssize_t pending
