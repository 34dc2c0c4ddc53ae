# Cython declarations for httpserver.py (an "augmenting" .pxd): when the module is
# compiled, these classes become extension types with C-level attributes. The .py
# file stays the source; without a compiler it runs as plain Python.

cdef class _DateHeader:
    cdef long _second
    cdef bytes _value
    cpdef bytes get(self)

cdef _DateHeader _DATE

cdef class ServerConnection:
    cdef public HTTPServer _server
    cdef public object _loop
    cdef public object _parser
    cdef public object transport
    cdef public object _queue
    cdef public object _task
    cdef public object _more
    cdef public bint _handling
    cdef public double deadline
    cdef public double handler_deadline
    cdef public bint _closing
    cdef public bint _closed
    cdef public object _writable
    cdef public bint _in_message
    cdef public bytes _url
    cdef public list _headers
    cdef public Py_ssize_t _header_bytes
    cdef public list _body
    cdef public Py_ssize_t _body_size
    cdef public bint _rejected
    cdef public Py_ssize_t _declared_length
    cdef public bint _expect_continue

    cpdef _arm(self, double seconds)
    cpdef _disarm(self)
    cpdef _reset_message(self)
    cpdef _close(self)
    cpdef _between_requests(self)
    cpdef _write(self, Response answer, bint head_only, bint last)

cdef class HTTPServer:
    cdef public object handler
    cdef public object limits
    cdef public object loop
    cdef public set connections
    cdef public bint draining
    cdef public object _server
    cdef public object _sweeper

cdef class Request:
    cdef public str method
    cdef public str path
    cdef public str query
    cdef public list headers
    cdef public bytes body
    cdef public ServerConnection connection

cdef class Response:
    cdef public object status
    cdef public bytes body
    cdef public object content_type
    cdef public object headers
