/* runtel._hotpath_c: Run.log's common case in C, and the columns it fills.
 *
 * Why C: a Python `log` spends ~0.7 us a call on its frame, attribute loads, tuples and checks, and
 * the flush thread then spends more, holding the interpreter lock, turning those tuples into
 * columns. Here a call whose metrics are a dict of str -> float (or int within 2**53), with an
 * implicit or a non-negative int step, is validated and written straight into the open block's
 * columns (series index, step, time, value, span id per point). Anything else goes to the
 * Python general path, `_log_general`, which raises the clear errors and handles media.
 *
 * A full block is handed to the flush as it is (its buffers, no copy), with its points also
 * grouped by series when every call in it logged the same names, which is what the store writes;
 * the buffers come back to a small pool once nobody references them any more.
 *
 * Every step below runs under the interpreter lock without running Python code between reading
 * the run's state and committing a call, so concurrent `log` calls from several threads stay
 * whole and implicit steps stay unique. The pure-Python twin is runtel._hotpath_py.HotPath.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "runtel's store records are little-endian: this host runs the pure-Python hot path"
#endif
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Widest call taken by the fast path (its values are checked on the stack first). */
#define MAX_WIDTH 256
/* A block is sealed (queued for the flush) once it holds this many points or calls. */
#define BLOCK_POINTS 65536
#define BLOCK_CALLS 65536
/* Buffers kept for reuse once nobody else holds them (see take_buffer). */
#define POOL 8
/* Python ints convert to float64 exactly up to this magnitude. */
#define MAX_EXACT_INT 9007199254740992LL

/* One point as the store writes it (runtel.records.SERIES_DTYPE: little-endian, as every target of
 * runtel is). */
typedef struct {
    int64_t step;
    double time;
    double value;
    uint64_t span;
} Record;

typedef struct {
    PyObject_HEAD
    PyObject *index;   /* bytearray: each point's series id (int32), in logging order */
    PyObject *records; /* bytearray of Record, in logging order */
    PyObject *grouped; /* bytearray of Record grouped by series (ascending id), or NULL */
    PyObject *series;  /* bytearray: the groups' series ids (int32), or NULL */
    Py_ssize_t calls;
} PointsBlock;

static PyMemberDef block_members[] = {
    {"index", T_OBJECT_EX, offsetof(PointsBlock, index), READONLY, "series ids (int32), logging order"},
    {"records", T_OBJECT_EX, offsetof(PointsBlock, records), READONLY, "store records, logging order"},
    {"grouped", T_OBJECT, offsetof(PointsBlock, grouped), READONLY,
     "the records grouped by series (ascending id, as many each), each in logging order; or None"},
    {"series", T_OBJECT, offsetof(PointsBlock, series), READONLY, "the groups' series ids (int32), or None"},
    {"calls", T_PYSSIZET, offsetof(PointsBlock, calls), READONLY, "log calls in the block"},
    {NULL},
};

static void
block_dealloc(PointsBlock *self)
{
    Py_XDECREF(self->index);
    Py_XDECREF(self->records);
    Py_XDECREF(self->grouped);
    Py_XDECREF(self->series);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PointsBlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runtel._hotpath_c.PointsBlock",
    .tp_doc = "Points of consecutive log calls as store records (bytearrays), queued for the flush.",
    .tp_basicsize = sizeof(PointsBlock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)block_dealloc,
    .tp_members = block_members,
};

typedef struct {
    PyObject_HEAD
    /* the open block: bytearrays of `cap` points, written in place and handed over when sealed */
    PyObject *records_buf, *index_buf;
    Record *records;
    int32_t *index;
    Py_ssize_t n, cap, next_cap, calls;
    /* calls since the flush last took the queue, and the count that wakes it */
    Py_ssize_t pending, wake_at;
    long long last_step;
    unsigned long long span_id;
    char finished, silent, detached;
    PyObject *queue;   /* deque of PointsBlock, records and (general path, forked child) tuples */
    PyObject *layouts; /* dict: tuple of metric names -> tuple of series ids */
    /* the last layout seen: its keys (owned) and series ids */
    PyObject *keys[MAX_WIDTH];
    int32_t ids[MAX_WIDTH];
    Py_ssize_t width;
    /* the open block's first layout, and whether every call in it has logged that layout */
    int32_t block_ids[MAX_WIDTH];
    Py_ssize_t block_width;
    char uniform;
    /* bytearrays handed out with earlier blocks (owned): reused once their batch is done with */
    PyObject *pool[POOL];
    Py_ssize_t pool_next;
} HotPath;

static PyObject *str_log_general, *str_batch_queued, *str_append, *str_step;

/* A bytearray of `size` bytes: the smallest pooled one nobody else references any more (its batch
 * was written and exported) that is large enough, else a new one. Reuse spares the allocator's
 * fresh pages (a page fault each 4 KiB) and the memory the allocator would otherwise keep. */
static PyObject *
take_buffer(HotPath *self, Py_ssize_t size)
{
    Py_ssize_t best = -1;
    for (Py_ssize_t i = 0; i < POOL; i++) {
        PyObject *buf = self->pool[i];
        if (buf == NULL || Py_REFCNT(buf) != 1 || ((PyByteArrayObject *)buf)->ob_alloc <= size)
            continue;
        if (best < 0 || ((PyByteArrayObject *)buf)->ob_alloc < ((PyByteArrayObject *)self->pool[best])->ob_alloc)
            best = i;
    }
    if (best < 0)
        return PyByteArray_FromStringAndSize(NULL, size);
    PyObject *buf = self->pool[best];
    self->pool[best] = NULL;
    if (PyByteArray_Resize(buf, size) < 0) {
        Py_DECREF(buf);
        return NULL;
    }
    return buf;
}

/* Keep a reference to a buffer just handed out, for take_buffer; the oldest kept one is let go. */
static void
keep_buffer(HotPath *self, PyObject *buf)
{
    for (Py_ssize_t i = 0; i < POOL; i++) {
        if (self->pool[i] == NULL) {
            Py_INCREF(buf);
            self->pool[i] = buf;
            return;
        }
    }
    Py_ssize_t at = self->pool_next;
    self->pool_next = (at + 1) % POOL;
    Py_INCREF(buf);
    Py_SETREF(self->pool[at], buf);
}

/* Room for `need` points in the open block. Allocates no object the garbage collector tracks, so
 * no Python code can run here. */
static int
reserve(HotPath *self, Py_ssize_t need)
{
    if (need <= self->cap)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : self->next_cap;
    while (cap < need)
        cap *= 2;
    if (self->records_buf == NULL) {
        self->records_buf = take_buffer(self, cap * (Py_ssize_t)sizeof(Record));
        if (self->records_buf == NULL)
            return -1;
        self->index_buf = take_buffer(self, cap * (Py_ssize_t)sizeof(int32_t));
        if (self->index_buf == NULL) {
            Py_CLEAR(self->records_buf);
            return -1;
        }
    }
    else {
        /* Each pointer follows its buffer as soon as it moved: a failed second resize leaves both
         * valid (the first buffer merely larger than `cap` says). */
        int failed = PyByteArray_Resize(self->records_buf, cap * (Py_ssize_t)sizeof(Record));
        self->records = (Record *)PyByteArray_AS_STRING(self->records_buf);
        if (failed < 0)
            return -1;
        failed = PyByteArray_Resize(self->index_buf, cap * (Py_ssize_t)sizeof(int32_t));
        self->index = (int32_t *)PyByteArray_AS_STRING(self->index_buf);
        if (failed < 0)
            return -1;
    }
    self->records = (Record *)PyByteArray_AS_STRING(self->records_buf);
    self->index = (int32_t *)PyByteArray_AS_STRING(self->index_buf);
    self->cap = cap;
    return 0;
}

static int
check_queue(HotPath *self)
{
    if (self->queue != NULL)
        return 0;
    PyErr_SetString(PyExc_AttributeError, "_queue is not set");
    return -1;
}

/* A uniform block's records grouped by series, as the store writes them: one pass here instead of a
 * sort by series on the store's thread; with one series, the records themselves. */
static int
group(HotPath *self, PointsBlock *block, Py_ssize_t n, Py_ssize_t calls)
{
    Py_ssize_t width = self->block_width;
    if (!self->uniform || width == 0 || n != calls * width)
        return 0;
    Py_ssize_t order[MAX_WIDTH];
    for (Py_ssize_t j = 0; j < width; j++) { /* insertion sort of the layout's positions by id */
        Py_ssize_t k = j;
        while (k > 0 && self->block_ids[order[k - 1]] > self->block_ids[j]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = j;
    }
    for (Py_ssize_t j = 1; j < width; j++)
        if (self->block_ids[order[j]] == self->block_ids[order[j - 1]])
            return 0; /* an id twice in one call: left to the writer's general sort */
    PyObject *series = PyByteArray_FromStringAndSize(NULL, width * (Py_ssize_t)sizeof(int32_t));
    if (series == NULL)
        return -1;
    int32_t *ids = (int32_t *)PyByteArray_AS_STRING(series);
    for (Py_ssize_t j = 0; j < width; j++)
        ids[j] = self->block_ids[order[j]];
    PyObject *grouped = block->records;
    if (width == 1) {
        Py_INCREF(grouped);
    }
    else {
        grouped = take_buffer(self, n * (Py_ssize_t)sizeof(Record));
        if (grouped == NULL) {
            Py_DECREF(series);
            return -1;
        }
        const Record *in = (const Record *)PyByteArray_AS_STRING(block->records);
        Record *out = (Record *)PyByteArray_AS_STRING(grouped);
        for (Py_ssize_t j = 0; j < width; j++)
            for (Py_ssize_t c = 0, at = order[j]; c < calls; c++, at += width)
                *out++ = in[at];
    }
    block->grouped = grouped;
    block->series = series;
    return 0;
}

/* The open block as a PointsBlock appended to the queue (nothing when it is empty): its buffers
 * are handed over, not copied. On a failure (memory) the open block stays as it was. */
static int
seal(HotPath *self)
{
    Py_ssize_t n = self->n, calls = self->calls;
    if (n == 0) {
        self->calls = 0;
        return 0;
    }
    if (check_queue(self) < 0)
        return -1;
    /* Shrinking to the points held keeps them; the pointers follow in case the memory moved. */
    int failed = PyByteArray_Resize(self->records_buf, n * (Py_ssize_t)sizeof(Record));
    self->records = (Record *)PyByteArray_AS_STRING(self->records_buf);
    if (failed < 0)
        return -1;
    self->cap = n;
    failed = PyByteArray_Resize(self->index_buf, n * (Py_ssize_t)sizeof(int32_t));
    self->index = (int32_t *)PyByteArray_AS_STRING(self->index_buf);
    if (failed < 0)
        return -1;
    PointsBlock *block = PyObject_New(PointsBlock, &PointsBlockType);
    if (block == NULL)
        return -1;
    Py_INCREF(self->records_buf);
    Py_INCREF(self->index_buf);
    block->records = self->records_buf;
    block->index = self->index_buf;
    block->grouped = NULL;
    block->series = NULL;
    block->calls = calls;
    if (group(self, block, n, calls) < 0) {
        Py_DECREF(block);
        return -1;
    }
    PyObject *done = PyObject_CallMethodOneArg(self->queue, str_append, (PyObject *)block);
    if (done == NULL) {
        Py_DECREF(block);
        return -1;
    }
    Py_DECREF(done);
    keep_buffer(self, block->records);
    keep_buffer(self, block->index);
    if (block->grouped != NULL && block->grouped != block->records)
        keep_buffer(self, block->grouped);
    Py_DECREF(block);
    Py_CLEAR(self->records_buf);
    Py_CLEAR(self->index_buf);
    self->records = NULL;
    self->index = NULL;
    self->cap = 0;
    self->n = 0;
    self->calls = 0;
    /* the next block starts about as large as this one was */
    self->next_cap = n < 1024 ? 1024 : n > BLOCK_POINTS ? BLOCK_POINTS + MAX_WIDTH : n + n / 8;
    return 0;
}

/* Points of one call, already validated, into the open block; seals a full block. */
static int
commit(HotPath *self, const int32_t *ids, const double *values, Py_ssize_t width, long long at, double when,
       unsigned long long span)
{
    if (width == 0) { /* nothing to store: it only counts towards waking the flush */
        self->pending++;
        return 0;
    }
    if (reserve(self, self->n + width) < 0)
        return -1;
    if (self->calls == 0) {
        self->uniform = width <= MAX_WIDTH; /* a wider call (the general path's) is never grouped */
        self->block_width = self->uniform ? width : 0;
        if (self->uniform)
            memcpy(self->block_ids, ids, width * sizeof(int32_t));
    }
    else if (self->uniform
             && (width != self->block_width || memcmp(ids, self->block_ids, width * sizeof(int32_t)) != 0)) {
        self->uniform = 0;
    }
    Py_ssize_t n = self->n;
    Record *record = self->records + n;
    for (Py_ssize_t i = 0; i < width; i++, record++) {
        self->index[n + i] = ids[i];
        record->step = at;
        record->time = when;
        record->value = values[i];
        record->span = span;
    }
    self->n = n + width;
    self->calls++;
    self->pending++;
    if (self->n >= BLOCK_POINTS || self->calls >= BLOCK_CALLS)
        return seal(self);
    return 0;
}

static double
now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;
}

/* A value as float64 exactly: 1 when it is a float or an int within 2**53, else 0. */
static int
exact_double(PyObject *value, double *out)
{
    if (PyFloat_CheckExact(value)) {
        *out = PyFloat_AS_DOUBLE(value);
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || v > MAX_EXACT_INT || v < -MAX_EXACT_INT)
            return 0;
        *out = (double)v;
        return 1;
    }
    return 0;
}

/* Whether a key equals a cached name (a name built per call, e.g. an f-string, is a new object). */
static int
same_text(PyObject *key, PyObject *cached)
{
    return PyUnicode_CheckExact(key) && PyUnicode_GET_LENGTH(key) == PyUnicode_GET_LENGTH(cached)
           && PyUnicode_Compare(key, cached) == 0;
}

/* Make `metrics`' names the cached layout: 1 done, 0 unknown layout (general path), -1 error. */
static int
resolve_layout(HotPath *self, PyObject *metrics, Py_ssize_t width)
{
    if (self->layouts == NULL || !PyDict_CheckExact(self->layouts))
        return 0;
    PyObject *keys = PyTuple_New(width);
    if (keys == NULL)
        return -1;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(metrics, &pos, &key, &value) && i < width) {
        if (!PyUnicode_CheckExact(key)) {
            Py_DECREF(keys);
            return 0;
        }
        Py_INCREF(key);
        PyTuple_SET_ITEM(keys, i, key);
        i++;
    }
    if (i != width) {
        Py_DECREF(keys);
        return 0;
    }
    /* A name's __eq__ (a str subclass cached by the general path) is Python code and may rebind
     * _layouts during the lookup: the dict and the tuple found are held while used. */
    PyObject *layouts = self->layouts;
    Py_INCREF(layouts);
    PyObject *series = PyDict_GetItemWithError(layouts, keys);
    Py_XINCREF(series);
    Py_DECREF(layouts);
    if (series == NULL || !PyTuple_CheckExact(series) || PyTuple_GET_SIZE(series) != width) {
        Py_XDECREF(series);
        Py_DECREF(keys);
        return PyErr_Occurred() ? -1 : 0;
    }
    int32_t ids[MAX_WIDTH];
    for (i = 0; i < width; i++) {
        long id = PyLong_AsLong(PyTuple_GET_ITEM(series, i));
        if (id == -1 && PyErr_Occurred()) {
            Py_DECREF(series);
            Py_DECREF(keys);
            return -1;
        }
        ids[i] = (int32_t)id;
    }
    Py_DECREF(series);
    /* No Python code runs from here to the end: the cache is replaced in one piece. */
    PyObject *old[MAX_WIDTH];
    Py_ssize_t old_width = self->width;
    memcpy(old, self->keys, old_width * sizeof(PyObject *));
    for (i = 0; i < width; i++) {
        self->keys[i] = PyTuple_GET_ITEM(keys, i);
        Py_INCREF(self->keys[i]);
        self->ids[i] = ids[i];
    }
    self->width = width;
    for (i = 0; i < old_width; i++)
        Py_DECREF(old[i]);
    Py_DECREF(keys);
    return 1;
}

static PyObject *
general(HotPath *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *method = PyObject_GetAttr((PyObject *)self, str_log_general);
    if (method == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, PyVectorcall_NARGS(nargsf), kwnames);
    Py_DECREF(method);
    return result;
}

static PyObject *
wake_if_due(HotPath *self)
{
    if (self->pending < self->wake_at)
        Py_RETURN_NONE;
    PyObject *count = PyLong_FromSsize_t(self->pending);
    if (count == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethodOneArg((PyObject *)self, str_batch_queued, count);
    Py_DECREF(count);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* A dict call's values into `values`: 1 when its names are the cached layout's, 0 when they are
 * not, -1 when a value is not a float or an exact int (the general path's). No Python code runs. */
static int
read_call(HotPath *self, PyObject *metrics, Py_ssize_t width, double *values)
{
    int same_layout = width == self->width;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (i < width && PyDict_Next(metrics, &pos, &key, &value)) {
        if (!exact_double(value, &values[i]))
            return -1;
        if (same_layout && key != self->keys[i] && !same_text(key, self->keys[i]))
            same_layout = 0;
        i++;
    }
    return i == width ? same_layout : -1;
}

PyDoc_STRVAR(log_doc,
"log($self, metrics, step=None, *, all_ranks=False)\n--\n\n"
"Record ``metrics`` at ``step`` (default: previous step + 1, starting at 0).\n\n"
"Values: int, float, bool, numpy scalars, one-element tensors; NaN and +-inf are kept exactly.\n"
"runtel.Image, Table, Text and Audio (or a list of one of them: a gallery) are logged at the same\n"
"step. A bad name, value or step raises and records nothing of the call. Implicit steps are unique\n"
"across threads. In a distributed job only rank 0's calls are recorded unless ``all_ranks``.");

static PyObject *
hot_log(HotPath *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || nargs > 2 || self->finished || self->silent || self->detached)
        return general(self, args, nargsf, kwnames);
    PyObject *metrics = args[0];
    PyObject *step = nargs == 2 ? args[1] : Py_None;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        if (nkw != 1 || nargs != 1)
            return general(self, args, nargsf, kwnames);
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
        if (name != str_step && PyUnicode_Compare(name, str_step) != 0)
            return general(self, args, nargsf, kwnames);
        step = args[1];
    }
    if (!PyDict_CheckExact(metrics))
        return general(self, args, nargsf, kwnames);
    Py_ssize_t width = PyDict_GET_SIZE(metrics);
    if (width == 0 || width > MAX_WIDTH)
        return general(self, args, nargsf, kwnames);
    long long explicit_step = -1;
    if (step != Py_None) {
        if (!PyLong_CheckExact(step))
            return general(self, args, nargsf, kwnames);
        int overflow;
        explicit_step = PyLong_AsLongLongAndOverflow(step, &overflow);
        if (overflow || explicit_step < 0)
            return general(self, args, nargsf, kwnames);
    }
    double values[MAX_WIDTH];
    int same_layout = read_call(self, metrics, width, values);
    if (same_layout < 0)
        return general(self, args, nargsf, kwnames);
    if (!same_layout) {
        int found = resolve_layout(self, metrics, width); /* may run Python code (allocation, GC) */
        if (found < 0)
            return NULL;
        /* That code (a finalizer, another thread) may have changed the dict or finished the run:
         * the call is read again, against the layout now cached. */
        if (found == 0 || self->finished || self->silent || self->detached || PyDict_GET_SIZE(metrics) != width
            || read_call(self, metrics, width, values) != 1)
            return general(self, args, nargsf, kwnames);
    }
    /* From here to commit nothing runs Python code: the step and the points are taken together. */
    long long at;
    if (explicit_step >= 0) {
        at = explicit_step;
    }
    else {
        if (self->last_step == LLONG_MAX)
            return general(self, args, nargsf, kwnames); /* it raises: no implicit step is left */
        at = self->last_step + 1;
    }
    if (commit(self, self->ids, values, width, at, now_seconds(), self->span_id) < 0)
        return NULL;
    self->last_step = at;
    return wake_if_due(self);
}

PyDoc_STRVAR(queue_call_doc,
"_queue_call($self, at, when, span, ids, values, /)\n--\n\n"
"Queue one validated call (the general path's, a system sample's) in order with the fast path's.");

static PyObject *
hot_queue_call(HotPath *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_queue_call takes (at, when, span, ids, values)");
        return NULL;
    }
    if (self->detached) { /* a forked child: its queue drops what it is given, with a warning */
        if (check_queue(self) < 0)
            return NULL;
        PyObject *call = PyTuple_Pack(5, args[0], args[1], args[2], args[3], args[4]);
        if (call == NULL)
            return NULL;
        PyObject *done = PyObject_CallMethodOneArg(self->queue, str_append, call);
        Py_DECREF(call);
        return done;
    }
    PyObject *ids = args[3], *vals = args[4];
    if (!PyTuple_Check(ids) || !PyTuple_Check(vals) || PyTuple_GET_SIZE(ids) != PyTuple_GET_SIZE(vals)) {
        PyErr_SetString(PyExc_TypeError, "_queue_call: ids and values must be tuples of one length");
        return NULL;
    }
    long long at = PyLong_AsLongLong(args[0]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    double when = PyFloat_AsDouble(args[1]);
    if (when == -1.0 && PyErr_Occurred())
        return NULL;
    unsigned long long span = PyLong_AsUnsignedLongLong(args[2]);
    if (span == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(ids);
    int32_t *id_buf = PyMem_Malloc((width ? width : 1) * sizeof(int32_t));
    double *value_buf = PyMem_Malloc((width ? width : 1) * sizeof(double));
    if (id_buf == NULL || value_buf == NULL) {
        PyMem_Free(id_buf);
        PyMem_Free(value_buf);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < width; i++) {
        long id = PyLong_AsLong(PyTuple_GET_ITEM(ids, i));
        double v = PyFloat_AsDouble(PyTuple_GET_ITEM(vals, i));
        if ((id == -1 || v == -1.0) && PyErr_Occurred()) {
            PyMem_Free(id_buf);
            PyMem_Free(value_buf);
            return NULL;
        }
        id_buf[i] = (int32_t)id;
        value_buf[i] = v;
    }
    int failed = commit(self, id_buf, value_buf, width, at, when, span);
    PyMem_Free(id_buf);
    PyMem_Free(value_buf);
    if (failed < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
hot_emit(HotPath *self, PyObject *record)
{
    if (check_queue(self) < 0 || seal(self) < 0)
        return NULL;
    return PyObject_CallMethodOneArg(self->queue, str_append, record);
}

static PyObject *
hot_take_open_block(HotPath *self, PyObject *Py_UNUSED(ignored))
{
    if (seal(self) < 0)
        return NULL;
    self->pending = 0;
    Py_RETURN_NONE;
}

static PyObject *
hot_queued_calls(HotPath *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(self->pending);
}

static PyObject *
hot_next_step(HotPath *self, PyObject *Py_UNUSED(ignored))
{
    if (self->last_step == LLONG_MAX)
        Py_RETURN_NONE;
    self->last_step++;
    return PyLong_FromLongLong(self->last_step);
}

static PyObject *
hot_explicit_step(HotPath *self, PyObject *at)
{
    long long step = PyLong_AsLongLong(at);
    if (step == -1 && PyErr_Occurred())
        return NULL;
    self->last_step = step;
    Py_RETURN_NONE;
}

static PyMethodDef hot_methods[] = {
    {"log", (PyCFunction)(void (*)(void))hot_log, METH_FASTCALL | METH_KEYWORDS, log_doc},
    {"_queue_call", (PyCFunction)(void (*)(void))hot_queue_call, METH_FASTCALL, queue_call_doc},
    {"_emit", (PyCFunction)hot_emit, METH_O,
     "Queue a non-metric record in order with the points logged before it."},
    {"_take_open_block", (PyCFunction)hot_take_open_block, METH_NOARGS,
     "Queue the open block for the flush, which takes the queue now."},
    {"_queued_calls", (PyCFunction)hot_queued_calls, METH_NOARGS, "Calls queued since the flush last took."},
    {"_next_step", (PyCFunction)hot_next_step, METH_NOARGS,
     "The next implicit step, taken; None past the largest int64."},
    {"_explicit_step", (PyCFunction)hot_explicit_step, METH_O, "Record an explicit (validated) step."},
    {NULL},
};

static PyMemberDef hot_members[] = {
    {"_last_step", T_LONGLONG, offsetof(HotPath, last_step), 0, "step of the last call (-1 before any)"},
    {"_span_id", T_ULONGLONG, offsetof(HotPath, span_id), 0, "span the next points belong to"},
    {"_finished", T_BOOL, offsetof(HotPath, finished), 0, "log() refused once set"},
    {"_silent", T_BOOL, offsetof(HotPath, silent), 0, "a rank whose calls are not recorded"},
    {"_detached", T_BOOL, offsetof(HotPath, detached), 0, "a forked child: what it logs is dropped"},
    {"_wake_at", T_PYSSIZET, offsetof(HotPath, wake_at), 0, "queued calls that wake the flush"},
    {"_queue", T_OBJECT_EX, offsetof(HotPath, queue), 0, "what the flush takes, in order"},
    {"_layouts", T_OBJECT_EX, offsetof(HotPath, layouts), 0, "names tuple -> series ids"},
    {NULL},
};

static PyObject *
hot_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    HotPath *self = (HotPath *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->last_step = -1;
        self->wake_at = PY_SSIZE_T_MAX;
        self->next_cap = 1024;
    }
    return (PyObject *)self;
}

static int
hot_traverse(HotPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->layouts);
    return 0;
}

static int
hot_clear(HotPath *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->layouts);
    for (Py_ssize_t i = 0; i < self->width; i++)
        Py_CLEAR(self->keys[i]);
    self->width = 0;
    return 0;
}

static void
hot_dealloc(HotPath *self)
{
    /* For runtel.Run (a Python subclass) its own dealloc has cleared __dict__ and untracked it. */
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    hot_clear(self);
    for (Py_ssize_t i = 0; i < POOL; i++)
        Py_CLEAR(self->pool[i]);
    Py_CLEAR(self->records_buf);
    Py_CLEAR(self->index_buf);
    type->tp_free((PyObject *)self);
}

static PyTypeObject HotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runtel._hotpath_c.HotPath",
    .tp_doc = "Base of runtel.Run: log()'s common case and the columns it fills, in C.",
    .tp_basicsize = sizeof(HotPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = hot_new,
    .tp_dealloc = (destructor)hot_dealloc,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_methods = hot_methods,
    .tp_members = hot_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "runtel._hotpath_c",
    .m_doc = "Run.log's common case in C (see runtel._hotpath).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__hotpath_c(void)
{
    if (PyType_Ready(&PointsBlockType) < 0 || PyType_Ready(&HotPathType) < 0)
        return NULL;
    str_log_general = PyUnicode_InternFromString("_log_general");
    str_batch_queued = PyUnicode_InternFromString("_batch_queued");
    str_append = PyUnicode_InternFromString("append");
    str_step = PyUnicode_InternFromString("step");
    if (!str_log_general || !str_batch_queued || !str_append || !str_step)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PointsBlockType);
    Py_INCREF(&HotPathType);
    if (PyModule_AddObject(m, "PointsBlock", (PyObject *)&PointsBlockType) < 0
        || PyModule_AddObject(m, "HotPath", (PyObject *)&HotPathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
