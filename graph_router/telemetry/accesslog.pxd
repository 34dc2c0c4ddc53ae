# Cython declarations for accesslog.py (an augmenting .pxd; see ../httpserver.pxd).
cimport cython

cdef class LineWriter:
    cdef public object handler
    cdef public str terminator
    cdef public list _lines
    cdef public Py_ssize_t _size
    cdef public object _loop
    cdef public object _flush_soon_cb

    cpdef write(self, str line)
    cpdef flush(self)

cdef class AccessLog:
    cdef public object logger
    cdef public LineWriter writer
    cdef public bint json
    cdef public object formatter
    cdef public bint info
    cdef public bint warning
    cdef public Py_ssize_t _second
    cdef public str _stamp
    cdef public object _graph
    cdef public str _graph_value
    cdef public str _info_head
    cdef public str _warning_head

    cpdef bint enabled(self, bint warning)
    cpdef request(self, bint warning, str graph, object status, double total, double own,
                  object request_id, object trace_id, object cause, object endpoint=*)
    @cython.locals(second=Py_ssize_t)
    cpdef str line(self, bint warning, str graph, object status, double total, double own,
                   object request_id, object trace_id, object cause, double now, object endpoint=*)

cdef list _MILLIS

cdef str _millis(double seconds)
cdef str _json(object value)
