# Cython declarations for recorder.py (an augmenting .pxd; see ../httpserver.pxd).
cimport cython

from .accesslog cimport AccessLog
from .metrics cimport GraphSeries, Histogram

cdef class Telemetry:
    cdef public object metrics
    cdef public object tracer
    cdef public bint explain
    cdef public bint log_requests
    cdef public AccessLog access
    cdef public object _exchange
    cdef public object begin

cdef class RequestProbe:
    cdef public double started
    cdef public Telemetry telemetry
    cdef public dict steps
    cdef public GraphSeries series
    cdef public object explain
    cdef public object request_id
    cdef public object traceparent
    cdef public object tracestate
    cdef public object span
    cdef public object token
    cdef public bint extras
    cdef public object tracer
    cdef public bint unsampled
    cdef public object _process_tracer
    cdef public double waited
    cdef public Py_ssize_t outstanding
    cdef public double wait_from
    cdef public object llm
    cdef public object endpoint
    cdef public object _status
    cdef public double _total
    cdef public double _own
    cdef public object _cause
    cdef public bint _log_after_head

    cpdef _header(self, Telemetry telemetry, str name, str value)
    cpdef double call_started(self)

@cython.locals(t=long, o=long)
cpdef str _server_timing(double total, double own)
