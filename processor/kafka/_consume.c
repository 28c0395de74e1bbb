/* A consumed batch split by partition, in C: it runs for every message of every batch,
 * whatever the pipeline (`runtime/batch.py`, `by_partition`). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *s_error, *s_partition, *s_offset;

/* Add `m` to `batches` under its partition, unless it has an error (then to `failed`) or
 * its offset is at or past `end`; 0, or -1 with an error set. */
static int
place(PyObject *m, long long end, PyObject *batches, PyObject *failed)
{
    PyObject *error = NULL, *number = NULL, *offset = NULL, *batch;
    int rc = -1;
    if ((error = PyObject_CallMethodNoArgs(m, s_error)) == NULL ||
        (number = PyObject_CallMethodNoArgs(m, s_partition)) == NULL ||
        (offset = PyObject_CallMethodNoArgs(m, s_offset)) == NULL)
        goto done;
    if (error != Py_None || number == Py_None || offset == Py_None) {
        rc = PyList_Append(failed, m);
        goto done;
    }
    long long at = PyLong_AsLongLong(offset);
    if (at == -1 && PyErr_Occurred())
        goto done;
    if (at >= end) {
        rc = 0;
        goto done;
    }
    batch = PyDict_GetItemWithError(batches, number);
    if (batch == NULL) {
        if (PyErr_Occurred() || (batch = PyList_New(0)) == NULL)
            goto done;
        rc = PyDict_SetItem(batches, number, batch);
        Py_DECREF(batch); /* held by `batches` */
        if (rc < 0)
            goto done;
    }
    rc = PyList_Append(batch, m);
done:
    Py_XDECREF(error);
    Py_XDECREF(number);
    Py_XDECREF(offset);
    return rc;
}

/* split(messages, end) -> ({partition: [message, ...]}, [message with an error, ...]);
 * messages at or past `end` (None: no end) are left out. */
static PyObject *
split(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !(args[1] == Py_None || PyLong_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "split(messages: list, end: int | None)");
        return NULL;
    }
    long long end = LLONG_MAX;
    if (args[1] != Py_None) {
        int overflow;
        end = PyLong_AsLongLongAndOverflow(args[1], &overflow);
        if (overflow)
            end = overflow > 0 ? LLONG_MAX : LLONG_MIN;
        else if (end == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *messages = args[0], *batches = PyDict_New(), *failed = PyList_New(0), *out = NULL;
    if (batches == NULL || failed == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(messages); i++) {
        PyObject *m = Py_NewRef(PyList_GET_ITEM(messages, i));
        int rc = place(m, end, batches, failed);
        Py_DECREF(m);
        if (rc < 0)
            goto done;
    }
    out = PyTuple_Pack(2, batches, failed);
done:
    Py_XDECREF(batches);
    Py_XDECREF(failed);
    return out;
}

static PyMethodDef methods[] = {
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "A consumed batch's messages by partition, and those with an error."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_consume", "A consumed batch split by partition.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__consume(void)
{
    s_error = PyUnicode_InternFromString("error");
    s_partition = PyUnicode_InternFromString("partition");
    s_offset = PyUnicode_InternFromString("offset");
    if (!s_error || !s_partition || !s_offset)
        return NULL;
    return PyModule_Create(&module);
}
