# Cython declarations for server.py (an augmenting .pxd; see httpserver.pxd).
from .executor cimport Executor
from .http1.request_reader cimport Request
from .telemetry.recorder cimport RequestProbe
from .upstream cimport StepResponse

cdef class Router:
    cdef public object settings
    cdef public object telemetry
    cdef public object _plan
    cdef public object _series
    cdef public object _client
    cdef public Executor _executor
    cdef public object _propagator
    cdef public bint shutting_down
    cdef public Py_ssize_t _in_flight
    cdef public object http_server
    cdef public object auth

cdef class _EarlyHead:
    cdef public RequestProbe _probe
    cdef public Request _request
