/* The direct path's decode in C (docs/ARCHITECTURE.md, "The direct path of a lone
 * aggregate"): a batch of messages into (group key, value, offset, event time) tuples, the
 * group key of each added to a set. Given the fields the fold reads, the value keeps only
 * those: the record's other fields are freed at once, while still in the CPU's caches.
 *
 * Only the common record is here: at most `shortest` bytes (too short to nest past the
 * depth limit), a JSON object, a non-empty string at the key path. Any other goes to a
 * Python callback (`Decoder._folded`) that decodes it as the general path does, errors
 * included; so the Python code stays the definition.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *s_offset, *s_value, *s_timestamp;

/* A message type's `value`, `offset` and `timestamp` methods, looked up once per batch
 * rather than three times per message. */
typedef struct {
    PyTypeObject *type;
    PyObject *value, *offset, *timestamp;
} Accessors;

static void
accessors_clear(Accessors *a)
{
    Py_CLEAR(a->value);
    Py_CLEAR(a->offset);
    Py_CLEAR(a->timestamp);
}

/* Call `name` (one of `a`'s) of `m`: through `a` when `m` is of its type. */
static PyObject *
call(Accessors *a, PyObject *method, PyObject *name, PyObject *m)
{
    return Py_IS_TYPE(m, a->type) ? PyObject_CallOneArg(method, m)
                                  : PyObject_CallMethodNoArgs(m, name);
}

/* Clear an exception the Python code will meet again and report; leave a KeyboardInterrupt
 * or SystemExit set, to stop the batch. */
static void
clear_exception(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear();
}

/* A new dict of those of `fields` that `body` has. */
static PyObject *
project(PyObject *body, PyObject *fields)
{
    PyObject *kept = PyDict_New();
    for (Py_ssize_t i = 0; kept != NULL && i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i);
        PyObject *x = PyDict_GetItemWithError(body, name);
        if ((x == NULL && PyErr_Occurred()) || (x != NULL && PyDict_SetItem(kept, name, x) < 0))
            Py_CLEAR(kept);
    }
    return kept;
}

/* (group key, value, offset, event time) of one message, a new reference; NULL with no
 * error set when the record is not the common case; NULL with an error set on a bug. */
static PyObject *
decode_one(PyObject *m, Accessors *a, PyObject *path, Py_ssize_t shortest, PyObject *loads,
           PyObject *time_of, PyObject *fields)
{
    PyObject *value, *body = NULL, *offset = NULL, *stamp = NULL, *ts = NULL, *result = NULL;
    PyObject *group, *key = NULL;

    value = call(a, a->value, s_value, m);
    if (value == NULL)
        return NULL;
    if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) == 0 ||
        PyBytes_GET_SIZE(value) > shortest)
        goto done;
    body = PyObject_CallOneArg(loads, value);
    if (body == NULL) {
        clear_exception(); /* the callback decodes it again and says why */
        goto done;
    }
    group = body; /* the field at `path`, through nested objects */
    for (Py_ssize_t i = 0; group != NULL && i < PyTuple_GET_SIZE(path); i++)
        group = PyDict_CheckExact(group)
                    ? PyDict_GetItemWithError(group, PyTuple_GET_ITEM(path, i))
                    : NULL;
    if (group == NULL || !PyDict_CheckExact(body) || !PyUnicode_CheckExact(group) ||
        PyUnicode_GET_LENGTH(group) == 0)
        goto done;
    key = Py_NewRef(group); /* held: `time_of` runs Python code on `body` */
    offset = call(a, a->offset, s_offset, m);
    if (offset == NULL)
        goto done;
    if (time_of == Py_None) {
        stamp = call(a, a->timestamp, s_timestamp, m);
        if (stamp == NULL)
            goto done;
        if (!PyTuple_Check(stamp) || PyTuple_GET_SIZE(stamp) != 2) {
            PyErr_SetString(PyExc_TypeError, "Message.timestamp() must be a pair");
            goto done;
        }
        ts = Py_NewRef(PyTuple_GET_ITEM(stamp, 1));
    }
    else {
        ts = PyObject_CallOneArg(time_of, body);
        if (ts == NULL) {
            clear_exception();
            goto done;
        }
    }
    if (fields != Py_None) {
        PyObject *kept = project(body, fields);
        if (kept == NULL)
            goto done;
        Py_SETREF(body, kept);
    }
    result = PyTuple_Pack(4, key, body, offset, ts);
done:
    Py_DECREF(value);
    Py_XDECREF(key);
    Py_XDECREF(body);
    Py_XDECREF(offset);
    Py_XDECREF(stamp);
    Py_XDECREF(ts);
    return result;
}

/* decode(messages, path, shortest, loads, time_of, slow, keys, fields) -> list of tuples;
 * each record's group key (the string at `path`) is added to the set `keys`; `fields`: a
 * tuple of the value's fields to keep, or None for the whole value. */
static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyList_Check(args[0]) || !PyTuple_Check(args[1]) ||
        PyTuple_GET_SIZE(args[1]) == 0 || !PySet_Check(args[6]) ||
        !(args[7] == Py_None || PyTuple_Check(args[7]))) {
        PyErr_SetString(PyExc_TypeError, "decode(messages: list, path: tuple, shortest, "
                                         "loads, time_of, slow, keys: set, fields: tuple)");
        return NULL;
    }
    PyObject *messages = args[0], *path = args[1], *loads = args[3], *time_of = args[4];
    PyObject *slow = args[5], *keys = args[6], *fields = args[7];
    Py_ssize_t shortest = PyLong_AsSsize_t(args[2]);
    if (shortest == -1 && PyErr_Occurred())
        return NULL;
    Accessors a = {NULL, NULL, NULL, NULL};
    if (PyList_GET_SIZE(messages) > 0) {
        a.type = Py_TYPE(PyList_GET_ITEM(messages, 0));
        PyObject *type = (PyObject *)a.type;
        if ((a.value = PyObject_GetAttr(type, s_value)) == NULL ||
            (a.offset = PyObject_GetAttr(type, s_offset)) == NULL ||
            (a.timestamp = PyObject_GetAttr(type, s_timestamp)) == NULL) {
            accessors_clear(&a);
            return NULL;
        }
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        accessors_clear(&a);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(messages); i++) {
        PyObject *m = Py_NewRef(PyList_GET_ITEM(messages, i));
        PyObject *record = decode_one(m, &a, path, shortest, loads, time_of, fields);
        if (record == NULL && !PyErr_Occurred())
            record = PyObject_CallOneArg(slow, m);
        Py_DECREF(m);
        if (record == NULL)
            goto fail;
        if (record != Py_None &&
            (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != 4 ||
             PySet_Add(keys, PyTuple_GET_ITEM(record, 0)) < 0 ||
             PyList_Append(out, record) < 0)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a record is (key, value, offset, event time)");
            Py_DECREF(record);
            goto fail;
        }
        Py_DECREF(record);
    }
    accessors_clear(&a);
    return out;
fail:
    accessors_clear(&a);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "The direct path's records of a batch of messages."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decode", "The direct path's decode.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__decode(void)
{
    s_offset = PyUnicode_InternFromString("offset");
    s_value = PyUnicode_InternFromString("value");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    if (!s_offset || !s_value || !s_timestamp)
        return NULL;
    return PyModule_Create(&module);
}
