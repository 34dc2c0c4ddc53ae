# Cython declarations for jsonsyntax.py (an augmenting .pxd; see httpserver.pxd): the
# scan runs on C integers over the bytes, with no Python object per byte.
cimport cython

cdef Py_ssize_t _DEPTH_LIMIT
cdef int _VALUE, _FIRST_ITEM, _FIRST_KEY, _KEY, _COLON, _AFTER

cpdef bint valid(bytes data)

@cython.locals(c=cython.uchar, e=cython.uchar, h=cython.uchar, k=Py_ssize_t)
cdef Py_ssize_t _string_end(const unsigned char* data, Py_ssize_t i, Py_ssize_t n)

@cython.locals(c=cython.uchar, start=Py_ssize_t)
cdef Py_ssize_t _number_end(const unsigned char* data, Py_ssize_t i, Py_ssize_t n)

cdef int _TRUE, _NOT, _INVALID, _UNSURE

cpdef int stream_flag(bytes data)

@cython.locals(n=Py_ssize_t, i=Py_ssize_t, depth=Py_ssize_t, state=int, c=cython.uchar, in_object=bint,
               shallow=cython.ulonglong, bit=cython.ulonglong, k=Py_ssize_t, deep=bytearray, p=cython.p_uchar,
               is_object=bint, flag=int, key_is_stream=bint, member=bint, start=Py_ssize_t, stream_options=bint)
cdef int _walk(bytes data, bint as_orjson)

@cython.locals(c=cython.uchar)
cdef Py_ssize_t _plain_string_end(const unsigned char* data, Py_ssize_t i, Py_ssize_t n)
