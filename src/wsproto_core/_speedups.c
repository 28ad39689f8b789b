/* Compiled masking of frame payloads (RFC 6455 §5.3), for wsproto_core.mask,
 * and the frame header parser's fast path, for wsproto_core.frames.
 *
 * Invariants:
 *
 * - Every function here means exactly what its pure-Python twin in mask.py
 *   (frames.py for read_header) means, byte for byte and error for error;
 *   tests/core/test_mask.py and test_frames.py check each pair against each
 *   other. The Python modules are the definition, this file is the fast
 *   path, and it must stay optional: a build without a compiler uses the
 *   pure functions. read_header leaves raising to its twin (see there).
 * - The GIL is released only while writing a bytes object that no other
 *   code has seen yet, from buffers borrowed through the buffer protocol,
 *   which keeps them alive and unresized until they are released.
 * - Only the limited C API (3.11) is used, so one abi3 build serves every
 *   later CPython.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* From 64 KiB on, a call XORs for microseconds (about 30 for 1 MiB) that
 * other threads can use; below, a call ends about as soon as releasing and
 * taking back the GIL would, so it keeps the GIL. */
#define RELEASE_GIL_FROM (64 * 1024)

/* "Octet i of the transformed data ("transformed-octet-i") is the XOR of
 * octet i of the original data ("original-octet-i") with octet at index
 * i modulo 4 of the masking key ("masking-key-octet-j")" -- RFC 6455 §5.3.
 *
 * `phase` is the index in the frame's payload of src[0] modulo 4, so that a
 * payload can be masked piece by piece. `dst` must not overlap `src`. */
static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t size,
         const unsigned char key[4], unsigned int phase)
{
    Py_ssize_t i = 0;

    /* Bytes up to the first 8-byte boundary of dst, so that every word store
     * is aligned (loads are memcpy: the source may sit anywhere, such as a
     * memoryview of a receive buffer at the frame's odd offset). */
    while (i < size && ((uintptr_t)(dst + i) & 7u) != 0) {
        dst[i] = src[i] ^ key[(phase + (unsigned int)i) & 3u];
        i++;
    }
    if (size - i >= 8) {
        /* The key repeated over a word, starting at the phase of dst[i];
         * a word is a multiple of 4 bytes, so the phase stays put. Building
         * it byte by byte keeps it right on either endianness. */
        unsigned char pattern[8];
        uint64_t word;
        for (unsigned int j = 0; j < 8; j++) {
            pattern[j] = key[(phase + (unsigned int)i + j) & 3u];
        }
        memcpy(&word, pattern, sizeof word);
        /* Two words a step: independent loads and stores the CPU overlaps,
         * and a loop compilers turn into 16-byte vector code at -O2/-O3. */
        for (; size - i >= 16; i += 16) {
            uint64_t a, b;
            memcpy(&a, src + i, 8);
            memcpy(&b, src + i + 8, 8);
            a ^= word;
            b ^= word;
            memcpy(dst + i, &a, 8);
            memcpy(dst + i + 8, &b, 8);
        }
        if (size - i >= 8) {
            uint64_t a;
            memcpy(&a, src + i, 8);
            a ^= word;
            memcpy(dst + i, &a, 8);
            i += 8;
        }
    }
    for (; i < size; i++) {
        dst[i] = src[i] ^ key[(phase + (unsigned int)i) & 3u];
    }
}

static void
xor_mask_maybe_unlocked(const unsigned char *src, unsigned char *dst, Py_ssize_t size,
                        const unsigned char key[4], unsigned int phase)
{
    if (size >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(src, dst, size, key, phase);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_mask(src, dst, size, key, phase);
    }
}

/* Arguments as a def with these parameters (positional or keyword) would
 * take them: METH_FASTCALL avoids building a tuple and a dict per call, which
 * is most of the cost of masking a small control frame. Fills `out` and
 * returns 0, or sets TypeError and returns -1. */
static int
parse_args(const char *fname, const char *const *names, Py_ssize_t required,
           Py_ssize_t total, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames, PyObject **out)
{
    Py_ssize_t i, nkw = kwnames == NULL ? 0 : PyTuple_Size(kwnames);

    if (nargs > total) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %zd to %zd positional arguments but %zd were given",
                     fname, required, total, nargs);
        return -1;
    }
    for (i = 0; i < total; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    for (i = 0; i < nkw; i++) {
        PyObject *kw = PyTuple_GetItem(kwnames, i);
        Py_ssize_t j;
        if (kw == NULL) {
            return -1;
        }
        for (j = 0; j < total; j++) {
            if (PyUnicode_CompareWithASCIIString(kw, names[j]) == 0) {
                break;
            }
        }
        if (j == total) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         fname, kw);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                         fname, names[j]);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    for (i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument: '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* The key's 4 bytes and the phase that `offset` gives it, or -1 with an
 * exception set. Any int is an offset, as `offset & 3` allows in Python:
 * the lowest two bits of its two's complement are all that matter. */
static int
get_key(PyObject *key_obj, PyObject *offset_obj, unsigned char key[4], unsigned int *phase)
{
    Py_buffer key_view;

    if (PyObject_GetBuffer(key_obj, &key_view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (key_view.len != 4) {
        PyBuffer_Release(&key_view);
        PyErr_SetString(PyExc_ValueError, "the masking key must be 4 bytes");
        return -1;
    }
    memcpy(key, key_view.buf, 4);
    PyBuffer_Release(&key_view);
    *phase = 0;
    if (offset_obj != NULL) {
        unsigned long long offset = PyLong_AsUnsignedLongLongMask(offset_obj);
        if (offset == (unsigned long long)-1 && PyErr_Occurred()) {
            return -1;
        }
        *phase = (unsigned int)(offset & 3u);
    }
    return 0;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, key, offset=0)\n"
"--\n"
"\n"
"Mask or unmask ``data`` with the 4-byte ``key`` (the operation is its own inverse).\n"
"\n"
"The compiled twin of :func:`wsproto_core.mask.pure_apply_mask`.\n"
"\n"
"Args:\n"
"    data: the payload, or a piece of it: any C-contiguous bytes-like\n"
"        object, taken as its bytes.\n"
"    key: the masking key from the frame header (bytes-like).\n"
"    offset: how many payload bytes came before ``data`` in the same frame,\n"
"        so a payload can be unmasked piece by piece as it arrives.\n"
"\n"
"Returns:\n"
"    The masked bytes, as many as ``data`` holds.\n"
"\n"
"Raises:\n"
"    ValueError: ``key`` is not 4 bytes long.\n"
"    TypeError: ``data`` or ``key`` is not bytes-like, or ``offset`` is\n"
"        not an integer.\n"
"    BufferError: ``data`` is not C-contiguous.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "key", "offset"};
    PyObject *argv[3];
    unsigned char key[4];
    unsigned int phase;
    Py_buffer data;
    PyObject *result;

    (void)module;
    if (parse_args("apply_mask", names, 2, 3, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    /* The key first, as the pure function checks it before touching data. */
    if (get_key(argv[1], argv[2], key, &phase) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        char *out = PyBytes_AsString(result);
        if (out == NULL) {
            Py_CLEAR(result);
        }
        else {
            xor_mask_maybe_unlocked((const unsigned char *)data.buf, (unsigned char *)out,
                                    data.len, key, phase);
        }
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(mask_frame_doc,
"mask_frame(header, payload, key)\n"
"--\n"
"\n"
"Return ``header`` followed by ``payload`` masked with ``key``, as one bytes object.\n"
"\n"
"The compiled twin of :func:`wsproto_core.mask.pure_mask_frame`.\n"
"\n"
"Args:\n"
"    header: the frame header, masking key included, sent as it is.\n"
"    payload: the whole payload of the frame, unmasked.\n"
"    key: the masking key.\n"
"\n"
"Returns:\n"
"    The frame, ready to send.\n"
"\n"
"Raises:\n"
"    ValueError: ``key`` is not 4 bytes long.\n"
"    TypeError: ``header``, ``payload`` or ``key`` is not bytes-like.\n"
"    BufferError: ``header`` or ``payload`` is not C-contiguous.");

/* A client frame in one allocation: the header and the masked payload
 * written side by side. Masking into a bytes object of its own and joining
 * it to the header later copies a large payload twice, and the second copy,
 * into fresh memory, costs more than the masking (see mask.py). */
static PyObject *
mask_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"header", "payload", "key"};
    PyObject *argv[3];
    unsigned char key[4];
    unsigned int phase;
    Py_buffer header, payload;
    PyObject *result = NULL;
    char *out;

    (void)module;
    if (parse_args("mask_frame", names, 3, 3, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    if (get_key(argv[2], NULL, key, &phase) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[1], &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[0], &header, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    if (payload.len > PY_SSIZE_T_MAX - header.len) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, header.len + payload.len);
    if (result == NULL) {
        goto done;
    }
    out = PyBytes_AsString(result);
    if (out == NULL) {
        Py_CLEAR(result);
        goto done;
    }
    memcpy(out, header.buf, (size_t)header.len);
    xor_mask_maybe_unlocked((const unsigned char *)payload.buf,
                            (unsigned char *)out + header.len, payload.len, key, phase);

done:
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    return result;
}

/* read_header(buf, pos): frames.read_header's fast path.
 *
 * Returns what the pure function returns for a complete, valid header, and
 * None where it returns None (incomplete). Where the pure function raises
 * (a reserved opcode, a control frame too long or fragmented, a length with
 * its most significant bit set), this returns NotImplemented: the caller
 * then calls the pure function, which raises the RFC's error, so the rules
 * and their messages live in one place. Checks run in the pure function's
 * order, so the two agree on every input (tests/core/test_frames.py). */
PyDoc_STRVAR(read_header_doc,
             "read_header(buf, pos)\n--\n\n"
             "frames.read_header's fast path: NotImplemented where it would raise.");

static PyObject *
read_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, available, size = 2;
    const unsigned char *p;
    unsigned long long length;
    unsigned int first, second, opcode;
    PyObject *key, *result;

    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read_header() takes buf and pos");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (pos < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "read_header() needs a position >= 0");
        return NULL;
    }
    p = (const unsigned char *)view.buf + pos;
    available = view.len - pos;
    if (available < 2) { /* also past the end, as the pure function */
        goto incomplete;
    }
    first = p[0];
    second = p[1];
    length = second & 0x7Fu;
    if (length == 126) {
        if (available < 4) {
            goto incomplete;
        }
        length = ((unsigned long long)p[2] << 8) | p[3];
        size = 4;
    }
    else if (length == 127) {
        if (available < 10) {
            goto incomplete;
        }
        length = 0;
        for (int i = 2; i < 10; i++) {
            length = (length << 8) | p[i];
        }
        size = 10;
        if (length >> 63) {
            goto invalid; /* "the most significant bit MUST be 0" -- RFC 6455 §5.2 */
        }
    }
    if (second & 0x80u) {
        if (available < size + 4) {
            goto incomplete;
        }
        key = PyBytes_FromStringAndSize((const char *)p + size, 4);
        if (key == NULL) {
            PyBuffer_Release(&view);
            return NULL;
        }
        size += 4;
    }
    else {
        key = Py_None;
        Py_INCREF(key);
    }
    opcode = first & 0x0Fu;
    /* Continuation, text, binary, close, ping, pong: the rest are reserved. */
    if (!(opcode <= 2 || (opcode >= 8 && opcode <= 10)) ||
        (opcode >= 8 && (length > 125 || !(first & 0x80u)))) {
        Py_DECREF(key);
        goto invalid;
    }
    PyBuffer_Release(&view);
    result = Py_BuildValue("(OiiKNn)", (first & 0x80u) ? Py_True : Py_False,
                           (int)(first & 0x70u), (int)opcode, length, key, size);
    return result;

incomplete:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
invalid:
    PyBuffer_Release(&view);
    Py_RETURN_NOTIMPLEMENTED;
}

static PyMethodDef speedups_methods[] = {
    {"read_header", (PyCFunction)(void (*)(void))read_header, METH_FASTCALL, read_header_doc},
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL | METH_KEYWORDS,
     apply_mask_doc},
    {"mask_frame", (PyCFunction)(void (*)(void))mask_frame, METH_FASTCALL | METH_KEYWORDS,
     mask_frame_doc},
    {NULL, NULL, 0, NULL},
};

/* The module keeps no state, so it is safe in subinterpreters and, where the
 * build has no GIL, without one. */
static PyModuleDef_Slot speedups_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "wsproto_core._speedups",
    "Compiled twins of wsproto_core.mask's functions (RFC 6455 §5.3), and of frames.read_header.",
    0,
    speedups_methods,
    speedups_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
