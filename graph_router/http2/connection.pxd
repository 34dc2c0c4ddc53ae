# Cython declarations for connection.py (an augmenting .pxd; see graph_router/httpserver.pxd).
cimport cython
from .hpack cimport Decoder

cdef class Stream:
    cdef public list chunks
    cdef public object headers
    cdef public Py_ssize_t id
    cdef public object key
    cdef public bint local_closed
    cdef public object pending
    cdef public bint pending_end
    cdef public object pending_trailers
    cdef public Py_ssize_t received
    cdef public Py_ssize_t recv_unacked
    cdef public bint remote_closed
    cdef public Py_ssize_t send_window
    cdef public bint too_large
    cdef public object trailers
    cdef public object user

cdef class Connection:
    cdef public bint client
    cdef public list out
    cdef public list events
    cdef public dict streams
    cdef public bint closed
    cdef public bint goaway_received
    cdef public bint goaway_sent
    cdef public Py_ssize_t peer_last_stream
    cdef public Py_ssize_t last_peer_stream
    cdef public Py_ssize_t next_stream_id
    cdef public Decoder decoder
    cdef public Py_ssize_t max_stream_bytes
    cdef public Py_ssize_t max_header_block
    cdef public Py_ssize_t local_max_frame
    cdef public Py_ssize_t local_stream_window
    cdef public Py_ssize_t local_connection_window
    cdef public Py_ssize_t max_concurrent
    cdef public Py_ssize_t recv_window
    cdef public Py_ssize_t recv_unacked
    cdef public Py_ssize_t send_window
    cdef public Py_ssize_t peer_initial_window
    cdef public Py_ssize_t peer_max_frame
    cdef public Py_ssize_t peer_max_concurrent
    cdef public dict blocked
    cdef public bytes _buffer
    cdef public Py_ssize_t _preface_left
    cdef public Stream _data_stream
    cdef public Py_ssize_t _data_left
    cdef public Py_ssize_t _pad_left
    cdef public bint _data_end
    cdef public Py_ssize_t _block_stream
    cdef public list _block
    cdef public Py_ssize_t _block_size
    cdef public bint _block_end
    cdef public Py_ssize_t _open_peer_streams
    cdef bytearray _scratch

    # The frame loop and what it calls run as C methods: a Python-level method call
    # and boxed ints per frame cost more than the framing itself.
    cpdef receive(self, object data)
    cpdef bint can_open(self)
    @cython.locals(p=cython.p_uchar, i=Py_ssize_t, n=Py_ssize_t, length=Py_ssize_t, kind=int, flags=int,
                   stream_id=Py_ssize_t, end=Py_ssize_t, want=Py_ssize_t, start=Py_ssize_t, increment=Py_ssize_t)
    cdef _receive(self, bytes data)
    @cython.locals(pad=Py_ssize_t, body=Py_ssize_t, stream=Stream)
    cdef Py_ssize_t _data_head(self, bytes data, Py_ssize_t i, Py_ssize_t n, Py_ssize_t length, int flags,
                               Py_ssize_t stream_id) except -1
    @cython.locals(take=Py_ssize_t, skip=Py_ssize_t, stream=Stream, p=cython.p_uchar)
    cdef Py_ssize_t _data_payload(self, bytes data, Py_ssize_t i, Py_ssize_t n) except -1
    cdef _grant_connection(self)
    cdef Py_ssize_t _highest_id(self, Py_ssize_t stream_id)
    @cython.locals(stream=Stream)
    cdef _frame(self, int kind, int flags, Py_ssize_t stream_id, bytes payload)
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t)
    cdef _headers(self, int flags, Py_ssize_t stream_id, bytes payload)
    cdef _add_fragment(self, bytes fragment)
    @cython.locals(stream=Stream, stream_id=Py_ssize_t, end_stream=bint, key=object)
    cdef _block_done(self)
    cdef _remote_end(self, Stream stream)
    @cython.locals(p=cython.p_uchar)
    cdef _window_update(self, Py_ssize_t stream_id, bytes payload)
    @cython.locals(stream=Stream)
    cdef _window_increment(self, Py_ssize_t stream_id, Py_ssize_t increment)
    @cython.locals(key=object)
    cpdef Stream open_stream(self)
    @cython.locals(limit=Py_ssize_t, at=Py_ssize_t, flags=int)
    cpdef send_headers(self, Stream stream, bytes block, bint end_stream=*)
    @cython.locals(size=Py_ssize_t)
    cpdef send_data(self, Stream stream, list pieces, bint end_stream, object trailers=*)
    @cython.locals(total=Py_ssize_t, limit=Py_ssize_t, n=Py_ssize_t, p=cython.p_uchar, out=list)
    cpdef send_message(self, Stream stream, bytes block, list pieces, Py_ssize_t size, object trailers)
    @cython.locals(p=cython.p_uchar)
    cdef inline void _head_at(self, Py_ssize_t at, Py_ssize_t length, int kind, int flags, Py_ssize_t stream_id)
    cpdef _local_end(self, Stream stream)
    cpdef _drop(self, Stream stream)
    cpdef _forget(self, Stream stream)
    cpdef reset(self, Py_ssize_t stream_id, int code)


cdef object _HEAD
cdef Py_ssize_t _COPY_BELOW
# C copies of the frame types and flags the per-frame paths test (the public names stay Python ints).
cdef int _DATA, _HEADERS, _CONTINUATION, _WINDOW_UPDATE
cdef int _END_STREAM, _END_HEADERS, _PADDED, _PRIORITY_FLAG
cdef Py_ssize_t _MAX_WINDOW
cpdef bytes frame_head(Py_ssize_t length, int kind, int flags, Py_ssize_t stream_id)
