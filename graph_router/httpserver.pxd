# Cython declarations for httpserver.py (an "augmenting" .pxd): when the module is
# compiled, these classes become extension types with C-level attributes. The .py
# file stays the source; without a compiler it runs as plain Python.

from .http1.request_reader cimport BufferBudget, Request, RequestReader

cdef class _DateHeader:
    cdef long _second
    cdef bytes _value
    cpdef bytes get(self)

cdef _DateHeader _DATE
cdef dict _CONTENT_TYPE_LINES
cdef dict _STATUS_LINES

cdef class ServerConnection:
    cdef public HTTPServer _server
    cdef public object _loop
    cdef public RequestReader _reader
    cdef public object transport
    cdef public object _queue
    cdef public object _task
    cdef public object _more
    cdef public bint _handling
    cdef public bint _reading
    cdef public bint _read_paused
    cdef public bint _lingering
    cdef public double deadline
    cdef public double handler_deadline
    cdef public bint _closing
    cdef public bint _closed
    cdef public object _writable
    cdef public bint _head_sent
    cdef public bint _head_last

    cpdef _arm(self, double seconds)
    cpdef _disarm(self)
    cpdef _close(self)
    cpdef _take_events(self, bint now=*)
    cpdef _send_continue(self)
    cpdef bint _between_requests(self)
    cpdef _write(self, Response answer, Request request, bint last)
    cpdef bint _last(self, Request request)
    cpdef _write_rejection(self, rejection)

cdef class HTTPServer:
    cdef public object handler
    cdef public object limits
    cdef public object loop
    cdef public set connections
    cdef public bint draining
    cdef public list _listeners
    cdef public set _adopting
    cdef public object _sweeper
    cdef public BufferBudget budget
    cdef public object tls

cdef class StreamingResponse:
    cdef public object after_head
    cdef public object status
    cdef public object chunks
    cdef public object content_type
    cdef public object headers
    cdef public object first

cdef class Response:
    cdef public object status
    cdef public bytes body
    cdef public object content_type
    cdef public object headers
