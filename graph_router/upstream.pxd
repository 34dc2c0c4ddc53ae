# Cython declarations for upstream.py (an augmenting .pxd; see httpserver.pxd).
from .breaker cimport CircuitBreakers
from .httpclient cimport HTTPClient

cdef class UpstreamClient:
    cdef public object _settings
    cdef public object _rng
    cdef public CircuitBreakers _breakers
    cdef public HTTPClient _http
    cdef public object _rewrite_https
    cdef public object _istio_lock


cdef class StepResponse:
    cdef public object status
    cdef public bytes body
    cdef public object content_type
    cdef public object stream
    cdef public object content_encoding


cdef class StepStream:
    cdef public object _body
    cdef public object _url
