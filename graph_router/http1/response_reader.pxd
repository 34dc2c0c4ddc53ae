# Cython declarations for response_reader.py (an augmenting .pxd; see graph_router/httpserver.pxd).
cimport cython

from .rules cimport FieldLine, FieldName, HeadMeter

@cython.locals(i=Py_ssize_t)
cpdef Py_ssize_t _crlf_run(bytes data)

cdef class ResponseReader:
    cdef public object _parser
    cdef public HeadMeter _meter
    cdef public FieldLine _line
    cdef public Py_ssize_t max_body
    cdef public int state
    cdef public bint streaming
    cdef public bint got_bytes
    cdef public bint keep_alive
    cdef public str error
    cdef public int error_kind
    cdef public list chunks
    cdef public int status
    cdef public object content_type
    cdef public object content_encoding
    cdef public int framing
    cdef public Py_ssize_t size
    cdef public Py_ssize_t _head_size
    cdef public Py_ssize_t _run
    cdef public Py_ssize_t _body_run
    cdef public bint _own
    cdef public bint _resuming
    cdef public bint _keep

    cpdef _reset_head(self)
    cpdef expect(self)
    @cython.locals(at=Py_ssize_t, n=Py_ssize_t)
    cpdef int feed(self, bytes data)
    cpdef int eof(self)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, p=cython.p_uchar, d0=int, d1=int, d2=int, status=int,
                   length=Py_ssize_t, keep_alive=bint, start=Py_ssize_t,
                   size=Py_ssize_t, line=FieldLine, chunked=bint)
    cdef Py_ssize_t _whole(self, bytes data)
    @cython.locals(n=Py_ssize_t, p=cython.p_uchar, j=Py_ssize_t, size=Py_ssize_t, c=cython.uchar, end=Py_ssize_t)
    cdef Py_ssize_t _chunks(self, bytes data, Py_ssize_t i)
    @cython.locals(n=Py_ssize_t, last=cython.uchar, run=Py_ssize_t)
    cdef void _note_run(self, bytes data)
    cdef bytes _resume(self, bytes data, Py_ssize_t at)
    cpdef Py_ssize_t _end_run(self)
    cpdef bytes body(self)
    cpdef str _head_error(self)
