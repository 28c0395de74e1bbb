/* The direct path's fold in C (docs/ARCHITECTURE.md, "The direct path of a lone
 * aggregate"): fold a batch's decoded records (`processor/runtime/_decode.c`) into the
 * step's table of accumulators, and encode each output.
 *
 * Only the common case is here. A record that is anything else (a field that is not a
 * number, a sum leaving 64 bits, ...) goes to a Python callback that folds it exactly as
 * the Python path does, errors included; so the Python code stays the definition, and
 * this file is the part of it that runs for nearly every record.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* How `fold` handles an aggregation: the `_SUM`.. constants of accumulators.py. */
enum { SUM, MIN, MAX, FIRST, LAST };
#define MAX_AGGREGATIONS 32 /* a step with more folds every record through the callback */

static PyObject *zero, *one;

/* Clear an exception the Python code will meet again and report; leave a KeyboardInterrupt
 * or SystemExit set, to stop the batch. */
static void
clear_exception(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear();
}

static int
is_number(PyObject *x)
{
    return x != NULL && (PyLong_CheckExact(x) || PyFloat_CheckExact(x)); /* not bool */
}

/* The accumulator after folding `value` into `stored` (NULL: none yet), a new reference;
 * NULL with no error set when the Python fold must do it. `stored` is changed in place only
 * when `owned` (the table's own, made since the last flush; its earlier outputs are encoded
 * already); otherwise the result is a copy, since a flush may be encoding `stored`. */
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
    PyObject *out = NULL, *v = NULL, *row = NULL;
    int rc = -1;
    out = PyDict_GET_SIZE(acc) == aggregations ? Py_NewRef(acc) : PyObject_CallOneArg(result, acc);
    if (out == NULL || (v = PyObject_CallOneArg(dumps, out)) == NULL ||
        (row = PyTuple_Pack(3, key, v, ts)) == NULL)
        goto done;
    rc = PyList_Append(produced, row);
done:
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

/* A table's entry of one key: one object, so that a record touches one place for its key's
 * accumulator and offset (each a miss of the CPU's caches at 100,000 keys). Not tracked by
 * the cyclic collector: what it holds, JSON values and bytes, cannot refer back to it. */
typedef struct {
    PyObject_HEAD
    PyObject *value;     /* the accumulator */
    long long offset;    /* of the last record folded into it */
    PyObject *key_bytes; /* the key as UTF-8, for the outputs */
    char owned;          /* made since the last flush: changed in place */
} Entry;

static void
entry_dealloc(Entry *self)
{
    Py_XDECREF(self->value);
    Py_XDECREF(self->key_bytes);
    PyObject_Free(self);
}

static PyMemberDef entry_members[] = {
    {"value", T_OBJECT_EX, offsetof(Entry, value), READONLY, "the accumulator"},
    {"offset", T_LONGLONG, offsetof(Entry, offset), READONLY, "of the last record in it"},
    {"owned", T_BOOL, offsetof(Entry, owned), 0, "False once a flush holds the value"},
    {NULL},
};

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidemark.operators._direct.Entry",
    .tp_basicsize = sizeof(Entry),
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A table's accumulator of one key (`config/state.py`, `Table`).",
    .tp_members = entry_members,
};

/* The key's accumulator before a record at offset `at`, borrowed (NULL: none yet), from
 * what storage held ((accumulator or None, offset), or NULL: never written); 1 when that
 * record was applied before a crash (the recovery rule), -1 on error. */
static int
stored_before(PyObject *current, long long at, PyObject **stored)
{
    *stored = NULL;
    if (current == NULL)
        return 0;
    if (!PyTuple_Check(current) || PyTuple_GET_SIZE(current) != 2) {
        PyErr_SetString(PyExc_TypeError, "a stored entry is (accumulator, offset)");
        return -1;
    }
    long long stamped = PyLong_AsLongLong(PyTuple_GET_ITEM(current, 1));
    if (stamped == -1 && PyErr_Occurred())
        return -1;
    if (stamped >= at)
        return 1;
    if (PyTuple_GET_ITEM(current, 0) != Py_None) /* None: deleted */
        *stored = PyTuple_GET_ITEM(current, 0);
    return 0;
}

/* Keep `acc` as the key's value at `at` in the table: in its `entry`, owned from now on,
 * or in a new one; the key is dirty either way. The entry (borrowed: the table holds it),
 * or NULL with an error set. */
static Entry *
keep(PyObject *entries, PyObject *dirty, Entry *entry, PyObject *key, PyObject *acc,
     long long at)
{
    if (entry != NULL) {
        Py_SETREF(entry->value, Py_NewRef(acc));
        entry->offset = at;
        if (entry->owned)
            return entry; /* dirty already */
        entry->owned = 1;
        return PySet_Add(dirty, key) < 0 ? NULL : entry;
    }
    PyObject *k = PyUnicode_AsUTF8String(key);
    if (k == NULL || (entry = PyObject_New(Entry, &EntryType)) == NULL) {
        Py_XDECREF(k);
        return NULL;
    }
    entry->value = Py_NewRef(acc);
    entry->offset = at;
    entry->key_bytes = k;
    entry->owned = 1;
    int rc = PyDict_SetItem(entries, key, (PyObject *)entry);
    Py_DECREF(entry); /* held by `entries`, which keeps it through this batch */
    return rc < 0 || PySet_Add(dirty, key) < 0 ? NULL : entry;
}

/* Fold one record (key, value, offset, event time) in; 0, or -1 with an error set. */
static int
fold_record(PyObject *record, PyObject *const *args, long long emit_from, PyObject *produced)
{
    PyObject *latest = args[1], *entries = args[2], *dirty = args[3];
    PyObject *counts = args[4], *plan = args[5];
    PyObject *key = PyTuple_GET_ITEM(record, 0), *value = PyTuple_GET_ITEM(record, 1);
    PyObject *offset = PyTuple_GET_ITEM(record, 2), *ts = PyTuple_GET_ITEM(record, 3);
    PyObject *stored = NULL, *acc;
    int rc;

    long long at = PyLong_AsLongLong(offset);
    if (at == -1 && PyErr_Occurred())
        return -1;
    /* The table's entry, else what storage held before this batch. */
    Entry *entry = (Entry *)PyDict_GetItemWithError(entries, key);
    if (entry != NULL) {
        if (!Py_IS_TYPE(entry, &EntryType)) {
            PyErr_SetString(PyExc_TypeError, "a table's entries are `_direct.Entry`s");
            return -1;
        }
        if (entry->offset >= at)
            return 0; /* applied already: the recovery rule */
        stored = entry->value;
    }
    else {
        if (PyErr_Occurred())
            return -1;
        PyObject *current = PyDict_GetItemWithError(latest, key);
        if (current == NULL && PyErr_Occurred())
            return -1;
        if ((rc = stored_before(current, at, &stored)) != 0)
            return rc < 0 ? -1 : 0;
    }
    int owned = entry != NULL && entry->owned;
    Py_XINCREF(entry); /* held: the callback runs Python code */
    Py_XINCREF(stored);
    acc = fold_one(stored, owned, value, counts, plan);
    if (acc == NULL && !PyErr_Occurred()) {
        PyObject *call[5] = {key, value, offset, ts, stored ? stored : Py_None};
        acc = PyObject_Vectorcall(args[6], call, 5, NULL);
    }
    Py_XDECREF(stored);
    rc = -1;
    if (acc == NULL)
        goto done;
    if (acc == Py_None) { /* refused: dead-lettered by the callback */
        rc = 0;
        goto done;
    }
    Entry *kept = keep(entries, dirty, entry, key, acc, at);
    if (kept == NULL)
        goto done;
    if (at < emit_from) {
        rc = 0;
        goto done;
    }
    Py_ssize_t aggregations = PyTuple_GET_SIZE(counts) + PyTuple_GET_SIZE(plan);
    rc = encode(produced, kept->key_bytes, acc, aggregations, ts, args[7], args[8]);
done:
    Py_XDECREF(entry);
    Py_XDECREF(acc);
    return rc;
}

/* fold(records, latest, entries, dirty, counts, plan, slow, result, dumps, emit_from)
 * -> produced */
static PyObject *
direct_fold(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10 || !PyList_Check(args[0]) || !PyDict_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PySet_Check(args[3]) || !PyTuple_Check(args[4]) ||
        !PyTuple_Check(args[5]) || !plan_ok(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "fold(records: list, latest: dict, entries: dict, dirty: set, "
                        "counts: tuple, plan: tuple of (name, how, field), slow, result, "
                        "dumps, emit_from)");
        return NULL;
    }
    long long emit_from = PyLong_AsLongLong(args[9]);
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

/* missing(keys, entries) -> the keys `entries` lacks, as a list. */
static PyObject *
direct_missing(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyAnySet_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "missing(keys: set, entries: dict)");
        return NULL;
    }
    PyObject *out = PyList_New(0), *keys = PyObject_GetIter(args[0]), *key;
    while (out != NULL && keys != NULL && (key = PyIter_Next(keys)) != NULL) {
        int held = PyDict_Contains(args[1], key);
        if (held < 0 || (!held && PyList_Append(out, key) < 0))
            Py_CLEAR(out);
        Py_DECREF(key);
    }
    if (keys == NULL || PyErr_Occurred())
        Py_CLEAR(out);
    Py_XDECREF(keys);
    return out;
}

static PyMethodDef methods[] = {
    {"fold", (PyCFunction)(void (*)(void))direct_fold, METH_FASTCALL,
     "Fold a batch's records into their accumulators and encode the outputs."},
    {"missing", (PyCFunction)(void (*)(void))direct_missing, METH_FASTCALL,
     "The keys a table's entries lack."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_direct", "The direct path's fold.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__direct(void)
{
    zero = PyLong_FromLong(0);
    one = PyLong_FromLong(1);
    if (!zero || !one || PyType_Ready(&EntryType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Entry", (PyObject *)&EntryType) < 0)
        Py_CLEAR(m);
    return m;
}
