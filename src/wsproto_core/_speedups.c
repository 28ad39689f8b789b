/* Compiled masking of frame payloads (RFC 6455 §5.3), for wsproto_core.mask,
 * the frame header parser's and the small message reader's fast paths, for
 * wsproto_core.frames, and the in-place payload buffer of wsproto_core.payload.
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

/* read_message(buf, pos, client, max_size, stream_below): frames.read_message's twin.
 *
 * The receive loop's fast path for the commonest frame: a whole, small,
 * unfragmented text or binary message. Everything else returns None, and
 * the caller parses the frame as usual, which raises the RFC's error where
 * there is one: so no rule lives only here. The checks are those of
 * frames.read_message, which the tests hold this against on any input. */
PyDoc_STRVAR(read_message_doc,
             "read_message(buf, pos, client, max_size, stream_below)\n--\n\n"
             "frames.read_message's compiled twin.");

/* Payloads from this size on take the usual path (a 64-bit length, GIL
 * release while unmasking): the fast path is for small messages. */
#define FAST_MESSAGE_BELOW 65536

static int
optional_size(PyObject *value, Py_ssize_t *size)
{
    if (value == Py_None) {
        *size = PY_SSIZE_T_MAX;
        return 0;
    }
    *size = PyLong_AsSsize_t(value);
    return (*size == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *
read_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, available, size = 2, length, max_size, stream_below;
    const unsigned char *p;
    unsigned int first, second;
    int client;
    unsigned char stack[512];
    unsigned char *payload;
    PyObject *data = NULL, *result;

    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "read_message() takes buf, pos, client, max_size and stream_below");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    client = PyObject_IsTrue(args[2]);
    if (client < 0 || optional_size(args[3], &max_size) < 0 ||
        optional_size(args[4], &stream_below) < 0) {
        return NULL;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "read_message() needs a position >= 0");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    p = (const unsigned char *)view.buf + pos;
    available = view.len - pos;
    if (available < 2) {
        goto other;
    }
    first = p[0];
    second = p[1];
    /* FIN set, no RSV bits, a text (1) or binary (2) opcode; masked exactly
     * when the peer is a client (RFC 6455 §5.1). */
    if ((first != 0x81u && first != 0x82u) || ((second & 0x80u) != 0) == (client != 0)) {
        goto other;
    }
    length = second & 0x7F;
    if (length == 127) {
        goto other;
    }
    if (length == 126) {
        if (available < 4) {
            goto other;
        }
        length = ((Py_ssize_t)p[2] << 8) | p[3];
        size = 4;
    }
    if (!client) {
        size += 4;
    }
    if (available - size < length || length > max_size || length >= stream_below ||
        length >= FAST_MESSAGE_BELOW) {
        goto other;
    }
    if (client) {
        payload = (unsigned char *)p + size; /* unmasked: read in place */
    }
    else if (first == 0x82u || length > (Py_ssize_t)sizeof stack) {
        /* Binary: unmasked straight into the bytes object returned. Long
         * text: into a bytes object decoded from and dropped. */
        data = PyBytes_FromStringAndSize(NULL, length);
        if (data == NULL) {
            goto error;
        }
        payload = (unsigned char *)PyBytes_AsString(data);
        if (payload == NULL) {
            goto error;
        }
        xor_mask(p + size, payload, length, p + size - 4, 0);
    }
    else {
        payload = stack;
        xor_mask(p + size, payload, length, p + size - 4, 0);
    }
    if (first == 0x81u) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)payload, length, "strict");
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                goto error;
            }
            PyErr_Clear(); /* the usual path raises the RFC's error (1007) */
            Py_CLEAR(data);
            goto other;
        }
        Py_XDECREF(data); /* the unmasked bytes, if they were not on the stack */
        data = text;
    }
    else if (data == NULL) {
        data = PyBytes_FromStringAndSize((const char *)payload, length);
        if (data == NULL) {
            goto error;
        }
    }
    PyBuffer_Release(&view);
    result = Py_BuildValue("(Nn)", data, pos + size + length);
    return result;

other:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(data);
    PyBuffer_Release(&view);
    return NULL;
}

/* PayloadBuffer: the compiled twin of payload.PurePayloadBuffer.
 *
 * A bytes object of the message's size, filled in place (copied or unmasked
 * into, or read into through view()) and handed out whole by finish(): the
 * payload of a large frame is written once, where the pure class writes it
 * into a bytearray and copies that at the end.
 *
 * Writing into a bytes object is sound only while no other code can see it:
 * `data` is created here, never shared until finish() gives it away, and
 * finish() refuses while a view is lent (`exports`). Sizes 0 and 1 would get
 * CPython's shared singletons, so they are filled in a 2-byte object and
 * copied out. */
typedef struct {
    PyObject_HEAD
    PyObject *data;     /* NULL once finished */
    Py_ssize_t size;    /* the payload's size (data may be larger: see above) */
    Py_ssize_t exports; /* views lent and not released */
} PayloadBuffer;

static int
payload_check(PayloadBuffer *self, Py_ssize_t start, Py_ssize_t end)
{
    if (self->data == NULL) {
        PyErr_SetString(PyExc_ValueError, "the payload is finished");
        return -1;
    }
    if (start < 0 || end < start || end > self->size) {
        PyErr_Format(PyExc_ValueError, "bytes %zd to %zd are outside a payload of %zd", start,
                     end, self->size);
        return -1;
    }
    return 0;
}

static PyObject *
payload_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"size", NULL};
    Py_ssize_t size;
    PayloadBuffer *self;
    allocfunc alloc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:PayloadBuffer", names, &size)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "a payload's size is >= 0");
        return NULL;
    }
    alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    self = (PayloadBuffer *)alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->size = size;
    self->exports = 0;
    self->data = PyBytes_FromStringAndSize(NULL, size < 2 ? 2 : size);
    if (self->data == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
payload_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc free_op = (freefunc)PyType_GetSlot(type, Py_tp_free);

    Py_CLEAR(((PayloadBuffer *)op)->data);
    free_op(op);
    Py_DECREF(type); /* instances of a heap type hold a reference to it */
}

static int
payload_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    PayloadBuffer *self = (PayloadBuffer *)op;

    if (payload_check(self, 0, 0) < 0) {
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, op, PyBytes_AsString(self->data), self->size, 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
payload_releasebuffer(PyObject *op, Py_buffer *view)
{
    (void)view;
    ((PayloadBuffer *)op)->exports--;
}

static PyObject *
payload_view(PyObject *op, PyObject *unused)
{
    (void)unused;
    return PyMemoryView_FromObject(op);
}

/* put(at, data, key=None): data, unmasked with key if given, at offset `at`;
 * key phase `at`, as the payload is one frame's. */
static PyObject *
payload_put(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PayloadBuffer *self = (PayloadBuffer *)op;
    Py_ssize_t at;
    Py_buffer data;
    unsigned char key[4];
    unsigned int phase;
    int masked;
    char *out;

    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "put() takes at, data and an optional key");
        return NULL;
    }
    at = PyLong_AsSsize_t(args[0]);
    if (at == -1 && PyErr_Occurred()) {
        return NULL;
    }
    masked = nargs == 3 && args[2] != Py_None;
    if (masked && get_key(args[2], args[0], key, &phase) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (at > PY_SSIZE_T_MAX - data.len || payload_check(self, at, at + data.len) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "put() past the end of the payload");
        }
        PyBuffer_Release(&data);
        return NULL;
    }
    out = PyBytes_AsString(self->data) + at;
    if (masked) {
        xor_mask_maybe_unlocked((const unsigned char *)data.buf, (unsigned char *)out, data.len,
                                key, phase);
    }
    else {
        memcpy(out, data.buf, (size_t)data.len);
    }
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/* mask(start, end, key): XOR bytes start to end in place, key phase `start`.
 * xor_mask reads each word before it writes the same word, so dst == src
 * is safe (only a partial overlap is not). */
static PyObject *
payload_mask(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PayloadBuffer *self = (PayloadBuffer *)op;
    Py_ssize_t start, end;
    unsigned char key[4];
    unsigned int phase;
    unsigned char *at;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "mask() takes start, end and key");
        return NULL;
    }
    start = PyLong_AsSsize_t(args[0]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    end = PyLong_AsSsize_t(args[1]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (get_key(args[2], args[0], key, &phase) < 0 || payload_check(self, start, end) < 0) {
        return NULL;
    }
    at = (unsigned char *)PyBytes_AsString(self->data) + start;
    xor_mask_maybe_unlocked(at, at, end - start, key, phase);
    Py_RETURN_NONE;
}

static PyObject *
payload_finish(PyObject *op, PyObject *unused)
{
    PayloadBuffer *self = (PayloadBuffer *)op;
    PyObject *data;

    (void)unused;
    if (payload_check(self, 0, 0) < 0) {
        return NULL;
    }
    if (self->exports) {
        PyErr_SetString(PyExc_BufferError, "finish() while a view of the payload is alive");
        return NULL;
    }
    data = self->data;
    self->data = NULL;
    if (self->size < 2) {
        PyObject *small = PyBytes_FromStringAndSize(PyBytes_AsString(data), self->size);
        Py_DECREF(data);
        return small;
    }
    return data;
}

static PyMethodDef payload_methods[] = {
    {"view", payload_view, METH_NOARGS, "A writable memoryview of the whole payload."},
    {"put", (PyCFunction)(void (*)(void))payload_put, METH_FASTCALL,
     "put(at, data, key=None): copy data in at `at`, unmasked with key if given."},
    {"mask", (PyCFunction)(void (*)(void))payload_mask, METH_FASTCALL,
     "mask(start, end, key): unmask bytes start to end in place."},
    {"finish", payload_finish, METH_NOARGS,
     "The payload as bytes; the buffer is then empty for good."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot payload_slots[] = {
    {Py_tp_doc, "PayloadBuffer(size): a payload filled in place, handed out as bytes."},
    {Py_tp_new, payload_new},
    {Py_tp_dealloc, payload_dealloc},
    {Py_tp_methods, payload_methods},
    {Py_bf_getbuffer, payload_getbuffer},
    {Py_bf_releasebuffer, payload_releasebuffer},
    {0, NULL},
};

static PyType_Spec payload_spec = {
    "wsproto_core._speedups.PayloadBuffer",
    sizeof(PayloadBuffer),
    0,
    Py_TPFLAGS_DEFAULT,
    payload_slots,
};

static int
speedups_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &payload_spec, NULL);
    int result;

    if (type == NULL) {
        return -1;
    }
    result = PyModule_AddObjectRef(module, "PayloadBuffer", type);
    Py_DECREF(type);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"read_header", (PyCFunction)(void (*)(void))read_header, METH_FASTCALL, read_header_doc},
    {"read_message", (PyCFunction)(void (*)(void))read_message, METH_FASTCALL, read_message_doc},
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL | METH_KEYWORDS,
     apply_mask_doc},
    {"mask_frame", (PyCFunction)(void (*)(void))mask_frame, METH_FASTCALL | METH_KEYWORDS,
     mask_frame_doc},
    {NULL, NULL, 0, NULL},
};

/* The module keeps no state but its type, made per module by speedups_exec,
 * so it is safe in subinterpreters. Where the build has no GIL, a
 * PayloadBuffer is still one connection's, used by one thread at a time. */
static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
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
    "Compiled twins of wsproto_core.mask's functions (RFC 6455 §5.3), frames.read_header, "
    "frames.read_message and payload.PurePayloadBuffer.",
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
