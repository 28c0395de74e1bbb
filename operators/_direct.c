/* The direct path's per-record loops in C (docs/ARCHITECTURE.md, "The direct path of a
 * lone aggregate"): decode a batch into (group key, value, offset, event time) tuples, and
 * fold the common aggregations and encode each output.
 *
 * Only the common case is here. A record that is anything else (too long to skip the
 * depth check, not an object, a key that is not a non-empty string, a field that is not a
 * number, a sum leaving 64 bits, ...) goes to a Python callback that handles it exactly as
 * the Python path does, errors included; so the Python code stays the definition, and
 * this file is the part of it that runs for nearly every record.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* How `fold` handles an aggregation: the `_SUM`.. constants of accumulators.py. */
enum { SUM, MIN, MAX, FIRST, LAST };
#define MAX_AGGREGATIONS 32 /* a step with more folds every record through the callback */

static PyObject *s_offset, *s_value, *s_timestamp, *zero, *one;

/* Clear an exception the Python code will meet again and report; leave a KeyboardInterrupt
 * or SystemExit set, to stop the batch. */
static void
clear_exception(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear();
}

/* (group key, value, offset, event time) of one message, a new reference; NULL with no
 * error set when the record is not the common case; NULL with an error set on a bug. */
static PyObject *
decode_one(PyObject *m, PyObject *path, Py_ssize_t shortest, PyObject *loads,
           PyObject *time_of)
{
    PyObject *value, *body = NULL, *offset = NULL, *stamp = NULL, *ts = NULL, *result = NULL;
    PyObject *group, *key = NULL;

    value = PyObject_CallMethodNoArgs(m, s_value);
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
    offset = PyObject_CallMethodNoArgs(m, s_offset);
    if (offset == NULL)
        goto done;
    if (time_of == Py_None) {
        stamp = PyObject_CallMethodNoArgs(m, s_timestamp);
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

/* decode(messages, path, shortest, loads, time_of, slow, keys) -> list of tuples; each
 * record's group key (the string at `path`) is added to the set `keys`. */
static PyObject *
direct_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyList_Check(args[0]) || !PyTuple_Check(args[1]) ||
        PyTuple_GET_SIZE(args[1]) == 0 || !PySet_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "decode(messages: list, path: tuple, shortest, "
                                         "loads, time_of, slow, keys: set)");
        return NULL;
    }
    PyObject *messages = args[0], *path = args[1], *loads = args[3], *time_of = args[4];
    PyObject *slow = args[5], *keys = args[6];
    Py_ssize_t shortest = PyLong_AsSsize_t(args[2]);
    if (shortest == -1 && PyErr_Occurred())
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(messages); i++) {
        PyObject *m = Py_NewRef(PyList_GET_ITEM(messages, i));
        PyObject *record = decode_one(m, path, shortest, loads, time_of);
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
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static int
is_number(PyObject *x)
{
    return x != NULL && (PyLong_CheckExact(x) || PyFloat_CheckExact(x)); /* not bool */
}

/* The accumulator after folding `value` into `stored` (NULL: none yet), a new reference;
 * NULL with no error set when the Python fold must do it. `stored` is changed in place only
 * when `owned` (made by this batch, its earlier outputs encoded already); otherwise the
 * result is a copy, since the store's accumulators may be in a flush being encoded. */
static PyObject *
fold_one(PyObject *stored, int owned, PyObject *value, PyObject *counts, PyObject *plan)
{
    PyObject *names[MAX_AGGREGATIONS], *updates[MAX_AGGREGATIONS];
    Py_ssize_t n = 0, c = PyTuple_GET_SIZE(counts), p = PyTuple_GET_SIZE(plan);
    PyObject *acc = NULL;

    if (!PyDict_CheckExact(value) || (stored != NULL && !PyDict_CheckExact(stored)) ||
        c + p > MAX_AGGREGATIONS)
        return NULL;
    /* Every new entry first, so a record the Python fold must see leaves nothing half-done. */
    for (Py_ssize_t i = 0; i < c; i++) {
        PyObject *name = PyTuple_GET_ITEM(counts, i);
        PyObject *old = stored ? PyDict_GetItemWithError(stored, name) : NULL;
        PyObject *new = PyErr_Occurred() ? NULL : PyNumber_Add(old ? old : zero, one);
        if (new == NULL)
            goto slow;
        names[n] = name;
        updates[n++] = new;
    }
    for (Py_ssize_t i = 0; i < p; i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i); /* (name, how, field) */
        PyObject *name = PyTuple_GET_ITEM(step, 0), *new = NULL;
        long how = PyLong_AsLong(PyTuple_GET_ITEM(step, 1));
        PyObject *x = PyDict_GetItemWithError(value, PyTuple_GET_ITEM(step, 2));
        PyObject *old = stored ? PyDict_GetItemWithError(stored, name) : NULL;
        int less;
        if (PyErr_Occurred())
            goto slow;
        switch (how) {
        case SUM:
            if (!is_number(x))
                goto slow;
            new = PyNumber_Add(old ? old : zero, x);
            if (new == NULL)
                goto slow;
            if (PyLong_CheckExact(new)) {
                int overflow;
                (void)PyLong_AsLongLongAndOverflow(new, &overflow);
                if (overflow) { /* past 64 bits: the Python fold refuses the record */
                    Py_DECREF(new);
                    goto slow;
                }
            }
            else if (!PyFloat_CheckExact(new)) {
                Py_DECREF(new);
                goto slow;
            }
            break;
        case MIN:
        case MAX:
            if (!is_number(x))
                goto slow;
            /* as the builtins: the earlier one on a tie */
            less = PyObject_RichCompareBool(x, old ? old : x, how == MIN ? Py_LT : Py_GT);
            if (less < 0)
                goto slow;
            new = Py_NewRef(less ? x : (old ? old : x));
            break;
        case FIRST:
            if (old != NULL)
                continue; /* kept */
            if (x == NULL)
                goto slow;
            new = Py_NewRef(x);
            break;
        case LAST:
            if (x == NULL)
                goto slow;
            new = Py_NewRef(x);
            break;
        default:
            goto slow;
        }
        names[n] = name;
        updates[n++] = new;
    }
    acc = owned ? Py_NewRef(stored) : (stored ? PyDict_Copy(stored) : PyDict_New());
    for (Py_ssize_t i = 0; acc != NULL && i < n; i++) {
        if (PyDict_SetItem(acc, names[i], updates[i]) < 0)
            Py_CLEAR(acc); /* out of memory: a real error, left set */
    }
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(updates[i]);
    return acc;
slow:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(updates[i]);
    clear_exception();
    return NULL;
}

/* Append (key as UTF-8, value as JSON, event time) to `produced`; -1 on error. The value
 * is the accumulator itself unless it holds names that are no longer aggregations (state
 * from an earlier version of the step): then `result` reads the aggregations out of it. */
static int
encode(PyObject *produced, PyObject *key, PyObject *acc, Py_ssize_t aggregations,
       PyObject *ts, PyObject *result, PyObject *dumps)
{
    PyObject *k = PyUnicode_AsUTF8String(key), *out = NULL, *v = NULL, *row = NULL;
    int rc = -1;
    if (k == NULL)
        goto done;
    out = PyDict_GET_SIZE(acc) == aggregations ? Py_NewRef(acc) : PyObject_CallOneArg(result, acc);
    if (out == NULL || (v = PyObject_CallOneArg(dumps, out)) == NULL ||
        (row = PyTuple_Pack(3, k, v, ts)) == NULL)
        goto done;
    rc = PyList_Append(produced, row);
done:
    Py_XDECREF(k);
    Py_XDECREF(out);
    Py_XDECREF(v);
    Py_XDECREF(row);
    return rc;
}

/* Whether `plan` is a tuple of (name: str, how: int, field: str), as `fold_one` reads it. */
static int
plan_ok(PyObject *plan)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i);
        if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) != 3 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(step, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(step, 1)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(step, 2)))
            return 0;
    }
    return 1;
}

/* Fold one record (key, value, offset, event time) in; 0, or -1 with an error set. */
static int
fold_record(PyObject *record, PyObject *const *args, long long emit_from, PyObject *produced)
{
    PyObject *latest = args[1], *written = args[2], *counts = args[3], *plan = args[4];
    PyObject *key = PyTuple_GET_ITEM(record, 0), *value = PyTuple_GET_ITEM(record, 1);
    PyObject *offset = PyTuple_GET_ITEM(record, 2), *ts = PyTuple_GET_ITEM(record, 3);
    PyObject *current, *acc = NULL, *entry = NULL;
    int rc = -1;

    long long at = PyLong_AsLongLong(offset);
    if (at == -1 && PyErr_Occurred())
        return -1;
    current = PyDict_GetItemWithError(latest, key); /* (accumulator, offset) */
    if (current == NULL && PyErr_Occurred())
        return -1;
    Py_XINCREF(current); /* held: `latest` changes below */
    if (current != NULL) {
        if (!PyTuple_Check(current) || PyTuple_GET_SIZE(current) != 2) {
            PyErr_SetString(PyExc_TypeError, "a stored entry is (accumulator, offset)");
            goto done;
        }
        long long stamped = PyLong_AsLongLong(PyTuple_GET_ITEM(current, 1));
        if (stamped == -1 && PyErr_Occurred())
            goto done;
        if (stamped >= at) { /* applied before a crash: the recovery rule */
            rc = 0;
            goto done;
        }
        PyObject *stored = PyTuple_GET_ITEM(current, 0); /* None: deleted */
        int owned = stored != Py_None && PyDict_GetItemWithError(written, key) == current;
        acc = fold_one(stored == Py_None ? NULL : stored, owned, value, counts, plan);
    }
    else {
        acc = fold_one(NULL, 0, value, counts, plan);
    }
    if (acc == NULL) {
        if (PyErr_Occurred())
            goto done;
        acc = PyObject_Vectorcall(args[5], ((PyTupleObject *)record)->ob_item, 4, NULL);
        if (acc == NULL)
            goto done;
        if (acc == Py_None) { /* refused: dead-lettered by the callback */
            rc = 0;
            goto done;
        }
    }
    else if ((entry = PyTuple_Pack(2, acc, offset)) == NULL ||
             PyDict_SetItem(latest, key, entry) < 0 || PyDict_SetItem(written, key, entry) < 0) {
        goto done;
    }
    if (at < emit_from) {
        rc = 0;
        goto done;
    }
    Py_ssize_t aggregations = PyTuple_GET_SIZE(counts) + PyTuple_GET_SIZE(plan);
    rc = encode(produced, key, acc, aggregations, ts, args[6], args[7]);
done:
    Py_XDECREF(current);
    Py_XDECREF(acc);
    Py_XDECREF(entry);
    return rc;
}

/* fold(records, latest, written, counts, plan, slow, result, dumps, emit_from) -> produced */
static PyObject *
direct_fold(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyList_Check(args[0]) || !PyDict_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PyTuple_Check(args[3]) || !PyTuple_Check(args[4]) ||
        !plan_ok(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "fold(records: list, latest: dict, written: dict, counts: tuple, "
                        "plan: tuple of (name, how, field), slow, result, dumps, emit_from)");
        return NULL;
    }
    long long emit_from = PyLong_AsLongLong(args[8]);
    if (emit_from == -1 && PyErr_Occurred())
        return NULL;
    PyObject *records = args[0], *produced = PyList_New(0);
    if (produced == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *record = Py_NewRef(PyList_GET_ITEM(records, i));
        int rc = -1;
        if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != 4)
            PyErr_SetString(PyExc_TypeError, "a record is (key, value, offset, event time)");
        else
            rc = fold_record(record, args, emit_from, produced);
        Py_DECREF(record);
        if (rc < 0) {
            Py_DECREF(produced);
            return NULL;
        }
    }
    return produced;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))direct_decode, METH_FASTCALL,
     "The direct path's records of a batch of messages."},
    {"fold", (PyCFunction)(void (*)(void))direct_fold, METH_FASTCALL,
     "Fold a batch's records into their accumulators and encode the outputs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_direct", "The direct path's per-record loops.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__direct(void)
{
    s_offset = PyUnicode_InternFromString("offset");
    s_value = PyUnicode_InternFromString("value");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    zero = PyLong_FromLong(0);
    one = PyLong_FromLong(1);
    if (!s_offset || !s_value || !s_timestamp || !zero || !one)
        return NULL;
    return PyModule_Create(&module);
}
