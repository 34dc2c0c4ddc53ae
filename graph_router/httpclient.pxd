# Cython declarations for httpclient.py (an augmenting .pxd; see httpserver.pxd).
from .http1.response_reader cimport ResponseReader

cdef class _Connection:
    cdef public _HostPool _pool
    cdef public ResponseReader reader
    cdef public object transport
    cdef public bint closed
    cdef public bint reusable
    cdef public double idle_since
    cdef public object _waiter
    cdef public bint _reused
    cdef public bint _want_stream
    cdef public BodyStream _stream
    cdef public object _early

    cpdef _maybe_stream(self)
    cpdef _complete(self)
    cpdef _fail(self, exc)
    cpdef object send(self, bytes data, bint reused, bint stream=*, early=*)
    cpdef close(self)

cdef class BodyStream:
    cdef public _Connection _conn
    cdef public object _chunks
    cdef public bint _done
    cdef public object _error
    cdef public object _wakeup
    cdef public bint _paused
    cdef public bint _released

    cpdef _wake(self)
    cpdef take(self, ResponseReader reader)
    cpdef finish(self)
    cpdef fail(self, exc)
    cpdef _release(self, bint complete)

cdef class _HostPool:
    cdef public HTTPClient client
    cdef public object loop
    cdef public object target
    cdef public list idle
    cdef public Py_ssize_t open
    cdef public object waiters

    cpdef _Connection take_idle(self)
    cpdef release(self, _Connection conn)
    cpdef _wake(self)

cdef class HTTPClient:
    cdef public object loop
    cdef public Py_ssize_t per_host
    cdef public double keepalive
    cdef public double connect_timeout
    cdef public Py_ssize_t max_body
    cdef public Py_ssize_t max_head
    cdef public bytes _user_agent
    cdef public dict _pools
    cdef public dict _targets
    cdef public object _ssl
    cdef public dict _tls

    cpdef object target(self, str url)
    cpdef bytes build_request(self, target, headers, bytes body)

cdef class Answer:
    cdef public object status
    cdef public bytes body
    cdef public object content_type
    cdef public BodyStream stream
    cdef public object encoding
