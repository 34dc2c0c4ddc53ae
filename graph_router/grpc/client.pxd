# Cython declarations for client.py (an augmenting .pxd; see graph_router/httpserver.pxd).
cimport cython
from ..http2.connection cimport Connection, Stream

cdef class ClientConnection:
    cdef public Connection h2
    cdef public object transport
    cdef public bint lost
    cdef public object _loop
    cdef public bint _flush_soon

    # Per call: C calls from Channel.unary, on typed streams.
    cpdef flush(self)
    cpdef _flush(self)
    @cython.locals(conn=Connection, stream=Stream, events=list)
    cpdef data_received(self, object data)
    cpdef bint usable(self)
    @cython.locals(conn=Connection, stream=Stream)
    cpdef Stream start(self, bytes block, list parts, object size, object future)
    @cython.locals(conn=Connection)
    cpdef cancel(self, Stream stream)

cdef class Channel:
    cdef public str host
    cdef public object port
    cdef public Py_ssize_t max_message
    cdef public double connect_timeout
    cdef public object loop
    cdef public ClientConnection _conn
    cdef public object _connecting
    cdef public dict _heads
    cdef public str _authority

    cpdef bytes _head(self, str path)

cpdef bytes _result(Stream stream)
@cython.locals(size=Py_ssize_t)
cpdef write_out(object transport, list out)
