# Compiled (see setup.py): a gRPC step call runs this module's code on every call.
cimport cython
from .client cimport Channel

cdef class _Step:
    cdef public object target
    cdef public tuple key
    cdef public bint secure
    cdef public bytes rename
    cdef public tuple address

cdef object _get_raw_request
cdef dict _steps
cdef dict _targets
cdef dict _renames

# Per step call: C calls from call().
cpdef object target(object url)
cpdef _Step _step(object url)
@cython.locals(size=Py_ssize_t)
cpdef Py_ssize_t _size(list parts)
cpdef list request_parts(object body, _Step step, object raw)
@cython.locals(pool=dict, found=dict)
cpdef Channel lean_channel(_Step step, object max_response_bytes, object loop=*)
cpdef object lean_metadata(object headers)
cpdef object metadata(object headers)
cpdef bytes _rename(object model, object version)
