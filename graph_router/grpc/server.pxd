# Cython declarations for server.py (an augmenting .pxd; see graph_router/httpserver.pxd).
from ..http2.connection cimport Connection

cdef class Call:
    cdef public bytes request
    cdef public list metadata
    cdef public object deadline
    cdef public object loop

cdef class ServerConnection:
    cdef public object _server
    cdef public object _loop
    cdef public Connection h2
    cdef public object transport
    cdef public set _tasks
    cdef public bint _write_soon
    cdef public object _last_headers
    cdef public object _last_parsed
