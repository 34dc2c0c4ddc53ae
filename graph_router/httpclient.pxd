# Cython declarations for httpclient.py (an augmenting .pxd; see httpserver.pxd).

cdef class _Connection:
    cdef public _HostPool _pool
    cdef public Py_ssize_t _max_body
    cdef public object _parser
    cdef public object transport
    cdef public bint closed
    cdef public bint reusable
    cdef public double idle_since
    cdef public object _waiter
    cdef public bint _got_bytes
    cdef public bint _reused
    cdef public bint _want_stream
    cdef public BodyStream _stream
    cdef public int _status
    cdef public list _chunks
    cdef public Py_ssize_t _size
    cdef public object _content_type
    cdef public object _encoding
    cdef public bint _framed
    cdef public bint _chunked
    cdef public bint _done

    cpdef _reset(self)
    cpdef _fail(self, exc)
    cpdef object send(self, bytes data, bint reused, bint stream=*)
    cpdef close(self)

cdef class BodyStream:
    cdef public _Connection _conn
    cdef public object _chunks
    cdef public bint _done
    cdef public object _error
    cdef public object _wakeup
    cdef public bint _paused
    cdef public bint _released
    cdef public object _inflate

    cpdef _wake(self)
    cpdef push(self, bytes chunk)
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
    cdef public bytes _user_agent
    cdef public dict _pools
    cdef public dict _targets
    cdef public object _ssl

    cpdef object target(self, str url)
    cpdef bytes build_request(self, target, headers, bytes body)

cdef class Answer:
    cdef public object status
    cdef public bytes body
    cdef public object content_type
    cdef public BodyStream stream
