# Cython declarations for connection.py (an augmenting .pxd; see graph_router/httpserver.pxd).
from .hpack cimport Decoder

cdef class Stream:
    cdef public list chunks
    cdef public object headers
    cdef public Py_ssize_t id
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
