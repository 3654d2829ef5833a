/* ingestd._rowscan: a pusher's JSON measurement items scanned into column buffers, in C.

The decoding path's hot loop for a large JSON measurement body (ingestd.rowscan is its Python
side, which says what is done with the buffers). msgspec decoded such a body into a Python object
per row and per value, then packed them into columns (~1.2 µs/row of a 5,000-row batch here);
this scans the bytes once, writing each value into a float64 column, each id into an int64 one
and each time's text into a fixed-width byte row (ingestd.rowscan reads them a column at a time),
with the GIL released: the event loop runs meanwhile.

It takes only the form a pusher writes — the keys time, device_id, received_at and then the
value keys in the given order (any of them left out), no whitespace, no escape, printable ASCII
texts, plain integer ids — and answers None for anything else, which then takes msgspec's way.
So it need not know every JSON rule: where it answers, the rows are ones msgspec decodes alike.
Numbers follow JSON's grammar strictly. A value whose digits make an integer of at most 2^53 and
whose decimal exponent is within 10^±22 is one exact operation on exact operands (correctly
rounded: Clinger's fast path); any other goes to the C library's strtod in the C locale (correctly rounded too), so
every value is the double msgspec makes of the same text, bit for bit
(tests/ingestd/test_rowscan.py). An integer literal is an integer made a float, as msgspec makes
it: "-0" is 0.0.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_WIDTH 33 /* a time's row: the longest accepted text is 32; a 33rd marks a longer */
#define MAX_VALUES 64  /* value keys at most */
#define MAX_KEY 32     /* bytes of a value key at most */
#define MAX_TOKEN 64   /* a number's text is shorter (a pusher's: ~24 at most); longer: msgspec's */

static locale_t c_locale;

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct {
    const char *name;
    Py_ssize_t len;
} Key;

typedef struct {
    Key keys[MAX_VALUES];
    int nkeys;
    double *values; /* column-major: values[f * cap + i] */
    int64_t *ids;
    uint8_t *times, *received;
    int64_t *time_lens, *received_lens;
    Py_ssize_t cap;
} Out;

static inline int is_digit(char c) { return (unsigned char)(c - '0') < 10; }

/* A JSON number at *pp (strict grammar); its value in *out. 0: not a number here, or one
   this scanner does not take (too long). */
static int scan_number(const char **pp, const char *end, double *out) {
    const char *p = *pp, *start = p;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end) return 0;
    uint64_t w = 0;
    int nd = 0;          /* significant digits in w */
    Py_ssize_t dropped = 0;     /* significant digits past 19 */
    Py_ssize_t frac_digits = 0; /* digits after the point taken into w */
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) {
            if (nd < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                nd++;
            } else {
                dropped++;
            }
            p++;
        }
    } else {
        return 0;
    }
    int is_int = 1;
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= end || !is_digit(*p)) return 0;
        while (p < end && is_digit(*p)) {
            if (nd == 0 && *p == '0') {
                frac_digits++;
            } else if (nd < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                nd++;
                frac_digits++;
            } else {
                dropped++;
            }
            p++;
        }
    }
    int exp10 = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || !is_digit(*p)) return 0;
        while (p < end && is_digit(*p)) {
            if (exp10 < 100000) exp10 = exp10 * 10 + (*p - '0');
            p++;
        }
        if (eneg) exp10 = -exp10;
    }
    *pp = p;
    /* A longer text is not a pusher's (~24 characters at most): msgspec's way takes it. Checked
       first, so neither path below sees one: the digit and exponent counts stay small (an
       exponent of 100000 or more, which msgspec reads otherwise, needs a longer text to bring
       the value back within bounds). */
    Py_ssize_t len = p - start;
    if (len >= MAX_TOKEN) return 0;
    if (is_int) {
        /* an integer literal is an int converted to float: "-0" is 0.0 */
        if (dropped == 0 && w <= (UINT64_C(1) << 53)) {
            double v = (double)w;
            *out = neg ? (w ? -v : 0.0) : v;
            return 1;
        }
    } else if (dropped == 0 && w <= (UINT64_C(1) << 53)) {
        int e = exp10 - (int)frac_digits; /* fewer than MAX_TOKEN */
        if (w == 0) {
            *out = neg ? -0.0 : 0.0;
            return 1;
        }
        if (e >= -22 && e <= 22) {
            double v = e >= 0 ? (double)w * POW10[e] : (double)w / POW10[-e];
            *out = neg ? -v : v;
            return 1;
        }
    }
    /* the rest: correctly rounded by the C library, in the C locale */
    char buf[MAX_TOKEN];
    memcpy(buf, start, (size_t)len);
    buf[len] = '\0';
    char *stop;
    double v = strtod_l(buf, &stop, c_locale);
    if (stop != buf + len) return 0;
    *out = v;
    return 1;
}

static inline int expect(const char **pp, const char *end, const char *lit, Py_ssize_t n) {
    if (end - *pp < n || memcmp(*pp, lit, (size_t)n) != 0) return 0;
    *pp += n;
    return 1;
}

/* A string's text after its opening quote, up to the closing one, into out (TEXT_WIDTH wide:
   cut there, its length cut alike); printable ASCII only. */
static int scan_text(const char **pp, const char *end, uint8_t *out, int64_t *len) {
    const char *p = *pp;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL) return 0;
    Py_ssize_t n = q - p;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c > 0x7e || c == '\\') return 0;
    }
    Py_ssize_t take = n < TEXT_WIDTH ? n : TEXT_WIDTH;
    memcpy(out, p, (size_t)take);
    *len = take;
    *pp = q + 1;
    return 1;
}

static int scan_id(const char **pp, const char *end, int64_t *out) {
    const char *p = *pp;
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) return 0;
        *out = 0;
        *pp = p;
        return 1;
    }
    if (!(*p >= '1' && *p <= '9')) return 0; /* a negative id: the typed way refuses it */
    uint64_t w = 0;
    int nd = 0;
    while (p < end && is_digit(*p)) {
        if (++nd > 19) return 0;
        w = w * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (w > (uint64_t)INT64_MAX) return 0;
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
    *out = (int64_t)w;
    *pp = p;
    return 1;
}

#define FAIL() return -1

/* Items from p to end; returns rows, or -1. */
static Py_ssize_t scan_items(const char *p, const char *end, Out *o, int *nullable) {
    Py_ssize_t i = 0;
    if (p == end) return 0;
    for (;;) {
        if (i >= o->cap) FAIL();
        if (!expect(&p, end, "{\"time\":\"", 9)) FAIL();
        if (!scan_text(&p, end, o->times + i * TEXT_WIDTH, o->time_lens + i)) FAIL();
        if (!expect(&p, end, ",\"device_id\":", 13)) FAIL();
        if (!scan_id(&p, end, o->ids + i)) FAIL();
        if (!expect(&p, end, ",\"received_at\":\"", 16)) FAIL();
        if (!scan_text(&p, end, o->received + i * TEXT_WIDTH, o->received_lens + i)) FAIL();
        int f = 0;
        while (p < end && *p == ',') {
            p++;
            if (p >= end || *p != '"') FAIL();
            p++;
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (q == NULL) FAIL();
            Py_ssize_t klen = q - p;
            while (f < o->nkeys &&
                   !(o->keys[f].len == klen && memcmp(o->keys[f].name, p, (size_t)klen) == 0)) {
                o->values[f * o->cap + i] = NAN;
                *nullable = 1;
                f++;
            }
            if (f == o->nkeys) FAIL(); /* unknown, repeated or out of order */
            p = q + 1;
            if (p >= end || *p != ':') FAIL();
            p++;
            if (p < end && *p == 'n') {
                if (!expect(&p, end, "null", 4)) FAIL();
                o->values[f * o->cap + i] = NAN;
                *nullable = 1;
            } else {
                double v;
                if (!scan_number(&p, end, &v)) FAIL();
                o->values[f * o->cap + i] = v;
            }
            f++;
        }
        for (; f < o->nkeys; f++) {
            o->values[f * o->cap + i] = NAN;
            *nullable = 1;
        }
        if (p >= end || *p != '}') FAIL();
        p++;
        i++;
        if (p == end) return i;
        if (*p != ',') FAIL();
        p++;
    }
}

static PyObject *count_items(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer body;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "y*nn", &body, &start, &end)) return NULL;
    if (start < 0 || end > body.len || start > end) {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_ValueError, "span outside the body");
        return NULL;
    }
    Py_ssize_t count = 0;
    const char *p = (const char *)body.buf + start, *e = (const char *)body.buf + end;
    Py_BEGIN_ALLOW_THREADS;
    while ((p = memchr(p, '{', (size_t)(e - p))) != NULL) {
        count++;
        p++;
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&body);
    return PyLong_FromSsize_t(count);
}

static int writable(PyObject *obj, Py_buffer *view, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return 0;
    if (view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, needs %zd", what, view->len, need);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static PyObject *scan(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer body;
    Py_ssize_t start, end, cap;
    PyObject *keys, *values_o, *ids_o, *times_o, *time_lens_o, *received_o, *received_lens_o;
    if (!PyArg_ParseTuple(args, "y*nnnO!OOOOOO", &body, &start, &end, &cap, &PyTuple_Type, &keys,
                          &values_o, &ids_o, &times_o, &time_lens_o, &received_o,
                          &received_lens_o))
        return NULL;
    Out o;
    Py_buffer views[6];
    int held = 0;
    PyObject *result = NULL;
    if (start < 0 || end > body.len || start > end || cap < 0) {
        PyErr_SetString(PyExc_ValueError, "span outside the body");
        goto done;
    }
    if (PyTuple_GET_SIZE(keys) > MAX_VALUES) {
        PyErr_SetString(PyExc_ValueError, "too many value keys");
        goto done;
    }
    o.nkeys = (int)PyTuple_GET_SIZE(keys);
    /* the buffers' sizes below must not overflow */
    if (cap > PY_SSIZE_T_MAX / (Py_ssize_t)(sizeof(double) * MAX_VALUES + 2 * TEXT_WIDTH + 24)) {
        PyErr_SetString(PyExc_ValueError, "cap too large");
        goto done;
    }
    for (int k = 0; k < o.nkeys; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) > MAX_KEY) {
            PyErr_SetString(PyExc_TypeError, "value keys must be short bytes");
            goto done;
        }
        o.keys[k].name = PyBytes_AS_STRING(key);
        o.keys[k].len = PyBytes_GET_SIZE(key);
    }
    PyObject *outs[6] = {values_o, ids_o, times_o, time_lens_o, received_o, received_lens_o};
    Py_ssize_t need[6] = {(Py_ssize_t)sizeof(double) * o.nkeys * cap, 8 * cap, TEXT_WIDTH * cap,
                          8 * cap, TEXT_WIDTH * cap, 8 * cap};
    static const char *names[6] = {"values", "ids", "times", "time_lens", "received",
                                   "received_lens"};
    for (; held < 6; held++)
        if (!writable(outs[held], &views[held], need[held], names[held])) goto done;
    o.values = views[0].buf;
    o.ids = views[1].buf;
    o.times = views[2].buf;
    o.time_lens = views[3].buf;
    o.received = views[4].buf;
    o.received_lens = views[5].buf;
    o.cap = cap;
    int nullable = 0;
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS;
    n = scan_items((const char *)body.buf + start, (const char *)body.buf + end, &o, &nullable);
    Py_END_ALLOW_THREADS;
    if (n < 0)
        result = Py_NewRef(Py_None);
    else
        result = Py_BuildValue("nO", n, nullable ? Py_True : Py_False);
done:
    for (int k = 0; k < held; k++) PyBuffer_Release(&views[k]);
    PyBuffer_Release(&body);
    return result;
}

static PyMethodDef methods[] = {
    {"count_items", count_items, METH_VARARGS, "count_items(body, start, end) -> int"},
    {"scan", scan, METH_VARARGS, "scan(...) -> (rows, nullable) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowscan", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rowscan(void) {
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) return PyErr_NoMemory();
    return PyModule_Create(&module);
}
