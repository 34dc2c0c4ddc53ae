# Cython declarations for server.py (an augmenting .pxd; see graph_router/httpserver.pxd).
cimport cython
from ..http2.connection cimport Connection, Stream

cdef class Call:
    cdef public bytes request
    cdef public list metadata
    cdef public object deadline
    cdef public object loop

cdef class LeanServer

cdef class ServerConnection:
    cdef public LeanServer _server
    cdef public object _loop
    cdef public Connection h2
    cdef public object transport
    cdef public dict _tasks
    cdef public bint _write_soon
    cdef public object _last_headers
    cdef public object _last_parsed

    # Per call: C calls, on typed streams.
    @cython.locals(server=LeanServer, worker=_Worker)
    cpdef _call(self, Stream stream)
    cpdef _finished(self, Stream stream)
    cpdef _write(self)
    cpdef _write_now(self)
    cpdef _status(self, Stream stream, object code, object text)
    cpdef _unary_end(self, Stream stream, object answer, object exc)

cdef class _Worker:
    cdef public object task
    cdef public object wake
    cdef public ServerConnection conn
    cdef public Stream stream
    cdef public object handler
    cdef public object call
    cdef public bint cancelled

    cpdef object start(self)
    cpdef end(self, object answer, object exc)
    cpdef bint ended_cancelled(self)
    @cython.locals(idle=list)
    cpdef object rest(self, LeanServer server)
    cpdef bint woken_cancelled(self, LeanServer server)

cdef class LeanServer:
    cdef public dict unary
    cdef public dict streaming
    cdef public object max_message
    cdef public object max_concurrent
    cdef public Py_ssize_t max_in_flight
    cdef public Py_ssize_t in_flight
    cdef public object loop
    cdef public set connections
    cdef public bint stopping
    cdef public list idle
    cdef public list _servers
