# Cython declarations for server.py (an augmenting .pxd; see graph_router/httpserver.pxd).
cimport cython
from ..http2.connection cimport Connection, Stream

cdef class Call:
    cdef public bytes request
    cdef public list metadata
    cdef public object deadline
    cdef public object loop

cdef class _Worker:
    cdef public object task
    cdef public object wake
    cdef public object conn
    cdef public object stream
    cdef public object handler
    cdef public object call
    cdef public bint cancelled

cdef class ServerConnection:
    cdef public object _server
    cdef public object _loop
    cdef public Connection h2
    cdef public object transport
    cdef public dict _tasks
    cdef public bint _write_soon
    cdef public object _last_headers
    cdef public object _last_parsed

    # Per call: C calls, on typed streams.
    cpdef _call(self, Stream stream)
    cpdef _finished(self, Stream stream)
    cpdef _write(self)
    cpdef _write_now(self)
    cpdef _status(self, Stream stream, object code, object text)
    cpdef _unary_end(self, Stream stream, object answer, object exc)
