/* The direct path's produce loop in C (docs/ARCHITECTURE.md, "The direct path of a lone
 * aggregate"): `Transaction.produce_all` hands it a batch's outputs, one call for all. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *producer_clock; /* timestamp 0: the producer's clock */

/* A limit as a 64-bit integer, saturated: a topic without limits gives ones past 64 bits. */
static int
bound(PyObject *limit, long long *out)
{
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(limit, &overflow);
    if (overflow)
        *out = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* produce(send, topic, records, partition, low, high) -> how many of `records` (key, value,
 * event time) were handed to `send` (Producer.produce) before its queue was full. An event
 * time outside [low, high] is sent as 0 (the producer's clock). */
static PyObject *
produce(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "produce(send, topic, records: list, partition, low, high)");
        return NULL;
    }
    PyObject *send = args[0], *records = args[2];
    long long low, high;
    if (bound(args[4], &low) < 0 || bound(args[5], &high) < 0)
        return NULL;
    /* topic, value, key, partition, callback, on_delivery, timestamp: positional, since
     * keywords cost a dict per call; None callbacks are the default, as if omitted. */
    PyObject *call[7] = {args[1], NULL, NULL, args[3], Py_None, Py_None, NULL};
    Py_ssize_t i = 0;
    for (; i < PyList_GET_SIZE(records); i++) {
        PyObject *row = Py_NewRef(PyList_GET_ITEM(records, i)), *done;
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 3) {
            Py_DECREF(row);
            PyErr_SetString(PyExc_TypeError, "an output is (key, value, event time)");
            return NULL;
        }
        long long ts = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 2));
        if (ts == -1 && PyErr_Occurred()) {
            Py_DECREF(row);
            return NULL;
        }
        call[1] = PyTuple_GET_ITEM(row, 1);
        call[2] = PyTuple_GET_ITEM(row, 0);
        call[6] = low <= ts && ts <= high ? PyTuple_GET_ITEM(row, 2) : producer_clock;
        done = PyObject_Vectorcall(send, call, 7, NULL);
        Py_DECREF(row);
        if (done == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_BufferError))
                return NULL;
            PyErr_Clear(); /* the queue is full: the caller waits for room */
            break;
        }
        Py_DECREF(done);
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"produce", (PyCFunction)(void (*)(void))produce, METH_FASTCALL,
     "Produce a batch's outputs until the producer's queue is full."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_produce", "The direct path's produce loop.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__produce(void)
{
    producer_clock = PyLong_FromLong(0);
    if (producer_clock == NULL)
        return NULL;
    return PyModule_Create(&module);
}
