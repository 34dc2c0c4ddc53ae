# Cython declarations for request_reader.py (an augmenting .pxd; see graph_router/httpserver.pxd).

cimport cython

from .rules cimport FieldLine, FieldName, HeadMeter

cdef bytes _PATH

cdef class Request:
    cdef public str method
    cdef public str path
    cdef public str query
    cdef public list headers
    cdef public bytes body
    cdef public object connection
    cdef public bint keep_alive
    cdef public bint http10
    cdef public bint head_only
    cdef public Py_ssize_t held

cdef class Rejection:
    cdef public int status
    cdef public str error
    cdef public str cause
    cdef public object headers
    cdef public bint head_only

cdef class BufferBudget:
    cdef public Py_ssize_t cap
    cdef public Py_ssize_t used


cdef class ReaderLimits:
    cdef public Py_ssize_t max_body_bytes
    cdef public Py_ssize_t max_header_bytes

cdef class RequestReader:
    cdef public ReaderLimits limits
    cdef public BufferBudget budget
    cdef public object events
    cdef public bint continue_wanted
    cdef public bint stopped
    cdef public object _parser
    cdef public HeadMeter _meter
    cdef public FieldLine _line
    cdef public bint _began
    cdef public bint in_message
    cdef public bint _head_done
    cdef public bytes _url
    cdef public list _headers
    cdef public Py_ssize_t _head_bytes
    cdef public object _body
    cdef public Py_ssize_t _held
    cdef public int _hosts
    cdef public bint _bad_host
    cdef public bint _bad_coding
    cdef public bint _upgrade
    cdef public bint _connection
    cdef public bytes _good_host
    cdef public bytes _method
    cdef public bint _http10
    cdef public Py_ssize_t _declared
    cdef public bint _expect_continue

    cpdef feed(self, bytes data)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, p=cython.p_uchar, path_start=Py_ssize_t,
                   path_end=Py_ssize_t, head_bytes=Py_ssize_t, host_start=Py_ssize_t, host_end=Py_ssize_t,
                   length=Py_ssize_t, declared=bint, keep_alive=bint, start=Py_ssize_t,
                   size=Py_ssize_t, line=FieldLine,
                   limits=ReaderLimits, budget=BufferBudget, request=Request, good=bytes)
    cdef bint _whole(self, bytes data)
    cpdef _reset(self)
    cpdef _head_over(self)
    cpdef _drop_body(self)
