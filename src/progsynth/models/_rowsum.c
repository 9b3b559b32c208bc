/* Weighted sums of table rows, forward and backward (optional compiled kernel of models.rowsum).
 *
 *   out[i, c] = sum_k weights[i, k] * table[rows[i, k], c]
 *
 * for every example i and every column c in [start, stop). The caller cuts the columns into parts
 * and threads share the parts out: parts never share an output element, so threads need no locks.
 *
 * forward(table, rows, weights, out, n, k, n_rows, width, start, stop, itemsize)
 *   table    float32 or float64 (itemsize 4 or 8), n_rows x width, C order
 *   rows     int64, n x k, each in [0, n_rows)
 *   weights  like table, n x k
 *   out      writable, like table, n x width: columns [start, stop) are overwritten
 *
 * backward(table, rows, weights, grad_out, grad_table, grad_weights, n, k, n_rows, width, start,
 *          stop, itemsize)
 *   grad_table    writable, n_rows x width: columns [start, stop) are overwritten with
 *                 sum over (i, j) with rows[i, j] = r of weights[i, j] * grad_out[i, c]
 *   grad_weights  writable, n x k: overwritten with the partial dot products over [start, stop),
 *                 sum_c grad_out[i, c] * table[rows[i, k], c] (the caller adds the parts' sums)
 *
 * Every size and row index is checked before anything runs: a bad call raises ValueError and never
 * reads or writes outside its buffers. The GIL is released while the sums run.
 *
 * The forward pass and the table's gradient are one kernel, ``combine``: each output row is a
 * weighted sum of source rows given as lists (an example's k table rows; a table row's readers).
 * It takes the columns in blocks (64 float32 or 32 float64), so one block of the source stays in
 * cache while every output row passes over it, and a block of an output row is summed in
 * registers. The table's gradient is thus gathered, not scattered: a counting sort lists the
 * (example, slot) pairs that read each table row, and each row is summed once and written once. The weights' gradient takes one example at a time over the whole column range and
 * reduces each dot product's vector once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Each kernel is compiled twice on x86-64 with GCC or Clang: for AVX2 with fused multiply-add
 * (``_avx2``, 16 vector registers of 32 bytes) and for the baseline; ``HAS_AVX2`` picks one at run
 * time. (GCC's target_clones cannot ask for AVX2 and FMA in one clone, and "arch=haswell" is never
 * chosen on AMD processors.) */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))
#define HAS_AVX2 (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#else
#define AVX2
#define HAS_AVX2 0
#endif
#define BASELINE

/* A block is NV vectors of 32 bytes: 64 float32 or 32 float64 columns, summed in registers.
 * aligned(sizeof(T)): rows are only element-aligned. Columns past the last whole block are summed
 * one by one. */
#define NV 8

#define KERNELS(T, ISA)                                                                               \
    /* out[o] = sum over e in [offsets[o], offsets[o + 1]) of weights[slots[e]] * source[sources[e]], \
     * columns [start, stop): the forward pass (one output row per example, its k table rows) and  \
     * the table's gradient (one output row per table row, the examples that read it) alike. */   \
    ISA static void combine_##T##_##ISA(const int64_t *offsets, const int64_t *sources,             \
                                        const int64_t *slots, const T *weights, const T *source,    \
                                        T *out, Py_ssize_t n_out, Py_ssize_t width,                 \
                                        Py_ssize_t start, Py_ssize_t stop) {                        \
        Py_ssize_t c0 = start;                                                                     \
        for (; c0 + BLOCK_##T <= stop; c0 += BLOCK_##T)                                            \
            for (Py_ssize_t o = 0; o < n_out; o++) {                                               \
                vec_##T acc[NV] = {0};                                                             \
                for (int64_t e = offsets[o]; e < offsets[o + 1]; e++) {                            \
                    const T w = weights[slots[e]];                                                 \
                    const vec_##T *x = (const vec_##T *)(source + sources[e] * width + c0);        \
                    for (int v = 0; v < NV; v++) acc[v] += w * x[v];                               \
                }                                                                                  \
                vec_##T *y = (vec_##T *)(out + o * width + c0);                                    \
                for (int v = 0; v < NV; v++) y[v] = acc[v];                                        \
            }                                                                                      \
        for (Py_ssize_t o = 0, len = stop - c0; o < n_out && len > 0; o++) {                       \
            T acc[BLOCK_##T] __attribute__((aligned(32))) = {0};                                   \
            for (int64_t e = offsets[o]; e < offsets[o + 1]; e++)                                  \
                axpy_##T(acc, weights[slots[e]], source + sources[e] * width + c0, len);           \
            memcpy(out + o * width + c0, acc, len * sizeof(T));                                    \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* grad_weights: one dot product per (example, slot) over the whole column range, summed in a  \
     * vector and reduced once. */                                                                \
    ISA static void dots_##T##_##ISA(const T *table, const int64_t *rows, const T *grad_out,        \
                                     T *grad_weights, Py_ssize_t n, Py_ssize_t k, Py_ssize_t width, \
                                     Py_ssize_t start, Py_ssize_t stop) {                           \
        const Py_ssize_t whole = start + (stop - start) / LANES_##T * LANES_##T;                   \
        for (Py_ssize_t i = 0; i < n; i++) {                                                       \
            const T *g = grad_out + i * width;                                                     \
            for (Py_ssize_t j = 0; j < k; j++) {                                                   \
                const T *t = table + rows[i * k + j] * width;                                      \
                vec_##T d0 = {0}, d1 = {0};                                                        \
                Py_ssize_t c = start;                                                              \
                for (; c + 2 * LANES_##T <= whole; c += 2 * LANES_##T) {                           \
                    d0 += *(const vec_##T *)(g + c) * *(const vec_##T *)(t + c);                   \
                    d1 += *(const vec_##T *)(g + c + LANES_##T) * *(const vec_##T *)(t + c + LANES_##T); \
                }                                                                                  \
                for (; c < whole; c += LANES_##T) d0 += *(const vec_##T *)(g + c) * *(const vec_##T *)(t + c); \
                d0 += d1;                                                                          \
                T dot = 0;                                                                         \
                for (int l = 0; l < LANES_##T; l++) dot += d0[l];                                  \
                for (; c < stop; c++) dot += g[c] * t[c];                                          \
                grad_weights[i * k + j] = dot;                                                     \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \

#define VECTOR_TYPE(T)                                                                             \
    typedef T vec_##T __attribute__((vector_size(32), aligned(sizeof(T))));                        \
    enum { LANES_##T = 32 / sizeof(T), BLOCK_##T = NV * LANES_##T };                               \
    /* acc[0, len) += w * x[0, len) for a partial block (len < BLOCK): whole vectors, then the rest. \
     * Inlined into each kernel, so it is compiled for the kernel's instruction set. */            \
    static inline __attribute__((always_inline)) void axpy_##T(T *acc, T w, const T *x, Py_ssize_t len) { \
        Py_ssize_t c = 0;                                                                          \
        for (; c + LANES_##T <= len; c += LANES_##T)                                               \
            *(vec_##T *)(acc + c) += w * *(const vec_##T *)(x + c);                                \
        for (; c < len; c++) acc[c] += w * x[c];                                                   \
    }
VECTOR_TYPE(float)
VECTOR_TYPE(double)
KERNELS(float, AVX2)
KERNELS(double, AVX2)
KERNELS(float, BASELINE)
KERNELS(double, BASELINE)

typedef void (*combine_fn)(const int64_t *, const int64_t *, const int64_t *, const void *, const void *, void *,
                           Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t);
typedef void (*dots_fn)(const void *, const int64_t *, const void *, void *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                        Py_ssize_t, Py_ssize_t);

/* The kernels for itemsize 4 or 8 on this processor. */
static combine_fn pick_combine(Py_ssize_t itemsize) {
    if (itemsize == 4) return (combine_fn)(HAS_AVX2 ? combine_float_AVX2 : combine_float_BASELINE);
    return (combine_fn)(HAS_AVX2 ? combine_double_AVX2 : combine_double_BASELINE);
}

static dots_fn pick_dots(Py_ssize_t itemsize) {
    if (itemsize == 4) return (dots_fn)(HAS_AVX2 ? dots_float_AVX2 : dots_float_BASELINE);
    return (dots_fn)(HAS_AVX2 ? dots_double_AVX2 : dots_double_BASELINE);
}

/* The forward pass's lists: example i reads slots i * k .. i * k + k - 1, slot e reading table row
 * rows[e]. offsets has n + 1 entries, slots n * k. */
static void example_lists(Py_ssize_t n, Py_ssize_t k, int64_t *offsets, int64_t *slots) {
    for (Py_ssize_t i = 0; i <= n; i++) offsets[i] = i * k;
    for (Py_ssize_t e = 0; e < n * k; e++) slots[e] = e;
}

/* The backward pass's lists, a counting sort of the slots by table row: row r is read by slots
 * slots[first[r]] .. slots[first[r + 1] - 1] (ascending), slot e of example examples[.] = e / k.
 * first has n_rows + 1 entries, slots and examples count; next is n_rows of scratch. */
static void row_lists(const int64_t *rows, Py_ssize_t count, Py_ssize_t k, Py_ssize_t n_rows, int64_t *first,
                      int64_t *slots, int64_t *examples, int64_t *next) {
    memset(first, 0, (n_rows + 1) * sizeof(int64_t));
    for (Py_ssize_t e = 0; e < count; e++) first[rows[e] + 1]++;
    for (Py_ssize_t r = 0; r < n_rows; r++) first[r + 1] += first[r];
    memcpy(next, first, n_rows * sizeof(int64_t));
    for (Py_ssize_t e = 0; e < count; e++) {
        slots[next[rows[e]]] = e;
        examples[next[rows[e]]++] = e / k;
    }
}

/* Checks the sizes shared by both calls; on failure sets ValueError and returns 0. */
static int check(Py_buffer *table, Py_buffer *rows, Py_buffer *weights, Py_ssize_t n, Py_ssize_t k,
                 Py_ssize_t n_rows, Py_ssize_t width, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t itemsize) {
    if (itemsize != 4 && itemsize != 8) {
        PyErr_Format(PyExc_ValueError, "itemsize must be 4 (float32) or 8 (float64), got %zd", itemsize);
        return 0;
    }
    if (n < 0 || k < 0 || n_rows < 0 || width < 0 || start < 0 || stop > width || start > stop) {
        PyErr_Format(PyExc_ValueError, "bad sizes: n %zd, k %zd, n_rows %zd, width %zd, columns [%zd, %zd)", n, k,
                     n_rows, width, start, stop);
        return 0;
    }
    if (table->len != n_rows * width * itemsize || rows->len != n * k * 8 || weights->len != n * k * itemsize) {
        PyErr_SetString(PyExc_ValueError, "buffer sizes do not match n, k, n_rows, width and itemsize");
        return 0;
    }
    const int64_t *r = rows->buf;
    for (Py_ssize_t i = 0; i < n * k; i++)
        if (r[i] < 0 || r[i] >= n_rows) {
            PyErr_Format(PyExc_ValueError, "row index %lld out of range [0, %zd)", (long long)r[i], n_rows);
            return 0;
        }
    return 1;
}

/* The end of both calls: free the lists, release the buffers, and return None, or NULL with the
 * error already set (ok == 0) or a MemoryError (the lists could not be allocated). */
static PyObject *finish(int ok, int64_t *lists, Py_buffer *buffers, int count) {
    free(lists);
    for (int i = 0; i < count; i++) PyBuffer_Release(&buffers[i]);
    if (!ok) return NULL;
    if (!lists) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *forward(PyObject *self, PyObject *args) {
    Py_buffer b[4]; /* table, rows, weights, out */
    Py_ssize_t n, k, n_rows, width, start, stop, itemsize;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nnnnnnn", &b[0], &b[1], &b[2], &b[3], &n, &k, &n_rows, &width, &start,
                          &stop, &itemsize))
        return NULL;
    int ok = check(&b[0], &b[1], &b[2], n, k, n_rows, width, start, stop, itemsize);
    if (ok && b[3].len != n * width * itemsize) {
        PyErr_SetString(PyExc_ValueError, "out must hold n x width elements");
        ok = 0;
    }
    /* offsets (n + 1), then slots (n * k) */
    int64_t *lists = ok ? malloc((n + 1 + n * k) * sizeof(int64_t)) : NULL;
    if (lists) {
        Py_BEGIN_ALLOW_THREADS
        int64_t *offsets = lists, *slots = lists + n + 1;
        example_lists(n, k, offsets, slots);
        pick_combine(itemsize)(offsets, b[1].buf, slots, b[2].buf, b[0].buf, b[3].buf, n, width, start, stop);
        Py_END_ALLOW_THREADS
    }
    return finish(ok, lists, b, 4);
}

static PyObject *backward(PyObject *self, PyObject *args) {
    Py_buffer b[6]; /* table, rows, weights, grad_out, grad_table, grad_weights */
    Py_ssize_t n, k, n_rows, width, start, stop, itemsize;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*nnnnnnn", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &n, &k, &n_rows,
                          &width, &start, &stop, &itemsize))
        return NULL;
    int ok = check(&b[0], &b[1], &b[2], n, k, n_rows, width, start, stop, itemsize);
    if (ok && (b[3].len != n * width * itemsize || b[4].len != b[0].len || b[5].len != b[2].len)) {
        PyErr_SetString(PyExc_ValueError, "grad_out, grad_table and grad_weights must match out, table and weights");
        ok = 0;
    }
    /* first (n_rows + 1), then slots and examples (n * k each), then n_rows of scratch */
    int64_t *lists = ok ? malloc((2 * n_rows + 1 + 2 * n * k) * sizeof(int64_t)) : NULL;
    if (lists) {
        Py_BEGIN_ALLOW_THREADS
        int64_t *first = lists, *slots = first + n_rows + 1, *examples = slots + n * k, *next = examples + n * k;
        row_lists(b[1].buf, n * k, k, n_rows, first, slots, examples, next);
        pick_combine(itemsize)(first, examples, slots, b[2].buf, b[3].buf, b[4].buf, n_rows, width, start, stop);
        pick_dots(itemsize)(b[0].buf, b[1].buf, b[3].buf, b[5].buf, n, k, width, start, stop);
        Py_END_ALLOW_THREADS
    }
    return finish(ok, lists, b, 6);
}

static PyMethodDef methods[] = {
    {"forward", forward, METH_VARARGS,
     "forward(table, rows, weights, out, n, k, n_rows, width, start, stop, itemsize): weighted row sums."},
    {"backward", backward, METH_VARARGS,
     "backward(table, rows, weights, grad_out, grad_table, grad_weights, n, k, n_rows, width, start, stop, "
     "itemsize): their reverse derivative, for columns [start, stop)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowsum",
                                    "Weighted sums of table rows and their reverse derivative.", -1, methods};

PyMODINIT_FUNC PyInit__rowsum(void) { return PyModule_Create(&module); }
