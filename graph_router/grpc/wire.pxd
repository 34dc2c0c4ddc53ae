# Compiled (see setup.py): message framing and status trailers, on every call.
cimport cython

# The front reads every ModelInfer request's model name with these: C ints, no Python calls.
@cython.locals(i=Py_ssize_t, end=Py_ssize_t, after=Py_ssize_t, tag=cython.ulonglong, wire_type=int,
               length=cython.ulonglong, name_at=Py_ssize_t, name_end=Py_ssize_t, p=cython.p_uchar)
cpdef str request_model(bytes raw)
@cython.locals(shift=int, n=Py_ssize_t, p=cython.p_uchar, byte=cython.ulonglong)
cdef Py_ssize_t _varint_end(bytes raw, Py_ssize_t i) except -1
@cython.locals(value=cython.ulonglong, shift=int, p=cython.p_uchar, byte=cython.ulonglong)
cdef unsigned long long _varint_value(bytes raw, Py_ssize_t i)

# Every call's message (at the front and from a step) goes through this.
@cython.locals(whole=bytes, p=cython.p_uchar, length=cython.ulonglong, total=Py_ssize_t)
cpdef bytes message(list chunks, Py_ssize_t total, object encoding)
