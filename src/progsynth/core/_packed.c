/* Bit-packed gate evaluation for progsynth.core.boolean (optional compiled kernel).
 *
 * One call runs a whole schedule of gates ("tape") over the rows of a scratch array, so the cost
 * per gate is a tight loop over words instead of a numpy call (~1 µs each). Without this module,
 * boolean.py runs the same schedule one numpy ufunc per gate; tests check the two agree.
 *
 * evaluate(inputs, n_words, theta, rows, block, tape, outputs, out)
 *   inputs   uint64 words, n_inputs rows of n_words (the packed batch)
 *   theta    uint64, one word per parameter bit (all zeros or all ones)
 *   rows     writable scratch, n_rows rows of ``block`` words; rows 0..n_inputs-1 receive the
 *            inputs and the next n_params rows θ, block by block
 *   tape     int32, four per gate: op, input row a, input row b, output row; op is 0 xor, 1 and,
 *            2 or, 3 not, 4 zero, 5 one (inputs a gate does not read must still be valid rows)
 *   outputs  int32, the row of each output wire once the tape has run
 *   out      writable uint64, len(outputs) rows of n_words, filled block by block
 *
 * Every shape and row index is checked before anything runs: a bad call raises ValueError and
 * never reads or writes outside its buffers. The GIL is released while the gates run.
 *
 * An output row may equal an input row (a schedule recycles a row read for the last time);
 * every loop loads words i..i+LANES-1 of its inputs into registers before storing them, which is
 * safe for that exact aliasing, and vectorises without a runtime overlap check.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Words handled per loop iteration, as one GCC/Clang vector. aligned(8): rows are only
 * guaranteed word-aligned. */
typedef uint64_t lanes __attribute__((vector_size(32), aligned(8)));
#define LANES 4

/* The block loop is compiled twice on x86-64 Linux, for AVX2 (4 words per instruction) and for
 * the baseline (SSE2, 2), and the loader picks one for the CPU it runs on; everything it calls is
 * forced inline so both copies are built for their own target. On the benchmark circuit
 * (benchmarks/core.py) the gates alone take 4.6 ms with AVX2 against 7.9 ms with SSE2. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MULTIVERSIONED __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSIONED
#endif
#define INLINE static inline __attribute__((always_inline))

enum { OP_XOR, OP_AND, OP_OR, OP_NOT, OP_ZERO, OP_ONE, N_OPS };

#define BINARY(NAME, EXPR)                                                                    \
    INLINE void NAME(uint64_t *o, const uint64_t *a, const uint64_t *b, Py_ssize_t width) {   \
        Py_ssize_t i = 0;                                                                     \
        for (; i + LANES <= width; i += LANES) {                                              \
            lanes x = *(const lanes *)(a + i), y = *(const lanes *)(b + i);                   \
            *(lanes *)(o + i) = EXPR(x, y);                                                   \
        }                                                                                     \
        for (; i < width; i++) o[i] = EXPR(a[i], b[i]);                                       \
    }

#define XOR(x, y) ((x) ^ (y))
#define AND(x, y) ((x) & (y))
#define OR(x, y) ((x) | (y))
BINARY(gate_xor, XOR)
BINARY(gate_and, AND)
BINARY(gate_or, OR)

INLINE void gate_not(uint64_t *o, const uint64_t *a, Py_ssize_t width) {
    Py_ssize_t i = 0;
    for (; i + LANES <= width; i += LANES) *(lanes *)(o + i) = ~*(const lanes *)(a + i);
    for (; i < width; i++) o[i] = ~a[i];
}

INLINE void fill(uint64_t *o, uint64_t value, Py_ssize_t width) {
    for (Py_ssize_t i = 0; i < width; i++) o[i] = value;
}

INLINE void run_tape(uint64_t *rows, Py_ssize_t row_words, Py_ssize_t width, const int32_t *tape,
                     Py_ssize_t n_steps) {
    for (Py_ssize_t s = 0; s < n_steps; s++) {
        const int32_t *g = tape + 4 * s;
        const uint64_t *a = rows + g[1] * row_words, *b = rows + g[2] * row_words;
        uint64_t *o = rows + g[3] * row_words;
        switch (g[0]) {
            case OP_XOR: gate_xor(o, a, b, width); break;
            case OP_AND: gate_and(o, a, b, width); break;
            case OP_OR: gate_or(o, a, b, width); break;
            case OP_NOT: gate_not(o, a, width); break;
            case OP_ZERO: fill(o, 0, width); break;
            case OP_ONE: fill(o, ~(uint64_t)0, width); break;
        }
    }
}

/* Block by block: copy the inputs' words and θ into the scratch rows, run the tape, copy the
 * output rows out. Shapes and indices are checked by the caller. */
MULTIVERSIONED
static void evaluate_blocks(const uint64_t *in, Py_ssize_t n_in, Py_ssize_t n_words, const uint64_t *theta,
                            Py_ssize_t n_params, uint64_t *rows, Py_ssize_t block, const int32_t *tape,
                            Py_ssize_t n_steps, const int32_t *outputs, Py_ssize_t n_out, uint64_t *out) {
    for (Py_ssize_t start = 0; start < n_words; start += block) {
        Py_ssize_t width = n_words - start < block ? n_words - start : block;
        for (Py_ssize_t i = 0; i < n_in; i++) memcpy(rows + i * block, in + i * n_words + start, 8 * width);
        /* parameter rows are refilled every block: a schedule may recycle them once read */
        for (Py_ssize_t p = 0; p < n_params; p++) fill(rows + (n_in + p) * block, theta[p], width);
        run_tape(rows, block, width, tape, n_steps);
        for (Py_ssize_t j = 0; j < n_out; j++)
            memcpy(out + j * n_words + start, rows + outputs[j] * block, 8 * width);
    }
}

/* Check every op and row of a tape against n_rows; sets ValueError and returns 0 on the first bad step. */
static int check_tape(const int32_t *tape, Py_ssize_t n_steps, Py_ssize_t n_rows) {
    for (Py_ssize_t s = 0; s < n_steps; s++) {
        const int32_t *g = tape + 4 * s;
        if (g[0] < 0 || g[0] >= N_OPS || g[1] < 0 || g[1] >= n_rows || g[2] < 0 || g[2] >= n_rows ||
            g[3] < 0 || g[3] >= n_rows) {
            PyErr_Format(PyExc_ValueError, "tape step %zd (%d, %d, %d, %d) names an unknown op or a row "
                         "outside [0, %zd)", s, g[0], g[1], g[2], g[3], n_rows);
            return 0;
        }
    }
    return 1;
}

/* A buffer argument of ``itemsize``-byte items, C-contiguous; sets ValueError naming it if not. */
static int check_buffer(const Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (view->itemsize != itemsize || !PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous buffer of %zd-byte items", name, itemsize);
        return 0;
    }
    return 1;
}

static PyObject *evaluate(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer inputs, theta, rows, tape, outputs, out;
    Py_ssize_t n_words, block;
    if (!PyArg_ParseTuple(args, "y*ny*w*ny*y*w*", &inputs, &n_words, &theta, &rows, &block, &tape, &outputs,
                          &out))
        return NULL;
    PyObject *result = NULL;
    if (!check_buffer(&inputs, 8, "inputs") || !check_buffer(&theta, 8, "theta") ||
        !check_buffer(&rows, 8, "rows") || !check_buffer(&tape, 4, "tape") ||
        !check_buffer(&outputs, 4, "outputs") || !check_buffer(&out, 8, "out"))
        goto done;
    Py_ssize_t n_rows = block > 0 ? rows.len / 8 / block : 0;
    Py_ssize_t n_in = n_words > 0 ? inputs.len / 8 / n_words : 0, n_params = theta.len / 8;
    Py_ssize_t n_steps = tape.len / 16, n_out = outputs.len / 4;
    if (n_words < 0 || block <= 0 || rows.len != 8 * n_rows * block || tape.len % 16 ||
        inputs.len != 8 * n_in * n_words || n_in + n_params > n_rows || out.len != 8 * n_out * n_words) {
        PyErr_Format(PyExc_ValueError, "inconsistent shapes: %zd words per wire, blocks of %zd words, "
                     "%zd scratch rows, %zd inputs, %zd parameters, %zd outputs",
                     n_words, block, n_rows, n_in, n_params, n_out);
        goto done;
    }
    const int32_t *t = (const int32_t *)tape.buf, *o = (const int32_t *)outputs.buf;
    if (!check_tape(t, n_steps, n_rows)) goto done;
    for (Py_ssize_t j = 0; j < n_out; j++)
        if (o[j] < 0 || o[j] >= n_rows) {
            PyErr_Format(PyExc_ValueError, "output %zd reads row %d outside [0, %zd)", j, o[j], n_rows);
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS
    evaluate_blocks((const uint64_t *)inputs.buf, n_in, n_words, (const uint64_t *)theta.buf, n_params,
                    (uint64_t *)rows.buf, block, t, n_steps, o, n_out, (uint64_t *)out.buf);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&inputs);
    PyBuffer_Release(&theta);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&tape);
    PyBuffer_Release(&outputs);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"evaluate", evaluate, METH_VARARGS,
     "evaluate(inputs, n_words, theta, rows, block, tape, outputs, out): run a gate tape block by block."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_packed", .m_doc = "Compiled bit-packed gate kernel.", .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__packed(void) { return PyModule_Create(&module); }
