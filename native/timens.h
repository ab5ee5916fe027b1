/* Shared by the compiled parts (the .c files in native/): a stat time as os.stat gives st_*_ns. */
#ifndef REPLICATOR_TIMENS_H
#define REPLICATOR_TIMENS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* seconds * 10^9 + nanoseconds; past the year 2262 (or before 1678) that no longer fits in
 * 64 bits (in C a signed overflow), so there in Python integers. Needs the interpreter lock. */
static inline PyObject *time_ns_object(int64_t sec, long nsec)
{
    const int64_t lim = INT64_MAX / 1000000000 - 1;
    if (sec < lim && sec > -lim)
        return PyLong_FromLongLong((long long)sec * 1000000000LL + nsec);
    PyObject *s = PyLong_FromLongLong((long long)sec);
    PyObject *giga = PyLong_FromLong(1000000000L);
    PyObject *ns = PyLong_FromLong(nsec);
    PyObject *prod = NULL, *out = NULL;
    if (s && giga && ns && (prod = PyNumber_Multiply(s, giga)) != NULL)
        out = PyNumber_Add(prod, ns);
    Py_XDECREF(s);
    Py_XDECREF(giga);
    Py_XDECREF(ns);
    Py_XDECREF(prod);
    return out;
}

#endif
